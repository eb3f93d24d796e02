//! Every `SHRINKALLOC_*` environment variable in one table ([`VARS`]): name,
//! kind (a number with its default and range, a byte limit, or one of a few
//! words), and meaning. The allocator core's tunables ([`Opt`]) are read
//! once, on the first slow-path allocation of the process; the other
//! variables are read through [`env_number`] and [`env_choice`] where they
//! are used. A bad value is reported once on stderr and ignored, and so is
//! a `SHRINKALLOC_*` variable the table does not know (a misspelt name would
//! otherwise be silently without effect). The README's options table says
//! the same; a test holds them together.
//!
//! ```
//! use shrinkalloc::options::{get, set, Opt};
//! set(Opt::PurgeDelayMs, 250);
//! assert_eq!(get(Opt::PurgeDelayMs), 250);
//! ```

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::os;

/// One tunable of the allocator core, settable from Rust too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    /// Milliseconds a free page stays committed before it is purged.
    PurgeDelayMs,
    /// Empty segments (4 MiB each) kept mapped for reuse, per page kind.
    SegmentCache,
    /// Bytes of freed huge blocks kept mapped for reuse.
    HugeCacheBytes,
}

impl Opt {
    const ALL: [Opt; 3] = [Opt::PurgeDelayMs, Opt::SegmentCache, Opt::HugeCacheBytes];

    /// The variable that sets it.
    const fn var(self) -> Var {
        match self {
            Opt::PurgeDelayMs => Var::PurgeDelayMs,
            Opt::SegmentCache => Var::SegmentCache,
            Opt::HugeCacheBytes => Var::HugeCache,
        }
    }

    /// Its default and its largest value, from [`VARS`].
    const fn range(self) -> (usize, usize) {
        match VARS[self.var() as usize].kind {
            Kind::Number { default, max } => (default, max),
            _ => panic!("an Opt is a number"),
        }
    }
}

/// Every environment variable the library reads, in [`VARS`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// `SHRINKALLOC_PURGE_DELAY_MS`.
    PurgeDelayMs,
    /// `SHRINKALLOC_SEGMENT_CACHE`.
    SegmentCache,
    /// `SHRINKALLOC_HUGE_CACHE`.
    HugeCache,
    /// `SHRINKALLOC_SOFT_LIMIT`.
    SoftLimit,
    /// `SHRINKALLOC_HARD_LIMIT`.
    HardLimit,
    /// `SHRINKALLOC_CGROUP`.
    Cgroup,
    /// `SHRINKALLOC_MONITOR`.
    Monitor,
    /// `SHRINKALLOC_STATS` (read by the C library at exit).
    Stats,
    /// `SHRINKALLOC_STATS_FORMAT`.
    StatsFormat,
    /// `SHRINKALLOC_LOCKDEP`.
    Lockdep,
}

/// How a variable's text is read.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Digits with an optional binary unit (`64K`, `512M`, `2G`), at most
    /// `max`; `default` when unset.
    Number {
        /// The value when the variable is unset.
        default: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// A byte count like a number, with no fixed default: unset, the value
    /// is derived (from the memory cgroup, or the other limit); `0` is none.
    Limit,
    /// One of these words; the first is the default.
    Choice(&'static [&'static str]),
}

/// One row of the table.
#[derive(Debug)]
pub struct VarSpec {
    /// Which variable.
    pub var: Var,
    /// Its name in the environment.
    pub name: &'static str,
    /// How its value is read.
    pub kind: Kind,
    /// What it does, in one line.
    pub doc: &'static str,
}

/// Every variable, indexed by [`Var`].
pub const VARS: [VarSpec; 10] = [
    // 50 ms rather than 1 s: a program's free pages and cached huge blocks
    // stop counting against its footprint soon after it stops using them
    // (in benches/programs, peak RSS with 1 s / 250 ms / 50 ms: redis-server
    // 66 / 66 / 60-61.5 MiB, mimalloc 61; CPython's test slice 52-54 / 49 /
    // 42-49). A program that frees and allocates again within the delay
    // still reuses its pages without faults; the decay tick, every quarter
    // of the delay, walks only the segments where a page became free or
    // was queued for its owner (`purge_pass`). mimalloc 2.1 purges after
    // 10 ms.
    VarSpec {
        var: Var::PurgeDelayMs,
        name: "SHRINKALLOC_PURGE_DELAY_MS",
        kind: Kind::Number { default: 50, max: 3_600_000 },
        doc: "milliseconds a free page stays committed before it is returned to the OS",
    },
    VarSpec {
        var: Var::SegmentCache,
        name: "SHRINKALLOC_SEGMENT_CACHE",
        kind: Kind::Number { default: 4, max: 1024 },
        doc: "empty 4 MiB segments kept mapped per page kind (more for one purge delay, purged)",
    },
    // 128 MiB rather than 256: within the purge delay the cache keeps what
    // it holds resident, and a freed big buffer is mostly wanted again by
    // the next request of about its size, which the newest blocks serve
    // (the cache makes room by unmapping its oldest). On the harness's
    // `large` (20 live buffers of 5-25 MiB, 2 threads; interleaved runs):
    // 256 / 128 / 96 / 64 MiB gave peak RSS 45 / 37.4 / 34.1 / 32.3 MiB at
    // 22k / 77k / 118k / 183k page faults and 0.05 / 0.13 / 0.20 / 0.28 s
    // of CPU (jemalloc 33.4 MiB at 697k faults, 0.9 s; tcmalloc 230 MiB,
    // 0.12-0.30 s): 96 MiB was within 1.2x of tcmalloc's time only on
    // some runs.
    VarSpec {
        var: Var::HugeCache,
        name: "SHRINKALLOC_HUGE_CACHE",
        kind: Kind::Number { default: 128 << 20, max: 1 << 40 },
        doc: "bytes freed huge blocks keep committed for reuse per four threads allocating at once (1-4 times; four times that of address space)",
    },
    VarSpec {
        var: Var::SoftLimit,
        name: "SHRINKALLOC_SOFT_LIMIT",
        kind: Kind::Limit,
        doc: "committed bytes past which background reclaim starts",
    },
    VarSpec {
        var: Var::HardLimit,
        name: "SHRINKALLOC_HARD_LIMIT",
        kind: Kind::Limit,
        doc: "committed bytes an allocation may not push past",
    },
    VarSpec {
        var: Var::Cgroup,
        name: "SHRINKALLOC_CGROUP",
        kind: Kind::Choice(&["auto", "off"]),
        doc: "whether to find the memory cgroup, derive limits from it and watch it",
    },
    VarSpec {
        var: Var::Monitor,
        name: "SHRINKALLOC_MONITOR",
        kind: Kind::Choice(&["auto", "on", "off"]),
        doc: "when to run the pressure monitor thread",
    },
    VarSpec {
        var: Var::Stats,
        name: "SHRINKALLOC_STATS",
        kind: Kind::Choice(&["0", "1"]),
        doc: "1: print the statistics on stderr at exit (C library)",
    },
    VarSpec {
        var: Var::StatsFormat,
        name: "SHRINKALLOC_STATS_FORMAT",
        kind: Kind::Choice(&["text", "json"]),
        doc: "the format of the statistics printed at exit",
    },
    VarSpec {
        var: Var::Lockdep,
        name: "SHRINKALLOC_LOCKDEP",
        kind: Kind::Choice(&["0", "1", "abort"]),
        doc: "1: report allocations made holding a lock a shrinker takes (reclaim lockdep); abort: and abort",
    },
];

/// Variables of the project's tests and stress harness, which run on this
/// allocator: not ours to report.
const FOREIGN_PREFIXES: [&str; 2] = ["SHRINKALLOC_STRESS_", "SHRINKALLOC_TEST_"];

fn is_foreign(name: &[u8]) -> bool {
    FOREIGN_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

static VALUES: [AtomicUsize; 3] = [
    AtomicUsize::new(Opt::PurgeDelayMs.range().0),
    AtomicUsize::new(Opt::SegmentCache.range().0),
    AtomicUsize::new(Opt::HugeCacheBytes.range().0),
];

static PARSED: AtomicBool = AtomicBool::new(false);

/// One bit per [`Var`] whose bad value was reported already.
static REPORTED: AtomicU32 = AtomicU32::new(0);

/// The current value of `opt`.
#[inline]
pub fn get(opt: Opt) -> usize {
    // Relaxed: options are independent values; readers need no ordering.
    VALUES[opt as usize].load(Ordering::Relaxed)
}

/// Sets `opt` for the rest of the process (clamped to its range).
pub fn set(opt: Opt, value: usize) {
    init();
    VALUES[opt as usize].store(value.min(opt.range().1), Ordering::Relaxed);
}

/// Reads the core's tunables from the environment once and reports unknown
/// `SHRINKALLOC_*` variables. Called from the first slow-path allocation.
pub(crate) fn init() {
    // Relaxed: the swap only elects the thread that parses.
    if PARSED.swap(true, Ordering::Relaxed) {
        return;
    }
    for opt in Opt::ALL {
        if let Some(v) = env_number(opt.var()) {
            VALUES[opt as usize].store(v, Ordering::Relaxed);
        }
    }
    os::for_each_env_name(|name| {
        let known = VARS.iter().any(|s| s.name.as_bytes() == name);
        if !known && name.starts_with(b"SHRINKALLOC_") && !is_foreign(name) {
            os::write_stderr(b"shrinkalloc: ignoring unknown variable ");
            os::write_stderr(name);
            os::write_stderr(b"\n");
        }
    });
}

/// The value of a number or limit variable, or `None` when it is unset,
/// empty or bad (a bad one reported once).
pub fn env_number(var: Var) -> Option<usize> {
    let spec = &VARS[var as usize];
    let text = os::getenv_str(spec.name).filter(|t| !t.is_empty())?;
    let max = match spec.kind {
        Kind::Number { max, .. } => max,
        Kind::Limit => usize::MAX,
        Kind::Choice(_) => unreachable!("{} is a choice", spec.name),
    };
    match parse_size(text) {
        Some(v) if v <= max => Some(v),
        _ => {
            report_bad(var);
            None
        }
    }
}

/// The index of a choice variable's word in its list (0, the default,
/// when it is unset, empty or bad; a bad one reported once).
pub fn env_choice(var: Var) -> usize {
    let spec = &VARS[var as usize];
    let Kind::Choice(words) = spec.kind else { unreachable!("{} is not a choice", spec.name) };
    let Some(text) = os::getenv_str(spec.name).filter(|t| !t.is_empty()) else { return 0 };
    match words.iter().position(|w| w.as_bytes() == text) {
        Some(i) => i,
        None => {
            report_bad(var);
            0
        }
    }
}

/// Reports a bad value of `var` on stderr, once per process, with what the
/// variable accepts.
fn report_bad(var: Var) {
    // Relaxed: the bit only elects the one report.
    if REPORTED.fetch_or(1 << var as u32, Ordering::Relaxed) & (1 << var as u32) != 0 {
        return;
    }
    let spec = &VARS[var as usize];
    os::write_stderr(b"shrinkalloc: ignoring bad value of ");
    os::write_stderr(spec.name.as_bytes());
    match spec.kind {
        Kind::Number { .. } | Kind::Limit => os::write_stderr(b" (a size: 4096, 64K, 512M, 2G)"),
        Kind::Choice(words) => {
            for (i, w) in words.iter().enumerate() {
                os::write_stderr(if i == 0 { b" (" } else { b"|" });
                os::write_stderr(w.as_bytes());
            }
            os::write_stderr(b")");
        }
    }
    os::write_stderr(b"\n");
}

/// Parses `123`, `64K`, `512M`, `2G` (binary units, optional `B`/`iB`).
/// `None` on anything else, including overflow.
pub fn parse_size(text: &[u8]) -> Option<usize> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &text[..digits] {
        n = n.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
    }
    let shift = match &text[digits..] {
        b"" | b"B" | b"b" => 0,
        b"K" | b"k" | b"KB" | b"KiB" | b"kB" => 10,
        b"M" | b"m" | b"MB" | b"MiB" => 20,
        b"G" | b"g" | b"GB" | b"GiB" => 30,
        b"T" | b"t" | b"TB" | b"TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1usize << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_reject_garbage() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"512M"), Some(512 << 20));
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        assert_eq!(parse_size(b"64KiB"), Some(64 << 10));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"12X"), None);
        assert_eq!(parse_size(b"-1"), None);
        assert_eq!(parse_size(b"99999999999999999999999"), None);
        assert_eq!(parse_size(b"99999999999T"), None);
    }

    #[test]
    fn the_table_is_indexed_by_var() {
        for (i, spec) in VARS.iter().enumerate() {
            assert_eq!(spec.var as usize, i, "{} is out of place", spec.name);
            assert!(spec.name.starts_with("SHRINKALLOC_") && !is_foreign(spec.name.as_bytes()));
        }
        for opt in Opt::ALL {
            assert!(matches!(VARS[opt.var() as usize].kind, Kind::Number { .. }));
        }
    }

    /// The README's options table lists every variable with its default,
    /// and no other `SHRINKALLOC_*` variable.
    #[test]
    fn the_readme_table_says_the_same() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `SHRINKALLOC_")).collect();
        for spec in &VARS {
            let row = rows
                .iter()
                .find(|r| r.starts_with(&format!("| `{}` |", spec.name)))
                .unwrap_or_else(|| panic!("README's options table lacks {}", spec.name));
            let default = row.split('|').nth(2).unwrap().trim().trim_matches('`');
            let expected = match spec.kind {
                Kind::Number { default, .. } if default >= 1 << 20 && default % (1 << 20) == 0 => {
                    format!("{}M", default >> 20)
                }
                Kind::Number { default, .. } => default.to_string(),
                Kind::Limit => "derived".to_string(),
                Kind::Choice(words) => words[0].to_string(),
            };
            assert_eq!(default, expected, "README's default of {}", spec.name);
        }
        for row in rows {
            let name = row.split('`').nth(1).unwrap();
            assert!(VARS.iter().any(|s| s.name == name), "README documents {name}, which the table lacks");
        }
    }
}
