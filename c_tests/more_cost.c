/*
 * more_cost.c N: adds N children to one root, counting only the
 * MAPIAllocateMore calls, for c_tests/more_cost_check.sh.
 *
 * SPEC §2 makes MAPIAllocateMore O(1) in the number of children. Time is
 * too noisy to prove that in a test, so this runs under callgrind, which
 * counts instructions exactly: the stats are zeroed right before the loop
 * and dumped right after it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <valgrind/callgrind.h>

#include "mapix.h"

int main(int argc, char **argv)
{
    LPVOID root = NULL;
    LPVOID parent;
    LPVOID child = NULL;
    long count = argc == 2 ? strtol(argv[1], NULL, 10) : 0;
    long i;

    if (count <= 0) {
        fprintf(stderr, "usage: more_cost CHILDREN\n");
        return 2;
    }
    if (MAPIAllocateBuffer(64, &root) != S_OK)
        return 1;
    parent = root;
    CALLGRIND_ZERO_STATS;
    for (i = 0; i < count; i++) {
        /* Alternate root and child parents: both must stay O(1). */
        if (MAPIAllocateMore(32, parent, &child) != S_OK)
            return 1;
        parent = (i & 1) ? root : child;
    }
    CALLGRIND_DUMP_STATS_AT("children");
    MAPIFreeBuffer(root);
    return 0;
}
