//! The MAPI types and status codes of SPEC §1, and the one place where an
//! internal [`Error`] becomes an `SCODE`.

/// A MAPI status code: 32-bit signed on every platform. Negative means failure.
#[allow(clippy::upper_case_acronyms)]
pub type SCODE = i32;

/// A 32-bit unsigned count on every platform (never C `unsigned long`,
/// which is 64-bit on LP64 Linux).
#[allow(clippy::upper_case_acronyms)]
pub type ULONG = u32;

// SPEC §1, checked by the compiler where the types are defined: a change of
// width or signedness fails the build. c_tests/header_compiles.c checks the
// same of mapix.h, as C and C++ compilers read it.
const _: () = assert!(core::mem::size_of::<SCODE>() == 4 && SCODE::MIN < 0, "SCODE is 32-bit signed");
const _: () = assert!(core::mem::size_of::<ULONG>() == 4 && ULONG::MIN == 0, "ULONG is 32-bit unsigned");

/// An untyped pointer, C `void *`.
#[allow(clippy::upper_case_acronyms)]
pub type LPVOID = *mut core::ffi::c_void;

/// `S_OK` (0x00000000): the call succeeded.
pub const S_OK: SCODE = 0;

/// `MAPI_E_NOT_ENOUGH_MEMORY` (0x8007000E): the C allocator refused the block,
/// the library could not record it, or the size overflowed once the library's
/// overhead was added. The output pointer is set to NULL.
pub const MAPI_E_NOT_ENOUGH_MEMORY: SCODE = (-0x7FF8_FFF2) as SCODE;

/// `MAPI_E_INVALID_PARAMETER` (0x80070057): a NULL output pointer, or a parent
/// that is not a live block of this library. Nothing is allocated.
pub const MAPI_E_INVALID_PARAMETER: SCODE = (-0x7FF8_FFA9) as SCODE;

/// `MAPI_E_CALL_FAILED` (0x80004005): an unexpected failure. This library never
/// returns it today; it is declared for clients that test for it.
pub const MAPI_E_CALL_FAILED: SCODE = (-0x7FFF_BFFB) as SCODE;

/// Why an operation failed, before it is reported to C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The C allocator or the registry's own growth ran out of memory, or the
    /// requested size overflowed.
    NoMemory,
    /// An argument was NULL or named no live block.
    InvalidParameter,
}

impl Error {
    /// The status code that reports this error to a MAPI caller.
    pub const fn scode(self) -> SCODE {
        match self {
            Error::NoMemory => MAPI_E_NOT_ENOUGH_MEMORY,
            Error::InvalidParameter => MAPI_E_INVALID_PARAMETER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_have_the_sdk_bit_patterns() {
        assert_eq!(S_OK as u32, 0x0000_0000);
        assert_eq!(MAPI_E_NOT_ENOUGH_MEMORY as u32, 0x8007_000E);
        assert_eq!(MAPI_E_INVALID_PARAMETER as u32, 0x8007_0057);
        assert_eq!(MAPI_E_CALL_FAILED as u32, 0x8000_4005);
    }

    #[test]
    fn failures_are_negative_scodes() {
        for code in [MAPI_E_NOT_ENOUGH_MEMORY, MAPI_E_INVALID_PARAMETER, MAPI_E_CALL_FAILED] {
            assert!(code < 0, "{code:#x} must read as a failure (FAILED(sc))");
        }
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(Error::NoMemory.scode(), MAPI_E_NOT_ENOUGH_MEMORY);
        assert_eq!(Error::InvalidParameter.scode(), MAPI_E_INVALID_PARAMETER);
    }
}
