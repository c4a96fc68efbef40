//! Qwen2-VL image preprocessing, as transformers' `Qwen2VLImageProcessor` does it: RGB
//! conversion, `smart_resize` to multiples of patch x merge within a pixel budget, Pillow
//! bicubic resize, rescale and normalize, then cutting into flattened patches in the order the
//! vision tower's patch merger expects.

use anyhow::{Context, Result, bail, ensure};
use image::DynamicImage;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::Path;

use super::decode::{MAX_DECODED_PIXELS, convert_to_rgb};
use super::resample::resize_bicubic;

/// PIL's `Image.BICUBIC`, the only `resample` the Qwen-VL family uses (and the only one
/// implemented here, Pillow-exact).
pub const PIL_BICUBIC: u32 = 3;

/// The preprocessing settings of `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    pub do_convert_rgb: bool,
    pub resample: u32,
}

/// OpenAI CLIP statistics, transformers' defaults for this processor, written as transformers
/// writes them; like numpy we use them rounded to f32.
#[allow(clippy::excessive_precision)]
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

impl Default for ImageProcessorConfig {
    /// `Qwen2VLImageProcessor`'s constructor defaults.
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            do_convert_rgb: true,
            resample: PIL_BICUBIC,
        }
    }
}

/// A mean or std given once for all channels or once per channel.
#[derive(Deserialize)]
#[serde(untagged)]
enum PerChannel {
    One(f32),
    Many(Vec<f32>),
}

impl PerChannel {
    fn per_rgb(self) -> Result<[f32; 3]> {
        match self {
            PerChannel::One(v) => Ok([v; 3]),
            PerChannel::Many(v) => match v.as_slice() {
                [x] => Ok([*x; 3]),
                [r, g, b] => Ok([*r, *g, *b]),
                _ => bail!("{} values; expected 1 or 3 (RGB)", v.len()),
            },
        }
    }
}

/// The value of `key` in a JSON object, if present and not null; a wrong type is an error
/// naming the key (serde's own message would not).
fn field<T: DeserializeOwned>(obj: &Map<String, Value>, key: &str) -> Result<Option<T>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .with_context(|| format!("bad value for \"{key}\": {v}")),
    }
}

impl ImageProcessorConfig {
    /// Reads `preprocessor_config.json`; keys it lacks keep the Qwen2-VL defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read image processor config {}", path.display()))?;
        Self::from_json_str(&text)
            .with_context(|| format!("invalid image processor config {}", path.display()))
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("not valid JSON")?;
        let obj = value.as_object().context("expected a JSON object")?;
        let d = Self::default();
        // Newer files say size = {shortest_edge, longest_edge}, older ones {min_pixels,
        // max_pixels}; despite the names both are pixel counts. Explicit top-level
        // min/max_pixels win, as in transformers.
        let size = field::<Map<String, Value>>(obj, "size")?.unwrap_or_default();
        let from_size = |a: &str, b: &str| -> Result<Option<usize>> {
            Ok(field(&size, a)
                .with_context(|| "in \"size\"")?
                .or(field(&size, b).with_context(|| "in \"size\"")?))
        };
        let per_rgb = |key: &str| -> Result<Option<[f32; 3]>> {
            field::<PerChannel>(obj, key)?
                .map(|v| v.per_rgb().with_context(|| format!("bad \"{key}\"")))
                .transpose()
        };
        let cfg = Self {
            min_pixels: field(obj, "min_pixels")?
                .or(from_size("shortest_edge", "min_pixels")?)
                .unwrap_or(d.min_pixels),
            max_pixels: field(obj, "max_pixels")?
                .or(from_size("longest_edge", "max_pixels")?)
                .unwrap_or(d.max_pixels),
            patch_size: field(obj, "patch_size")?.unwrap_or(d.patch_size),
            merge_size: field(obj, "merge_size")?.unwrap_or(d.merge_size),
            temporal_patch_size: field(obj, "temporal_patch_size")?
                .unwrap_or(d.temporal_patch_size),
            image_mean: per_rgb("image_mean")?.unwrap_or(d.image_mean),
            image_std: per_rgb("image_std")?.unwrap_or(d.image_std),
            rescale_factor: field(obj, "rescale_factor")?.unwrap_or(d.rescale_factor),
            do_resize: field(obj, "do_resize")?.unwrap_or(d.do_resize),
            do_rescale: field(obj, "do_rescale")?.unwrap_or(d.do_rescale),
            do_normalize: field(obj, "do_normalize")?.unwrap_or(d.do_normalize),
            do_convert_rgb: field(obj, "do_convert_rgb")?.unwrap_or(d.do_convert_rgb),
            resample: field(obj, "resample")?.unwrap_or(d.resample),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects settings that would divide by zero, make no patches, or need an unimplemented filter.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.patch_size > 0, "patch_size must be positive");
        ensure!(self.merge_size > 0, "merge_size must be positive");
        ensure!(
            self.temporal_patch_size > 0,
            "temporal_patch_size must be positive"
        );
        ensure!(self.min_pixels > 0, "min_pixels must be positive");
        ensure!(
            self.min_pixels as u64 <= MAX_DECODED_PIXELS,
            "min_pixels ({}) is absurdly large (limit {MAX_DECODED_PIXELS})",
            self.min_pixels
        );
        ensure!(
            self.min_pixels <= self.max_pixels,
            "min_pixels ({}) exceeds max_pixels ({})",
            self.min_pixels,
            self.max_pixels
        );
        ensure!(
            self.image_std.iter().all(|s| *s != 0.0),
            "image_std has a zero entry"
        );
        ensure!(
            self.resample == PIL_BICUBIC,
            "resample = {} is not supported; only {PIL_BICUBIC} (PIL BICUBIC) is implemented",
            self.resample
        );
        Ok(())
    }

    /// Side of the square every resized dimension is a multiple of.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Features of one flattened patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// LLM tokens an image with this grid becomes after the merger: one per merge x merge window.
    pub fn num_image_tokens(&self, grid_thw: [usize; 3]) -> usize {
        grid_thw.iter().product::<usize>() / (self.merge_size * self.merge_size)
    }

    /// Runs the whole pipeline on one decoded image.
    pub fn preprocess(&self, img: &DynamicImage) -> Result<ProcessedImage> {
        let rgb = if self.do_convert_rgb {
            convert_to_rgb(img)
        } else {
            img.to_rgb8()
        };
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let (rh, rw) = if self.do_resize {
            smart_resize(h, w, self.factor(), self.min_pixels, self.max_pixels)?
        } else {
            ensure!(
                h % self.factor() == 0 && w % self.factor() == 0 && h > 0 && w > 0,
                "do_resize is off but the image is {w}x{h}, not a multiple of {}",
                self.factor()
            );
            (h, w)
        };
        // A huge patch size can round a small image up to an enormous one.
        ensure!(
            (rh as u64) * (rw as u64) <= MAX_DECODED_PIXELS,
            "resizing {w}x{h} for patch x merge = {} gives {rw}x{rh}, absurdly large",
            self.factor()
        );
        let resized = if (rh, rw) != (h, w) {
            resize_bicubic(&rgb, rw as u32, rh as u32)
        } else {
            rgb
        };
        let planes = self.normalize(&resized);
        Ok(self.patchify(&planes, rh, rw))
    }

    /// Channel-first float planes `[3][h][w]`. Rescale is done in f64 and stored as f32, then
    /// normalize in f32, which is what numpy does in transformers (`astype(float64) * scale`
    /// cast to float32, then `(x - mean) / std` with float32 arrays).
    fn normalize(&self, img: &image::RgbImage) -> Vec<f32> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut planes = vec![0f32; 3 * h * w];
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                let mut v = if self.do_rescale {
                    (f64::from(px.0[c]) * self.rescale_factor) as f32
                } else {
                    f32::from(px.0[c])
                };
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                planes[c * h * w + i] = v;
            }
        }
        planes
    }

    /// Cuts `[3][h][w]` planes into patches. A single image is repeated `temporal_patch_size`
    /// times (grid_t = 1). Rows go in merge-window order: (t, h/merge, w/merge, merge_h,
    /// merge_w), so the patches of one merged token are adjacent; each row is laid out
    /// (channel, temporal, patch_y, patch_x). This is transformers' reshape to
    /// (t, T, C, H/m, m, P, W/m, m, P) followed by permute(0, 3, 6, 4, 7, 2, 1, 5, 8).
    fn patchify(&self, planes: &[f32], h: usize, w: usize) -> ProcessedImage {
        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (grid_h, grid_w) = (h / p, w / p);
        let cols = self.patch_dim();
        let rows = grid_h * grid_w;
        let mut out = Vec::with_capacity(rows * cols);
        for block_y in 0..grid_h / m {
            for block_x in 0..grid_w / m {
                for in_y in 0..m {
                    for in_x in 0..m {
                        let (y0, x0) = ((block_y * m + in_y) * p, (block_x * m + in_x) * p);
                        for c in 0..3 {
                            let plane = &planes[c * h * w..(c + 1) * h * w];
                            for _ in 0..tp {
                                for py in 0..p {
                                    let row_start = (y0 + py) * w + x0;
                                    out.extend_from_slice(&plane[row_start..row_start + p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        ProcessedImage {
            pixel_values: out,
            rows,
            cols,
            grid_thw: [1, grid_h, grid_w],
        }
    }
}

/// One image ready for the vision tower: `pixel_values` is row-major `[rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    pub pixel_values: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    /// Patches along time, height and width; `rows` is their product.
    pub grid_thw: [usize; 3],
}

/// transformers' `smart_resize`: the (height, width) closest to the input's that are multiples
/// of `factor` with a pixel count in `[min_pixels, max_pixels]`, aspect ratio kept as well as
/// rounding allows.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    ensure!(
        height > 0 && width > 0,
        "image has zero size ({width}x{height})"
    );
    ensure!(factor > 0, "resize factor must be positive");
    let (hf, wf, ff) = (height as f64, width as f64, factor as f64);
    let ratio = hf.max(wf) / hf.min(wf);
    ensure!(
        ratio <= 200.0,
        "absolute aspect ratio must be smaller than 200, got {ratio} ({width}x{height})"
    );
    // Python's round() rounds halves to even.
    let mut h_bar = (hf / ff).round_ties_even() as usize * factor;
    let mut w_bar = (wf / ff).round_ties_even() as usize * factor;
    if h_bar * w_bar > max_pixels {
        let beta = ((hf * wf) / max_pixels as f64).sqrt();
        h_bar = factor.max((hf / beta / ff).floor() as usize * factor);
        w_bar = factor.max((wf / beta / ff).floor() as usize * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (hf * wf)).sqrt();
        h_bar = (hf * beta / ff).ceil() as usize * factor;
        w_bar = (wf * beta / ff).ceil() as usize * factor;
    }
    Ok((h_bar, w_bar))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_rounds_to_nearest_multiple() {
        // 150/28 = 5.36 -> 5 -> 140; 200/28 = 7.14 -> 7 -> 196; 140*196 = 27440 within bounds.
        assert_eq!(smart_resize(150, 200, 28, 3136, 50176).unwrap(), (140, 196));
        // Python rounds halves to even: 42/28 = 1.5 -> 2, 70/28 = 2.5 -> 2.
        assert_eq!(smart_resize(42, 70, 28, 1, 1 << 30).unwrap(), (56, 56));
    }

    #[test]
    fn smart_resize_scales_down_over_max_pixels() {
        // 1000x800 rounds to 1008x812 > 50176: beta = sqrt(800000 / 50176) = 3.99298;
        // 1000 / beta / 28 = 8.94 -> floor 8 -> 224; 800 / beta / 28 = 7.16 -> 7 -> 196.
        assert_eq!(
            smart_resize(1000, 800, 28, 3136, 50176).unwrap(),
            (224, 196)
        );
        // A long thin image would floor to 0 rows; it keeps one factor.
        // 30x5000: beta = sqrt(150000 / 50176) = 1.729; 30 / beta / 28 = 0.62 -> 0 -> 28.
        assert_eq!(smart_resize(30, 5000, 28, 3136, 50176).unwrap().0, 28);
        // 233x317 (scene1): 224*308 = 68992 > 50176; beta = sqrt(73861/50176) = 1.21329;
        // 233/beta/28 = 6.86 -> 6 -> 168; 317/beta/28 = 9.33 -> 9 -> 252.
        assert_eq!(smart_resize(233, 317, 28, 3136, 50176).unwrap(), (168, 252));
    }

    #[test]
    fn smart_resize_scales_up_under_min_pixels() {
        // 20x30 rounds to 28x28 = 784 < 3136: beta = sqrt(3136/600) = 2.2862;
        // 20*beta/28 = 1.63 -> ceil 2 -> 56; 30*beta/28 = 2.45 -> 3 -> 84.
        assert_eq!(smart_resize(20, 30, 28, 3136, 50176).unwrap(), (56, 84));
        // Tiny inputs round to 0 first and are still lifted to the minimum.
        // 7x9: beta = sqrt(3136/63) = 7.0553; 7*beta/28 = 1.76 -> 56; 9*beta/28 = 2.27 -> 84.
        assert_eq!(smart_resize(7, 9, 28, 3136, 50176).unwrap(), (56, 84));
    }

    #[test]
    fn smart_resize_refuses_extreme_aspect_and_zero() {
        let msg = format!("{:#}", smart_resize(10, 2010, 28, 3136, 50176).unwrap_err());
        assert!(msg.contains("aspect ratio"), "{msg}");
        assert!(smart_resize(10, 2000, 28, 3136, 50176).is_ok());
        assert!(smart_resize(0, 10, 28, 3136, 50176).is_err());
    }

    #[test]
    fn config_reads_size_variant_and_defaults() {
        let cfg = ImageProcessorConfig::from_json_str(
            r#"{"size": {"shortest_edge": 1000, "longest_edge": 9000}}"#,
        )
        .unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (1000, 9000));
        assert_eq!(
            (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size),
            (14, 2, 2)
        );
        assert_eq!(cfg.image_mean, CLIP_MEAN);
        assert!(cfg.do_resize && cfg.do_rescale && cfg.do_normalize && cfg.do_convert_rgb);
        // Explicit min/max_pixels take precedence over `size`.
        let cfg = ImageProcessorConfig::from_json_str(
            r#"{"min_pixels": 10, "max_pixels": 20, "size": {"shortest_edge": 1000, "longest_edge": 9000}}"#,
        )
        .unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (10, 20));
        // An empty file is all defaults.
        assert_eq!(
            ImageProcessorConfig::from_json_str("{}").unwrap(),
            ImageProcessorConfig::default()
        );
        // A scalar mean applies to all channels.
        let cfg = ImageProcessorConfig::from_json_str(r#"{"image_mean": 0.5, "image_std": [0.5]}"#)
            .unwrap();
        assert_eq!((cfg.image_mean, cfg.image_std), ([0.5; 3], [0.5; 3]));
    }

    #[test]
    fn config_rejects_bad_values() {
        for (json, needle) in [
            (r#"{"patch_size": 0}"#, "patch_size"),
            (r#"{"min_pixels": 100, "max_pixels": 10}"#, "exceeds"),
            (r#"{"image_std": [1, 0, 1]}"#, "zero"),
            (r#"{"image_mean": [1, 2]}"#, "image_mean"),
            (r#"{"resample": 2}"#, "resample"),
            (
                r#"{"min_pixels": 1000000000000, "max_pixels": 1000000000000}"#,
                "absurdly large",
            ),
            (r#"{"patch_size": "big"}"#, "patch_size"),
        ] {
            let msg = format!(
                "{:#}",
                ImageProcessorConfig::from_json_str(json).unwrap_err()
            );
            assert!(msg.contains(needle), "{json}: {msg}");
        }
    }

    #[test]
    fn absurd_patch_size_is_refused_not_allocated() {
        let cfg = ImageProcessorConfig::from_json_str(r#"{"patch_size": 100000}"#).unwrap();
        let img = DynamicImage::ImageRgb8(image::RgbImage::new(30, 20));
        let msg = format!("{:#}", cfg.preprocess(&img).unwrap_err());
        assert!(msg.contains("absurdly large"), "{msg}");
    }

    #[test]
    fn preprocess_shapes_and_values_of_a_flat_image() {
        // A uniform image stays uniform through the resize, so every value is the normalized
        // colour: (v / 255 - mean) / std per channel.
        let cfg = ImageProcessorConfig::default();
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            100,
            60,
            image::Rgb([255, 0, 128]),
        ));
        let out = cfg.preprocess(&img).unwrap();
        // 60x100 rounds to 56x112 (within 3136..1003520): a 4x8 patch grid.
        assert_eq!(out.grid_thw, [1, 4, 8]);
        assert_eq!((out.rows, out.cols), (32, 1176));
        assert_eq!(out.pixel_values.len(), 32 * 1176);
        let expect = |c: usize, v: f32| (v / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        let per_channel = 2 * 14 * 14;
        for (i, &x) in out.pixel_values[..1176].iter().enumerate() {
            let c = i / per_channel;
            let want = expect(c, [255.0, 0.0, 128.0][c]);
            assert!((x - want).abs() < 1e-6, "value {i}: {x} vs {want}");
        }
        assert_eq!(cfg.num_image_tokens(out.grid_thw), 8);
    }

    #[test]
    fn patch_layout_follows_merge_windows() {
        // Encode each pixel's position in its value so the layout can be read back.
        let cfg = ImageProcessorConfig {
            patch_size: 2,
            merge_size: 2,
            temporal_patch_size: 2,
            ..Default::default()
        };
        let (h, w) = (4, 8);
        let planes: Vec<f32> = (0..3)
            .flat_map(|c| (0..h * w).map(move |i| (c * 1000 + i) as f32))
            .collect();
        let out = cfg.patchify(&planes, h, w);
        assert_eq!((out.rows, out.cols, out.grid_thw), (8, 24, [1, 2, 4]));
        let at = |row: usize, col: usize| out.pixel_values[row * out.cols + col];
        // Row 1 is the right neighbour (x = 2..4) inside the first merge window; row 2 is below.
        assert_eq!(at(1, 0), 2.0);
        assert_eq!(at(2, 0), (2 * w) as f32);
        // Row 4 starts the second merge window, at x = 4.
        assert_eq!(at(4, 0), 4.0);
        // Within a row: channel, then the repeated temporal copy, then patch y, patch x.
        assert_eq!(at(0, 1), 1.0);
        assert_eq!(at(0, 2), w as f32);
        assert_eq!(at(0, 4), 0.0, "second temporal copy repeats the frame");
        assert_eq!(at(0, 8), 1000.0, "channel 1 starts after T*P*P values");
    }
}
