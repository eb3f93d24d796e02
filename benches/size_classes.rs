//! 100,000 blocks of mixed small sizes (16 to 512 bytes, the same seeded
//! sequence for every allocator) allocated, then all freed: in allocation
//! order, in reverse order, or in a random order fixed beforehand.
//!
//! Unlike the alloc/free pair, this walks every size class, fills pages and
//! empties them again, so it measures the page-level slow paths as well as
//! the fast ones. Time is reported per block (one malloc plus one free).

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use shrinkalloc_benches::{alloc_touched, for_each_allocator, Allocator, Rng};

const BLOCKS: usize = 100_000;

/// Sizes, and the order in which the blocks are freed.
struct Workload {
    sizes: Vec<usize>,
    order: Vec<usize>,
}

fn alloc_all_free_in_order<A: Allocator>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, w: &Workload) {
    let mut blocks = vec![std::ptr::null_mut::<u8>(); BLOCKS];
    group.bench_function(BenchmarkId::new(A::NAME, name), |b| {
        b.iter(|| {
            for (slot, &size) in blocks.iter_mut().zip(&w.sizes) {
                *slot = alloc_touched::<A>(size);
            }
            for &i in &w.order {
                // SAFETY: `order` is a permutation, so each live block of `A`
                // is freed exactly once in this iteration.
                unsafe { A::free(black_box(blocks[i])) };
            }
        })
    });
}

fn size_classes(c: &mut Criterion) {
    let mut rng = Rng::new(0x5eed_0001);
    let sizes = rng.sizes(BLOCKS, 16, 512);
    let orders = [
        ("in_order", (0..BLOCKS).collect()),
        ("reverse", (0..BLOCKS).rev().collect()),
        ("random", rng.permutation(BLOCKS)),
    ];
    let mut group = c.benchmark_group("alloc_100k_then_free");
    group.throughput(Throughput::Elements(BLOCKS as u64));
    // An iteration takes milliseconds: flat sampling (the same iteration
    // count in every sample) fits 20 samples in 4 s.
    group.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    for (name, order) in orders {
        let w = Workload { sizes: sizes.clone(), order };
        for_each_allocator!(alloc_all_free_in_order(&mut group, name, &w));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = shrinkalloc_benches::criterion();
    targets = size_classes
}
criterion_main!(benches);
