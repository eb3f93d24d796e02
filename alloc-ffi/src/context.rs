//! The context functions: `sa_context_capture`, `sa_context_adopt`,
//! `sa_context_restore`, and the flusher mode, `sa_set_io_flusher`.
//!
//! One-line forwards to `shrinkalloc::reclaim`'s `Context`. An
//! `sa_context_t` is `Context::to_bits` in a one-field struct, so it crosses
//! threads and queues as a plain value; every 64-bit value is a valid
//! context (unknown bits are dropped) and zero is the unrestricted one.
//! Adopting never lifts a restriction, and a restore puts back exactly the
//! flags the adopting thread had: pairs nest as the scope functions' do.

use core::ffi::c_int;

use shrinkalloc::reclaim::{self, Context};

/// `sa_context_t`: a `Context` as its 64 bits.
#[repr(C)]
pub struct SaContext {
    bits: u64,
}

/// The calling thread's context, as a value another thread can adopt.
#[no_mangle]
pub extern "C" fn sa_context_capture() -> SaContext {
    SaContext { bits: Context::capture().to_bits() }
}

/// Adopts `ctx` in the calling thread; returns its previous context.
#[no_mangle]
pub extern "C" fn sa_context_adopt(ctx: SaContext) -> SaContext {
    SaContext { bits: Context::from_bits(ctx.bits).adopt_save().to_bits() }
}

/// Puts the calling thread's flags back to `prev` (from `sa_context_adopt`).
#[no_mangle]
pub extern "C" fn sa_context_restore(prev: SaContext) {
    Context::from_bits(prev.bits).restore();
}

/// Enters (`on != 0`) or leaves flusher mode; 0, or the positive errno of
/// the kernel's refusal of `PR_SET_IO_FLUSHER` (the library's part is in
/// force either way). Leaves `errno` as it was: the error is the result,
/// as with the pthread functions.
#[no_mangle]
pub extern "C" fn sa_set_io_flusher(on: c_int) -> c_int {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's lifetime.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above; read and written on this thread only.
    let saved = unsafe { *errno };
    let result = match reclaim::set_io_flusher(on != 0) {
        Ok(()) => 0,
        Err(refused) => refused.errno(),
    };
    // SAFETY: as above.
    unsafe { *errno = saved };
    result
}
