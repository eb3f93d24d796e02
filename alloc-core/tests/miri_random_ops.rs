//! Under Miri (see the README) and as an ordinary test: a few threads
//! allocate, resize and free blocks of random sizes through the raw API,
//! and hand blocks to each other through a shared table, so that most frees
//! of another thread's block take the cross-thread path. Every block
//! carries a stamp, checked before it is resized or freed. Small enough for
//! Miri, which runs about a thousand times slower than native code.
//!
//! The Miri tests use `shrinkalloc::raw`, not `#[global_allocator]`: the
//! test harness and `std::thread` free boxes that are still protected
//! function arguments, which Miri's aliasing models report when a custom
//! global allocator writes its free list into them (rust-lang/miri#2104
//! and its kin), whatever the allocator.

use std::sync::Mutex;

use shrinkalloc::raw;

const THREADS: usize = 3;
const OPS: usize = if cfg!(miri) { 150 } else { 50_000 };
const SLOTS: usize = 16;

/// xorshift64*: a fixed sequence per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

/// A block of ours whose bytes all hold `stamp`.
struct Stamped {
    p: *mut u8,
    len: usize,
    stamp: u8,
}
// SAFETY: the block is owned by this value alone; any thread may use it.
unsafe impl Send for Stamped {}

impl Stamped {
    fn new(rng: &mut Rng) -> Self {
        // Mostly small sizes, sometimes medium ones (several page kinds).
        let len = if rng.below(8) == 0 { 1 + rng.below(20_000) } else { 1 + rng.below(300) };
        let p = raw::malloc(len);
        assert!(!p.is_null() && raw::is_ours(p));
        let stamp = rng.next() as u8;
        // SAFETY: `p` is a fresh block of at least `len` bytes.
        unsafe { p.write_bytes(stamp, len) };
        Stamped { p, len, stamp }
    }

    fn check(&self) {
        // SAFETY: `p` is live with `len` initialised bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.p, self.len) };
        // Miri interprets every byte it compares: there, a sample (both
        // ends and every 61st byte) stands for the block.
        let step = if cfg!(miri) { 61 } else { 1 };
        let sample = bytes.iter().step_by(step).chain(&bytes[self.len.saturating_sub(8)..]);
        assert!(sample.copied().all(|b| b == self.stamp), "block of {} bytes corrupted", self.len);
    }

    fn grow(&mut self, rng: &mut Rng) {
        self.check();
        let len = self.len + 1 + rng.below(2_000);
        // SAFETY: `p` is live, allocated with the default alignment.
        let q = unsafe { raw::realloc(self.p, len, raw::MIN_ALIGN) };
        assert!(!q.is_null());
        // SAFETY: `q` holds `len` bytes, the first `self.len` copied.
        unsafe { q.add(self.len).write_bytes(self.stamp, len - self.len) };
        (self.p, self.len) = (q, len);
        self.check();
    }
}

impl Drop for Stamped {
    fn drop(&mut self) {
        self.check();
        // SAFETY: `p` is live and freed once, here.
        unsafe { raw::free(self.p) };
    }
}

#[test]
fn threads_allocate_resize_and_free_each_others_blocks() {
    let shared: Mutex<Vec<Option<Stamped>>> = Mutex::new((0..SLOTS).map(|_| None).collect());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let shared = &shared;
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                let mut mine: Vec<Option<Stamped>> = (0..SLOTS).map(|_| None).collect();
                for _ in 0..OPS {
                    let i = rng.below(SLOTS as u64);
                    match rng.below(4) {
                        0 => mine[i] = Some(Stamped::new(&mut rng)),
                        // Blocks grow through a few classes, not into huge
                        // ones (another test grows those).
                        1 => {
                            if let Some(b) = mine[i].as_mut().filter(|b| b.len < 30_000) {
                                b.grow(&mut rng);
                            }
                        }
                        // Swap with the shared table: the block we take was
                        // likely allocated by another thread, and will be
                        // freed or resized here.
                        2 => core::mem::swap(&mut mine[i], &mut shared.lock().unwrap()[i]),
                        _ => mine[i] = None,
                    }
                }
                shrinkalloc::check::check_thread_heap().unwrap();
            });
        }
    });
    shared.lock().unwrap().clear();
    shrinkalloc::check::check_thread_heap().unwrap();
}
