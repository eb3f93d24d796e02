//! The C++ allocation operators, exported under their Itanium-ABI names so
//! that a C++ program under `LD_PRELOAD` (or linked with the library)
//! allocates and frees without libstdc++'s wrappers: every `operator delete`
//! (plain, sized, aligned, sized and aligned, nothrow, each also for arrays)
//! and the `nothrow` `operator new` (plain and aligned, and for arrays).
//!
//! Not exported: the throwing `operator new` and `operator new[]` (plain
//! and aligned). They must call the program's `new_handler` and throw
//! `std::bad_alloc` on failure, which this library (Rust, built with
//! `panic = "abort"`) cannot do; libstdc++'s own versions stay in use, and
//! they allocate through our `malloc` and `aligned_alloc`, so every pair
//! matches. The `nothrow` forms return null on failure without calling the
//! `new_handler`. The size a sized `delete` passes is not needed and not
//! trusted: every `delete` is the checked `free` (see the README on bad
//! pointers). These symbols are not in the C header (`shrinkalloc.h`).

// The operators' mangled names are their C++ identity.
#![allow(non_snake_case)]

use core::ffi::c_void;

use crate::libc_semantics as c;

/// `std::nothrow_t` is an empty struct, passed by reference.
type Nothrow = *const c_void;

/// `new(size, std::nothrow)`: a block of `size` bytes, or null.
#[export_name = "_ZnwmRKSt9nothrow_t"]
pub extern "C" fn new_nothrow(size: usize, _: Nothrow) -> *mut c_void {
    c::malloc(size).cast()
}

/// `new[](size, std::nothrow)`: as [`new_nothrow`].
#[export_name = "_ZnamRKSt9nothrow_t"]
pub extern "C" fn new_array_nothrow(size: usize, _: Nothrow) -> *mut c_void {
    c::malloc(size).cast()
}

/// `new(size, std::align_val_t, std::nothrow)`: aligned, or null.
#[export_name = "_ZnwmSt11align_val_tRKSt9nothrow_t"]
pub extern "C" fn new_aligned_nothrow(size: usize, align: usize, _: Nothrow) -> *mut c_void {
    c::aligned_alloc(align, size).cast()
}

/// `new[](size, std::align_val_t, std::nothrow)`: as [`new_aligned_nothrow`].
#[export_name = "_ZnamSt11align_val_tRKSt9nothrow_t"]
pub extern "C" fn new_array_aligned_nothrow(size: usize, align: usize, _: Nothrow) -> *mut c_void {
    c::aligned_alloc(align, size).cast()
}

/// Defines the `delete` operators: each is `free` of its first argument;
/// the others (size, alignment, `nothrow`) are not needed to free.
macro_rules! deletes {
    ($($(#[$doc:meta])* $symbol:literal $name:ident($($arg:ty),*);)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// `p` is null or a block of ours not freed since, not used after.
        #[export_name = $symbol]
        pub unsafe extern "C" fn $name(p: *mut c_void $(, _: $arg)*) {
            // SAFETY: the caller promises nothing uses the block after this
            // call, which is all the checked free asks.
            unsafe { c::free(p.cast()) }
        }
    )*};
}

deletes! {
    /// `delete(p)`.
    "_ZdlPv" delete();
    /// `delete[](p)`.
    "_ZdaPv" delete_array();
    /// `delete(p, size)` (C++14 sized deallocation).
    "_ZdlPvm" delete_sized(usize);
    /// `delete[](p, size)`.
    "_ZdaPvm" delete_array_sized(usize);
    /// `delete(p, std::nothrow)`.
    "_ZdlPvRKSt9nothrow_t" delete_nothrow(Nothrow);
    /// `delete[](p, std::nothrow)`.
    "_ZdaPvRKSt9nothrow_t" delete_array_nothrow(Nothrow);
    /// `delete(p, std::align_val_t)` (C++17 aligned deallocation).
    "_ZdlPvSt11align_val_t" delete_aligned(usize);
    /// `delete[](p, std::align_val_t)`.
    "_ZdaPvSt11align_val_t" delete_array_aligned(usize);
    /// `delete(p, size, std::align_val_t)`.
    "_ZdlPvmSt11align_val_t" delete_sized_aligned(usize, usize);
    /// `delete[](p, size, std::align_val_t)`.
    "_ZdaPvmSt11align_val_t" delete_array_sized_aligned(usize, usize);
    /// `delete(p, std::align_val_t, std::nothrow)`.
    "_ZdlPvSt11align_val_tRKSt9nothrow_t" delete_aligned_nothrow(usize, Nothrow);
    /// `delete[](p, std::align_val_t, std::nothrow)`.
    "_ZdaPvSt11align_val_tRKSt9nothrow_t" delete_array_aligned_nothrow(usize, Nothrow);
}
