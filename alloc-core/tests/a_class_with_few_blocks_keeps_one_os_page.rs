//! A size class that holds a few small blocks keeps one OS page of its page
//! committed, not more: carving writes every block's link, so the carving
//! step is what each class in use costs before it holds a block.

use std::alloc::{alloc, dealloc, Layout};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const KIB: usize = 1 << 10;

/// Sixteen sizes of sixteen different classes, 16 to 512 bytes.
const SIZES: [usize; 16] = [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512];

#[test]
fn two_blocks_of_sixteen_classes_commit_a_page_each() {
    // A thread of its own: a heap that has carved nothing yet.
    let delta = std::thread::spawn(|| {
        let layouts = SIZES.map(|s| Layout::from_size_align(s, 16).unwrap());
        let mut blocks = Vec::with_capacity(2 * SIZES.len());
        let before = shrinkalloc::stats().committed;
        for layout in layouts {
            for _ in 0..2 {
                // SAFETY: a non-zero size.
                let p = unsafe { alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: `p` holds `layout.size()` bytes.
                unsafe { p.write_bytes(7, layout.size()) };
                blocks.push((p, layout));
            }
        }
        let after = shrinkalloc::stats().committed;
        for (p, layout) in blocks {
            // SAFETY: `p` is live with this layout.
            unsafe { dealloc(p, layout) };
        }
        after - before
    })
    .join()
    .unwrap();
    // One 4 KiB carving per class, and a segment header (12 KiB) if the
    // heap mapped a segment. With an 8 KiB carving the sixteen classes
    // alone would commit 128 KiB.
    assert!(delta > 0, "nothing was committed: the counter does not follow carving");
    assert!(delta <= SIZES.len() * 4 * KIB + 32 * KIB, "{} KiB committed for 32 small blocks", delta / KIB);
}
