//! The allocators a scenario can run under, and how a child gets each one.
//!
//! Every child is this binary: `shrinkalloc` and `shrinkalloc-noshrink` use
//! the [`Switch`](crate::alloc_switch::Switch) backend `shrinkalloc` (the
//! second registers no shrinker), `glibc` the backend `system`, and
//! `jemalloc` / `mimalloc` / `tcmalloc` the backend `system` with Debian's
//! library preloaded. A preload library that is not installed makes that allocator
//! *unavailable*: the harness says so and skips it, never substitutes.
//!
//! A shrinkalloc child in a cgroup derives its limits from the cgroup, as a
//! daemon would: the harness removes every [`LIMIT_VARS`] variable from its
//! environment. Without a cgroup, [`fallback_limit_env`] tells it its limits.

use std::path::Path;

use crate::alloc_switch::{self, Backend};

/// An allocator a scenario runs under, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Allocator {
    /// shrinkalloc with the scenario's shrinkers registered.
    #[value(name = "shrinkalloc")]
    ShrinkAlloc,
    /// shrinkalloc with no shrinker: only its own free pages are reclaimed.
    #[value(name = "shrinkalloc-noshrink")]
    ShrinkAllocNoShrink,
    /// glibc's malloc.
    Glibc,
    /// Debian's jemalloc through `LD_PRELOAD`.
    Jemalloc,
    /// Debian's mimalloc through `LD_PRELOAD`.
    Mimalloc,
    /// Debian's tcmalloc (gperftools' minimal build) through `LD_PRELOAD`.
    Tcmalloc,
}

/// Every allocator, in the order tables list them.
pub const ALL: [Allocator; 6] = [
    Allocator::ShrinkAlloc,
    Allocator::ShrinkAllocNoShrink,
    Allocator::Glibc,
    Allocator::Jemalloc,
    Allocator::Mimalloc,
    Allocator::Tcmalloc,
];

/// shrinkalloc, glibc and the preloaded peers: the scenarios that do not
/// compare shrinkalloc without its shrinkers.
pub const SHRINKALLOC_AND_PEERS: [Allocator; 5] =
    [Allocator::ShrinkAlloc, Allocator::Glibc, Allocator::Jemalloc, Allocator::Mimalloc, Allocator::Tcmalloc];

/// The allocators preloaded from Debian's packages: the peers shrinkalloc
/// is measured against besides glibc.
pub const PRELOADED: [Allocator; 3] = [Allocator::Jemalloc, Allocator::Mimalloc, Allocator::Tcmalloc];

/// The variables that configure shrinkalloc's limits. A child in a cgroup
/// inherits none of them, so that shrinkalloc derives its limits from the
/// cgroup's.
pub const LIMIT_VARS: [&str; 3] = ["SHRINKALLOC_HARD_LIMIT", "SHRINKALLOC_SOFT_LIMIT", "SHRINKALLOC_CGROUP"];

/// Without a cgroup, the hard and soft limits handed to shrinkalloc, as a
/// share of the emulated limit: the rest is room for what the allocator does
/// not count (thread stacks, page tables, the binary's own pages).
pub const HARD_SHARE_PERCENT: usize = 90;
/// See [`HARD_SHARE_PERCENT`].
pub const SOFT_SHARE_PERCENT: usize = 75;

impl Allocator {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Allocator::ShrinkAlloc => "shrinkalloc",
            Allocator::ShrinkAllocNoShrink => "shrinkalloc-noshrink",
            Allocator::Glibc => "glibc",
            Allocator::Jemalloc => "jemalloc",
            Allocator::Mimalloc => "mimalloc",
            Allocator::Tcmalloc => "tcmalloc",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether the child allocates with shrinkalloc.
    pub fn is_shrinkalloc(self) -> bool {
        self.backend() == Backend::ShrinkAlloc
    }

    /// Whether the child registers its caches' shrinkers.
    pub fn registers_shrinkers(self) -> bool {
        self == Allocator::ShrinkAlloc
    }

    fn backend(self) -> Backend {
        match self {
            Allocator::ShrinkAlloc | Allocator::ShrinkAllocNoShrink => Backend::ShrinkAlloc,
            _ => Backend::System,
        }
    }

    /// The library preloaded into the child, if any.
    pub fn preload(self) -> Option<&'static str> {
        match self {
            Allocator::Jemalloc => Some("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
            Allocator::Mimalloc => Some("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
            Allocator::Tcmalloc => Some("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
            _ => None,
        }
    }

    /// `Err` with the reason when this allocator cannot run here.
    pub fn available(self) -> Result<(), String> {
        match self.preload() {
            Some(lib) if !Path::new(lib).exists() => {
                Err(format!("{lib} is not installed (apt-get install {})", self.debian_package()))
            }
            _ => Ok(()),
        }
    }

    fn debian_package(self) -> &'static str {
        match self {
            Allocator::Jemalloc => "libjemalloc2",
            Allocator::Mimalloc => "libmimalloc2.0",
            Allocator::Tcmalloc => "libtcmalloc-minimal4",
            _ => "",
        }
    }

    /// The environment a child under this allocator gets (limits aside).
    pub fn env(self) -> Vec<(&'static str, String)> {
        let mut env = vec![(alloc_switch::ENV, self.backend().env_value().to_string())];
        if let Some(lib) = self.preload() {
            env.push(("LD_PRELOAD", lib.to_string()));
        }
        env
    }
}

/// The limits a shrinkalloc child is told by environment when there is no
/// cgroup to read them from, for an emulated limit of `limit` bytes: hard
/// [`HARD_SHARE_PERCENT`] and soft [`SOFT_SHARE_PERCENT`] of it.
pub fn fallback_limit_env(allocator: Allocator, limit: usize) -> Vec<(&'static str, String)> {
    if !allocator.is_shrinkalloc() {
        return Vec::new();
    }
    let (hard, soft) = shrinkalloc_limits(limit);
    vec![("SHRINKALLOC_HARD_LIMIT", hard.to_string()), ("SHRINKALLOC_SOFT_LIMIT", soft.to_string())]
}

/// The hard and soft limits [`fallback_limit_env`] hands out for `limit`.
pub fn shrinkalloc_limits(limit: usize) -> (usize, usize) {
    (limit / 100 * HARD_SHARE_PERCENT, limit / 100 * SOFT_SHARE_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_shrinkalloc_registers_shrinkers() {
        for a in ALL {
            assert_eq!(Allocator::parse(a.name()), Some(a));
        }
        assert_eq!(Allocator::parse("ptmalloc"), None);
        assert_eq!(Allocator::Tcmalloc.preload(), Some("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"));
        assert!(Allocator::ShrinkAllocNoShrink.is_shrinkalloc());
        assert!(!Allocator::ShrinkAllocNoShrink.registers_shrinkers());
        assert!(!Allocator::Jemalloc.is_shrinkalloc());
    }

    #[test]
    fn limits_go_to_shrinkalloc_children_only() {
        assert!(fallback_limit_env(Allocator::Glibc, 256 << 20).is_empty());
        let env = fallback_limit_env(Allocator::ShrinkAllocNoShrink, 100 << 20);
        assert_eq!(env[0], ("SHRINKALLOC_HARD_LIMIT", ((100 << 20) / 100 * 90).to_string()));
        assert!(Allocator::Mimalloc.env().iter().any(|(k, _)| *k == "LD_PRELOAD"));
    }
}
