/*
 * test.c: the mock-up's rules, checked before its numbers are trusted: a
 * measurement of code that skips its checks would flatter it. Each check
 * names the rule (SPEC.md §2) it holds the mock-up to; the exit code is the
 * number of failures. Built against the validating mock-up only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapix.h"

static int failures;

#define CHECK(rule, cond)                                                                                              \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("FAIL %s: %s (line %d)\n", rule, #cond, __LINE__);                                                  \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

static MAPI32_STATS stats(void)
{
    MAPI32_STATS s;
    mapi32_stats(&s);
    return s;
}

int main(void)
{
    static const ULONG sizes[] = {0, 1, 8, 16, 24, 32, 48, 64, 200, 512, 1000, 1024, 1500, 5000, 32000, 40000, 300000};
    void *root, *root2, *child, *grand, *p, *kids[5000];
    uint64_t misuse;
    size_t i;
    char local[64];

    /* the counts the bench's variants keep in different ways */
    MAPIAllocateBuffer(100, &root);
    MAPIAllocateMore(50, root, &child);
    MAPIAllocateMore(1000, child, &grand);
    CHECK("counts: live", stats().live_roots == 1 && stats().live_children == 2 && stats().live_bytes == 1150);
    CHECK("counts: peak while live", stats().peak_bytes == 1150);
    MAPIFreeBuffer(root);
    MAPIAllocateBuffer(10, &root);
    CHECK("counts: peak after a free", stats().peak_bytes == 1150 && stats().live_bytes == 10);
    CHECK("counts: total", stats().total_allocations == 4);
    MAPIFreeBuffer(root);

    for (i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        CHECK("root of any size", MAPIAllocateBuffer(sizes[i], &root) == S_OK && root != NULL);
        CHECK("16-byte alignment", ((uintptr_t)root & 15) == 0);
        memset(root, 0xAB, sizes[i]);
        /* not built: a child of more than a 64 KiB chunk */
        if (sizes[i] <= 65536 - 32) {
            CHECK("child of any size", MAPIAllocateMore(sizes[i], root, &child) == S_OK && child != NULL);
            CHECK("16-byte alignment", ((uintptr_t)child & 15) == 0);
            if (child != NULL)
                memset(child, 0xCD, sizes[i]);
        }
        CHECK("free of a root", MAPIFreeBuffer(root) == 0);
    }
    CHECK("all freed", stats().live_roots == 0 && stats().live_children == 0 && stats().live_bytes == 0);

    MAPIAllocateBuffer(32, &root);
    MAPIAllocateMore(32, root, &child);
    CHECK("child as parent", MAPIAllocateMore(16, child, &grand) == S_OK && grand != NULL);
    /* 5,000 children: several chunks, each child distinct and writable */
    for (i = 0; i < 5000; i++) {
        CHECK("many children", MAPIAllocateMore(i % 3 == 0 ? 600 : 24, root, &kids[i]) == S_OK);
        memset(kids[i], (int)i, i % 3 == 0 ? 600 : 24);
    }
    for (i = 0; i < 5000; i++)
        CHECK("children keep their bytes", *(unsigned char *)kids[i] == (unsigned char)i);
    CHECK("counts", stats().live_roots == 1 && stats().live_children == 5002);

    misuse = stats().misuse_count;
    CHECK("free of a child: ignored", MAPIFreeBuffer(child) == 0 && stats().live_children == 5002);
    CHECK("free of an interior pointer: ignored", MAPIFreeBuffer((char *)root + 16) == 0 && stats().live_roots == 1);
    CHECK("free of a malloc pointer: ignored", MAPIFreeBuffer(p = malloc(64)) == 0);
    free(p);
    CHECK("free of a stack pointer: ignored", MAPIFreeBuffer(local) == 0);
    CHECK("free of an unmapped pointer: ignored", MAPIFreeBuffer((void *)(uintptr_t)0x10) == 0);
    CHECK("free of a non-canonical pointer: ignored", MAPIFreeBuffer((void *)~(uintptr_t)15) == 0);
    CHECK("interior of a child as parent: refused",
          MAPIAllocateMore(8, (char *)kids[0] + 16, &p) == MAPI_E_INVALID_PARAMETER && p == NULL);
    CHECK("the chunk header as parent: refused",
          MAPIAllocateMore(8, (char *)child - 32, &p) == MAPI_E_INVALID_PARAMETER && p == NULL);
    CHECK("misuse counted", stats().misuse_count == misuse + 8);

    CHECK("free of the tree", MAPIFreeBuffer(root) == 0);
    CHECK("all freed", stats().live_roots == 0 && stats().live_children == 0 && stats().live_bytes == 0);
    CHECK("freed root as parent: refused", MAPIAllocateMore(8, root, &p) == MAPI_E_INVALID_PARAMETER && p == NULL);
    CHECK("freed child as parent: refused", MAPIAllocateMore(8, child, &p) == MAPI_E_INVALID_PARAMETER && p == NULL);
    CHECK("freed child of a later chunk as parent: refused",
          MAPIAllocateMore(8, kids[4999], &p) == MAPI_E_INVALID_PARAMETER && p == NULL);
    CHECK("double free: ignored", MAPIFreeBuffer(root) == 0 && stats().live_roots == 0);

    /* The slot and chunks come back: a stale child of the old tree must not
     * pass for a child of the new one, even where a new child starts. */
    MAPIAllocateBuffer(32, &root2);
    CHECK("slot reused", root2 == root);
    MAPIAllocateMore(32, root2, &p);
    if (p != child)
        CHECK("stale child of a reused root: refused",
              MAPIAllocateMore(8, child, &grand) == MAPI_E_INVALID_PARAMETER);
    CHECK("stale interior of the old chunk: refused",
          MAPIAllocateMore(8, kids[1], &grand) == MAPI_E_INVALID_PARAMETER);
    MAPIFreeBuffer(root2);

    CHECK("NULL parent: a root", MAPIAllocateMore(8, NULL, &p) == S_OK && stats().live_roots == 1);
    MAPIFreeBuffer(p);
    CHECK("NULL output", MAPIAllocateBuffer(8, NULL) == MAPI_E_INVALID_PARAMETER);
    CHECK("free NULL", MAPIFreeBuffer(NULL) == 0);
    printf("%s: %d failure%s\n", failures ? "FAIL" : "ok", failures, failures == 1 ? "" : "s");
    return failures;
}
