//! Where benchmark images end up: every `McqItem` leaving a loader names its images by absolute
//! path (the `ChatModel` contract). Files on disk are checked to exist; images embedded in
//! parquet or TSV files are written once into a cache directory.

use crate::eval::ids::file_stem;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Directory for images extracted from benchmark files.
pub struct ImageCache {
    dir: PathBuf,
}

impl ImageCache {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create image cache {}", dir.display()))?;
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot make {} absolute", dir.display()))?;
        Ok(Self { dir })
    }

    /// Writes image `k` of item `item_id` (skipped when an identical-size file is already there
    /// from an earlier run) and returns its absolute path. Bytes that are not a known image
    /// format are an error; `what` names the source for the message ("FILE: row N").
    pub fn store(
        &self,
        item_id: &str,
        k: usize,
        bytes: &[u8],
        what: &str,
    ) -> anyhow::Result<String> {
        let format = image::guess_format(bytes).map_err(|_| {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            anyhow::anyhow!(
                "{what}: image {k} is not a recognised image format (first bytes {})",
                head.join(" ")
            )
        })?;
        let ext = format.extensions_str().first().copied().unwrap_or("img");
        let path = self.dir.join(format!("{}_{k}.{ext}", file_stem(item_id)));
        let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() != bytes.len() as u64);
        if fresh {
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(path.display().to_string())
    }
}

/// `reference` (relative to `base`, or absolute) as an absolute path to an existing file, or a
/// `data:` URI unchanged.
pub fn existing_image(reference: &str, base: &Path, what: &str) -> anyhow::Result<String> {
    if reference.starts_with("data:") {
        return Ok(reference.to_string());
    }
    let p = base.join(reference);
    anyhow::ensure!(p.is_file(), "{what}: image {} does not exist", p.display());
    let abs =
        std::path::absolute(&p).with_context(|| format!("cannot make {} absolute", p.display()))?;
    Ok(abs.display().to_string())
}
