//! Captured contexts: what reclaim reads about a thread, carried to another.
//!
//! A thread in a `NOFS` scope often hands work to another thread. The work
//! must allocate under the same restrictions, or reclaim started there may
//! enter the filesystem the submitter holds locked. A [`Context`] is that
//! state as a plain value (today the scope mask without the internal
//! `RECLAIMING`; room for more), captured in one thread ([`Context::capture`])
//! and adopted in another ([`Context::adopt`]); [`spawn`] and the work
//! queues (`workqueue/`) carry it without being asked.
//!
//! Invariant: adopting never lifts a restriction. The adopting thread's mask
//! becomes the union of its own and the context's, because a thread that
//! holds a filesystem lock stays unable to reclaim through the filesystem
//! whatever work it picks up; the guard (or [`Context::restore`]) then puts
//! back exactly the flags the thread had. A context's class is the
//! [`ContextClass`] of its scope (`reclaim/scope.rs`), the one type the
//! background reclaimers, the shrinkers' needs and the work queues sort
//! threads by.
//!
//! The flusher mode ([`set_io_flusher`]) is the daemon-wide form: the
//! calling thread, and every thread it starts through the library
//! afterwards, runs in a `NOIO` context, and the kernel is asked for
//! `PR_SET_IO_FLUSHER` so that its own reclaim treats the thread alike.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use std::io;
use std::thread::{self, JoinHandle};

use crate::reclaim::{current_scope, nofs_restore, nofs_save, noio_restore, noio_save, ContextClass, ScopeFlags};

/// `to_bits` layout: the scope flags in the low bits, as [`ScopeFlags::bits`].
const SCOPE_MASK: u64 = (ScopeFlags::NOFS.bits() | ScopeFlags::NOIO.bits()) as u64;
/// `to_bits` layout: the context was captured in flusher mode.
const IO_FLUSHER_BIT: u64 = 1 << 8;

thread_local! {
    /// `Some(state of NOIO before flusher mode)` while the thread is in
    /// flusher mode. Const and destructor-free, like the scope mask.
    static FLUSHER: Cell<Option<ScopeFlags>> = const { Cell::new(None) };
}

fn flusher_state() -> Option<ScopeFlags> {
    FLUSHER.try_with(Cell::get).unwrap_or(None)
}

fn set_flusher_state(state: Option<ScopeFlags>) {
    let _ = FLUSHER.try_with(|f| f.set(state));
}

/// Everything reclaim reads about a thread, as a value: its scope flags
/// (`NOFS`, `NOIO`; never the internal `RECLAIMING`) and whether it runs in
/// flusher mode. `Copy`, and 64 bits wide through [`Context::to_bits`], so
/// it crosses threads, queues and the C ABI as it is.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, with_nofs, Context, ScopeFlags};
/// let ctx = with_nofs(Context::capture);
/// let seen = std::thread::spawn(move || ctx.with(current_scope)).join().unwrap();
/// assert_eq!(seen, ScopeFlags::NOFS);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Context {
    scope: ScopeFlags,
    io_flusher: bool,
}

impl Context {
    /// The unrestricted context; its bits are 0.
    ///
    /// ```
    /// use shrinkalloc::reclaim::Context;
    /// assert_eq!(Context::NORMAL.to_bits(), 0);
    /// assert_eq!(Context::capture(), Context::NORMAL);
    /// ```
    pub const NORMAL: Context = Context { scope: ScopeFlags::NONE, io_flusher: false };

    /// The calling thread's context. One or two thread-local loads; never
    /// allocates, so it may be called anywhere, reclaim included.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{with_noio, Context, ScopeFlags};
    /// assert_eq!(with_noio(Context::capture).scope(), ScopeFlags::NOIO);
    /// ```
    #[inline]
    pub fn capture() -> Context {
        Context { scope: current_scope(), io_flusher: flusher_state().is_some() }
    }

    /// A context with these scope flags, not in flusher mode.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ScopeFlags};
    /// assert_eq!(Context::from_scope(ScopeFlags::NOFS).scope(), ScopeFlags::NOFS);
    /// ```
    pub const fn from_scope(scope: ScopeFlags) -> Context {
        Context { scope, io_flusher: false }
    }

    /// The context's scope flags, as set (not widened by
    /// [`ScopeFlags::effective`]).
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ScopeFlags};
    /// assert!(Context::NORMAL.scope().is_empty());
    /// ```
    pub const fn scope(self) -> ScopeFlags {
        self.scope
    }

    /// Whether the context was captured in flusher mode ([`set_io_flusher`]).
    ///
    /// ```
    /// assert!(!shrinkalloc::reclaim::Context::NORMAL.is_io_flusher());
    /// ```
    pub const fn is_io_flusher(self) -> bool {
        self.io_flusher
    }

    /// The context's class: the one whose work-queue workers run its items,
    /// and the most restricted background reclaimer a thread in it may wait on.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ContextClass, ScopeFlags};
    /// let both = Context::from_scope(ScopeFlags::NOFS | ScopeFlags::NOIO);
    /// assert_eq!(both.class(), ContextClass::Noio);
    /// assert_eq!(Context::NORMAL.class(), ContextClass::Normal);
    /// ```
    pub fn class(self) -> ContextClass {
        ContextClass::of(self.scope)
    }

    /// The context as 64 bits: bit 0 `NOFS`, bit 1 `NOIO` (as
    /// [`ScopeFlags::bits`]), bit 8 flusher mode; other bits are 0. What the
    /// C API's `sa_context_t` carries.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ScopeFlags};
    /// assert_eq!(Context::from_scope(ScopeFlags::NOIO).to_bits(), 2);
    /// ```
    pub const fn to_bits(self) -> u64 {
        self.scope.bits() as u64 | if self.io_flusher { IO_FLUSHER_BIT } else { 0 }
    }

    /// The context of [`Context::to_bits`]' value; unknown bits are dropped,
    /// so any 64-bit value is a valid context.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ScopeFlags};
    /// let ctx = Context::from_bits(0xffff_0000_0000_0001);
    /// assert_eq!(ctx, Context::from_scope(ScopeFlags::NOFS));
    /// assert_eq!(Context::from_bits(ctx.to_bits()), ctx);
    /// ```
    pub const fn from_bits(bits: u64) -> Context {
        Context {
            scope: ScopeFlags::from_bits_truncate((bits & SCOPE_MASK) as u32),
            io_flusher: bits & IO_FLUSHER_BIT != 0,
        }
    }

    /// Adopts the context in the calling thread until the guard is dropped:
    /// the thread's flags become the union of its own and the context's
    /// (adopting never lifts a restriction), and the guard puts back exactly
    /// what the thread had. Flusher mode is not adopted, only its `NOIO`.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{current_scope, Context, ScopeFlags};
    /// let ctx = Context::from_scope(ScopeFlags::NOFS);
    /// {
    ///     let _g = ctx.adopt();
    ///     assert_eq!(current_scope(), ScopeFlags::NOFS);
    /// }
    /// assert_eq!(current_scope(), ScopeFlags::NONE);
    /// ```
    #[must_use = "the context is dropped again with the guard"]
    pub fn adopt(self) -> ContextGuard {
        ContextGuard { prev: self.adopt_save(), _not_send: PhantomData }
    }

    /// Runs `f` in this context ([`Context::adopt`]) and returns its result;
    /// the thread's previous flags come back even if `f` unwinds.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{current_scope, Context, ScopeFlags};
    /// let ctx = Context::from_scope(ScopeFlags::NOIO);
    /// assert_eq!(ctx.with(current_scope), ScopeFlags::NOIO);
    /// assert_eq!(current_scope(), ScopeFlags::NONE);
    /// ```
    pub fn with<R>(self, f: impl FnOnce() -> R) -> R {
        let _g = self.adopt();
        f()
    }

    /// Adopts the context like [`Context::adopt`], without a guard: returns
    /// the thread's previous context, to be handed to [`Context::restore`].
    /// Pairs nest like `nofs_save`/`nofs_restore` (the C API's
    /// `sa_context_adopt`).
    ///
    /// ```
    /// use shrinkalloc::reclaim::{current_scope, Context, ScopeFlags};
    /// let prev = Context::from_scope(ScopeFlags::NOFS).adopt_save();
    /// assert_eq!(current_scope(), ScopeFlags::NOFS);
    /// prev.restore();
    /// assert_eq!(current_scope(), ScopeFlags::NONE);
    /// ```
    #[must_use = "pass the previous context to Context::restore"]
    pub fn adopt_save(self) -> Context {
        let prev = Context::capture();
        if self.scope.contains(ScopeFlags::NOFS) {
            let _ = nofs_save();
        }
        if self.scope.contains(ScopeFlags::NOIO) {
            let _ = noio_save();
        }
        prev
    }

    /// Puts the calling thread's `NOFS` and `NOIO` flags back to this
    /// context's: ends an [`Context::adopt_save`] that returned it (the C
    /// API's `sa_context_restore`). Flusher mode is left as it is.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{current_scope, nofs_save, Context, ScopeFlags};
    /// let before = Context::capture();
    /// let _ = nofs_save();
    /// before.restore();
    /// assert_eq!(current_scope(), ScopeFlags::NONE);
    /// ```
    pub fn restore(self) {
        noio_restore(self.scope);
        nofs_restore(self.scope);
    }

    /// Starts a thread that runs `f` in this context for its whole life
    /// (in flusher mode too, if the context was captured in it). Fails only
    /// as [`std::thread::Builder::spawn`] does.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{current_scope, Context, ScopeFlags};
    /// let ctx = Context::from_scope(ScopeFlags::NOFS);
    /// let h = ctx.spawn_with(std::thread::Builder::new().name("helper".into()), current_scope).unwrap();
    /// assert_eq!(h.join().unwrap(), ScopeFlags::NOFS);
    /// ```
    pub fn spawn_with<F, T>(self, builder: thread::Builder, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        builder.spawn(move || {
            self.enter_for_life();
            f()
        })
    }

    /// Makes a fresh thread's context this one for good.
    fn enter_for_life(self) {
        if self.io_flusher {
            // The thread had no NOIO of its own: leaving flusher mode clears it.
            set_flusher_state(Some(ScopeFlags::NONE));
        }
        let _ = self.adopt_save();
    }
}

/// A context adopted by [`Context::adopt`]; restores the thread's previous
/// flags when dropped. Not `Send`: it belongs to the thread whose flags it
/// changed. Guards must be dropped in reverse order of creation.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, Context, ScopeFlags};
/// let g = Context::from_scope(ScopeFlags::NOIO).adopt();
/// assert_eq!(current_scope(), ScopeFlags::NOIO);
/// drop(g);
/// assert_eq!(current_scope(), ScopeFlags::NONE);
/// ```
#[must_use = "the context is dropped again with the guard"]
pub struct ContextGuard {
    prev: Context,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        self.prev.restore();
    }
}

/// Starts a thread that runs `f` in the caller's context: the library's
/// `std::thread::spawn`. A thread started from a `NOFS` scope allocates under
/// `NOFS` for its whole life. Panics, as `std::thread::spawn` does, if the
/// OS cannot create a thread; [`Context::spawn_with`] returns the error.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, spawn, with_nofs, ScopeFlags};
/// let h = with_nofs(|| spawn(current_scope));
/// assert_eq!(h.join().unwrap(), ScopeFlags::NOFS);
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let ctx = Context::capture();
    thread::spawn(move || {
        ctx.enter_for_life();
        f()
    })
}

/// The kernel refused `PR_SET_IO_FLUSHER` (it needs `CAP_SYS_RESOURCE`; Linux
/// 5.6 or later). The library's part of flusher mode is in force anyway.
///
/// ```
/// use shrinkalloc::reclaim::{set_io_flusher, KernelRefused};
/// match set_io_flusher(true) {
///     Ok(()) => println!("kernel and library flusher mode"),
///     Err(e) => println!("library flusher mode only: {e} (errno {})", e.errno()),
/// }
/// # let _ = set_io_flusher(false);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelRefused {
    errno: i32,
}

impl KernelRefused {
    /// The `errno` of the refused `prctl`: `EPERM` without the capability,
    /// `EINVAL` on kernels older than 5.6.
    ///
    /// ```
    /// if let Err(e) = shrinkalloc::reclaim::set_io_flusher(false) {
    ///     assert_ne!(e.errno(), 0);
    /// }
    /// ```
    pub const fn errno(self) -> i32 {
        self.errno
    }
}

impl fmt::Display for KernelRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prctl(PR_SET_IO_FLUSHER) refused: {}", io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for KernelRefused {}

/// Enters (`on`) or leaves flusher mode, for a thread that serves the
/// kernel's own I/O (a FUSE or block daemon): the calling thread, and every
/// thread it starts afterwards through the library ([`spawn`], work queue
/// items and the workers they run on), runs in a `NOIO` context. Leaving
/// puts the thread's `NOIO` flag back as it was before. Idempotent.
///
/// The library's part always takes effect. The kernel is asked too, with
/// `prctl(PR_SET_IO_FLUSHER)`, so that the kernel's reclaim also keeps the
/// thread out of I/O; `Err` says it refused (see [`KernelRefused`]).
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, is_io_flusher, set_io_flusher, spawn, ScopeFlags};
/// let kernel = set_io_flusher(true);
/// assert!(is_io_flusher());
/// assert_eq!(current_scope(), ScopeFlags::NOIO);
/// assert_eq!(spawn(current_scope).join().unwrap(), ScopeFlags::NOIO);
/// let _ = set_io_flusher(false);
/// assert_eq!(current_scope(), ScopeFlags::NONE);
/// # drop(kernel);
/// ```
pub fn set_io_flusher(on: bool) -> Result<(), KernelRefused> {
    match (on, flusher_state()) {
        (true, None) => set_flusher_state(Some(noio_save())),
        (false, Some(saved)) => {
            noio_restore(saved);
            set_flusher_state(None);
        }
        _ => {}
    }
    kernel_io_flusher(on)
}

/// Whether the calling thread is in flusher mode ([`set_io_flusher`]).
///
/// ```
/// assert!(!shrinkalloc::reclaim::is_io_flusher());
/// ```
pub fn is_io_flusher() -> bool {
    flusher_state().is_some()
}

/// Asks the kernel to treat the calling thread as an I/O flusher.
fn kernel_io_flusher(on: bool) -> Result<(), KernelRefused> {
    crate::os::set_io_flusher(on).map_err(|errno| KernelRefused { errno })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopt_is_a_union_and_restore_is_exact() {
        let outer = nofs_save();
        let prev = Context::from_scope(ScopeFlags::NOIO).adopt_save();
        assert_eq!(current_scope(), ScopeFlags::NOFS | ScopeFlags::NOIO);
        prev.restore();
        assert_eq!(current_scope(), ScopeFlags::NOFS);
        let prev = Context::NORMAL.adopt_save();
        assert_eq!(current_scope(), ScopeFlags::NOFS, "adopting never lifts a restriction");
        prev.restore();
        nofs_restore(outer);
        assert_eq!(current_scope(), ScopeFlags::NONE);
    }

    #[test]
    fn bits_round_trip() {
        for bits in [0, 1, 2, 3, IO_FLUSHER_BIT | 2] {
            assert_eq!(Context::from_bits(bits).to_bits(), bits);
        }
        assert_eq!(Context::from_bits(u64::MAX).to_bits(), 3 | IO_FLUSHER_BIT);
    }
}
