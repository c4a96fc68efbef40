//! Crop / zoom by a normalized bounding box `[x1, y1, x2, y2]` in [0, 1].
//! Boxes are f64 like the JSON (and Python) they come from: in f32, 0.7 * 50 floors to 34, not 35.

use image::DynamicImage;

/// Pixel box of a normalized bbox: `floor(box * size)` (the convention of the LVR data and the
/// fixture), clamped to the image and at least one pixel wide and high.
pub fn pixel_box(bbox: [f64; 4], width: u32, height: u32) -> anyhow::Result<(u32, u32, u32, u32)> {
    let [x1, y1, x2, y2] = bbox;
    if bbox.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > 1.0) {
        anyhow::bail!("bbox {bbox:?} is outside [0, 1]");
    }
    if x2 <= x1 || y2 <= y1 {
        anyhow::bail!("bbox {bbox:?} is empty (need x1 < x2 and y1 < y2)");
    }
    let px = |v: f64, size: u32| ((v * size as f64).floor() as u32).min(size);
    let (l, t) = (px(x1, width).min(width - 1), px(y1, height).min(height - 1));
    let (r, b) = (px(x2, width).max(l + 1), px(y2, height).max(t + 1));
    Ok((l, t, r - l, b - t))
}

/// The region of `img` inside the normalized `bbox`.
pub fn crop_normalized(img: &DynamicImage, bbox: [f64; 4]) -> anyhow::Result<DynamicImage> {
    let (x, y, w, h) = pixel_box(bbox, img.width(), img.height())?;
    Ok(img.crop_imm(x, y, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_convention_and_errors() {
        assert_eq!(
            pixel_box([0.25, 0.3, 0.55, 0.7], 100, 50).unwrap(),
            (25, 15, 30, 20)
        );
        assert!(pixel_box([0.5, 0.1, 0.4, 0.9], 10, 10).is_err());
        assert!(pixel_box([0.0, 0.0, 1.2, 1.0], 10, 10).is_err());
        // A sliver narrower than a pixel still yields one pixel.
        assert_eq!(pixel_box([0.50, 0.5, 0.501, 0.6], 10, 10).unwrap().2, 1);
    }

    #[test]
    fn crop_matches_fixture_crop() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/qwen2_5_vl_tiny/images");
        let full = image::open(dir.join("scene1.png")).unwrap();
        let want = image::open(dir.join("scene1_crop.png")).unwrap().to_rgb8();
        let got = crop_normalized(&full, [0.25, 0.30, 0.55, 0.70])
            .unwrap()
            .to_rgb8();
        assert_eq!(got.dimensions(), want.dimensions());
        assert!(
            got.as_raw() == want.as_raw(),
            "crop pixels differ from the fixture's crop"
        );
    }
}
