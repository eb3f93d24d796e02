//! Blocks allocated on one thread and freed on another: a producer thread
//! allocates blocks of 64 B to 1 KiB (a seeded sequence), writes a byte in
//! each, and passes them in batches of 64 through a bounded channel to a
//! consumer thread that frees them.
//!
//! Every free is a remote free, which the owning thread must later collect
//! before it can reuse the memory: this measures that hand-off, the pattern
//! of queues, pipelines and thread pools. Time is reported per block.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use shrinkalloc_benches::{alloc_touched, for_each_allocator, Allocator, Rng};

const BATCH: usize = 64;

/// Batches the channel holds before the producer blocks.
const IN_FLIGHT: usize = 16;

/// Up to `BATCH` blocks, as addresses so that the batch is `Send`.
struct Batch {
    len: usize,
    blocks: [usize; BATCH],
}

/// Allocates `count` blocks here and frees them on a second thread; returns
/// the time from the first allocation to the last free.
fn producer_consumer<A: Allocator>(count: u64, sizes: &[usize]) -> Duration {
    let (tx, rx) = mpsc::sync_channel::<Batch>(IN_FLIGHT);
    let start = Instant::now();
    thread::scope(|s| {
        s.spawn(move || {
            for batch in rx {
                for &addr in &batch.blocks[..batch.len] {
                    // SAFETY: the producer sent each live block of `A` once
                    // and no longer uses it.
                    unsafe { A::free(addr as *mut u8) };
                }
            }
        });
        let mut batch = Batch { len: 0, blocks: [0; BATCH] };
        for i in 0..count as usize {
            batch.blocks[batch.len] = alloc_touched::<A>(sizes[i % sizes.len()]) as usize;
            batch.len += 1;
            if batch.len == BATCH {
                tx.send(batch).expect("consumer exited early");
                batch = Batch { len: 0, blocks: [0; BATCH] };
            }
        }
        tx.send(batch).expect("consumer exited early");
        drop(tx);
    });
    start.elapsed()
}

fn handoff<A: Allocator>(group: &mut BenchmarkGroup<'_, WallTime>, sizes: &[usize]) {
    group.bench_function(BenchmarkId::new(A::NAME, "64B-1KiB"), |b| {
        b.iter_custom(|iters| producer_consumer::<A>(iters, sizes))
    });
}

fn cross_thread(c: &mut Criterion) {
    let sizes = Rng::new(0x5eed_0002).sizes(4096, 64, 1024);
    let mut group = c.benchmark_group("cross_thread_free");
    group.throughput(Throughput::Elements(1));
    for_each_allocator!(handoff(&mut group, &sizes));
    group.finish();
}

criterion_group! {
    name = benches;
    config = shrinkalloc_benches::criterion();
    targets = cross_thread
}
criterion_main!(benches);
