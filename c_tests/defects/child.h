/*
 * child.h: run one scenario in a fork()ed child with a deadline, for tests
 * whose failure is an abort, a crash or a hang of the code under test.
 *
 * run_child(scenario, argument, seconds) forks; the child runs
 * scenario(argument) and exits with what it returns (0: it held). The parent
 * waits at most `seconds`, then kills the child, and describes what
 * happened. A child also dies with its parent (die_with_parent), so that no
 * hung process outlives a test that was itself killed at its deadline.
 *
 * Include after harness.h, with _GNU_SOURCE defined.
 */
#ifndef MAPI32_DEFECTS_CHILD_H
#define MAPI32_DEFECTS_CHILD_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct child_outcome {
    int held;        /* exited with status 0 */
    int timed_out;   /* killed at the deadline */
    int signal;      /* the signal that ended it, else 0 */
    int exit_status; /* when it exited */
    char what[96];   /* one phrase for a report */
};

static inline int child_millis_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int)((now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000);
}

/* In a child just forked from `parent`: be killed when the parent dies. */
static inline void die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* it died before we asked */
        _exit(1);
}

static inline struct child_outcome run_child(int (*scenario)(void *), void *argument, int seconds)
{
    struct child_outcome outcome = { 0, 0, 0, 0, "" };
    fflush(NULL); /* or the child would print our buffered output again */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(outcome.what, sizeof outcome.what, "fork failed: %s", strerror(errno));
        return outcome;
    }
    if (pid == 0) {
        die_with_parent(parent);
        /* A crash or an abort must end this child as it would any process,
         * whatever handlers the test (or its harness) installed. */
        static const int fatal[] = { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM };
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
            signal(fatal[i], SIG_DFL);
        int status = scenario(argument);
        fflush(NULL);
        _exit(status);
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int status = 0;
    /* Most children end within microseconds: look often at first. */
    useconds_t pause = 20;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid)
            break;
        if (done < 0 && errno != EINTR) {
            snprintf(outcome.what, sizeof outcome.what, "waitpid failed: %s", strerror(errno));
            return outcome;
        }
        if (child_millis_since(&start) >= seconds * 1000) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            outcome.timed_out = 1;
            snprintf(outcome.what, sizeof outcome.what, "hung: killed after %d s", seconds);
            return outcome;
        }
        usleep(pause);
        if (pause < 1000)
            pause *= 2;
    }
    if (WIFEXITED(status)) {
        outcome.exit_status = WEXITSTATUS(status);
        outcome.held = outcome.exit_status == 0;
        snprintf(outcome.what, sizeof outcome.what, "exited with status %d", outcome.exit_status);
    } else if (WIFSIGNALED(status)) {
        outcome.signal = WTERMSIG(status);
        snprintf(outcome.what, sizeof outcome.what, "killed by signal %d (%s)", outcome.signal,
                 strsignal(outcome.signal));
    }
    return outcome;
}

#endif /* MAPI32_DEFECTS_CHILD_H */
