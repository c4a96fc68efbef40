//! The run file of `pearl train --config RUN.toml`: every knob of a training run, each with a sane
//! default (the authors' settings where they are known), unknown keys refused so that a typo is an
//! error naming the key. Command-line flags override the file as `key=value` pairs applied to the
//! TOML table before it is read, so they go through exactly the same checks.

use crate::model::device::DeviceSpec;
use crate::model::precision::Precision;
use crate::objective::lvr::LvrConfig;
use crate::objective::{Method, MethodKind, ObjectiveConfig};
use crate::peft::lora::LoraConfig;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Model directory (hub layout: config.json, weights, tokenizer, chat template, preprocessor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Instead of `model`: a `config.json` to build a randomly initialised model from (seeded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_config: Option<PathBuf>,
    /// Directory with tokenizer, chat template and preprocessor config; defaults to `model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<PathBuf>,
    /// Initial NextLat dynamics head (safetensors, authors' key names); fresh (seeded) if unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamics_head: Option<PathBuf>,
    /// Training trajectory files (JSONL); validated before training.
    pub train: Vec<PathBuf>,
    /// Held-out trajectory files for the validation loss and best-checkpoint selection.
    pub val: Vec<PathBuf>,
    /// Run directory: checkpoints, `best/`, metrics, loss curve.
    pub output: PathBuf,
    pub seed: u64,
    /// Devices to train on (`cpu`, `cuda:N`); several GPUs train data-parallel, each taking
    /// `grad_accum / devices` of every step's micro-batches. Unset: burn's default device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Recompute cheap activations (elementwise ops, reshapes) in the backward pass instead of
    /// keeping them: burn's balanced gradient checkpointing. Less memory, more compute, same
    /// gradients.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
    /// `bf16`: frozen weights and activations in bf16, trainable parameters kept as f32 master
    /// copies (see `model::precision`); `f32` (default) everywhere else.
    #[serde(skip_serializing_if = "is_f32")]
    pub precision: Precision,
    /// Full fine-tuning (every weight trains) instead of LoRA.
    pub full: bool,
    /// Examples per forward/backward pass.
    pub micro_batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps; exclusive with `epochs`. Neither: one epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Global gradient-norm clipping threshold (PyTorch's `clip_grad_norm_`); 0 disables it.
    pub max_grad_norm: f64,
    /// Validation every N steps (and always at the end); 0 = only at the end.
    pub eval_every: usize,
    /// Checkpoint every N steps (and always at the end); 0 = only at the end.
    pub save_every: usize,
    /// Step checkpoints kept on disk (the oldest are deleted); `best/` is kept apart.
    pub keep_last: usize,
    /// Stop after this many consecutive steps with a non-finite loss or gradient.
    pub max_bad_steps: usize,
    /// Drop invalid training examples (counted and reported) instead of refusing the data.
    pub skip_invalid: bool,
    /// Longest training example, in tokens of its full sequence (image tokens included): longer
    /// ones are skipped when their micro-batch is drawn, named on stderr, counted in the metrics
    /// and the summary. Unset: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Processor pixel budget overrides (`min_pixels` / `max_pixels` of the image processor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_pixels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pixels: Option<usize>,
    /// `pearl` (Pearl, SFT or an ablation, per `[objective]`), `lvr` (the reconstruction
    /// baseline, per `[lvr]`) or `toolcall` (the tool-calling baseline: SFT on the trajectories
    /// rendered for a tool-calling model).
    pub method: MethodKind,
    pub objective: ObjectiveConfig,
    pub lvr: LvrConfig,
    pub lora: LoraSection,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
}

/// LoRA settings (ignored with `full = true`). Defaults: the authors' r = 64, alpha = 128, dropout 0.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Regex over hub module names; unset = every linear layer except lm_head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_regex: Option<String>,
}

/// AdamW. Defaults: the authors' lr 1e-5 and weight decay 0.1, PyTorch's betas and eps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
}

/// Linear warmup then cosine decay to `min_lr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Warmup as a fraction of the total steps (the authors use 0.05 or 0.3).
    pub warmup_ratio: f64,
    /// Warmup in steps; overrides `warmup_ratio` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    pub min_lr: f64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            model: None,
            random_config: None,
            processor: None,
            dynamics_head: None,
            train: Vec::new(),
            val: Vec::new(),
            output: PathBuf::from("runs/pearl"),
            seed: 0,
            devices: None,
            gradient_checkpointing: false,
            precision: Precision::F32,
            full: false,
            micro_batch: 1,
            grad_accum: 1,
            steps: None,
            epochs: None,
            max_grad_norm: 1.0,
            eval_every: 100,
            save_every: 100,
            keep_last: 3,
            max_bad_steps: 5,
            skip_invalid: false,
            max_tokens: None,
            min_pixels: None,
            max_pixels: None,
            objective: ObjectiveConfig::pearl(),
            method: MethodKind::Pearl,
            lvr: LvrConfig::default(),
            lora: LoraSection::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
        }
    }
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            r: 64,
            alpha: 128.0,
            dropout: 0.1,
            target_regex: None,
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            weight_decay: 0.1,
            betas: [0.9, 0.999],
            eps: 1e-8,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            warmup_ratio: 0.05,
            warmup_steps: None,
            min_lr: 0.0,
        }
    }
}

impl LoraSection {
    pub fn to_lora_config(&self) -> LoraConfig {
        LoraConfig {
            r: self.r,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            target_regex: self.target_regex.clone(),
        }
    }
}

impl RunConfig {
    /// The method this run trains with, and its settings.
    pub fn method(&self) -> Method<'_> {
        match self.method {
            MethodKind::Pearl => Method::Pearl(&self.objective),
            MethodKind::Lvr => Method::Lvr(&self.lvr),
            MethodKind::ToolCall => Method::Pearl(&crate::objective::method::TOOLCALL_OBJECTIVE),
        }
    }

    /// Whether the run trains a NextLat dynamics head.
    pub fn has_dynamics_head(&self) -> bool {
        self.method == MethodKind::Pearl && self.objective.nextlat
    }

    /// Reads a run file, applies `overrides` (`key=value`, dotted keys for sections, values in
    /// TOML syntax, bare words taken as strings), resolves relative paths of the file against the
    /// file's directory, and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read run file {}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut cfg = Self::from_table_with(table.clone(), &[])
            .with_context(|| format!("invalid run file {}", path.display()))?;
        cfg.resolve_paths(&base);
        // Overrides are relative to the working directory, so they are applied after resolving.
        table = match toml::Value::try_from(&cfg).context("cannot re-encode the run config")? {
            toml::Value::Table(t) => t,
            _ => bail!("the run config did not encode as a table"),
        };
        let cfg = Self::from_table_with(table, overrides)?;
        cfg.validate()
            .with_context(|| format!("invalid run configuration ({})", path.display()))?;
        Ok(cfg)
    }

    /// A config from defaults and overrides only (no run file).
    pub fn from_overrides(overrides: &[String]) -> Result<Self> {
        let cfg = Self::from_table_with(toml::Table::new(), overrides)?;
        cfg.validate().context("invalid run configuration")?;
        Ok(cfg)
    }

    /// Parses a run file's text (no path resolution, no validation): for tests and tools.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).context("not valid TOML")?;
        Self::from_table_with(table, &[])
    }

    fn from_table_with(mut table: toml::Table, overrides: &[String]) -> Result<Self> {
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        // `deny_unknown_fields` names the offending key in serde's message.
        Self::deserialize(toml::Value::Table(table)).map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        for p in [
            &mut self.model,
            &mut self.random_config,
            &mut self.processor,
            &mut self.dynamics_head,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
        self.train.iter_mut().for_each(join);
        self.val.iter_mut().for_each(join);
        join(&mut self.output);
    }

    /// The directory the tokenizer, chat template and preprocessor config are read from.
    pub fn processor_dir(&self) -> Result<&Path> {
        self.processor
            .as_deref()
            .or(self.model.as_deref())
            .context("no processor directory: set `processor` (needed with `random_config`)")
    }

    /// The parsed `devices` list (None when unset), checked: not empty, no device twice, CPU and
    /// GPUs not mixed, several devices only as GPUs, and `grad_accum` a multiple of their number
    /// (each device takes the same number of micro-batches: every backward pass is a collective
    /// that all devices must join).
    pub fn device_specs(&self) -> Result<Option<Vec<DeviceSpec>>> {
        let Some(list) = &self.devices else {
            return Ok(None);
        };
        ensure!(
            !list.is_empty(),
            "`devices` is empty: list at least one (e.g. [\"cuda:0\", \"cuda:1\"]), or leave it out for the default device"
        );
        let specs = list
            .iter()
            .map(|s| DeviceSpec::parse(s).context("in `devices`"))
            .collect::<Result<Vec<_>>>()?;
        let n = specs.len();
        if n > 1 && specs.contains(&DeviceSpec::Cpu) {
            if specs.iter().all(|s| *s == DeviceSpec::Cpu) {
                bail!(
                    "`devices` lists cpu {n} times: data-parallel training needs CUDA devices, burn's CPU backend (Flex) implements no all-reduce"
                );
            }
            bail!(
                "`devices` mixes cpu with GPUs: data-parallel training runs on GPUs only (burn's CPU backend implements no all-reduce)"
            );
        }
        for (i, a) in specs.iter().enumerate() {
            if let Some(j) = specs[..i].iter().position(|b| b == a) {
                bail!(
                    "`devices` names {a} twice ({:?} and {:?})",
                    list[j],
                    list[i]
                );
            }
        }
        if n > 1 {
            if !self.grad_accum.is_multiple_of(n) {
                let below = self.grad_accum / n * n;
                let above = below + n;
                let options = if below > 0 {
                    format!("{below} or {above}")
                } else {
                    above.to_string()
                };
                bail!(
                    "`grad_accum` ({}) must be a multiple of the number of devices ({n}): each device runs grad_accum / devices of every step's micro-batches; use grad_accum = {options} (the global batch is micro_batch x grad_accum examples on any number of devices)",
                    self.grad_accum
                );
            }
            ensure!(
                cfg!(feature = "cuda"),
                "`devices` lists {n} GPUs, but this build has no GPU support: data-parallel training needs CUDA devices (rebuild with `--features cuda`)"
            );
        }
        for s in &specs {
            s.device().context("in `devices`")?;
        }
        Ok(Some(specs))
    }

    /// Every check, with a message naming the key.
    pub fn validate(&self) -> Result<()> {
        match (&self.model, &self.random_config) {
            (None, None) => bail!("set `model` (a model directory) or `random_config`"),
            (Some(_), Some(_)) => bail!("`model` and `random_config` are exclusive: set one"),
            (None, Some(_)) if self.processor.is_none() => {
                bail!("`random_config` needs `processor` (a directory with the tokenizer files)")
            }
            _ => {}
        }
        ensure!(!self.train.is_empty(), "`train` lists no trajectory file");
        ensure!(self.micro_batch >= 1, "`micro_batch` must be at least 1");
        ensure!(self.grad_accum >= 1, "`grad_accum` must be at least 1");
        self.device_specs()?;
        match (self.steps, self.epochs) {
            (Some(_), Some(_)) => bail!("`steps` and `epochs` are exclusive: set one"),
            (Some(0), _) => bail!("`steps` must be at least 1"),
            (_, Some(0)) => bail!("`epochs` must be at least 1"),
            _ => {}
        }
        ensure!(
            self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0,
            "`max_grad_norm` must be a finite number >= 0 (0 disables clipping), got {}",
            self.max_grad_norm
        );
        ensure!(self.keep_last >= 1, "`keep_last` must be at least 1");
        ensure!(
            self.max_tokens != Some(0),
            "`max_tokens` must be at least 1 (leave it out for no limit)"
        );
        ensure!(
            self.max_bad_steps >= 1,
            "`max_bad_steps` must be at least 1"
        );
        if let (Some(lo), Some(hi)) = (self.min_pixels, self.max_pixels) {
            ensure!(
                lo <= hi,
                "`min_pixels` ({lo}) must not exceed `max_pixels` ({hi})"
            );
        }
        self.objective.validate().context("in [objective]")?;
        self.lvr.validate().context("in [lvr]")?;
        if !self.full {
            let l = &self.lora;
            ensure!(l.r >= 1, "[lora] `r` must be at least 1");
            ensure!(
                l.alpha.is_finite() && l.alpha > 0.0,
                "[lora] `alpha` must be a positive number, got {}",
                l.alpha
            );
            ensure!(
                (0.0..1.0).contains(&l.dropout),
                "[lora] `dropout` must be in [0, 1), got {}",
                l.dropout
            );
            if let Some(re) = &l.target_regex {
                regex::Regex::new(re).with_context(|| {
                    format!("[lora] `target_regex` {re:?} is not a valid regex")
                })?;
            }
        }
        let o = &self.optimizer;
        ensure!(
            o.lr.is_finite() && o.lr > 0.0,
            "[optimizer] `lr` must be a positive number, got {}",
            o.lr
        );
        ensure!(
            o.weight_decay.is_finite() && o.weight_decay >= 0.0,
            "[optimizer] `weight_decay` must be >= 0, got {}",
            o.weight_decay
        );
        for (i, b) in o.betas.iter().enumerate() {
            ensure!(
                (0.0..1.0).contains(b),
                "[optimizer] `betas[{i}]` must be in [0, 1), got {b}"
            );
        }
        ensure!(
            o.eps.is_finite() && o.eps > 0.0,
            "[optimizer] `eps` must be positive, got {}",
            o.eps
        );
        let s = &self.schedule;
        ensure!(
            (0.0..1.0).contains(&s.warmup_ratio),
            "[schedule] `warmup_ratio` must be in [0, 1), got {}",
            s.warmup_ratio
        );
        ensure!(
            s.min_lr.is_finite() && s.min_lr >= 0.0 && s.min_lr <= o.lr,
            "[schedule] `min_lr` must be in [0, lr = {}], got {}",
            o.lr,
            s.min_lr
        );
        Ok(())
    }

    /// The run file's text (what checkpoints store, so a resumed run can check it is the same run).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("cannot encode the run config as TOML")
    }
}

/// Sets `a.b.c = value` in a TOML table. The value is parsed as TOML (`3`, `1e-4`, `true`,
/// `["a", "b"]`, `"text"`); anything that does not parse is taken as a bare string (paths).
fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let (key, raw) = o
        .split_once('=')
        .with_context(|| format!("override {o:?} is not `key=value`"))?;
    let key = key.trim();
    ensure!(!key.is_empty(), "override {o:?} has an empty key");
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    let (last, sections) = parts.split_last().expect("split yields at least one part");
    let mut t = table;
    for s in sections {
        let entry = t
            .entry(s.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .with_context(|| format!("override {o:?}: `{s}` is not a section"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> String {
        "model = \"m\"\ntrain = [\"t.jsonl\"]\n".to_string()
    }

    #[test]
    fn defaults_are_the_authors_settings() {
        let c = RunConfig::from_toml_str(&minimal()).unwrap();
        c.validate().unwrap();
        assert_eq!((c.lora.r, c.lora.alpha, c.lora.dropout), (64, 128.0, 0.1));
        assert_eq!(c.optimizer.lr, 1e-5);
        assert_eq!(c.optimizer.weight_decay, 0.1);
        assert_eq!(c.objective, ObjectiveConfig::pearl());
        assert_eq!(c.max_grad_norm, 1.0);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, key) in [
            (format!("{}micro_bacth = 2\n", minimal()), "micro_bacth"),
            (
                format!("{}[optimizer]\nlearning_rate = 1\n", minimal()),
                "learning_rate",
            ),
            (format!("{}[objective]\nlamda = 0.1\n", minimal()), "lamda"),
            (format!("{}[lora]\nrank = 8\n", minimal()), "rank"),
        ] {
            let e = RunConfig::from_toml_str(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let table: toml::Table = toml::from_str(&minimal()).unwrap();
        let c = RunConfig::from_table_with(
            table.clone(),
            &[
                "optimizer.lr=3e-4".into(),
                "steps=7".into(),
                "objective.jepa=false".into(),
                "output=runs/x y".into(),
                "val=[\"a.jsonl\", \"b.jsonl\"]".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.optimizer.lr, 3e-4);
        assert_eq!(c.steps, Some(7));
        assert!(!c.objective.jepa);
        assert_eq!(c.output, PathBuf::from("runs/x y"));
        assert_eq!(c.val.len(), 2);
        let e = RunConfig::from_table_with(table, &["optimizer.lrr=1".into()]).unwrap_err();
        assert!(e.to_string().contains("lrr"), "{e}");
    }

    #[test]
    fn bad_values_give_clear_messages() {
        let check = |extra: &str, needle: &str| {
            let c = RunConfig::from_toml_str(&format!("{}{extra}", minimal())).unwrap();
            let e = format!("{:#}", c.validate().unwrap_err());
            assert!(e.contains(needle), "{extra}: {e}");
        };
        check("steps = 3\nepochs = 1\n", "exclusive");
        check("micro_batch = 0\n", "micro_batch");
        check("[optimizer]\nlr = -1.0\n", "lr");
        check("[optimizer]\nbetas = [0.9, 1.5]\n", "betas[1]");
        check("[schedule]\nwarmup_ratio = 1.5\n", "warmup_ratio");
        check("[lora]\ntarget_regex = \"(\"\n", "target_regex");
        check("[objective]\npredictors = 11\n", "predictors");
        check("random_config = \"c.json\"\n", "exclusive");
        check("min_pixels = 100\nmax_pixels = 10\n", "min_pixels");
        check("max_tokens = 0\n", "max_tokens");
    }

    #[test]
    fn device_lists_are_checked_with_clear_messages() {
        let check = |devices: &str, grad_accum: usize, needle: &str| {
            let text = format!(
                "{}grad_accum = {grad_accum}\ndevices = {devices}\n",
                minimal()
            );
            let c = RunConfig::from_toml_str(&text).unwrap();
            let e = format!("{:#}", c.validate().unwrap_err());
            assert!(e.contains(needle), "{devices}: {e}");
        };
        check("[]", 1, "`devices` is empty");
        check("[\"tpu:0\"]", 1, "unknown device");
        check("[\"cpu\", \"cpu\"]", 2, "no all-reduce");
        check("[\"cpu\", \"cuda:0\"]", 2, "mixes cpu with GPUs");
        check(
            "[\"cuda:1\", \"cuda:0\", \"cuda\"]",
            3,
            "names cuda:0 twice",
        );
        check("[\"cuda:0\", \"cuda:1\"]", 3, "use grad_accum = 2 or 4");
        check(
            "[\"cuda:0\", \"cuda:1\", \"cuda:2\"]",
            2,
            "use grad_accum = 3 ",
        );
        if cfg!(not(feature = "cuda")) {
            check("[\"cuda:0\", \"cuda:1\"]", 2, "needs CUDA devices");
            check("[\"cuda:0\"]", 1, "--features cuda");
        }

        // Unset: the default device; one CPU: fine.
        let c = RunConfig::from_toml_str(&minimal()).unwrap();
        assert_eq!(c.device_specs().unwrap(), None);
        let c = RunConfig::from_toml_str(&format!("{}devices = [\"cpu\"]\n", minimal())).unwrap();
        c.validate().unwrap();
        assert_eq!(c.device_specs().unwrap(), Some(vec![DeviceSpec::Cpu]));
    }

    #[test]
    fn devices_come_through_overrides() {
        let table: toml::Table = toml::from_str(&minimal()).unwrap();
        let c = RunConfig::from_table_with(
            table,
            &[
                "devices=[\"cuda:0\", \"cuda:1\"]".into(),
                "grad_accum=4".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.devices, Some(vec!["cuda:0".into(), "cuda:1".into()]));
        // Unset `devices` stays out of the saved run file (earlier checkpoints compare equal).
        let plain = RunConfig::from_toml_str(&minimal()).unwrap();
        assert!(!plain.to_toml().unwrap().contains("devices"));
        assert!(c.to_toml().unwrap().contains("devices"));
    }

    #[test]
    fn paths_resolve_against_the_run_file_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, format!("{}val = [\"v.jsonl\"]\n", minimal())).unwrap();
        let c = RunConfig::load(&path, &["output=/abs/out".into()]).unwrap();
        assert_eq!(c.model.as_deref(), Some(dir.path().join("m").as_path()));
        assert_eq!(c.val, vec![dir.path().join("v.jsonl")]);
        assert_eq!(c.output, PathBuf::from("/abs/out"));
        let again = RunConfig::from_toml_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }
}
