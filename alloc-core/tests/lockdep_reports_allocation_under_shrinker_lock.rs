//! Reclaim lockdep, from Rust: a lock that a shrinker takes while it runs
//! is learned in one explicit reclaim pass; afterwards a thread that
//! allocates while holding it is reported unless its scope keeps reclaim
//! away from that shrinker — `NOFS` for an `FS` shrinker's lock, `NOIO`
//! for an `IO` one's, and nothing for a plain shrinker's. Scopes nest,
//! locks taken with `try_lock` count, a lock released before the
//! allocation is not reported, each (lock, call site) is reported once,
//! and the report names the lock, the shrinker, its needs and the scope,
//! with both stacks. No memory pressure is needed anywhere.

use std::process::Command;
use std::sync::Mutex as StdMutex;

use shrinkalloc::lockdep;
use shrinkalloc::reclaim::{
    nofs, nofs_restore, nofs_save, noio, noio_restore, noio_save, reclaim, register, with_noio, CountResult, Level,
    Needs, ScanResult, ShrinkControl, Shrinker, ShrinkerHandle, ShrinkerOptions,
};
use shrinkalloc::sync::{Mutex, RwLock};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Reports are counted process-wide: one test at a time.
static SERIAL: StdMutex<()> = StdMutex::new(());

/// How a shrinker takes its lock when counted.
enum Take {
    Lock(&'static Mutex<u32>),
    TryLock(&'static Mutex<u32>),
    Read(&'static RwLock<u32>),
    Held(&'static StdMutex<u32>),
}

struct Taker(Take);

impl Shrinker for Taker {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        match &self.0 {
            Take::Lock(m) => drop(m.lock().unwrap()),
            Take::TryLock(m) => drop(m.try_lock().expect("nobody else holds it")),
            Take::Read(l) => drop(l.read().unwrap()),
            Take::Held(m) => {
                let g = m.lock().unwrap();
                let h = lockdep::held_as(*m, "held std mutex");
                drop(h);
                drop(g);
            }
        }
        CountResult::Empty
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        ScanResult::Stop
    }
}

/// Registers a shrinker of `needs` taking its lock as `take`, and runs one
/// pass so that lockdep learns it.
fn learn(name: &str, needs: Needs, take: Take) -> ShrinkerHandle {
    lockdep::enable();
    let h = register(Taker(take), ShrinkerOptions::new(name).needs(needs));
    reclaim(usize::MAX, Level::Critical);
    h
}

#[inline(never)]
fn allocate() {
    std::hint::black_box(vec![1u8; 200]);
}

/// Reports made while `f` runs.
fn reports_in(f: impl FnOnce()) -> u64 {
    let before = lockdep::reports();
    f();
    lockdep::reports() - before
}

#[test]
fn an_fs_shrinker_lock_needs_nofs() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static INODES: Mutex<u32> = Mutex::named("inodes", 0);
    let _h = learn("fs-inodes", Needs::FS, Take::Lock(&INODES));
    assert_eq!(
        reports_in(|| {
            let _g = INODES.lock().unwrap();
            allocate();
        }),
        1,
        "allocating holding an FS shrinker's lock, no scope"
    );
    assert_eq!(
        reports_in(|| {
            let _g = INODES.lock().unwrap();
            let _n = nofs();
            allocate();
            std::hint::black_box(vec![0u8; 8 << 20]);
        }),
        0,
        "NOFS excludes the FS shrinker"
    );
    assert_eq!(
        reports_in(|| {
            let _g = INODES.lock().unwrap();
            with_noio(allocate);
        }),
        0,
        "NOIO implies NOFS"
    );
    assert_eq!(
        reports_in(|| {
            let _g = INODES.lock().unwrap();
            std::hint::black_box(vec![0u8; 8 << 20]);
        }),
        1,
        "a huge block is an allocation too"
    );
    let mut grown = vec![0u8; 8 << 20];
    assert_eq!(
        reports_in(|| {
            let _g = INODES.lock().unwrap();
            grown.resize(16 << 20, 1); // a huge block growing in place
        }),
        1,
        "a realloc that grows is an allocation too"
    );
    drop(grown);
    // A thread that never allocated before taking the lock.
    let n = reports_in(|| {
        std::thread::spawn(|| {
            let _g = INODES.lock().unwrap();
            allocate();
        })
        .join()
        .unwrap();
    });
    assert_eq!(n, 1, "a fresh thread's first allocation");
}

#[test]
fn an_io_shrinker_lock_needs_noio() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static BLOCKS: RwLock<u32> = RwLock::named("blocks", 0);
    let _h = learn("io-blocks", Needs::IO, Take::Read(&BLOCKS));
    assert_eq!(
        reports_in(|| {
            let _g = BLOCKS.write().unwrap();
            let _n = nofs();
            allocate();
        }),
        1,
        "NOFS does not exclude an IO shrinker"
    );
    assert_eq!(
        reports_in(|| {
            let _g = BLOCKS.read().unwrap();
            let _n = noio();
            allocate();
        }),
        0,
        "NOIO excludes it"
    );
}

#[test]
fn a_plain_shrinker_lock_is_reported_in_every_scope() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static LRU: StdMutex<u32> = StdMutex::new(0);
    let _h = learn("plain-lru", Needs::NONE, Take::Held(&LRU));
    assert_eq!(
        reports_in(|| {
            let _g = LRU.lock().unwrap();
            let _h = lockdep::held(&LRU);
            let _n = noio();
            allocate();
        }),
        1,
        "no scope excludes a shrinker that needs nothing"
    );
    assert_eq!(
        reports_in(|| {
            let _g = LRU.lock().unwrap();
            let _h = lockdep::held(&LRU);
            shrinkalloc::reclaim::with_reserve(allocate);
        }),
        0,
        "an allocation that never starts reclaim is not reported"
    );
}

#[test]
fn nested_scopes_cover_until_the_outer_restore() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static DENTRIES: Mutex<u32> = Mutex::named("dentries", 0);
    let _h = learn("fs-dentries", Needs::FS, Take::Lock(&DENTRIES));
    let n = reports_in(|| {
        let _g = DENTRIES.lock().unwrap();
        let outer = noio_save();
        let inner = nofs_save();
        allocate();
        nofs_restore(inner);
        allocate(); // still NOIO, which implies NOFS
        noio_restore(outer);
    });
    assert_eq!(n, 0);
    let n = reports_in(|| {
        let _g = DENTRIES.lock().unwrap();
        let outer = nofs_save();
        let inner = nofs_save();
        nofs_restore(inner);
        allocate();
        nofs_restore(outer);
        allocate(); // the outer scope ended: reported
    });
    assert_eq!(n, 1);
}

#[test]
fn locks_taken_with_try_lock_count() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static JOURNAL: Mutex<u32> = Mutex::named("journal", 0);
    let _h = learn("fs-journal", Needs::FS, Take::TryLock(&JOURNAL));
    let n = reports_in(|| {
        let _g = JOURNAL.try_lock().unwrap();
        allocate();
    });
    assert_eq!(n, 1);
}

#[test]
fn a_lock_released_before_the_allocation_is_not_reported() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static PAGES: Mutex<u32> = Mutex::named("pages", 0);
    static OTHER: Mutex<u32> = Mutex::named("never in reclaim", 0);
    let _h = learn("fs-pages", Needs::FS, Take::Lock(&PAGES));
    let n = reports_in(|| {
        let g = PAGES.lock().unwrap();
        drop(g);
        allocate();
        let _o = OTHER.lock().unwrap();
        allocate();
    });
    assert_eq!(n, 0);
}

#[test]
fn each_lock_and_call_site_is_reported_once() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static ITABLE: Mutex<u32> = Mutex::named("itable", 0);
    let _h = learn("fs-itable", Needs::FS, Take::Lock(&ITABLE));
    let n = reports_in(|| {
        for _ in 0..100 {
            let _g = ITABLE.lock().unwrap();
            allocate();
        }
    });
    assert_eq!(n, 1);
    let stats = shrinkalloc::reclaim::stats();
    assert!(stats.lockdep_reports >= 1, "the statistics count reports");
    assert!(stats.to_string().contains("lockdep reports"));
}

/// The report's text, from a child process (this test binary, running
/// `report_child`).
#[test]
fn the_report_names_lock_shrinker_needs_scope_and_both_stacks() {
    let exe = std::env::current_exe().unwrap();
    let o = Command::new(&exe)
        .args(["--exact", "report_child", "--nocapture", "--test-threads=1"])
        .env("SHRINKALLOC_TEST_LOCKDEP_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("shrinkalloc: possible reclaim deadlock:")).expect(&err);
    for part in ["(superblock)", "shrinker \"fs-superblock\"", "(needs fs)", "scope is none", "NOFS"] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    assert_eq!(err.matches("possible reclaim deadlock").count(), 1, "{err}");
    let took = err.find("where reclaim took the lock").expect(&err);
    let alloc = err.find("where the thread allocated while holding it").expect(&err);
    assert!(took < alloc);
    // Both stacks: frames of this binary between the headings and after.
    let name = exe.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err[took..alloc].contains(&name), "no frame in the first stack: {err}");
    assert!(err[alloc..].contains(&name), "no frame in the second stack: {err}");

    // `=abort`: the same report, then the process aborts.
    let o = Command::new(&exe)
        .args(["--exact", "report_child", "--nocapture", "--test-threads=1"])
        .env("SHRINKALLOC_TEST_LOCKDEP_CHILD", "1")
        .env("SHRINKALLOC_LOCKDEP", "abort")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("possible reclaim deadlock"), "{err}");
}

/// Run only as the child of the test above.
#[test]
fn report_child() {
    if std::env::var_os("SHRINKALLOC_TEST_LOCKDEP_CHILD").is_none() {
        return;
    }
    static SUPER: Mutex<u32> = Mutex::named("superblock", 0);
    if std::env::var_os("SHRINKALLOC_LOCKDEP").is_none() {
        lockdep::enable();
    }
    let _h = register(Taker(Take::Lock(&SUPER)), ShrinkerOptions::new("fs-superblock").needs(Needs::FS));
    reclaim(usize::MAX, Level::Critical);
    let _g = SUPER.lock().unwrap();
    allocate();
}
