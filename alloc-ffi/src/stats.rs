//! What the library reports about itself: `sa_stats_print`, `sa_version`,
//! and the statistics printed at exit under `SHRINKALLOC_STATS=1`.
//!
//! The figures are the core's (`shrinkalloc::stats()` and
//! `shrinkalloc::reclaim::stats()`); this file only renders them: as the
//! core's text, as one JSON object whose keys are the Rust field names, or
//! as numbers for C (`sa_reclaim_stats`). Reclaim's statistics are declared
//! once in the core; the JSON and the C view walk that declaration
//! (`ReclaimStats::fields`), so neither can drift from the text.
//! Rendering allocates, so none of it runs inside `malloc`.

use core::ffi::{c_char, c_int};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::ffi::CString;
use std::sync::OnceLock;

use shrinkalloc::options::{self, Var};
use shrinkalloc::reclaim::{self, Field, ReclaimStats, Value};

/// `sa_version`'s string, NUL-terminated.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library's version as a static C string.
#[no_mangle]
pub extern "C" fn sa_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// Writes the statistics to `fd` as text, or as JSON when `json != 0`;
/// 0, or -1 with `errno` from `write(2)`.
#[no_mangle]
pub extern "C" fn sa_stats_print(fd: c_int, json: c_int) -> c_int {
    // The text is built on the reclaim reserve, so statistics can be printed
    // at the hard limit, when they matter most.
    shrinkalloc::reclaim::with_reserve(|| write_all(fd, render(json != 0).as_bytes()))
}

fn render(json: bool) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = if json { write_json(&mut out) } else { write_text(&mut out) };
    out
}

fn write_text(out: &mut String) -> fmt::Result {
    writeln!(out, "shrinkalloc {}: {}", env!("CARGO_PKG_VERSION"), shrinkalloc::stats())?;
    write!(out, "{}", reclaim::stats())
}

fn write_json(out: &mut String) -> fmt::Result {
    let s = shrinkalloc::stats();
    write!(
        out,
        r#"{{"version":"{}","mapped":{},"committed":{},"in_use":{},"resident":{},"purged":{},"segments":{},"heaps":{},"stranded_pages":{},"reclaim":"#,
        env!("CARGO_PKG_VERSION"),
        s.mapped,
        s.committed,
        s.in_use,
        s.resident,
        s.purged,
        s.segments,
        s.heaps,
        s.stranded_pages
    )?;
    write_reclaim_json(out, &reclaim::stats())?;
    out.write_str("}\n")
}

/// Reclaim's statistics as one JSON object: every field of the core's
/// declaration ([`ReclaimStats::fields`]), under its Rust name.
fn write_reclaim_json(out: &mut String, r: &ReclaimStats) -> fmt::Result {
    write_json_object(out, &r.fields())
}

fn write_json_object(out: &mut String, fields: &[Field]) -> fmt::Result {
    out.write_char('{')?;
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write_json_string(out, f.key)?;
        out.write_char(':')?;
        write_json_value(out, &f.value)?;
    }
    out.write_char('}')
}

fn write_json_value(out: &mut String, v: &Value) -> fmt::Result {
    match v {
        Value::Count(n) | Value::Nanos(n) | Value::Bytes(Some(n)) => write!(out, "{n}"),
        Value::Bytes(None) | Value::Text(None) => out.write_str("null"),
        Value::Flag(b) => write!(out, "{b}"),
        Value::Text(Some(t)) => write_json_string(out, t),
        Value::Counts(c) => {
            out.write_char('{')?;
            for (i, (name, n)) in c.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                write_json_string(out, name)?;
                write!(out, ":{n}")?;
            }
            out.write_char('}')
        }
        Value::Records { items, .. } => {
            out.write_char('[')?;
            for (i, rec) in items.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                write_json_object(out, rec)?;
            }
            out.write_char(']')
        }
        // A kind of value added to the core later: null until rendered here.
        _ => out.write_str("null"),
    }
}

/// The C view: every number of the declaration, flattened to
/// `(name, value)` (counts by name as `field.name`); texts and records are
/// left out. Bytes that are none read 0.
fn c_view(r: &ReclaimStats) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for f in r.fields() {
        match f.value {
            Value::Count(n) | Value::Nanos(n) | Value::Bytes(Some(n)) => v.push((f.key.to_string(), n)),
            Value::Bytes(None) => v.push((f.key.to_string(), 0)),
            Value::Flag(b) => v.push((f.key.to_string(), u64::from(b))),
            Value::Counts(c) => v.extend(c.into_iter().map(|(name, n)| (format!("{}.{name}", f.key), n))),
            _ => {}
        }
    }
    v
}

/// The names of the C view, NUL-terminated, built once: they are fixed by
/// the declaration, so the pointers `sa_reclaim_stats` hands out stay
/// valid for the life of the process.
fn c_names() -> &'static [CString] {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    NAMES.get_or_init(|| {
        c_view(&reclaim::stats()).into_iter().map(|(n, _)| CString::new(n).unwrap_or_default()).collect()
    })
}

/// Reads reclaim's statistics as numbers: writes up to `n` values into
/// `values` and their names into `names` (either may be NULL), in the
/// order of the core's declaration; returns how many there are in all, so
/// a caller sized for fewer (an older header) reads a prefix.
///
/// # Safety
///
/// `values` and `names`, when not null, must be valid for writes of `n`
/// elements.
#[no_mangle]
pub unsafe extern "C" fn sa_reclaim_stats(values: *mut u64, names: *mut *const c_char, n: usize) -> usize {
    shrinkalloc::reclaim::with_reserve(|| {
        let view = c_view(&reclaim::stats());
        let labels = c_names();
        for (i, (_, v)) in view.iter().enumerate().take(n) {
            if !values.is_null() {
                // SAFETY: the caller made `values` valid for `n` writes; i < n.
                unsafe { values.add(i).write(*v) };
            }
            if !names.is_null() {
                let name = labels.get(i).map_or(c"".as_ptr(), |c| c.as_ptr());
                // SAFETY: the caller made `names` valid for `n` writes; i < n.
                unsafe { names.add(i).write(name) };
            }
        }
        view.len()
    })
}

/// A JSON string literal (RFC 8259 escapes).
fn write_json_string(out: &mut String, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Writes all of `buf` to `fd`, retrying short writes and `EINTR`.
fn write_all(fd: c_int, mut buf: &[u8]) -> c_int {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            // SAFETY: `__errno_location` returns this thread's errno slot.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return -1;
        }
        buf = buf.get(n as usize..).unwrap_or_default();
    }
    0
}

/// The lowest descriptor number the start-up copy of stderr may take: out
/// of the way of a program that expects its next `open` to return 3.
const KEPT_FD_MIN: c_int = 100;

/// A copy of the stderr the process started with (`-1`: none), and that
/// file's identity (device, inode) so that a copy closed and its number
/// reused by the program is never written to.
static KEPT: AtomicI32 = AtomicI32::new(-1);
static KEPT_ID: AtomicU64 = AtomicU64::new(0);

/// The (device, inode) of `fd` folded into one number, or `None` when it
/// is not open.
fn file_id(fd: c_int) -> Option<u64> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for one `struct stat` written by the kernel.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it wrote the whole struct.
    let st = unsafe { st.assume_init() };
    Some(st.st_dev.rotate_left(32) ^ st.st_ino)
}

/// At start-up, under `SHRINKALLOC_STATS=1`: keeps a copy of stderr (close
/// on exec), so that the statistics reach it even when the program closed
/// stderr or put another file on descriptor 2 (a daemon that detaches).
extern "C" fn keep_stderr() {
    if options::env_choice(Var::Stats) != 1 {
        return;
    }
    let Some(id) = file_id(2) else { return };
    // SAFETY: fcntl on a descriptor number; no memory is passed.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, KEPT_FD_MIN) };
    // SAFETY: as above; the fallback when the limit on descriptors is low.
    let fd = if fd < 0 { unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) } } else { fd };
    if fd >= 0 {
        // Relaxed: written once before `main`, read at exit by the same
        // process (the loader orders the constructors before the finalisers).
        KEPT_ID.store(id, Ordering::Relaxed);
        KEPT.store(fd, Ordering::Relaxed);
    }
}

/// Where the statistics go at exit: stderr while it is still the file it
/// was at start-up (or there is no copy), else the copy while it is still
/// that file, else whatever descriptor 2 is now.
fn stats_fd() -> c_int {
    // Relaxed: see `keep_stderr`.
    let (kept, id) = (KEPT.load(Ordering::Relaxed), KEPT_ID.load(Ordering::Relaxed));
    if kept < 0 || file_id(2) == Some(id) || file_id(kept) != Some(id) {
        2
    } else {
        kept
    }
}

/// Runs `keep_stderr` when the library is loaded, before `main`.
#[used]
#[link_section = ".init_array"]
static KEEP_STDERR: extern "C" fn() = keep_stderr;

/// `SHRINKALLOC_STATS=1`: the statistics on stderr at exit, as text or, with
/// `SHRINKALLOC_STATS_FORMAT=json`, as JSON; on the stderr the process
/// started with, even if it closed it since (see `keep_stderr`). Bad values
/// are reported (once, by `shrinkalloc::options`).
extern "C" fn print_at_exit() {
    // The choices are `0`, `1` and `text`, `json`, in that order.
    if options::env_choice(Var::Stats) != 1 {
        return;
    }
    let json = options::env_choice(Var::StatsFormat) == 1;
    write_all(stats_fd(), render(json).as_bytes());
}

/// Runs `print_at_exit` when the library is unloaded, that is at process
/// exit (after `atexit` handlers; not on `_exit` or a fatal signal). In the
/// static library this object is linked only if something else in it is,
/// so statically linked programs call `sa_stats_print` themselves.
#[used]
#[link_section = ".fini_array"]
static PRINT_AT_EXIT: extern "C" fn() = print_at_exit;

#[cfg(test)]
mod tests {
    use super::*;
    use shrinkalloc::reclaim::{register, CountResult, Level, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};

    struct Some10;
    impl Shrinker for Some10 {
        fn count(&self, _: &ShrinkControl) -> CountResult {
            CountResult::Count(10)
        }
        fn scan(&self, sc: &ShrinkControl) -> ScanResult {
            ScanResult::Freed(sc.nr_to_scan())
        }
    }

    /// `json` holds `"key":VALUE` for every field of `fields`, recursively,
    /// and the text shows every label and every count by name it has.
    fn assert_carried(json: &str, text: &str, fields: &[Field]) {
        for f in fields {
            let key = format!("\"{}\":", f.key);
            assert!(json.contains(&key), "JSON lacks {key}: {json}");
            match &f.value {
                Value::Count(n) | Value::Nanos(n) | Value::Bytes(Some(n)) => {
                    assert!(json.contains(&format!("{key}{n}")), "{key}{n} not in {json}")
                }
                Value::Counts(c) => {
                    for (name, n) in c {
                        assert!(json.contains(&format!("\"{name}\":{n}")), "{name} {n} not in {json}");
                        assert!(text.contains(&format!("{name} {n}")), "{name} {n} not in {text}");
                    }
                }
                Value::Records { items, .. } => items.iter().for_each(|rec| assert_carried(json, text, rec)),
                _ => {}
            }
            match (&f.value, f.label) {
                (Value::Flag(false), _) | (_, "") => {}
                (Value::Flag(true), label) => assert!(text.contains(&label.to_uppercase()), "{label}: {text}"),
                (_, label) => assert!(text.contains(label), "the text lacks {label:?}: {text}"),
            }
        }
    }

    #[test]
    fn json_carries_every_field_the_text_shows() {
        let _h = register(Some10, ShrinkerOptions::new("json-check").batch(1));
        reclaim::reclaim(usize::MAX, Level::Critical);
        let r = reclaim::stats();
        let text = r.to_string();
        let mut json = String::new();
        write_reclaim_json(&mut json, &r).unwrap();
        assert_carried(&json, &text, &r.fields());
        // What the JSON once left out, by name.
        for key in ["failed_maps", "sources", "recent", "mmap failure", "systemd watch", "json-check"] {
            assert!(json.contains(key), "{key} missing from {json}");
        }
        assert!(text.contains("mmaps failed") && text.contains("last pass explicit: critical"), "{text}");
    }

    #[test]
    fn the_c_view_names_every_number_in_declaration_order() {
        // SAFETY: null arrays are allowed; nothing is written.
        let n = unsafe { sa_reclaim_stats(core::ptr::null_mut(), core::ptr::null_mut(), 0) };
        let mut values = vec![0u64; n];
        let mut names = vec![core::ptr::null(); n];
        // SAFETY: both arrays hold `n` elements.
        assert_eq!(unsafe { sa_reclaim_stats(values.as_mut_ptr(), names.as_mut_ptr(), n) }, n);
        let names: Vec<String> = names
            .iter()
            // SAFETY: the library wrote a static NUL-terminated string into each.
            .map(|&p| unsafe { core::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "committed");
        for key in
            ["failed_maps", "passes_by_level.critical", "passes_by_trigger.direct", "passes_by_trigger.mmap failure"]
        {
            assert!(names.iter().any(|n| n == key), "{key} not in {names:?}");
        }
        // Thirteen numbers, the passes by level and by trigger.
        assert_eq!(n, 13 + 4 + shrinkalloc::reclaim::Trigger::COUNT, "{names:?}");
    }
}
