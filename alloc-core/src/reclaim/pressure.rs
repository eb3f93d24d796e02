//! Pressure from outside the allocator's own accounting: the memory
//! cgroup's whole usage, the kernel's events, PSI, systemd's watch, and a
//! failed `mmap` — each turned into a level and a request for reclaim.
//!
//! | source | how it is seen | level | target |
//! |---|---|---|---|
//! | cgroup usage | working set (usage − inactive file cache) read at most every 50 ms, by `charge`'s slow path or the monitor | by the group's lines, as `Limits::level` | working set − 15/16 of the soft line |
//! | v1 thresholds | eventfd on `memory.usage_in_bytes` at the soft line, halfway, the hard line | from a fresh usage read | as for usage |
//! | v1 `memory.pressure_level` | eventfd per level (`low`, `medium`, `critical`) | the level that fired | a share of committed bytes |
//! | v2 `memory.events` | `POLLPRI`, then the counters that grew | `high` → medium; `max`, `oom`, `oom_kill` → critical | usage, or a share |
//! | PSI | triggers `some 150 ms / 2 s`, `full 100 ms / 2 s` on the group's `memory.pressure` or `/proc/pressure/memory` | medium; critical | usage, or a share |
//! | systemd | `MEMORY_PRESSURE_WATCH`, `MEMORY_PRESSURE_WRITE` | medium | usage, or a share |
//! | `mmap` failure | `ENOMEM` from the kernel | critical, direct reclaim | twice the mapping |
//!
//! The group's *lines* are the limits derived from it (`cgroup.rs`): the
//! soft line (`memory.high` / `memory.soft_limit_in_bytes`, else 3/4 of the
//! limit) and the hard line (the limit less max(1/8, 8 MiB)). They apply to
//! the whole group's working set whatever limits the allocator itself was
//! given. Inactive file cache is left out because the kernel drops it
//! unaided; a group that reads files sits at its limit otherwise.
//!
//! A *raise* wakes the background reclaimers of every class with the
//! source as the pass's trigger; one source raises at most every 250 ms
//! unless its level went up. Without any source the allocator still has
//! its own limits: every source is optional.
//!
//! Invariant: nothing here allocates or takes a lock: state is in atomics,
//! the group is written once (while the limits are first read, before
//! `GROUP_STATE` says so) and only read after, so no `fork()` can leave a
//! child waiting on a lock a vanished thread held. Each source's state is
//! written when it is set up, so the statistics say once why a source is
//! missing, and the hot paths never retry one.

use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use super::cgroup::{self, Found, PathBuf, Version};
use super::limit::Limits;
use super::shrinker::Level;
use super::stats::{bump, Trigger};
use super::worker::{self, CLASSES};
use super::{scope, Pass};
use crate::os;

/// A place pressure can come from, as the statistics name it.
///
/// ```
/// use shrinkalloc::reclaim::Source;
/// assert_eq!(Source::V1Threshold.name(), "v1 thresholds");
/// assert_eq!(Source::ALL.len(), 9);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Discovery of the memory cgroup and its limit.
    Cgroup,
    /// The monitor thread that watches the event sources.
    Monitor,
    /// The group's whole usage (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    CgroupUsage,
    /// v1 usage thresholds (`cgroup.event_control` and an eventfd).
    V1Threshold,
    /// v1 `memory.pressure_level`. On a machine without swap it fires only
    /// together with the OOM killer, never as an early warning.
    V1PressureLevel,
    /// v2 `memory.events` (`high`, `max`, `oom`, `oom_kill`).
    V2Events,
    /// PSI triggers on the group's `memory.pressure` or `/proc/pressure/memory`.
    Psi,
    /// systemd's `MEMORY_PRESSURE_WATCH` / `MEMORY_PRESSURE_WRITE`.
    SystemdWatch,
    /// `mmap` failing with `ENOMEM`.
    MmapFailure,
}

impl Source {
    /// Every source, in the order the statistics list them.
    pub const ALL: [Source; 9] = [
        Source::Cgroup,
        Source::Monitor,
        Source::CgroupUsage,
        Source::V1Threshold,
        Source::V1PressureLevel,
        Source::V2Events,
        Source::Psi,
        Source::SystemdWatch,
        Source::MmapFailure,
    ];

    /// The source's name in the statistics.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::Source::Psi.name(), "psi");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Source::Cgroup => "cgroup",
            Source::Monitor => "monitor",
            Source::CgroupUsage => "cgroup usage",
            Source::V1Threshold => "v1 thresholds",
            Source::V1PressureLevel => "v1 pressure_level",
            Source::V2Events => "v2 memory.events",
            Source::Psi => "psi",
            Source::SystemdWatch => "systemd watch",
            Source::MmapFailure => "mmap failure",
        }
    }

    /// The trigger a pass this source raised is recorded under.
    const fn trigger(self) -> Trigger {
        match self {
            Source::Cgroup | Source::Monitor | Source::CgroupUsage => Trigger::CgroupUsage,
            Source::V1Threshold => Trigger::V1Threshold,
            Source::V1PressureLevel => Trigger::V1PressureLevel,
            Source::V2Events => Trigger::V2Events,
            Source::Psi => Trigger::Psi,
            Source::SystemdWatch => Trigger::SystemdWatch,
            Source::MmapFailure => Trigger::MmapFailure,
        }
    }
}

/// What became of a source when it was set up.
///
/// ```
/// use shrinkalloc::reclaim::SourceState;
/// assert_eq!(SourceState::Failed(22).to_string(), "failed (errno 22)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// Not set up (yet): the monitor has not started, or is not needed.
    NotStarted,
    /// Watched.
    Active,
    /// Turned off by configuration (`SHRINKALLOC_CGROUP=off`,
    /// `SHRINKALLOC_MONITOR=off`, `MEMORY_PRESSURE_WATCH=/dev/null`), or
    /// replaced by another source (PSI by systemd's watch).
    Off,
    /// Not there: no memory cgroup, no limit, another cgroup version, no
    /// PSI file, the variable unset.
    Missing,
    /// The kernel refused permission (`EACCES`, `EPERM`).
    Denied,
    /// Set-up or a later read failed with this errno.
    Failed(i32),
}

impl SourceState {
    fn pack(self) -> u32 {
        match self {
            SourceState::NotStarted => 0,
            SourceState::Active => 1,
            SourceState::Off => 2,
            SourceState::Missing => 3,
            SourceState::Denied => 4,
            SourceState::Failed(e) => 5 | (e.clamp(0, 0xff_ffff) as u32) << 8,
        }
    }

    fn unpack(v: u32) -> Self {
        match v & 0xff {
            0 => SourceState::NotStarted,
            1 => SourceState::Active,
            2 => SourceState::Off,
            3 => SourceState::Missing,
            4 => SourceState::Denied,
            _ => SourceState::Failed((v >> 8) as i32),
        }
    }

    /// The state for a set-up that failed with `errno`.
    pub(crate) fn from_errno(errno: i32) -> Self {
        match errno {
            libc::EACCES | libc::EPERM => SourceState::Denied,
            libc::ENOENT | libc::ENOTDIR => SourceState::Missing,
            e => SourceState::Failed(e),
        }
    }
}

impl core::fmt::Display for SourceState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SourceState::NotStarted => f.write_str("not started"),
            SourceState::Active => f.write_str("active"),
            SourceState::Off => f.write_str("off"),
            SourceState::Missing => f.write_str("missing"),
            SourceState::Denied => f.write_str("no permission"),
            SourceState::Failed(e) => write!(f, "failed (errno {e})"),
        }
    }
}

/// One source's statistics, as read at one moment.
///
/// ```
/// for s in &shrinkalloc::reclaim::stats().sources {
///     println!("{}: {} ({} events, {} raises)", s.source.name(), s.state, s.events, s.raises);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceStats {
    /// Which source.
    pub source: Source,
    /// What became of it.
    pub state: SourceState,
    /// The file or directory it watches, if any.
    pub path: Option<String>,
    /// Notifications it delivered (for usage: reads that found the group
    /// past its soft line; for `mmap`: failures seen).
    pub events: u64,
    /// Reclaim requests it made.
    pub raises: u64,
    /// The level of its last request.
    pub last_level: Level,
}

struct Slot {
    state: AtomicU32,
    events: AtomicU64,
    raises: AtomicU64,
    last_level: AtomicU8,
    last_raise_ms: AtomicU64,
}

static SLOTS: [Slot; 9] = [const {
    Slot {
        state: AtomicU32::new(0),
        events: AtomicU64::new(0),
        raises: AtomicU64::new(0),
        last_level: AtomicU8::new(0),
        last_raise_ms: AtomicU64::new(0),
    }
}; 9];
/// Bytes of a path the statistics keep.
const PATH_SHOWN: usize = 512;

/// A path the statistics show, in atomics so that a reader racing the
/// (single) writer of its slot never reads a torn value unnoticed: `seq`
/// is odd while the writer writes.
struct PathSlot {
    seq: AtomicU32,
    len: AtomicUsize,
    bytes: [AtomicU8; PATH_SHOWN],
}

static PATHS: [PathSlot; 9] = [const {
    PathSlot { seq: AtomicU32::new(0), len: AtomicUsize::new(0), bytes: [const { AtomicU8::new(0) }; PATH_SHOWN] }
}; 9];

/// One source raises at most this often unless its level went up.
const REPEAT_MS: u64 = 250;
/// The group's usage is read at most this often.
pub(crate) const USAGE_MS: u64 = 50;
/// How long a raised level counts as the current one.
const LEVEL_TTL_MS: u64 = 1000;
/// Attempts a failed `mmap` gets after the first: reclaim, retry, twice.
const MAP_RETRIES: u32 = 2;
/// How long a failed `mmap` waits for a background pass in flight.
const MAP_WAIT: Duration = Duration::from_millis(50);

/// Records what became of `src`.
pub(crate) fn set_state(src: Source, state: SourceState) {
    // Relaxed: statistics; nothing is published through it.
    SLOTS[src as usize].state.store(state.pack(), Ordering::Relaxed);
}

/// The state of `src`. A failed `mmap` needs no set-up: always active.
pub(crate) fn state(src: Source) -> SourceState {
    if src == Source::MmapFailure {
        return SourceState::Active;
    }
    // Relaxed: see `set_state`.
    SourceState::unpack(SLOTS[src as usize].state.load(Ordering::Relaxed))
}

/// Records the path `src` watches (a NUL is dropped; kept to 512 bytes).
/// One writer per slot: the limits' set-up, then the monitor's.
pub(crate) fn set_path(src: Source, path: &[u8]) {
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    let slot = &PATHS[src as usize];
    // A seqlock: the odd seq (Relaxed, then the Release fence) comes before
    // the bytes, the Release increment after them; both pair with the
    // Acquire load and fence in `path_of`.
    slot.seq.fetch_add(1, Ordering::Relaxed);
    fence(Ordering::Release);
    for (d, &b) in slot.bytes.iter().zip(path) {
        d.store(b, Ordering::Relaxed);
    }
    slot.len.store(path.len().min(PATH_SHOWN), Ordering::Relaxed);
    slot.seq.fetch_add(1, Ordering::Release);
}

/// The path `src` watches, if one was recorded.
fn path_of(src: Source) -> Option<String> {
    let slot = &PATHS[src as usize];
    for _ in 0..4 {
        let seq = slot.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let len = slot.len.load(Ordering::Relaxed);
        let mut buf = [0u8; PATH_SHOWN];
        for (d, s) in buf.iter_mut().zip(&slot.bytes).take(len) {
            *d = s.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) == seq {
            return (seq != 0).then(|| String::from_utf8_lossy(&buf[..len]).into_owned());
        }
    }
    None
}

/// Counts a notification from `src`.
pub(crate) fn note_event(src: Source) {
    bump(&SLOTS[src as usize].events, 1);
}

/// The highest level a source raised within the last second, and when.
static LEVEL: AtomicU8 = AtomicU8::new(0);
static LEVEL_MS: AtomicU64 = AtomicU64::new(0);

/// The level the sources put the process at now: the highest raised within
/// the last second (`Level::None` when nothing did).
pub(crate) fn level() -> Level {
    // Relaxed: a hint for the level of the next request.
    let at = LEVEL_MS.load(Ordering::Relaxed);
    if os::now_ms().saturating_sub(at) > LEVEL_TTL_MS {
        return Level::None;
    }
    Level::from_index(LEVEL.load(Ordering::Relaxed) as usize)
}

fn note_level(level: Level, now: u64) {
    // Relaxed: see `level`; a race between two raisers leaves either.
    if now.saturating_sub(LEVEL_MS.load(Ordering::Relaxed)) > LEVEL_TTL_MS
        || level as u8 >= LEVEL.load(Ordering::Relaxed)
    {
        LEVEL.store(level as u8, Ordering::Relaxed);
        LEVEL_MS.store(now, Ordering::Relaxed);
    }
}

/// Whether `src` may raise `level` now: not `None`, and not when it asked
/// at this level or higher within `REPEAT_MS`.
pub(crate) fn may_raise(src: Source, level: Level) -> bool {
    let slot = &SLOTS[src as usize];
    // Relaxed: rate limiting; two racing raisers may both ask, harmlessly.
    let last = slot.last_level.load(Ordering::Relaxed);
    let recent = os::now_ms() < slot.last_raise_ms.load(Ordering::Relaxed).saturating_add(REPEAT_MS);
    level > Level::None && !(level as u8 <= last && recent)
}

/// Asks the background reclaimers of every class for a pass freeing
/// `target` bytes at `level`, on behalf of `src`. Returns whether it asked
/// (see [`may_raise`]).
pub(crate) fn raise(src: Source, level: Level, target: usize) -> bool {
    if !may_raise(src, level) {
        return false;
    }
    let slot = &SLOTS[src as usize];
    let now = os::now_ms();
    // Relaxed: see `may_raise`.
    slot.last_level.store(level as u8, Ordering::Relaxed);
    slot.last_raise_ms.store(now, Ordering::Relaxed);
    bump(&slot.raises, 1);
    note_level(level, now);
    for class in 0..CLASSES {
        worker::wake(class, target, level, src.trigger());
    }
    true
}

/// A share of the committed bytes to free when a source gives a level but
/// no size: 1/32 at `Low`, 1/16 at `Medium`, 1/8 at `Critical`.
fn share_of_committed(level: Level) -> usize {
    crate::stats::committed() >> (6 - (level as u32).min(3))
}

/// The group the usage is read from, with its lines.
#[derive(Clone, Copy)]
pub(crate) struct Group {
    pub(crate) version: Version,
    pub(crate) dir: PathBuf,
    /// The soft and hard lines, as limits on the working set.
    pub(crate) lines: Limits,
}

impl Group {
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
    let group = found.and_then(|f| {
        let (soft, hard) = f.derived_limits()?;
        let lines = Limits::new(soft as usize, hard as usize);
        Some(Group { version: f.version, dir: f.dir, lines })
    });
    if let Some(f) = found {
        set_path(Source::Cgroup, f.dir.as_bytes());
    }
    set_state(Source::Cgroup, if found.is_some() { SourceState::Active } else { SourceState::Missing });
    if let Some(g) = group {
        if let Some(p) = g.dir.file(g.usage_file()) {
            set_path(Source::CgroupUsage, p.as_bytes());
        }
        set_state(Source::CgroupUsage, SourceState::Active);
    } else {
        set_state(Source::CgroupUsage, SourceState::Missing);
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
    set_state(Source::CgroupUsage, SourceState::Failed(errno));
}

/// One read of the group's usage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    /// Usage less inactive file cache.
    pub(crate) working_set: u64,
    /// The level of the working set against the group's lines.
    pub(crate) level: Level,
    /// Bytes to free to come back 1/16 under the soft line.
    pub(crate) target: usize,
    /// Bytes to free to come back under the hard line with some headroom:
    /// what a direct pass asks for.
    pub(crate) direct_target: usize,
}

/// Reads a small control file of the group into `buf`: `Ok(text)` or
/// `Err(errno)`.
fn read_control<'b>(g: &Group, name: &[u8], buf: &'b mut [u8]) -> Result<&'b [u8], i32> {
    let path = g.dir.file(name).ok_or(libc::ENAMETOOLONG)?;
    let fd = os::open(path.as_bytes(), libc::O_RDONLY)?;
    let r = os::read_fd(fd, buf);
    os::close(fd);
    Ok(&buf[..r?])
}

/// The value of `key` in the flat-keyed control file at `path`
/// (NUL-terminated), read in small pieces: `memory.stat` runs to a few KiB,
/// and this may run inside `malloc` on a thread with a small stack.
fn read_key(path: &PathBuf, key: &[u8]) -> Result<Option<u64>, i32> {
    let fd = os::open(path.as_bytes(), libc::O_RDONLY)?;
    let mut buf = [0u8; 512];
    // Bytes of a partial line carried over; whether a line too long for
    // the buffer is being skipped to its end.
    let (mut carry, mut skipping) = (0, false);
    let r = loop {
        let n = match os::read_fd(fd, &mut buf[carry..]) {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let end = carry + n;
        let whole = if n == 0 { end } else { buf[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
        let mut lines = &buf[..whole];
        if skipping && whole > 0 {
            lines = lines.iter().position(|&b| b == b'\n').map_or(&b""[..], |i| &lines[i + 1..]);
            skipping = false;
        }
        if let Some(v) = cgroup::parse_key(lines, key) {
            break Ok(Some(v));
        }
        if n == 0 {
            break Ok(None);
        }
        carry = end - whole;
        if carry == buf.len() {
            (carry, skipping) = (0, true);
        } else {
            buf.copy_within(whole..end, 0);
        }
    };
    os::close(fd);
    r
}

/// The group's working set now; `Err(errno)` if its files cannot be read.
fn read_group(g: &Group) -> Result<Reading, i32> {
    let mut buf = [0u8; 64];
    let usage = match cgroup::parse_value(read_control(g, g.usage_file(), &mut buf)?) {
        Some(cgroup::Value::Bytes(n)) => n,
        _ => return Err(libc::EINVAL),
    };
    let soft = g.lines.soft().unwrap_or(usize::MAX) as u64;
    // Only past the soft line is the stat file worth reading.
    let stat = || read_key(&g.dir.file(b"memory.stat")?, g.inactive_file_key()).ok().flatten();
    let inactive = if usage > soft { stat().unwrap_or(0) } else { 0 };
    let working_set = usage.saturating_sub(inactive);
    let ws = usize::try_from(working_set).unwrap_or(usize::MAX);
    let level = g.lines.level(ws);
    let target = if level > Level::None { ws.saturating_sub(g.lines.soft_goal()) } else { 0 };
    let hard = g.lines.hard().unwrap_or(usize::MAX);
    let direct_target = ws.saturating_sub(hard).saturating_add(g.lines.hard_headroom());
    Ok(Reading { working_set, level, target, direct_target })
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
                note_event(Source::CgroupUsage);
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

/// The working set last read, or 0.
pub(crate) fn last_working_set() -> u64 {
    // Relaxed: see `read_now`.
    LAST_WORKING_SET.load(Ordering::Relaxed)
}

/// Reads the usage if due and asks background reclaim for what the group
/// is over its soft line. Returns the reading when this thread made it.
pub(crate) fn check_usage() -> Option<Reading> {
    let r = read_if_due()?;
    raise(Source::CgroupUsage, r.level, r.target);
    Some(r)
}

/// Raises `level` for an event of `src` that carries no size. With a
/// group, the target is what its working set is over its soft line (read
/// now), at least a share of the committed bytes; but a `Low` event while
/// the working set is under the soft line only counts: the kernel is
/// reclaiming page cache, which it does unaided (v1 `pressure_level` `low`
/// fires on every reclaim window of a group that reads files). Without a
/// group, the target is the share.
pub(crate) fn raise_event(src: Source, level: Level) {
    if !may_raise(src, level) {
        return;
    }
    let (level, target) = match read_now() {
        Some(r) if level == Level::Low => (if r.target > 0 { Level::Low } else { Level::None }, r.target),
        Some(r) => (level, r.target.max(share_of_committed(level))),
        None => (level, share_of_committed(level)),
    };
    raise(src, level, target);
}

/// `charge`'s slow path, for an allocation that brings the committed bytes
/// to `want`: starts the monitor when due, reads the group's usage when
/// due, and returns the bytes a direct pass should free when the group's
/// working set is past its hard line.
pub(crate) fn on_charge_slow(want: usize) -> Option<usize> {
    if super::limit::monitor_due(want) {
        super::monitor::start();
    }
    let r = check_usage()?;
    (r.level == Level::Critical).then_some(r.direct_target)
}

/// Called when `mmap` of `bytes` failed, before retry number `attempt + 1`.
/// On `ENOMEM` raises the level to critical, runs direct reclaim under the
/// thread's mask (a thread inside reclaim only purges), and says whether to
/// retry; after `MAP_RETRIES` attempts, or on another error, `false`.
pub(crate) fn on_map_failure(bytes: usize, attempt: u32) -> bool {
    let errno = os::errno();
    if errno != libc::ENOMEM {
        return false;
    }
    note_event(Source::MmapFailure);
    if attempt >= MAP_RETRIES {
        bump(&super::stats::FAILED_MAPS, 1);
        return false;
    }
    if scope::is_reclaiming() {
        return attempt == 0 && crate::purge() > 0;
    }
    let target = bytes.saturating_mul(2).max(share_of_committed(Level::Critical));
    raise(Source::MmapFailure, Level::Critical, target);
    let scope = scope::current_scope();
    let pass = Pass { target, level: Level::Critical, trigger: Trigger::MmapFailure, scope, only_class: None };
    if super::run_pass(pass) == super::Freed::NOTHING {
        worker::wait_for_allowed(worker::class_of(scope), MAP_WAIT);
    }
    true
}

/// Every source's statistics, in [`Source::ALL`] order.
pub(crate) fn sources() -> Vec<SourceStats> {
    Source::ALL
        .iter()
        .map(|&src| {
            let slot = &SLOTS[src as usize];
            // Relaxed: counters read as a snapshot.
            SourceStats {
                source: src,
                state: state(src),
                path: path_of(src),
                events: slot.events.load(Ordering::Relaxed),
                raises: slot.raises.load(Ordering::Relaxed),
                last_level: Level::from_index(slot.last_level.load(Ordering::Relaxed) as usize),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_key_finds_keys_across_reads_and_skips_overlong_lines() {
        let path = std::env::temp_dir().join(format!("shrinkalloc-stat-{}", std::process::id()));
        // A line of two reads' length whose tail would read as a line of
        // its own, `inactive_file 1`, were the rest of it not skipped.
        let mut text = "y".repeat(1024);
        text.push_str("inactive_file 1\ninactive_file 4096\n");
        for i in 0..200 {
            text.push_str(&format!("key_{i} {i}\n"));
        }
        text.push_str("total_inactive_file 8192\ngarbage \u{fffd}\nlast 7");
        std::fs::write(&path, &text).unwrap();
        let c = PathBuf::c_path(path.to_str().unwrap().as_bytes()).unwrap();
        assert_eq!(read_key(&c, b"key_0"), Ok(Some(0)));
        assert_eq!(read_key(&c, b"key_150"), Ok(Some(150)), "a key past the first read");
        assert_eq!(read_key(&c, b"inactive_file"), Ok(Some(4096)), "not the tail of the long line");
        assert_eq!(read_key(&c, b"total_inactive_file"), Ok(Some(8192)));
        assert_eq!(read_key(&c, b"last"), Ok(Some(7)), "the last line has no newline");
        assert_eq!(read_key(&c, b"missing"), Ok(None));
        std::fs::remove_file(&path).unwrap();
        let gone = PathBuf::c_path(b"/nonexistent/memory.stat").unwrap();
        assert_eq!(read_key(&gone, b"x"), Err(libc::ENOENT));
    }

    #[test]
    fn source_states_pack_and_unpack() {
        for st in [
            SourceState::NotStarted,
            SourceState::Active,
            SourceState::Off,
            SourceState::Missing,
            SourceState::Denied,
            SourceState::Failed(22),
        ] {
            assert_eq!(SourceState::unpack(st.pack()), st);
        }
        assert_eq!(SourceState::from_errno(libc::EACCES), SourceState::Denied);
        assert_eq!(SourceState::from_errno(libc::ENOENT), SourceState::Missing);
    }
}
