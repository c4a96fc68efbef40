//! Highlight: draw a rectangle outline around a normalized bbox (ThinkMorph's "mark the region"
//! edit). Drawn by hand: the outline is a few pixel loops and `imageproc` is not a dependency.

use crate::tools::crop::pixel_box;
use image::{DynamicImage, Rgb};

pub const RED: Rgb<u8> = Rgb([255, 0, 0]);

/// A copy of `img` (as RGB) with a `width`-pixel outline of `color` drawn just inside the pixel box
/// of `bbox` (clipped to the box when the box is thinner than two outlines).
pub fn highlight(
    img: &DynamicImage,
    bbox: [f64; 4],
    width: u32,
    color: Rgb<u8>,
) -> anyhow::Result<DynamicImage> {
    anyhow::ensure!(width > 0, "highlight width must be positive");
    let mut out = img.to_rgb8();
    let (x0, y0, w, h) = pixel_box(bbox, out.width(), out.height())?;
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            let (dx, dy) = (x - x0, y - y0);
            let on_edge = dx < width || dy < width || w - 1 - dx < width || h - 1 - dy < width;
            if on_edge {
                out.put_pixel(x, y, color);
            }
        }
    }
    Ok(DynamicImage::ImageRgb8(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn outline_only_inside_the_box() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(20, 10, Rgb([0, 0, 255])));
        // Pixel box: x 5..15, y 2..8.
        let out = highlight(&img, [0.25, 0.2, 0.75, 0.8], 2, RED)
            .unwrap()
            .to_rgb8();
        let red = |x, y| out.get_pixel(x, y).0 == [255, 0, 0];
        assert!(red(5, 2) && red(6, 3) && red(14, 7) && red(10, 2) && red(5, 5));
        assert!(!red(7, 4), "interior must stay untouched");
        assert!(
            !red(4, 2) && !red(15, 7) && !red(10, 1) && !red(10, 8),
            "outside must stay untouched"
        );
        let count = out.pixels().filter(|p| p.0 == [255, 0, 0]).count();
        // 10x6 box minus its 6x2 interior.
        assert_eq!(count, 10 * 6 - 6 * 2);
        assert!(highlight(&img, [0.2, 0.2, 1.3, 0.8], 2, RED).is_err());
    }
}
