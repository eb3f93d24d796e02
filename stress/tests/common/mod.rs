//! Runs the harness binary the way CI does and reads back what it wrote.
//!
//! Every test runs `shrinkalloc-stress run ...` with `--require-cgroup`, so
//! that a machine where no memory cgroup can be made fails the test loudly
//! instead of quietly measuring nothing; `SHRINKALLOC_STRESS_ALLOW_NO_CGROUP=1`
//! lets the harness fall back to shrinkalloc's own hard limit and an emulated
//! OOM kill instead (announced in the output). Results come from the run's
//! `results.csv`, one row per allocator.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

/// The harness binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_shrinkalloc-stress");

/// Whether the tests may run without a memory cgroup.
pub fn cgroup_optional() -> bool {
    let allowed = std::env::var("SHRINKALLOC_STRESS_ALLOW_NO_CGROUP").is_ok_and(|v| v == "1");
    if allowed {
        eprintln!(
            "!!! SHRINKALLOC_STRESS_ALLOW_NO_CGROUP=1: if no memory cgroup can be made, these tests use \
             shrinkalloc's own hard limit and an emulated OOM kill instead of the kernel's"
        );
    }
    allowed
}

/// Starts `shrinkalloc-stress run SCENARIO` under shrinkalloc alone (64 MiB,
/// 60 s: long enough to be interrupted), writing to `out`; its stderr is
/// echoed here and sent line by line to the returned channel.
pub fn spawn_echoing(scenario: &str, out: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(EXE);
    cmd.args(["run", scenario, "--allocators", "shrinkalloc", "--limit", "64M", "--duration", "60s", "--out"]);
    cmd.arg(out).stdout(Stdio::null()).stderr(Stdio::piped());
    if !cgroup_optional() {
        cmd.arg("--require-cgroup");
    }
    let mut child = cmd.spawn().expect("cannot start the harness");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// One row of `results.csv`, with the child's final fields split out.
#[derive(Debug)]
pub struct Row {
    pub cols: HashMap<String, String>,
    pub fields: HashMap<String, u64>,
}

impl Row {
    pub fn col(&self, name: &str) -> &str {
        self.cols.get(name).map_or("", String::as_str)
    }

    pub fn num(&self, name: &str) -> u64 {
        self.col(name).parse().unwrap_or_else(|_| panic!("column {name} is not a number: {self:#?}"))
    }

    pub fn field(&self, name: &str) -> u64 {
        *self.fields.get(name).unwrap_or_else(|| panic!("no final field {name}: {self:#?}"))
    }
}

/// What one harness run printed and wrote.
pub struct Run {
    pub output: Output,
    /// The harness's process id: its cgroups and work directories are
    /// named after it (`shrinkalloc-stress.<pid>.<scenario>.<allocator>`).
    pub pid: u32,
    pub rows: Vec<Row>,
    pub out_dir: PathBuf,
}

impl Run {
    pub fn row(&self, allocator: &str) -> &Row {
        self.rows
            .iter()
            .find(|r| r.col("allocator") == allocator)
            .unwrap_or_else(|| panic!("no result for {allocator}: {:#?}", self.rows))
    }

    /// Whether the run really used a cgroup (not the fallback).
    pub fn used_cgroup(&self) -> bool {
        self.rows.iter().all(|r| !r.col("cgroup").is_empty())
    }
}

/// Runs `shrinkalloc-stress run <scenario> --allocators <allocators>` with
/// `extra` options, prints its output, and parses its results.
pub fn run(test: &str, scenario: &str, allocators: &str, extra: &[&str]) -> Run {
    let out_dir = std::env::temp_dir().join(format!("shrinkalloc-stress-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut cmd = Command::new(EXE);
    cmd.args(["run", scenario, "--allocators", allocators, "--out"]).arg(&out_dir).args(extra);
    if !cgroup_optional() {
        cmd.arg("--require-cgroup");
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot start the harness");
    let pid = child.id();
    let output = child.wait_with_output().expect("cannot read the harness's output");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert_ne!(
        output.status.code(),
        Some(2),
        "the harness refused to run (no memory cgroup? run as root, or set \
         SHRINKALLOC_STRESS_ALLOW_NO_CGROUP=1 to accept the fallback): see its stderr above"
    );
    let text = std::fs::read_to_string(out_dir.join("results.csv")).expect("the harness wrote no results.csv");
    let rows = parse_results(&text);
    Run { output, pid, rows, out_dir }
}

/// The rows of a `results.csv`.
pub fn parse_results(text: &str) -> Vec<Row> {
    let mut lines = text.lines();
    let header = split_csv(lines.next().unwrap_or_default());
    lines
        .map(|line| {
            let cols: HashMap<String, String> = header.iter().cloned().zip(split_csv(line)).collect();
            let fields = cols
                .get("final_fields")
                .map(|f| {
                    f.split_whitespace()
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_string(), v.parse().ok()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Row { cols, fields }
        })
        .collect()
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Asserts what every run of a survivor must show: it ran to the end, its
/// checks passed, it stayed under the limit, nothing was OOM-killed, and its
/// cgroup is gone.
pub fn assert_survived_under_limit(run: &Run, allocator: &str) {
    let r = run.row(allocator);
    assert_eq!(r.col("outcome"), "survived", "{allocator} did not survive: {r:#?}");
    assert_eq!(r.col("finished"), "true", "{allocator} printed no final line: {r:#?}");
    assert_eq!(r.num("oom_kills"), 0, "{allocator} was OOM-killed: {r:#?}");
    assert!(r.num("peak_bytes") <= r.num("limit_bytes"), "{allocator} went past the limit: {r:#?}");
    assert_cgroup_removed(r);
}

pub fn assert_cgroup_removed(r: &Row) {
    let group = r.col("cgroup");
    if !group.is_empty() {
        assert_eq!(r.col("cgroup_removed"), "true", "cgroup left behind: {r:#?}");
        assert!(!std::path::Path::new(group).exists(), "cgroup {group} still exists");
    }
}
