//! With the `double-free-check` feature, a double free is caught even when
//! other blocks of the same page were freed in between (without it, only
//! the block freed last, a block of a released page and a huge block are
//! caught; the README's "Double frees" says why and what the check costs).
//! `.ci/run` runs this file with the feature:
//! `cargo test --release -p shrinkalloc --features double-free-check --test double_free_check`.
//!
//! Each case runs in a child process (this test binary again, running only
//! the ignored `child` test), since a caught double free aborts it.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use shrinkalloc::raw;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

fn run_child(mode: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("DOUBLE_FREE_MODE", mode)
        .output()
        .expect("run the test binary as a child")
}

fn assert_aborted_with(o: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "not aborted ({:?}); stderr:\n{stderr}", o.status);
    assert!(stderr.contains(message), "stderr lacks {message:?}:\n{stderr}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("survived"), "the child went on after the double free");
}

/// Three 64-byte blocks of one page, as C's `malloc` gives them.
fn three() -> [*mut u8; 3] {
    let b = [raw::malloc_c(64), raw::malloc_c(64), raw::malloc_c(64)];
    assert!(b.iter().all(|p| !p.is_null()));
    b
}

#[test]
#[ignore = "the child process of the tests below"]
fn child() {
    let Ok(mode) = std::env::var("DOUBLE_FREE_MODE") else { return };
    let [a, b, keep] = three();
    match mode.as_str() {
        // SAFETY: blocks from `malloc_c`, freed with the checked free; the
        // second free of `a` is the point, and is caught before anything
        // is written.
        "after-other-frees" => unsafe {
            raw::free(a);
            raw::free(b);
            raw::free(a);
        },
        "from-another-thread" => {
            let (a, b) = (a as usize, b as usize);
            // SAFETY: as above, from a thread that does not own the page.
            std::thread::spawn(move || unsafe {
                raw::free(a as *mut u8);
                raw::free(b as *mut u8);
                raw::free(a as *mut u8);
            })
            .join()
            .unwrap();
        }
        // A live block whose second word holds what a freed block of its
        // page holds: the owner walks the lists and frees it.
        // SAFETY: every block is 64 bytes from `malloc_c`, read and written
        // inside, and freed once; `a` is read after its free, which is our
        // own memory still (its page holds the live `keep`).
        "mark-in-live-data" => unsafe {
            raw::free(a);
            let mark = a.cast::<usize>().add(1).read_volatile();
            b.cast::<usize>().add(1).write(mark);
            raw::free(b);
            let again = three();
            for p in again {
                p.write_bytes(5, 64);
                raw::free(p);
            }
        },
        other => panic!("unknown mode {other}"),
    }
    // SAFETY: `keep` is live and freed once.
    unsafe { raw::free(keep) };
    println!("survived {mode}");
}

#[test]
#[cfg_attr(not(feature = "double-free-check"), ignore = "needs --features double-free-check (.ci/run runs it)")]
fn a_double_free_after_other_frees_of_the_page_aborts() {
    assert_aborted_with(&run_child("after-other-frees"), "free(): double free");
}

#[test]
#[cfg_attr(not(feature = "double-free-check"), ignore = "needs --features double-free-check (.ci/run runs it)")]
fn a_double_free_from_another_thread_aborts() {
    assert_aborted_with(&run_child("from-another-thread"), "free(): double free");
}

#[test]
fn a_live_block_that_holds_the_mark_is_freed() {
    let o = run_child("mark-in-live-data");
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("survived mark-in-live-data"),
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
