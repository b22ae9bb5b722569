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
 *   misuse past-guest-child      writes the byte after a child another
 *                                thread made on the main thread's root
 *   misuse freed-guest-child     reads such a child once its tree was freed
 *                                and its maker exited
 *   misuse freed-killed-root     reads a root another thread freed, once its
 *                                owner made a block again (and released it)
 *   misuse read-after-remote-free  reads a root another thread freed, at
 *                                once: its owner makes no call in between,
 *                                so only the free itself can have told the tool
 *   misuse read-child-after-remote-free        likewise a child of that root,
 *                                made by its owner, which then stays idle
 *   misuse read-guest-child-after-remote-free  likewise a child another
 *                                thread made on it, and stays idle after
 *   misuse read-after-move       reads a root another thread reallocated
 *                                (the tree lives on), its owner idle
 *   misuse read-child-after-moved-tree-freed  reads a child made after
 *                                such a move, once the new root is freed
 *   misuse remote-free-idle-owner  no misuse: trees freed by another thread
 *                                than their owner and their guests' maker,
 *                                both idle until the process ends, whose
 *                                children must not be reported as leaked;
 *                                and trees reallocated on a third idle
 *                                thread, children made after that
 *
 * Sizes are chosen to end mid-granule (13) and on a granule (16, 64): the
 * byte past the end is then slack in the block's last granule, or the
 * first byte after it.
 */
#include <pthread.h>
#include <stdint.h>
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

/* Runs `body(arg)` on a thread of its own, to its end. */
static void *on_a_thread(void *(*body)(void *), void *arg)
{
    pthread_t thread;
    void *result = NULL;
    if (pthread_create(&thread, NULL, body, arg) != 0 || pthread_join(thread, &result) != 0) {
        fprintf(stderr, "misuse: no thread\n");
        exit(2);
    }
    return result;
}

/* An idle thread: runs `body(arg)`, hands its result back, then waits
 * until the process ends, making no further call (as a worker of a
 * thread pool may). The library learns nothing from it after the body. */
struct idle_job {
    void *(*body)(void *);
    void *arg;
    void *result;
    int done;
};

static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_wake = PTHREAD_COND_INITIALIZER;

static void *idle_thread(void *p)
{
    struct idle_job *job = p;
    void *result = job->body(job->arg);
    pthread_mutex_lock(&idle_lock);
    job->result = result;
    job->done = 1;
    pthread_cond_broadcast(&idle_wake);
    for (;;) /* never signalled again for this thread: idle to the end */
        pthread_cond_wait(&idle_wake, &idle_lock);
    return NULL;
}

static void *on_an_idle_thread(void *(*body)(void *), void *arg)
{
    struct idle_job *job = calloc(1, sizeof *job);
    pthread_t thread;
    if (job == NULL) {
        fprintf(stderr, "misuse: no memory\n");
        exit(2);
    }
    job->body = body;
    job->arg = arg;
    if (pthread_create(&thread, NULL, idle_thread, job) != 0 || pthread_detach(thread) != 0) {
        fprintf(stderr, "misuse: no thread\n");
        exit(2);
    }
    pthread_mutex_lock(&idle_lock);
    while (!job->done)
        pthread_cond_wait(&idle_wake, &idle_lock);
    pthread_mutex_unlock(&idle_lock);
    void *result = job->result;
    free(job);
    return result;
}

/* A tree as a MAPI provider builds one: a root holding the addresses of
 * its children, which nothing else holds. */
enum { KIDS = 4 };
struct tree {
    unsigned char *kids[KIDS];
};

static void *tree_of_kids(void *unused)
{
    (void)unused;
    struct tree *tree = root_of(sizeof *tree);
    for (int k = 0; k < KIDS; k++)
        tree->kids[k] = child_of(tree, 64);
    return tree;
}

/* Guests of the tree at `arg`, kept in its slots after its owner's. */
static void *guest_kids(void *arg)
{
    struct tree *tree = arg;
    for (int k = KIDS / 2; k < KIDS; k++)
        tree->kids[k] = child_of(tree, 64);
    return NULL;
}

/* A tree whose first half of children its owner made and the second half
 * another thread, both threads idle from then on. */
static struct tree *tree_of_idle_threads(void)
{
    struct tree *tree = on_an_idle_thread(tree_of_kids, NULL);
    on_an_idle_thread(guest_kids, tree);
    return tree;
}

/* Children of another thread's root (guests), one resized: the bytes the
 * old one held are copied, and nothing else is read. Returns how many
 * bytes were wrong. */
static void *guests(void *root)
{
    static const ULONG sizes[] = { 1, 13, 16, 64, 1000, 70000 };
    uintptr_t wrong = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *first = child_of(root, sizes[i]);
        unsigned char *last = child_of(first, sizes[i]);
        unsigned char *moved = resized(first, sizes[i] + 7);
        unsigned char *moved_last = resized(last, sizes[i] / 2 + 1);
        for (ULONG b = 0; b < sizes[i]; b++)
            wrong += moved[b] != 0xcd;
        for (ULONG b = 0; b < sizes[i] / 2 + 1; b++)
            wrong += moved_last[b] != 0xcd;
        memset(moved, 2, sizes[i] + 7);
    }
    return (void *)wrong;
}

static void *kill_root(void *root);

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
            /* The new root took the children: still live, still theirs. */
            for (int k = 0; k < 16; k++) {
                ULONG size = sizes[(i + (size_t)k) % 8];
                if (k != 3 && size > 0)
                    checksum += ((unsigned char *)kids[k])[size - 1] != 0xcd;
            }
            MAPIFreeBuffer(root);
        }
        void *shared = root_of(100);
        checksum += (unsigned)(uintptr_t)on_a_thread(guests, shared);
        MAPIFreeBuffer(shared);
        /* Freed by another thread (the tool told then), released by this
         * one's next call: told once, not twice. */
        void *killed = root_of(sizes[round]);
        child_of(killed, 13);
        on_a_thread(kill_root, killed);
        MAPIFreeBuffer(root_of(8));
    }
    if (checksum != 0) {
        fprintf(stderr, "misuse: %u bytes were not kept or not copied\n", checksum);
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

static void *past_guest_child(void *root)
{
    unsigned char *child = child_of(root, 13);
    child_of(root, 13);
    write_at(child + 13);
    return NULL;
}

/* A guest child of `root`, whose tree this thread then frees (a kill, for
 * its owner to release); the child goes when this thread exits. */
static void *guest_then_kill(void *root)
{
    void *child = child_of(root, 64);
    MAPIFreeBuffer(root);
    return child;
}

static void *kill_root(void *root)
{
    MAPIFreeBuffer(root);
    return NULL;
}

/* The tree at `arg` reallocated on this thread, neither its owner nor a
 * maker of its children: its bytes move to a new block of this thread's,
 * the tree and its children stay. */
static void *move_tree(void *arg)
{
    return resized(arg, sizeof(struct tree) + 100);
}

/* A tree of two idle threads whose root a third, idle too, reallocated;
 * then children made on it by this thread, after the move, into the
 * slots the first ones left free (a child of the moved root and one of a
 * child). Nothing was misused: every block is written in full. */
static struct tree *moved_tree_of_idle_threads(void)
{
    struct tree *tree = on_an_idle_thread(move_tree, tree_of_idle_threads());
    tree->kids[0] = child_of(tree, 64);
    tree->kids[1] = child_of(tree->kids[KIDS - 1], 64);
    for (int k = 0; k < KIDS; k++)
        memset(tree->kids[k], 3, 64);
    return tree;
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
    } else if (strcmp(what, "past-guest-child") == 0) {
        void *root = root_of(8);
        on_a_thread(past_guest_child, root);
        MAPIFreeBuffer(root);
    } else if (strcmp(what, "freed-guest-child") == 0) {
        void *root = root_of(8);
        unsigned char *child = on_a_thread(guest_then_kill, root);
        void *next = root_of(8);
        child_of(next, 64);
        printf("misuse: read %u\n", read_at(child));
        MAPIFreeBuffer(next);
    } else if (strcmp(what, "freed-killed-root") == 0) {
        unsigned char *root = root_of(64);
        on_a_thread(kill_root, root);
        void *next = root_of(64);
        printf("misuse: read %u\n", read_at(root));
        MAPIFreeBuffer(next);
    } else if (strcmp(what, "read-after-remote-free") == 0) {
        unsigned char *root = root_of(64);
        on_a_thread(kill_root, root);
        printf("misuse: read %u\n", read_at(root));
    } else if (strcmp(what, "read-child-after-remote-free") == 0) {
        struct tree *tree = tree_of_idle_threads();
        unsigned char *kid = tree->kids[0];
        MAPIFreeBuffer(tree);
        printf("misuse: read %u\n", read_at(kid));
    } else if (strcmp(what, "read-guest-child-after-remote-free") == 0) {
        struct tree *tree = tree_of_idle_threads();
        unsigned char *kid = tree->kids[KIDS - 1];
        MAPIFreeBuffer(tree);
        printf("misuse: read %u\n", read_at(kid));
    } else if (strcmp(what, "read-after-move") == 0) {
        /* The old root's bytes are freed by a reallocation on another
         * thread, whose owner sits idle: the tree lives on. */
        struct tree *tree = tree_of_idle_threads();
        on_an_idle_thread(move_tree, tree);
        printf("misuse: read %u\n", read_at((unsigned char *)tree));
    } else if (strcmp(what, "read-child-after-moved-tree-freed") == 0) {
        /* A child made after the move, of a tree whose new root is freed
         * here: the tree dies with it, at once for memcheck (its pool). */
        struct tree *tree = moved_tree_of_idle_threads();
        unsigned char *kid = tree->kids[1];
        MAPIFreeBuffer(tree);
        printf("misuse: read %u\n", read_at(kid));
    } else if (strcmp(what, "remote-free-idle-owner") == 0) {
        /* Freed here, on neither idle thread: the children's addresses
         * were only in the roots, so a leak check at exit that still
         * counts them live finds them "definitely lost". The same with
         * roots reallocated on a third idle thread, and children made
         * after that. */
        for (int i = 0; i < 3; i++) {
            MAPIFreeBuffer(tree_of_idle_threads());
            MAPIFreeBuffer(moved_tree_of_idle_threads());
        }
    } else {
        fprintf(stderr, "usage: misuse clean|past-root|past-root-16|past-child|past-child-16|"
                        "past-big-child|freed-root|freed-child|past-guest-child|"
                        "freed-guest-child|freed-killed-root|read-after-remote-free|"
                        "read-child-after-remote-free|read-guest-child-after-remote-free|"
                        "read-after-move|read-child-after-moved-tree-freed|remote-free-idle-owner\n");
        return 2;
    }
    /* Reached under valgrind, which reports and goes on; its exit code says. */
    return 0;
}
