//! `precision = "bf16"` in the run file: a LoRA run trains with frozen weights in bf16 and the
//! adapters as f32 master copies; its losses follow the f32 run's within bf16 rounding, what it
//! saves is f32 and loads, and the saved run file keeps the setting.

mod train_common;

use pearl::model::Vlm;
use pearl::model::names::named_params;
use pearl::model::precision::Precision;
use pearl::objective::ObjectiveConfig;
use pearl::peft::lora::load_peft_adapter;
use pearl::train::{Options, RunConfig, Trainer, run};
use train_common::{fixture_dir, run_config, synth_data};

#[test]
fn bf16_run_trains_like_the_f32_run_and_saves_f32_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 4, 1);
    let mut f32_run = run_config(dir.path(), train, val, 3);
    f32_run.objective = ObjectiveConfig::pearl();
    f32_run.output = dir.path().join("f32");
    let bf16_run = RunConfig {
        precision: Precision::Bf16,
        output: dir.path().join("bf16"),
        ..f32_run.clone()
    };
    // bf16 is in effect: frozen weights are stored in bf16, the trained LoRA factors stay f32.
    let probe = RunConfig {
        output: dir.path().join("probe"),
        ..bf16_run.clone()
    };
    let trainer = Trainer::new(&probe, &Options::default()).unwrap();
    let params = named_params(&trainer.model().vlm);
    let (lora, frozen): (Vec<_>, Vec<_>) = params.iter().partition(|p| p.path.contains(".lora."));
    assert!(!lora.is_empty() && !frozen.is_empty());
    assert!(lora.iter().all(|p| p.dtype == burn::tensor::DType::F32));
    assert!(
        frozen.iter().all(|p| p.dtype == burn::tensor::DType::BF16),
        "{:?}",
        frozen
            .iter()
            .find(|p| p.dtype != burn::tensor::DType::BF16)
            .map(|p| &p.path)
    );
    drop(trainer);
    let losses = |cfg: &RunConfig| -> Vec<(String, f64)> {
        run(cfg, &Options::default())
            .unwrap()
            .metrics
            .into_iter()
            .map(|r| (r.split, r.total.unwrap_or(f64::NAN)))
            .collect()
    };
    let (want, got) = (losses(&f32_run), losses(&bf16_run));
    assert_eq!(want.iter().filter(|r| r.0 == "train").count(), 3);
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.0, g.0);
        assert!(g.1.is_finite(), "{g:?}");
        // bf16 rounding of weights and activations: a few parts in a thousand per value, about
        // 1 % on a loss (tests/model_precision.rs measures the same against PyTorch's bf16).
        assert!((w.1 - g.1).abs() <= 0.03 * w.1.abs(), "{w:?} vs {g:?}");
    }
    // ... and it changes the arithmetic: a bf16 setting that were ignored would give the f32
    // losses to the last bit.
    assert!(
        want.iter().zip(&got).any(|(w, g)| w.1 != g.1),
        "bf16 losses equal the f32 ones exactly: {got:?}"
    );

    let best = bf16_run.output.join("best");
    let saved = std::fs::read_to_string(best.join("run.toml")).unwrap();
    assert!(saved.contains("precision = \"bf16\""), "{saved}");
    // The adapter is written from the f32 master copies and loads as any PEFT adapter.
    let device = burn::tensor::Device::default();
    let vlm = Vlm::from_dir(&fixture_dir().join("model"), &device).unwrap();
    let vlm = load_peft_adapter(vlm, &best.join("adapter")).unwrap();
    let lora: Vec<_> = named_params(&vlm)
        .into_iter()
        .filter(|p| p.path.contains(".lora."))
        .collect();
    assert!(!lora.is_empty());
    assert!(lora.iter().all(|p| p.dtype == burn::tensor::DType::F32));
    let st = std::fs::read(best.join("adapter/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    assert!(
        st.tensors()
            .iter()
            .all(|(_, v)| v.dtype() == safetensors::Dtype::F32)
    );
}

#[test]
fn an_unknown_precision_is_refused_with_its_name() {
    let err = RunConfig::from_toml_str("precision = \"fp8\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fp8") && err.contains("bf16"), "{err}");
}

/// Full fine-tuning in bf16: every weight trains, so every weight stays an f32 master copy while
/// activations run in bf16; the step's loss is finite and follows the f32 run's.
#[test]
fn bf16_full_finetuning_keeps_f32_masters() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 2, 1);
    let mut f32_run = run_config(dir.path(), train, val, 1);
    f32_run.full = true;
    f32_run.output = dir.path().join("f32");
    let bf16_run = RunConfig {
        precision: Precision::Bf16,
        output: dir.path().join("bf16"),
        ..f32_run.clone()
    };
    let first_loss = |cfg: &RunConfig| {
        run(cfg, &Options::default()).unwrap().metrics[0]
            .total
            .unwrap()
    };
    let (want, got) = (first_loss(&f32_run), first_loss(&bf16_run));
    assert!(
        got.is_finite() && (want - got).abs() <= 0.03 * want.abs(),
        "{want} vs {got}"
    );
    // The saved checkpoint is f32, as any hub checkpoint this project writes.
    let model_dir = bf16_run.output.join("best/model");
    let bytes = std::fs::read(model_dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(
        st.tensors()
            .iter()
            .all(|(_, v)| v.dtype() == safetensors::Dtype::F32)
    );
}
