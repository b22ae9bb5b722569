/*
 * stats.c: the order statistics, clocks and /proc readings every family of
 * rows reports with. Medians, never means: on a shared machine a round that
 * was descheduled is an outlier to drop, not a cost to average in.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

const char *const side_name[SIDES] = {"mapi", "malloc", "talloc"};

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double median(const double *v, int n)
{
    double s[64];
    if (n > 64)
        n = 64;
    if (n <= 0)
        return 0;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

double quantile_sorted(double *v, long n, double q)
{
    long rank;
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    /* Nearest rank: the smallest value with at least q·n values at or below it. */
    rank = (long)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

double noise(const double *v, int n)
{
    double s[64];
    if (n < 4)
        return 0;
    if (n > 64)
        n = 64;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return (s[(3 * n) / 4] - s[n / 4]) / median(v, n);
}

long resident_bytes(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld", &size, &resident) != 2)
        die("cannot read /proc/self/statm");
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

const char *loadavg(void)
{
    static char buf[64];
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (f == NULL || fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
        snprintf(buf, sizeof buf, "unknown");
    else
        snprintf(buf, sizeof buf, "%.2f %.2f %.2f", a, b, c);
    if (f != NULL)
        fclose(f);
    return buf;
}

void run_self(const char *const *args, char *out, size_t size)
{
    const char *argv[8] = {"bench"};
    int fd[2], status, i;
    size_t got = 0;
    ssize_t r;
    pid_t pid;
    for (i = 0; args[i] != NULL; i++) {
        if (i + 2 >= (int)(sizeof argv / sizeof argv[0]))
            die("run_self: too many arguments");
        argv[i + 1] = args[i];
    }
    argv[i + 1] = NULL;
    if (pipe(fd) != 0)
        die("pipe: %s", strerror(errno));
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(self_path, (char *const *)argv);
        _exit(127);
    }
    close(fd[1]);
    while (got < size - 1 && (r = read(fd[0], out + got, size - 1 - got)) > 0)
        got += (size_t)r;
    close(fd[0]);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || got == 0)
        die("bench %s ... in a fresh process failed%s", args[0], got == size - 1 ? " (output too long)" : "");
    out[got] = '\0';
}
