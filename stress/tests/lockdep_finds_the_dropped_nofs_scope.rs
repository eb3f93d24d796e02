//! Reclaim lockdep on the two scenarios built around a filesystem lock
//! that an `SA_NEEDS_FS` shrinker takes: `nofs` (Rust, its lock a
//! `shrinkalloc::sync::Mutex`) and `fuse` (sa-fused in C, its cache lock a
//! pthread mutex seen through `libshrinkalloc_lockdep.so`). With
//! `SHRINKALLOC_LOCKDEP=abort`, both run clean as written — any report
//! would abort them — and both abort when one `NOFS` scope is dropped
//! (`SHRINKALLOC_STRESS_NOFS_DROP_SCOPE=1`, `SHRINKALLOC_STRESS_FUSE_DROP_SCOPE=1`,
//! read by the scenarios' own code), the last line naming the lock and the
//! shrinker. The fuse half needs what `fuse_daemon_survives_*` needs.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The interposer, compiled from `alloc-ffi/lockdep/`.
fn interposer() -> PathBuf {
    let out = std::env::temp_dir().join(format!("shrinkalloc-lockdep-{}.so", std::process::id()));
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../alloc-ffi/lockdep/shrinkalloc_lockdep.c");
    let o = Command::new("cc").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&out).arg(&src).output().expect("run cc");
    assert!(o.status.success(), "cc: {}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Runs the harness on `scenario` under shrinkalloc with `env` added;
/// returns its output and everything it printed.
fn run(scenario: &str, limit: &str, env: &[(&str, &str)]) -> (Output, String) {
    let out_dir = std::env::temp_dir().join(format!("shrinkalloc-stress-lockdep-{scenario}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut cmd = Command::new(common::EXE);
    cmd.args(["run", scenario, "--allocators", "shrinkalloc", "--limit", limit, "--duration", "4s", "--seed", "7"])
        .arg("--out")
        .arg(&out_dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !common::cgroup_optional() {
        cmd.arg("--require-cgroup");
    }
    let o = cmd.output().expect("cannot start the harness");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    println!("{text}");
    let _ = std::fs::remove_dir_all(&out_dir);
    (o, text)
}

fn assert_clean(o: &Output, text: &str) {
    assert_eq!(o.status.code(), Some(0), "the run failed with the checker on");
    assert!(
        !text.contains("possible reclaim deadlock") && !text.contains("shrinkalloc: lockdep"),
        "a report with every scope in place"
    );
}

/// The run failed, and its last child line names `lock` and `shrinker`.
fn assert_reported(o: &Output, text: &str, lock: &str, shrinker: &str) {
    assert_ne!(o.status.code(), Some(0), "the dropped scope went unreported");
    let line = text
        .lines()
        .find(|l| l.contains("shrinkalloc: lockdep: aborting at the first report"))
        .expect("no lockdep abort in the output");
    assert!(line.contains(lock), "{lock} missing from {line}");
    assert!(line.contains(&format!("shrinker \"{shrinker}\" (needs fs)")), "{shrinker} missing from {line}");
    assert!(line.contains("scope none"), "{line}");
}

#[test]
fn nofs_runs_clean_with_lockdep_and_a_dropped_scope_is_reported() {
    let (o, text) = run("nofs", "128M", &[("SHRINKALLOC_LOCKDEP", "abort")]);
    assert_clean(&o, &text);
    let env = [("SHRINKALLOC_LOCKDEP", "abort"), ("SHRINKALLOC_STRESS_NOFS_DROP_SCOPE", "1")];
    let (o, text) = run("nofs", "128M", &env);
    assert_reported(&o, &text, "(fs lock)", "inode-cache");
}

#[test]
fn fuse_runs_clean_with_lockdep_and_a_dropped_scope_is_reported() {
    let lib = interposer();
    let lib = lib.to_str().unwrap();
    let env = [("SHRINKALLOC_LOCKDEP", "abort"), ("SHRINKALLOC_STRESS_LOCKDEP_PRELOAD", lib)];
    let (o, text) = run("fuse", "64M", &env);
    assert_clean(&o, &text);
    let env = [
        ("SHRINKALLOC_LOCKDEP", "abort"),
        ("SHRINKALLOC_STRESS_LOCKDEP_PRELOAD", lib),
        ("SHRINKALLOC_STRESS_FUSE_DROP_SCOPE", "1"),
    ];
    let (o, text) = run("fuse", "64M", &env);
    assert_reported(&o, &text, "lock 0x", "sa-fused-blocks");
    let _ = std::fs::remove_file(lib);
}
