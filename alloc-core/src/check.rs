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

use crate::heap::{empty_heap, Heap};
use crate::page::{state, Block, Page, PF_IN_FULL, XF_IN_FULL};
use crate::size_class::{self, CLASSES};
use crate::thread;

/// What the walk found wrong, with the page it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// Address of the page record.
    pub page: usize,
    /// What is wrong.
    pub what: &'static str,
}

/// Walks the calling thread's heap and checks, for every page on its queues
/// and full list: `used + |free| + |local_free| + untouched = reserved`, block size and class agree, state is `IN_USE`, the full flags
/// match the list; and `direct[c]` is the head of queue `c`.
pub fn check_thread_heap() -> Result<(), CheckError> {
    let heap = thread::heap();
    if heap == empty_heap() {
        return Ok(());
    }
    // SAFETY: the calling thread owns its heap; its pages are live.
    unsafe {
        let h = &*heap;
        for class in 0..CLASSES {
            let q = h.queues[class];
            if !q.head.is_null() && h.direct[class] != q.head {
                return Err(CheckError { page: q.head as usize, what: "direct is not the queue head" });
            }
            walk(q.head, |p| check_page(heap, p, Some(class), false))?;
        }
        walk(h.full.head, |p| check_page(heap, p, None, true))
    }
}

unsafe fn walk(mut page: *mut Page, mut f: impl FnMut(&Page) -> Result<(), CheckError>) -> Result<(), CheckError> {
    while !page.is_null() {
        // SAFETY: caller promise: the list's pages are live.
        unsafe {
            f(&*page)?;
            page = (*page).next;
        }
    }
    Ok(())
}

fn check_page(heap: *mut Heap, p: &Page, class: Option<usize>, full: bool) -> Result<(), CheckError> {
    let err = |what| Err(CheckError { page: p as *const Page as usize, what });
    if p.heap != heap {
        return err("page owned by another heap");
    }
    // Relaxed: the owner (us) is the only writer of these fields.
    if p.state.load(Ordering::Relaxed) != state::IN_USE {
        return err("page on a heap list is not IN_USE");
    }
    if class.is_some_and(|c| c != p.class as usize) || size_class::size_of(p.class as usize) != p.block_size {
        return err("class and block size disagree");
    }
    if full != (p.flags & PF_IN_FULL != 0) {
        return err("full flag does not match the list");
    }
    let xf = p.xfree.load(Ordering::Acquire);
    if full && xf & XF_IN_FULL == 0 {
        return err("full page without XF_IN_FULL");
    }
    // Blocks on `xfree` still count in `used` until the owner collects them.
    // SAFETY: the lists hold free blocks of this page, linked by first word.
    let n = unsafe { count(p.free) + count(p.local_free) };
    let untouched = p.reserved - p.capacity;
    if p.used() as usize + n + untouched as usize != p.reserved as usize {
        return err("used + free lists + untouched != reserved");
    }
    Ok(())
}

unsafe fn count(mut b: *mut Block) -> usize {
    let mut n = 0;
    while !b.is_null() {
        n += 1;
        // SAFETY: caller promise.
        b = unsafe { (*b).next };
    }
    n
}
