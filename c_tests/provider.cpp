/*
 * provider.cpp: libmapi32 from C++, the way a MAPI service provider uses it.
 *
 * A provider never links the allocators by name: MAPI hands it
 * LPALLOCATEBUFFER / LPALLOCATEMORE / LPFREEBUFFER when it is initialised
 * (MSProviderInit, ABProviderInit, ...), and it builds what it returns with
 * them. Here a small message-store provider keeps some properties and
 * answers GetProps with a fresh copy: one block from the ALLOCATEBUFFER it
 * was given, and every string and binary copied into that tree with the
 * ALLOCATEMORE it was given. The caller frees it all with one MAPIFreeBuffer;
 * the Makefile runs this under valgrind, so a copy that was not linked into
 * the tree shows up as a leak.
 *
 * Exit status: the number of failed checks.
 */
#include "mapix.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

// The few property types used here (values from the MAPI SDK's mapidefs.h).
const ULONG PT_LONG = 0x0003;
const ULONG PT_STRING8 = 0x001E;
const ULONG PT_BINARY = 0x0102;
const ULONG PT_MV_STRING8 = 0x101E;

ULONG PropTag(ULONG type, ULONG id) { return (id << 16) | type; }
ULONG PropType(ULONG tag) { return tag & 0xFFFF; }

struct SBinary {
    ULONG cb;
    unsigned char *lpb;
};

struct SStringArray {
    ULONG cValues;
    char **lppszA;
};

union PropValueUnion {
    std::int32_t l;
    char *lpszA;
    SBinary bin;
    SStringArray MVszA;
};

struct SPropValue {
    ULONG ulPropTag;
    ULONG dwAlignPad;
    PropValueUnion Value;
};

// n objects of T, allocated with a provider's ALLOCATEMORE onto lpObject.
template <typename T>
SCODE AllocateMoreArray(LPALLOCATEMORE lpAllocateMore, std::size_t n, LPVOID lpObject, T **out)
{
    LPVOID block = NULL;
    SCODE sc = lpAllocateMore(static_cast<ULONG>(n * sizeof(T)), lpObject, &block);
    *out = static_cast<T *>(block);
    return sc;
}

SCODE CopyString(LPALLOCATEMORE lpAllocateMore, const char *src, LPVOID lpObject, char **dst)
{
    SCODE sc = AllocateMoreArray(lpAllocateMore, std::strlen(src) + 1, lpObject, dst);
    if (sc == S_OK)
        std::memcpy(*dst, src, std::strlen(src) + 1);
    return sc;
}

// A provider's PropCopyMore: copies *src into *dst, and everything it points
// to into new blocks allocated with lpAllocateMore onto lpObject, so that
// they live exactly as long as lpObject's tree.
SCODE CopyPropValue(LPALLOCATEMORE lpAllocateMore, const SPropValue &src, LPVOID lpObject, SPropValue *dst)
{
    *dst = src;
    switch (PropType(src.ulPropTag)) {
    case PT_STRING8:
        return CopyString(lpAllocateMore, src.Value.lpszA, lpObject, &dst->Value.lpszA);
    case PT_BINARY: {
        SCODE sc = AllocateMoreArray(lpAllocateMore, src.Value.bin.cb, lpObject, &dst->Value.bin.lpb);
        if (sc == S_OK && src.Value.bin.cb != 0)
            std::memcpy(dst->Value.bin.lpb, src.Value.bin.lpb, src.Value.bin.cb);
        return sc;
    }
    case PT_MV_STRING8: {
        // The strings hang off the array of pointers: a child as a parent.
        char **strings = NULL;
        SCODE sc = AllocateMoreArray(lpAllocateMore, src.Value.MVszA.cValues, lpObject, &strings);
        for (ULONG i = 0; sc == S_OK && i < src.Value.MVszA.cValues; i++)
            sc = CopyString(lpAllocateMore, src.Value.MVszA.lppszA[i], strings, &strings[i]);
        dst->Value.MVszA.lppszA = strings;
        return sc;
    }
    default:
        return S_OK;
    }
}

class MessageStoreProvider {
public:
    MessageStoreProvider(LPALLOCATEBUFFER lpAllocateBuffer, LPALLOCATEMORE lpAllocateMore, LPFREEBUFFER lpFreeBuffer)
        : allocate_buffer_(lpAllocateBuffer), allocate_more_(lpAllocateMore), free_buffer_(lpFreeBuffer)
    {
    }

    // IMAPIProp::GetProps: the caller frees *lppPropArray with MAPIFreeBuffer.
    SCODE GetProps(const SPropValue *props, ULONG cValues, ULONG *lpcValues, SPropValue **lppPropArray) const
    {
        LPVOID block = NULL;
        *lppPropArray = NULL;
        SCODE sc = allocate_buffer_(static_cast<ULONG>(cValues * sizeof(SPropValue)), &block);
        if (sc != S_OK)
            return sc;
        SPropValue *array = static_cast<SPropValue *>(block);
        for (ULONG i = 0; i < cValues; i++) {
            sc = CopyPropValue(allocate_more_, props[i], array, &array[i]);
            if (sc != S_OK) {
                free_buffer_(array); // releases whatever was copied so far
                return sc;
            }
        }
        *lpcValues = cValues;
        *lppPropArray = array;
        return S_OK;
    }

private:
    LPALLOCATEBUFFER allocate_buffer_;
    LPALLOCATEMORE allocate_more_;
    LPFREEBUFFER free_buffer_;
};

int checks = 0, failures = 0;

void Check(bool ok, const char *what)
{
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    checks++;
    if (!ok)
        failures++;
}

} // namespace

int main()
{
    // MAPI hands the provider its allocators: here, libmapi32's exports.
    const LPALLOCATEBUFFER lpAllocateBuffer = MAPIAllocateBuffer;
    const LPALLOCATEMORE lpAllocateMore = &MAPIAllocateMore;
    const LPFREEBUFFER lpFreeBuffer = MAPIFreeBuffer;
    const MessageStoreProvider provider(lpAllocateBuffer, lpAllocateMore, lpFreeBuffer);

    char subject[] = "Quarterly report";
    unsigned char entry_id[] = {0x00, 0x00, 0x00, 0x00, 0xDC, 0xA7, 0x40, 0xC8, 0xC0, 0x42, 0x10, 0x1A};
    char to0[] = "alice@example.org", to1[] = "bob@example.org";
    char *recipients[] = {to0, to1};
    SPropValue stored[4];
    std::memset(stored, 0, sizeof stored);
    stored[0].ulPropTag = PropTag(PT_STRING8, 0x0037);
    stored[0].Value.lpszA = subject;
    stored[1].ulPropTag = PropTag(PT_BINARY, 0x0FFF);
    stored[1].Value.bin.cb = sizeof entry_id;
    stored[1].Value.bin.lpb = entry_id;
    stored[2].ulPropTag = PropTag(PT_LONG, 0x0E08);
    stored[2].Value.l = 4096;
    stored[3].ulPropTag = PropTag(PT_MV_STRING8, 0x8001);
    stored[3].Value.MVszA.cValues = 2;
    stored[3].Value.MVszA.lppszA = recipients;

    ULONG count = 0;
    SPropValue *props = NULL;
    Check(provider.GetProps(stored, 4, &count, &props) == S_OK && props != NULL && count == 4,
          "GetProps builds its result with the provider's ALLOCATEBUFFER and ALLOCATEMORE");
    if (props != NULL) {
        // Change the originals: the result must hold copies.
        subject[0] = 'X';
        entry_id[4] = 0;
        to1[0] = 'X';
        Check(std::strcmp(props[0].Value.lpszA, "Quarterly report") == 0 && props[0].Value.lpszA != subject,
              "the string was copied into the tree");
        Check(props[1].Value.bin.cb == sizeof entry_id && props[1].Value.bin.lpb != entry_id &&
                  props[1].Value.bin.lpb[4] == 0xDC && props[1].Value.bin.lpb[11] == 0x1A,
              "the binary was copied into the tree");
        Check(props[2].Value.l == 4096, "the long was copied");
        Check(props[3].Value.MVszA.cValues == 2 && std::strcmp(props[3].Value.MVszA.lppszA[0], to0) == 0 &&
                  std::strcmp(props[3].Value.MVszA.lppszA[1], "bob@example.org") == 0,
              "the multi-valued strings were copied, each onto the array that holds them");
        Check(reinterpret_cast<std::uintptr_t>(props[1].Value.bin.lpb) % (sizeof(void *) == 8 ? 16 : 8) == 0,
              "blocks from ALLOCATEMORE are aligned for any MAPI structure");
        Check(lpFreeBuffer(props) == 0, "one FREEBUFFER on the array releases the whole tree");
    }

    // A provider that copies onto a block MAPI did not give it is refused.
    SPropValue not_from_mapi[1];
    SPropValue copy;
    std::memset(&copy, 0, sizeof copy);
    Check(CopyPropValue(lpAllocateMore, stored[0], not_from_mapi, &copy) == MAPI_E_INVALID_PARAMETER &&
              copy.Value.lpszA == NULL,
          "ALLOCATEMORE onto a block libmapi32 did not allocate is refused");

    std::printf("cxx-provider: %d passed, %d failed\n", checks - failures, failures);
    return failures;
}
