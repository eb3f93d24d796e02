//! A work queue's statistics: per class, and summed.

use core::fmt;
use std::time::Duration;

use crate::reclaim::ContextClass;

/// One class's figures in [`WorkQueueStats`].
///
/// ```
/// use shrinkalloc::reclaim::{ContextClass, WorkQueue};
/// let wq = WorkQueue::new("doc", 1);
/// wq.submit(|| {}).unwrap();
/// wq.flush();
/// let normal = *wq.stats().class(ContextClass::Normal);
/// assert_eq!((normal.submitted, normal.run, normal.queued), (1, 1, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Items accepted.
    pub submitted: u64,
    /// Items run to completion (a panicking item counts as run).
    pub run: u64,
    /// Items waiting for a worker now.
    pub queued: usize,
    /// Items running now.
    pub running: usize,
    /// Worker threads alive now.
    pub workers: usize,
    /// Items that panicked (caught; the worker goes on).
    pub panicked: u64,
    /// The longest an item waited between submission and start, in ns.
    pub max_wait_ns: u64,
}

impl ClassStats {
    /// [`ClassStats::max_wait_ns`] as a `Duration`.
    ///
    /// ```
    /// assert!(shrinkalloc::reclaim::ClassStats::default().max_wait().is_zero());
    /// ```
    pub const fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait_ns)
    }
}

/// A queue's figures per [`ContextClass`], read under each class's lock in
/// turn (consistent per class, not across classes).
///
/// ```
/// let wq = shrinkalloc::reclaim::WorkQueue::new("doc", 1);
/// println!("{}", wq.stats());
/// assert_eq!(wq.stats().total().submitted, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkQueueStats {
    /// Indexed by [`ContextClass::index`].
    pub classes: [ClassStats; ContextClass::COUNT],
}

impl WorkQueueStats {
    /// The figures of one class.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{ContextClass, WorkQueue};
    /// assert_eq!(WorkQueue::new("doc", 1).stats().class(ContextClass::Noio).workers, 0);
    /// ```
    pub fn class(&self, class: ContextClass) -> &ClassStats {
        &self.classes[class.index()]
    }

    /// Sums over the classes (the longest wait is the maximum).
    ///
    /// ```
    /// let wq = shrinkalloc::reclaim::WorkQueue::new("doc", 1);
    /// wq.submit(|| {}).unwrap();
    /// wq.flush();
    /// assert_eq!(wq.stats().total().run, 1);
    /// ```
    pub fn total(&self) -> ClassStats {
        self.classes.iter().fold(ClassStats::default(), |a, c| ClassStats {
            submitted: a.submitted + c.submitted,
            run: a.run + c.run,
            queued: a.queued + c.queued,
            running: a.running + c.running,
            workers: a.workers + c.workers,
            panicked: a.panicked + c.panicked,
            max_wait_ns: a.max_wait_ns.max(c.max_wait_ns),
        })
    }
}

impl fmt::Display for WorkQueueStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for class in ContextClass::ALL {
            let c = self.class(class);
            writeln!(
                f,
                "{:<6} submitted {} run {} queued {} running {} workers {} panicked {} max_wait {:?}",
                class.name(),
                c.submitted,
                c.run,
                c.queued,
                c.running,
                c.workers,
                c.panicked,
                c.max_wait()
            )?;
        }
        Ok(())
    }
}
