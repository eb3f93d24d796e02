//! What reclaim lockdep has learned: which locks shrinkers take, by the
//! shrinker's needs, with the name of the first shrinker of each needs and
//! the stack where it took the lock; and which (lock, call site) pairs were
//! reported already.
//!
//! Invariant: both tables are fixed arrays in static memory (nothing here
//! allocates, so the allocation check can read them from inside `malloc`).
//! Writers take [`INSERT`], a spin lock; readers take nothing. A lock's
//! entry is published by storing its address (Release) after its name is
//! written; a needs slot by setting its flag (Release) after its shrinker
//! name and stack are written; neither is written again, so a reader that
//! saw the address or the flag (Acquire) reads settled fields. Addresses
//! are never removed: a lock that is freed and whose memory becomes another
//! lock keeps what the first one taught (the checker keys locks by address,
//! not by class as the kernel's lockdep does).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::lock::SpinLock;
use crate::reclaim::Needs;

/// Locks the table can hold (a power of two).
const LOCKS: usize = 256;
/// (lock, call site) pairs remembered as reported (a power of two).
const SITES: usize = 1024;
/// Frames kept of the stack where a shrinker took a lock.
pub(super) const FRAMES: usize = 24;
/// Bytes kept of a shrinker's name.
const NAME: usize = 48;

/// The four needs a shrinker can have, each with a slot per lock.
pub(super) const NEEDS: usize = 4;

/// The slot of `needs`: none, fs, io, fs+io.
pub(super) fn slot_of(needs: Needs) -> usize {
    if needs == Needs::NONE {
        0
    } else if needs == Needs::FS {
        1
    } else if needs == Needs::IO {
        2
    } else {
        3
    }
}

/// The needs of slot `i`.
pub(super) fn needs_of(i: usize) -> Needs {
    match i {
        0 => Needs::NONE,
        1 => Needs::FS,
        2 => Needs::IO,
        _ => Needs::FS | Needs::IO,
    }
}

/// What one shrinker of given needs taught about a lock.
pub(super) struct Learned {
    shrinker: [u8; NAME],
    shrinker_len: usize,
    /// The stack where the shrinker took the lock.
    pub(super) frames: [usize; FRAMES],
    /// How many of `frames` are filled.
    pub(super) depth: usize,
}

impl Learned {
    /// The shrinker's name (cut at 48 bytes, on a character boundary).
    pub(super) fn shrinker(&self) -> &str {
        let b = &self.shrinker[..self.shrinker_len];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

struct Slot {
    set: AtomicBool,
    learned: UnsafeCell<Learned>,
}

/// One lock: its address (0: free entry), its name, a slot per needs.
pub(super) struct Entry {
    lock: AtomicUsize,
    name: UnsafeCell<Option<&'static str>>,
    slots: [Slot; NEEDS],
}

impl Entry {
    const fn new() -> Self {
        Entry {
            lock: AtomicUsize::new(0),
            name: UnsafeCell::new(None),
            slots: [const {
                Slot {
                    set: AtomicBool::new(false),
                    learned: UnsafeCell::new(Learned {
                        shrinker: [0; NAME],
                        shrinker_len: 0,
                        frames: [0; FRAMES],
                        depth: 0,
                    }),
                }
            }; NEEDS],
        }
    }

    /// The lock's address.
    pub(super) fn lock(&self) -> usize {
        // Relaxed: the entry was found through an Acquire load of it.
        self.lock.load(Ordering::Relaxed)
    }

    /// The lock's name, when the code that took it gave one.
    pub(super) fn name(&self) -> Option<&'static str> {
        // SAFETY: written once before the address was published (module
        // invariant); the caller found the entry by an Acquire load.
        unsafe { *self.name.get() }
    }

    /// What a shrinker of slot `i`'s needs taught, if one took the lock.
    pub(super) fn learned(&self, i: usize) -> Option<&Learned> {
        let s = &self.slots[i];
        // Acquire pairs with the Release in `learn`: the fields are settled.
        if s.set.load(Ordering::Acquire) {
            // SAFETY: published and never written again (module invariant).
            Some(unsafe { &*s.learned.get() })
        } else {
            None
        }
    }
}

struct Table {
    entries: [Entry; LOCKS],
    sites: [AtomicU64; SITES],
}

// SAFETY: the `UnsafeCell` fields are written only under `INSERT`, before
// the flag or address that publishes them, and never after (module
// invariant); everything else is atomic.
unsafe impl Sync for Table {}

static TABLE: Table = Table { entries: [const { Entry::new() }; LOCKS], sites: [const { AtomicU64::new(0) }; SITES] };

/// Serialises writers of both tables.
static INSERT: SpinLock<()> = SpinLock::new(());

/// Locks learned so far: lets a lock acquisition skip the lookup while none is.
static LEARNED: AtomicUsize = AtomicUsize::new(0);

/// Whether "table full" was said.
static FULL_SAID: AtomicBool = AtomicBool::new(false);

fn hash(x: u64) -> usize {
    // Fibonacci hashing: lock addresses differ in their middle bits.
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

/// The entry of `lock`, if some shrinker took it.
pub(super) fn find(lock: usize) -> Option<&'static Entry> {
    // Relaxed: a count that only lets the lookup be skipped; a lock being
    // learned now by another thread is found on its next acquisition.
    if LEARNED.load(Ordering::Relaxed) == 0 || lock == 0 {
        return None;
    }
    let mut i = hash(lock as u64);
    for _ in 0..LOCKS {
        let e = &TABLE.entries[i % LOCKS];
        // Acquire pairs with the Release in `learn`: the name is written.
        match e.lock.load(Ordering::Acquire) {
            0 => return None,
            l if l == lock => return Some(e),
            _ => i += 1,
        }
    }
    None
}

/// Records that a shrinker named `shrinker` with `needs` took `lock`
/// (named `name`), unless one with the same needs did already; `stack`
/// fills the frames only when the slot is new.
pub(super) fn learn(
    lock: usize,
    name: Option<&'static str>,
    shrinker: &str,
    needs: Needs,
    stack: impl FnOnce(&mut [usize; FRAMES]) -> usize,
) {
    let slot = slot_of(needs);
    if find(lock).is_some_and(|e| e.learned(slot).is_some()) {
        return;
    }
    let _g = INSERT.lock();
    let mut i = hash(lock as u64);
    let mut entry = None;
    for _ in 0..LOCKS {
        let e = &TABLE.entries[i % LOCKS];
        // Relaxed: writers are serialised by `INSERT`.
        match e.lock.load(Ordering::Relaxed) {
            0 => {
                // SAFETY: a free entry, written only here, under `INSERT`,
                // before its address is published.
                unsafe { *e.name.get() = name };
                // Release pairs with the Acquire in `find`.
                e.lock.store(lock, Ordering::Release);
                // Relaxed: see `find`.
                LEARNED.fetch_add(1, Ordering::Relaxed);
                entry = Some(e);
                break;
            }
            l if l == lock => {
                entry = Some(e);
                break;
            }
            _ => i += 1,
        }
    }
    let Some(e) = entry else {
        if !FULL_SAID.swap(true, Ordering::Relaxed) {
            crate::os::write_stderr(b"shrinkalloc: lockdep: lock table full; further locks are not learned\n");
        }
        return;
    };
    let s = &e.slots[slot];
    // Relaxed: writers are serialised by `INSERT`.
    if s.set.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: an unpublished slot, written only here under `INSERT`.
    let l = unsafe { &mut *s.learned.get() };
    let mut len = shrinker.len().min(NAME);
    while !shrinker.is_char_boundary(len) {
        len -= 1;
    }
    l.shrinker[..len].copy_from_slice(&shrinker.as_bytes()[..len]);
    l.shrinker_len = len;
    l.depth = stack(&mut l.frames);
    // Release pairs with the Acquire in `Entry::learned`.
    s.set.store(true, Ordering::Release);
}

/// Remembers that (`lock`, the call site hashed to `site`) was reported:
/// `true` the first time, `false` after (or when the table is full, so
/// that a program with a bug in a loop does not flood stderr).
pub(super) fn first_report(lock: usize, site: u64) -> bool {
    // 0 marks a free slot: a key that happens to be 0 becomes 1.
    let key = (((hash(lock as u64) as u64) << 32) ^ site).max(1);
    let _g = INSERT.lock();
    let mut i = hash(key);
    for _ in 0..SITES {
        let s = &TABLE.sites[i % SITES];
        // Relaxed: writers are serialised by `INSERT`, and only they read.
        match s.load(Ordering::Relaxed) {
            0 => {
                s.store(key, Ordering::Relaxed);
                return true;
            }
            k if k == key => return false,
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip() {
        for i in 0..NEEDS {
            assert_eq!(slot_of(needs_of(i)), i);
        }
    }

    #[test]
    fn a_lock_is_learned_once_per_needs() {
        let lock = 0x1234_5678usize;
        learn(lock, Some("l"), "first", Needs::FS, |f| {
            f[0] = 7;
            1
        });
        learn(lock, None, "second", Needs::FS, |_| unreachable!("already learned"));
        let e = find(lock).expect("learned");
        assert_eq!(e.name(), Some("l"));
        let l = e.learned(slot_of(Needs::FS)).unwrap();
        assert_eq!((l.shrinker(), l.depth, l.frames[0]), ("first", 1, 7));
        assert!(e.learned(slot_of(Needs::IO)).is_none());
        assert!(first_report(lock, 42));
        assert!(!first_report(lock, 42));
        assert!(first_report(lock, 43));
    }
}
