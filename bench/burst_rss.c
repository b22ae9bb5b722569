/*
 * burst_rss.c: does memory go back after a burst?
 *
 * A server that once held a million live blocks and then freed them should
 * not keep more resident memory than malloc would have kept for the same
 * blocks. In a fresh process for each allocator and shape (so that no heap
 * mixes): resident bytes before, at the peak with N live 32-byte blocks, and
 * after freeing them all, with malloc_trim never called (what an ordinary
 * program gets). The blocks are N roots freed one by one, or one root with
 * N - 1 children freed by one call; for malloc, N malloc(32) and N free().
 */
#define _GNU_SOURCE
#include <string.h>

#include "bench.h"

int burst_rss_child(const char *side_arg, const char *kind, long n)
{
    enum side side = strcmp(side_arg, "mapi") == 0 ? MAPI : strcmp(side_arg, "malloc") == 0 ? MALLOC : SIDES;
    int children = strcmp(kind, "children") == 0;
    void **keep;
    long i, before, peak, after;
    if (side == SIDES || n <= 1 || (!children && strcmp(kind, "roots") != 0))
        die("bad --burst arguments");
    /* The array of pointers is resident before the first reading. */
    keep = c_alloc((size_t)n * sizeof *keep);
    memset(keep, 0, (size_t)n * sizeof *keep);
    /* First use of each allocator (lazy setup) is not the burst's. */
    flat_free(side, flat_build(side, 1));
    before = resident_bytes();
    if (side == MAPI && children) {
        keep[0] = mapi_root(32);
        touch(keep[0], 0);
        for (i = 1; i < n; i++)
            touch(mapi_more(32, keep[0]), (size_t)i);
    } else {
        for (i = 0; i < n; i++) {
            keep[i] = side == MAPI ? mapi_root(32) : c_alloc(32);
            touch(keep[i], (size_t)i);
        }
    }
    peak = resident_bytes();
    if (side == MAPI && children) {
        MAPIFreeBuffer(keep[0]);
    } else {
        for (i = 0; i < n; i++) {
            if (side == MAPI)
                MAPIFreeBuffer(keep[i]);
            else
                free(keep[i]);
        }
    }
    after = resident_bytes();
    free(keep);
    printf("%ld %ld %ld\n", before, peak, after);
    return 0;
}

void burst_rss_rows(const struct scale *sc)
{
    static const char *const kinds[2] = {"roots", "children"};
    long rss[2][2][3]; /* [kind][0 mapi, 1 malloc][before, peak, after] */
    struct table t;
    char c[6][TABLE_CELL], out[128], row[96], count[32];
    int k, s;

    for (k = 0; k < 2; k++)
        for (s = 0; s < 2; s++) {
            const char *args[] = {"--burst", s == 0 ? "mapi" : "malloc", kinds[k], count, NULL};
            snprintf(count, sizeof count, "%ld", sc->burst_blocks);
            run_self(args, out, sizeof out);
            if (sscanf(out, "%ld %ld %ld", &rss[k][s][0], &rss[k][s][1], &rss[k][s][2]) != 3)
                die("bad output from bench --burst: %s", out);
        }

    printf("\n### Resident memory after a burst of %ld live 32-byte blocks, freed (no malloc_trim)\n\n",
           sc->burst_blocks);
    table_init(&t, 0x7e, 9, "workload", "malloc peak MB", "malloc kept MB", "libmapi32 peak MB", "libmapi32 kept MB",
               "kept: mapi − malloc", "kept of peak (malloc, mapi)", "target", "met?");
    for (k = 0; k < 2; k++) {
        double mpeak = (double)(rss[k][0][1] - rss[k][0][0]) / 1e6, mkept = (double)(rss[k][0][2] - rss[k][0][0]) / 1e6;
        double cpeak = (double)(rss[k][1][1] - rss[k][1][0]) / 1e6, ckept = (double)(rss[k][1][2] - rss[k][1][0]) / 1e6;
        snprintf(row, sizeof row, "burst of 32-byte %s, then freed", kinds[k]);
        /* "As far back as malloc's": within 256 KiB, the bookkeeping a few
         * spare nodes may keep whatever the design. */
        table_row(&t, row, cellf(c[0], "%.1f", cpeak), cellf(c[1], "%.2f", ckept), cellf(c[2], "%.1f", mpeak),
                  cellf(c[3], "%.2f", mkept), cellf(c[4], "%+.2f MB", mkept - ckept),
                  cellf(c[5], "%.0f %%, %.0f %%", cpeak > 0 ? 100 * ckept / cpeak : 0, mpeak > 0 ? 100 * mkept / mpeak : 0),
                  "kept ≤ malloc's + 0.26 MB",
                  mkept - ckept <= 0.262144 ? "yes" : "no");
    }
    table_print(&t);
    printf("\nMB = 10^6 bytes of resident memory (/proc/self/statm) above the reading before the burst: at the "
           "peak, and kept after every block was freed; each allocator and shape in a fresh process.\n");
}
