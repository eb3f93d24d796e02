//! The shrinkalloc demo and stress harness.

use std::collections::HashMap;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

fn main() {
    match std::env::args().nth(1).as_deref() {
        None | Some("demo") => demo(),
        Some(other) => {
            eprintln!("usage: shrinkalloc-stress [demo]  (unknown command {other:?})");
            std::process::exit(2);
        }
    }
}

/// A mixed workload: a growing map of byte buffers plus threads that build
/// and drop many small strings; prints the allocator's statistics each round.
fn demo() {
    let mut map: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut x = 1u64;
    for round in 0..20 {
        for i in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 2000) as usize + 1;
            map.insert(x % 100_000, vec![(i & 0xff) as u8; len]);
        }
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut v: Vec<String> = Vec::new();
                    for i in 0..100_000 {
                        v.push(format!("thread {t} item {i}"));
                    }
                    v.len()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        println!("round {round}: {} keys; {}", map.len(), shrinkalloc::stats());
    }
    drop(map);
    let released = shrinkalloc::purge();
    println!("after purge ({} MiB released): {}", released >> 20, shrinkalloc::stats());
}
