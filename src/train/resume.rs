//! What a resume may change. A checkpoint continues the run it was written by: every key that
//! changes what the steps compute (model, data, objective, optimiser, schedule, seeds, batch
//! shape) must be the same, while keys that only change where the steps run or what is written
//! around them may differ. Paths compare by the files they resolve to, so a run file moved or
//! written with other relative paths still resumes.

use super::config::RunConfig;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where to resume from.
#[derive(Debug, Clone)]
pub enum Resume {
    /// The newest step checkpoint of the run directory.
    Latest,
    Dir(PathBuf),
}

/// Keys that change neither the weights nor the data order: devices and checkpointing strategy
/// (where and how the steps run, with the same results), and the output side (how often to
/// validate and save, how many checkpoints to keep, when to give up on non-finite steps, the
/// run directory).
const MAY_CHANGE: &[&str] = &[
    "devices",
    "gradient_checkpointing",
    "eval_every",
    "save_every",
    "keep_last",
    "max_bad_steps",
    "output",
];

/// Keys holding paths (compared by the files they resolve to).
const PATHS: &[&str] = &[
    "model",
    "random_config",
    "processor",
    "dynamics_head",
    "train",
    "val",
    "output",
];

/// One key that differs between the checkpoint's run file and this one.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Dotted key (`optimizer.lr`).
    pub key: String,
    pub saved: String,
    pub now: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.saved, self.now)
    }
}

/// Checks that `cfg` may continue a run whose run file was `saved_toml` and returns the keys that
/// changed (all of them allowed); refuses, listing every offending key, a change that alters the
/// computation.
pub fn check_resume(saved_toml: &str, cfg: &RunConfig) -> Result<Vec<Change>> {
    let saved =
        RunConfig::from_toml_str(saved_toml).context("the checkpoint's run.toml cannot be read")?;
    let changes = changes(&saved, cfg)?;
    let refused: Vec<String> = changes
        .iter()
        .filter(|c| !MAY_CHANGE.contains(&c.key.as_str()))
        .map(Change::to_string)
        .collect();
    if !refused.is_empty() {
        bail!(
            "the run configuration differs from the one the checkpoint was trained with in what the steps compute ({}); resume with the same values (only {} may change)",
            refused.join("; "),
            MAY_CHANGE.join(", ")
        );
    }
    Ok(changes)
}

/// Every key whose value differs, paths compared by what they resolve to.
pub fn changes(saved: &RunConfig, now: &RunConfig) -> Result<Vec<Change>> {
    let (a, b) = (flat(saved)?, flat(now)?);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let show = |v: Option<&toml::Value>| v.map_or("unset".to_string(), toml::Value::to_string);
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| Change {
            key: k.clone(),
            saved: show(a.get(k)),
            now: show(b.get(k)),
        })
        .collect())
}

/// The run file as dotted keys (`optimizer.lr`), path keys canonicalised where they exist.
fn flat(cfg: &RunConfig) -> Result<BTreeMap<String, toml::Value>> {
    let table = match toml::Value::try_from(cfg).context("cannot encode the run config")? {
        toml::Value::Table(t) => t,
        _ => bail!("the run config did not encode as a table"),
    };
    let mut out = BTreeMap::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(section) => {
                for (k, v) in section {
                    out.insert(format!("{key}.{k}"), v);
                }
            }
            v if PATHS.contains(&key.as_str()) => {
                out.insert(key, resolved(v));
            }
            v => {
                out.insert(key, v);
            }
        }
    }
    Ok(out)
}

/// A path (or list of paths) as the file it names: canonical when it exists, as written if not.
fn resolved(v: toml::Value) -> toml::Value {
    match v {
        toml::Value::String(p) => toml::Value::String(
            std::fs::canonicalize(Path::new(&p))
                .map(|c| c.display().to_string())
                .unwrap_or(p),
        ),
        toml::Value::Array(list) => toml::Value::Array(list.into_iter().map(resolved).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig::from_toml_str("model = \"m\"\ntrain = [\"t.jsonl\"]\n").unwrap()
    }

    #[test]
    fn devices_and_output_keys_may_change_and_are_listed() {
        let saved = cfg().to_toml().unwrap();
        assert_eq!(check_resume(&saved, &cfg()).unwrap(), vec![]);
        let now = RunConfig {
            devices: Some(vec!["cuda:0".into(), "cuda:1".into()]),
            eval_every: 7,
            keep_last: 1,
            save_every: 3,
            gradient_checkpointing: true,
            ..cfg()
        };
        let keys: Vec<String> = check_resume(&saved, &now)
            .unwrap()
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(
            keys,
            [
                "devices",
                "eval_every",
                "gradient_checkpointing",
                "keep_last",
                "save_every"
            ]
        );
        // And back: a key absent from the saved file reads as unset.
        assert!(check_resume(&now.to_toml().unwrap(), &cfg()).is_ok());
    }

    #[test]
    fn changes_to_the_computation_are_refused_naming_each_key() {
        let saved = cfg().to_toml().unwrap();
        let mut now = cfg();
        now.grad_accum = 2;
        now.optimizer.lr = 3e-4;
        now.eval_every = 5;
        let e = format!("{:#}", check_resume(&saved, &now).unwrap_err());
        assert!(e.contains("grad_accum: 1 -> 2"), "{e}");
        assert!(e.contains("optimizer.lr"), "{e}");
        assert!(!e.contains("eval_every:"), "{e}");
        for change in [
            RunConfig { seed: 1, ..cfg() },
            RunConfig {
                micro_batch: 2,
                ..cfg()
            },
            RunConfig {
                train: vec!["other.jsonl".into()],
                ..cfg()
            },
        ] {
            assert!(check_resume(&saved, &change).is_err(), "{change:?}");
        }
        assert!(check_resume("not toml [", &cfg()).is_err());
    }

    #[test]
    fn paths_compare_by_the_files_they_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.jsonl"), "").unwrap();
        let absolute = RunConfig {
            train: vec![dir.path().join("t.jsonl")],
            ..cfg()
        };
        let roundabout = RunConfig {
            train: vec![dir.path().join(".").join("t.jsonl")],
            ..cfg()
        };
        let saved = absolute.to_toml().unwrap();
        assert_eq!(check_resume(&saved, &roundabout).unwrap(), vec![]);
    }
}
