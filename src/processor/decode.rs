//! Turning image bytes into the 8-bit RGB picture the image processor works on: decoding with
//! limits against decompression bombs, EXIF orientation, and transformers' `convert_to_rgb`.

use anyhow::{Context, Result, bail};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage, RgbaImage};
use std::io::{BufRead, Cursor, Seek};

use crate::data::chat::ImageSource;

/// Largest pixel count we decode: Pillow's `DecompressionBombError` threshold
/// (2 x `Image.MAX_IMAGE_PIXELS`), so we refuse what the reference pipeline refuses.
pub const MAX_DECODED_PIXELS: u64 = 2 * 89_478_485;

/// Memory a decoder may allocate: an RGBA16 image at the pixel limit needs ~1.4 GB.
const MAX_DECODER_ALLOC: u64 = 2 << 30;

/// Decodes the image `source` points to, refusing empty or oversized images before the pixels
/// are allocated. Applies the EXIF orientation, as transformers' `load_image` does.
pub fn load_image(source: &ImageSource) -> Result<DynamicImage> {
    let what = source.describe();
    let decoded = match source {
        ImageSource::Path(path) => {
            let reader =
                ImageReader::open(path).with_context(|| format!("cannot open image {what}"))?;
            decode(reader, &what)
        }
        ImageSource::Inline(bytes) => {
            decode(ImageReader::new(Cursor::new(bytes.as_slice())), &what)
        }
    };
    decoded.with_context(|| format!("cannot load image {what}"))
}

/// Decodes in-memory image bytes (any format the `image` crate was built with).
pub fn decode_bytes(bytes: &[u8], what: &str) -> Result<DynamicImage> {
    decode(ImageReader::new(Cursor::new(bytes)), what)
        .with_context(|| format!("cannot load image {what}"))
}

fn decode<R: BufRead + Seek>(reader: ImageReader<R>, what: &str) -> Result<DynamicImage> {
    let mut reader = reader
        .with_guessed_format()
        .with_context(|| format!("cannot read {what}"))?;
    if reader.format().is_none() {
        bail!("{what} is not in a recognized image format (png, jpeg, webp, gif, bmp)");
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .with_context(|| format!("{what} is not a decodable image"))?;
    // The header is read before any pixel buffer exists: check the size here.
    let (w, h) = decoder.dimensions();
    check_pixel_count(w, h).with_context(|| format!("refusing to decode {what}"))?;
    let orientation = decoder
        .orientation()
        .with_context(|| format!("cannot read the orientation of {what}"))?;
    let mut img =
        DynamicImage::from_decoder(decoder).with_context(|| format!("{what} is corrupt"))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Refuses zero-size images (nothing to resize) and decompression bombs.
pub fn check_pixel_count(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        bail!("image has zero size ({width}x{height})");
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_DECODED_PIXELS {
        bail!(
            "image is {width}x{height} = {pixels} pixels, over the limit of {MAX_DECODED_PIXELS} \
             (possible decompression bomb)"
        );
    }
    Ok(())
}

/// transformers' `convert_to_rgb`: RGB passes through; anything else goes to RGBA and is
/// alpha-composited onto opaque white, so transparent areas become white rather than black.
///
/// The composite reproduces Pillow's `Image.alpha_composite` over an opaque white background,
/// whose integer rounding is `(v + (v >> 8)) >> 8` with `v = src*a + 255*(255-a) + 128`.
/// 16-bit and float images are first reduced to 8 bits by the `image` crate.
pub fn convert_to_rgb(img: &DynamicImage) -> RgbImage {
    if let DynamicImage::ImageRgb8(rgb) = img {
        return rgb.clone();
    }
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    composite_on_white(&img.to_rgba8())
}

fn composite_on_white(rgba: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let a = u32::from(a);
        let blend = |c: u8| {
            let v = u32::from(c) * a + 255 * (255 - a) + 128;
            ((v + (v >> 8)) >> 8) as u8
        };
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_composite_matches_exact_blend_within_rounding() {
        for a in 0..=255u32 {
            for c in (0..=255u32).step_by(5) {
                let px = RgbaImage::from_pixel(1, 1, image::Rgba([c as u8, 0, 255, a as u8]));
                let out = composite_on_white(&px).get_pixel(0, 0).0;
                let exact = (c * a + 255 * (255 - a)) as f64 / 255.0;
                assert!(
                    (out[0] as f64 - exact).abs() <= 0.5 + 1e-9,
                    "c={c} a={a} -> {}",
                    out[0]
                );
                assert_eq!(out[2], 255);
            }
        }
        // Fully transparent is white, fully opaque is the colour itself.
        let px = RgbaImage::from_pixel(1, 1, image::Rgba([10, 20, 30, 0]));
        assert_eq!(composite_on_white(&px).get_pixel(0, 0).0, [255, 255, 255]);
        let px = RgbaImage::from_pixel(1, 1, image::Rgba([10, 20, 30, 255]));
        assert_eq!(composite_on_white(&px).get_pixel(0, 0).0, [10, 20, 30]);
    }

    #[test]
    fn grayscale_becomes_gray_rgb() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 2, image::Luma([77])));
        assert!(convert_to_rgb(&img).pixels().all(|p| p.0 == [77, 77, 77]));
    }

    #[test]
    fn png_roundtrip_decodes() {
        let src = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 80, 9]));
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(src.clone())
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        let img = decode_bytes(&bytes, "test.png").unwrap();
        assert_eq!(convert_to_rgb(&img), src);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = decode_bytes(b"this is not an image at all", "notes.txt").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("notes.txt") && msg.contains("not in a recognized image format"),
            "{msg}"
        );
        // A PNG signature followed by junk is recognized but fails to decode.
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend_from_slice(&[0u8; 40]);
        let msg = format!("{:#}", decode_bytes(&bytes, "broken.png").unwrap_err());
        assert!(msg.contains("broken.png"), "{msg}");
    }

    /// A PNG whose header claims `w` x `h` pixels but carries no pixel data: what a
    /// decompression bomb looks like before its (tiny, highly compressed) data is inflated.
    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        // CRC-32 (ISO-HDLC), bitwise: a few lines of test code rather than a dependency.
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0xEDB8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // An empty IDAT and IEND: the decoder reads the header up to the first data chunk.
        for chunk in [&b"IDAT"[..], &b"IEND"[..]] {
            png.extend_from_slice(&0u32.to_be_bytes());
            png.extend_from_slice(chunk);
            png.extend_from_slice(&crc32(chunk).to_be_bytes());
        }
        png
    }

    #[test]
    fn decompression_bomb_is_refused_before_decoding() {
        let msg = format!(
            "{:#}",
            decode_bytes(&png_header_only(20_000, 20_000), "bomb.png").unwrap_err()
        );
        assert!(
            msg.contains("bomb.png") && msg.contains("decompression bomb"),
            "{msg}"
        );
        // The same header with a sane size gets past the size check and fails on the missing data.
        let msg = format!(
            "{:#}",
            decode_bytes(&png_header_only(64, 64), "small.png").unwrap_err()
        );
        assert!(
            msg.contains("small.png") && !msg.contains("decompression bomb"),
            "{msg}"
        );
    }

    #[test]
    fn zero_and_huge_sizes_are_refused() {
        assert!(format!("{:#}", check_pixel_count(0, 10).unwrap_err()).contains("zero size"));
        assert!(
            format!("{:#}", check_pixel_count(20_000, 20_000).unwrap_err())
                .contains("decompression bomb")
        );
        assert!(check_pixel_count(8_000, 8_000).is_ok());
    }
}
