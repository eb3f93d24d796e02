//! Structural checks of the calling thread's heap: the counting identity of
//! every page and the heap's list invariants, walked in full. For tests and
//! the stress harness; never called by the allocator itself.
//!
//! ```
//! let v: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
//! drop(v);
//! shrinkalloc::check::check_thread_heap().unwrap();
//! ```

use core::sync::atomic::Ordering;

use crate::heap::{self, empty_heap, Heap};
use crate::page::{state, Block, Page, PF_IN_FULL, XF_IN_FULL};
use crate::size_class::{self, CLASSES};

/// What the walk found wrong, with the page it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// Address of the page record.
    pub page: usize,
    /// What is wrong.
    pub what: &'static str,
}

/// Walks the calling thread's heap and checks, for every page on its queues
/// and full list: `used + |free| + |local_free| + |decommitted| + untouched = reserved`,
/// block size and class agree, state is `IN_USE`, the full flags match the
/// list; and `direct[c]` is the head of queue `c` (unless lockdep watches
/// the heap).
pub fn check_thread_heap() -> Result<(), CheckError> {
    let heap = heap::current();
    if heap == empty_heap() {
        return Ok(());
    }
    // SAFETY: a heap other than the empty one is this thread's own.
    let h = unsafe { &*heap };
    for class in 0..CLASSES {
        let head = h.queues[class].head();
        if !head.is_null() && !h.watched.get() && h.direct[class].get() != head {
            return Err(CheckError { page: head as usize, what: "direct is not the queue head" });
        }
        walk(head, |p| check_page(h, p, Some(class), false))?;
    }
    walk(h.full.head(), |p| check_page(h, p, None, true))
}

/// Calls `f` on every page of a list of the calling thread's heap.
fn walk(mut page: *mut Page, mut f: impl FnMut(&Page) -> Result<(), CheckError>) -> Result<(), CheckError> {
    while !page.is_null() {
        // SAFETY: pages on the calling thread's heap lists are live and its own.
        let p = unsafe { &*page };
        f(p)?;
        page = p.own.next.get();
    }
    Ok(())
}

fn check_page(heap: &Heap, p: &Page, class: Option<usize>, full: bool) -> Result<(), CheckError> {
    let err = |what| Err(CheckError { page: p as *const Page as usize, what });
    if p.heap() != heap.id() {
        return err("page owned by another heap");
    }
    // Relaxed: the owner (us) is the only writer of these fields.
    if p.shared.state.load(Ordering::Relaxed) != state::IN_USE {
        return err("page on a heap list is not IN_USE");
    }
    if class.is_some_and(|c| c != p.class()) || size_class::size_of(p.class()) != p.block_size() {
        return err("class and block size disagree");
    }
    if full != (p.own.flags.get() & PF_IN_FULL != 0) {
        return err("full flag does not match the list");
    }
    let xf = p.shared.xfree.load(Ordering::Acquire);
    if full && xf & XF_IN_FULL == 0 {
        return err("full page without XF_IN_FULL");
    }
    // Blocks on `xfree` still count in `used` until the owner collects them.
    let n = count(p.own.free.get()) + count(p.own.local_free.get()) + count(p.own.decommitted.get());
    let untouched = p.own.reserved.get() - p.own.capacity.get();
    if p.used() as usize + n + untouched as usize != p.own.reserved.get() as usize {
        return err("used + free lists + untouched != reserved");
    }
    Ok(())
}

/// Length of a free list of one of the calling thread's pages.
fn count(mut b: *mut Block) -> usize {
    let mut n = 0;
    while !b.is_null() {
        n += 1;
        // SAFETY: the lists of the calling thread's own pages hold free
        // blocks of the page, linked by their first word, ending in null.
        b = unsafe { (*b).next };
    }
    n
}

/// Segments the decay tick will walk at its next pass: those where a page
/// became free or was queued for its owner since a walk last found nothing
/// there to wait for. A process whose pages all hold live blocks has none
/// once a tick has passed. For tests and diagnostics.
pub fn segments_to_look_at() -> usize {
    // Relaxed: a reading; see `segment::LOOKS` for its brief wrap.
    let n = crate::segment::LOOKS.load(Ordering::Relaxed);
    if n > isize::MAX as usize {
        0
    } else {
        n
    }
}
