//! Pages: runs of blocks of one size class, and their three free lists.
//!
//! A page is owned by one heap. Its blocks are in exactly one of these places:
//!
//! ```text
//!   reserved = used + |free| + |local_free| + (reserved - capacity)
//!   used     = blocks handed out, including those pushed on `xfree`
//!              by other threads and not yet collected
//! ```
//!
//! `free` is the allocation list (fast path pops), `local_free` takes the
//! owner's frees (fast path pushes), `xfree` takes other threads' frees
//! (atomic push). The owner swaps `local_free` and `xfree` into `free` on its
//! slow path, so the fast paths never touch an atomic.
//!
//! `xfree` also carries two flag bits in its low bits: [`XF_IN_FULL`] (the
//! owner moved the page to its full list, so a remote free must tell the
//! owner) and [`XF_QUEUED`] (a remote thread has pushed, or is about to push,
//! this page on the owner's `remote_pages` stack). A page with `XF_QUEUED`
//! is never retired: only draining the stack clears the bit, so the page
//! stays alive until the pushing thread is done with it.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::heap::Heap;

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    /// The next free block, or null.
    pub next: *mut Block,
}

/// `xfree` flag: the page is on its owner's full list.
pub const XF_IN_FULL: usize = 1;
/// `xfree` flag: the page is (being) pushed on its owner's `remote_pages`.
pub const XF_QUEUED: usize = 2;
const XF_FLAGS: usize = XF_IN_FULL | XF_QUEUED;

/// Owner-side flag mirror: the page is on the full list.
pub const PF_IN_FULL: u8 = 1;

/// Segment-level state of a page, changed by compare-and-swap so that the
/// owner (taking a page) and the purger (returning it to the OS) never both
/// act on one page.
pub mod state {
    /// Given to a heap for a size class.
    pub const IN_USE: u8 = 0;
    /// Free, memory still committed.
    pub const FREE: u8 = 1;
    /// Free, memory given back to the OS (reads as zero when touched).
    pub const PURGED: u8 = 2;
    /// The purger is giving it back right now.
    pub const PURGING: u8 = 3;
}

/// A page of blocks of one size class. See the module doc for its counts.
#[repr(C)]
pub struct Page {
    /// Allocation list (owner only).
    pub free: *mut Block,
    /// Blocks handed out (owner writes; relaxed so statistics may read it).
    pub used: AtomicU32,
    /// Owner flags (`PF_*`), checked by the free fast path.
    pub flags: u8,
    /// Every block on `free` is zero except its link word.
    pub is_zero: bool,
    /// Size class index.
    pub class: u8,
    /// Segment-level state (`state::*`).
    pub state: AtomicU8,
    /// Owner's frees, merged into `free` on the slow path.
    pub local_free: *mut Block,
    /// Block size in bytes.
    pub block_size: usize,
    /// `ceil(2^44 / block_size)`: block index of an offset by multiplication.
    pub recip: u64,
    /// Blocks carved out of the page so far (the rest is untouched memory).
    pub capacity: u32,
    /// Blocks the page can hold.
    pub reserved: u32,
    /// `reserved * block_size`: offset of the end of the last block.
    pub blocks_end: u32,
    /// Other threads' frees, plus the `XF_*` flag bits.
    pub xfree: AtomicUsize,
    /// The owning heap; stable while any block of the page is live.
    pub heap: *mut Heap,
    /// Links in the owner's page queue or full list.
    pub next: *mut Page,
    /// See `next`.
    pub prev: *mut Page,
    /// Link in the owner's `remote_pages` stack.
    pub remote_next: AtomicPtr<Page>,
    /// First block.
    pub start: *mut u8,
    /// Bytes from `start` to the end of the page.
    pub size: usize,
    /// Bytes from `start` that blocks have been carved from since the page
    /// was last purged (OS-page rounded): what it holds committed. Written by
    /// the owner while `IN_USE`, by the purger while `PURGING`.
    pub touched: usize,
    /// When the page last became free (ms), for purge decay.
    pub freed_at: AtomicU64,
}

impl Page {
    /// An unused page record (also the shape of the static empty page).
    pub const fn empty() -> Page {
        Page {
            free: ptr::null_mut(),
            used: AtomicU32::new(0),
            flags: 0,
            is_zero: false,
            class: 0,
            state: AtomicU8::new(state::PURGED),
            local_free: ptr::null_mut(),
            block_size: 0,
            recip: 0,
            capacity: 0,
            reserved: 0,
            blocks_end: 0,
            xfree: AtomicUsize::new(0),
            heap: ptr::null_mut(),
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            remote_next: AtomicPtr::new(ptr::null_mut()),
            start: ptr::null_mut(),
            size: 0,
            touched: 0,
            freed_at: AtomicU64::new(0),
        }
    }

    /// Blocks handed out.
    #[inline(always)]
    pub fn used(&self) -> u32 {
        // Relaxed: only the owner writes `used`; others read it for statistics.
        self.used.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn set_used(&self, n: u32) {
        // Relaxed store, not a read-modify-write: only the owner writes.
        self.used.store(n, Ordering::Relaxed)
    }

    /// Prepares a free page for `class` in `heap`. `zero` says whether its
    /// memory is known to read as zero.
    pub fn init(&mut self, heap: *mut Heap, class: usize, block_size: usize, zero: bool) {
        self.free = ptr::null_mut();
        self.local_free = ptr::null_mut();
        self.set_used(0);
        self.flags = 0;
        self.is_zero = zero;
        self.class = class as u8;
        self.block_size = block_size;
        self.recip = (1u64 << 44).div_ceil(block_size as u64);
        self.capacity = 0;
        self.reserved = (self.size / block_size) as u32;
        self.blocks_end = self.reserved * block_size as u32;
        // Relaxed: the page is not yet reachable by other threads; the first
        // block handed out publishes it.
        self.xfree.store(0, Ordering::Relaxed);
        self.heap = heap;
        self.next = ptr::null_mut();
        self.prev = ptr::null_mut();
    }

    /// Whether `p` is the start of a block of this page.
    #[inline]
    pub fn is_block_start(&self, p: *const u8) -> bool {
        let off = (p as usize).wrapping_sub(self.start as usize) as u64;
        if off >= self.blocks_end as u64 {
            return false;
        }
        // off < 2^22 and block_size <= 2^20, so the product fits and the
        // quotient is exact (error below 2^-22 of a block).
        let idx = (off * self.recip) >> 44;
        idx * self.block_size as u64 == off
    }

    /// Carves up to a few KiB of untouched blocks into `free`. Returns whether
    /// any block was added.
    pub fn extend(&mut self) -> bool {
        let n = self.next_carve();
        if n == 0 {
            return false;
        }
        let bs = self.block_size;
        let first = self.start.wrapping_add(self.capacity as usize * bs);
        for i in 0..n {
            let b = first.wrapping_add(i * bs).cast::<Block>();
            let next = if i + 1 < n { first.wrapping_add((i + 1) * bs).cast() } else { self.free };
            // SAFETY: blocks `capacity .. capacity + n` lie inside the page
            // (n <= reserved - capacity) and belong to no one yet.
            unsafe { (*b).next = next };
        }
        self.free = first.cast();
        self.capacity += n as u32;
        // Committed memory grows as blocks are carved, not when the page is
        // taken: a 4 MiB large page holding one block commits one block.
        let end = (self.capacity as usize * bs).next_multiple_of(crate::os::OS_PAGE).min(self.size);
        if end > self.touched {
            crate::stats::on_commit(end - self.touched);
            self.touched = end;
        }
        true
    }

    /// Blocks the next [`Page::extend`] carves (0: the page is all carved).
    fn next_carve(&self) -> usize {
        let left = (self.reserved - self.capacity) as usize;
        left.min((crate::heap::FIRST_CARVE / self.block_size).max(1))
    }

    /// Committed bytes the next [`Page::extend`] adds (0 when it carves only
    /// memory touched before, or nothing).
    pub fn carve_cost(&self) -> usize {
        let end = ((self.capacity as usize + self.next_carve()) * self.block_size)
            .next_multiple_of(crate::os::OS_PAGE)
            .min(self.size);
        end.saturating_sub(self.touched)
    }

    /// Moves `local_free` and the cross-thread list into `free`, keeping the
    /// `XF_*` flags. Called by the owner when `free` ran dry.
    pub fn collect(&mut self) {
        self.collect_local();
        // Relaxed first look: a stale zero only delays collection.
        let seen = self.xfree.load(Ordering::Relaxed);
        if seen & !XF_FLAGS == 0 {
            return;
        }
        // Take the list and keep the flags. Acquire pairs with the Release of
        // the remote pushers: their writes of the blocks' links are visible.
        let mut old = seen;
        while let Err(now) = self.xfree.compare_exchange_weak(old, old & XF_FLAGS, Ordering::Acquire, Ordering::Relaxed)
        {
            old = now;
        }
        self.merge_remote(old);
    }

    /// Takes the cross-thread list and clears both flags: only for draining
    /// the owner's `remote_pages` stack, which owns the `XF_QUEUED` bit.
    pub fn collect_clearing_flags(&mut self) {
        // Acquire: see `collect`.
        self.merge_remote(self.xfree.swap(0, Ordering::Acquire));
        self.collect_local();
    }

    /// Moves `local_free` into `free`; without a walk when `free` is empty
    /// (`used` already counts these frees).
    fn collect_local(&mut self) {
        if self.local_free.is_null() {
            return;
        }
        if self.free.is_null() {
            self.free = self.local_free;
            self.is_zero = false;
        } else {
            self.append_to_free(self.local_free);
        }
        self.local_free = ptr::null_mut();
    }

    /// Merges a taken `xfree` word's list into `free`: those blocks leave `used`.
    fn merge_remote(&mut self, word: usize) {
        let list = (word & !XF_FLAGS) as *mut Block;
        if !list.is_null() {
            let n = self.append_to_free(list);
            self.set_used(self.used() - n);
        }
    }

    /// Prepends `list` to `free`; returns its length. The merged blocks were
    /// used, so the page no longer promises zeroed blocks.
    fn append_to_free(&mut self, list: *mut Block) -> u32 {
        let mut n = 1;
        let mut tail = list;
        // SAFETY: `list` is a chain of free blocks of this page, each linked
        // by its first word, ending in null.
        unsafe {
            while !(*tail).next.is_null() {
                tail = (*tail).next;
                n += 1;
            }
            (*tail).next = self.free;
        }
        self.free = list;
        self.is_zero = false;
        n
    }

    /// Marks the page full so that remote frees notify the owner. Fails when
    /// blocks arrived on `xfree` meanwhile (the caller collects again).
    pub fn try_mark_full(&mut self) -> bool {
        // Relaxed load; the CAS below decides.
        let old = self.xfree.load(Ordering::Relaxed);
        if old & !XF_FLAGS != 0 {
            return false;
        }
        // AcqRel pairs with remote pushers' CAS on the same word: either they
        // see IN_FULL and queue the page, or we see their block and fail.
        let ok = self.xfree.compare_exchange(old, old | XF_IN_FULL, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if ok {
            self.flags |= PF_IN_FULL;
        }
        ok
    }

    /// Clears the full mark (the owner took the page off its full list).
    pub fn clear_full(&mut self) {
        // Relaxed is enough: a remote that still sees IN_FULL queues the page,
        // which the drain tolerates for a page that is no longer full.
        self.xfree.fetch_and(!XF_IN_FULL, Ordering::Relaxed);
        self.flags &= !PF_IN_FULL;
    }

    /// Whether a remote thread holds the right to push this page on the
    /// owner's stack (so the page must not be retired yet).
    pub fn is_queued(&self) -> bool {
        // Acquire: pairs with the pusher's CAS; see the module doc.
        self.xfree.load(Ordering::Acquire) & XF_QUEUED != 0
    }

    /// Pushes `block` on the cross-thread list, from a thread that does not
    /// own the page. Returns whether this thread must now push the page on
    /// the owner's `remote_pages` stack.
    ///
    /// # Safety
    ///
    /// `block` is a live block of this page, freed exactly once.
    pub unsafe fn push_remote(&self, block: *mut Block) -> bool {
        let mut old = self.xfree.load(Ordering::Relaxed);
        loop {
            let notify = old & XF_IN_FULL != 0 && old & XF_QUEUED == 0;
            let new = block as usize | (old & XF_FLAGS) | if notify { XF_QUEUED } else { 0 };
            // SAFETY: the block is ours to write until the CAS publishes it.
            unsafe { (*block).next = (old & !XF_FLAGS) as *mut Block };
            // Release publishes the link write to the owner's Acquire in `collect`.
            match self.xfree.compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return notify,
                Err(now) => old = now,
            }
        }
    }
}
