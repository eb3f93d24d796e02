//! The texts pressure sources hand the allocator — PSI lines, PSI triggers,
//! systemd's base64 `MEMORY_PRESSURE_WRITE`, v2 `memory.events` and
//! `memory.stat`, the unified directory from `/proc` — parse to values or
//! to `None`, never to a crash, whatever the bytes (the cgroup and
//! mountinfo parsers are tested against fixture trees in `cgroup.rs`).

use shrinkalloc::reclaim::cgroup::{parse_key, unified_dir_from, Events};
use shrinkalloc::reclaim::psi::{decode_base64, parse, parse_line, PsiTrigger, StallKind};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Inputs that must never parse, nor crash anything.
const GARBAGE: [&[u8]; 10] = [
    b"",
    b"\n\n",
    b"\xff\xfe\x00",
    b"some",
    b"some avg10=",
    b"some avg10=1.2.3 avg60=0 avg300=0 total=1",
    b"full avg10=0.00 avg60=0.00 avg300=0.00 total=-5",
    b"some avg10=99999999999.00 avg60=0.00 avg300=0.00 total=1",
    b"some avg60=0.00 avg10=0.00 avg300=0.00 total=1",
    b"some avg10=0.00 avg60=0.00 avg300=0.00 total=99999999999999999999999",
];

#[test]
fn psi_lines_parse_the_kernels_format_and_reject_garbage() {
    let l = parse_line(b"some avg10=0.13 avg60=5.5 avg300=100.00 total=178748\n").unwrap();
    assert_eq!((l.kind, l.avg10, l.avg60, l.avg300, l.total_us), (StallKind::Some, 13, 550, 10000, 178748));
    let (some, full) =
        parse(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=3.26 avg60=0.58 avg300=0.12 total=594922\n");
    assert_eq!(some.unwrap().total_us, 1);
    assert_eq!(full.unwrap().avg10, 326);
    for g in GARBAGE {
        assert_eq!(parse_line(g), None, "{g:?}");
        let (s, f) = parse(g);
        assert!(s.is_none() && f.is_none(), "{g:?}");
    }
    // A good line among bad ones is still found.
    assert!(parse(b"\xff\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=7\ngarbage").0.is_some());
}

#[test]
fn psi_triggers_format_parse_and_follow_the_kernels_window_rules() {
    let t = PsiTrigger { kind: StallKind::Full, stall_us: 100_000, window_us: 2_000_000 };
    let mut buf = [0u8; PsiTrigger::TEXT_MAX];
    let text = t.format(&mut buf);
    assert_eq!(text, b"full 100000 2000000\0");
    assert_eq!(PsiTrigger::parse(text), Some(t));
    assert_eq!(PsiTrigger::parse(b"some 1 500000\n"), Some(PsiTrigger { kind: StallKind::Some, ..t_of(1, 500_000) }));
    // Without CAP_SYS_RESOURCE only multiples of 2 s (measured: 1 s gives EINVAL).
    assert!(t_of(10_000, 2_000_000).is_valid(false));
    assert!(t_of(10_000, 10_000_000).is_valid(false));
    assert!(!t_of(10_000, 1_000_000).is_valid(false));
    assert!(t_of(10_000, 1_000_000).is_valid(true));
    assert!(!t_of(0, 2_000_000).is_valid(true), "a zero threshold");
    assert!(!t_of(3_000_000, 2_000_000).is_valid(true), "stall longer than the window");
    assert!(!t_of(10_000, 12_000_000).is_valid(true), "window past 10 s");
    assert!(!t_of(10_000, 400_000).is_valid(true), "window under 0.5 s");
    let max = PsiTrigger { kind: StallKind::Some, stall_us: u64::MAX, window_us: u64::MAX };
    assert_eq!(PsiTrigger::parse(max.format(&mut buf)), Some(max), "20-digit numbers fit");
    for bad in [&b"some"[..], b"some 1", b"some 1 2 3", b"half 1 2", b"some -1 2", b"some 1 2x", b"\xff 1 2"] {
        assert_eq!(PsiTrigger::parse(bad), None, "{bad:?}");
    }
}

fn t_of(stall_us: u64, window_us: u64) -> PsiTrigger {
    PsiTrigger { kind: StallKind::Some, stall_us, window_us }
}

#[test]
fn base64_decodes_rfc4648_vectors_and_systemds_nul_and_rejects_garbage() {
    let mut out = [0u8; 64];
    for (text, want) in [
        (&b""[..], &b""[..]),
        (b"Zg==", b"f"),
        (b"Zm8=", b"fo"),
        (b"Zm9v", b"foo"),
        (b"Zm9vYg==", b"foob"),
        (b"Zm9vYmE=", b"fooba"),
        (b"Zm9vYmFy", b"foobar"),
        (b"Zm8", b"fo"),
        (b" Zm9v\n", b"foo"),
        (b"c29tZSAyMDAwMDAgMjAwMDAwMAA=", b"some 200000 2000000\0"),
        (b"AP8A", b"\x00\xff\x00"),
        (b"+/+/", b"\xfb\xff\xbf"),
    ] {
        assert_eq!(decode_base64(text, &mut out), Some(want), "{:?}", String::from_utf8_lossy(text));
    }
    for bad in [&b"Z"[..], b"Zg=", b"Z===", b"Zh==", b"Zm9v!", b"Zm 9v", b"Zm9v====", b"=Zm9", b"Zm-_", b"\xff\xfe"] {
        assert_eq!(decode_base64(bad, &mut out), None, "{:?}", String::from_utf8_lossy(bad));
    }
    let mut small = [0u8; 2];
    assert_eq!(decode_base64(b"Zm9v", &mut small), None, "output too small");
}

#[test]
fn memory_events_and_stat_parse_by_key_and_survive_garbage() {
    let e = Events::parse(b"low 0\nhigh 17\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n").unwrap();
    assert_eq!(e, Events { high: 17, max: 3, oom: 1, oom_kill: 1 });
    // oom_kill must not be read as oom, nor oom_group_kill as oom_kill.
    let e = Events::parse(b"oom_group_kill 9\noom_kill 2\n").unwrap();
    assert_eq!((e.oom, e.oom_kill), (0, 2));
    // Garbled values count as 0; a file with none of the keys is None.
    let e = Events::parse(b"high x\nmax 99999999999999999999999\nhigh\nmax -1\noom 4\n").unwrap();
    assert_eq!(e, Events { high: 0, max: 0, oom: 4, oom_kill: 0 });
    for g in [&b""[..], b"garbage", b"\xff\xfe", b"low 5\n", b"HIGH 5", b" high 5"] {
        assert_eq!(Events::parse(g), None, "{g:?}");
    }
    let stat = b"cache 1\ninactive_file 4096\ntotal_inactive_file 8192\n";
    assert_eq!(parse_key(stat, b"inactive_file"), Some(4096));
    assert_eq!(parse_key(stat, b"total_inactive_file"), Some(8192));
    assert_eq!(parse_key(stat, b"active_file"), None);
    assert_eq!(parse_key(b"max max\n", b"max"), None);
}

#[test]
fn unified_dir_is_found_on_hybrid_and_pure_v2_machines_only() {
    let hybrid = b"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    let dir = unified_dir_from(b"4:memory:/a\n0::/job-7\n", hybrid).unwrap();
    assert_eq!(dir.as_bytes(), b"/sys/fs/cgroup/unified/job-7");
    let root = unified_dir_from(b"0::/\n", hybrid).unwrap();
    assert_eq!(root.as_bytes(), b"/sys/fs/cgroup/unified");
    let v1_only = b"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    assert!(unified_dir_from(b"4:memory:/a\n0::/\n", v1_only).is_none());
    assert!(unified_dir_from(b"4:memory:/a\n", hybrid).is_none(), "no 0:: line");
    assert!(unified_dir_from(b"\xff", b"\xff - \xff").is_none());
}
