//! Real programs run under `LD_PRELOAD=libshrinkalloc.so`, each producing
//! the same output as without it, and each shown to have been served by
//! shrinkalloc: by the statistics printed at exit (`SHRINKALLOC_STATS=1`),
//! or, for programs that close stderr before exit (GNU coreutils), by the
//! dynamic loader binding their `malloc` to the library (`LD_DEBUG=bindings`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_success, output, preloaded, require, scratch, shared_lib, stderr, stdout};

/// Runs `args` with and without the library; asserts both succeed with the
/// same stdout, and returns the preloaded run.
fn same_output(program: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let plain = output(Command::new(program).args(args).current_dir(dir).envs(env.iter().copied()));
    assert_success(&plain, &format!("{program} {args:?} without shrinkalloc"));
    let pre = output(preloaded(program).args(args).current_dir(dir).envs(env.iter().copied()));
    assert_success(&pre, &format!("{program} {args:?} under shrinkalloc"));
    assert_eq!(stdout(&pre), stdout(&plain), "{program} {args:?}: output differs under shrinkalloc");
    pre
}

/// Asserts that the dynamic loader binds `program`'s `malloc` to the library.
fn assert_malloc_bound_to_shrinkalloc(program: &str, args: &[&str], dir: &Path) {
    let o = output(preloaded(program).args(args).current_dir(dir).env("LD_DEBUG", "bindings"));
    let needle = format!("to {} [0]: normal symbol `malloc'", shared_lib().display());
    assert!(stderr(&o).contains(&needle), "{program}: malloc is not bound to shrinkalloc");
}

/// A number from the JSON statistics, e.g. `"heaps":5`.
fn json_number(json: &str, key: &str) -> usize {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat).unwrap_or_else(|| panic!("no {key} in statistics: {json}")) + pat.len();
    json[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("a number")
}

#[test]
fn python_allocation_heavy_threads_run_the_same_under_shrinkalloc() {
    let python = "/usr/bin/python3.11";
    require(python);
    let script = common::crate_dir().join("tests/py/workload.py");
    let script = script.to_str().unwrap();
    let env = [("SHRINKALLOC_STATS", "1"), ("SHRINKALLOC_STATS_FORMAT", "json")];
    let o = same_output(python, &[script], &scratch("python"), &env);
    let stats = stderr(&o);
    assert_eq!(stats.lines().count(), 1, "only the statistics on stderr: {stats}");
    assert!(json_number(&stats, "heaps") >= 2, "Python's threads allocated from shrinkalloc: {stats}");
    assert!(json_number(&stats, "segments") >= 1 && json_number(&stats, "purged") > 0, "{stats}");
}

#[test]
fn sort_sorts_the_same_under_shrinkalloc() {
    require("sort");
    let dir = scratch("sort");
    let lines: String = (0u64..200_000).map(|i| format!("{}\n", i.wrapping_mul(2_654_435_761) % 1_000_003)).collect();
    std::fs::write(dir.join("input"), lines).unwrap();
    let args = ["-n", "--parallel=2", "-S", "4M", "-T", ".", "input"];
    let o = same_output("sort", &args, &dir, &[]);
    assert_eq!(stdout(&o).lines().count(), 200_000);
    assert_malloc_bound_to_shrinkalloc("sort", &args, &dir);
}

#[test]
fn git_commits_and_logs_the_same_under_shrinkalloc() {
    require("git");
    let base = scratch("git");
    let env = [
        ("HOME", base.to_str().unwrap()),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_AUTHOR_NAME", "a"),
        ("GIT_AUTHOR_EMAIL", "a@example.invalid"),
        ("GIT_COMMITTER_NAME", "a"),
        ("GIT_COMMITTER_EMAIL", "a@example.invalid"),
        ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
        ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
    ];
    // The same job twice, in fresh repositories: plain, then preloaded.
    let mut logs = Vec::new();
    for (run, preload) in [("plain", false), ("preloaded", true)] {
        let dir = base.join(run);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..200 {
            std::fs::write(dir.join(format!("f{i}.txt")), format!("{i}\n").repeat(i + 1)).unwrap();
        }
        let git = |args: &[&str]| {
            let mut c = if preload { preloaded("git") } else { Command::new("git") };
            let o = output(c.args(args).current_dir(&dir).envs(env.iter().copied()));
            assert_success(&o, &format!("git {args:?} ({run})"));
            o
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "first"]);
        git(&["gc", "-q"]);
        logs.push(stdout(&git(&["log", "--stat", "--format=%H %s"])));
    }
    assert_eq!(logs[0], logs[1], "git's history differs under shrinkalloc");
    assert!(logs[1].contains("200 files changed"));
    assert_malloc_bound_to_shrinkalloc("git", &["--version"], &base);
}

#[test]
fn gcc_compiles_and_links_the_same_under_shrinkalloc() {
    require("gcc");
    let dir = scratch("gcc");
    std::fs::write(dir.join("hello.c"), "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n").unwrap();
    same_output("gcc", &["--version"], &dir, &[]);
    let o = output(preloaded("gcc").args(["-O2", "hello.c", "-o", "hello"]).current_dir(&dir));
    assert_success(&o, "gcc hello.c under shrinkalloc");
    let run = output(&mut Command::new(dir.join("hello")));
    assert_eq!(stdout(&run), "hello\n");
    assert_malloc_bound_to_shrinkalloc("gcc", &["--version"], &dir);
}
