//! Reclaim statistics: per shrinker, per pass (with the trigger or pressure
//! source that raised it), for the limits, and the pressure sources' own
//! table (`pressure.rs`), printed one line per source.
//!
//! Invariant: every counter is a relaxed atomic bumped on a reclaim path
//! (never on the allocation fast path) and never allocates; the recent
//! passes sit in a fixed ring whose slots are written under a per-slot
//! sequence number, so a reader skips a slot caught mid-write instead of
//! waiting. [`stats`] gathers everything into plain values (allocating) for
//! Rust callers and prints as text through `Display`.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::limit;
use super::pressure::{SourceState, SourceStats};
use super::registry::{self, Entry};
use super::scope::ScopeFlags;
use super::shrinker::{Level, Needs};

/// What started a reclaim pass: the allocator's own limits, an explicit
/// call, or a pressure source from outside (`Source`). Passes raised by a
/// source run in the background reclaimers, except `MmapFailure` and a
/// `CgroupUsage` pass at the group's hard line, which run in the
/// allocating thread.
///
/// ```
/// use shrinkalloc::reclaim::Trigger;
/// assert_eq!(Trigger::Direct.name(), "direct");
/// assert_eq!(Trigger::ALL[Trigger::Psi as usize], Trigger::Psi);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// An allocation that would cross the hard limit, in its own thread.
    Direct,
    /// A library reclaimer woken by the soft limit or by owed work.
    Background,
    /// A call to `reclaim()`.
    Explicit,
    /// The memory cgroup's whole usage near its limit.
    CgroupUsage,
    /// A v1 `memory.usage_in_bytes` threshold crossed.
    V1Threshold,
    /// A v1 `memory.pressure_level` notification.
    V1PressureLevel,
    /// A v2 `memory.events` counter grew (`high`, `max`, `oom`).
    V2Events,
    /// A PSI trigger fired.
    Psi,
    /// systemd's `MEMORY_PRESSURE_WATCH` reported pressure.
    SystemdWatch,
    /// `mmap` failed with `ENOMEM`.
    MmapFailure,
}

impl Trigger {
    /// How many triggers there are.
    pub const COUNT: usize = 10;

    /// Every trigger, indexed by its value (as `passes_by_trigger` is).
    pub const ALL: [Trigger; Trigger::COUNT] = [
        Trigger::Direct,
        Trigger::Background,
        Trigger::Explicit,
        Trigger::CgroupUsage,
        Trigger::V1Threshold,
        Trigger::V1PressureLevel,
        Trigger::V2Events,
        Trigger::Psi,
        Trigger::SystemdWatch,
        Trigger::MmapFailure,
    ];

    /// The trigger's lower-case name.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::Trigger::Background.name(), "background");
    /// assert_eq!(shrinkalloc::reclaim::Trigger::MmapFailure.name(), "mmap-failure");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Trigger::Direct => "direct",
            Trigger::Background => "background",
            Trigger::Explicit => "explicit",
            Trigger::CgroupUsage => "cgroup-usage",
            Trigger::V1Threshold => "v1-threshold",
            Trigger::V1PressureLevel => "v1-pressure-level",
            Trigger::V2Events => "v2-events",
            Trigger::Psi => "psi",
            Trigger::SystemdWatch => "systemd",
            Trigger::MmapFailure => "mmap-failure",
        }
    }

    const fn from_index(i: usize) -> Self {
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
}

/// Counters one shrinker's calls bump.
#[derive(Default)]
pub(crate) struct ShrinkerCounters {
    pub(crate) count_calls: AtomicU64,
    pub(crate) scan_calls: AtomicU64,
    pub(crate) objects_scanned: AtomicU64,
    pub(crate) objects_freed: AtomicU64,
    pub(crate) skipped_by_mask: AtomicU64,
    pub(crate) stops: AtomicU64,
    pub(crate) time_ns: AtomicU64,
    pub(crate) panics: AtomicU64,
}

/// Adds `n` to a statistics counter (relaxed: counters order nothing).
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One shrinker's statistics, as read at one moment.
///
/// ```
/// let s = shrinkalloc::reclaim::stats();
/// for sh in &s.shrinkers {
///     println!("{}: freed {} in {} scans", sh.name, sh.objects_freed, sh.scan_calls);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShrinkerStats {
    /// The name given at registration.
    pub name: String,
    /// Its declared needs.
    pub needs: Needs,
    /// Its rebuild cost.
    pub seeks: u32,
    /// Its batch size.
    pub batch: usize,
    /// Calls of `count`.
    pub count_calls: u64,
    /// Calls of `scan`.
    pub scan_calls: u64,
    /// Objects asked for across all `scan` calls.
    pub objects_scanned: u64,
    /// Objects `scan` reported freed.
    pub objects_freed: u64,
    /// Times reclaim skipped it because the thread's scope forbade its needs.
    pub skipped_by_mask: u64,
    /// Times `scan` answered `Stop`.
    pub stops: u64,
    /// Objects owed to it by skipped or cut-short work (`nr_deferred`).
    pub deferred: u64,
    /// What `count` last reported.
    pub last_count: u64,
    /// Nanoseconds spent in its callbacks.
    pub time_ns: u64,
    /// Whether a panic disabled it.
    pub disabled: bool,
}

impl ShrinkerStats {
    pub(crate) fn of(e: &Entry) -> Self {
        // Relaxed: counters are independent tallies, read as a snapshot.
        let c = &e.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Self {
            name: e.options.name().to_owned(),
            needs: e.options.get_needs(),
            seeks: e.options.get_seeks(),
            batch: e.options.get_batch(),
            count_calls: get(&c.count_calls),
            scan_calls: get(&c.scan_calls),
            objects_scanned: get(&c.objects_scanned),
            objects_freed: get(&c.objects_freed),
            skipped_by_mask: get(&c.skipped_by_mask),
            stops: get(&c.stops),
            deferred: e.deferred.load(Ordering::Relaxed) as u64,
            last_count: e.last_count.load(Ordering::Relaxed) as u64,
            time_ns: get(&c.time_ns),
            disabled: e.is_disabled(),
        }
    }
}

/// One finished reclaim pass.
///
/// ```
/// use shrinkalloc::reclaim::{reclaim, stats, Level};
/// reclaim(1 << 20, Level::Low);
/// let last = stats().recent.last().copied().unwrap();
/// assert_eq!(last.level, Level::Low);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassRecord {
    /// The level it ran at.
    pub level: Level,
    /// What started it.
    pub trigger: Trigger,
    /// The effective scope mask it ran under.
    pub scope: ScopeFlags,
    /// Bytes it set out to free.
    pub target_bytes: usize,
    /// Bytes of committed memory it measured freed.
    pub freed_bytes: usize,
    /// How long it took.
    pub duration_ns: u64,
}

const RING: usize = 32;

struct Slot {
    /// Odd while being written; the pass number times two once written.
    seq: AtomicU64,
    packed: AtomicU64,
    target: AtomicUsize,
    freed: AtomicUsize,
    duration_ns: AtomicU64,
}

static RECENT: [Slot; RING] = [const {
    Slot {
        seq: AtomicU64::new(0),
        packed: AtomicU64::new(0),
        target: AtomicUsize::new(0),
        freed: AtomicUsize::new(0),
        duration_ns: AtomicU64::new(0),
    }
}; RING];
static PASSES: AtomicU64 = AtomicU64::new(0);
static BY_LEVEL: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static BY_TRIGGER: [AtomicU64; Trigger::COUNT] = [const { AtomicU64::new(0) }; Trigger::COUNT];
static BYTES_FREED: AtomicU64 = AtomicU64::new(0);
static PASS_NS: AtomicU64 = AtomicU64::new(0);
static MAX_PASS_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static FAILED_CHARGES: AtomicU64 = AtomicU64::new(0);
pub(crate) static RESERVE_CHARGES: AtomicU64 = AtomicU64::new(0);
pub(crate) static BACKGROUND_WAKES: AtomicU64 = AtomicU64::new(0);
pub(crate) static WORKERS_STARTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static PANICS: AtomicU64 = AtomicU64::new(0);
pub(crate) static FAILED_MAPS: AtomicU64 = AtomicU64::new(0);

/// Records a finished pass in the totals and the ring of recent passes.
pub(crate) fn record_pass(p: &PassRecord) {
    bump(&BY_LEVEL[p.level as usize], 1);
    bump(&BY_TRIGGER[p.trigger as usize], 1);
    bump(&BYTES_FREED, p.freed_bytes as u64);
    bump(&PASS_NS, p.duration_ns);
    MAX_PASS_NS.fetch_max(p.duration_ns, Ordering::Relaxed);
    // Relaxed: the number only picks a slot; the slot's seq orders its fields.
    let n = PASSES.fetch_add(1, Ordering::Relaxed);
    let slot = &RECENT[n as usize % RING];
    // A seqlock: the fence orders the odd seq before the field stores, the
    // final Release orders them before the even seq; both pair with the
    // Acquire load and fence in `recent`, so a reader that sees the same
    // even seq before and after read whole fields.
    slot.seq.store(n * 2 + 1, Ordering::Relaxed);
    core::sync::atomic::fence(Ordering::Release);
    let packed = p.level as u64 | (p.trigger as u64) << 8 | u64::from(p.scope.bits()) << 16;
    slot.packed.store(packed, Ordering::Relaxed);
    slot.target.store(p.target_bytes, Ordering::Relaxed);
    slot.freed.store(p.freed_bytes, Ordering::Relaxed);
    slot.duration_ns.store(p.duration_ns, Ordering::Relaxed);
    slot.seq.store(n * 2 + 2, Ordering::Release);
}

/// The recent passes, oldest first; slots caught mid-write are left out.
fn recent() -> Vec<PassRecord> {
    let total = PASSES.load(Ordering::Relaxed);
    let first = total.saturating_sub(RING as u64);
    (first..total)
        .filter_map(|n| {
            let slot = &RECENT[n as usize % RING];
            let seq = slot.seq.load(Ordering::Acquire);
            if seq != n * 2 + 2 {
                return None;
            }
            let packed = slot.packed.load(Ordering::Relaxed);
            let rec = PassRecord {
                level: Level::from_index((packed & 0xff) as usize),
                trigger: Trigger::from_index((packed >> 8 & 0xff) as usize),
                scope: ScopeFlags::from_bits_truncate((packed >> 16) as u32),
                target_bytes: slot.target.load(Ordering::Relaxed),
                freed_bytes: slot.freed.load(Ordering::Relaxed),
                duration_ns: slot.duration_ns.load(Ordering::Relaxed),
            };
            // Acquire: the fields were read before this second seq check.
            core::sync::atomic::fence(Ordering::Acquire);
            (slot.seq.load(Ordering::Relaxed) == seq).then_some(rec)
        })
        .collect()
}

/// Everything reclaim counts, read at one moment. Prints as text.
///
/// ```
/// let s = shrinkalloc::reclaim::stats();
/// assert_eq!(s.passes_by_level.iter().sum::<u64>(), s.passes_by_trigger.iter().sum::<u64>());
/// println!("{s}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReclaimStats {
    /// The soft limit in force (explicit, or derived from the hard limit).
    pub soft_limit: Option<usize>,
    /// The hard limit in force.
    pub hard_limit: Option<usize>,
    /// Bytes the allocator had committed when read.
    pub committed: usize,
    /// Passes run, by level (`none`, `low`, `medium`, `critical`).
    pub passes_by_level: [u64; 4],
    /// Passes run, by trigger, indexed as [`Trigger::ALL`].
    pub passes_by_trigger: [u64; Trigger::COUNT],
    /// Committed bytes all passes measured freed.
    pub bytes_freed: u64,
    /// Nanoseconds spent in passes.
    pub pass_time_ns: u64,
    /// The longest pass, in nanoseconds.
    pub max_pass_ns: u64,
    /// Allocations refused at the hard limit after reclaim.
    pub failed_charges: u64,
    /// Allocations made inside reclaim that used the reserve above the hard limit.
    pub reserve_charges: u64,
    /// Requests made to the background reclaimers.
    pub background_wakes: u64,
    /// Background reclaimer threads started (fork children start their own).
    pub workers_started: u64,
    /// Shrinker callbacks that panicked.
    pub panics: u64,
    /// Mappings that still failed after reclaim and retries.
    pub failed_maps: u64,
    /// Every pressure source: what became of it, what it delivered.
    pub sources: Vec<SourceStats>,
    /// The last passes, oldest first.
    pub recent: Vec<PassRecord>,
    /// Every registered shrinker, in registration order.
    pub shrinkers: Vec<ShrinkerStats>,
}

/// Reads all reclaim statistics.
///
/// ```
/// let s = shrinkalloc::reclaim::stats();
/// assert!(s.to_string().starts_with("reclaim:"));
/// ```
pub fn stats() -> ReclaimStats {
    // Relaxed: counters are independent tallies, read as a snapshot.
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let limits = limit::current();
    let shrinkers =
        registry::snapshot().map(|list| list.iter().map(|e| ShrinkerStats::of(e)).collect()).unwrap_or_default();
    ReclaimStats {
        soft_limit: limits.soft(),
        hard_limit: limits.hard(),
        committed: crate::stats::committed(),
        passes_by_level: core::array::from_fn(|i| get(&BY_LEVEL[i])),
        passes_by_trigger: core::array::from_fn(|i| get(&BY_TRIGGER[i])),
        bytes_freed: get(&BYTES_FREED),
        pass_time_ns: get(&PASS_NS),
        max_pass_ns: get(&MAX_PASS_NS),
        failed_charges: get(&FAILED_CHARGES),
        reserve_charges: get(&RESERVE_CHARGES),
        background_wakes: get(&BACKGROUND_WAKES),
        workers_started: get(&WORKERS_STARTED),
        panics: get(&PANICS),
        failed_maps: get(&FAILED_MAPS),
        sources: super::pressure::sources(),
        recent: recent(),
        shrinkers,
    }
}

/// One line per source that is anything but "not started", each saying
/// once what it watches, or why it is missing.
fn write_sources(f: &mut fmt::Formatter<'_>, sources: &[SourceStats]) -> fmt::Result {
    for s in sources.iter().filter(|s| s.state != SourceState::NotStarted || s.events > 0) {
        write!(f, "  source {}: {}", s.source.name(), s.state)?;
        if let Some(p) = &s.path {
            write!(f, " {p}")?;
        }
        if s.events > 0 || s.raises > 0 {
            write!(f, ", events {}, raises {}, last {}", s.events, s.raises, s.last_level)?;
        }
        writeln!(f)?;
    }
    Ok(())
}

struct Bytes(Option<usize>);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(b) if b >= 1 << 20 => write!(f, "{:.1} MiB", b as f64 / (1 << 20) as f64),
            Some(b) => write!(f, "{b} B"),
        }
    }
}

impl fmt::Display for ReclaimStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "reclaim: committed {}, soft limit {}, hard limit {}",
            Bytes(Some(self.committed)),
            Bytes(self.soft_limit),
            Bytes(self.hard_limit)
        )?;
        write!(f, "  passes:")?;
        for (i, n) in self.passes_by_level.iter().enumerate() {
            write!(f, " {} {n},", Level::from_index(i))?;
        }
        for (i, n) in self.passes_by_trigger.iter().enumerate() {
            // The allocator's own triggers always; sources when they raised.
            if i < 3 || *n > 0 {
                write!(f, " {} {n},", Trigger::from_index(i).name())?;
            }
        }
        writeln!(
            f,
            " freed {}, {} us total, {} us max",
            Bytes(Some(self.bytes_freed as usize)),
            self.pass_time_ns / 1000,
            self.max_pass_ns / 1000
        )?;
        writeln!(
            f,
            "  charges failed {}, reserve used {}, background wakes {}, reclaimers started {}, panics {}, \
             mmaps failed {}",
            self.failed_charges,
            self.reserve_charges,
            self.background_wakes,
            self.workers_started,
            self.panics,
            self.failed_maps
        )?;
        write_sources(f, &self.sources)?;
        for s in &self.shrinkers {
            writeln!(
                f,
                "  shrinker {:?} needs {} seeks {} batch {}: count {} scan {} scanned {} freed {} \
                 skipped {} stops {} deferred {} last count {} {} us{}",
                s.name,
                s.needs.name(),
                s.seeks,
                s.batch,
                s.count_calls,
                s.scan_calls,
                s.objects_scanned,
                s.objects_freed,
                s.skipped_by_mask,
                s.stops,
                s.deferred,
                s.last_count,
                s.time_ns / 1000,
                if s.disabled { " DISABLED" } else { "" }
            )?;
        }
        if let Some(p) = self.recent.last() {
            writeln!(
                f,
                "  last pass: {} {} scope {} target {} freed {} in {} us",
                p.trigger.name(),
                p.level,
                p.scope.bits(),
                Bytes(Some(p.target_bytes)),
                Bytes(Some(p.freed_bytes)),
                p.duration_ns / 1000
            )?;
        }
        Ok(())
    }
}
