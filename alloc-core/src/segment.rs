//! Segments: the 4 MiB-aligned units of memory the allocator maps, the map
//! that tells our addresses from foreign ones, and the cache of empty segments.
//!
//! ```text
//!  segment (4 MiB, aligned to 4 MiB)
//!  +--------------+-------------------+-----------+-----+-----------+
//!  | header       | page 0 blocks     | page 1    | ... | page N-1  |
//!  | Segment +    | (page 0 is short  |           |     |           |
//!  | [Page; 64]   |  by the header)   |           |     |           |
//!  +--------------+-------------------+-----------+-----+-----------+
//!  small: 64 pages of 64 KiB   medium: 32 of 128 KiB   large: 2 of 2 MiB
//!  huge: one block at `block_offset`, the mapping as long as it needs
//! ```
//!
//! Invariants: a block's segment is `p & !(SEGMENT_SIZE - 1)` for every block
//! of a small, medium or large segment, and for a huge block the segment map
//! entry of `p`'s region leads back to its header. `used_pages` counts the
//! pages in state `IN_USE`; a segment with free pages is on its heap's list
//! for its kind; a segment with none in use is released (cached or unmapped).
//! Every mapped segment is on the global list `ALL`, which the purger and the
//! statistics walk under its lock.

use core::cell::{Cell, UnsafeCell};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::lock::SpinLock;
use crate::options::{self, Opt};
use crate::page::{state, Page, PurgeRun};
use crate::{commit, os};

/// log2 of the segment size.
pub const SEGMENT_SHIFT: usize = 22;
/// Size and alignment of a segment.
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;
/// Page records in every segment header (small segments use them all).
pub const MAX_PAGES: usize = 64;

/// Bytes at the start of each segment kept for its header.
pub const HEADER_RESERVE: usize = core::mem::size_of::<Segment>().next_multiple_of(os::OS_PAGE);

/// What a segment is cut into.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    /// 64 pages of 64 KiB, blocks up to 8 KiB.
    Small = 0,
    /// 32 pages of 128 KiB, blocks up to 128 KiB (page 0, shortened by the
    /// header, holds classes up to 112 KiB). Small pages for these classes
    /// keep the partly used pages few: a cache of a few thousand 8-16 KiB
    /// values spread over 4 threads' heaps filled 512 KiB pages to 40%.
    Medium = 1,
    /// 2 pages of 2 MiB, blocks up to 1 MiB. (A whole-segment page would
    /// strand up to 4 MiB behind one live block.)
    Large = 2,
    /// One block bigger than any class, on a mapping of its own.
    Huge = 3,
}

impl Kind {
    /// log2 of the page size of this kind (huge: beyond any offset).
    pub const fn page_shift(self) -> u32 {
        match self {
            Kind::Small => 16,
            Kind::Medium => 17,
            Kind::Large => 21,
            Kind::Huge => 63,
        }
    }
}

/// The header at the start of every segment.
///
/// Fields fixed when the segment is mapped are plain; every other field is
/// a `Cell` (or atomic) with its one writer named, so that a shared
/// reference to the header never aliases a write.
#[repr(C)]
pub struct Segment {
    /// The page records, first: page `i`'s record is at `seg + i * 128`,
    /// which the free fast path computes with two instructions.
    pub pages: [Page; MAX_PAGES],
    /// What the segment is cut into.
    pub kind: Kind,
    /// `kind.page_shift()`, kept here for the free fast path.
    pub page_shift: u32,
    /// Page records in use (`SEGMENT_SIZE >> page_shift`, 1 for huge).
    pub page_count: usize,
    /// Bytes mapped.
    pub size: usize,
    /// Pages in state `IN_USE` or `TAKEN` (owner heap only).
    pub used_pages: Cell<usize>,
    /// The owning heap, opaque here (null while cached, and for huge
    /// segments); written by the heap that takes the segment.
    pub heap: Cell<*mut u8>,
    /// Links in the owner heap's list of segments with free pages, or in
    /// the segment cache (under its lock).
    pub next: Cell<*mut Segment>,
    /// See `next` (heap list only).
    pub prev: Cell<*mut Segment>,
    /// Whether the segment is on its heap's list.
    pub in_heap_list: Cell<bool>,
    /// Links in the global list `ALL` (under its lock).
    pub all_next: Cell<*mut Segment>,
    /// See `all_next`.
    pub all_prev: Cell<*mut Segment>,
    /// Huge: offset of the block from the segment start (fixed once mapped).
    pub block_offset: Cell<usize>,
    /// Huge: bytes usable in the block (the block's holder writes it;
    /// statistics read it).
    pub usable: AtomicUsize,
    /// Huge: bytes mapped for the block (`usable` may grow up to this in place).
    pub reserve: Cell<usize>,
    /// Huge: bytes of the block area counted as committed (touched at most
    /// this far since the last purge).
    pub committed_len: Cell<usize>,
    /// Huge: the block's memory reads as zero.
    pub huge_zero: Cell<bool>,
    /// When the segment entered a cache (ms).
    pub cached_at: Cell<u64>,
    /// Whether the decay tick has work here: set when one of its pages
    /// becomes free or is queued for its owner ([`Segment::wants_a_look`]),
    /// taken by the tick's pass, which walks only the segments that carry
    /// it and sets it again where it leaves work for a later tick
    /// (`purge.rs`).
    pub look: AtomicBool,
}

impl Segment {
    /// Tells the decay tick that a page of this segment just became free
    /// or was queued for its owner, after the store that made it so.
    #[inline]
    pub fn wants_a_look(&self) {
        // A load first: the flag shares a line with fields the free path
        // reads, and is mostly set already while a segment is busy.
        // Release pairs with the tick's Acquire swap: a tick that takes
        // the flag sees the page's new state.
        if !self.look.load(Ordering::Relaxed) && !self.look.swap(true, Ordering::Release) {
            // Release: a tick that reads the count sees the flag.
            LOOKS.fetch_add(1, Ordering::Release);
        }
    }

    /// For the decay tick: takes the flag; whether it was set.
    #[inline]
    pub fn take_look(&self) -> bool {
        // A load first: most segments are clean, and a swap would write
        // each header. Acquire pairs with the Release of `wants_a_look`.
        let had = self.look.load(Ordering::Relaxed) && self.look.swap(false, Ordering::Acquire);
        if had {
            LOOKS.fetch_sub(1, Ordering::Relaxed);
        }
        had
    }
}

/// Segments that carry `Segment::look`, so that a tick with none to look
/// at does not walk the list of segments at all (a process allocating 8
/// GiB of small blocks, no page ever free, spent 1.7% of its time walking
/// 2,048 headers 80 times a second). Counted on each flag's change; a
/// tick may take a flag just before its setter counts it, so the count
/// may wrap below zero for that moment, which reads as "not zero" (a walk
/// more, never one less).
pub static LOOKS: AtomicUsize = AtomicUsize::new(0);

/// One byte per 4 MiB region of the 47-bit address space: 0 when the region
/// holds none of our segments, [`MAP_SMALL`] for the (only) region of a
/// small segment, else 2 + the distance back (in regions) to the start of
/// the segment that covers it. The free fast path tells "a small block of
/// ours" by one compare with `MAP_SMALL`, so it can find the page with a
/// constant shift.
struct SegmentMap(UnsafeCell<[u8; MAP_LEN]>);
const MAP_LEN: usize = 1 << (47 - SEGMENT_SHIFT);
// SAFETY: every access goes through `AtomicU8::from_ptr`.
unsafe impl Sync for SegmentMap {}
static MAP: SegmentMap = SegmentMap(UnsafeCell::new([0; MAP_LEN]));

/// Most regions a map entry can point back over.
pub const MAP_MAX_BACK: usize = 253;
/// The map entry of a small segment's region.
const MAP_SMALL: u8 = 1;
/// The map entry of the first region of any other segment.
const MAP_FIRST: u8 = 2;

fn map_entry(region: usize) -> &'static AtomicU8 {
    debug_assert!(region < MAP_LEN);
    // SAFETY: `region` is in bounds and the map is only accessed atomically.
    unsafe { AtomicU8::from_ptr(MAP.0.get().cast::<u8>().add(region)) }
}

/// Marks the regions of the segment `seg` of `size` bytes as ours (`kind`
/// given) or not (`None`).
fn map_set(seg: *mut Segment, size: usize, kind: Option<Kind>) {
    let first = seg as usize >> SEGMENT_SHIFT;
    let regions = size.div_ceil(SEGMENT_SIZE).min(MAP_MAX_BACK + 1);
    for i in 0..regions {
        let entry = match kind {
            None => 0,
            Some(Kind::Small) => MAP_SMALL,
            Some(_) => MAP_FIRST + i as u8,
        };
        // Release pairs with the Acquire in `segment_of_checked`: a thread
        // that sees the entry sees the initialised header.
        map_entry(first + i).store(entry, Ordering::Release);
    }
}

/// The segment of a block pointer of ours (small, medium or large blocks,
/// and huge blocks whose offset is below one segment).
#[inline(always)]
pub fn segment_of(p: *const u8) -> *mut Segment {
    (p as usize & !SEGMENT_MASK) as *mut Segment
}

/// The segment covering `p`, or `None` when `p` is not in our memory.
/// Never dereferences `p`.
#[inline]
pub fn segment_of_checked(p: *const u8) -> Option<NonNull<Segment>> {
    let region = p as usize >> SEGMENT_SHIFT;
    if region >= MAP_LEN {
        return None;
    }
    // Acquire: see `map_set`.
    let back = match map_entry(region).load(Ordering::Acquire) {
        0 => return None,
        MAP_SMALL => 0,
        e => (e - MAP_FIRST) as usize,
    };
    NonNull::new(((region - back) << SEGMENT_SHIFT) as *mut Segment)
}

/// The page record of `p` when `p` lies in one of our small segments (the
/// kind the fast paths serve), else `None`: a null or foreign pointer, or a
/// block of a medium, large or huge segment. One load and one compare; the
/// page follows by constant shifts. Never dereferences `p` or the page.
///
/// The region index is masked to the map rather than checked against its
/// length: a pointer with bits above the 47-bit address space set finds the
/// page of the region its low bits name, never memory that is not ours
/// (the segment comes from the index, not from `p`), and then fails the
/// caller's block-start test, since `p` lies at least 2^47 - 2^22 bytes
/// past that page's start.
#[inline(always)]
pub fn small_page_of(p: *const u8) -> Option<*mut Page> {
    let region = (p as usize >> SEGMENT_SHIFT) & (MAP_LEN - 1);
    // Acquire: see `map_set`.
    if map_entry(region).load(Ordering::Acquire) != MAP_SMALL {
        return None;
    }
    let seg = region << SEGMENT_SHIFT;
    let idx = (p as usize & SEGMENT_MASK) >> Kind::Small.page_shift();
    // `idx < MAX_PAGES`: the record is inside the header's `pages` array,
    // which the map entry says is mapped.
    const _: () = assert!(core::mem::offset_of!(Segment, pages) == 0);
    let off = idx * core::mem::size_of::<Page>();
    // An integer-to-pointer cast (exposed provenance), as `segment_of`.
    Some((seg + off) as *mut Page)
}

/// The segment of any of our blocks, huge ones with large alignment included.
#[inline]
pub fn segment_of_block(p: *const u8) -> *mut Segment {
    match segment_of_checked(p) {
        Some(s) => s.as_ptr(),
        None => segment_of(p),
    }
}

/// The page record holding block `p` of segment `seg`.
///
/// # Safety
///
/// `seg` is a live segment and `p` points into it.
#[inline(always)]
pub unsafe fn page_of(seg: *mut Segment, p: *const u8) -> *mut Page {
    // SAFETY: the caller promises a live segment, whose `page_shift` is
    // fixed since it was mapped.
    let shift = unsafe { (*seg).page_shift };
    let idx = (p as usize - seg as usize) >> shift;
    // SAFETY: `idx < page_count` because `p` lies in the segment (caller
    // promise), so the record is inside the header's `pages` array.
    unsafe { (&raw mut (*seg).pages).cast::<Page>().add(idx) }
}

/// Usable bytes of the live block at `p`.
///
/// # Safety
///
/// `p` is a live block of this allocator.
#[inline]
pub unsafe fn usable_size(p: *mut u8) -> usize {
    // SAFETY: forwarded: `p` is a live block of `segment_of_block(p)`.
    unsafe { usable_in(segment_of_block(p), p) }
}

/// Usable bytes of the live block at `p` of segment `seg`.
///
/// # Safety
///
/// `p` is a live block of this allocator in the segment `seg`.
#[inline(always)]
pub unsafe fn usable_in(seg: *mut Segment, p: *const u8) -> usize {
    // SAFETY: a live block keeps its segment mapped (caller promise).
    let s = unsafe { &*seg };
    if s.kind == Kind::Huge {
        // Relaxed: the caller holds the block; its last resize is ordered before.
        return s.usable.load(Ordering::Relaxed);
    }
    // SAFETY: `p` lies in the live segment `seg` (caller promise).
    unsafe { (*page_of(seg, p)).block_size() }
}

/// The global list of mapped segments, its head.
pub struct SegList(pub *mut Segment);
// SAFETY: the list is only touched under its lock.
unsafe impl Send for SegList {}
/// Every mapped segment (see the module doc).
pub static ALL: SpinLock<SegList> = SpinLock::new(SegList(ptr::null_mut()));

/// Empty segments kept for reuse, per kind (small, medium, large), linked
/// through `next`, with the length of each list.
pub struct Cache {
    lists: [*mut Segment; 3],
    len: [usize; 3],
}
// SAFETY: the cache is only touched under its lock.
unsafe impl Send for Cache {}
/// The segment cache.
pub static CACHE: SpinLock<Cache> = SpinLock::new(Cache { lists: [ptr::null_mut(); 3], len: [0; 3] });

/// Maps a new segment of `size` bytes aligned to `align` (at least a
/// segment) and puts it on the global list. Its pages start out `PURGED`
/// (never touched). When the kernel refuses the mapping with `ENOMEM`,
/// reclaim runs and the mapping is retried a bounded number of times.
pub fn map_segment(kind: Kind, size: usize, align: usize) -> Option<*mut Segment> {
    let len = size.next_multiple_of(os::OS_PAGE);
    let mut attempt = 0;
    let mem = loop {
        match os::map_aligned(len, align) {
            Some(mem) => break mem,
            None if commit::on_map_failure(len, attempt) => attempt += 1,
            None => return None,
        }
    };
    let seg = mem.as_ptr().cast::<Segment>();
    let page_shift = kind.page_shift();
    let page_count = if kind == Kind::Huge { 1 } else { SEGMENT_SIZE >> page_shift };
    // SAFETY: the mapping is fresh, zeroed (a valid `Segment`: null
    // pointers, zero counts, `Kind::Small`, false flags), writable and
    // large enough for a header; no other thread can see it before
    // `map_set` and the list insertion below.
    let s = unsafe { &mut *seg };
    s.kind = kind;
    s.page_shift = page_shift;
    s.page_count = page_count;
    s.size = size;
    for (i, page) in s.pages[..page_count].iter_mut().enumerate() {
        let off = if i == 0 { HEADER_RESERVE } else { i << page_shift };
        page.shared.start = mem.as_ptr().wrapping_add(off);
        page.shared.size = if kind == Kind::Huge { 0 } else { (((i + 1) << page_shift) - off) as u32 };
        *page.shared.state.get_mut() = state::PURGED;
    }
    map_set(seg, size, Some(kind));
    {
        let mut all = ALL.lock();
        s.all_next.set(all.0);
        if !all.0.is_null() {
            // SAFETY: segments on `ALL` are live; their list links change
            // only under its lock, which we hold.
            unsafe { (*all.0).all_prev.set(seg) };
        }
        all.0 = seg;
    }
    commit::on_map(size, HEADER_RESERVE);
    Some(seg)
}

/// Unmaps a segment that no heap and no cache refers to any more.
///
/// # Safety
///
/// `seg` is live, holds no live block, and is on no list but `ALL`.
pub unsafe fn unmap_segment(seg: *mut Segment) {
    // SAFETY: the caller promises a live segment, ours alone.
    let s = unsafe { &*seg };
    {
        let mut all = ALL.lock();
        let (next, prev) = (s.all_next.get(), s.all_prev.get());
        if prev.is_null() {
            all.0 = next;
        } else {
            // SAFETY: a neighbour on `ALL` is live while we hold its lock.
            unsafe { (*prev).all_next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { (*next).all_prev.set(prev) };
        }
    }
    // Off `ALL`: no tick takes its flag now, so it leaves the count here.
    s.take_look();
    let (size, committed) = (s.size, committed_bytes(s));
    map_set(seg, size, None);
    os::unmap(seg.cast(), size);
    commit::on_unmap(size, committed);
}

/// Bytes of `s` counted as committed: header plus pages not purged.
fn committed_bytes(s: &Segment) -> usize {
    if s.kind == Kind::Huge {
        return HEADER_RESERVE + s.committed_len.get();
    }
    // The segment is off every list, so its pages' `touched` are final.
    HEADER_RESERVE + s.pages[..s.page_count].iter().map(Page::touched).sum::<usize>()
}

/// Takes a cached empty segment of `kind`, or maps a new one.
pub fn acquire_segment(kind: Kind) -> Option<*mut Segment> {
    let cached = {
        let mut cache = CACHE.lock();
        let head = cache.lists[kind as usize];
        if !head.is_null() {
            // SAFETY: cached segments are live; links change under the lock.
            cache.lists[kind as usize] = unsafe { (*head).next.get() };
            cache.len[kind as usize] -= 1;
        }
        head
    };
    if !cached.is_null() {
        return Some(cached);
    }
    if !commit::charge(HEADER_RESERVE) {
        return None;
    }
    map_segment(kind, SEGMENT_SIZE, SEGMENT_SIZE)
}

/// Gives back a segment with no page in use: to the cache, which keeps
/// `Opt::SegmentCache` of each kind for ten purge delays and any more for
/// one (see [`evict_cached`]); one past those gives back its free pages
/// first.
///
/// Not unmapped at once when many come back together: threads that exit
/// side by side returned every segment they had, and the munmaps of all
/// but four took turns on the kernel's mapping lock, stalling every other
/// thread's page faults (the harness's `mix` at 16 threads on 16 cores:
/// wall 0.066 s against mimalloc's 0.048; with the segments cached, 0.047).
/// A segment past the cache's size costs address space only: its pages
/// are purged at once, by `madvise`, which takes that lock only to read.
///
/// Only while no memory line is in force: under a limit such a segment is
/// unmapped at once, as before, since what it keeps mapped (its header,
/// its page tables) counts against the limit and not in the committed
/// bytes (the stress `churn` scenario at 128M went past its cgroup's limit
/// in 3 of 4 runs keeping them, 1 in 5 before).
///
/// # Safety
///
/// `seg` is live, has `used_pages == 0`, and is on no heap list.
pub unsafe fn release_segment(seg: *mut Segment) {
    // SAFETY: the caller promises a live segment, owned by the caller alone.
    let s = unsafe { &*seg };
    s.heap.set(ptr::null_mut());
    s.cached_at.set(os::now_ms());
    let kind = s.kind as usize;
    let surplus = CACHE.lock().len[kind] >= options::get(Opt::SegmentCache);
    if surplus && !commit::no_line() {
        // SAFETY: the caller's promise; it is on no list but `ALL`.
        unsafe { unmap_segment(seg) };
        return;
    }
    if surplus {
        purge_free_pages(s);
    }
    let mut cache = CACHE.lock();
    s.next.set(cache.lists[kind]);
    cache.lists[kind] = seg;
    cache.len[kind] += 1;
}

/// Purges the free pages of `s`, a segment with no page in use that is
/// ours alone, with one `madvise` over them where it can: the range may
/// span pages already purged, which are not resident and no one else's,
/// and stops only at a page the purger holds (`PURGING`), left to it.
fn purge_free_pages(s: &Segment) {
    let pages = &s.pages[..s.page_count];
    let mut run = PurgeRun::EMPTY;
    for (index, page) in pages.iter().enumerate() {
        match page.start_purge() {
            Ok(touched) => run.add(pages, index, touched),
            Err(state::PURGED) => run.pass(index),
            Err(_) => run.flush(pages),
        }
    }
    run.flush(pages);
}

/// Unmaps the cached segments that entered the cache at or before `before`
/// (ms), and those past the first `Opt::SegmentCache` of their kind (the
/// newest) that entered it at or before `surplus_before`. Returns the
/// bytes unmapped.
pub fn evict_cached(before: u64, surplus_before: u64) -> usize {
    let keep = options::get(Opt::SegmentCache);
    let mut victims: *mut Segment = ptr::null_mut();
    {
        let mut guard = CACHE.lock();
        let cache = &mut *guard;
        for kind in 0..3 {
            let mut prev: *mut Segment = ptr::null_mut();
            let mut s = cache.lists[kind];
            // Segments of this kind kept so far (the list is newest first).
            let mut kept = 0;
            while !s.is_null() {
                // SAFETY: cached segments are live; their links change only
                // under the cache's lock, which we hold.
                let seg = unsafe { &*s };
                let next = seg.next.get();
                let last = if kept < keep { before } else { surplus_before };
                if seg.cached_at.get() <= last {
                    if prev.is_null() {
                        cache.lists[kind] = next;
                    } else {
                        // SAFETY: `prev` is a live cached segment (as above).
                        unsafe { (*prev).next.set(next) };
                    }
                    seg.next.set(victims);
                    victims = s;
                    cache.len[kind] -= 1;
                } else {
                    prev = s;
                    kept += 1;
                }
                s = next;
            }
        }
    }
    let mut bytes = 0;
    while !victims.is_null() {
        let s = victims;
        // SAFETY: each victim left the cache above and is ours alone.
        unsafe {
            victims = (*s).next.get();
            bytes += (*s).size;
        }
        // SAFETY: as above: live, no block, on no list but `ALL`.
        unsafe { unmap_segment(s) };
    }
    bytes
}
