//! Reclaim statistics, declared once: per shrinker, per pass (with what
//! raised it), for the limits, and the pressure sources' own records
//! (`sources.rs`).
//!
//! Each statistics struct is written once, in a `declare_stats!` table
//! whose every line gives a field's doc, name, type, text label and how it
//! renders. The table generates the struct and its [`fields`](ReclaimStats::fields)
//! list; the text (`Display`), the JSON and the C view (`alloc-ffi`'s
//! `stats.rs`) all walk that list, so a field added to the table shows up
//! everywhere or nowhere.
//!
//! Invariant: every counter is a relaxed atomic bumped on a reclaim path
//! (never on the allocation fast path) and never allocates; the recent
//! passes sit in a fixed ring whose slots are written under a per-slot
//! sequence number, so a reader skips a slot caught mid-write instead of
//! waiting. [`stats`] gathers everything into plain values (allocating).

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::counters::{bump, BACKGROUND_WAKES, FAILED_CHARGES, FAILED_MAPS, PANICS, RESERVE_CHARGES, WORKERS_STARTED};
use super::limit;
use super::registry::{self, Entry, ShrinkerHandle};
use super::scope::ScopeFlags;
use super::shrinker::{Level, Needs};
use super::sources::{self, SourceState, Trigger};

/// How one field renders: a number, bytes, time, a flag, a name, counts by
/// name, or a list of records with fields of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// A count.
    Count(u64),
    /// Bytes, or none (`none` in text, `null` in JSON, 0 in the C view).
    Bytes(Option<u64>),
    /// Nanoseconds (microseconds in text).
    Nanos(u64),
    /// Yes or no (the text shows the label in capitals when set).
    Flag(bool),
    /// A name or a state (left out of the C view); none is left out of
    /// the text and is `null` in JSON.
    Text(Option<String>),
    /// Counts by name, in a fixed order (passes by level, by trigger).
    Counts(Vec<(&'static str, u64)>),
    /// Records, each with its own fields; the text shows the last `shown`.
    Records {
        /// The records, oldest first.
        items: Vec<Vec<Field>>,
        /// How many of the last ones the text shows.
        shown: usize,
    },
}

/// One field of a statistics struct: its name (the Rust field, the JSON
/// key), its label in the text (empty: the value alone), its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The Rust field name, also the JSON key.
    pub key: &'static str,
    /// The label the text puts before the value (empty: none).
    pub label: &'static str,
    /// The value.
    pub value: Value,
}

/// Declares a statistics struct from one table. Each line:
/// `/// doc` `name: Type = "text label" => render,` where `render` turns a
/// `&Type` into a [`Value`]. Generates the struct (`#[non_exhaustive]`,
/// public fields in table order) and `fn fields(&self) -> Vec<Field>`.
macro_rules! declare_stats {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $label:literal => $render:path, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl $name {
            /// Every field, in declaration order: what the text, the JSON
            /// and the C view are made of.
            pub fn fields(&self) -> Vec<Field> {
                vec![$( Field { key: stringify!($field), label: $label, value: $render(&self.$field) }, )*]
            }
        }
    };
}

fn count(v: &u64) -> Value {
    Value::Count(*v)
}

fn count_usize(v: &usize) -> Value {
    Value::Count(*v as u64)
}

fn count_u32(v: &u32) -> Value {
    Value::Count(u64::from(*v))
}

fn bytes(v: &usize) -> Value {
    Value::Bytes(Some(*v as u64))
}

fn bytes_u64(v: &u64) -> Value {
    Value::Bytes(Some(*v))
}

fn limit_bytes(v: &Option<usize>) -> Value {
    Value::Bytes(v.map(|b| b as u64))
}

fn nanos(v: &u64) -> Value {
    Value::Nanos(*v)
}

fn flag(v: &bool) -> Value {
    Value::Flag(*v)
}

fn text<T: fmt::Display>(v: &T) -> Value {
    Value::Text(Some(v.to_string()))
}

fn opt_text(v: &Option<String>) -> Value {
    Value::Text(v.clone())
}

fn needs(v: &Needs) -> Value {
    Value::Text(Some(v.name().to_owned()))
}

fn scope_bits(v: &ScopeFlags) -> Value {
    Value::Count(u64::from(v.bits()))
}

fn by_level(v: &[u64; 4]) -> Value {
    Value::Counts((0..4).map(|i| (Level::from_index(i).name(), v[i])).collect())
}

fn by_trigger(v: &[u64; Trigger::COUNT]) -> Value {
    Value::Counts(Trigger::ALL.iter().map(|&t| (t.name(), v[t as usize])).collect())
}

fn all_records<T: Records>(v: &[T]) -> Value {
    Value::Records { items: v.iter().map(Records::fields_of).collect(), shown: usize::MAX }
}

fn last_record<T: Records>(v: &[T]) -> Value {
    Value::Records { items: v.iter().map(Records::fields_of).collect(), shown: 1 }
}

/// A statistics struct that is an element of a list of records.
trait Records {
    fn fields_of(&self) -> Vec<Field>;
}

macro_rules! records {
    ($($t:ty),*) => { $(impl Records for $t { fn fields_of(&self) -> Vec<Field> { self.fields() } })* };
}
records!(ShrinkerStats, SourceStats, PassRecord);

declare_stats! {
    /// One shrinker's statistics, as read at one moment.
    ///
    /// ```
    /// let s = shrinkalloc::reclaim::stats();
    /// for sh in &s.shrinkers {
    ///     println!("{}: freed {} in {} scans", sh.name, sh.objects_freed, sh.scan_calls);
    /// }
    /// ```
    pub struct ShrinkerStats {
        /// The name given at registration.
        name: String = "" => text,
        /// Its declared needs.
        needs: Needs = "needs" => needs,
        /// Its rebuild cost.
        seeks: u32 = "seeks" => count_u32,
        /// Its batch size.
        batch: usize = "batch" => count_usize,
        /// Calls of `count`.
        count_calls: u64 = "count" => count,
        /// Calls of `scan`.
        scan_calls: u64 = "scan" => count,
        /// Objects asked for across all `scan` calls.
        objects_scanned: u64 = "scanned" => count,
        /// Objects `scan` reported freed.
        objects_freed: u64 = "freed" => count,
        /// Times reclaim skipped it because the thread's scope forbade its needs.
        skipped_by_mask: u64 = "skipped" => count,
        /// Times `scan` answered `Stop`.
        stops: u64 = "stops" => count,
        /// Objects owed to it by skipped or cut-short work (`nr_deferred`).
        deferred: u64 = "deferred" => count,
        /// What `count` last reported.
        last_count: u64 = "last count" => count,
        /// Nanoseconds spent in its callbacks.
        time_ns: u64 = "time" => nanos,
        /// Whether a panic disabled it.
        disabled: bool = "disabled" => flag,
    }
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

declare_stats! {
    /// One source's statistics, as read at one moment.
    ///
    /// ```
    /// for s in &shrinkalloc::reclaim::stats().sources {
    ///     println!("{}: {} ({} events, {} raises)", s.source.name(), s.state, s.events, s.raises);
    /// }
    /// ```
    pub struct SourceStats {
        /// Which source.
        source: Trigger = "" => text,
        /// What became of it.
        state: SourceState = "" => text,
        /// The file or directory it watches, if any.
        path: Option<String> = "" => opt_text,
        /// Notifications it delivered (for usage: reads that found the group
        /// past its soft line; for `mmap`: failures seen).
        events: u64 = "events" => count,
        /// Reclaim requests it made.
        raises: u64 = "raises" => count,
        /// The level of its last request.
        last_level: Level = "last" => text,
    }
}

impl ShrinkerHandle {
    /// This shrinker's statistics so far.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{register, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
    /// # struct Nothing;
    /// # impl Shrinker for Nothing {
    /// #     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Empty }
    /// #     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Stop }
    /// # }
    /// let h = register(Nothing, ShrinkerOptions::new("n"));
    /// assert_eq!(h.stats().scan_calls, 0);
    /// ```
    pub fn stats(&self) -> ShrinkerStats {
        ShrinkerStats::of(self.entry())
    }
}

impl SourceStats {
    fn of(source: Trigger) -> Self {
        let (events, raises) = sources::counts(source);
        Self {
            source,
            state: sources::state(source),
            path: sources::path_of(source),
            events,
            raises,
            last_level: sources::last_raise(source).0,
        }
    }
}

declare_stats! {
    /// One finished reclaim pass.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{reclaim, stats, Level};
    /// reclaim(1 << 20, Level::Low);
    /// let last = stats().recent.last().cloned().unwrap();
    /// assert_eq!(last.level, Level::Low);
    /// ```
    pub struct PassRecord {
        /// What started it.
        trigger: Trigger = "" => text,
        /// The level it ran at.
        level: Level = "" => text,
        /// The effective scope mask it ran under.
        scope: ScopeFlags = "scope" => scope_bits,
        /// Bytes it set out to free.
        target_bytes: usize = "target" => bytes,
        /// Bytes of committed memory it measured freed.
        freed_bytes: usize = "freed" => bytes,
        /// How long it took.
        duration_ns: u64 = "in" => nanos,
    }
}

impl Copy for PassRecord {}

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

declare_stats! {
    /// Everything reclaim counts, read at one moment. Prints as text.
    ///
    /// ```
    /// let s = shrinkalloc::reclaim::stats();
    /// assert_eq!(s.passes_by_level.iter().sum::<u64>(), s.passes_by_trigger.iter().sum::<u64>());
    /// println!("{s}");
    /// ```
    pub struct ReclaimStats {
        /// Bytes the allocator had committed when read.
        committed: usize = "committed" => bytes,
        /// The soft limit in force (explicit, or derived from the hard limit).
        soft_limit: Option<usize> = "soft limit" => limit_bytes,
        /// The hard limit in force.
        hard_limit: Option<usize> = "hard limit" => limit_bytes,
        /// Passes run, by level (`none`, `low`, `medium`, `critical`).
        passes_by_level: [u64; 4] = "passes by level" => by_level,
        /// Passes run, by trigger, indexed as [`Trigger::ALL`].
        passes_by_trigger: [u64; Trigger::COUNT] = "passes by trigger" => by_trigger,
        /// Committed bytes all passes measured freed.
        bytes_freed: u64 = "freed" => bytes_u64,
        /// Nanoseconds spent in passes.
        pass_time_ns: u64 = "pass time" => nanos,
        /// The longest pass, in nanoseconds.
        max_pass_ns: u64 = "longest pass" => nanos,
        /// Allocations refused at the hard limit after reclaim.
        failed_charges: u64 = "charges failed" => count,
        /// Allocations made inside reclaim that used the reserve above the hard limit.
        reserve_charges: u64 = "reserve used" => count,
        /// Requests made to the background reclaimers.
        background_wakes: u64 = "background wakes" => count,
        /// Background reclaimer threads started (fork children start their own).
        workers_started: u64 = "reclaimers started" => count,
        /// Shrinker callbacks that panicked.
        panics: u64 = "panics" => count,
        /// Mappings that still failed after reclaim and retries.
        failed_maps: u64 = "mmaps failed" => count,
        /// Reclaim lockdep reports printed (`crate::lockdep`).
        lockdep_reports: u64 = "lockdep reports" => count,
        /// Every pressure source: what became of it, what it delivered.
        sources: Vec<SourceStats> = "source" => all_records,
        /// Every registered shrinker, in registration order.
        shrinkers: Vec<ShrinkerStats> = "shrinker" => all_records,
        /// The last passes, oldest first (the text shows the last one).
        recent: Vec<PassRecord> = "last pass" => last_record,
    }
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
        lockdep_reports: crate::lockdep::reports(),
        sources: Trigger::SOURCES.iter().map(|&s| SourceStats::of(s)).collect(),
        recent: recent(),
        shrinkers,
    }
}

/// How a value reads in the text.
struct Shown<'a>(&'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Count(n) => write!(f, "{n}"),
            Value::Bytes(b) => write!(f, "{}", Bytes(b.map(|b| b as usize))),
            Value::Nanos(ns) => write!(f, "{} us", ns / 1000),
            Value::Flag(b) => f.write_str(if *b { "yes" } else { "no" }),
            Value::Text(t) => f.write_str(t.as_deref().unwrap_or("none")),
            Value::Counts(c) => {
                for (i, (name, n)) in c.iter().enumerate() {
                    write!(f, "{}{name} {n}", if i == 0 { "" } else { ", " })?;
                }
                Ok(())
            }
            Value::Records { items, .. } => write!(f, "{} records", items.len()),
        }
    }
}

/// Writes `fields` as `label value` pairs joined by `, ` (a value alone
/// where the label is empty; a text that is none left out; a flag as its
/// label in capitals when set, left out when not).
fn write_pairs(f: &mut fmt::Formatter<'_>, fields: &[Field]) -> fmt::Result {
    let shown = fields.iter().filter(|x| !matches!(x.value, Value::Text(None) | Value::Flag(false)));
    for (i, x) in shown.enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        match (x.label, &x.value) {
            (label, Value::Flag(_)) => write!(f, "{sep}{}", label.to_uppercase())?,
            ("", v) => write!(f, "{sep}{}", Shown(v))?,
            (label, v) => write!(f, "{sep}{label} {}", Shown(v))?,
        }
    }
    Ok(())
}

/// Writes the scalar fields gathered in `run` as one line after `prefix`,
/// which becomes the indent of the lines that follow.
fn flush(f: &mut fmt::Formatter<'_>, run: &mut Vec<Field>, prefix: &mut &str) -> fmt::Result {
    if !run.is_empty() {
        f.write_str(prefix)?;
        write_pairs(f, run)?;
        writeln!(f)?;
        run.clear();
    }
    *prefix = "  ";
    Ok(())
}

/// The text of a statistics struct: the scalar fields as `label value`
/// pairs on lines of their own, broken by each list: counts by name on one
/// line (`  label: a 1, b 2`), records one a line (`  label FIRST: rest`).
fn write_text(f: &mut fmt::Formatter<'_>, first: &str, fields: &[Field]) -> fmt::Result {
    let mut run: Vec<Field> = Vec::new();
    let mut prefix = first;
    for x in fields {
        match &x.value {
            Value::Counts(_) => {
                flush(f, &mut run, &mut prefix)?;
                writeln!(f, "  {}: {}", x.label, Shown(&x.value))?;
            }
            Value::Records { items, shown } => {
                flush(f, &mut run, &mut prefix)?;
                for rec in &items[items.len().saturating_sub(*shown)..] {
                    let (head, rest) = rec.split_first().map_or((None, &rec[..]), |(h, r)| (Some(h), r));
                    write!(f, "  {}", x.label)?;
                    if let Some(h) = head {
                        write!(f, " {}", Shown(&h.value))?;
                    }
                    f.write_str(": ")?;
                    write_pairs(f, rest)?;
                    writeln!(f)?;
                }
            }
            _ => run.push(x.clone()),
        }
    }
    flush(f, &mut run, &mut prefix)
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
        write_text(f, "reclaim: ", &self.fields())
    }
}
