/*
 * header_compiles.c: include/mapix.h must compile cleanly as C99, C11 and
 * C++ with -Wall -Wextra -Wpedantic -Werror (SPEC §1). The Makefile compiles
 * this file in each of those modes; it is also valid C++ for that reason.
 */
#include "mapix.h"
#include "mapix.h" /* the MAPIX_H guard makes a second include harmless */

/* The ABI of SPEC §1, checked by the compiler: a negative array size fails.
 * (src/scode.rs asserts the same of the Rust types, at compile time too.) */
typedef char scode_is_32_bit_signed[(sizeof(SCODE) == 4 && (SCODE)-1 < 0) ? 1 : -1];
typedef char ulong_is_32_bit_unsigned[(sizeof(ULONG) == 4 && (ULONG)-1 > 0) ? 1 : -1];
typedef char codes_are_scodes[(sizeof(MAPI_E_NOT_ENOUGH_MEMORY) == sizeof(SCODE)) ? 1 : -1];
typedef char out_of_memory_bits[((ULONG)MAPI_E_NOT_ENOUGH_MEMORY == 0x8007000Eu) ? 1 : -1];
typedef char invalid_parameter_bits[((ULONG)MAPI_E_INVALID_PARAMETER == 0x80070057u) ? 1 : -1];
typedef char call_failed_bits[((ULONG)MAPI_E_CALL_FAILED == 0x80004005u) ? 1 : -1];
typedef char ok_is_zero[(S_OK == 0) ? 1 : -1];
typedef char failures_are_negative[(MAPI_E_NOT_ENOUGH_MEMORY < 0 && MAPI_E_INVALID_PARAMETER < 0 && MAPI_E_CALL_FAILED < 0) ? 1 : -1];

/* A service provider receives the functions through these types. */
struct provider_support {
    LPALLOCATEBUFFER allocate_buffer;
    LPALLOCATEMORE allocate_more;
    LPFREEBUFFER free_buffer;
    LPMAPIALLOCATEBUFFER mapi_allocate_buffer;
    LPMAPIALLOCATEMORE mapi_allocate_more;
    LPMAPIFREEBUFFER mapi_free_buffer;
};

struct provider_support provider_support_from_mapix(void);

struct provider_support provider_support_from_mapix(void)
{
    ALLOCATEBUFFER *allocate_buffer = MAPIAllocateBuffer;
    ALLOCATEMORE *allocate_more = MAPIAllocateMore;
    FREEBUFFER *free_buffer = MAPIFreeBuffer;
    struct provider_support support;
    support.allocate_buffer = allocate_buffer;
    support.allocate_more = allocate_more;
    support.free_buffer = free_buffer;
    support.mapi_allocate_buffer = MAPIAllocateBuffer;
    support.mapi_allocate_more = MAPIAllocateMore;
    support.mapi_free_buffer = MAPIFreeBuffer;
    return support;
}
