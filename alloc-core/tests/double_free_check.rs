//! With the `double-free-check` feature, a double free is caught even when
//! other blocks of the same page were freed in between (without it, only
//! the block freed last, a block of a released page and a huge block are
//! caught; the README's "Double frees" says why and what the check costs).
//! `.ci/run` runs this file with the feature:
//! `cargo test --release -p shrinkalloc --features double-free-check --test double_free_check`.
//!
//! Each case runs in a child process (this test binary again, running only
//! the ignored `child` test), since a caught double free aborts it.

mod sleeper;

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
        // A page another thread emptied while its owner slept (every block
        // freed from here, then a purge): a free into it is a second one,
        // from the owner or from another thread.
        "into-an-emptied-page-by-its-owner" => {
            let (blocks, wake, alarm, owner) = emptied_page();
            let first = blocks[0];
            wake.send(Box::new(move || {
                // SAFETY: freed already (from the other thread): the point.
                unsafe { raw::free(first as *mut u8) }
            }))
            .unwrap();
            alarm.wake();
            owner.join().unwrap();
        }
        "into-an-emptied-page-by-another-thread" => {
            let (blocks, _wake, _alarm, _owner) = emptied_page();
            // SAFETY: freed already: the point.
            unsafe { raw::free(blocks[0] as *mut u8) };
        }
        other => panic!("unknown mode {other}"),
    }
    // SAFETY: `keep` is live and freed once.
    unsafe { raw::free(keep) };
    println!("survived {mode}");
}

/// Action the owner thread of [`emptied_page`] runs when it wakes.
type Wake = Box<dyn FnOnce() + Send>;

/// A thread allocates two pages and a little of 64-byte blocks and sleeps
/// (in `read(2)`, see `sleeper`); this thread frees them all and purges,
/// which empties the sleeper's full pages. Returns the blocks' addresses,
/// the channel of what the sleeper does when woken, its alarm and its
/// handle.
fn emptied_page() -> (Vec<usize>, std::sync::mpsc::Sender<Wake>, sleeper::Alarm, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<Wake>();
    let (bed, alarm) = sleeper::bed();
    let owner = std::thread::spawn(move || {
        let blocks: Vec<usize> = (0..2 * 1024 + 8).map(|_| raw::malloc_c(64) as usize).collect();
        assert!(blocks.iter().all(|&p| p != 0));
        tx.send(blocks).unwrap();
        if bed.sleep() {
            if let Ok(action) = wake_rx.try_recv() {
                action();
            }
        }
    });
    let blocks = rx.recv().unwrap();
    alarm.wait_asleep();
    let before = shrinkalloc::stats().stranded_pages;
    for &p in &blocks {
        // SAFETY: live blocks from `malloc_c`, each freed once here.
        unsafe { raw::free(p as *mut u8) };
    }
    shrinkalloc::purge();
    let emptied = shrinkalloc::stats().stranded_pages - before;
    assert!(emptied >= 2, "the sleeping owner's full pages were not emptied ({emptied})");
    (blocks, wake_tx, alarm, owner)
}

#[test]
#[cfg_attr(not(feature = "double-free-check"), ignore = "needs --features double-free-check (.ci/run runs it)")]
fn a_double_free_into_an_emptied_page_by_its_owner_aborts() {
    assert_aborted_with(&run_child("into-an-emptied-page-by-its-owner"), "free(): double free");
}

#[test]
#[cfg_attr(not(feature = "double-free-check"), ignore = "needs --features double-free-check (.ci/run runs it)")]
fn a_double_free_into_an_emptied_page_by_another_thread_aborts() {
    assert_aborted_with(&run_child("into-an-emptied-page-by-another-thread"), "free(): double free");
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
