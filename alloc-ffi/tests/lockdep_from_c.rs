//! Reclaim lockdep for C programs: `libshrinkalloc_lockdep.so` (built here
//! from `alloc-ffi/lockdep/shrinkalloc_lockdep.c`) preloaded into a
//! program linked with `-lshrinkalloc` sees its pthread mutexes and
//! rwlocks, taken by lock, trylock and timedlock; `tests/c/lockdep.c`
//! checks the counts case by case (FS, IO and plain shrinkers, nested
//! scopes, a lock released before the allocation, a lock annotated by
//! hand), and this file checks that each report names the right lock,
//! shrinker, needs and scope, with the program's symbols in both stacks.
//! With the checker off, the same program sees no report; with `=abort`,
//! the first report aborts it.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::{compile, crate_dir, output, require, scratch, stderr, stdout, Link};

/// The interposer, compiled once per test binary.
fn interposer() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            require("cc");
            let out = scratch("lockdep").join("libshrinkalloc_lockdep.so");
            let src = crate_dir().join("lockdep").join("shrinkalloc_lockdep.c");
            let o = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&out)
                .arg(&src)
                .output()
                .expect("run cc");
            assert!(o.status.success(), "cc shrinkalloc_lockdep.c:\n{}", String::from_utf8_lossy(&o.stderr));
            out
        })
        .clone()
}

fn run(mode: Option<&str>, arg: &str) -> std::process::Output {
    let bin = compile("lockdep.c", Link::Dynamic, &["-rdynamic"]);
    let mut cmd = Command::new(bin);
    cmd.arg(arg).env("LD_PRELOAD", interposer()).env_remove("SHRINKALLOC_LOCKDEP");
    if let Some(m) = mode {
        cmd.env("SHRINKALLOC_LOCKDEP", m);
    }
    output(&mut cmd)
}

/// The address the program printed for `name` (`fs=0x...`).
fn addr(out: &str, name: &str) -> String {
    let w = out.split_whitespace().find(|w| w.starts_with(&format!("{name}="))).expect(out);
    w[name.len() + 1..].to_string()
}

#[test]
fn pthread_locks_of_shrinkers_are_learned_and_each_report_names_them() {
    let o = run(Some("1"), "on");
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success() && out.ends_with("ok\n"), "stdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("shrinkalloc: possible reclaim deadlock:")).collect();
    assert_eq!(lines.len(), 7, "{err}");
    let with = |a: &str| lines.iter().filter(|l| l.contains(&format!("lock {a},"))).copied().collect::<Vec<_>>();
    let fs = with(&addr(&out, "fs"));
    assert_eq!(fs.len(), 4, "{err}");
    assert!(fs.iter().all(|l| l.contains("shrinker \"fs-cache\" (needs fs)")), "{fs:?}");
    let io = with(&addr(&out, "io"));
    assert!(io.len() == 1 && io[0].contains("\"io-cache\" (needs io)") && io[0].contains("scope is nofs"), "{io:?}");
    let plain = with(&addr(&out, "plain"));
    assert!(
        plain.len() == 1 && plain[0].contains("\"plain-cache\" (needs none)") && plain[0].contains("scope is noio"),
        "{plain:?}"
    );
    let custom = lines.iter().find(|l| l.contains("(custom-spin)")).expect(&err);
    assert!(custom.contains(&addr(&out, "custom")) && custom.contains("\"fs-cache\""), "{custom}");
    // Both stacks, with the program's own symbols (-rdynamic).
    for sym in ["fs_count", "io_count", "plain_count", "alloc_holding_fs_lock", "alloc_in_nested_scopes"] {
        assert!(err.contains(&format!("({sym}+")), "{sym} missing from the stacks:\n{err}");
    }
}

#[test]
fn with_the_checker_off_the_interposer_only_forwards() {
    let o = run(None, "off");
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success() && out.ends_with("ok\n"), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!err.contains("possible reclaim deadlock"), "{err}");
}

#[test]
fn abort_mode_aborts_at_the_first_report() {
    let o = run(Some("abort"), "on");
    let err = stderr(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{err}");
    assert_eq!(err.matches("possible reclaim deadlock").count(), 1, "{err}");
    assert!(err.contains("\"fs-cache\""), "{err}");
}
