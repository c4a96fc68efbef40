//! Stable names derived from item ids: a hash that never changes across builds or platforms
//! (seeds option shuffles, so results stay comparable between runs and versions) and safe file
//! names for images written on an item's behalf.

/// 64-bit FNV-1a of `s`. Hand-written because `std`'s hasher is explicitly not stable across
/// Rust releases, and this value seeds shuffles that must be reproducible forever.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A file-name-safe stem for `id`: its alphanumerics (others become `_`, at most 80 kept) and a
/// hash of the full id, so distinct ids never share a file ("a/b" and "a_b" differ by the hash).
pub fn file_stem(id: &str) -> String {
    let safe: String = id
        .chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{:08x}", stable_hash(id) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(stable_hash(""), 0xcbf29ce484222325);
        assert_eq!(stable_hash("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(stable_hash("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn stems_are_safe_and_distinct() {
        let (a, b) = (file_stem("vstar/a b"), file_stem("vstar_a_b"));
        assert!(a.starts_with("vstar_a_b-") && b.starts_with("vstar_a_b-"));
        assert_ne!(a, b);
        assert!(!file_stem("../../etc/passwd").contains('/'));
    }
}
