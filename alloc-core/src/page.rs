//! Pages: runs of blocks of one size class, and their free lists.
//!
//! A page record lives in its segment's header and is split by who may
//! touch it:
//!
//! - [`Owned`]: the free lists, flags, carving and queue links. Only the
//!   thread that owns the page's heap reads or writes them (and the thread
//!   that initialises the page, before it publishes it). They are `Cell`s:
//!   the owner works through `&Page`, never `&mut Page`, because other
//!   threads hold `&Page` at the same time to free into it.
//! - [`Shared`]: what other threads touch, all atomic: the cross-thread
//!   free list `xfree`, the state the purger changes by compare-and-swap,
//!   the owning heap, the `used` count and the geometry that statistics and
//!   remote frees read. Plus `start`/`size`, fixed when the segment is mapped.
//!
//! Counting identity (checked by `check.rs`):
//!
//! ```text
//!   reserved = used + |free| + |local_free| + |decommitted|
//!              + (reserved - capacity)
//!   used     = blocks handed out, including those pushed on `xfree`
//!              by other threads and not yet collected
//! ```
//!
//! `free` is the allocation list (fast path pops; the C library's free of a
//! small page's block pushes there too, see `free.rs`), `local_free` takes
//! the owner's other frees (fast path pushes), `xfree` takes other threads'
//! frees (atomic push). The owner moves `local_free` and `xfree` into `free` on its
//! slow path, so the fast paths never touch an atomic read-modify-write.
//!
//! `xfree` also carries two flag bits in its low bits: [`XF_IN_FULL`] (the
//! owner moved the page to its full list, so a remote free must tell the
//! owner) and [`XF_QUEUED`] (a remote thread has pushed, or is about to push,
//! this page on the owner's `remote_pages` stack). A page with `XF_QUEUED`
//! is never retired: only draining the stack clears the bit, so the page
//! stays alive until the pushing thread is done with it.
//!
//! With the `double-free-check` feature, a freed block also carries a
//! *free mark* in its second word (its page's address mixed with a
//! constant; blocks are 16 bytes or more then), written by every free and
//! cleared by every allocation that hands the block out. A free that finds
//! the mark already there is a double free, unless the program's own bytes
//! happen to equal it: the owner confirms by walking the page's lists
//! ([`Page::on_free_lists`]); another thread cannot walk them and reports
//! on the mark alone.
//!
//! Free blocks given back: under pressure, a free block of 8 KiB or more
//! gives the OS pages inside it back (`MADV_DONTNEED`; the first three
//! words stay, for the link, the free mark and the *decommit mark*), so that
//! the memory a shrinker frees leaves the committed count at once, not
//! when the block's whole page is empty. A reclaim pass that must make
//! room does it, on pages it does not own, for the blocks waiting on their
//! cross-thread lists, and marks them ([`Page::decommit_remote`]); the
//! owner sorts marked blocks onto `decommitted` when it collects. (Doing the same for every
//! heap's own free blocks at each purge was tried: hits rose, but usage
//! dipped by the whole free-block slack at once, widening the band.) The
//! allocation slow path takes a block off `decommitted` only when `free` ran
//! dry, charging its inside again ([`Page::refill`]); a page that empties
//! with holes is purged whole at once (`page_alloc::release_page`), since
//! `touched` cannot describe holes.
//!
//! Pages emptied by other threads: blocks other threads freed wait on
//! `xfree` until the owner collects them, at one of its allocation slow
//! paths; an owner that sleeps or blocks (a worker parked on a condition
//! variable, a thread in `pthread_join`) would keep them resident. So a
//! purge, the decay's global tick and reclaim look at every page in use
//! whose `used` says every block is out, take its `xfree` chain and count
//! it ([`Page::empty_remote`]). When
//! the chain holds every block of the page, no block is handed out and the
//! owner's lists are empty, the owner can neither carve (all is carved)
//! nor retire the page (its `used` still counts the blocks): the taker
//! gives the page's memory back, sets `touched` to 0 and marks the word
//! [`XF_EMPTIED`] (queueing the page for its owner if it is full). The
//! owner, when it collects, starts the page over with nothing carved
//! (`Page::start_over`), and retires it if it is not the last of its
//! class. A chain short of the page's blocks goes back on `xfree` as
//! [`Page::decommit_remote`] puts its chain back.
//!
//! Idle free blocks: with no memory line in force, the owner's decay tick
//! (`purge::tick`, about every 100 ms of slow paths; for an exited
//! thread's heap, the global tick that collects it) also gives back the
//! inside of the free blocks of 8 KiB or more that have sat on `free` for
//! the purge delay, and moves them to `decommitted` ([`Page::decommit_idle`]):
//! a daemon that freed most of a burst of buffers, each page keeping a
//! survivor or two, no longer keeps the burst resident. A block's idleness
//! is seen through an *idle mark* (its page's address mixed with a
//! constant, in its fourth word, and the time first seen, in its fifth)
//! written by the tick; a block handed out and freed again in between
//! usually has the mark overwritten by the program, and one that keeps it
//! costs a fault-in, never correctness. Under a line reclaim decides, as
//! above.
//!
//! State is published after the fields it vouches for: a page taken for a
//! class goes `FREE`/`PURGED -> TAKEN` (claimed, not yet readable), is
//! initialised, and only then stored `IN_USE` with Release.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::{commit, os};

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    /// The next free block, or null.
    pub next: *mut Block,
}

/// Mixed into a page's address to make its free mark (see the module doc).
#[cfg(feature = "double-free-check")]
const FREE_MARK_SALT: usize = 0x5f0d_3b1e_a7c4_9d21;

/// Blocks smaller than this have no whole OS page inside them to give back
/// (see "Free blocks given back" in the module doc).
pub const DECOMMIT_MIN_BLOCK: usize = 2 * os::OS_PAGE;

/// The word of a block (past the link and the free mark) that carries the
/// decommit mark.
const DECOMMIT_MARK_WORD: usize = 2;

/// Mixed into a page's address to make its decommit mark.
const DECOMMIT_SALT: usize = 0x3c6e_f372_fe94_f82b;

/// The words of a free block on the owner's `free` list that carry the
/// idle mark and the time (ms) it was first seen there (see
/// [`Page::decommit_idle`]); past the link, the free mark and the decommit
/// mark. Read only on blocks on `free`, which are wholly committed.
const IDLE_MARK_WORD: usize = 3;
const IDLE_SINCE_WORD: usize = 4;

/// Mixed into a page's address to make its idle mark.
const IDLE_SALT: usize = 0x9b05_688c_2b3e_6c1f;

/// The OS pages inside a block of `bs` bytes at address `b` that may go
/// back to the OS while the block is free: whole OS pages past its first
/// three words. Returns their start and length (0: none).
#[inline]
pub fn hole_of(b: usize, bs: usize) -> (usize, usize) {
    let lo = (b + (DECOMMIT_MARK_WORD + 1) * 8).next_multiple_of(os::OS_PAGE);
    let hi = (b + bs) & !(os::OS_PAGE - 1);
    (lo, hi.saturating_sub(lo))
}

/// Bytes `Page::extend` carves at a time from a page of blocks larger
/// than [`MID_CARVE_MAX`] (at least one block).
pub const FIRST_CARVE: usize = 16 * 1024;

/// Blocks up to this size are carved [`SMALL_CARVE`] bytes at a time (4
/// blocks at least).
pub const SMALL_CARVE_MAX: usize = 1024;

/// Bytes `Page::extend` carves at a time from a page of blocks of at most
/// [`SMALL_CARVE_MAX`] bytes: one OS page. Carving writes every block's
/// link, so every size class a heap uses keeps one carving resident
/// before it holds a block, and a class that holds a few blocks (a
/// phase's, a short thread's, a program's start) keeps no more than a
/// page. (`benches/programs`, peak RSS medians of 11 interleaved runs
/// against 8 KiB here: `perthread` 7,636 -> 7,404 KiB, `churn` 3,924 ->
/// 3,692, `espresso` 4,580 -> 4,520, `mix` 51,024 -> 50,796, `prodcons`
/// 3,156 -> 3,168; callgrind's malloc+free loop unchanged at 55 / 55 / 62
/// instructions; in all, `perthread` 2.6% more instructions (256 -> 263 M
/// at a quarter of its length: [`carve_blocks`] also sets how many free
/// blocks a page needs to be taken before carving), `prodcons` and `mix`
/// 0.4%. Carving 4 KiB for
/// blocks to 2 KiB and 8 KiB for 2-8 KiB as well took `espresso` to 4,356
/// but cost `prodcons` 4.1% more instructions and `mix` 1.5%: its pages
/// are carved anew each time they empty and are taken again.)
pub const SMALL_CARVE: usize = 4 * 1024;

/// Blocks up to this size are carved [`MID_CARVE`] bytes at a time (4
/// blocks at least).
pub const MID_CARVE_MAX: usize = 2048;

/// Bytes `Page::extend` carves at a time from a page of blocks of 1-2 KiB.
/// (Before [`SMALL_CARVE`], every class to 2 KiB: 8 KiB against 16 for
/// every class took `perthread` 8.14 -> 7.89 MiB, `mix` 55.6 -> 55.0.)
pub const MID_CARVE: usize = 8 * 1024;

/// Blocks of `block_size` bytes one carving takes (before the page's end).
#[inline]
pub const fn carve_blocks(block_size: usize) -> usize {
    if block_size <= SMALL_CARVE_MAX {
        SMALL_CARVE / block_size
    } else if block_size <= MID_CARVE_MAX {
        MID_CARVE / block_size
    } else if block_size <= FIRST_CARVE {
        FIRST_CARVE / block_size
    } else {
        1
    }
}

/// `xfree` flag: the page is on its owner's full list.
pub const XF_IN_FULL: usize = 1;
/// `xfree` flag: the page is (being) pushed on its owner's `remote_pages`.
pub const XF_QUEUED: usize = 2;
/// `xfree` flag: another thread found every block of the page on `xfree`,
/// gave the page's memory back to the OS and dropped the list (see "Pages
/// emptied by other threads" in the module doc); the owner starts the page
/// over when it collects. Blocks are 8-aligned, so the bit is free.
pub const XF_EMPTIED: usize = 4;
const XF_FLAGS: usize = XF_IN_FULL | XF_QUEUED | XF_EMPTIED;
/// The flags a collection keeps: it takes the list and [`XF_EMPTIED`].
const XF_KEEP: usize = XF_IN_FULL | XF_QUEUED;

/// Owner-side flag mirror: the page is on the full list.
pub const PF_IN_FULL: u8 = 1;

/// Low bit of [`Shared::heap`]: the page is on its owner's full list
/// (heaps are at least 8-aligned, so the bit is free).
pub const TAG_FULL: usize = 1;

/// Segment-level state of a page, changed by compare-and-swap so that the
/// owner (taking a page) and the purger (returning it to the OS) never both
/// act on one page.
pub mod state {
    /// Given to a heap for a size class, its fields initialised.
    pub const IN_USE: u8 = 0;
    /// Free, memory still committed.
    pub const FREE: u8 = 1;
    /// Free, memory given back to the OS (reads as zero when touched).
    pub const PURGED: u8 = 2;
    /// The purger is giving it back right now.
    pub const PURGING: u8 = 3;
    /// Claimed by a heap that is initialising it (not yet `IN_USE`).
    pub const TAKEN: u8 = 4;
}

/// The owner's part of a page (see the module doc): only the thread owning
/// the page's heap touches it.
#[repr(C)]
pub struct Owned {
    /// Allocation list.
    pub free: Cell<*mut Block>,
    /// The owner's frees, merged into `free` on the slow path.
    pub local_free: Cell<*mut Block>,
    /// Free blocks whose inside went back to the OS under pressure (see
    /// "Free blocks given back" in the module doc): taken one at a time,
    /// charged again, when `free` ran dry.
    pub decommitted: Cell<*mut Block>,
    /// Links in the owner's page queue or full list.
    pub next: Cell<*mut Page>,
    /// See `next`.
    pub prev: Cell<*mut Page>,
    /// Blocks carved out of the page so far (the rest is untouched memory).
    pub capacity: Cell<u32>,
    /// Blocks the page can hold.
    pub reserved: Cell<u32>,
    /// Bytes inside `touched` that went back to the OS with the blocks on
    /// `decommitted` (not counted as committed).
    pub holes: Cell<u32>,
    /// Owner flags (`PF_*`), checked by the free fast path.
    pub flags: Cell<u8>,
    /// Every block on `free` is zero except its link word.
    pub is_zero: Cell<bool>,
}

/// The part of a page other threads touch (see the module doc).
#[repr(C)]
pub struct Shared {
    /// Blocks handed out (owner writes; relaxed so statistics may read it).
    pub used: AtomicU32,
    /// Block size in bytes; written while `TAKEN`, read by block holders.
    pub block_size: AtomicU32,
    /// Bytes from `start` that blocks have been carved from since the page
    /// was last purged (OS-page rounded): what it holds committed. Written by
    /// the owner while `IN_USE`/`TAKEN`, by the purger while `PURGING`,
    /// and by a thread that empties the page ([`Page::empty_remote`]).
    pub touched: AtomicU32,
    /// Bytes from `start` to the end of the page (fixed when the segment is
    /// mapped; pages are at most 2 MiB).
    pub size: u32,
    /// When the page last became free, for purge decay: the clock in ms,
    /// modulo 2^32 (idle times are compared wrapping: see `purge.rs`).
    /// While the page is in use: the head of the last `xfree` chain that
    /// [`Page::empty_remote`] counted short of the page's blocks (its
    /// address over 8, truncated; see [`chain_memo`]), written by that
    /// thread while it holds the chain.
    pub freed_at: AtomicU32,
    /// Segment-level state (`state::*`).
    pub state: AtomicU8,
    /// Size class index; written while `TAKEN`, read by statistics.
    pub class: AtomicU8,
    /// `block_size.trailing_zeros()` (see [`Page::is_block_start`]).
    pub bs_shift: AtomicU8,
    /// Other threads' frees, plus the `XF_*` flag bits.
    pub xfree: AtomicUsize,
    /// The owning heap (an opaque `*mut Heap`: this layer never follows
    /// it), null while the page is free, with [`TAG_FULL`] set while the
    /// page is on the owner's full list: the free fast path compares this
    /// word with the caller's heap once and so learns both that the caller
    /// owns the page and that the page need not leave the full list. The
    /// heap part is stable while any block is live; only the owner writes.
    pub heap: AtomicPtr<u8>,
    /// The inverse modulo 2^64 of the block size's odd part: tells a block
    /// start by one multiplication (see [`Page::is_block_start`]).
    pub inv: AtomicU64,
    /// Blocks the page holds (`reserved`, readable by other threads).
    pub blocks: AtomicU64,
    /// Link in the owner's `remote_pages` stack.
    pub remote_next: AtomicPtr<Page>,
    /// First block (fixed when the segment is mapped).
    pub start: *mut u8,
}

/// A page of blocks of one size class. See the module doc.
#[repr(C)]
pub struct Page {
    /// The owner's part.
    pub own: Owned,
    /// The part other threads touch.
    pub shared: Shared,
}

// Two cache lines: the segment header's page array is indexed by a shift.
const _: () = assert!(core::mem::size_of::<Page>() == 128);

// Relaxed on `used`, `class`, `block_size`, `bs_shift`, `inv`, `blocks` and
// `touched` everywhere below: each has one writer at a time (the owner, or
// the initialiser before the Release of IN_USE, or the purger inside
// PURGING), and readers on other threads are ordered after that writer by
// the state protocol or by the hand-over of a block; the atomics only make
// a statistics snapshot's racy read well-defined.

impl Page {
    /// An unused page record (also the shape of the static empty page).
    pub const fn empty() -> Page {
        Page {
            own: Owned {
                free: Cell::new(ptr::null_mut()),
                local_free: Cell::new(ptr::null_mut()),
                decommitted: Cell::new(ptr::null_mut()),
                next: Cell::new(ptr::null_mut()),
                prev: Cell::new(ptr::null_mut()),
                capacity: Cell::new(0),
                reserved: Cell::new(0),
                holes: Cell::new(0),
                flags: Cell::new(0),
                is_zero: Cell::new(false),
            },
            shared: Shared {
                used: AtomicU32::new(0),
                block_size: AtomicU32::new(0),
                touched: AtomicU32::new(0),
                size: 0,
                freed_at: AtomicU32::new(0),
                state: AtomicU8::new(state::PURGED),
                class: AtomicU8::new(0),
                bs_shift: AtomicU8::new(0),
                xfree: AtomicUsize::new(0),
                heap: AtomicPtr::new(ptr::null_mut()),
                inv: AtomicU64::new(0),
                blocks: AtomicU64::new(0),
                remote_next: AtomicPtr::new(ptr::null_mut()),
                start: ptr::null_mut(),
            },
        }
    }

    /// Blocks handed out.
    #[inline(always)]
    pub fn used(&self) -> u32 {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// Sets the count of blocks handed out (owner only).
    #[inline(always)]
    pub fn set_used(&self, n: u32) {
        // A store, not a read-modify-write: only the owner writes.
        self.shared.used.store(n, Ordering::Relaxed)
    }

    /// Block size in bytes (for a page in use).
    #[inline(always)]
    pub fn block_size(&self) -> usize {
        self.shared.block_size.load(Ordering::Relaxed) as usize
    }

    /// Size class index (for a page in use).
    #[inline(always)]
    pub fn class(&self) -> usize {
        self.shared.class.load(Ordering::Relaxed) as usize
    }

    /// The owning heap, as an opaque pointer (null for a free page).
    #[inline(always)]
    pub fn heap(&self) -> *mut u8 {
        let tag = self.owner_tag();
        tag.wrapping_sub(tag as usize & TAG_FULL)
    }

    /// The owning heap with [`TAG_FULL`] set while the page is on the full
    /// list: equal to the caller's heap exactly when the caller owns the
    /// page and the page is not full (the free fast path's one compare).
    #[inline(always)]
    pub fn owner_tag(&self) -> *mut u8 {
        // Relaxed: a block's holder is ordered after the page's `init`; a
        // stale pointer only reaches the checked free's slower tests.
        self.shared.heap.load(Ordering::Relaxed)
    }

    /// Sets or clears [`TAG_FULL`] (owner only).
    fn set_tag_full(&self, full: bool) {
        let heap = self.heap();
        // Relaxed: only the owner writes; readers on other threads use the
        // heap part, which does not change here.
        self.shared.heap.store(heap.wrapping_add(usize::from(full)), Ordering::Relaxed);
    }

    /// Bytes from the first block to the end of the page.
    #[inline(always)]
    pub fn size(&self) -> usize {
        self.shared.size as usize
    }

    /// Committed bytes of the page (see [`Shared::touched`]).
    pub fn touched(&self) -> usize {
        self.shared.touched.load(Ordering::Relaxed) as usize
    }

    /// Sets the committed bytes (by the owner or the purger in its turn).
    pub fn set_touched(&self, bytes: usize) {
        // Pages are at most 2 MiB: the count fits.
        self.shared.touched.store(bytes as u32, Ordering::Relaxed)
    }

    /// Wins this free page for purging (`FREE -> PURGING`, see `purge.rs`):
    /// its touched bytes, now reset to 0, which the caller gives back to the
    /// OS (with a [`PurgeRun`]) before storing `PURGED`; `Err` with the
    /// state found when the page is not free. The page's memory and
    /// `touched` are the winner's alone until then.
    pub fn start_purge(&self) -> Result<usize, u8> {
        // Acquire pairs with the owner's Release of FREE: its last writes to
        // the page's memory and `touched` happened before our madvise.
        self.shared.state.compare_exchange(state::FREE, state::PURGING, Ordering::Acquire, Ordering::Relaxed)?;
        // Only what was carved can be resident.
        let touched = self.touched();
        self.set_touched(0);
        Ok(touched)
    }

    /// Prepares a page in state `TAKEN` for `class` in `heap`, then publishes
    /// it `IN_USE`. `zero` says whether its memory is known to read as zero.
    pub fn init(&self, heap: *mut u8, class: usize, block_size: usize, zero: bool) {
        debug_assert_eq!(self.shared.state.load(Ordering::Relaxed), state::TAKEN);
        self.clear_blocks(zero);
        let own = &self.own;
        own.flags.set(0);
        let reserved = (self.size() / block_size) as u32;
        own.reserved.set(reserved);
        own.next.set(ptr::null_mut());
        own.prev.set(ptr::null_mut());
        let sh = &self.shared;
        sh.class.store(class as u8, Ordering::Relaxed);
        sh.block_size.store(block_size as u32, Ordering::Relaxed);
        self.set_geometry(block_size, reserved);
        // Relaxed: no block is out, so no other thread pushes here yet.
        sh.xfree.store(0, Ordering::Relaxed);
        sh.heap.store(heap, Ordering::Relaxed);
        // Release pairs with the Acquire loads of statistics and the checked
        // free: who sees IN_USE sees the fields above.
        sh.state.store(state::IN_USE, Ordering::Release);
    }

    /// The block at address `p` of this page, with the provenance of the
    /// page's memory (the segment's mapping, exposed when the segment map
    /// recorded it) rather than that of `p`: a pointer handed back by a
    /// program may only cover the bytes it asked for, while the free lists
    /// write the block's first word whatever its size. Costs nothing in the
    /// compiled code (deriving it from `start` cost an instruction).
    #[inline(always)]
    pub fn block_at(&self, p: *const u8) -> *mut Block {
        // An integer-to-pointer cast: exposed provenance.
        p as usize as *mut Block
    }

    /// Writes what [`Page::is_block_start`] reads: the block size's
    /// shift and odd part's inverse, and the number of blocks.
    pub fn set_geometry(&self, block_size: usize, reserved: u32) {
        let sh = &self.shared;
        let shift = block_size.trailing_zeros();
        sh.bs_shift.store(shift as u8, Ordering::Relaxed);
        sh.inv.store(inverse((block_size >> shift) as u64), Ordering::Relaxed);
        sh.blocks.store(u64::from(reserved), Ordering::Relaxed);
    }

    /// Whether `p` is the start of a block of this page: one multiply, one
    /// rotate, one compare (no division).
    ///
    /// With `bs = d << s` (`d` odd) and `inv * d == 1` modulo 2^64, an
    /// offset `off = k * bs` gives `off * inv == k << s` and, rotated right
    /// by `s`, exactly `k`; an offset that is not a multiple of `bs`
    /// (including the "negative" offsets of pointers before `start`, which
    /// wrap) gives more than `(2^64 - 1) / bs`, far above any block count
    /// (Granlund and Montgomery's divisibility test). So one compare with
    /// the page's block count says both "a multiple of the block size" and
    /// "inside the blocks".
    #[inline(always)]
    pub fn is_block_start(&self, p: *const u8) -> bool {
        let sh = &self.shared;
        let off = (p as usize).wrapping_sub(sh.start as usize) as u64;
        let q = off.wrapping_mul(sh.inv.load(Ordering::Relaxed));
        q.rotate_right(u32::from(sh.bs_shift.load(Ordering::Relaxed))) < sh.blocks.load(Ordering::Relaxed)
    }

    /// [`Page::is_block_start`] for the page's owner, which reads the
    /// geometry with plain loads that fold into the arithmetic (atomic
    /// loads do not, on x86-64).
    ///
    /// # Safety
    ///
    /// The calling thread owns the page (it alone writes the geometry, in
    /// `init`; other threads only read it, and reads do not race).
    #[inline(always)]
    pub unsafe fn is_block_start_owned(&self, p: *const u8) -> bool {
        let sh = &self.shared;
        let off = (p as usize).wrapping_sub(sh.start as usize) as u64;
        // SAFETY: the caller owns the page: no other thread writes these
        // fields, so the plain reads race with nothing.
        let (inv, shift, blocks) = unsafe { (*sh.inv.as_ptr(), *sh.bs_shift.as_ptr(), *sh.blocks.as_ptr()) };
        off.wrapping_mul(inv).rotate_right(u32::from(shift)) < blocks
    }

    /// Pops a block from `free` (owner only); `None` when it is empty.
    #[inline(always)]
    pub fn pop_free(&self) -> Option<*mut Block> {
        let block = self.own.free.get();
        if block.is_null() {
            return None;
        }
        // SAFETY: `block` is on this page's free list, whose blocks are
        // free memory of the page linked by their first word.
        let next = unsafe { (*block).next };
        self.own.free.set(next);
        self.set_used(self.used() + 1);
        // SAFETY: `block` is a free block of this page, now handed out.
        unsafe { unmark(block) };
        Some(block)
    }

    /// The head of the list the owner's last free went to: `free` for the
    /// C entry points' small pages (`TO_FREE`), else `local_free` (owner
    /// only; see `free.rs`). The immediate double-free test compares it.
    #[inline(always)]
    pub fn last_freed<const TO_FREE: bool>(&self) -> *mut Block {
        if TO_FREE {
            self.own.free.get()
        } else {
            self.own.local_free.get()
        }
    }

    /// Takes the owner's frees back when `free` ran dry (owner only): pops
    /// the first block of `local_free` and makes the rest the `free` list,
    /// without the slow path. `None` when there are none.
    #[inline(always)]
    pub fn pop_local(&self) -> Option<*mut Block> {
        let block = self.own.local_free.get();
        if block.is_null() {
            return None;
        }
        // SAFETY: `block` is on this page's `local_free` list, whose blocks
        // are free memory of the page linked by their first word.
        let next = unsafe { (*block).next };
        self.own.local_free.set(ptr::null_mut());
        self.own.free.set(next);
        self.own.is_zero.set(false);
        self.set_used(self.used() + 1);
        // SAFETY: `block` is a free block of this page, now handed out.
        unsafe { unmark(block) };
        Some(block)
    }

    /// Carves up to a few KiB of untouched blocks into `free` (owner only).
    /// Returns whether any block was added.
    pub fn extend(&self) -> bool {
        let n = self.next_carve();
        if n == 0 {
            return false;
        }
        let bs = self.block_size();
        let capacity = self.own.capacity.get() as usize;
        let first = self.shared.start.wrapping_add(capacity * bs);
        for i in 0..n {
            let b = first.wrapping_add(i * bs).cast::<Block>();
            let next = if i + 1 < n { first.wrapping_add((i + 1) * bs).cast() } else { self.own.free.get() };
            // SAFETY: blocks `capacity .. capacity + n` lie inside the page
            // (n <= reserved - capacity), in the segment's mapping, and
            // belong to no one yet.
            unsafe { (*b).next = next };
        }
        self.own.free.set(first.cast());
        self.own.capacity.set((capacity + n) as u32);
        // Committed memory grows as blocks are carved, not when the page is
        // taken: a 2 MiB large page holding one block commits one block.
        let end = ((capacity + n) * bs).next_multiple_of(os::OS_PAGE).min(self.size());
        let touched = self.touched();
        if end > touched {
            crate::commit::on_commit(end - touched);
            self.set_touched(end);
        }
        true
    }

    /// Blocks the next [`Page::extend`] carves (0: the page is all carved).
    fn next_carve(&self) -> usize {
        let left = (self.own.reserved.get() - self.own.capacity.get()) as usize;
        left.min(carve_blocks(self.block_size()))
    }

    /// Committed bytes the next [`Page::extend`] adds (0 when it carves only
    /// memory touched before, or nothing).
    pub fn carve_cost(&self) -> usize {
        let end = ((self.own.capacity.get() as usize + self.next_carve()) * self.block_size())
            .next_multiple_of(os::OS_PAGE)
            .min(self.size());
        end.saturating_sub(self.touched())
    }

    /// Committed bytes the next [`Page::refill`] adds: the inside of the
    /// first block on `decommitted`, or else [`Page::carve_cost`].
    pub fn refill_cost(&self) -> usize {
        let d = self.own.decommitted.get();
        if d.is_null() {
            self.carve_cost()
        } else {
            hole_of(d as usize, self.block_size()).1
        }
    }

    /// Free blocks of the page, on any of its lists but `xfree` (owner
    /// only).
    pub fn free_blocks(&self) -> usize {
        self.own.capacity.get().saturating_sub(self.used()) as usize
    }

    /// Whether every block of the page has been carved (owner only).
    pub fn all_carved(&self) -> bool {
        self.own.capacity.get() == self.own.reserved.get()
    }

    /// Whether [`Page::refill`] has a block to add: one on `decommitted`,
    /// or memory not carved yet (owner only).
    pub fn can_refill(&self) -> bool {
        !self.own.decommitted.get().is_null() || !self.all_carved()
    }

    /// Puts a block on the empty `free` list (owner only): the first one on
    /// `decommitted`, its inside committed again (charged by the caller:
    /// [`Page::refill_cost`]), or else new blocks carved ([`Page::extend`]).
    /// Returns whether a block was added.
    pub fn refill(&self) -> bool {
        let d = self.own.decommitted.get();
        if d.is_null() {
            return self.extend();
        }
        let hole = hole_of(d as usize, self.block_size()).1;
        // SAFETY: `d` is on the page's `decommitted` list: a free block of
        // the page whose first words stayed committed, linked by the first.
        unsafe {
            self.own.decommitted.set((*d).next);
            (*d).next = self.own.free.get();
        }
        self.own.free.set(d);
        self.own.is_zero.set(false);
        self.own.holes.set(self.own.holes.get() - hole as u32);
        crate::commit::on_commit(hole);
        true
    }

    /// Puts a block whose inside went back to the OS on `decommitted`
    /// (owner only).
    fn push_decommitted(&self, b: *mut Block, hole: usize) {
        // SAFETY: the caller hands over a free block of the page.
        unsafe { (*b).next = self.own.decommitted.get() };
        self.own.decommitted.set(b);
        self.own.holes.set(self.own.holes.get() + hole as u32);
    }

    /// Gives back the inside of free block `b` (the whole OS pages past its
    /// first three words) and uncounts it from the committed bytes.
    /// Returns the bytes, 0 when the block has no whole OS page inside.
    ///
    /// # Safety
    ///
    /// `b` is a free block of this page that only the calling thread
    /// touches until it is on a list.
    unsafe fn give_back_inside(&self, b: *mut Block) -> usize {
        let (lo, len) = hole_of(b as usize, self.block_size());
        if len == 0 {
            return 0;
        }
        // The block's memory, with its provenance, from `lo` on.
        os::purge(b.cast::<u8>().wrapping_add(lo - b as usize), len);
        crate::commit::on_purge(len);
        len
    }

    /// For a thread making room (a reclaim pass under a line), on a page it
    /// does not own: gives back the inside of the blocks waiting on the
    /// page's cross-thread list that have not given it back yet, and marks
    /// them. Blocks other threads freed there while no pass was running
    /// (a background pass lets their owners reuse them) would otherwise
    /// stay committed until an owner that may be blocked collects them.
    /// Takes the list off `xfree` and puts it back; returns whether the
    /// caller must now push the page on its owner's `remote_pages` stack
    /// (as for [`Page::push_remote`]), and the bytes given back.
    pub fn decommit_remote(&self) -> (bool, usize) {
        if self.block_size() < DECOMMIT_MIN_BLOCK {
            return (false, 0);
        }
        let Some(old) = self.take_chain(|_| false) else { return (false, 0) };
        let head = (old & !XF_FLAGS) as *mut Block;
        // Read again now that the chain is held: the page may have been
        // retired and taken for smaller blocks since the first look (the
        // Acquire take orders this after that life's `init`), and stays in
        // use while the chain's blocks count in `used`.
        let big = self.block_size() >= DECOMMIT_MIN_BLOCK;
        let (mark, mut bytes, mut tail) = (self.decommit_mark(), 0, head);
        let mut b = head;
        while !b.is_null() {
            // SAFETY: the chain taken off `xfree` holds free blocks of this
            // page, linked by their first word (their third word, read only
            // when `big`, is committed: blocks of 8 KiB or more); this
            // thread alone holds it until it is put back, and the page
            // stays in use meanwhile (the blocks count in `used` until the
            // owner collects them).
            unsafe {
                let word = b.cast::<usize>().add(DECOMMIT_MARK_WORD);
                if big && word.read() != mark {
                    let hole = self.give_back_inside(b);
                    if hole > 0 {
                        word.write(mark);
                        bytes += hole;
                    }
                }
                tail = b;
                b = (*b).next;
            }
        }
        // The chain goes back whole: a memo of it stays true unless other
        // frees came meanwhile.
        let counted = self.shared.freed_at.load(Ordering::Relaxed);
        // SAFETY: `head..tail` is the chain this thread took and holds.
        (unsafe { self.put_back(head, tail, counted) }, bytes)
    }

    /// For a thread that does not own the page (a purge or a reclaim pass,
    /// holding `ALL`'s lock): when every block of the page waits on
    /// `xfree`, gives the page's memory back
    /// to the OS and marks it [`XF_EMPTIED`] for the owner, which starts
    /// the page over when it collects (see "Pages emptied by other threads"
    /// in the module doc). With `only_queued`, only a page whose owner was
    /// told already ([`XF_QUEUED`]) and has not collected it. Returns
    /// whether the caller must now push the page on its owner's
    /// `remote_pages` stack (as for [`Page::push_remote`]), and the bytes
    /// given back.
    pub fn empty_remote(&self, only_queued: bool) -> (bool, usize) {
        // Every block carved and handed out (or waiting on `xfree`): a
        // relaxed look that spares the walk on most pages. The page may be
        // retired and taken again for another class meanwhile: the count
        // below reads the geometry again once it holds a chain.
        let blocks = self.shared.blocks.load(Ordering::Relaxed);
        if blocks == 0 || u64::from(self.used()) != blocks {
            return (false, 0);
        }
        let memo = &self.shared.freed_at;
        // Counted short already, and nothing pushed since (a push changes
        // the head; see `put_back`): a page that keeps one live block among
        // thousands freed is not walked at every purge.
        let skip = |old| only_queued && old & XF_QUEUED == 0 || chain_memo(old) == memo.load(Ordering::Relaxed);
        let Some(old) = self.take_chain(skip) else { return (false, 0) };
        // The chain's blocks count in `used` until the owner collects them:
        // the page stays in use, with the geometry read here, while this
        // thread holds it.
        let (blocks, bs, mark) = (self.shared.blocks.load(Ordering::Relaxed), self.block_size(), self.decommit_mark());
        let head = (old & !XF_FLAGS) as *mut Block;
        // Bytes of the chain's blocks whose inside went back already
        // ([`Page::decommit_remote`]): not counted as committed.
        let mut holes = 0;
        let (mut n, mut tail, mut b) = (0u64, head, head);
        // At most `blocks + 1` links: a chain that a double free made
        // longer, or a cycle, does not pass for all the page's blocks.
        while !b.is_null() && n <= blocks {
            n += 1;
            tail = b;
            // SAFETY: the chain taken off `xfree` holds free blocks of this
            // page linked by their first word (of 8 KiB or more: with a
            // committed third word); this thread alone writes it until it
            // is put back or dropped.
            unsafe {
                if bs >= DECOMMIT_MIN_BLOCK && b.cast::<usize>().add(DECOMMIT_MARK_WORD).read() == mark {
                    holes += hole_of(b as usize, bs).1;
                }
                b = (*b).next;
            }
        }
        if n != blocks {
            // Remembered unless other frees came meanwhile (see `put_back`).
            let counted = chain_memo(old);
            // SAFETY: `head..tail` is (a prefix of) the chain this thread
            // took and holds; past `tail` only blocks freed twice are lost.
            return (unsafe { self.put_back(head, tail, counted) }, 0);
        }
        // Every block of the page is on the chain this thread holds: none
        // is handed out, none is on the owner's lists, and the owner cannot
        // carve (all are carved) nor retire the page (its `used` still
        // counts them), whose `decommitted` list is empty too (so its
        // `holes` are 0). Its memory holds nothing anyone reads.
        let touched = self.touched();
        os::purge(self.shared.start, touched);
        let bytes = touched.saturating_sub(holes);
        commit::on_purge(bytes);
        self.set_touched(0);
        let xfree = &self.shared.xfree;
        let mut old = xfree.load(Ordering::Relaxed);
        loop {
            let (notify, queued) = notified(old);
            let new = old | XF_EMPTIED | queued;
            // Release publishes `touched` to the owner's Acquire in `collect`.
            match xfree.compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return (notify, bytes),
                Err(now) => old = now,
            }
        }
    }

    /// Takes the chain off `xfree` for a thread that does not own the page
    /// (keeping the flags): the word taken, or `None` when there is no
    /// chain, when the page was emptied (a list there holds only blocks
    /// freed twice, whose memory already went back), or when `skip` says so
    /// of the word.
    fn take_chain(&self, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let xfree = &self.shared.xfree;
        // Relaxed first look; the CAS takes.
        let mut old = xfree.load(Ordering::Relaxed);
        loop {
            if old & !XF_FLAGS == 0 || old & XF_EMPTIED != 0 || skip(old) {
                return None;
            }
            // Acquire pairs with the pushers' Release: their links are seen,
            // and so is the `init` of the page they freed into (the block
            // came to them from its owner).
            match xfree.compare_exchange_weak(old, old & XF_FLAGS, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(old),
                Err(now) => old = now,
            }
        }
    }

    /// Puts back the chain `head..tail` that this thread took off `xfree`
    /// (a reclaim pass or a purge, not the owner), and sets the page's memo
    /// of a chain counted short ([`chain_memo`]) to `counted`, or to 0
    /// (none) when other threads pushed frees meanwhile: the chain goes in
    /// front of theirs and keeps its head, which no longer describes the
    /// whole list. Returns whether the caller must push the page on its
    /// owner's `remote_pages` stack (as for [`Page::push_remote`]).
    ///
    /// # Safety
    ///
    /// As for [`Page::push_chain`].
    unsafe fn put_back(&self, head: *mut Block, tail: *mut Block, counted: u32) -> bool {
        // SAFETY: the caller's promise. The memo is written while this
        // thread holds the chain, so the page stays in use (its blocks
        // count in `used`) and `freed_at` is not the purge clock's.
        unsafe {
            self.push_chain_then(head, tail, |old| {
                let memo = if old & !XF_FLAGS == 0 { counted } else { 0 };
                // Relaxed: a hint.
                self.shared.freed_at.store(memo, Ordering::Relaxed);
            })
        }
    }

    /// For the owner, on its decay tick while no memory line is in force:
    /// gives back the inside of the blocks on `free` that have stayed free
    /// for `delay_ms` and moves them to `decommitted`, where an allocation
    /// takes them only when `free` runs dry (see "Idle free blocks" in the
    /// module doc). A block is idle when it carries the idle mark with a
    /// time at least `delay_ms` before `now_ms`; the others are marked with
    /// `now_ms`. A `delay_ms` of 0 takes every block on `free`. Blocks of 8
    /// KiB or more only; returns the bytes given back.
    pub fn decommit_idle(&self, now_ms: u64, delay_ms: u64) -> usize {
        // On a page whose free blocks are all still zero (fresh from the
        // OS, carved but never handed out) only their link words were
        // written: there is nothing inside them to give back, and marking
        // them would cost `calloc` its skipped memset.
        if self.block_size() < DECOMMIT_MIN_BLOCK || self.own.is_zero.get() {
            return 0;
        }
        let mark = self.idle_mark();
        let mut bytes = 0;
        let mut prev: *mut Block = ptr::null_mut();
        let mut b = self.own.free.get();
        // A walk of at most `reserved` links: a corrupted cycle cannot hang it.
        for _ in 0..self.own.reserved.get() {
            if b.is_null() {
                break;
            }
            // SAFETY: blocks on `free` are free blocks of this page, fully
            // committed, of 8 KiB or more (so their first five words are
            // theirs), linked by their first word; only the owner (the
            // caller) touches them.
            unsafe {
                let next = (*b).next;
                let words = b.cast::<usize>();
                let marked = words.add(IDLE_MARK_WORD).read() == mark;
                let since = words.add(IDLE_SINCE_WORD).read() as u64;
                if delay_ms == 0 || marked && now_ms.saturating_sub(since) >= delay_ms {
                    if prev.is_null() {
                        self.own.free.set(next);
                    } else {
                        (*prev).next = next;
                    }
                    let hole = self.give_back_inside(b);
                    self.push_decommitted(b, hole);
                    bytes += hole;
                } else {
                    if !marked {
                        words.add(IDLE_MARK_WORD).write(mark);
                        words.add(IDLE_SINCE_WORD).write(now_ms as usize);
                    }
                    prev = b;
                }
                b = next;
            }
        }
        bytes
    }

    /// The idle mark of this page's blocks.
    fn idle_mark(&self) -> usize {
        ptr::from_ref(self) as usize ^ IDLE_SALT
    }

    /// The decommit mark of this page's blocks.
    fn decommit_mark(&self) -> usize {
        ptr::from_ref(self) as usize ^ DECOMMIT_SALT
    }

    /// Moves `local_free` and the cross-thread list into `free`, keeping the
    /// `XF_*` flags. Called by the owner when `free` ran dry.
    pub fn collect(&self) {
        self.collect_local();
        let xfree = &self.shared.xfree;
        // Relaxed first look: a stale zero only delays collection.
        let seen = xfree.load(Ordering::Relaxed);
        if seen & !XF_KEEP == 0 {
            return;
        }
        // Take the list (or the emptied mark) and keep the other flags.
        // Acquire pairs with the Release of the remote pushers (their
        // writes of the blocks' links are visible) and of the thread that
        // emptied the page (its `touched` is).
        let mut old = seen;
        while let Err(now) = xfree.compare_exchange_weak(old, old & XF_KEEP, Ordering::Acquire, Ordering::Relaxed) {
            old = now;
        }
        self.merge_remote(old);
    }

    /// Whether `free` holds a block, after collecting the page's other
    /// frees into it if it ran dry. Owner only.
    pub fn has_free(&self) -> bool {
        if self.own.free.get().is_null() {
            self.collect();
        }
        !self.own.free.get().is_null()
    }

    /// Takes the cross-thread list and clears both flags: only for draining
    /// the owner's `remote_pages` stack, which owns the `XF_QUEUED` bit.
    pub fn collect_clearing_flags(&self) {
        // Acquire: see `collect`.
        self.merge_remote(self.shared.xfree.swap(0, Ordering::Acquire));
        self.collect_local();
    }

    /// Moves `local_free` into `free`; without a walk when `free` is empty
    /// (`used` already counts these frees).
    fn collect_local(&self) {
        let local = self.own.local_free.replace(ptr::null_mut());
        if local.is_null() {
            return;
        }
        if self.own.free.get().is_null() {
            self.own.free.set(local);
            self.own.is_zero.set(false);
        } else {
            self.append_to_free(local);
        }
    }

    /// Merges a taken `xfree` word's list into `free`: those blocks leave
    /// `used`. Blocks of 8 KiB or more that carry the decommit mark go to
    /// `decommitted` instead (see [`Page::decommit_remote`]).
    fn merge_remote(&self, word: usize) {
        if word & XF_EMPTIED != 0 {
            self.start_over();
            return;
        }
        let list = (word & !XF_FLAGS) as *mut Block;
        if list.is_null() {
            return;
        }
        // The list's blocks go back to `free` and may be handed out and
        // freed again, one of them last, as the head of a new chain: a memo
        // of this one would then hide a page whose blocks all came back.
        // Relaxed: a hint (see `Shared::freed_at`).
        self.shared.freed_at.store(0, Ordering::Relaxed);
        if self.block_size() < DECOMMIT_MIN_BLOCK {
            let n = self.append_to_free(list);
            self.set_used(self.used() - n);
            return;
        }
        let (mark, bs) = (self.decommit_mark(), self.block_size());
        let mut n = 0;
        let mut b = list;
        while !b.is_null() {
            n += 1;
            // SAFETY: `list` is a chain of free blocks of this page taken
            // off `xfree`, linked by their first word, ending in null, each
            // of 8 KiB or more with a committed third word: the owner alone
            // touches them now.
            unsafe {
                let next = (*b).next;
                let word = b.cast::<usize>().add(DECOMMIT_MARK_WORD);
                if word.read() == mark {
                    word.write(0);
                    self.push_decommitted(b, hole_of(b as usize, bs).1);
                } else {
                    (*b).next = self.own.free.get();
                    self.own.free.set(b);
                }
                b = next;
            }
        }
        self.own.is_zero.set(false);
        self.set_used(self.used() - n);
    }

    /// Makes a page another thread emptied ([`Page::empty_remote`]) a page
    /// with nothing carved: every block had come back and its memory went
    /// to the OS. Anything the lists hold now was freed twice by the
    /// program (every block was on `xfree` when the page was emptied), and
    /// is dropped with them. Owner only.
    fn start_over(&self) {
        self.clear_blocks(false);
    }

    /// Empties the page of blocks, as [`Page::init`] and
    /// [`Page::start_over`] need: no list, nothing carved, none handed out,
    /// no chain counted ([`Shared::freed_at`]); `zero` says whether the
    /// memory reads as zero. Owner only (or the initialiser while `TAKEN`).
    fn clear_blocks(&self, zero: bool) {
        let own = &self.own;
        own.free.set(ptr::null_mut());
        own.local_free.set(ptr::null_mut());
        own.decommitted.set(ptr::null_mut());
        own.capacity.set(0);
        own.holes.set(0);
        own.is_zero.set(zero);
        self.set_used(0);
        // Relaxed: a hint, and `init` publishes by the Release of IN_USE.
        self.shared.freed_at.store(0, Ordering::Relaxed);
    }

    /// Prepends `list` to `free`; returns its length. The merged blocks were
    /// used, so the page no longer promises zeroed blocks.
    fn append_to_free(&self, list: *mut Block) -> u32 {
        let mut n = 1;
        let mut tail = list;
        // SAFETY: `list` is a chain of free blocks of this page taken off a
        // list only the owner reads, each linked by its first word, ending in
        // null: the owner alone touches them now.
        unsafe {
            while !(*tail).next.is_null() {
                tail = (*tail).next;
                n += 1;
            }
            (*tail).next = self.own.free.get();
        }
        self.own.free.set(list);
        self.own.is_zero.set(false);
        n
    }

    /// Marks the page full so that remote frees notify the owner. Fails when
    /// blocks arrived on `xfree` meanwhile (the caller collects again).
    pub fn try_mark_full(&self) -> bool {
        let xfree = &self.shared.xfree;
        // Relaxed load; the CAS below decides.
        let old = xfree.load(Ordering::Relaxed);
        if old & !XF_KEEP != 0 {
            return false;
        }
        // AcqRel pairs with remote pushers' CAS on the same word: either they
        // see IN_FULL and queue the page, or we see their block and fail.
        let ok = xfree.compare_exchange(old, old | XF_IN_FULL, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if ok {
            self.own.flags.set(self.own.flags.get() | PF_IN_FULL);
            self.set_tag_full(true);
        }
        ok
    }

    /// Clears the full mark (the owner took the page off its full list).
    pub fn clear_full(&self) {
        // Relaxed is enough: a remote that still sees IN_FULL queues the page,
        // which the drain tolerates for a page that is no longer full.
        self.shared.xfree.fetch_and(!XF_IN_FULL, Ordering::Relaxed);
        self.own.flags.set(self.own.flags.get() & !PF_IN_FULL);
        self.set_tag_full(false);
    }

    /// Whether another thread emptied the page ([`Page::empty_remote`])
    /// and its owner has not collected it yet (a snapshot, for statistics).
    pub fn emptied(&self) -> bool {
        // Relaxed: a snapshot.
        self.shared.xfree.load(Ordering::Relaxed) & XF_EMPTIED != 0
    }

    /// Whether a remote thread holds the right to push this page on the
    /// owner's stack (so the page must not be retired yet).
    pub fn is_queued(&self) -> bool {
        // Acquire: pairs with the pusher's CAS; see the module doc.
        self.shared.xfree.load(Ordering::Acquire) & XF_QUEUED != 0
    }

    /// Writes the free mark into `block` (with `double-free-check`; nothing
    /// otherwise). Every free calls it before linking the block.
    ///
    /// # Safety
    ///
    /// `block` is a block of this page that the caller is freeing.
    #[inline(always)]
    pub unsafe fn mark_free(&self, block: *mut Block) {
        #[cfg(feature = "double-free-check")]
        // SAFETY: blocks are at least 16 bytes with the feature on (the
        // 8-byte class is not used), and the caller gives the block up.
        unsafe {
            block.cast::<usize>().add(1).write(self.free_mark());
        }
        #[cfg(not(feature = "double-free-check"))]
        let _ = block;
    }

    /// Whether `block` carries this page's free mark: it was freed already,
    /// or its second word happens to equal the mark. Always `false` without
    /// `double-free-check`.
    ///
    /// # Safety
    ///
    /// `block` is the start of a block of this page, which is in use.
    #[inline(always)]
    pub unsafe fn looks_freed(&self, block: *const Block) -> bool {
        #[cfg(feature = "double-free-check")]
        {
            // SAFETY: the block lies in the page's committed memory and is
            // at least 16 bytes (caller promise, feature on). Volatile: a
            // block freed twice may be in another thread's hands; the value
            // is only compared.
            let marked = unsafe { block.cast::<usize>().add(1).read_volatile() == self.free_mark() };
            // A page another thread emptied holds no live block (the marks
            // went with its memory): any free into it is a second one.
            // Relaxed: an emptying not seen yet only lets a double free
            // pass, as one whose mark was overwritten does.
            marked || self.shared.xfree.load(Ordering::Relaxed) & XF_EMPTIED != 0
        }
        #[cfg(not(feature = "double-free-check"))]
        {
            let _ = block;
            false
        }
    }

    /// The free mark of this page's blocks.
    #[cfg(feature = "double-free-check")]
    #[inline(always)]
    fn free_mark(&self) -> usize {
        ptr::from_ref(self) as usize ^ FREE_MARK_SALT
    }

    /// Whether `block` is on one of the page's free lists (`free`,
    /// `local_free`, `decommitted`, `xfree`): the owner's confirmation of a double free.
    /// Each walk stops after `reserved` links, so a list already corrupted
    /// into a cycle cannot hang it. Cold: only a suspected double free asks.
    #[cold]
    pub fn on_free_lists(&self, block: *const Block) -> bool {
        let limit = self.own.reserved.get() as usize;
        // Acquire pairs with the pushers' Release CAS: their links are seen.
        let word = self.shared.xfree.load(Ordering::Acquire);
        // Emptied by another thread and not collected yet: every block of
        // the page is free, their marks and lists gone with its memory.
        if word & XF_EMPTIED != 0 {
            return true;
        }
        let remote = (word & !XF_FLAGS) as *mut Block;
        let owners = [self.own.free.get(), self.own.local_free.get(), self.own.decommitted.get()];
        let found = |mut b: *mut Block, next: &dyn Fn(*mut Block) -> *mut Block| {
            for _ in 0..=limit {
                if b.is_null() {
                    return false;
                }
                if ptr::eq(b, block) {
                    return true;
                }
                b = next(b);
            }
            false
        };
        // SAFETY: blocks on the owner's lists are free blocks of the page,
        // linked by their first word, which only the owner (the caller)
        // touches.
        owners.into_iter().any(|l| found(l, &|b| unsafe { (*b).next }))
            // SAFETY: blocks on `xfree` below its head are free blocks of
            // the page, published by the pushers' Release. A reclaim pass
            // or a purge may have taken the chain since the load above and
            // write its tail's link as it puts it back: the links are read
            // atomically. (One that empties the page gives its memory back
            // meanwhile: the walk then reads a null link and ends, missing
            // a double free it would have caught a moment earlier.)
            || found(remote, &|b| unsafe { link_of(b).load(Ordering::Relaxed) })
    }

    /// Pushes `block` on the cross-thread list, from a thread that does not
    /// own the page. Returns whether this thread must now push the page on
    /// the owner's `remote_pages` stack. Touches only [`Shared`].
    ///
    /// # Safety
    ///
    /// `block` is a live block of this page, freed exactly once.
    pub unsafe fn push_remote(&self, block: *mut Block) -> bool {
        // SAFETY: the caller gives up the live block, a chain of one.
        unsafe {
            self.mark_free(block);
            self.push_chain(block, block)
        }
    }

    /// Pushes the chain `head..tail` of free blocks on the cross-thread
    /// list, from a thread that does not own the page. Returns whether this
    /// thread must now push the page on the owner's `remote_pages` stack
    /// (the page is full and nobody queued it yet).
    ///
    /// # Safety
    ///
    /// `head` to `tail` are free blocks of this page linked by their first
    /// word, held by the calling thread alone.
    unsafe fn push_chain(&self, head: *mut Block, tail: *mut Block) -> bool {
        // SAFETY: the caller's promise.
        unsafe { self.push_chain_then(head, tail, |_| {}) }
    }

    /// [`Page::push_chain`], calling `before` with the `xfree` word each
    /// compare-and-swap is tried against.
    ///
    /// # Safety
    ///
    /// As for [`Page::push_chain`].
    #[inline(always)]
    unsafe fn push_chain_then(&self, head: *mut Block, tail: *mut Block, before: impl Fn(usize)) -> bool {
        let xfree = &self.shared.xfree;
        let mut old = xfree.load(Ordering::Relaxed);
        loop {
            before(old);
            let (notify, queued) = notified(old);
            let new = head as usize | (old & XF_FLAGS) | queued;
            // SAFETY: the caller holds the chain, so this thread alone
            // writes it until the CAS below publishes it. Atomic: an owner
            // checking a suspected double free may still be reading the
            // link of a chain a reclaim pass took and now puts back
            // ([`Page::on_free_lists`]).
            unsafe { link_of(tail).store((old & !XF_FLAGS) as *mut Block, Ordering::Relaxed) };
            // Release publishes the chain's writes to the owner's Acquire in `collect`.
            match xfree.compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return notify,
                Err(now) => old = now,
            }
        }
    }
}

/// Whether a thread that changes `xfree` word `old` must push the page on
/// its owner's `remote_pages` stack (the page is full and nobody queued it
/// yet), and the [`XF_QUEUED`] bit its new word then carries.
#[inline(always)]
fn notified(old: usize) -> (bool, usize) {
    let notify = old & XF_IN_FULL != 0 && old & XF_QUEUED == 0;
    (notify, if notify { XF_QUEUED } else { 0 })
}

/// The link word of free block `b`, as an atomic.
///
/// # Safety
///
/// `b` is a free block of a page in use (its first word is its link, in
/// committed memory, 8-aligned), and every write of that word while other
/// threads may read it is atomic (plain reads beside atomic ones are not a
/// race).
unsafe fn link_of<'a>(b: *mut Block) -> &'a AtomicPtr<Block> {
    // SAFETY: the caller's promise; `AtomicPtr` has the layout of a pointer.
    unsafe { AtomicPtr::from_ptr(ptr::addr_of_mut!((*b).next)) }
}

/// What [`Page::empty_remote`] remembers of an `xfree` word whose chain it
/// counted short: the head's address over 8, truncated to 32 bits (never
/// 0 for a word that holds a chain, so a memo of 0 matches none). A block
/// freed again as the head of a later chain with the same truncated
/// address is taken for the old chain, and the page waits for the next
/// push or its owner: a purge missed, never a wrong one.
fn chain_memo(word: usize) -> u32 {
    (((word & !XF_FLAGS) >> 3) as u32).max(1)
}

/// The inverse of odd `d` modulo 2^64, by Newton's iteration (each step
/// doubles the correct low bits; `d` itself is right to 3 bits).
const fn inverse(d: u64) -> u64 {
    let mut x = d;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Clears the free mark of a block being handed out (with
/// `double-free-check`; nothing otherwise), so that a program that never
/// writes the block's second word is not taken for a double free.
///
/// # Safety
///
/// `block` is a free block just taken off a list by the page's owner.
#[inline(always)]
unsafe fn unmark(block: *mut Block) {
    #[cfg(feature = "double-free-check")]
    // SAFETY: at least 16 bytes (feature on), and the caller's to write.
    unsafe {
        block.cast::<usize>().add(1).write(0);
    }
    #[cfg(not(feature = "double-free-check"))]
    let _ = block;
}

/// Neighbouring pages of one segment being given back to the OS, by one
/// `madvise` (each call interrupts every CPU the process runs on to flush
/// its TLB). Its pages were won by [`Page::start_purge`] and stay
/// `PURGING`, the caller's, until [`PurgeRun::flush`] stores `PURGED`. The
/// range runs from the first page's start to the end of the last one's
/// touched bytes: the untouched tails of the pages between are theirs too,
/// and not resident. The caller keeps the segment mapped until the flush.
pub struct PurgeRun {
    start: *mut u8,
    end: *mut u8,
    /// Touched bytes of the run's pages (what leaves the committed count).
    bytes: usize,
    /// The run's pages: indices `first..=last` of the segment's.
    first: usize,
    last: usize,
    open: bool,
}

impl PurgeRun {
    /// A run with no page.
    pub const EMPTY: PurgeRun =
        PurgeRun { start: ptr::null_mut(), end: ptr::null_mut(), bytes: 0, first: 0, last: 0, open: false };

    /// Adds page `index` of `pages` (a segment's), just won, whose first
    /// `touched` bytes are resident: to this run where it follows the
    /// run's last page, else to a new one after flushing this.
    pub fn add(&mut self, pages: &[Page], index: usize, touched: usize) {
        let start = pages[index].shared.start;
        if !self.follows(index) {
            self.flush(pages);
            (self.start, self.end, self.first, self.open) = (start, start, index, true);
        }
        if touched > 0 {
            self.end = start.wrapping_add(touched);
        }
        self.bytes += touched;
        self.last = index;
    }

    /// Lets the run go on past page `index`, `PURGED` already: only for a
    /// segment that is the caller's alone, where no one can take that page
    /// while the run spans it (and storing `PURGED` again is harmless).
    pub fn pass(&mut self, index: usize) {
        if self.follows(index) {
            self.last = index;
        }
    }

    fn follows(&self, index: usize) -> bool {
        self.open && self.last + 1 == index
    }

    /// Gives the run back to the OS and marks its pages (of `pages`, its
    /// segment's) `PURGED`.
    pub fn flush(&mut self, pages: &[Page]) {
        if !self.open {
            return;
        }
        if self.end > self.start {
            os::purge(self.start, self.end as usize - self.start as usize);
        }
        if self.bytes > 0 {
            commit::on_purge(self.bytes);
        }
        for page in &pages[self.first..=self.last] {
            // Release pairs with the Acquire CAS in `page_alloc::new_page`.
            page.shared.state.store(state::PURGED, Ordering::Release);
        }
        *self = PurgeRun::EMPTY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_start_test_is_exact_for_every_class() {
        for class in 0..crate::size_class::CLASSES {
            let bs = crate::size_class::size_of(class);
            let mut page = Page::empty();
            page.shared.start = core::ptr::without_provenance_mut(1 << 22);
            page.shared.size = (4 << 20) - 4096;
            let size = page.size();
            page.own.reserved.set((size / bs) as u32);
            page.shared.block_size.store(bs as u32, Ordering::Relaxed);
            page.set_geometry(bs, (size / bs) as u32);
            let start = page.shared.start as usize;
            for i in (0..size / bs).step_by(1 + 97 / (1 + bs / 64)) {
                for d in [0usize, 1, 8, 16, bs / 2, bs - 1] {
                    let p = (start + i * bs + d) as *const u8;
                    let off = i * bs + d;
                    let start_of_block = off % bs == 0 && off < size / bs * bs;
                    assert_eq!(page.is_block_start(p), start_of_block, "class {class} block {i} +{d}");
                }
            }
            // Before the first block (a segment header) and past the last.
            let end = start + size / bs * bs;
            for a in [start - 1, start - 8, start - bs, start - 4096, end, end + 8, start + size] {
                assert!(!page.is_block_start(a as *const u8), "class {class} address {a:#x}");
            }
        }
    }
}
