//! One parser for the values that mirror the authors' code (`--jepa_loss smoothl1`), shared by
//! the command line and the run file: a value is matched ignoring case, `-` and `_`, so
//! `smoothl1`, `smooth-l1`, `smooth_l1` and `SmoothL1` are one value, and `all-assistant` (the
//! command line's spelling) is the run file's `all_assistant`.

use clap::ValueEnum;

/// The key a spelling is compared by: lowercase, without `-` and `_`.
fn key(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The variant of `T` that `s` spells, or an error listing the accepted values.
pub fn parse<T: ValueEnum>(s: &str) -> Result<T, String> {
    let wanted = key(s.trim());
    T::value_variants()
        .iter()
        .find(|v| {
            v.to_possible_value()
                .is_some_and(|p| p.get_name_and_aliases().any(|n| key(n) == wanted))
        })
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                .collect();
            format!(
                "unknown value {s:?} (expected one of: {}; `-` and `_` may be left out or swapped)",
                names.join(", ")
            )
        })
}

/// Implements `serde::Deserialize` and `FromStr` for a `clap::ValueEnum` through [`parse`], so the
/// run file accepts exactly the spellings the command line does.
#[macro_export]
macro_rules! any_spelling {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $crate::spelling::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $crate::spelling::parse(s)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
    enum Loss {
        SmoothL1,
        AllAssistant,
    }

    #[test]
    fn every_spelling_of_a_value_is_that_value() {
        for s in [
            "smoothl1",
            "smooth-l1",
            "smooth_l1",
            "SmoothL1",
            " smoothl1 ",
        ] {
            assert_eq!(parse::<Loss>(s), Ok(Loss::SmoothL1), "{s}");
        }
        for s in ["all-assistant", "all_assistant", "allassistant"] {
            assert_eq!(parse::<Loss>(s), Ok(Loss::AllAssistant), "{s}");
        }
        let err = parse::<Loss>("smooth").unwrap_err();
        assert!(
            err.contains("smooth-l1") && err.contains("\"smooth\""),
            "{err}"
        );
    }
}
