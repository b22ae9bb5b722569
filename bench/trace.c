/*
 * trace.c: the shape of the provider trace, which the trace row, the
 * cross-thread rows' busy threads and the Kopano baseline all replay.
 *
 * A replayed provider test suite makes ~1.15 M MAPIAllocateBuffer and
 * ~1.10 M MAPIAllocateMore calls; 55 % of roots never get a child, 43 % get
 * one, 2 % two, and a thin tail hundreds to thousands. Here 1 root in 3200
 * gets 100..3000 children (uniform), which brings the mean to ~0.95 children
 * a root, as in the trace. Seeded: every run, and every allocator, replays
 * the same sequence.
 */
#include "bench.h"

uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

unsigned trace_draw(uint64_t *rng)
{
    uint64_t u = splitmix64(rng);
    if (u % 3200 == 0)
        return (unsigned)(100 + (u >> 32) % 2901);
    if ((u >> 20) % 100 < 55)
        return 0;
    if ((u >> 20) % 100 < 98)
        return 1;
    return 2;
}

void trace_make(struct trace *t, long roots)
{
    uint64_t rng = TRACE_SEED;
    long r;
    t->roots = roots;
    t->children = c_alloc((size_t)roots * sizeof *t->children);
    t->total_children = t->zero = t->one = t->two = t->tail = t->widest = 0;
    for (r = 0; r < roots; r++) {
        unsigned k = trace_draw(&rng);
        t->children[r] = (unsigned short)k;
        t->total_children += k;
        t->zero += k == 0;
        t->one += k == 1;
        t->two += k == 2;
        t->tail += k > 2;
        if ((long)k > t->widest)
            t->widest = k;
    }
}

void trace_describe(const struct trace *t)
{
    double n = (double)t->roots;
    printf("%ld roots, %ld children (%.3f a root): %.1f %% none, %.1f %% one, %.1f %% two, "
           "%ld roots with 100..3000 (widest %ld)",
           t->roots, t->total_children, (double)t->total_children / n, 100.0 * (double)t->zero / n,
           100.0 * (double)t->one / n, 100.0 * (double)t->two / n, t->tail, t->widest);
}
