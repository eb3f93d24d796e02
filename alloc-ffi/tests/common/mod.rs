//! Shared by the C ABI tests: find the freshly built library, compile the C
//! programs under `tests/c/` against the header, and run programs with the
//! library preloaded.
//!
//! The library is built for this very test run: cargo does not build a
//! package's `cdylib` or `staticlib` for its integration tests (they link
//! against an `rlib`, which this crate does not produce, as its lib name
//! is the core crate's too), so the first test in each test binary runs
//! `cargo build -p shrinkalloc-ffi --lib` itself, with the profile and
//! target directory the test binary was built with. That is a no-op when
//! the library is fresh. A tool the tests need (`cc`, `nm`,
//! `/usr/bin/python3.11`, ...) that is missing fails the test with its
//! name; nothing is skipped.
#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, Once};

/// `target/<profile>/`, holding `libshrinkalloc.so` and `.a` once [`build`]
/// has run. The test binary runs from its `deps/` directory.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// Builds the library with this test binary's profile (once per test
/// binary; cargo does nothing if it is fresh).
pub fn build() {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let dir = lib_dir();
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(name) => name.to_string(),
            None => panic!("unexpected test binary location {}", dir.display()),
        };
        let target_dir = dir.parent().expect("target directory");
        let o = Command::new(env!("CARGO"))
            .args(["build", "--offline", "--lib", "-p", "shrinkalloc-ffi", "--profile", &profile, "--target-dir"])
            .arg(target_dir)
            .current_dir(crate_dir())
            .output()
            .expect("run cargo");
        assert_success(&o, "cargo build -p shrinkalloc-ffi");
    });
}

/// The freshly built `libshrinkalloc.so`.
pub fn shared_lib() -> PathBuf {
    build();
    let p = lib_dir().join("libshrinkalloc.so");
    assert!(p.is_file(), "{} missing after cargo build", p.display());
    p
}

/// The freshly built `libshrinkalloc.a`.
pub fn static_lib() -> PathBuf {
    build();
    let p = lib_dir().join("libshrinkalloc.a");
    assert!(p.is_file(), "{} missing after cargo build", p.display());
    p
}

/// The crate's directory (`alloc-ffi/`).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `shrinkalloc.h`.
pub fn include_dir() -> PathBuf {
    crate_dir().parent().expect("workspace root").join("include")
}

/// A scratch directory for this test binary's outputs.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("alloc-ffi").join(name);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Fails loudly unless `tool` runs.
pub fn require(tool: &str) {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "required tool `{tool}` is missing or broken on this machine (install it; tests never skip)");
}

/// How a C program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Plain program; the allocator comes from `LD_PRELOAD`.
    Plain,
    /// `-lshrinkalloc` against the shared library.
    Dynamic,
    /// The static library linked in before libc.
    Static,
}

/// Compiles `tests/c/<src>` with the system compiler against the header;
/// returns the executable. Linked programs are compiled with `SA_LINKED`
/// defined, so that they may call the library directly. Each program is
/// built once per test binary, however many tests ask for it. Panics with
/// the compiler's output on failure.
pub fn compile(src: &str, link: Link, extra: &[&str]) -> PathBuf {
    static BUILT: Mutex<Vec<(String, Link, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, path)) = built.iter().find(|(s, l, _)| s == src && *l == link) {
        return path.clone();
    }
    let path = compile_now(src, link, extra);
    built.push((src.to_string(), link, path.clone()));
    path
}

fn compile_now(src: &str, link: Link, extra: &[&str]) -> PathBuf {
    require("cc");
    let source = crate_dir().join("tests").join("c").join(src);
    let stem = Path::new(src).file_stem().unwrap().to_string_lossy().into_owned();
    let out = scratch("bin").join(format!("{stem}-{link:?}").to_lowercase());
    let mut cmd = Command::new("cc");
    cmd.args(["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-I"])
        .arg(include_dir())
        .arg(&source)
        .args(extra)
        .arg("-o")
        .arg(&out);
    match link {
        Link::Plain => {
            cmd.arg("-ldl");
        }
        Link::Dynamic => {
            cmd.arg("-DSA_LINKED").arg(shared_lib()).arg(format!("-Wl,-rpath,{}", lib_dir().display()));
        }
        Link::Static => {
            // The staticlib's native dependencies, from `--print native-static-libs`.
            cmd.arg("-DSA_LINKED").arg(static_lib()).args(["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"]);
        }
    }
    let o = cmd.output().expect("run cc");
    assert!(o.status.success(), "cc {src} ({link:?}) failed:\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// `program args...` with the library preloaded.
pub fn preloaded(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("LD_PRELOAD", shared_lib());
    c
}

/// Runs `cmd`, returning its output (never panics on a non-zero status).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Asserts `o` exited 0, showing its output otherwise.
pub fn assert_success(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Asserts `o` died of SIGABRT after printing exactly one line on stderr,
/// which starts with `shrinkalloc: ` and contains `needle`.
pub fn assert_aborted_with(o: &Output, needle: &str, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{what}: expected SIGABRT, got {:?}; stderr:\n{err}", o.status);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line on stderr, got:\n{err}");
    assert!(
        lines[0].starts_with("shrinkalloc: ") && lines[0].contains(needle),
        "{what}: unexpected message {:?}",
        lines[0]
    );
}

/// Stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
