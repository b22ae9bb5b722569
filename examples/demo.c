/*
 * demo.c: a MAPI client's everyday allocation pattern, against libmapi32.
 *
 * It builds what a message store hands back from IMAPIProp::GetProps: one
 * array of property values from MAPIAllocateBuffer, whose strings, binaries
 * and multi-valued arrays come from MAPIAllocateMore on that array (some on a
 * child: each string of a multi-valued property hangs off the child that
 * holds the pointers). One MAPIFreeBuffer on the array releases all of it.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mapix.h"

/* The few MAPI property types this demo uses (values from mapidefs.h). */
#define PT_LONG 0x0003u
#define PT_BOOLEAN 0x000Bu
#define PT_SYSTIME 0x0040u
#define PT_STRING8 0x001Eu
#define PT_BINARY 0x0102u
#define PT_MV_STRING8 0x101Eu
#define PROP_TAG(type, id) ((ULONG)(((ULONG)(id) << 16) | (ULONG)(type)))
#define PROP_TYPE(tag) ((tag) & 0xFFFFu)

typedef struct {
    ULONG dwLowDateTime;
    ULONG dwHighDateTime;
} FILETIME;

typedef struct {
    ULONG cb;
    unsigned char *lpb;
} SBinary;

typedef struct {
    ULONG cValues;
    char **lppszA;
} SStringArray;

typedef struct {
    ULONG ulPropTag;
    ULONG dwAlignPad;
    union {
        int32_t l;
        unsigned short b;
        FILETIME ft;
        char *lpszA;
        SBinary bin;
        SStringArray MVszA;
        double dbl;
    } Value;
} SPropValue;

enum { PROP_COUNT = 6 };

/* Copies `text` into a block owned by `parent`'s root. */
static SCODE copy_string(LPVOID parent, const char *text, char **out)
{
    LPVOID block = NULL;
    size_t size = strlen(text) + 1;
    SCODE sc = MAPIAllocateMore((ULONG)size, parent, &block);
    if (sc == S_OK) {
        memcpy(block, text, size);
        *out = (char *)block;
    }
    return sc;
}

static SCODE build_props(SPropValue **out)
{
    static const char *const recipients[] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    static const unsigned char entry_id[] = {0x00, 0x00, 0x00, 0x00, 0xDC, 0xA7, 0x40, 0xC8, 0xC0, 0x42, 0x10, 0x1A};
    SPropValue *props = NULL;
    LPVOID block = NULL;
    SCODE sc;
    ULONG i;

    sc = MAPIAllocateBuffer(PROP_COUNT * sizeof(SPropValue), &block);
    if (sc != S_OK)
        return sc;
    props = (SPropValue *)block;

    props[0].ulPropTag = PROP_TAG(PT_STRING8, 0x0037); /* PR_SUBJECT */
    sc = copy_string(props, "Quarterly figures", &props[0].Value.lpszA);

    props[1].ulPropTag = PROP_TAG(PT_LONG, 0x0E08); /* PR_MESSAGE_SIZE */
    props[1].Value.l = 48213;

    props[2].ulPropTag = PROP_TAG(PT_BOOLEAN, 0x0E1B); /* PR_HASATTACH */
    props[2].Value.b = 1;

    props[3].ulPropTag = PROP_TAG(PT_SYSTIME, 0x0E06); /* PR_MESSAGE_DELIVERY_TIME */
    props[3].Value.ft.dwLowDateTime = 0xD53E8000u;
    props[3].Value.ft.dwHighDateTime = 0x01DB2A4Cu;

    props[4].ulPropTag = PROP_TAG(PT_BINARY, 0x0FFF); /* PR_ENTRYID */
    props[4].Value.bin.cb = sizeof entry_id;
    if (sc == S_OK)
        sc = MAPIAllocateMore(sizeof entry_id, props, &block);
    if (sc == S_OK) {
        memcpy(block, entry_id, sizeof entry_id);
        props[4].Value.bin.lpb = (unsigned char *)block;
    }

    /* The pointer array is a child of the props; each string is allocated
     * on that child, and still belongs to the props' root. */
    props[5].ulPropTag = PROP_TAG(PT_MV_STRING8, 0x0E04); /* PR_DISPLAY_TO */
    props[5].Value.MVszA.cValues = 3;
    if (sc == S_OK)
        sc = MAPIAllocateMore(3 * sizeof(char *), props, &block);
    if (sc == S_OK)
        props[5].Value.MVszA.lppszA = (char **)block;
    for (i = 0; sc == S_OK && i < 3; i++)
        sc = copy_string(props[5].Value.MVszA.lppszA, recipients[i], &props[5].Value.MVszA.lppszA[i]);

    if (sc != S_OK) {
        MAPIFreeBuffer(props); /* one call releases whatever was built */
        return sc;
    }
    *out = props;
    return S_OK;
}

static void print_prop(const SPropValue *prop)
{
    ULONG i;
    printf("  0x%08X  ", (unsigned)prop->ulPropTag);
    switch (PROP_TYPE(prop->ulPropTag)) {
    case PT_STRING8:
        printf("PT_STRING8     \"%s\"\n", prop->Value.lpszA);
        break;
    case PT_LONG:
        printf("PT_LONG        %ld\n", (long)prop->Value.l);
        break;
    case PT_BOOLEAN:
        printf("PT_BOOLEAN     %s\n", prop->Value.b ? "true" : "false");
        break;
    case PT_SYSTIME:
        printf("PT_SYSTIME     0x%08X%08X\n", (unsigned)prop->Value.ft.dwHighDateTime,
               (unsigned)prop->Value.ft.dwLowDateTime);
        break;
    case PT_BINARY:
        printf("PT_BINARY      %u bytes:", (unsigned)prop->Value.bin.cb);
        for (i = 0; i < prop->Value.bin.cb; i++)
            printf(" %02X", prop->Value.bin.lpb[i]);
        printf("\n");
        break;
    case PT_MV_STRING8:
        printf("PT_MV_STRING8  %u values:", (unsigned)prop->Value.MVszA.cValues);
        for (i = 0; i < prop->Value.MVszA.cValues; i++)
            printf(" \"%s\"", prop->Value.MVszA.lppszA[i]);
        printf("\n");
        break;
    default:
        printf("(type 0x%04X)\n", (unsigned)PROP_TYPE(prop->ulPropTag));
    }
}

int main(void)
{
    SPropValue *props = NULL;
    LPVOID stale_string;
    LPVOID refused = &props;
    MAPI32_STATS stats;
    SCODE sc = build_props(&props);
    ULONG i;

    if (sc != S_OK) {
        fprintf(stderr, "demo: building the properties failed: 0x%08X\n", (unsigned)sc);
        return 1;
    }
    printf("GetProps returned %d properties (1 MAPIAllocateBuffer, 6 MAPIAllocateMore):\n", PROP_COUNT);
    for (i = 0; i < PROP_COUNT; i++)
        print_prop(&props[i]);

    /* Misuse that crashes or corrupts other MAPI implementations is refused. */
    stale_string = props[0].Value.lpszA;
    printf("MAPIFreeBuffer(a child string) returns %u and frees nothing: \"%s\"\n",
           (unsigned)MAPIFreeBuffer(stale_string), props[0].Value.lpszA);
    sc = MAPIAllocateMore(16, (char *)props + 8, &refused);
    printf("MAPIAllocateMore on an interior pointer: 0x%08X (MAPI_E_INVALID_PARAMETER), out %s\n",
           (unsigned)sc, refused == NULL ? "NULL" : "not NULL");

    MAPIFreeBuffer(props);
    printf("One MAPIFreeBuffer released the array and its 6 children.\n");

    sc = MAPIAllocateMore(16, stale_string, &refused);
    printf("MAPIAllocateMore on a string of the freed tree: 0x%08X; a second free returns %u.\n",
           (unsigned)sc, (unsigned)MAPIFreeBuffer(props));

    /* libmapi32's own count of what is still allocated: what a client's
     * tests check at the end. cbSize first, as for every MAPI32_STATS. */
    stats.cbSize = sizeof stats;
    if (mapi32_stats(&stats) != S_OK || stats.live_roots != 0)
        return 1;
    printf("mapi32_stats: %llu roots live, %llu blocks allocated in all.\n", (unsigned long long)stats.live_roots,
           (unsigned long long)stats.total_allocations);
    return sc == MAPI_E_INVALID_PARAMETER ? 0 : 1;
}
