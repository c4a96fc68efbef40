//! Read-only memory-mapped files (safetensors checkpoints): mapped once, read in place, and their
//! pages released from the process's resident memory once read.

use anyhow::Context;
use std::path::Path;

/// Drops the pages of `bytes` from the process's resident memory once its tensor is converted
/// (they stay in the page cache; a later read faults them in again), so that the resident size
/// holds the converted weights, not the checkpoint too. Only a hint: a failure changes nothing.
pub fn release(map: &memmap2::Mmap, bytes: &std::ops::Range<usize>) {
    #[cfg(unix)]
    // SAFETY: no reference into the range outlives this call (the values were copied out), and
    // for a read-only file mapping MADV_DONTNEED only drops pages that the file still holds.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, bytes.start, bytes.len())
    };
}

/// A read-only mapping of `path`.
pub fn map_file(path: &Path) -> anyhow::Result<memmap2::Mmap> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the mapping is read-only and lives while the checkpoint is read; like every
    // reader of a file, it assumes no other process truncates the checkpoint meanwhile.
    unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))
}
