/*
 * installed_client.c: a C client of an installed libmapi32, built by
 * install_check.sh with nothing but `pkg-config --cflags --libs mapi32`
 * (and once against libmapi32.a). It includes the header the way MAPI code
 * does, makes the three calls, and says which library answered them.
 */
#include <mapix.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    LPVOID props = NULL, name = NULL;
    SCODE root = MAPIAllocateBuffer(4 * 24, &props);
    SCODE more = root == S_OK ? MAPIAllocateMore(32, props, &name) : root;
    if (root != S_OK || more != S_OK || props == NULL || name == NULL) {
        fprintf(stderr, "installed_client: MAPIAllocateBuffer %d, MAPIAllocateMore %d\n", (int)root, (int)more);
        return 1;
    }
    strcpy((char *)name, "installed");
    /* A foreign parent is refused: libmapi32's registry, not a stub, answered. */
    char foreign[32];
    LPVOID refused = foreign;
    SCODE bad = MAPIAllocateMore(8, foreign, &refused);
    ULONG freed = MAPIFreeBuffer(props);
    if (bad != MAPI_E_INVALID_PARAMETER || refused != NULL || freed != 0) {
        fprintf(stderr, "installed_client: foreign parent gave %d, free gave %u\n", (int)bad, (unsigned)freed);
        return 1;
    }
    puts("installed_client: ok");
    return 0;
}
