//! Admitting the images of a request: `data:` URLs always, local files only under the directory
//! the server was started with (`--allow-local-images DIR`), remote `http(s)://` URLs only with
//! `--allow-remote-images` (fetching lets any client make the server open connections on its
//! behalf, so it is off unless the operator asks for it). Every image is checked
//! against the byte and pixel limits by reading its header only, so a small file that decodes to
//! a huge bitmap is refused before it is decoded.

use super::ServeConfig;
use super::error::ApiError;
use axum::http::StatusCode;
use base64::Engine;
use image::ImageReader;
use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

/// The reference the processor will read (the `data:` URL itself, or the canonical path of an
/// allowed local file), once the image has passed the limits.
pub fn admit_image(url: &str, cfg: &ServeConfig) -> Result<String, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        return admit_data_url(url, rest, cfg);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        if !cfg.allow_remote_images {
            return Err(ApiError::invalid(
                None,
                "remote image URLs are refused by this server (it was not started with \
                 --allow-remote-images): send the image as a data: URL",
            ));
        }
        return admit_remote(url, cfg);
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    match &cfg.local_images {
        Some(root) => admit_local(path, root, cfg),
        None => Err(ApiError::invalid(
            None,
            "local image paths are refused by this server (it was not started with \
             --allow-local-images): send the image as a data: URL",
        )),
    }
}

fn admit_data_url(url: &str, rest: &str, cfg: &ServeConfig) -> Result<String, ApiError> {
    let Some((_mime, payload)) = rest.split_once(";base64,") else {
        return Err(ApiError::invalid(
            None,
            "image data: URL is not base64-encoded (expected data:<mime>;base64,<payload>)",
        ));
    };
    let payload = payload.trim();
    // Refuse from the encoded length first: no need to decode what is too large anyway.
    if payload.len() / 4 * 3 > cfg.max_image_bytes + 3 {
        return Err(too_large(
            format!("about {} bytes", payload.len() / 4 * 3),
            cfg,
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| ApiError::invalid(None, format!("image data: URL has invalid base64: {e}")))?;
    if bytes.len() > cfg.max_image_bytes {
        return Err(too_large(format!("{} bytes", bytes.len()), cfg));
    }
    check_pixels(ImageReader::new(Cursor::new(&bytes)), cfg)?;
    Ok(url.to_string())
}

fn admit_local(path: &str, root: &Path, cfg: &ServeConfig) -> Result<String, ApiError> {
    let unreadable =
        |e: std::io::Error| ApiError::invalid(None, format!("cannot read image {path:?}: {e}"));
    // Canonical paths on both sides, so `..` and symbolic links cannot leave the root.
    let file = Path::new(path).canonicalize().map_err(unreadable)?;
    let root = root.canonicalize().map_err(|e| {
        ApiError::internal(format!(
            "the allowed image directory {} is unusable: {e}",
            root.display()
        ))
    })?;
    if !file.starts_with(&root) {
        return Err(ApiError::invalid(
            None,
            format!("image {path:?} is outside the directory this server may read images from"),
        ));
    }
    let len = std::fs::metadata(&file).map_err(unreadable)?.len();
    if len > cfg.max_image_bytes as u64 {
        return Err(too_large(format!("{len} bytes"), cfg));
    }
    check_pixels(ImageReader::open(&file).map_err(unreadable)?, cfg)?;
    Ok(file.to_string_lossy().into_owned())
}

/// Downloads the image (at most the byte limit, within a time limit) and hands it on as a
/// `data:` URL, so the model worker never does network I/O.
fn admit_remote(url: &str, cfg: &ServeConfig) -> Result<String, ApiError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REMOTE_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(3)
        .build()
        .into();
    let failed = |e: String| ApiError::invalid(None, format!("cannot fetch image {url}: {e}"));
    let mut resp = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(failed(format!(
            "the server answered HTTP {}",
            resp.status()
        )));
    }
    let limit = cfg.max_image_bytes as u64;
    let bytes = match resp.body_mut().with_config().limit(limit + 1).read_to_vec() {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => {
            return Err(too_large(format!("more than {limit} bytes"), cfg));
        }
        Err(e) => return Err(failed(e.to_string())),
    };
    if bytes.len() > cfg.max_image_bytes {
        return Err(too_large(format!("{} bytes", bytes.len()), cfg));
    }
    check_pixels(ImageReader::new(Cursor::new(&bytes)), cfg)?;
    Ok(format!(
        "data:image;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    ))
}

/// How long fetching one remote image may take.
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn too_large(size: String, cfg: &ServeConfig) -> ApiError {
    ApiError::invalid(
        None,
        format!(
            "image is {size}, more than this server's limit of {} bytes",
            cfg.max_image_bytes
        ),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    .with_code("image_too_large")
}

/// Reads the image header only: format and size, not the pixels.
fn check_pixels<R: BufRead + Seek>(
    reader: ImageReader<R>,
    cfg: &ServeConfig,
) -> Result<(), ApiError> {
    let unreadable = |e: String| {
        ApiError::invalid(
            None,
            format!("not an image this server can read (png, jpeg, webp, gif, bmp): {e}"),
        )
    };
    let (w, h) = reader
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?
        .into_dimensions()
        .map_err(|e| unreadable(e.to_string()))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > cfg.max_image_pixels {
        return Err(ApiError::invalid(
            None,
            format!(
                "image is {w}x{h} = {pixels} pixels, more than this server's limit of {}",
                cfg.max_image_pixels
            ),
        )
        .with_code("image_too_large"));
    }
    Ok(())
}
