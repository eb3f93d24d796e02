//! The files a run leaves for scripts: `results.csv` (one row per run),
//! `results.json` (the same rows, each with its final fields as an
//! object, and the plan they ran under) and `usage.csv` (one row per
//! sample of every run), written through `serde` and the `csv` crate.
//!
//! Invariant: one [`ResultRow`] per run is the single source of the table's
//! figures for scripts: `results.csv` and `results.json` serialize the
//! same values, and a column that does not apply is empty in CSV and
//! `null` in JSON. The tests read `results.csv` by column name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use serde::Serialize;

use crate::runner::{Outcome, Plan, RunResult};

/// One row of `results.csv`: a run, as the table shows it, plus the
/// oracle's figures for a traced scenario and the child's final fields.
#[derive(Serialize, Debug)]
pub struct ResultRow {
    scenario: &'static str,
    allocator: &'static str,
    outcome: &'static str,
    expected: String,
    as_expected: Option<bool>,
    exit: String,
    wall_s: f64,
    peak_bytes: usize,
    limit_bytes: usize,
    oom_kills: u64,
    limit_hits: u64,
    ops_per_s: Option<u64>,
    reclaim_passes: Option<u64>,
    finished: bool,
    cgroup: Option<String>,
    cgroup_removed: bool,
    seed: u64,
    gets: Option<u64>,
    hits: Option<u64>,
    ideal_hits: Option<u64>,
    hits_over_ideal: Option<f64>,
    oracle_budget_bytes: Option<usize>,
    equivalent_lru_bytes: Option<usize>,
    band_min_bytes: Option<usize>,
    band_max_bytes: Option<usize>,
    band_min_pct: Option<f64>,
    band_max_pct: Option<f64>,
    /// Where the band's window opens, seconds into the run
    /// (`RunResult::band_from`).
    band_from_s: Option<f64>,
    trace_error: Option<String>,
    final_fields: String,
    detail: String,
}

/// `x` rounded to `decimals` places, so that the files say no more than
/// the measurement knows.
fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl ResultRow {
    /// The row of run `r` of `plan`.
    pub fn new(plan: &Plan, r: &RunResult) -> Self {
        let (oracle, band) = (r.oracle(), r.band(plan.duration));
        let pct = |b: usize| round(b as f64 * 100.0 / plan.limit.max(1) as f64, 2);
        let fields: Vec<String> = r.last.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let detail = match &r.outcome {
            Outcome::Corrupt(m) | Outcome::Hung(m) | Outcome::Crashed(m) | Outcome::Skipped(m) => m.clone(),
            Outcome::HarnessError(m) => m.clone(),
            _ => String::new(),
        };
        ResultRow {
            scenario: plan.scenario.name,
            allocator: r.allocator.name(),
            outcome: r.outcome.key(),
            expected: format!("{:?}", r.expect),
            as_expected: r.outcome.meets(r.expect),
            exit: r.exit.clone(),
            wall_s: round(r.wall.as_secs_f64(), 3),
            peak_bytes: r.peak,
            limit_bytes: plan.limit,
            oom_kills: r.oom_kills,
            limit_hits: r.limit_hits,
            ops_per_s: r.ops_per_sec().map(|o| o.round() as u64),
            reclaim_passes: r.last.get("reclaim_passes"),
            finished: r.finished,
            cgroup: r.cgroup.as_ref().map(|p| p.display().to_string()),
            cgroup_removed: r.cgroup.is_some() && r.cleanup_error.is_none(),
            seed: plan.seed,
            gets: oracle.map(|o| o.gets),
            hits: oracle.map(|o| o.hits),
            ideal_hits: oracle.map(|o| o.ideal),
            hits_over_ideal: oracle.and_then(|o| o.ratio()).map(|x| round(x, 4)),
            oracle_budget_bytes: oracle.map(|o| o.budget),
            equivalent_lru_bytes: r.equivalent_budget(),
            band_min_bytes: band.map(|b| b.0),
            band_max_bytes: band.map(|b| b.1),
            band_min_pct: band.map(|b| pct(b.0)),
            band_max_pct: band.map(|b| pct(b.1)),
            band_from_s: band.map(|_| round(r.band_from(plan.duration), 2)),
            trace_error: match &r.replay {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
            final_fields: fields.join(" "),
            detail,
        }
    }
}

/// A run in `results.json`: its row, and its final fields as an object.
#[derive(Serialize)]
struct JsonRun<'a> {
    #[serde(flatten)]
    row: ResultRow,
    fields: BTreeMap<&'a str, u64>,
}

/// `results.json`: the plan and every run.
#[derive(Serialize)]
struct JsonResults<'a> {
    scenario: &'static str,
    limit_bytes: usize,
    duration_s: f64,
    seed: u64,
    threads: usize,
    demand_bytes: Option<usize>,
    oracle_budget_percent: usize,
    runs: Vec<JsonRun<'a>>,
}

/// Writes `results.csv`: one row per run, with the child's last fields.
pub fn write_results_csv(path: &Path, plan: &Plan, results: &[RunResult]) -> csv::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    for r in results {
        w.serialize(ResultRow::new(plan, r))?;
    }
    w.flush()?;
    Ok(())
}

/// Writes `results.json`: what `results.csv` holds, with the plan.
pub fn write_results_json(path: &Path, plan: &Plan, results: &[RunResult]) -> std::io::Result<()> {
    let runs = results
        .iter()
        .map(|r| JsonRun {
            row: ResultRow::new(plan, r),
            fields: r.last.0.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        })
        .collect();
    let doc = JsonResults {
        scenario: plan.scenario.name,
        limit_bytes: plan.limit,
        duration_s: plan.duration.as_secs_f64(),
        seed: plan.seed,
        threads: plan.threads,
        demand_bytes: plan.demand,
        oracle_budget_percent: crate::oracle::BUDGET_PERCENT,
        runs,
    };
    let mut w = BufWriter::new(File::create(path)?);
    serde_json::to_writer_pretty(&mut w, &doc)?;
    std::io::Write::write_all(&mut w, b"\n")
}

/// One row of `usage.csv`: a sample.
#[derive(Serialize)]
struct UsageRow {
    allocator: &'static str,
    t_s: f64,
    usage_bytes: usize,
    limit_bytes: usize,
    ops: Option<u64>,
    in_use_bytes: Option<u64>,
    committed_bytes: Option<u64>,
    rss_bytes: Option<u64>,
    reclaim_passes: Option<u64>,
}

/// Writes `usage.csv`: one row per sample of every run.
pub fn write_usage_csv(path: &Path, plan: &Plan, results: &[RunResult]) -> csv::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    for r in results {
        for s in &r.samples {
            let f = &s.fields;
            w.serialize(UsageRow {
                allocator: r.allocator.name(),
                t_s: round(s.t, 3),
                usage_bytes: s.usage,
                limit_bytes: plan.limit,
                ops: f.get("ops"),
                in_use_bytes: f.get("in_use"),
                committed_bytes: f.get("committed"),
                rss_bytes: f.get("rss"),
                reclaim_passes: f.get("reclaim_passes"),
            })?;
        }
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_rounded_to_what_they_measure() {
        assert_eq!(round(1.234_567, 3), 1.235);
        assert_eq!(round(99.999, 2), 100.0);
    }

    #[test]
    fn a_row_serializes_with_empty_cells_for_what_does_not_apply() {
        #[derive(Serialize)]
        struct R {
            a: Option<u64>,
            b: &'static str,
            c: Option<bool>,
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(R { a: None, b: "x,y \"q\"", c: Some(true) }).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text, "a,b,c\n,\"x,y \"\"q\"\"\",true\n");
    }
}
