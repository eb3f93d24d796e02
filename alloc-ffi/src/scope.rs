//! The scope functions: `sa_memalloc_nofs_save`/`restore`,
//! `sa_memalloc_noio_save`/`restore` and `sa_scope_current`.
//!
//! One-line forwards to `shrinkalloc::reclaim`'s scope API, whose bits are
//! the header's (`SA_SCOPE_NOFS` = 1, `SA_SCOPE_NOIO` = 2; a test checks the
//! header against them). A save returns the old state of its own flag, a
//! restore puts back exactly that flag: pairs nest as the kernel's do.

use core::ffi::c_uint;

use shrinkalloc::reclaim::{self, ScopeFlags};

/// Enters a NOFS scope; returns the old NOFS state for the restore.
#[no_mangle]
pub extern "C" fn sa_memalloc_nofs_save() -> c_uint {
    reclaim::nofs_save().bits()
}

/// Ends a NOFS scope, putting the NOFS flag back to `saved`.
#[no_mangle]
pub extern "C" fn sa_memalloc_nofs_restore(saved: c_uint) {
    reclaim::nofs_restore(ScopeFlags::from_bits_truncate(saved));
}

/// Enters a NOIO scope (implies NOFS); returns the old NOIO state.
#[no_mangle]
pub extern "C" fn sa_memalloc_noio_save() -> c_uint {
    reclaim::noio_save().bits()
}

/// Ends a NOIO scope, putting the NOIO flag back to `saved`.
#[no_mangle]
pub extern "C" fn sa_memalloc_noio_restore(saved: c_uint) {
    reclaim::noio_restore(ScopeFlags::from_bits_truncate(saved));
}

/// The calling thread's mask as reclaim reads it: NOIO implies NOFS.
#[no_mangle]
pub extern "C" fn sa_scope_current() -> c_uint {
    reclaim::current_scope().effective().bits()
}
