//! A block grown by `realloc` the way a growing buffer grows, writing its
//! last byte after each step:
//!
//! - `geometric`: from 1 B to 1 MiB by a factor of 1.5 (32 steps), the
//!   pattern of `Vec` and most dynamic arrays;
//! - `linear`: from 64 B to 64 KiB in steps of 64 B (1,023 steps), a buffer
//!   appended to in small pieces, where in-place growth matters most.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use shrinkalloc_benches::{alloc_touched, for_each_allocator, Allocator};

/// Grows a block through every size `next` yields until `end`, then frees it.
fn grow<A: Allocator>(start: usize, end: usize, next: impl Fn(usize) -> usize) {
    let mut size = start;
    let mut p = alloc_touched::<A>(size);
    while size < end {
        size = next(size).min(end);
        // SAFETY: `p` is the live block of `A` from the previous step; on
        // success it is replaced and never used again.
        let q = unsafe { A::realloc(p, size) };
        assert!(!q.is_null(), "{} realloc to {size} returned null", A::NAME);
        // SAFETY: `q` is a live block of `size` bytes.
        unsafe { q.add(size - 1).write(1) };
        p = q;
    }
    // SAFETY: `p` is the live block of `A`, freed once.
    unsafe { A::free(p) };
}

fn geometric<A: Allocator>(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function(BenchmarkId::new(A::NAME, "geometric_1B_1MiB"), |b| {
        b.iter(|| grow::<A>(1, 1 << 20, |s| s + s / 2 + 1))
    });
}

fn linear<A: Allocator>(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function(BenchmarkId::new(A::NAME, "linear_64B_64KiB"), |b| {
        b.iter(|| grow::<A>(64, 64 << 10, |s| s + 64))
    });
}

fn realloc(c: &mut Criterion) {
    let mut group = c.benchmark_group("realloc_grow");
    for_each_allocator!(geometric(&mut group));
    for_each_allocator!(linear(&mut group));
    group.finish();
}

criterion_group! {
    name = benches;
    config = shrinkalloc_benches::criterion();
    targets = realloc
}
criterion_main!(benches);
