//! One `malloc`, one byte written, one `free` of the same size, in a loop.
//!
//! The freed block is the next one handed out, so this is the best case of
//! each allocator's paths: its thread-local fast path up to 4 KiB, its
//! large-block path at 64 KiB, and at 1 MiB whatever it does with blocks
//! that get a mapping of their own (cache it, or map and unmap each time).

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use shrinkalloc_benches::{alloc_touched, for_each_allocator, size_label, Allocator};

const SIZES: [usize; 7] = [16, 64, 256, 1 << 10, 4 << 10, 64 << 10, 1 << 20];

fn pair<A: Allocator>(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    let id = BenchmarkId::new(A::NAME, size_label(size));
    group.bench_function(id, |b| {
        b.iter(|| {
            let p = alloc_touched::<A>(black_box(size));
            // SAFETY: `p` is a live block of `A`, freed once and not used after.
            unsafe { A::free(black_box(p)) }
        })
    });
}

fn fast_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_free_pair");
    for size in SIZES {
        for_each_allocator!(pair(&mut group, size));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = shrinkalloc_benches::criterion();
    targets = fast_path
}
criterion_main!(benches);
