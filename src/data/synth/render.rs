//! Draws a `Scene`: background gradient, clutter blobs, objects far to near, per-pixel noise.
//! The same pass paints the depth buffer the depth tool shows. Hand-drawn (a pixel test per shape)
//! because the shapes are simple and no drawing crate is a dependency.

use crate::data::synth::scene::{Object, Scene};
use crate::tools::depth::DepthBuffer;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The ground lit from the top left: 40 levels brighter at the top than at the bottom, and
/// tinted from blue at the left to warm at the right (24 levels each way), so that the ground
/// around any pixel tells which quarter it is in.
fn lit(rgb: [u8; 3], x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    let (u, v) = (
        x as f64 / (w.max(2) - 1) as f64 - 0.5,
        y as f64 / (h.max(2) - 1) as f64 - 0.5,
    );
    let light = -40.0 * v;
    let shift = |c: u8, d: f64| (f64::from(c) + light + d).round().clamp(0.0, 255.0) as u8;
    [
        shift(rgb[0], 48.0 * u),
        shift(rgb[1], 0.0),
        shift(rgb[2], -48.0 * u),
    ]
}

/// Depth of the ground plane at the top and bottom rows; objects are nearer than both.
pub const PLANE_FAR: f32 = 1.0;
pub const PLANE_NEAR: f32 = 0.7;

pub fn render(scene: &Scene) -> RgbImage {
    let (w, h) = (scene.width, scene.height);
    let mut img = RgbImage::from_fn(w, h, |x, y| {
        let t = y as f64 / h.max(2) as f64;
        let rgb = std::array::from_fn(|c| lerp(scene.sky[c], scene.ground[c], t));
        Rgb(if scene.lit { lit(rgb, x, y, w, h) } else { rgb })
    });
    for b in &scene.blobs {
        fill_region(
            w,
            h,
            [b.cx - b.rx, b.cy - b.ry, b.cx + b.rx, b.cy + b.ry],
            |x, y| {
                let (u, v) = ((x - b.cx) / b.rx, (y - b.cy) / b.ry);
                if b.round {
                    u * u + v * v <= 1.0
                } else {
                    u.abs() <= 1.0 && v.abs() <= 1.0
                }
            },
            |x, y| img.put_pixel(x, y, Rgb(b.rgb)),
        );
    }
    for o in by_depth(scene) {
        let rgb = o.color.rgb();
        fill_region(
            w,
            h,
            o.bbox_px(),
            |x, y| inside(o, x, y),
            |x, y| img.put_pixel(x, y, Rgb(rgb)),
        );
    }
    add_noise(&mut img, scene.noise, scene.noise_seed);
    img
}

/// The depth the depth tool reports: ground plane plus each object's depth over its shape.
pub fn depth_map(scene: &Scene) -> DepthBuffer {
    let (w, h) = (scene.width, scene.height);
    let mut d = DepthBuffer::ground_plane(w, h, PLANE_FAR, PLANE_NEAR);
    for o in by_depth(scene) {
        fill_region(
            w,
            h,
            o.bbox_px(),
            |x, y| inside(o, x, y),
            |x, y| d.set(x as i64, y as i64, o.depth as f32),
        );
    }
    d
}

/// Painter's order: far objects first, so near ones occlude them.
fn by_depth(scene: &Scene) -> Vec<&Object> {
    let mut objs: Vec<&Object> = scene.objects.iter().collect();
    objs.sort_by(|a, b| b.depth.total_cmp(&a.depth));
    objs
}

fn inside(o: &Object, x: f64, y: f64) -> bool {
    let half = o.size / 2.0;
    o.shape.contains((x - o.cx) / half, (y - o.cy) / half)
}

/// Calls `paint` for every pixel of the canvas within `bbox` whose center passes `test`.
fn fill_region(
    w: u32,
    h: u32,
    bbox: [f64; 4],
    test: impl Fn(f64, f64) -> bool,
    mut paint: impl FnMut(u32, u32),
) {
    let x0 = bbox[0].floor().max(0.0) as u32;
    let y0 = bbox[1].floor().max(0.0) as u32;
    let x1 = (bbox[2].ceil().max(0.0) as u32).min(w);
    let y1 = (bbox[3].ceil().max(0.0) as u32).min(h);
    for y in y0..y1 {
        for x in x0..x1 {
            if test(x as f64 + 0.5, y as f64 + 0.5) {
                paint(x, y);
            }
        }
    }
}

/// Sensor-like grain: about one 2x2 block in six is brightened or darkened by `amplitude`.
/// Blocky and sparse rather than dense per-pixel noise, which would make every 896x896 PNG
/// about 2 MB; this keeps scenes near 80 KB while still breaking up flat areas.
fn add_noise(img: &mut RgbImage, amplitude: u8, seed: u64) {
    if amplitude == 0 {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = amplitude as i16;
    let (w, h) = img.dimensions();
    let mut row = vec![0i16; w.div_ceil(2) as usize];
    for y in 0..h {
        if y.is_multiple_of(2) {
            for v in row.iter_mut() {
                *v = match rng.random_range(0..12u8) {
                    0 => -a,
                    1 => a,
                    _ => 0,
                };
            }
        }
        for x in 0..w {
            let n = row[(x / 2) as usize];
            for c in img.get_pixel_mut(x, y).0.iter_mut() {
                *c = (*c as i16 + n).clamp(0, 255) as u8;
            }
        }
    }
}

fn lerp(a: u8, b: u8, t: f64) -> u8 {
    (a as f64 + (b as f64 - a as f64) * t).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::scene::{Color, Shape};

    fn scene() -> Scene {
        Scene {
            width: 64,
            height: 48,
            sky: [150, 150, 150],
            ground: [110, 110, 110],
            blobs: vec![],
            lit: false,
            objects: vec![
                Object {
                    shape: Shape::Square,
                    color: Color::Red,
                    cx: 20.0,
                    cy: 20.0,
                    size: 10.0,
                    depth: 0.5,
                },
                // Overlaps the red square and is nearer: must win where both cover a pixel.
                Object {
                    shape: Shape::Square,
                    color: Color::Blue,
                    cx: 24.0,
                    cy: 20.0,
                    size: 10.0,
                    depth: 0.2,
                },
            ],
            noise: 0,
            noise_seed: 1,
        }
    }

    #[test]
    fn nearer_objects_occlude_and_depth_matches() {
        let s = scene();
        let img = render(&s);
        assert_eq!(img.get_pixel(17, 20).0, Color::Red.rgb());
        assert_eq!(img.get_pixel(22, 20).0, Color::Blue.rgb());
        assert_eq!(
            img.get_pixel(50, 40).0[0],
            img.get_pixel(50, 40).0[1],
            "gray background"
        );
        let d = depth_map(&s);
        assert_eq!(d.get(17, 20), 0.5);
        assert_eq!(d.get(22, 20), 0.2);
        assert!(d.get(50, 0) == PLANE_FAR && d.get(50, 47) == PLANE_NEAR);
    }

    #[test]
    fn noise_is_seeded() {
        let mut s = scene();
        s.noise = 12;
        assert_eq!(render(&s), render(&s));
        let mut t = s.clone();
        t.noise_seed = 2;
        assert_ne!(render(&s), render(&t));
    }

    /// A lit ground tells the four quarters apart by itself: brighter at the top, bluer at the
    /// left, warmer at the right; objects keep their exact colors.
    #[test]
    fn a_lit_ground_differs_by_quarter_and_leaves_objects_alone() {
        let mut s = scene();
        s.sky = [128, 128, 122];
        s.ground = [128, 128, 122];
        s.lit = true;
        let img = render(&s);
        let px = |x: u32, y: u32| img.get_pixel(x, y).0.map(i32::from);
        let (tl, tr, bl, br) = (px(2, 2), px(61, 2), px(2, 45), px(61, 45));
        for (top, bottom) in [(tl, bl), (tr, br)] {
            assert!(top[1] >= bottom[1] + 30, "{top:?} {bottom:?}");
        }
        for (left, right) in [(tl, tr), (bl, br)] {
            assert!(
                left[2] >= right[2] + 40 && right[0] >= left[0] + 40,
                "{left:?} {right:?}"
            );
        }
        assert_eq!(img.get_pixel(17, 20).0, Color::Red.rgb());
        s.lit = false;
        let plain = render(&s);
        assert_eq!(plain.get_pixel(2, 2), plain.get_pixel(61, 45));
    }
}
