//! Huge blocks: requests bigger than the largest size class, each on a
//! mapping of its own, and a cache of freed ones so that a program that
//! allocates and frees big buffers in a loop does not fault them in afresh
//! each time (the trap mimalloc and jemalloc fall into).
//!
//! A huge block may *reserve* more address space than it uses: a block that
//! `realloc` grows gets four times its size, and grows in place, without a
//! copy, until it outgrows that. Only what it uses counts as committed;
//! untouched reserve costs address space, not memory.
//!
//! Invariant: a huge segment is either live (page 0 `IN_USE`, owned by the
//! block's holder) or on the cache list (`FREE`), never both; the cache holds
//! at most its budget (`Opt::HugeCacheBytes`, more with many threads: see
//! [`budget`]) committed (headers included) and four times that of address
//! space, making room for a block freed by unmapping the ones cached
//! longest ago. Cached blocks are purged after the purge
//! delay and unmapped after ten times it.
//! `usable <= committed_len` while live, `committed_len <= reserve` always.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::lock::SpinLock;
use crate::options::{self, Opt};
use crate::page::state;
use crate::segment::{self, Kind, Segment, HEADER_RESERVE, MAP_MAX_BACK, SEGMENT_SIZE};
use crate::{commit, os};

/// Largest alignment a huge block can have (the segment map must reach back
/// from the block to its header).
pub const MAX_HUGE_ALIGN: usize = 64 * SEGMENT_SIZE;
const _: () = assert!(MAX_HUGE_ALIGN / SEGMENT_SIZE < MAP_MAX_BACK);

/// Freed huge blocks kept mapped, newest first, linked through `next`, the
/// bytes they keep mapped and those they keep committed (see [`cost`]).
pub struct HugeCache {
    head: *mut Segment,
    bytes: usize,
    committed: usize,
}

/// What a cached block counts against the cache's committed budget: its
/// header and committed pages. The cache's owner (its lock) reads it.
fn cost(s: &Segment) -> usize {
    HEADER_RESERVE + s.committed_len.get()
}

/// Threads that own a heap now, kept by `thread.rs` (which sits above this
/// module): the threads allocating at once, which [`budget`] follows.
pub(crate) static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The cache's committed budget: `Opt::HugeCacheBytes` for every four
/// threads that allocate at once (those owning a heap, at most as many as
/// the CPUs), between one and four times it; under a memory line, the
/// option alone. Threads that free and allocate big buffers side by side
/// need room for each other's: on the harness's `large` at 16 threads on
/// 16 cores, 128 MiB kept too few blocks for the requests that followed,
/// and unmapping the rest serialized the threads on the kernel's mapping
/// lock (wall 0.076 s, 133k faults; with 512 MiB, 0.035 s and 63k faults
/// at a peak RSS 4% higher; tcmalloc 0.071 s).
fn budget() -> usize {
    let base = options::get(Opt::HugeCacheBytes);
    if !commit::no_line() {
        // Under a limit, what the cache keeps counts against it.
        return base;
    }
    // Relaxed: a tally.
    let threads = LIVE_THREADS.load(Ordering::Relaxed).min(os::cpus());
    base.saturating_mul((threads / 4).clamp(1, 4))
}

/// Address space the cache may keep per byte of its committed budget: a
/// block grown by `realloc` reserves four times its size, so a budget of
/// address space alone held a quarter as many committed blocks as a
/// `malloc`ed one's (on the harness's `realloc` workload, 256 MiB of
/// address space held eight 8 MiB blocks and unmapped about 150 MiB of
/// committed ones per run; counted by what they commit, page faults fell
/// from 84k to 58k, median of 7 interleaved runs).
const ADDRESS_PER_COMMITTED: usize = 4;
// SAFETY: only touched under its lock.
unsafe impl Send for HugeCache {}

/// The huge block cache.
pub static HCACHE: SpinLock<HugeCache> = SpinLock::new(HugeCache { head: ptr::null_mut(), bytes: 0, committed: 0 });

/// `HCACHE.bytes`, written under the lock and read without it: an empty
/// cache costs a look-up no lock (a stale value only costs a miss).
static CACHED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Mirrors the cache's byte count after a change made under its lock.
fn publish(cache: &HugeCache) {
    // Relaxed: a hint, see `CACHED_BYTES`.
    CACHED_BYTES.store(cache.bytes, Ordering::Relaxed);
}

/// Rounds a huge size up to 1/16 of its power of two (at least a page), so
/// that cached blocks fit later requests of about the same size.
fn round_usable(size: usize) -> Option<usize> {
    let step = (size.checked_next_power_of_two()? / 16).max(os::OS_PAGE);
    size.checked_add(step - 1).map(|s| s & !(step - 1))
}

/// Allocates a huge block of at least `size` bytes aligned to `align`, with
/// address space for `reserve` bytes (at least the usable size).
pub fn alloc(size: usize, align: usize, reserve: usize) -> *mut u8 {
    alloc_from(size, align, reserve, true)
}

/// As [`alloc`], but only from the cache of freed blocks: null rather than
/// a new mapping.
pub fn alloc_cached(size: usize, align: usize, reserve: usize) -> *mut u8 {
    alloc_from(size, align, reserve, false)
}

fn alloc_from(size: usize, align: usize, reserve: usize, may_map: bool) -> *mut u8 {
    if align > MAX_HUGE_ALIGN || size > isize::MAX as usize / 8 {
        return ptr::null_mut();
    }
    let offset = HEADER_RESERVE.next_multiple_of(align.max(os::OS_PAGE));
    let Some(usable) = round_usable(size.max(1)) else { return ptr::null_mut() };
    let reserve = reserve.next_multiple_of(os::OS_PAGE).max(usable);
    let seg = match take_cached(size, usable, offset, align, reserve) {
        Some(seg) => seg,
        None if !may_map => return ptr::null_mut(),
        None => match map_new(usable, offset, align, reserve) {
            Some(seg) => seg,
            None => return ptr::null_mut(),
        },
    };
    publish_block(seg, offset)
}

/// Hands out the block of a huge segment readied for it: marks it in use
/// and returns its address.
fn publish_block(seg: *mut Segment, offset: usize) -> *mut u8 {
    // SAFETY: the segment is ours alone until the block is handed out.
    let s = unsafe { &*seg };
    // Release pairs with the Acquire of statistics and the checked free:
    // who sees IN_USE sees `usable` and the block's offset.
    s.pages[0].shared.state.store(state::IN_USE, Ordering::Release);
    seg.cast::<u8>().wrapping_add(offset)
}

fn map_new(usable: usize, offset: usize, align: usize, reserve: usize) -> Option<*mut Segment> {
    if !crate::commit::charge(HEADER_RESERVE + usable) {
        return None;
    }
    let seg = segment::map_segment(Kind::Huge, offset + reserve, align.max(SEGMENT_SIZE))?;
    commit::on_commit(usable);
    // SAFETY: a fresh segment: live, and ours alone.
    let s = unsafe { &*seg };
    s.block_offset.set(offset);
    // Relaxed: published with the block (see `alloc_from`).
    s.usable.store(usable, Ordering::Relaxed);
    s.reserve.set(reserve);
    s.committed_len.set(usable);
    s.huge_zero.set(true);
    Some(seg)
}

/// A block `realloc` grows into keeps its whole committed tail while the
/// tail is at most this, or at most twice what the block uses.
const PINNED_TAIL_MIN: usize = 2 << 20;

/// A block `malloc` takes from the cache keeps a committed tail of at
/// most this fraction of what it uses, rounded up to a page (see
/// [`trim_to`]).
const PLAIN_TAIL_DIVISOR: usize = 32;

/// How far a block taken from the cache with `committed` bytes committed
/// for `usable` used bytes is cut back, if at all; `grows` when it is taken
/// by `realloc` growing a block (a reserve past `usable` asked, or
/// [`alloc_committed`]).
///
/// A block `realloc` grows keeps its whole committed tail while the tail
/// is at most 2 MiB, or at most twice what the block uses: a buffer that
/// grows again reuses it without faults (criterion's `realloc_grow/
/// geometric` regrows a 1 MiB block from 4 KiB each iteration). A longer
/// tail is given back at once, since a live block's tail is out of reach of
/// the time-based purge, down to twice what the block uses (2 MiB for
/// blocks of 64 KiB to 1 MiB, 32 times their use below 64 KiB, so that a
/// small buffer that took a big block keeps little of it). (On the
/// harness's `realloc` workload, 2 threads: cutting every tail past 1 MiB
/// faulted 350-390k pages against glibc's 150-190k; keeping twice `usable`
/// alone, 270-280k; `usable` or 1 MiB, 180-215k; twice that, 115-160k at
/// a peak RSS of 200-210 MiB in most runs; four times, 100-125k at
/// 280-340 MiB.)
///
/// A block `malloc` asks for keeps a tail of at most a 32nd of what it
/// uses, rounded up to a page: the request asks no room to grow, and what
/// its tail holds stays resident for the block's life. (On the harness's
/// `large`, 20 live buffers of 5-25 MiB written every 64 KiB, each taking
/// a block freed bigger, 5 interleaved runs: peak RSS 36.2-37.8 MiB with
/// the realloc rule, 33.5-36.2 keeping an eighth, 31.7-34.6 a 32nd at
/// 84-92k page faults rather than 74-80k, 31.7-32.7 none; jemalloc
/// 32.3-33.9 at 697k.)
fn trim_to(committed: usize, usable: usize, grows: bool) -> Option<usize> {
    if !grows {
        let keep = usable + (usable / PLAIN_TAIL_DIVISOR).next_multiple_of(os::OS_PAGE);
        return (committed > keep).then_some(keep);
    }
    let twice = usable.saturating_mul(2);
    let keep = twice.max(PINNED_TAIL_MIN.min(usable.saturating_mul(32)));
    (committed.saturating_sub(usable) > twice.max(PINNED_TAIL_MIN)).then(|| usable + keep)
}

/// Whether cached block `a` (committed bytes) fits a request of `usable`
/// bytes better than `b`: the least committed surplus among those that hold
/// the request committed already (no fault, least memory pinned), else the
/// most committed (fewest faults).
fn better_fit(a: usize, b: usize, usable: usize) -> bool {
    match (a >= usable, b >= usable) {
        (true, true) => a < b,
        (true, false) => true,
        (false, true) => false,
        (false, false) => a > b,
    }
}

/// The cached block of the right shape (room for `size` and at least half
/// the reserve asked, at most twice it, same offset and alignment) that
/// fits best by committed bytes (see [`better_fit`]): a block freed after
/// growing to 8 MiB is not cut down for a 100 KiB request while a smaller
/// one is there, and the surplus of the one taken stays with it up to
/// [`trim_to`].
fn take_cached(size: usize, usable: usize, offset: usize, align: usize, reserve: usize) -> Option<*mut Segment> {
    // Up to twice the address space asked is fine: untouched reserve costs
    // nothing, and what a cached block kept committed stays counted.
    let (least, most) = (size.max(reserve / 2), reserve.saturating_mul(2));
    let seg = take_best(offset, align, usable, |s| s.reserve.get() >= least && s.reserve.get() <= most)?;
    prepare_cached(seg, usable, reserve > usable)
}

/// The cached block that holds `usable` bytes committed already, with at
/// most the surplus [`trim_to`] leaves whole and any reserve that holds
/// `usable`: null when there is none. A block that `realloc` grows past
/// its committed bytes moves into such a block rather than fault its
/// growth in: copying a page costs a fraction of faulting one in, and the
/// block it leaves goes to the cache, committed, for the next taker.
pub fn alloc_committed(size: usize, align: usize) -> *mut u8 {
    if align > MAX_HUGE_ALIGN || size > isize::MAX as usize / 8 {
        return ptr::null_mut();
    }
    let offset = HEADER_RESERVE.next_multiple_of(align.max(os::OS_PAGE));
    let Some(usable) = round_usable(size.max(1)) else { return ptr::null_mut() };
    let fits = |s: &Segment| {
        let committed = s.committed_len.get();
        s.reserve.get() >= usable && committed >= usable && trim_to(committed, usable, true).is_none()
    };
    match take_best(offset, align, usable, fits).and_then(|seg| prepare_cached(seg, usable, true)) {
        Some(seg) => publish_block(seg, offset),
        None => ptr::null_mut(),
    }
}

/// Takes off the cache the block with the block offset `offset`, aligned
/// to `align`, for which `fits` holds, that fits `usable` best by
/// committed bytes (see [`better_fit`]).
fn take_best(offset: usize, align: usize, usable: usize, fits: impl Fn(&Segment) -> bool) -> Option<*mut Segment> {
    // Relaxed: see `CACHED_BYTES`.
    if CACHED_BYTES.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut cache = HCACHE.lock();
    // The best fit so far and the segment before it on the list.
    let (mut best, mut best_prev): (*mut Segment, *mut Segment) = (ptr::null_mut(), ptr::null_mut());
    let mut prev: *mut Segment = ptr::null_mut();
    let mut s = cache.head;
    while !s.is_null() {
        // SAFETY: cached segments are live; their links change only under
        // the cache's lock, which we hold.
        let seg = unsafe { &*s };
        let shape = seg.block_offset.get() == offset && (s as usize + offset) % align == 0;
        // The committed bytes of the best fit so far (none: any fits).
        let best_committed = if best.is_null() {
            None
        } else {
            // SAFETY: `best` is a live cached segment (as above).
            Some(unsafe { (*best).committed_len.get() })
        };
        let better = best_committed.is_none_or(|b| better_fit(seg.committed_len.get(), b, usable));
        if shape && better && fits(seg) {
            (best, best_prev) = (s, prev);
            if seg.committed_len.get() == usable {
                break;
            }
        }
        prev = s;
        s = seg.next.get();
    }
    if best.is_null() {
        return None;
    }
    // SAFETY: `best` and `best_prev` are live cached segments (as above).
    let next = unsafe { (*best).next.get() };
    if best_prev.is_null() {
        cache.head = next;
    } else {
        // SAFETY: as above.
        unsafe { (*best_prev).next.set(next) };
    }
    // SAFETY: as above.
    let seg = unsafe { &*best };
    cache.bytes -= seg.size;
    cache.committed -= cost(seg);
    publish(&cache);
    Some(best)
}

/// Readies a block just taken off the cache to hold `usable` bytes: gives
/// back the part of its committed tail [`trim_to`] cuts and commits what
/// it lacks. `None`, the segment unmapped, when the memory is refused.
fn prepare_cached(seg: *mut Segment, usable: usize, grows: bool) -> Option<*mut Segment> {
    // SAFETY: taken off the cache by the caller: live, and ours alone.
    let s = unsafe { &*seg };
    let usable = usable.min(s.reserve.get());
    // Committed pages past the block's use stay with it while it lives,
    // out of reach of purging: keep a bounded tail, give the rest back now.
    let committed = s.committed_len.get();
    if let Some(keep) = trim_to(committed, usable, grows) {
        os::purge(seg.cast::<u8>().wrapping_add(s.block_offset.get() + keep), committed - keep);
        commit::on_purge(committed - keep);
        s.committed_len.set(keep);
    }
    s.huge_zero.set(s.committed_len.get() == 0);
    // Relaxed: published with the block (see `publish_block`).
    s.usable.store(0, Ordering::Relaxed);
    // The cached block may reserve less than the rounded size (never
    // less than `size`).
    if !commit_to(s, usable) {
        // SAFETY: ours alone, no live block, on no list but `ALL`.
        unsafe { segment::unmap_segment(seg) };
        return None;
    }
    Some(seg)
}

/// Makes the first `len` bytes of the block usable, charging what goes past
/// `committed_len`. `false` when the reclaim engine refuses the memory.
/// The caller owns the huge segment `s` and `len <= reserve`.
fn commit_to(s: &Segment, len: usize) -> bool {
    let more = len.saturating_sub(s.committed_len.get());
    if more > 0 {
        if !commit::charge(more) {
            return false;
        }
        commit::on_commit(more);
        s.committed_len.set(len);
    }
    // Relaxed: the holder's own value; statistics read it as a snapshot.
    s.usable.store(len, Ordering::Relaxed);
    true
}

/// A block `realloc` resizes in place keeps at most this much committed
/// past its new end; a longer tail goes back to the OS at once.
///
/// The long tails are those of blocks taken from the cache to grow into
/// ([`trim_to`] lets one keep twice what it uses): once the block has grown
/// in place, what is left past its end stays resident for its life, out of
/// the purge's reach. On the harness's `realloc` (random sizes to 8 MiB, 2
/// threads), 21 interleaved runs against a segment (4 MiB), median peak RSS
/// 164.5 -> 145.7 MiB at 0.100 -> 0.110 s and 55k -> 66k page faults
/// (glibc 150-190k); 2 MiB gave 160.6 MiB; 256 KiB, 146.8 at 0.120 s and
/// 79k. Keeping once rather than twice the use in [`trim_to`] instead:
/// 177.9 against 167.9 MiB.
const RESIZED_TAIL_MAX: usize = 1 << 20;

/// Resizes a live huge block in place when `new_size` fits its reserve:
/// growth takes more of the reserve, and a committed tail past the new end
/// longer than [`RESIZED_TAIL_MAX`], grown or shrunk, goes back to the OS.
/// Returns whether it did.
///
/// # Safety
///
/// `seg` is the live huge segment of a block the caller owns.
pub unsafe fn resize_in_place(seg: *mut Segment, new_size: usize) -> bool {
    let Some(len) = round_usable(new_size.max(1)) else { return false };
    // SAFETY: the caller promises a live huge segment it owns.
    let s = unsafe { &*seg };
    let len = len.min(s.reserve.get());
    if new_size > len {
        return false;
    }
    let committed = s.committed_len.get();
    if committed > len + RESIZED_TAIL_MAX {
        let tail = seg.cast::<u8>().wrapping_add(s.block_offset.get() + len);
        os::purge(tail, committed - len);
        commit::on_purge(committed - len);
        s.committed_len.set(len);
    }
    commit_to(s, len)
}

/// Bytes that growing the live huge block of `seg` to `new_size` would
/// fault in: what goes past its committed bytes when its reserve holds
/// `new_size`, else all of it (a new mapping).
///
/// # Safety
///
/// `seg` is the live huge segment of a block the caller owns.
#[inline]
pub unsafe fn growth_faults(seg: *mut Segment, new_size: usize) -> usize {
    // SAFETY: the caller promises a live huge segment it owns.
    let s = unsafe { &*seg };
    // Within its committed bytes (the common case of a buffer regrown in
    // a block taken from the cache): at most the rounding faults.
    if new_size <= s.committed_len.get() {
        return 0;
    }
    let Some(len) = round_usable(new_size) else { return 0 };
    if new_size > len.min(s.reserve.get()) {
        return len;
    }
    len.saturating_sub(s.committed_len.get())
}

/// Frees a huge block into the cache, making room for it by unmapping the
/// blocks cached longest ago; to the OS when it alone is past the budget.
///
/// The newest block is the one worth keeping: a program that frees and
/// allocates big buffers in a loop asks next for the sizes it asked for
/// last. A full cache that refused every newcomer kept whatever it held
/// first, which fitted fewer and fewer requests (the harness's `large`, 20
/// buffers of 5-25 MiB: with a budget of 128 MiB, 140-170k page faults
/// refusing, 66-81k evicting; 96 MiB, 215-240k against 112-123k).
///
/// # Safety
///
/// `seg` is a live huge segment whose block is being freed once.
pub unsafe fn free(seg: *mut Segment) {
    // SAFETY: the caller gives up the block: the segment is ours alone.
    let s = unsafe { &*seg };
    // Relaxed: statistics read it as a snapshot; the cache lock publishes
    // the segment to its next taker.
    s.pages[0].shared.state.store(state::FREE, Ordering::Relaxed);
    s.cached_at.set(os::now_ms());
    let (bytes, committed) = (s.size, cost(s));
    let budget = budget();
    let address_budget = budget.saturating_mul(ADDRESS_PER_COMMITTED);
    if committed > budget || bytes > address_budget {
        // SAFETY: ours alone, no live block, on no list but `ALL`.
        unsafe { segment::unmap_segment(seg) };
        return;
    }
    let mut victims: *mut Segment = ptr::null_mut();
    {
        let mut cache = HCACHE.lock();
        while cache.committed + committed > budget || cache.bytes + bytes > address_budget {
            let oldest = take_oldest(&mut cache);
            // SAFETY: off the cache, ours alone (see `take_oldest`).
            unsafe { (*oldest).next.set(victims) };
            victims = oldest;
        }
        s.next.set(cache.head);
        cache.head = seg;
        cache.bytes += bytes;
        cache.committed += committed;
        publish(&cache);
    }
    unmap_all(victims);
}

/// Takes the block cached longest ago (the list's last) off a cache that
/// is not empty.
fn take_oldest(cache: &mut HugeCache) -> *mut Segment {
    let mut prev: *mut Segment = ptr::null_mut();
    let mut s = cache.head;
    loop {
        // SAFETY: cached segments are live; their links change only under
        // the cache's lock, which the caller holds.
        let next = unsafe { (*s).next.get() };
        if next.is_null() {
            break;
        }
        (prev, s) = (s, next);
    }
    if prev.is_null() {
        cache.head = ptr::null_mut();
    } else {
        // SAFETY: as above.
        unsafe { (*prev).next.set(ptr::null_mut()) };
    }
    // SAFETY: as above.
    let seg = unsafe { &*s };
    cache.bytes -= seg.size;
    cache.committed -= cost(seg);
    publish(cache);
    s
}

/// Unmaps the segments of a list linked through `next`, each off the cache
/// and ours alone.
fn unmap_all(mut victims: *mut Segment) {
    while !victims.is_null() {
        let s = victims;
        // SAFETY: each victim left the cache and is ours alone.
        victims = unsafe { (*s).next.get() };
        // SAFETY: as above: no live block, on no list but `ALL`.
        unsafe { segment::unmap_segment(s) };
    }
}

/// Purges cached blocks idle for `delay` ms and unmaps those idle for ten
/// times that (all of them when `force`). Returns the bytes given back.
pub fn purge_cache(now: u64, delay: u64, force: bool) -> usize {
    let mut victims: *mut Segment = ptr::null_mut();
    let mut bytes = 0;
    {
        let mut cache = HCACHE.lock();
        let mut prev: *mut Segment = ptr::null_mut();
        let mut s = cache.head;
        while !s.is_null() {
            // SAFETY: cached segments are live; their links change only under
            // the cache's lock, which we hold.
            let seg = unsafe { &*s };
            let next = seg.next.get();
            let idle = now.saturating_sub(seg.cached_at.get());
            let committed = seg.committed_len.get();
            if force || idle >= delay.saturating_mul(10) {
                if prev.is_null() {
                    cache.head = next;
                } else {
                    // SAFETY: `prev` is a live cached segment (as above).
                    unsafe { (*prev).next.set(next) };
                }
                cache.bytes -= seg.size;
                cache.committed -= cost(seg);
                publish(&cache);
                seg.next.set(victims);
                victims = s;
                bytes += committed;
            } else {
                if idle >= delay && committed > 0 {
                    os::purge(s.cast::<u8>().wrapping_add(seg.block_offset.get()), committed);
                    commit::on_purge(committed);
                    seg.committed_len.set(0);
                    cache.committed -= committed;
                    bytes += committed;
                }
                prev = s;
            }
            s = next;
        }
    }
    unmap_all(victims);
    bytes
}
