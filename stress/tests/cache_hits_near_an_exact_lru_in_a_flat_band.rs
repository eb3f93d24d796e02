//! Issue 10's measure as a regression test (not timed): the cache scenarios,
//! in Rust (`cache`) and in C (`cache-c`), each under a memory cgroup of a
//! quarter of its demand, must get at least [`MIN_RATIO`] of the hits of an
//! exact LRU holding 75% of the limit over the same requests (the oracle
//! replays each child's trace), and hold their usage after warm-up inside a
//! band of [`MAX_BAND_PERCENT`] of the limit, under shrinkalloc's hard line,
//! with no OOM kill and no refused allocation.
//!
//! Needs root and a memory cgroup (and `cc` for `cache-c`): without one the
//! harness refuses to run and the test fails saying so;
//! `SHRINKALLOC_STRESS_ALLOW_NO_CGROUP=1` accepts the fallback, where the
//! band is of the child's resident set instead of its group's usage (said
//! loudly below).

mod common;

/// Hits as a share of the oracle's that a run must reach.
const MIN_RATIO: f64 = 0.8;
/// The widest usage band after warm-up, in % of the limit.
const MAX_BAND_PERCENT: f64 = 10.0;

/// What is wrong with `scenario`'s run, if anything (empty: nothing).
fn shortfalls(scenario: &str) -> Vec<String> {
    let run = common::run(
        &format!("oracle-{scenario}"),
        scenario,
        "shrinkalloc",
        &["--limit", "64M", "--demand", "256M", "--duration", "6s", "--seed", "7"],
    );
    if !run.used_cgroup() {
        eprintln!(
            "!!! {scenario}: NO MEMORY CGROUP: measured against the harness's fallback; the band below is of the \
             child's resident set, not of a cgroup's usage"
        );
    }
    common::assert_survived_under_limit(&run, "shrinkalloc");
    let s = run.row("shrinkalloc");
    assert!(s.num("gets") > 0 && s.num("ideal_hits") > 0, "{scenario}: the oracle replayed nothing: {s:#?}");
    let mut wrong = Vec::new();
    let ratio: f64 = s.col("hits_over_ideal").parse().expect("hits_over_ideal is a number");
    if ratio < MIN_RATIO {
        wrong.push(format!("{scenario}: hits are {ratio:.2} of the ideal LRU's, under {MIN_RATIO}"));
    }
    let (lo, hi): (f64, f64) = (s.col("band_min_pct").parse().unwrap(), s.col("band_max_pct").parse().unwrap());
    if hi - lo > MAX_BAND_PERCENT {
        wrong.push(format!(
            "{scenario}: usage after warm-up spans {lo:.0}-{hi:.0}% of the limit, wider than {MAX_BAND_PERCENT}%"
        ));
    }
    let hard = s.field("hard_limit");
    if hard == 0 || s.num("band_max_bytes") > hard {
        wrong.push(format!(
            "{scenario}: usage after warm-up reached {} bytes, over the hard line {hard}",
            s.num("band_max_bytes")
        ));
    }
    if s.field("failed_charges") > 0 {
        wrong.push(format!("{scenario}: {} allocations were refused", s.field("failed_charges")));
    }
    let _ = std::fs::remove_dir_all(&run.out_dir);
    wrong
}

// Met since medium pages are 128 KiB (105d154): at 64M of 256M, seed 7,
// `cache` gets 0.83-0.84 of the oracle's hits with a band of 79-84%, and
// `cache-c` 0.93 with 81-85% (the hard line is at 87.5%); before, 0.76 and
// 0.82 with bands of 79-88% and 40-90%.
#[test]
fn cache_hits_reach_an_exact_lru_and_usage_stays_in_a_flat_band() {
    let wrong: Vec<String> = ["cache", "cache-c"].into_iter().flat_map(shortfalls).collect();
    assert!(wrong.is_empty(), "reclaim keeps less than the limit allows:\n  {}", wrong.join("\n  "));
}
