//! Per-thread scope masks: `NOFS`, `NOIO`, and the internal `RECLAIMING`.
//!
//! A thread that holds a filesystem lock marks the *region of code* that
//! holds it, not every allocation inside it: a scope is entered once with
//! [`nofs_save`] (or [`nofs`], [`with_nofs`]) and every allocation made until
//! the matching restore, however deep in a library, inherits it. This is the
//! kernel's argument for `memalloc_nofs_save()` over per-call `GFP_NOFS`: the
//! code that knows a lock is held is rarely the code that allocates.
//!
//! Invariant: the mask lives in one const-initialised `Cell<u32>` per thread
//! (no destructor, so it is readable inside `malloc` at any point of a
//! thread's life); a save sets its flag and returns that flag's old state, a
//! restore puts back exactly that flag's state and never touches the others,
//! so an inner scope cannot clear an outer one. `NOIO` implies `NOFS` when
//! reclaim reads the mask ([`ScopeFlags::effective`]). `RECLAIMING` (the
//! kernel's `PF_MEMALLOC`) is set while a thread runs reclaim or a shrinker;
//! `reclaim::charge` relies on it to never recurse into reclaim.
//!
//! A mask sorts threads into a [`ContextClass`] (normal, `NOFS`, `NOIO`):
//! the one type by which the background reclaimers, the shrinkers' needs,
//! captured contexts and the work queues (`crate::delegate`) tell threads
//! apart.

use core::cell::Cell;
use core::marker::PhantomData;
use core::ops::BitOr;

thread_local! {
    /// The calling thread's mask: `NOFS | NOIO | RECLAIMING` bits.
    static MASK: Cell<u32> = const { Cell::new(0) };
}

const NOFS_BIT: u32 = 1;
const NOIO_BIT: u32 = 2;
/// Set while the thread runs reclaim or a shrinker callback.
pub(crate) const RECLAIMING: u32 = 4;
/// Set for the life of a library background reclaimer thread.
const BACKGROUND: u32 = 8;
const PUBLIC_BITS: u32 = NOFS_BIT | NOIO_BIT;

/// A set of scope flags: what reclaim started from this thread must not do.
///
/// ```
/// use shrinkalloc::reclaim::ScopeFlags;
/// let m = ScopeFlags::NOIO;
/// assert!(m.effective().contains(ScopeFlags::NOFS));
/// assert!(!m.contains(ScopeFlags::NOFS));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScopeFlags(u32);

impl ScopeFlags {
    /// No restriction: reclaim may call every shrinker.
    ///
    /// ```
    /// assert!(shrinkalloc::reclaim::ScopeFlags::NONE.is_empty());
    /// ```
    pub const NONE: Self = Self(0);
    /// Reclaim must not enter the filesystem (skip `Needs::FS` shrinkers).
    ///
    /// ```
    /// use shrinkalloc::reclaim::ScopeFlags;
    /// assert_eq!(ScopeFlags::NOFS.bits(), 1);
    /// ```
    pub const NOFS: Self = Self(NOFS_BIT);
    /// Reclaim must not start I/O (skip `Needs::IO` and, implied, `Needs::FS`).
    ///
    /// ```
    /// use shrinkalloc::reclaim::ScopeFlags;
    /// assert_eq!(ScopeFlags::NOIO.bits(), 2);
    /// ```
    pub const NOIO: Self = Self(NOIO_BIT);

    /// The raw bits (`NOFS` = 1, `NOIO` = 2), as the C API passes them.
    ///
    /// ```
    /// use shrinkalloc::reclaim::ScopeFlags;
    /// assert_eq!((ScopeFlags::NOFS | ScopeFlags::NOIO).bits(), 3);
    /// ```
    #[inline]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; unknown bits are dropped.
    ///
    /// ```
    /// use shrinkalloc::reclaim::ScopeFlags;
    /// assert_eq!(ScopeFlags::from_bits_truncate(0xff), ScopeFlags::NOFS | ScopeFlags::NOIO);
    /// ```
    #[inline]
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & PUBLIC_BITS)
    }

    /// Whether every flag of `other` is set in `self`.
    ///
    /// ```
    /// use shrinkalloc::reclaim::ScopeFlags;
    /// assert!((ScopeFlags::NOFS | ScopeFlags::NOIO).contains(ScopeFlags::NOIO));
    /// ```
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    ///
    /// ```
    /// assert!(!shrinkalloc::reclaim::ScopeFlags::NOFS.is_empty());
    /// ```
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags as reclaim reads them: `NOIO` implies `NOFS`.
    ///
    /// ```
    /// use shrinkalloc::reclaim::ScopeFlags;
    /// assert_eq!(ScopeFlags::NOIO.effective(), ScopeFlags::NOIO | ScopeFlags::NOFS);
    /// assert_eq!(ScopeFlags::NOFS.effective(), ScopeFlags::NOFS);
    /// ```
    #[inline]
    pub const fn effective(self) -> Self {
        if self.0 & NOIO_BIT != 0 {
            Self(self.0 | NOFS_BIT)
        } else {
            self
        }
    }
}

impl BitOr for ScopeFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// The raw mask of the calling thread, `RECLAIMING` included. One
/// thread-local load; 0 if the thread's locals are already gone (a const,
/// destructor-free local never is, but `try_with` keeps this panic-free).
#[inline]
pub(crate) fn raw() -> u32 {
    MASK.try_with(Cell::get).unwrap_or(0)
}

#[inline]
fn set_raw(bits: u32) {
    let _ = MASK.try_with(|m| m.set(bits));
}

/// The calling thread's scope flags (`NOFS`, `NOIO`) as set, not yet
/// widened by [`ScopeFlags::effective`]. Costs one thread-local load.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, with_nofs, ScopeFlags};
/// assert_eq!(current_scope(), ScopeFlags::NONE);
/// with_nofs(|| assert_eq!(current_scope(), ScopeFlags::NOFS));
/// ```
#[inline]
pub fn current_scope() -> ScopeFlags {
    ScopeFlags::from_bits_truncate(raw())
}

/// Whether the calling thread is running reclaim or a shrinker callback
/// (the kernel's `PF_MEMALLOC`): its allocations never start reclaim and
/// may dip into a small reserve above the hard limit.
///
/// ```
/// assert!(!shrinkalloc::reclaim::is_reclaiming());
/// ```
#[inline]
pub fn is_reclaiming() -> bool {
    raw() & RECLAIMING != 0
}

#[inline]
fn save(flag: u32) -> ScopeFlags {
    let old = raw();
    set_raw(old | flag);
    ScopeFlags(old & flag)
}

#[inline]
fn restore(flag: u32, saved: ScopeFlags) {
    set_raw((raw() & !flag) | (saved.0 & flag));
}

/// Enters a `NOFS` scope; returns the previous state of the `NOFS` flag, to
/// be handed to [`nofs_restore`]. Pairs nest like the kernel's
/// `memalloc_nofs_save()`.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, nofs_restore, nofs_save, ScopeFlags};
/// let outer = nofs_save();
/// let inner = nofs_save();
/// nofs_restore(inner); // the outer scope is still in force
/// assert_eq!(current_scope(), ScopeFlags::NOFS);
/// nofs_restore(outer);
/// assert_eq!(current_scope(), ScopeFlags::NONE);
/// ```
#[must_use = "pass the saved state to nofs_restore"]
#[inline]
pub fn nofs_save() -> ScopeFlags {
    save(NOFS_BIT)
}

/// Ends a `NOFS` scope: puts the `NOFS` flag back to `saved` (from
/// [`nofs_save`]) and leaves every other flag alone.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, noio_save, nofs_restore, nofs_save, ScopeFlags};
/// let fs = nofs_save();
/// let io = noio_save();
/// nofs_restore(fs); // NOIO stays: restore touches its own flag only
/// assert_eq!(current_scope(), ScopeFlags::NOIO);
/// shrinkalloc::reclaim::noio_restore(io);
/// ```
#[inline]
pub fn nofs_restore(saved: ScopeFlags) {
    restore(NOFS_BIT, saved);
}

/// Enters a `NOIO` scope (which implies `NOFS`); returns the previous state
/// of the `NOIO` flag, to be handed to [`noio_restore`].
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, noio_restore, noio_save, ScopeFlags};
/// let saved = noio_save();
/// assert!(current_scope().effective().contains(ScopeFlags::NOFS));
/// noio_restore(saved);
/// ```
#[must_use = "pass the saved state to noio_restore"]
#[inline]
pub fn noio_save() -> ScopeFlags {
    save(NOIO_BIT)
}

/// Ends a `NOIO` scope: puts the `NOIO` flag back to `saved` (from
/// [`noio_save`]) and leaves every other flag alone.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, noio_restore, noio_save, ScopeFlags};
/// let saved = noio_save();
/// noio_restore(saved);
/// assert_eq!(current_scope(), ScopeFlags::NONE);
/// ```
#[inline]
pub fn noio_restore(saved: ScopeFlags) {
    restore(NOIO_BIT, saved);
}

/// An entered scope that restores its flag when dropped. Not `Send`: it
/// belongs to the thread whose mask it changed. Guards must be dropped in
/// reverse order of creation, as lexical scoping does.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, nofs, ScopeFlags};
/// {
///     let _g = nofs();
///     assert_eq!(current_scope(), ScopeFlags::NOFS);
/// }
/// assert_eq!(current_scope(), ScopeFlags::NONE);
/// ```
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    flag: u32,
    saved: ScopeFlags,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ScopeGuard {
    #[inline]
    fn drop(&mut self) {
        restore(self.flag, self.saved);
    }
}

/// Enters a `NOFS` scope until the returned guard is dropped.
///
/// ```
/// let _g = shrinkalloc::reclaim::nofs();
/// let v = vec![0u8; 1 << 20]; // reclaim started here never enters the filesystem
/// # drop(v);
/// ```
#[inline]
pub fn nofs() -> ScopeGuard {
    ScopeGuard { flag: NOFS_BIT, saved: nofs_save(), _not_send: PhantomData }
}

/// Enters a `NOIO` scope until the returned guard is dropped.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, noio, ScopeFlags};
/// let g = noio();
/// assert_eq!(current_scope(), ScopeFlags::NOIO);
/// drop(g);
/// assert_eq!(current_scope(), ScopeFlags::NONE);
/// ```
#[inline]
pub fn noio() -> ScopeGuard {
    ScopeGuard { flag: NOIO_BIT, saved: noio_save(), _not_send: PhantomData }
}

/// Runs `f` in a `NOFS` scope and returns its result; the scope ends even
/// if `f` unwinds.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, with_nofs, ScopeFlags};
/// let n = with_nofs(|| current_scope().bits());
/// assert_eq!(n, ScopeFlags::NOFS.bits());
/// ```
#[inline]
pub fn with_nofs<R>(f: impl FnOnce() -> R) -> R {
    let _g = nofs();
    f()
}

/// Runs `f` in a `NOIO` scope and returns its result; the scope ends even
/// if `f` unwinds.
///
/// ```
/// use shrinkalloc::reclaim::{current_scope, with_noio, ScopeFlags};
/// assert_eq!(with_noio(current_scope), ScopeFlags::NOIO);
/// ```
#[inline]
pub fn with_noio<R>(f: impl FnOnce() -> R) -> R {
    let _g = noio();
    f()
}

/// Marks the thread as running reclaim until dropped; crate-internal.
pub(crate) struct Reclaiming {
    saved: u32,
    _not_send: PhantomData<*const ()>,
}

impl Reclaiming {
    /// Sets `RECLAIMING`; the guard puts back the flag's previous state.
    pub(crate) fn enter() -> Self {
        let old = raw();
        set_raw(old | RECLAIMING);
        Self { saved: old & RECLAIMING, _not_send: PhantomData }
    }
}

impl Drop for Reclaiming {
    fn drop(&mut self) {
        set_raw((raw() & !RECLAIMING) | self.saved);
    }
}

/// Runs `f` the way reclaim runs: its allocations never start reclaim and
/// may use the small reserve above the hard limit. For short reporting paths
/// that must work at the limit (printing statistics, logging an error); not
/// a way around the limit for real work.
///
/// ```
/// let text = shrinkalloc::reclaim::with_reserve(|| shrinkalloc::reclaim::stats().to_string());
/// assert!(!text.is_empty());
/// ```
pub fn with_reserve<R>(f: impl FnOnce() -> R) -> R {
    let _g = Reclaiming::enter();
    f()
}

/// Sets the whole mask of a library reclaimer thread for its lifetime:
/// its class's flags, `RECLAIMING` and `BACKGROUND`.
pub(crate) fn become_background_reclaimer(flags: ScopeFlags) {
    set_raw(flags.0 | RECLAIMING | BACKGROUND);
}

/// Whether the calling thread is one of the library's background
/// reclaimers (the kernel's `current_is_kswapd()`); its class is its
/// [`current_scope`]. Lets a shrinker do more, or less, off the
/// allocating threads.
///
/// ```
/// assert!(!shrinkalloc::reclaim::is_background_reclaimer());
/// ```
#[inline]
pub fn is_background_reclaimer() -> bool {
    raw() & BACKGROUND != 0
}

/// The classes of contexts, from least to most restricted: what a context
/// forbids reclaim to enter. Work queues keep separate workers per class and
/// the library keeps one background reclaimer per class.
///
/// ```
/// use shrinkalloc::reclaim::{Context, ContextClass, ScopeFlags};
/// assert_eq!(Context::from_scope(ScopeFlags::NOIO).class(), ContextClass::Noio);
/// assert!(ContextClass::Normal < ContextClass::Nofs);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContextClass {
    /// No restriction: reclaim may enter the filesystem and start I/O.
    Normal = 0,
    /// `NOFS`: reclaim must not enter the filesystem.
    Nofs = 1,
    /// `NOIO` (implying `NOFS`): reclaim must not start I/O either.
    Noio = 2,
}

impl ContextClass {
    /// How many classes there are.
    pub const COUNT: usize = 3;

    /// Every class, in index order.
    ///
    /// ```
    /// use shrinkalloc::reclaim::ContextClass;
    /// assert_eq!(ContextClass::ALL.map(ContextClass::index), [0, 1, 2]);
    /// ```
    pub const ALL: [ContextClass; ContextClass::COUNT] = [ContextClass::Normal, ContextClass::Nofs, ContextClass::Noio];

    /// The class's index: 0 normal, 1 `NOFS`, 2 `NOIO`.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::ContextClass::Nofs.index(), 1);
    /// ```
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The class of a thread with scope `mask`: by its effective flags
    /// (`NOIO` implying `NOFS`), the most restricted one it is in.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{ContextClass, ScopeFlags};
    /// assert_eq!(ContextClass::of(ScopeFlags::NOFS | ScopeFlags::NOIO), ContextClass::Noio);
    /// assert_eq!(ContextClass::of(ScopeFlags::NONE), ContextClass::Normal);
    /// ```
    pub const fn of(mask: ScopeFlags) -> Self {
        let m = mask.effective();
        if m.contains(ScopeFlags::NOIO) {
            ContextClass::Noio
        } else if m.contains(ScopeFlags::NOFS) {
            ContextClass::Nofs
        } else {
            ContextClass::Normal
        }
    }

    /// The class of index `i` (2 and above: `Noio`).
    ///
    /// ```
    /// use shrinkalloc::reclaim::ContextClass;
    /// assert_eq!(ContextClass::from_index(0), ContextClass::Normal);
    /// ```
    pub const fn from_index(i: usize) -> Self {
        match i {
            0 => ContextClass::Normal,
            1 => ContextClass::Nofs,
            _ => ContextClass::Noio,
        }
    }

    /// `"normal"`, `"nofs"` or `"noio"`, as statistics print it.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::ContextClass::Noio.name(), "noio");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            ContextClass::Normal => "normal",
            ContextClass::Nofs => "nofs",
            ContextClass::Noio => "noio",
        }
    }

    /// The least restricted scope of the class: what its workers run under
    /// between items.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{ContextClass, ScopeFlags};
    /// assert_eq!(ContextClass::Nofs.scope(), ScopeFlags::NOFS);
    /// ```
    pub const fn scope(self) -> ScopeFlags {
        match self {
            ContextClass::Normal => ScopeFlags::NONE,
            ContextClass::Nofs => ScopeFlags::NOFS,
            ContextClass::Noio => ScopeFlags::NOIO,
        }
    }
}

impl core::fmt::Display for ContextClass {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_touches_only_its_own_flag() {
        let fs = nofs_save();
        let io = noio_save();
        let fs2 = nofs_save();
        assert_eq!(fs2, ScopeFlags::NOFS);
        nofs_restore(fs2);
        assert_eq!(current_scope(), ScopeFlags::NOFS | ScopeFlags::NOIO);
        nofs_restore(fs);
        assert_eq!(current_scope(), ScopeFlags::NOIO);
        noio_restore(io);
        assert_eq!(current_scope(), ScopeFlags::NONE);
    }

    #[test]
    fn classes_follow_the_effective_mask() {
        assert_eq!(ContextClass::of(ScopeFlags::NONE), ContextClass::Normal);
        assert_eq!(ContextClass::of(ScopeFlags::NOFS), ContextClass::Nofs);
        assert_eq!(ContextClass::of(ScopeFlags::NOIO), ContextClass::Noio);
        assert_eq!(ContextClass::of(ScopeFlags::NOIO | ScopeFlags::NOFS), ContextClass::Noio);
        for c in ContextClass::ALL {
            assert_eq!(ContextClass::of(c.scope()), c);
        }
    }

    #[test]
    fn reclaiming_guard_nests() {
        let a = Reclaiming::enter();
        let b = Reclaiming::enter();
        drop(b);
        assert!(is_reclaiming());
        drop(a);
        assert!(!is_reclaiming());
    }
}
