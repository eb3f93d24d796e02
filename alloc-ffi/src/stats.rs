//! What the library reports about itself: `sa_stats_print`, `sa_version`,
//! and the statistics printed at exit under `SHRINKALLOC_STATS=1`.
//!
//! The figures are the core's (`shrinkalloc::stats()` and
//! `shrinkalloc::reclaim::stats()`); this file only renders them, as the
//! core's text or as one JSON object whose keys are the Rust field names.
//! Rendering allocates, so none of it runs inside `malloc`.

use core::ffi::{c_char, c_int};
use core::fmt::{self, Write};

use shrinkalloc::options::{self, Var};
use shrinkalloc::reclaim::{self, Level, ReclaimStats, Trigger};

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
        r#"{{"version":"{}","mapped":{},"committed":{},"in_use":{},"resident":{},"purged":{},"segments":{},"heaps":{},"reclaim":"#,
        env!("CARGO_PKG_VERSION"),
        s.mapped,
        s.committed,
        s.in_use,
        s.resident,
        s.purged,
        s.segments,
        s.heaps
    )?;
    write_reclaim_json(out, &reclaim::stats())?;
    out.write_str("}\n")
}

fn write_reclaim_json(out: &mut String, r: &ReclaimStats) -> fmt::Result {
    let opt = |v: Option<usize>| v.map_or_else(|| "null".to_string(), |b| b.to_string());
    write!(
        out,
        r#"{{"soft_limit":{},"hard_limit":{},"committed":{},"passes_by_level":{{"#,
        opt(r.soft_limit),
        opt(r.hard_limit),
        r.committed
    )?;
    for (i, level) in [Level::None, Level::Low, Level::Medium, Level::Critical].iter().enumerate() {
        write!(out, r#"{}"{}":{}"#, if i == 0 { "" } else { "," }, level.name(), r.passes_by_level[i])?;
    }
    out.write_str(r#"},"passes_by_trigger":{"#)?;
    for (i, t) in [Trigger::Direct, Trigger::Background, Trigger::Explicit].iter().enumerate() {
        write!(out, r#"{}"{}":{}"#, if i == 0 { "" } else { "," }, t.name(), r.passes_by_trigger[i])?;
    }
    write!(
        out,
        r#"}},"bytes_freed":{},"pass_time_ns":{},"max_pass_ns":{},"failed_charges":{},"reserve_charges":{},"background_wakes":{},"workers_started":{},"panics":{},"shrinkers":["#,
        r.bytes_freed,
        r.pass_time_ns,
        r.max_pass_ns,
        r.failed_charges,
        r.reserve_charges,
        r.background_wakes,
        r.workers_started,
        r.panics
    )?;
    for (i, s) in r.shrinkers.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        out.write_str(r#"{"name":"#)?;
        write_json_string(out, &s.name)?;
        write!(
            out,
            r#","needs":"{}","seeks":{},"batch":{},"count_calls":{},"scan_calls":{},"objects_scanned":{},"objects_freed":{},"skipped_by_mask":{},"stops":{},"deferred":{},"last_count":{},"time_ns":{},"disabled":{}}}"#,
            s.needs.name(),
            s.seeks,
            s.batch,
            s.count_calls,
            s.scan_calls,
            s.objects_scanned,
            s.objects_freed,
            s.skipped_by_mask,
            s.stops,
            s.deferred,
            s.last_count,
            s.time_ns,
            s.disabled
        )?;
    }
    out.write_str("]}")
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

/// `SHRINKALLOC_STATS=1`: the statistics on stderr at exit, as text or, with
/// `SHRINKALLOC_STATS_FORMAT=json`, as JSON. Bad values are reported (once,
/// by `shrinkalloc::options`).
extern "C" fn print_at_exit() {
    // The choices are `0`, `1` and `text`, `json`, in that order.
    if options::env_choice(Var::Stats) != 1 {
        return;
    }
    let json = options::env_choice(Var::StatsFormat) == 1;
    write_all(2, render(json).as_bytes());
}

/// Runs `print_at_exit` when the library is unloaded, that is at process
/// exit (after `atexit` handlers; not on `_exit` or a fatal signal). In the
/// static library this object is linked only if something else in it is,
/// so statically linked programs call `sa_stats_print` themselves.
#[used]
#[link_section = ".fini_array"]
static PRINT_AT_EXIT: extern "C" fn() = print_at_exit;
