/*
 * One misuse of a MAPI block per run, for valgrind (memcheck) and ASan to
 * report (SPEC §3, "Memory and the tools"): run.sh runs every case under
 * both and expects a report from each misuse and none from `clean`.
 *
 *   misuse clean          many blocks made, resized and freed, no misuse
 *   misuse past-root      writes the byte after a root
 *   misuse past-child     writes the byte after a child with a sibling after it
 *   misuse past-big-child writes the byte after a child in a chunk of its own
 *   misuse freed-root     reads a freed root, after a root of its size is made
 *   misuse freed-child    reads a child of a freed root, likewise
 *
 * Sizes are chosen to end mid-granule (13) and on a granule (16, 64): the
 * byte past the end is then slack in the block's last granule, or the
 * first byte after it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mapix.h>

static void *root_of(ULONG size)
{
    void *block = NULL;
    if (MAPIAllocateBuffer(size, &block) != S_OK || block == NULL) {
        fprintf(stderr, "misuse: MAPIAllocateBuffer(%lu) failed\n", (unsigned long)size);
        exit(2);
    }
    memset(block, 0xab, size);
    return block;
}

static void *child_of(void *parent, ULONG size)
{
    void *block = NULL;
    if (MAPIAllocateMore(size, parent, &block) != S_OK || block == NULL) {
        fprintf(stderr, "misuse: MAPIAllocateMore(%lu) failed\n", (unsigned long)size);
        exit(2);
    }
    memset(block, 0xcd, size);
    return block;
}

static void *resized(void *block, ULONG size)
{
    void *moved = NULL;
    if (MAPIReallocateBuffer(block, size, &moved) != S_OK || moved == NULL) {
        fprintf(stderr, "misuse: MAPIReallocateBuffer(%lu) failed\n", (unsigned long)size);
        exit(2);
    }
    return moved;
}

/* Every kind of block the library makes, used in full, resized and freed,
 * and enough freed memory to pass through the quarantine and be reused:
 * a tool must find nothing wrong. */
static int clean(void)
{
    static const ULONG sizes[] = { 0, 1, 13, 16, 17, 64, 100, 1000, 4096, 70000, 300000, 5u << 20 };
    unsigned checksum = 0;
    for (int round = 0; round < 8; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *root = root_of(sizes[i]);
            void *kids[16];
            for (int k = 0; k < 16; k++)
                kids[k] = child_of(k % 2 ? kids[k - 1] : root, sizes[(i + (size_t)k) % 8]);
            /* A child's copy is exactly the bytes both sizes hold. */
            ULONG kid_size = sizes[(i + 3) % 8], kid_new = sizes[i] / 2 + 1;
            unsigned char *kid = resized(kids[3], kid_new);
            for (ULONG b = 0; b < kid_size && b < kid_new; b++)
                checksum += kid[b] != 0xcd;
            if (sizes[i] > 0)
                checksum += root[sizes[i] - 1] != 0xab;
            root = resized(root, sizes[i] + 40);
            memset(root, 1, sizes[i] + 40);
            MAPIFreeBuffer(root);
        }
    }
    if (checksum != 0) {
        fprintf(stderr, "misuse: %u bytes were not copied\n", checksum);
        return 1;
    }
    return 0;
}

/* Through volatile pointers, so that the compiler keeps the access. */
static void write_at(unsigned char *at)
{
    *(volatile unsigned char *)at = 1;
}

static unsigned read_at(const unsigned char *at)
{
    return *(const volatile unsigned char *)at;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "clean") == 0)
        return clean();
    /* Each block past whose end a byte is written has a neighbour made
     * after it, which would be there if nothing kept them apart. */
    if (strcmp(what, "past-root") == 0) {
        unsigned char *root = root_of(13);
        void *neighbour = root_of(13);
        write_at(root + 13);
        MAPIFreeBuffer(root);
        MAPIFreeBuffer(neighbour);
    } else if (strcmp(what, "past-root-16") == 0) {
        unsigned char *root = root_of(16);
        void *neighbour = root_of(16);
        write_at(root + 16);
        MAPIFreeBuffer(root);
        MAPIFreeBuffer(neighbour);
    } else if (strcmp(what, "past-child") == 0) {
        void *root = root_of(8);
        unsigned char *child = child_of(root, 13);
        child_of(root, 13);
        write_at(child + 13);
        MAPIFreeBuffer(root);
    } else if (strcmp(what, "past-child-16") == 0) {
        void *root = root_of(8);
        unsigned char *child = child_of(root, 16);
        child_of(root, 16);
        write_at(child + 16);
        MAPIFreeBuffer(root);
    } else if (strcmp(what, "past-big-child") == 0) {
        void *root = root_of(8);
        unsigned char *child = child_of(root, 1u << 20);
        write_at(child + (1u << 20));
        MAPIFreeBuffer(root);
    } else if (strcmp(what, "freed-root") == 0) {
        unsigned char *root = root_of(64);
        MAPIFreeBuffer(root);
        /* The same size again: without a quarantine, the same slot. */
        void *next = root_of(64);
        printf("misuse: read %u\n", read_at(root));
        MAPIFreeBuffer(next);
    } else if (strcmp(what, "freed-child") == 0) {
        void *root = root_of(8);
        unsigned char *child = child_of(root, 64);
        MAPIFreeBuffer(root);
        void *next = root_of(8);
        child_of(next, 64);
        printf("misuse: read %u\n", read_at(child));
        MAPIFreeBuffer(next);
    } else {
        fprintf(stderr, "usage: misuse clean|past-root|past-root-16|past-child|past-child-16|"
                        "past-big-child|freed-root|freed-child\n");
        return 2;
    }
    /* Reached under valgrind, which reports and goes on; its exit code says. */
    return 0;
}
