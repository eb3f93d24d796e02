//! What the harness shows: the live progress line and the summary table.
//!
//! Invariant: progress goes to stderr, as `indicatif` bars only on a
//! terminal (elsewhere one plain line a second), so stdout holds only the header,
//! the table and the paths of what was written; every number in the table is
//! also in `results.csv` (`files.rs`), which the tests read. The charts are
//! `chart.rs`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::allocator::Allocator;
use crate::runner::{Outcome, Plan, RunResult};
use crate::scenario::{Launch, Unit};
use crate::status::Fields;

/// Bytes as MiB with one decimal.
pub fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A count with a k/M suffix.
pub fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// The live progress on stderr: on a terminal one `indicatif` bar per
/// running child (its usage against the limit, with time, operations and
/// reclaim passes beside it), elsewhere one plain line a second, so that CI
/// logs stay readable.
pub struct Progress {
    tty: bool,
    last_line: Option<Instant>,
    bar: Option<ProgressBar>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        // SAFETY: isatty has no memory-safety preconditions.
        let tty = unsafe { libc::isatty(2) } == 1;
        Progress { tty, last_line: None, bar: None }
    }

    /// Shows the state of `plan`'s run under `allocator`, `t` into it.
    pub fn update(&mut self, plan: &Plan, allocator: Allocator, t: Duration, usage: usize, last: &Fields) {
        let (scenario, duration, limit) = (plan.scenario.name, plan.duration, plan.limit);
        let mut detail =
            format!("{:>5.1}/{} s  usage {:>9} of {}", t.as_secs_f64(), duration.as_secs(), mib(usage), mib(limit));
        for (key, label) in [("ops", "ops"), ("entries", "entries"), ("live_bytes", "live"), ("inodes", "inodes")] {
            if let Some(v) = last.get(key) {
                let v = if key == "live_bytes" { mib(v as usize) } else { count(v as f64) };
                let _ = write!(detail, "  {label} {v}");
            }
        }
        if let Some(p) = last.get("reclaim_passes") {
            let _ = write!(detail, "  reclaim passes {p}");
        }
        if self.tty {
            let bar = self.bar.get_or_insert_with(|| {
                let style = ProgressStyle::with_template("{prefix} [{bar:20}] {percent:>3}%  {msg}")
                    .map_or_else(|_| ProgressStyle::default_bar(), |s| s.progress_chars("#>."));
                ProgressBar::new(limit.max(1) as u64)
                    .with_style(style)
                    .with_prefix(format!("{scenario} {:<20}", allocator.name()))
            });
            bar.set_position(usage.min(limit) as u64);
            bar.set_message(detail);
            return;
        }
        if self.last_line.is_some_and(|l| l.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.last_line = Some(Instant::now());
        let share = usage as f64 / limit.max(1) as f64;
        let filled = ((share * 20.0).round() as usize).min(20);
        let _ = writeln!(
            std::io::stderr().lock(),
            "{scenario} {:<20} [{}{}] {:>3.0}%  {detail}",
            allocator.name(),
            "#".repeat(filled),
            ".".repeat(20 - filled),
            share * 100.0
        );
    }

    /// Ends a run's progress with one summary line.
    pub fn done(&mut self, r: &RunResult, limit: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut err = std::io::stderr().lock();
        self.last_line = None;
        let detail = match &r.outcome {
            Outcome::Skipped(_) => String::new(),
            _ => format!(
                " after {:.1} s, peak {} ({:.0}% of the limit)",
                r.wall.as_secs_f64(),
                mib(r.peak),
                r.peak as f64 * 100.0 / limit.max(1) as f64
            ),
        };
        let verdict = match r.outcome.meets(r.expect) {
            Some(false) => "  <-- NOT AS EXPECTED",
            _ => "",
        };
        let _ = writeln!(err, "{}: {}{detail}{verdict}", r.allocator.name(), r.outcome.label());
        for line in why(r) {
            let _ = writeln!(err, "    {line}");
        }
    }
}

/// Lines explaining a run that did not end as expected.
fn why(r: &RunResult) -> Vec<String> {
    let mut lines = Vec::new();
    match &r.outcome {
        Outcome::Corrupt(m) | Outcome::Hung(m) | Outcome::Skipped(m) | Outcome::HarnessError(m) => {
            lines.push(m.clone())
        }
        _ => {}
    }
    if r.outcome.meets(r.expect) == Some(false) {
        lines.extend(r.stderr_tail.iter().map(|l| format!("child stderr: {l}")));
    }
    if let Some(e) = &r.cleanup_error {
        lines.push(format!("CGROUP NOT REMOVED: {e}"));
    }
    lines
}

/// The summary table.
pub fn table(plan: &Plan, results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<21} {:<22} {:>7} {:>24} {:>10} {:>8}  as expected",
        "allocator",
        "result",
        "time",
        format!("peak usage / {}", mib(plan.limit)),
        "ops/s",
        "reclaim"
    );
    for r in results {
        if let Outcome::Skipped(why) = &r.outcome {
            let _ = writeln!(out, "{:<21} skipped: {why}", r.allocator.name());
            continue;
        }
        let peak = format!("{} ({:.0}%)", mib(r.peak), r.peak as f64 * 100.0 / plan.limit.max(1) as f64);
        let verdict = match r.outcome.meets(r.expect) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<21} {:<22} {:>5.1} s {:>24} {:>10} {:>8}  {verdict}",
            r.allocator.name(),
            r.outcome.label(),
            r.wall.as_secs_f64(),
            peak,
            r.ops_per_sec().map_or("-".into(), count),
            r.last.get("reclaim_passes").map_or("-".into(), |p| p.to_string()),
        );
    }
    if plan.scenario.traced {
        out.push('\n');
        out += &oracle_table(plan, results);
    }
    if let Some((hard, soft)) = results.iter().find_map(RunResult::limits_in_force) {
        let _ = writeln!(out, "shrinkalloc's limits in force: hard {}, soft {}", mib(hard), mib(soft));
    }
    if results.iter().any(|r| r.outcome != Outcome::Survived && !r.samples.is_empty()) {
        out.push_str("(ops/s of a run that died covers its life only; reclaim: shrinkalloc's reclaim passes)\n");
    }
    out + &driver_table(plan, results)
}

/// A band as percentages of `limit`, `62-75%`.
pub fn band(band: (usize, usize), limit: usize) -> String {
    let pct = |b: usize| b as f64 * 100.0 / limit.max(1) as f64;
    format!("{:.0}-{:.0}%", pct(band.0), pct(band.1))
}

/// A traced scenario's measure: each run's hits against the oracle's, and
/// its usage band after warm-up.
fn oracle_table(plan: &Plan, results: &[RunResult]) -> String {
    let mut out = format!(
        "{:<21} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>17} {:>8}\n",
        "allocator", "gets", "hits", "ideal", "hits/ideal", "as LRU of", "cpu", "band after warm-up", "width"
    );
    for r in results.iter().filter(|r| r.replay.is_some()) {
        let _ = write!(out, "{:<21}", r.allocator.name());
        match (&r.replay, r.band(plan.duration)) {
            (Some(Ok(m)), b) => {
                let o = &m.replay;
                // Only a survivor's: a run that died did not live to fill its cache.
                let lru = match (m.equivalent, r.outcome == Outcome::Survived) {
                    (Some(e), true) => format!("{:.0}%", e as f64 * 100.0 / plan.limit as f64),
                    (None, true) => ">200%".into(),
                    (_, false) => "-".into(),
                };
                let ratio = o.ratio().map_or("-".into(), |x| format!("{x:.2}"));
                let cpu = r.last.get("cpu_ms").map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
                let (b, width) = match b {
                    Some(b) if r.outcome == Outcome::Survived => {
                        (band(b, plan.limit), format!("{:.0}%", (b.1 - b.0) as f64 * 100.0 / plan.limit as f64))
                    }
                    _ => ("-".into(), "-".into()),
                };
                let (gets, hits, ideal) = (count(o.gets as f64), count(o.hits as f64), count(o.ideal as f64));
                let _ = writeln!(
                    out,
                    " {gets:>10} {hits:>10} {ideal:>10} {ratio:>10} {lru:>10} {cpu:>9} {b:>17} {width:>8}"
                );
            }
            (Some(Err(e)), _) => {
                let _ = writeln!(out, " no trace: {e}");
            }
            (None, _) => {}
        }
    }
    let _ = writeln!(
        out,
        "(ideal: hits of an exact LRU of {} ({}% of the limit) over the same requests; as LRU of: the budget, in % \
         of the limit, of the exact LRU that gets the run's hits; band: least and most usage over the last three \
         quarters of the duration, as % of the limit)",
        mib(plan.limit * crate::oracle::BUDGET_PERCENT / 100),
        crate::oracle::BUDGET_PERCENT
    );
    out
}

/// A driver scenario's own figures, from each run's last status line.
fn driver_table(plan: &Plan, results: &[RunResult]) -> String {
    let Launch::Driver(driver) = plan.scenario.launch else { return String::new() };
    let mut out = format!("\n{:<21}", "allocator");
    for c in driver.columns {
        let _ = write!(out, " {:>w$}", c.header, w = c.header.len().max(10));
    }
    out.push('\n');
    for r in results.iter().filter(|r| !matches!(r.outcome, Outcome::Skipped(_) | Outcome::HarnessError(_))) {
        let _ = write!(out, "{:<21}", r.allocator.name());
        for c in driver.columns {
            let value = r.last.get(c.field).map_or("-".into(), |v| match c.unit {
                Unit::Bytes => mib(v as usize),
                Unit::Count => count(v as f64),
                Unit::Percent => format!("{v}%"),
            });
            let _ = write!(out, " {value:>w$}", w = c.header.len().max(10));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(mib(256 << 20), "256.0 MiB");
        assert_eq!(count(812_345.0), "812.3k");
        assert_eq!(count(2_500_000.0), "2.50M");
        assert_eq!(count(42.0), "42");
    }
}
