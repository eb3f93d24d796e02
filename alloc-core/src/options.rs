//! Every tunable of the allocator core in one table: name, environment
//! variable, default, unit and meaning. Parsed once, on the first slow-path
//! allocation of the process; a bad value is reported once on stderr and the
//! default kept. The README's options table says the same.
//!
//! ```
//! use shrinkalloc::options::{get, set, Opt};
//! set(Opt::PurgeDelayMs, 250);
//! assert_eq!(get(Opt::PurgeDelayMs), 250);
//! ```

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::os;

/// One tunable of the allocator core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    /// Milliseconds a free page stays committed before it is purged.
    PurgeDelayMs,
    /// Empty segments (4 MiB each) kept mapped for reuse, per page kind.
    SegmentCache,
    /// Bytes of freed huge blocks kept mapped for reuse.
    HugeCacheBytes,
}

struct Spec {
    opt: Opt,
    env: &'static [u8],
    default: usize,
    max: usize,
}

const TABLE: [Spec; 3] = [
    Spec { opt: Opt::PurgeDelayMs, env: b"SHRINKALLOC_PURGE_DELAY_MS\0", default: 1000, max: 3_600_000 },
    Spec { opt: Opt::SegmentCache, env: b"SHRINKALLOC_SEGMENT_CACHE\0", default: 4, max: 1024 },
    Spec { opt: Opt::HugeCacheBytes, env: b"SHRINKALLOC_HUGE_CACHE\0", default: 256 << 20, max: 1 << 40 },
];

static VALUES: [AtomicUsize; 3] =
    [AtomicUsize::new(TABLE[0].default), AtomicUsize::new(TABLE[1].default), AtomicUsize::new(TABLE[2].default)];

static PARSED: AtomicBool = AtomicBool::new(false);

/// The current value of `opt`.
#[inline]
pub fn get(opt: Opt) -> usize {
    // Relaxed: options are independent values; readers need no ordering.
    VALUES[opt as usize].load(Ordering::Relaxed)
}

/// Sets `opt` for the rest of the process (clamped to its range).
pub fn set(opt: Opt, value: usize) {
    init();
    VALUES[opt as usize].store(value.min(TABLE[opt as usize].max), Ordering::Relaxed);
}

/// Reads the environment once. Called from the first slow-path allocation.
pub(crate) fn init() {
    if PARSED.swap(true, Ordering::Relaxed) {
        return;
    }
    for spec in &TABLE {
        let Some(text) = os::getenv(spec.env) else { continue };
        match parse_size(text) {
            Some(v) if v <= spec.max => VALUES[spec.opt as usize].store(v, Ordering::Relaxed),
            _ => {
                let name = &spec.env[..spec.env.len() - 1];
                os::write_stderr(b"shrinkalloc: ignoring bad value of ");
                os::write_stderr(name);
                os::write_stderr(b"\n");
            }
        }
    }
}

/// Parses `123`, `64K`, `512M`, `2G` (binary units, optional `B`/`iB`).
/// `None` on anything else, including overflow.
pub fn parse_size(text: &[u8]) -> Option<usize> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &text[..digits] {
        n = n.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
    }
    let shift = match &text[digits..] {
        b"" | b"B" | b"b" => 0,
        b"K" | b"k" | b"KB" | b"KiB" | b"kB" => 10,
        b"M" | b"m" | b"MB" | b"MiB" => 20,
        b"G" | b"g" | b"GB" | b"GiB" => 30,
        b"T" | b"t" | b"TB" | b"TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1usize << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units_and_reject_garbage() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"512M"), Some(512 << 20));
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        assert_eq!(parse_size(b"64KiB"), Some(64 << 10));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"12X"), None);
        assert_eq!(parse_size(b"-1"), None);
        assert_eq!(parse_size(b"99999999999999999999999"), None);
        assert_eq!(parse_size(b"99999999999T"), None);
    }
}
