//! The memory cgroup's whole usage, read by the allocator's slow paths
//! and the monitor: the group discovery found, its lines (the soft and hard
//! limits derived from it, applied to the group's working set), and one
//! reading of its usage turned into a level and a target.
//!
//! The group's *lines* (`cgroup.rs`): the soft line (`memory.high` less
//! 1/16, `memory.soft_limit_in_bytes`, else the hard line less max(1/8 of
//! the limit, 8 MiB) but at least 3/4 of the limit) and the hard line (the
//! limit less max(1/16, 8 MiB)). They apply to the whole group's
//! working set (usage less inactive file cache, which the kernel drops
//! unaided; a group that reads files would sit at its limit otherwise),
//! whatever limits the allocator itself was given. Neither refuses memory:
//! only the group's real limit does (`memory.max` /
//! `memory.limit_in_bytes`, [`fits_real_limit`]), and only for a program
//! that registered a shrinker (`mod.rs`).
//!
//! Invariant: nothing here allocates or takes a lock. The group is written
//! once (while the limits are first read, before `GROUP_STATE` says so)
//! and only read after, so no `fork()` can leave a child waiting on a lock
//! a vanished thread held; the usage is read at most every `USAGE_MS`
//! across the process unless a caller asks for a fresh read.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use super::cgroup::{self, Found, PathBuf, Version};
use super::limit::Limits;
use super::shrinker::Level;
use super::sources::{self, Source, SourceState};
use crate::os;

/// The group's usage is read at most this often.
pub(crate) const USAGE_MS: u64 = 50;

/// The group the usage is read from, with its lines.
#[derive(Clone, Copy)]
pub(crate) struct Group {
    pub(crate) version: Version,
    pub(crate) dir: PathBuf,
    /// The soft and hard lines, as limits on the working set.
    pub(crate) lines: Limits,
    /// The group's real limit: the smallest `memory.max` /
    /// `memory.limit_in_bytes` on the way to the root (`None`: only
    /// `memory.high`).
    pub(crate) limit: Option<u64>,
    /// Whether the soft line comes from a line where the kernel throttles
    /// the group: `memory.high` on v2 (v1's soft limit throttles nothing).
    pub(crate) throttled: bool,
}

impl Group {
    /// The group discovery found, with the lines derived from it; `None`
    /// when it sets no limit (`Found::derived_limits`).
    fn from_found(f: &Found) -> Option<Group> {
        let (soft, hard) = f.derived_limits()?;
        let lines = Limits::new(soft as usize, hard.unwrap_or(0) as usize);
        let throttled = f.version == Version::V2 && f.high.is_some();
        Some(Group { version: f.version, dir: f.dir, lines, limit: f.limit, throttled })
    }

    /// Raw usage past which reclaim acts whatever the allocator holds for
    /// reuse: halfway from the soft to the hard line, but under
    /// `memory.high` at the soft line itself (1/16 under it, `cgroup.rs`):
    /// above `memory.high` the kernel throttles every thread of the group
    /// that charges memory, the reclaimers too, so the group must not reach
    /// it, and free blocks the allocator holds are charged to the group as
    /// much as live ones (a cache daemon under `memory.high` sat at 99% of
    /// it without a pass, then stalled; with the guard 1/32 under it, its
    /// peak came 2.3 MiB short of a 100 MiB `memory.high`).
    pub(crate) fn guard(&self) -> usize {
        let guard = self.lines.guard();
        match self.lines.soft() {
            Some(soft) if self.throttled => guard.min(soft),
            _ => guard,
        }
    }

    /// The file that holds the group's usage.
    pub(crate) fn usage_file(&self) -> &'static [u8] {
        match self.version {
            Version::V1 => b"memory.usage_in_bytes",
            Version::V2 => b"memory.current",
        }
    }

    /// The `memory.stat` key of the group's inactive file cache.
    fn inactive_file_key(&self) -> &'static [u8] {
        match self.version {
            Version::V1 => b"total_inactive_file",
            Version::V2 => b"inactive_file",
        }
    }
}

/// The group, written once by `set_group` before `GROUP_STATE` becomes
/// `SET`, never written again.
struct GroupCell(UnsafeCell<Option<Group>>);
// SAFETY: written once, before the Release store that lets readers in.
unsafe impl Sync for GroupCell {}

static GROUP: GroupCell = GroupCell(UnsafeCell::new(None));
static GROUP_STATE: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = 0;
const SET: u8 = 1;
/// The group's files vanished: it was removed.
const LOST: u8 = 2;

/// Records the group discovery found (`None`: none, or no limit). Called
/// once per process, by the thread that reads the limits first.
pub(crate) fn set_group(found: Option<&Found>) {
    let group = found.and_then(Group::from_found);
    if let Some(f) = found {
        sources::set_path(Source::Cgroup, f.dir.as_bytes());
    }
    sources::set_state(Source::Cgroup, if found.is_some() { SourceState::Active } else { SourceState::Missing });
    if let Some(g) = group {
        if let Some(p) = g.dir.file(g.usage_file()) {
            sources::set_path(Source::CgroupUsage, p.as_bytes());
        }
        sources::set_state(Source::CgroupUsage, SourceState::Active);
    } else {
        sources::set_state(Source::CgroupUsage, SourceState::Missing);
    }
    // Relaxed: a second call (none is made) would find it set.
    if group.is_some() && GROUP_STATE.load(Ordering::Relaxed) == UNSET {
        // SAFETY: no reader looks before the Release store below, and this
        // is the only write (the limits are read once per process).
        unsafe { *GROUP.0.get() = group };
        GROUP_STATE.store(SET, Ordering::Release);
    }
}

/// The group with a limit, if discovery found one and it is still there.
pub(crate) fn group() -> Option<&'static Group> {
    // Acquire pairs with the Release store in `set_group`.
    if GROUP_STATE.load(Ordering::Acquire) != SET {
        return None;
    }
    // SAFETY: set before SET was published and never written again.
    unsafe { (*GROUP.0.get()).as_ref() }
}

/// Forgets the group: its files are gone (it was removed).
pub(crate) fn lose_group(errno: i32) {
    // Relaxed: readers only stop using the group, which stays valid.
    GROUP_STATE.store(LOST, Ordering::Relaxed);
    sources::set_state(Source::CgroupUsage, SourceState::Failed(errno));
}

/// One read of the group's usage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    /// Usage less inactive file cache.
    pub(crate) working_set: u64,
    /// The level of the working set against the group's lines.
    pub(crate) level: Level,
    /// Bytes to free to come back to the low watermark (1/16 under the
    /// soft line), counting the allocator's reusable memory as free.
    pub(crate) target: usize,
    /// Bytes to free to come back under the hard line with some headroom:
    /// what a direct pass asks for.
    pub(crate) direct_target: usize,
}

/// The group's working set now; `Err(errno)` if its files cannot be read.
///
/// Its level and background target are those of the working set less the
/// memory the allocator holds free for reuse (committed bytes not in live
/// blocks): after a pass frees blocks the group's usage stays where it was
/// until their pages empty, but the program's next allocations take those
/// blocks instead of new memory. Judged on the raw usage, every reading
/// would raise a pass for what the last one already freed. Past the guard
/// (halfway from the soft to the hard line) and at the hard line the raw
/// usage counts: that is what the kernel counts.
fn read_group(g: &Group) -> Result<Reading, i32> {
    let usage = cgroup::read_bytes(&g.dir, g.usage_file())?;
    let high = g.lines.soft().map_or(u64::MAX, |_| g.lines.high() as u64);
    // Only past the high watermark are the stat file and the allocator's
    // free memory worth reading.
    let stat = || cgroup::read_key(&g.dir.file(b"memory.stat")?, g.inactive_file_key()).ok().flatten();
    let inactive = if usage > high { stat().unwrap_or(0) } else { 0 };
    let working_set = usage.saturating_sub(inactive);
    let ws = usize::try_from(working_set).unwrap_or(usize::MAX);
    let held = if working_set > high { reusable() } else { 0 };
    let unreusable = ws.saturating_sub(held);
    let level = if g.lines.fits(ws) { g.lines.background_level(unreusable) } else { Level::Critical };
    // Past the guard (halfway to the hard line) the raw usage counts too.
    let guarded = ws.saturating_sub(g.guard());
    let level = if guarded > 0 { level.max(Level::Low) } else { level };
    let target = if level > Level::None { unreusable.saturating_sub(g.lines.soft_goal()).max(guarded) } else { 0 };
    let hard = g.lines.hard().unwrap_or(usize::MAX);
    let direct_target = ws.saturating_sub(hard).saturating_add(g.lines.hard_headroom());
    Ok(Reading { working_set, level, target, direct_target })
}

/// Bytes the allocator holds committed but not in live blocks: free blocks
/// and free pages not yet given back, which its next allocations reuse.
/// Walks the segments (`crate::stats`): read only past the high watermark.
fn reusable() -> usize {
    let s = crate::stats();
    s.committed.saturating_sub(s.in_use)
}

static LAST_READ_MS: AtomicU64 = AtomicU64::new(0);
/// The working set last read, for the monitor's choice of period.
static LAST_WORKING_SET: AtomicU64 = AtomicU64::new(0);
/// Reads of the group's usage, for tests and statistics.
static READS: AtomicUsize = AtomicUsize::new(0);

/// Reads the group's usage now, counts a read past the soft line as an
/// event of `CgroupUsage`; `None` without a group or on a failed read
/// (which forgets the group: its files are gone).
pub(crate) fn read_now() -> Option<Reading> {
    let g = group()?;
    match read_group(g) {
        Ok(r) => {
            // Relaxed: statistics and a hint.
            READS.fetch_add(1, Ordering::Relaxed);
            LAST_WORKING_SET.store(r.working_set, Ordering::Relaxed);
            if r.level > Level::None {
                sources::note_event(Source::CgroupUsage);
            }
            Some(r)
        }
        Err(e @ (libc::ENOENT | libc::ENODEV | libc::ENOTDIR)) => {
            lose_group(e);
            None
        }
        Err(_) => None,
    }
}

/// [`read_now`], at most every `USAGE_MS` across the process: the thread
/// that wins the slot reads, the others get `None`.
pub(crate) fn read_if_due() -> Option<Reading> {
    group()?;
    let now = os::now_ms();
    // Relaxed: the CAS elects one reader per period; nothing else is ordered.
    let last = LAST_READ_MS.load(Ordering::Relaxed);
    if now < last.saturating_add(USAGE_MS) {
        return None;
    }
    LAST_READ_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).ok()?;
    read_now()
}

/// Whether `bytes` more keep the group's working set (read now) within its
/// real limit; `true` without a group, a limit or a reading: the kernel
/// decides.
pub(crate) fn fits_real_limit(bytes: usize) -> bool {
    match (group().and_then(|g| g.limit), read_now()) {
        (Some(limit), Some(r)) => r.working_set.saturating_add(bytes as u64) <= limit,
        _ => true,
    }
}

/// The working set last read, or 0.
pub(crate) fn last_working_set() -> u64 {
    // Relaxed: see `read_now`.
    LAST_WORKING_SET.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A group with a 128 MiB limit (hard line 112 MiB).
    fn group(version: Version, high: Option<u64>) -> Group {
        Group::from_found(&Found { version, dir: PathBuf::new(), limit: Some(128 << 20), high }).unwrap()
    }

    #[test]
    fn memory_high_alone_gives_a_soft_line_and_the_guard_at_it() {
        let high_only = Found { version: Version::V2, dir: PathBuf::new(), limit: None, high: Some(100 << 20) };
        let g = Group::from_found(&high_only).unwrap();
        let soft = 100 * MIB - 100 * MIB / 16;
        assert_eq!((g.lines.soft(), g.lines.hard(), g.limit), (Some(soft), None, None));
        assert_eq!(g.guard(), soft, "raw usage counts from the soft line on, under memory.high");
        assert!(g.lines.fits(usize::MAX), "no hard line: nothing is ever critical for it");
        // v1's soft limit alone: no group to watch.
        assert!(Group::from_found(&Found { version: Version::V1, ..high_only }).is_none());
    }

    #[test]
    fn the_guard_stays_under_memory_high_on_v2_only() {
        // v2 with memory.high = 100 MiB: the soft line is 93.75 MiB, and
        // the raw usage counts from there on, not from halfway to the hard
        // line (106.875 MiB).
        let v2 = group(Version::V2, Some(100 << 20));
        assert_eq!(v2.lines.soft(), Some(100 * MIB - 100 * MIB / 16));
        assert_eq!(v2.guard(), 100 * MIB - 100 * MIB / 16);
        // v1's soft limit throttles nothing: halfway, as without one.
        assert_eq!(group(Version::V1, Some(100 << 20)).guard(), 110 * MIB);
        assert_eq!(group(Version::V2, None).guard(), 112 * MIB);
    }
}
