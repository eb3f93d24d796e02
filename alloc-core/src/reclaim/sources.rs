//! What raises a reclaim pass ([`Trigger`]: the allocator's own three
//! causes and the nine pressure sources), and each source's record: what
//! became of it when it was set up, the file it watches, the events it
//! delivered and the requests it made. The level logic that turns an event
//! into a request lives in `pressure.rs`; the cgroup usage in `usage.rs`.
//!
//! Invariant: nothing here allocates or takes a lock (every record is in
//! atomics, a path under a per-slot sequence number), so the allocator's
//! slow paths, the monitor and a `fork()` child may all write it; only
//! `path_of` allocates, for a reader of the statistics (`stats.rs`).

use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use super::shrinker::Level;

/// What raised a reclaim pass: the allocator's own limits (`Direct`,
/// `Background`), an explicit call, or a pressure source from outside the
/// allocator's accounting. The sources ([`Trigger::SOURCES`]) also keep a
/// record of their own ([`SourceStats`](super::SourceStats)); `Cgroup` and `Monitor` are
/// sources that never raise a pass themselves (discovery, and the thread
/// that watches the others). Passes raised by a source run in the
/// background reclaimers, except `MmapFailure` and a `CgroupUsage` pass at
/// the group's hard line, which run in the allocating thread.
///
/// ```
/// use shrinkalloc::reclaim::{reclaim, stats, Level, Trigger};
/// reclaim(1 << 20, Level::Low);
/// assert_eq!(stats().recent.last().unwrap().trigger, Trigger::Explicit);
/// assert_eq!(Trigger::SystemdWatch.name(), "systemd watch");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// An allocation that would cross the hard limit, in its own thread.
    Direct,
    /// A library reclaimer woken by the soft limit or by owed work.
    Background,
    /// A call to `reclaim()`.
    Explicit,
    /// Discovery of the memory cgroup and its limit (never raises).
    Cgroup,
    /// The monitor thread that watches the event sources (never raises).
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

/// The pressure sources' name for [`Trigger`]: one enum says what raised
/// a pass and which source a record describes.
pub type Source = Trigger;

/// The first source in [`Trigger::ALL`]; the allocator's own triggers come before.
const FIRST_SOURCE: usize = Trigger::Cgroup as usize;
/// How many sources there are.
const SOURCE_COUNT: usize = Trigger::COUNT - FIRST_SOURCE;

impl Trigger {
    /// How many triggers there are.
    pub const COUNT: usize = 12;

    /// Every trigger, indexed by its value (as `passes_by_trigger` is).
    ///
    /// ```
    /// use shrinkalloc::reclaim::Trigger;
    /// assert!(Trigger::ALL.iter().enumerate().all(|(i, &t)| t as usize == i));
    /// ```
    pub const ALL: [Trigger; Trigger::COUNT] = [
        Trigger::Direct,
        Trigger::Background,
        Trigger::Explicit,
        Trigger::Cgroup,
        Trigger::Monitor,
        Trigger::CgroupUsage,
        Trigger::V1Threshold,
        Trigger::V1PressureLevel,
        Trigger::V2Events,
        Trigger::Psi,
        Trigger::SystemdWatch,
        Trigger::MmapFailure,
    ];

    /// The pressure sources, in the order the statistics list them.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{stats, Trigger};
    /// assert_eq!(Trigger::SOURCES.len(), 9);
    /// assert_eq!(stats().sources.iter().map(|s| s.source).collect::<Vec<_>>(), Trigger::SOURCES);
    /// ```
    pub const SOURCES: [Trigger; SOURCE_COUNT] = {
        // The tail of `ALL`, from the first source on: one list to keep.
        let mut out = [Trigger::Cgroup; SOURCE_COUNT];
        let mut i = 0;
        while i < SOURCE_COUNT {
            out[i] = Trigger::ALL[FIRST_SOURCE + i];
            i += 1;
        }
        out
    };

    /// The trigger's name in the statistics (text and JSON keys alike).
    ///
    /// ```
    /// use shrinkalloc::reclaim::Trigger;
    /// assert_eq!(Trigger::Direct.name(), "direct");
    /// assert_eq!(Trigger::V1Threshold.name(), "v1 thresholds");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Trigger::Direct => "direct",
            Trigger::Background => "background",
            Trigger::Explicit => "explicit",
            Trigger::Cgroup => "cgroup",
            Trigger::Monitor => "monitor",
            Trigger::CgroupUsage => "cgroup usage",
            Trigger::V1Threshold => "v1 thresholds",
            Trigger::V1PressureLevel => "v1 pressure_level",
            Trigger::V2Events => "v2 memory.events",
            Trigger::Psi => "psi",
            Trigger::SystemdWatch => "systemd watch",
            Trigger::MmapFailure => "mmap failure",
        }
    }

    /// Whether it is one of the pressure sources (with a record of its own).
    ///
    /// ```
    /// use shrinkalloc::reclaim::Trigger;
    /// assert!(Trigger::Psi.is_source() && !Trigger::Direct.is_source());
    /// ```
    pub const fn is_source(self) -> bool {
        self as usize >= FIRST_SOURCE
    }

    /// The trigger of index `i` (out of range: `Explicit`).
    pub(crate) const fn from_index(i: usize) -> Self {
        if i < Trigger::COUNT {
            Trigger::ALL[i]
        } else {
            Trigger::Explicit
        }
    }

    /// The trigger of the background pass that pays what a pass of this
    /// trigger owes: a source stays named; the allocator's own passes are
    /// paid as `Background`.
    pub(crate) const fn owed(self) -> Self {
        match self {
            Trigger::Direct | Trigger::Explicit => Trigger::Background,
            t => t,
        }
    }

    /// The source's record slot (the allocator's own triggers share slot
    /// 0 with `Cgroup`; they never reach here).
    const fn slot(self) -> usize {
        (self as usize).saturating_sub(FIRST_SOURCE)
    }
}

impl core::fmt::Display for Trigger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
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

struct Slot {
    state: AtomicU32,
    events: AtomicU64,
    raises: AtomicU64,
    last_level: AtomicU8,
    last_raise_ms: AtomicU64,
}

static SLOTS: [Slot; SOURCE_COUNT] = [const {
    Slot {
        state: AtomicU32::new(0),
        events: AtomicU64::new(0),
        raises: AtomicU64::new(0),
        last_level: AtomicU8::new(0),
        last_raise_ms: AtomicU64::new(0),
    }
}; SOURCE_COUNT];
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

static PATHS: [PathSlot; SOURCE_COUNT] = [const {
    PathSlot { seq: AtomicU32::new(0), len: AtomicUsize::new(0), bytes: [const { AtomicU8::new(0) }; PATH_SHOWN] }
}; SOURCE_COUNT];

/// Records what became of `src`.
pub(crate) fn set_state(src: Source, state: SourceState) {
    // Relaxed: statistics; nothing is published through it.
    SLOTS[src.slot()].state.store(state.pack(), Ordering::Relaxed);
}

/// The state of `src`. A failed `mmap` needs no set-up: always active.
pub(crate) fn state(src: Source) -> SourceState {
    if src == Source::MmapFailure {
        return SourceState::Active;
    }
    // Relaxed: see `set_state`.
    SourceState::unpack(SLOTS[src.slot()].state.load(Ordering::Relaxed))
}

/// Records the path `src` watches (a NUL is dropped; kept to 512 bytes).
/// One writer per slot: the limits' set-up, then the monitor's.
pub(crate) fn set_path(src: Source, path: &[u8]) {
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    let slot = &PATHS[src.slot()];
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
pub(crate) fn path_of(src: Source) -> Option<String> {
    let slot = &PATHS[src.slot()];
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
    // Relaxed: a statistics counter; nothing is published through it.
    SLOTS[src.slot()].events.fetch_add(1, Ordering::Relaxed);
}

/// When `src` last raised, and at what level: `(level, ms)`.
pub(crate) fn last_raise(src: Source) -> (Level, u64) {
    let slot = &SLOTS[src.slot()];
    // Relaxed: rate limiting; two racing raisers may both ask, harmlessly.
    (Level::from_index(slot.last_level.load(Ordering::Relaxed) as usize), slot.last_raise_ms.load(Ordering::Relaxed))
}

/// The notifications `src` delivered and the requests it made.
pub(crate) fn counts(src: Source) -> (u64, u64) {
    let slot = &SLOTS[src.slot()];
    // Relaxed: counters read as a snapshot.
    (slot.events.load(Ordering::Relaxed), slot.raises.load(Ordering::Relaxed))
}

/// Records a request `src` made at `level`, at `now` (ms).
pub(crate) fn note_raise(src: Source, level: Level, now: u64) {
    let slot = &SLOTS[src.slot()];
    // Relaxed: see `last_raise`.
    slot.last_level.store(level as u8, Ordering::Relaxed);
    slot.last_raise_ms.store(now, Ordering::Relaxed);
    slot.raises.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn every_source_has_its_own_slot() {
        let slots: Vec<usize> = Trigger::SOURCES.iter().map(|s| s.slot()).collect();
        assert_eq!(slots, (0..SOURCE_COUNT).collect::<Vec<_>>());
        assert!(Trigger::ALL[..FIRST_SOURCE].iter().all(|t| !t.is_source()));
    }
}
