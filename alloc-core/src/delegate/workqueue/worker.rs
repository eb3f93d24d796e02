//! A work queue's workers: starting one for a class, and its life (take the
//! oldest item of its class, run it under the item's context, repeat).
//!
//! Invariant: a worker runs under its class's own scope between items and
//! under the item's context during it; it holds its class lock only between
//! items, never while running one, and exits only once the queue is
//! closing and its class is drained.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, PoisonError};
use std::thread;

use super::fifo::Item;
use super::{Inner, CURRENT};
use crate::delegate::context::Context;
use crate::reclaim::ContextClass;

/// Starts a worker for `lane`, whose `spawned` and `starting` the caller
/// counted; settles both, and keeps the handle. Returns whether it started.
pub(super) fn start_worker(inner: &Arc<Inner>, lane: ContextClass) -> bool {
    let suffix = match (inner.single, lane) {
        (true, _) | (_, ContextClass::Normal) => "",
        (_, ContextClass::Nofs) => "-nofs",
        (_, ContextClass::Noio) => "-noio",
    };
    let builder = thread::Builder::new().name(format!("{}{suffix}", inner.name));
    let for_worker = Arc::clone(inner);
    let started = builder.spawn(move || worker_main(&for_worker, lane));
    let class = &inner.classes[lane.index()];
    let mut st = class.lock();
    st.starting -= 1;
    let ok = match started {
        Ok(h) => {
            // Within the capacity reserved: `spawned <= threads`.
            st.handles.push(h);
            true
        }
        Err(_) => {
            st.spawned -= 1;
            false
        }
    };
    drop(st);
    class.progress.notify_all();
    ok
}

/// A worker's life: under its class's scope, take the oldest item, run it
/// under its context, repeat; exit once the queue is closing and drained.
fn worker_main(inner: &Inner, lane: ContextClass) {
    let base = if inner.single { Context::NORMAL } else { Context::from_scope(lane.scope()) };
    // For the thread's whole life: never restored.
    let _ = base.adopt_save();
    let _ = CURRENT.try_with(|c| c.set((inner.id(), lane)));
    let class = &inner.classes[lane.index()];
    let mut st = class.lock();
    st.workers += 1;
    loop {
        let Some(node) = st.queue.pop() else {
            if st.closing {
                break;
            }
            st.idle += 1;
            st = class.more.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.idle -= 1;
            continue;
        };
        let waited = u64::try_from(node.item.queued_at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        st.max_wait_ns = st.max_wait_ns.max(waited);
        // Within the capacity reserved: one running item per worker.
        st.running.push(node.item.seq);
        drop(st);
        let seq = node.item.seq;
        let panicked = run_item(node.item);
        st = class.lock();
        if let Some(i) = st.running.iter().position(|&s| s == seq) {
            st.running.swap_remove(i);
        }
        st.run += 1;
        st.panicked += u64::from(panicked);
        class.progress.notify_all();
    }
    st.workers -= 1;
    drop(st);
    class.progress.notify_all();
}

/// Runs one item under its context; returns whether it panicked.
fn run_item(item: Item) -> bool {
    let _ctx = item.ctx.adopt();
    match catch_unwind(AssertUnwindSafe(|| item.work.run())) {
        Ok(()) => false,
        Err(payload) => {
            // Dropping a payload can itself panic; a small leak is safer.
            core::mem::forget(payload);
            true
        }
    }
}
