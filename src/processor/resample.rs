//! Bicubic resizing of an 8-bit RGB image that reproduces Pillow's `Image.resize(size, BICUBIC)`
//! bit for bit, because transformers' Qwen2-VL image processor resizes the uint8 PIL image.
//!
//! Written by hand on purpose: no crate does Pillow-exact resampling (`image`'s and
//! `fast_image_resize`'s filters differ in support scaling, coefficient rounding or the 8-bit
//! rounding between passes), and one 8-bit level of difference moves every normalized pixel by
//! ~0.015. This follows the algorithm of Pillow's `libImaging/Resample.c`:
//! - a separable convolution: one pass along each axis whose size changes;
//! - the a = -0.5 cubic kernel, its support widened by the downscale factor (antialiasing);
//! - per-output-pixel weights normalized to sum 1, then quantized to 22-bit fixed point;
//! - after each pass the accumulator is rounded and clamped to 0..=255, so the second pass
//!   reads 8-bit values, not the exact first-pass result. Hence the pass order matters (one
//!   value in five moves by a level): Pillow 13 runs the vertical pass first when the height
//!   shrinks by more than twice as many pixels as the width, otherwise the horizontal one
//!   (Pillow 12 and older always go horizontal first). We follow Pillow 13, which produced the
//!   reference tensors we test against.

use image::RgbImage;

/// Fixed-point fraction bits of the weights: 32 bits minus 8 for the pixel value and 2 for the
/// overshoot of a kernel with negative lobes (Pillow's choice, which fixes the rounding).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The Keys cubic convolution kernel with a = -0.5 (Pillow's BICUBIC), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}
const BICUBIC_SUPPORT: f64 = 2.0;

/// The input samples one output sample reads: `weights[i]` multiplies input `first + i`.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// Weights of every output sample along one axis of length `in_size` resized to `out_size`.
///
/// The arithmetic (f64, truncating casts, the +0.5 offsets) mirrors Pillow's so that the
/// quantized weights, and hence the output bytes, are identical.
fn axis_taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the kernel so every input pixel contributes (antialiasing).
    let filter_scale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filter_scale;
    let inv_filter_scale = 1.0 / filter_scale;
    (0..out_size)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale;
            // `as i64` truncates toward zero like C's `(int)`; negatives are clamped to 0 anyway.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (first..end)
                .map(|i| bicubic((i as f64 - center + 0.5) * inv_filter_scale))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let fixed = w * f64::from(1u32 << PRECISION_BITS);
                    // Round half away from zero, then truncate, as Pillow does.
                    (if w < 0.0 { fixed - 0.5 } else { fixed + 0.5 }) as i32
                })
                .collect();
            Taps { first, weights }
        })
        .collect()
}

/// Rounds a fixed-point accumulator (which started at one half) to an 8-bit value.
fn clamp_to_u8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One output pixel: the weighted sum of input pixels `taps.first..` along the resized axis.
/// Input pixel `i` of the line starts at byte `base + i * stride` of the interleaved RGB buffer.
fn convolve(taps: &Taps, data: &[u8], base: usize, stride: usize) -> [u8; 3] {
    let mut acc: [i64; 3] = [1 << (PRECISION_BITS - 1); 3];
    for (k, &w) in taps.weights.iter().enumerate() {
        let at = base + (taps.first + k) * stride;
        for (c, a) in acc.iter_mut().enumerate() {
            *a += i64::from(data[at + c]) * i64::from(w);
        }
    }
    acc.map(clamp_to_u8)
}

fn resize_horizontal(src: &RgbImage, out_w: u32) -> RgbImage {
    let (in_w, h) = src.dimensions();
    let taps = axis_taps(in_w as usize, out_w as usize);
    let data = src.as_raw();
    let row_bytes = in_w as usize * 3;
    let mut out = Vec::with_capacity(out_w as usize * h as usize * 3);
    for y in 0..h as usize {
        for t in &taps {
            out.extend_from_slice(&convolve(t, data, y * row_bytes, 3));
        }
    }
    RgbImage::from_raw(out_w, h, out).expect("buffer sized from the output dimensions")
}

fn resize_vertical(src: &RgbImage, out_h: u32) -> RgbImage {
    let (w, in_h) = src.dimensions();
    let taps = axis_taps(in_h as usize, out_h as usize);
    let data = src.as_raw();
    let row_bytes = w as usize * 3;
    let mut out = Vec::with_capacity(row_bytes * out_h as usize);
    for t in &taps {
        for x in 0..w as usize {
            out.extend_from_slice(&convolve(t, data, x * 3, row_bytes));
        }
    }
    RgbImage::from_raw(w, out_h, out).expect("buffer sized from the output dimensions")
}

/// Resizes `src` to `out_w` x `out_h` exactly like Pillow 13's `Image.resize((out_w, out_h),
/// Image.BICUBIC)` on an RGB image. Both output sizes must be non-zero.
pub fn resize_bicubic(src: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    let horizontal = |img: &RgbImage| {
        if out_w != in_w {
            resize_horizontal(img, out_w)
        } else {
            img.clone()
        }
    };
    let vertical = |img: &RgbImage| {
        if out_h != in_h {
            resize_vertical(img, out_h)
        } else {
            img.clone()
        }
    };
    if vertical_first(in_w, in_h, out_w, out_h) {
        horizontal(&vertical(src))
    } else {
        vertical(&horizontal(src))
    }
}

/// Pillow 13's pass order: vertical first when the height loses more than twice as many pixels
/// as the width (that makes the horizontal pass cheaper).
fn vertical_first(in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> bool {
    let (dw, dh) = (
        i64::from(in_w) - i64::from(out_w),
        i64::from(in_h) - i64::from(out_h),
    );
    dh > 0 && dh > 2 * dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_interpolating() {
        // A cubic convolution kernel is 1 at 0 and 0 at the other integers.
        assert_eq!(bicubic(0.0), 1.0);
        for x in [1.0, -1.0, 2.0, -2.0, 3.5] {
            assert_eq!(bicubic(x), 0.0, "at {x}");
        }
        // a = -0.5 gives the negative lobe 4a/27 ... check one value from the closed form.
        let x: f64 = 1.5;
        assert!((bicubic(x) - (-0.5 * (x.powi(3) - 5.0 * x * x + 8.0 * x - 4.0))).abs() < 1e-15);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(317usize, 308usize), (150, 140), (10, 37), (94, 28)] {
            for t in axis_taps(i, o) {
                let sum: i64 = t.weights.iter().map(|&w| i64::from(w)).sum();
                // Each weight is rounded separately, so the sum is within a few units of 2^22.
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i64,
                    "{i}->{o}"
                );
                assert!(t.first + t.weights.len() <= i);
            }
        }
    }

    #[test]
    fn downscale_widens_the_kernel() {
        // Halving: support 4 input pixels each side of the centre -> 8 taps inside the image.
        let taps = axis_taps(100, 50);
        assert_eq!(taps[25].weights.len(), 8);
        // Upscaling keeps the 4-tap cubic.
        let taps = axis_taps(50, 100);
        assert_eq!(taps[50].weights.len(), 4);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = RgbImage::from_pixel(31, 17, image::Rgb([200, 7, 255]));
        for (w, h) in [(56, 28), (28, 56), (12, 5)] {
            let out = resize_bicubic(&src, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 7, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // 200x150 -> 196x140: the height loses 10 > 2 * 4 pixels, vertical first.
        assert!(vertical_first(200, 150, 196, 140));
        // 317x233 -> 252x168: 65 is not more than 2 * 65, horizontal first.
        assert!(!vertical_first(317, 233, 252, 168));
        // Upscaling the height never goes vertical first.
        assert!(!vertical_first(100, 50, 100, 80));
        // The order is visible: on a textured image the two orders differ somewhere.
        let src = RgbImage::from_fn(200, 150, |x, y| {
            image::Rgb([
                ((x * 37 + y * 91) % 256) as u8,
                ((x * x + y) % 256) as u8,
                (y * 7 % 256) as u8,
            ])
        });
        let v_then_h = resize_horizontal(&resize_vertical(&src, 140), 196);
        let h_then_v = resize_vertical(&resize_horizontal(&src, 196), 140);
        assert_ne!(v_then_h, h_then_v);
        assert_eq!(resize_bicubic(&src, 196, 140), v_then_h);
    }

    #[test]
    fn same_size_is_identity() {
        let src = RgbImage::from_fn(9, 7, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 5]));
        assert_eq!(resize_bicubic(&src, 9, 7), src);
    }

    #[test]
    fn sharp_edge_overshoot_is_clamped() {
        // A black/white step upscaled overshoots past 0 and 255 with a = -0.5; the clamp keeps
        // it in range and the flat regions away from the step keep their values.
        let src = RgbImage::from_fn(8, 1, |x, _| {
            if x < 4 {
                image::Rgb([0; 3])
            } else {
                image::Rgb([255; 3])
            }
        });
        let out = resize_bicubic(&src, 32, 1);
        assert_eq!(out.get_pixel(0, 0).0, [0; 3]);
        assert_eq!(out.get_pixel(31, 0).0, [255; 3]);
        let row: Vec<u8> = (0..32).map(|x| out.get_pixel(x, 0).0[0]).collect();
        assert!(
            row.windows(2).all(|w| w[0] <= w[1]),
            "monotone after clamping: {row:?}"
        );
    }
}
