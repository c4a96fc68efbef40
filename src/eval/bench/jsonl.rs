//! The project's own MCQ JSONL (the synthetic world writes it): one `McqItem` per line, image
//! references relative to the file, absolute, or `data:` URIs.

use super::images::existing_image;
use crate::data::mcq::McqItem;
use anyhow::Context;
use std::io::BufRead;
use std::path::Path;

pub fn load(path: &Path) -> anyhow::Result<Vec<McqItem>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut items = vec![];
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let what = format!("{}: line {}", path.display(), i + 1);
        let line = line.with_context(|| format!("{what}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut item: McqItem =
            serde_json::from_str(&line).with_context(|| format!("{what}: not an MCQ item"))?;
        item.images = item
            .images
            .iter()
            .map(|r| existing_image(r, base, &what))
            .collect::<anyhow::Result<_>>()?;
        items.push(item);
    }
    Ok(items)
}
