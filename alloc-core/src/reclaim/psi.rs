//! Pressure stall information (PSI): the texts the kernel and systemd hand
//! us, parsed without allocating.
//!
//! A PSI file (`/proc/pressure/memory`, or a cgroup v2 group's
//! `memory.pressure`) reads as two lines, the share of time in which *some*
//! task, or *all* (`full`) non-idle tasks, waited for memory:
//!
//! ```text
//! some avg10=0.13 avg60=0.15 avg300=0.04 total=178748
//! full avg10=0.03 avg60=0.04 avg300=0.00 total=46585
//! ```
//!
//! Writing a [`PsiTrigger`] (`some 150000 2000000`: 150 ms of stall within
//! any 2 s window) to an open PSI file arms it: `poll` then reports
//! `POLLPRI` each time the threshold is crossed, at most once per window.
//! Without `CAP_SYS_RESOURCE` the kernel takes only windows that are a
//! multiple of 2 s and checks them on its 2 s averaging tick, so an event
//! comes up to 2 s after the stall (measured on the CI machine).
//!
//! systemd's services get the file to watch in `MEMORY_PRESSURE_WATCH` and
//! the trigger to write, base64-encoded, in `MEMORY_PRESSURE_WRITE`
//! ([`decode_base64`]).
//!
//! Invariant: every parser takes bytes and returns a value or `None`; none
//! allocates or panics on any input (`tests/pressure_parsing.rs` feeds them
//! garbage).

/// Which PSI line: some tasks stalled, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallKind {
    /// At least one task waited for memory.
    Some,
    /// Every non-idle task waited at once.
    Full,
}

impl StallKind {
    fn word(self) -> &'static [u8] {
        match self {
            StallKind::Some => b"some",
            StallKind::Full => b"full",
        }
    }

    fn from_word(w: &[u8]) -> Option<Self> {
        match w {
            b"some" => Some(StallKind::Some),
            b"full" => Some(StallKind::Full),
            _ => None,
        }
    }
}

/// One line of a PSI file. Averages are in hundredths of a percent
/// (`avg10=1.25` is 125).
///
/// ```
/// use shrinkalloc::reclaim::psi::{parse_line, StallKind};
/// let l = parse_line(b"some avg10=1.25 avg60=0.50 avg300=0.00 total=178748").unwrap();
/// assert_eq!((l.kind, l.avg10, l.total_us), (StallKind::Some, 125, 178748));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PsiLine {
    /// `some` or `full`.
    pub kind: StallKind,
    /// Share of the last 10 s stalled, in hundredths of a percent.
    pub avg10: u32,
    /// Share of the last 60 s.
    pub avg60: u32,
    /// Share of the last 300 s.
    pub avg300: u32,
    /// Total stall time since boot (or since the group was made), in µs.
    pub total_us: u64,
}

/// Parses a decimal integer of at most 20 digits.
fn parse_u64(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 20 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    t.iter().try_fold(0u64, |acc, &b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

/// Parses `12.34` (at most two decimals) as 1234 hundredths.
fn parse_centi(t: &[u8]) -> Option<u32> {
    let (int, frac) = match t.iter().position(|&b| b == b'.') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, &b""[..]),
    };
    if frac.len() > 2 || !frac.iter().all(u8::is_ascii_digit) || int.len() > 6 {
        return None;
    }
    let mut f = frac.iter().try_fold(0u32, |acc, &b| Some(acc * 10 + u32::from(b - b'0')))?;
    if frac.len() == 1 {
        f *= 10;
    }
    u32::try_from(parse_u64(int)?).ok()?.checked_mul(100)?.checked_add(f)
}

/// Parses one PSI line; `None` unless it has the kind word and all four
/// fields, in the kernel's order.
pub fn parse_line(line: &[u8]) -> Option<PsiLine> {
    let mut words = line.trim_ascii().split(|&b| b == b' ').filter(|w| !w.is_empty());
    let kind = StallKind::from_word(words.next()?)?;
    let mut field = |name: &[u8]| {
        let w = words.next()?;
        w.strip_prefix(name)?.strip_prefix(b"=")
    };
    let avg10 = parse_centi(field(b"avg10")?)?;
    let avg60 = parse_centi(field(b"avg60")?)?;
    let avg300 = parse_centi(field(b"avg300")?)?;
    let total_us = parse_u64(field(b"total")?)?;
    Some(PsiLine { kind, avg10, avg60, avg300, total_us })
}

/// Parses a whole PSI file: its `some` and `full` lines, each `None` when
/// missing or malformed (older kernels have no `full` line for CPU).
///
/// ```
/// let (some, full) = shrinkalloc::reclaim::psi::parse(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n");
/// assert_eq!(some.unwrap().total_us, 1);
/// assert!(full.is_none());
/// ```
pub fn parse(text: &[u8]) -> (Option<PsiLine>, Option<PsiLine>) {
    let (mut some, mut full) = (None, None);
    for l in text.split(|&b| b == b'\n').filter_map(parse_line) {
        match l.kind {
            StallKind::Some => some = some.or(Some(l)),
            StallKind::Full => full = full.or(Some(l)),
        }
    }
    (some, full)
}

/// The kernel's bounds on a trigger's window (`WINDOW_MIN_US`, `WINDOW_MAX_US`).
const WINDOW_MIN_US: u64 = 500_000;
const WINDOW_MAX_US: u64 = 10_000_000;
/// Without `CAP_SYS_RESOURCE`, windows must be a multiple of this.
pub const UNPRIVILEGED_WINDOW_STEP_US: u64 = 2_000_000;

/// A PSI trigger: notify when tasks stalled `stall_us` within `window_us`.
///
/// ```
/// use shrinkalloc::reclaim::psi::{PsiTrigger, StallKind};
/// let t = PsiTrigger { kind: StallKind::Some, stall_us: 150_000, window_us: 2_000_000 };
/// let mut buf = [0u8; PsiTrigger::TEXT_MAX];
/// assert_eq!(t.format(&mut buf), b"some 150000 2000000\0");
/// assert!(t.is_valid(false));
/// assert_eq!(PsiTrigger::parse(b"some 150000 2000000\0"), Some(t));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PsiTrigger {
    /// `some` or `full`.
    pub kind: StallKind,
    /// Stall time, in µs, that fires the trigger.
    pub stall_us: u64,
    /// The window it is measured over, in µs.
    pub window_us: u64,
}

impl PsiTrigger {
    /// Room [`format`](Self::format) needs.
    pub const TEXT_MAX: usize = 48;

    /// Whether the kernel accepts it: `0 < stall <= window`, window within
    /// 0.5–10 s and, for a process without `CAP_SYS_RESOURCE`
    /// (`privileged == false`), a multiple of 2 s.
    pub fn is_valid(&self, privileged: bool) -> bool {
        let w = self.window_us;
        let window_ok = (WINDOW_MIN_US..=WINDOW_MAX_US).contains(&w);
        let step_ok = privileged || w % UNPRIVILEGED_WINDOW_STEP_US == 0;
        self.stall_us > 0 && self.stall_us <= w && window_ok && step_ok
    }

    /// The text to write to a PSI file, NUL-terminated as the kernel
    /// accepts it.
    pub fn format<'b>(&self, buf: &'b mut [u8; Self::TEXT_MAX]) -> &'b [u8] {
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            for &b in bytes {
                buf[len] = b;
                len += 1;
            }
        };
        put(self.kind.word());
        for n in [self.stall_us, self.window_us] {
            put(b" ");
            put(decimal(n, &mut [0; 20]));
        }
        put(b"\0");
        &buf[..len]
    }

    /// Parses `some|full STALL_US WINDOW_US`, with an optional trailing NUL
    /// or newline (the form `MEMORY_PRESSURE_WRITE` carries).
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = text.strip_suffix(b"\0").unwrap_or(text).trim_ascii();
        let mut words = text.split(|&b| b == b' ');
        let kind = StallKind::from_word(words.next()?)?;
        let stall_us = parse_u64(words.next()?)?;
        let window_us = parse_u64(words.next()?)?;
        words.next().is_none().then_some(Self { kind, stall_us, window_us })
    }
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes standard base64 (RFC 4648, `=` padding optional, surrounding
/// whitespace ignored) into `out`; `None` on a bad character, bad padding,
/// leftover bits, or when `out` is too small.
///
/// ```
/// let mut out = [0u8; 64];
/// let t = shrinkalloc::reclaim::psi::decode_base64(b"c29tZSAyMDAwMDAgMjAwMDAwMAA=", &mut out).unwrap();
/// assert_eq!(t, b"some 200000 2000000\0");
/// assert!(shrinkalloc::reclaim::psi::decode_base64(b"c29tZ!==", &mut out).is_none());
/// ```
pub fn decode_base64<'b>(text: &[u8], out: &'b mut [u8]) -> Option<&'b [u8]> {
    let text = text.trim_ascii();
    let body = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"=")).unwrap_or(text);
    let padded = body.len() != text.len();
    if padded && (text.len() % 4 != 0) || body.len() % 4 == 1 {
        return None;
    }
    let (mut acc, mut bits, mut len) = (0u32, 0u32, 0usize);
    for &c in body {
        acc = (acc << 6) | u32::from(base64_value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(len)? = (acc >> bits) as u8;
            len += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // What is left over must be zero bits of the last character.
    (acc == 0).then_some(&out[..len])
}

/// `v` in decimal, written into `digits` without allocating (control files
/// and eventfd registrations are written from inside the allocator).
pub(crate) fn decimal(mut v: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &digits[i..];
        }
    }
}
