//! Which of I0's merged image tokens show the expert's crop: the rows of I0's image embeddings
//! that the latent steps regress (and, in training, receive as inputs).
//!
//! The vision merger turns each `merge x merge` window of patches into one token, in row-major
//! order over the windows, so token `r * cols + c` covers the `cell x cell` pixel square
//! (`cell = merge * patch`) at row `r`, column `c` of the resized image. The normalized bbox maps
//! onto the resized image with the crop tool's floor convention (`tools::crop::pixel_box`).
//!
//! A token belongs to the region when its cell lies entirely inside the box. A box smaller than a
//! cell (or a thin one) can contain no whole cell; then every cell the box overlaps is taken, which
//! is LVR's own rule (floor of the start, ceil of the end on the token grid), so the region always
//! has at least one token.

use crate::tools::crop::pixel_box;
use anyhow::{Result, ensure};

/// Indices (within one image's merged tokens, row-major) of the cells inside `bbox`.
/// `grid_thw` is the image's patch grid, `merge` the spatial merge size, `patch` the patch side.
pub fn region_tokens(
    grid_thw: [usize; 3],
    merge: usize,
    patch: usize,
    bbox: [f64; 4],
) -> Result<Vec<usize>> {
    let [t, h, w] = grid_thw;
    ensure!(
        t == 1,
        "the region of a crop needs a still image (temporal grid 1), got grid {grid_thw:?}"
    );
    ensure!(
        merge > 0 && patch > 0 && h % merge == 0 && w % merge == 0 && h > 0 && w > 0,
        "image grid {grid_thw:?} is not a positive multiple of the merge size {merge}"
    );
    let (rows, cols) = (h / merge, w / merge);
    let cell = merge * patch;
    let (width, height) = ((cols * cell) as u32, (rows * cell) as u32);
    let (x, y, bw, bh) = pixel_box(bbox, width, height)?;
    let inside = |start: u32, len: u32, cells: usize| -> (usize, usize) {
        let (a, b) = (start as usize, (start + len) as usize);
        (a.div_ceil(cell), (b / cell).min(cells))
    };
    let overlapped = |start: u32, len: u32, cells: usize| -> (usize, usize) {
        let (a, b) = (start as usize, (start + len) as usize);
        (a / cell, b.div_ceil(cell).min(cells))
    };
    let (mut c0, mut c1) = inside(x, bw, cols);
    let (mut r0, mut r1) = inside(y, bh, rows);
    if c0 >= c1 || r0 >= r1 {
        (c0, c1) = overlapped(x, bw, cols);
        (r0, r1) = overlapped(y, bh, rows);
    }
    Ok((r0..r1)
        .flat_map(|r| (c0..c1).map(move |c| r * cols + c))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // 16 x 16 patches of 14 px, merge 2: an 8 x 8 grid of 28 px cells over 224 x 224 pixels.
    const GRID: [usize; 3] = [1, 16, 16];

    fn region(bbox: [f64; 4]) -> Vec<usize> {
        region_tokens(GRID, 2, 14, bbox).unwrap()
    }

    #[test]
    fn whole_cells_inside_the_box() {
        // Pixels 56..112 on both axes: cells 2 and 3 of rows 2 and 3.
        assert_eq!(region([0.25, 0.25, 0.5, 0.5]), [18, 19, 26, 27]);
        // The whole image is every token, in the merger's row-major order.
        assert_eq!(region([0.0, 0.0, 1.0, 1.0]), (0..64).collect::<Vec<_>>());
        // Pixels 50..120 x 0..28: only cells 2 and 3 of row 0 lie entirely inside.
        assert_eq!(region([50.0 / 224.0, 0.0, 120.0 / 224.0, 0.125]), [2, 3]);
    }

    #[test]
    fn a_box_smaller_than_a_cell_takes_the_cells_it_overlaps() {
        // Pixels 58..67: inside cell 2 on both axes.
        assert_eq!(region([0.26, 0.26, 0.30, 0.30]), [18]);
        // Pixels 53..60: across the border of cells 1 and 2 on both axes.
        assert_eq!(region([0.24, 0.24, 0.27, 0.27]), [9, 10, 17, 18]);
        // A thin horizontal strip over 3 whole columns but no whole row: rows it touches, and
        // every column it overlaps (LVR's rule), so no token is lost to the strip's thinness.
        assert_eq!(
            region([28.0 / 224.0, 30.0 / 224.0, 112.0 / 224.0, 40.0 / 224.0]),
            [9, 10, 11]
        );
    }

    #[test]
    fn non_square_grids_index_rows_by_the_grid_width() {
        // 4 x 6 patches: 2 rows x 3 columns of 28 px cells over 84 x 56 pixels.
        let all = region_tokens([1, 4, 6], 2, 14, [0.0, 0.0, 1.0, 1.0]).unwrap();
        assert_eq!(all, [0, 1, 2, 3, 4, 5]);
        // The right two thirds of the bottom row.
        let br = region_tokens([1, 4, 6], 2, 14, [1.0 / 3.0, 0.5, 1.0, 1.0]).unwrap();
        assert_eq!(br, [4, 5]);
    }

    #[test]
    fn every_box_gets_at_least_one_token_inside_its_pixels() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..500 {
            let (a, b, c, d) = (next(), next(), next(), next());
            let bbox = [a.min(b), c.min(d), a.max(b), c.max(d)];
            let Ok((x, y, w, h)) = pixel_box(bbox, 224, 224) else {
                continue;
            };
            let got = region(bbox);
            assert!(!got.is_empty(), "{bbox:?}");
            // Every selected cell overlaps the box's pixels.
            for t in got {
                let (r, c) = ((t / 8) as u32 * 28, (t % 8) as u32 * 28);
                assert!(
                    c < x + w && c + 28 > x && r < y + h && r + 28 > y,
                    "{bbox:?} token {t}"
                );
            }
        }
    }

    #[test]
    fn bad_boxes_and_grids_are_errors() {
        assert!(region_tokens(GRID, 2, 14, [0.5, 0.1, 0.4, 0.9]).is_err());
        assert!(region_tokens(GRID, 2, 14, [0.0, 0.0, 1.5, 1.0]).is_err());
        assert!(region_tokens([2, 16, 16], 2, 14, [0.0, 0.0, 1.0, 1.0]).is_err());
        assert!(region_tokens([1, 15, 16], 2, 14, [0.0, 0.0, 1.0, 1.0]).is_err());
    }
}
