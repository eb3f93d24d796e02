//! Huge blocks: requests bigger than the largest size class, each on a
//! mapping of its own, and a cache of freed ones so that a program that
//! allocates and frees big buffers in a loop does not fault them in afresh
//! each time (the trap mimalloc and jemalloc fall into).
//!
//! Invariant: a huge segment is either live (page 0 `IN_USE`, owned by the
//! block's holder) or on the cache list (`FREE`), never both; the cache holds
//! at most `Opt::HugeCacheBytes` of blocks. Cached blocks are purged after
//! the purge delay and unmapped after ten times it.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::lock::SpinLock;
use crate::options::{self, Opt};
use crate::page::state;
use crate::segment::{self, Kind, Segment, HEADER_RESERVE, MAP_MAX_BACK, SEGMENT_SIZE};
use crate::{os, stats};

/// Largest alignment a huge block can have (the segment map must reach back
/// from the block to its header).
pub const MAX_HUGE_ALIGN: usize = 64 * SEGMENT_SIZE;
const _: () = assert!(MAX_HUGE_ALIGN / SEGMENT_SIZE < MAP_MAX_BACK);

pub struct HugeCache {
    head: *mut Segment,
    bytes: usize,
}
// SAFETY: only touched under its lock.
unsafe impl Send for HugeCache {}

/// Freed huge blocks kept mapped, newest first, linked through `next`.
pub static HCACHE: SpinLock<HugeCache> = SpinLock::new(HugeCache { head: ptr::null_mut(), bytes: 0 });

/// Rounds a huge size up to 1/8 of its power of two, so that a growing
/// `realloc` finds room in place and cached blocks fit later requests.
fn round_usable(size: usize) -> Option<usize> {
    let step = (size.next_power_of_two() / 16).max(os::OS_PAGE);
    size.checked_add(step - 1).map(|s| s & !(step - 1))
}

/// Allocates a huge block of at least `size` bytes aligned to `align`.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    if align > MAX_HUGE_ALIGN || size > isize::MAX as usize / 2 {
        return ptr::null_mut();
    }
    let offset = HEADER_RESERVE.next_multiple_of(align.max(os::OS_PAGE));
    let Some(usable) = round_usable(size.max(1)) else { return ptr::null_mut() };
    let seg = match take_cached(size, usable, offset, align) {
        Some(seg) => seg,
        None => match map_new(usable, offset, align) {
            Some(seg) => seg,
            None => return ptr::null_mut(),
        },
    };
    // SAFETY: the segment is ours alone until the block is handed out.
    unsafe {
        // Relaxed: statistics read it as a snapshot only.
        (*seg).pages[0].state.store(state::IN_USE, Ordering::Relaxed);
        seg.cast::<u8>().add(offset)
    }
}

fn map_new(usable: usize, offset: usize, align: usize) -> Option<*mut Segment> {
    if !crate::reclaim::charge(HEADER_RESERVE + usable) {
        return None;
    }
    let seg = segment::map_segment(Kind::Huge, offset + usable, align.max(SEGMENT_SIZE))?;
    stats::on_commit(usable);
    // SAFETY: fresh segment, ours alone.
    unsafe {
        (*seg).block_offset = offset;
        (*seg).usable = usable;
        (*seg).huge_zero = true;
        (*seg).huge_purged = false;
    }
    Some(seg)
}

/// A cached block of the right shape: holds `size`, wastes at most a quarter,
/// same offset and alignment. Charged again if it had been purged.
fn take_cached(size: usize, usable: usize, offset: usize, align: usize) -> Option<*mut Segment> {
    let seg = {
        let mut cache = HCACHE.lock();
        let mut link: *mut *mut Segment = &mut cache.head;
        let mut found = ptr::null_mut();
        // SAFETY: cached segments are live; links change under the lock.
        unsafe {
            while !(*link).is_null() {
                let s = *link;
                let fits = (*s).usable >= size && (*s).usable <= usable + usable / 4;
                let shape = (*s).block_offset == offset && (s as usize + offset) % align == 0;
                if fits && shape {
                    *link = (*s).next;
                    cache.bytes -= (*s).usable;
                    found = s;
                    break;
                }
                link = &mut (*s).next;
            }
        }
        found
    };
    if seg.is_null() {
        return None;
    }
    // SAFETY: taken off the cache above: ours alone.
    unsafe {
        if (*seg).huge_purged {
            if !crate::reclaim::charge((*seg).usable) {
                segment::unmap_segment(seg);
                return None;
            }
            stats::on_commit((*seg).usable);
            (*seg).huge_purged = false;
            (*seg).huge_zero = true;
        } else {
            (*seg).huge_zero = false;
        }
    }
    Some(seg)
}

/// Frees a huge block: into the cache while it has room, else to the OS.
///
/// # Safety
///
/// `seg` is a live huge segment whose block is being freed once.
pub unsafe fn free(seg: *mut Segment) {
    // SAFETY: caller promise: the segment is now ours alone.
    unsafe {
        // Relaxed: statistics snapshot only.
        (*seg).pages[0].state.store(state::FREE, Ordering::Relaxed);
        (*seg).cached_at = os::now_ms();
        let usable = (*seg).usable;
        let cached = {
            let mut cache = HCACHE.lock();
            let room = cache.bytes + usable <= options::get(Opt::HugeCacheBytes);
            if room {
                (*seg).next = cache.head;
                cache.head = seg;
                cache.bytes += usable;
            }
            room
        };
        if !cached {
            segment::unmap_segment(seg);
        }
    }
}

/// Purges cached blocks idle for `delay` ms and unmaps those idle for ten
/// times that (all of them when `force`). Returns the bytes given back.
pub fn purge_cache(now: u64, delay: u64, force: bool) -> usize {
    let mut victims: *mut Segment = ptr::null_mut();
    let mut bytes = 0;
    {
        let mut cache = HCACHE.lock();
        let mut link: *mut *mut Segment = &mut cache.head;
        // SAFETY: cached segments are live; links change under the lock.
        unsafe {
            while !(*link).is_null() {
                let s = *link;
                let idle = now.saturating_sub((*s).cached_at);
                if force || idle >= delay.saturating_mul(10) {
                    *link = (*s).next;
                    cache.bytes -= (*s).usable;
                    (*s).next = victims;
                    victims = s;
                    continue;
                }
                if idle >= delay && !(*s).huge_purged {
                    os::purge(s.cast::<u8>().add((*s).block_offset), (*s).usable);
                    (*s).huge_purged = true;
                    stats::on_purge((*s).usable);
                    bytes += (*s).usable;
                }
                link = &mut (*s).next;
            }
        }
    }
    while !victims.is_null() {
        // SAFETY: each victim left the cache above and is ours alone.
        unsafe {
            let s = victims;
            victims = (*s).next;
            if !(*s).huge_purged {
                bytes += (*s).usable;
            }
            segment::unmap_segment(s);
        }
    }
    bytes
}
