//! Prints the README's table from the last run of the timing benchmarks:
//! each case's median time for every allocator, its ratio to the peer
//! (mimalloc), and the geometric mean of each allocator's ratios.
//!
//! Reads criterion's `<case>/new/benchmark.json` and `estimates.json` under
//! `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else
//! `target/criterion`. Cases with a throughput in elements are shown per
//! element (per block), the others per iteration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shrinkalloc_benches::{NAMES, PEER};

/// Median nanoseconds per allocator name, and what one unit of time is.
#[derive(Default)]
struct Row {
    per: &'static str,
    median_ns: BTreeMap<String, f64>,
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        PathBuf::from("target/criterion")
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Every `new/` directory below `dir`: one per case and allocator.
fn find_new_dirs(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            found.push(path);
        } else {
            find_new_dirs(&path, found);
        }
    }
}

/// Sort key that puts `16B` before `1KiB` before `1MiB`, names after sizes.
fn case_key(case: &str) -> (String, u64, String) {
    let (group, value) = case.split_once('/').unwrap_or((case, ""));
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    let unit = match &value[digits.len()..] {
        "B" => Some(1),
        "KiB" => Some(1 << 10),
        "MiB" => Some(1 << 20),
        _ => None,
    };
    let bytes = match (digits.parse::<u64>(), unit) {
        (Ok(n), Some(u)) => n * u,
        _ => u64::MAX,
    };
    (group.to_string(), bytes, value.to_string())
}

fn collect(dir: &Path) -> BTreeMap<(String, u64, String), Row> {
    let mut new_dirs = Vec::new();
    find_new_dirs(dir, &mut new_dirs);
    let mut rows: BTreeMap<_, Row> = BTreeMap::new();
    for new in new_dirs {
        let (Some(id), Some(est)) = (read_json(&new.join("benchmark.json")), read_json(&new.join("estimates.json")))
        else {
            continue;
        };
        let (Some(group), Some(alloc), Some(median)) =
            (id["group_id"].as_str(), id["function_id"].as_str(), est["median"]["point_estimate"].as_f64())
        else {
            continue;
        };
        let case = match id["value_str"].as_str() {
            Some(v) => format!("{group}/{v}"),
            None => group.to_string(),
        };
        let elements = id["throughput"]["Elements"].as_f64();
        let row = rows.entry(case_key(&case)).or_default();
        row.per = if elements.is_some() { "block" } else { "iteration" };
        row.median_ns.insert(alloc.to_string(), median / elements.unwrap_or(1.0));
    }
    rows
}

fn format_ns(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.1} ns"),
    }
}

fn main() {
    let dir = criterion_dir();
    let rows = collect(&dir);
    if rows.is_empty() {
        eprintln!("no criterion results under {}: run `cargo bench` first", dir.display());
        std::process::exit(1);
    }
    let others: Vec<&str> = NAMES.iter().copied().filter(|&n| n != PEER).collect();
    println!("Median time; ratio = allocator / {PEER} (below 1: faster than {PEER}).\n");
    let mut header = String::from("| benchmark | per |");
    let mut rule = String::from("|---|---|");
    for n in NAMES {
        header += &format!(" {n} |");
        rule += "--:|";
    }
    for n in &others {
        header += &format!(" {n} / {PEER} |");
        rule += "--:|";
    }
    println!("{header}\n{rule}");

    let mut log_sums = vec![(0.0f64, 0u32); others.len()];
    for ((group, _, value), row) in &rows {
        let case = if value.is_empty() { group.clone() } else { format!("{group}/{value}") };
        let mut line = format!("| {case} | {} |", row.per);
        for n in NAMES {
            let cell = row.median_ns.get(n).map_or("-".into(), |&t| format_ns(t));
            line += &format!(" {cell} |");
        }
        let peer = row.median_ns.get(PEER).copied();
        for (n, sum) in others.iter().zip(&mut log_sums) {
            match (row.median_ns.get(*n), peer) {
                (Some(&t), Some(p)) if p > 0.0 => {
                    let r = t / p;
                    sum.0 += r.ln();
                    sum.1 += 1;
                    line += &format!(" {r:.2} |");
                }
                _ => line += " - |",
            }
        }
        println!("{line}");
    }
    let mut line = format!("| **geometric mean** | |{}", " |".repeat(NAMES.len()));
    for (sum, count) in log_sums {
        let mean = if count == 0 { f64::NAN } else { (sum / f64::from(count)).exp() };
        line += &format!(" **{mean:.2}** |");
    }
    println!("{line}");
}
