//! The fixture's Pearl setting (base model, PEFT adapter, dynamics head, the reference
//! trajectories) and comparisons against its reference losses and gradients.

use super::{Tensors, fixture_dir, tensor_vec};
use burn::optim::GradientsParams;
use burn::tensor::Device;
use pearl::data::trajectory::load_jsonl;
use pearl::model::Vlm;
use pearl::objective::batch::Example;
use pearl::objective::freeze::lora_only;
use pearl::objective::grads::named_gradients;
use pearl::objective::{DynamicsHead, ObjectiveConfig, PearlModel, TrainBatch, compute_losses};
use pearl::peft::lora::load_peft_adapter;
use pearl::processor::Processor;
use std::path::Path;

/// Base model + adapter + dynamics head, adapters and head trainable.
pub fn model(device: &Device) -> PearlModel {
    model_in(&fixture_dir(), device)
}

/// [`model`] of the fixture in `dir` (either family).
pub fn model_in(dir: &Path, device: &Device) -> PearlModel {
    let vlm = Vlm::from_dir(&dir.join("model"), device).unwrap();
    let vlm = load_peft_adapter(vlm, &dir.join("adapter")).unwrap();
    let d = vlm.hidden_size();
    let head = DynamicsHead::load(&dir.join("dynamics_head.safetensors"), d, device).unwrap();
    lora_only(PearlModel {
        vlm,
        dynamics: Some(head),
    })
}

/// The reference trajectories as one training batch.
pub fn batch(cfg: &ObjectiveConfig) -> TrainBatch {
    batch_in(&fixture_dir(), cfg)
}

/// [`batch`] of the fixture in `dir`.
pub fn batch_in(dir: &Path, cfg: &ObjectiveConfig) -> TrainBatch {
    let mut processor = Processor::from_dir(&dir.join("model")).unwrap();
    processor.tokenizer.add_pearl_tokens();
    let file = load_jsonl(&dir.join("expected/pearl_trajectories.jsonl")).unwrap();
    TrainBatch::build(&processor, &Example::all_of(&file), cfg).unwrap()
}

/// `expected/pearl_loss.json`: the reference losses and the names of the trainable tensors.
pub fn expected() -> serde_json::Value {
    expected_in(&fixture_dir())
}

/// [`expected`] of the fixture in `dir`.
pub fn expected_in(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("expected/pearl_loss.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let err: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (err / norm.max(1e-60)).sqrt()
}

/// Relative L2 errors of the gradients against the reference: over all of them concatenated, and
/// the worst single tensor with its name. Every reference tensor must have a gradient here.
pub fn gradient_errors(model: &PearlModel, grads: &GradientsParams) -> (f64, (f64, String)) {
    gradient_errors_in(&fixture_dir(), model, grads)
}

/// [`gradient_errors`] against the fixture in `dir`.
pub fn gradient_errors_in(
    dir: &Path,
    model: &PearlModel,
    grads: &GradientsParams,
) -> (f64, (f64, String)) {
    let ours = named_gradients(model, grads);
    let reference = Tensors::read(&dir.join("expected/pearl_grads.safetensors"));
    let expected = expected_in(dir);
    let names = expected["grad_names"].as_array().unwrap();
    assert_eq!(ours.len(), names.len(), "one gradient per trainable tensor");
    let (mut all_ours, mut all_ref) = (Vec::new(), Vec::new());
    let mut worst = (0.0f64, String::new());
    for n in names {
        let n = n.as_str().unwrap();
        let (_, shape, g) = ours
            .iter()
            .find(|(k, _, _)| k == n)
            .unwrap_or_else(|| panic!("no gradient for {n}"));
        assert_eq!(*shape, reference.shape(n), "{n}");
        let r = reference.f32(n);
        let e = rel_l2(g, &r);
        if e > worst.0 {
            worst = (e, n.to_string());
        }
        all_ours.extend_from_slice(g);
        all_ref.extend(r);
    }
    (rel_l2(&all_ours, &all_ref), worst)
}

/// The Pearl objective on the fixture against the reference at f32 tolerances: the five losses
/// (relative 1e-4), the JEPA embeddings (max |diff| 1e-3), every gradient (relative L2 1e-3).
pub fn check_against_reference() {
    check_against_reference_in(&fixture_dir())
}

/// [`check_against_reference`] for the fixture in `dir` (either family).
pub fn check_against_reference_in(dir: &Path) {
    check_against_reference_on(dir, &Device::flex())
}

/// [`check_against_reference_in`] with the model on `device` (autodiff is added here).
pub fn check_against_reference_on(dir: &Path, device: &Device) {
    let cfg = ObjectiveConfig::pearl();
    let model = model_in(dir, &device.clone().autodiff());
    let batch = batch_in(dir, &cfg);
    let expected = expected_in(dir);
    let losses = compute_losses(&model, &batch, &cfg).unwrap();
    let want = &expected["losses"];
    let got = losses.values;
    let pairs = [
        ("vlm", got.vlm),
        ("jepa", got.jepa.unwrap()),
        ("nextlat_state", got.nextlat_state.unwrap()),
        ("nextlat_token", got.nextlat_token.unwrap()),
        ("total", got.total),
    ];
    for (name, value) in pairs {
        let w = want[name].as_f64().unwrap();
        eprintln!(
            "{name}: ours {value:.9} reference {w:.9} rel {:.2e}",
            (value - w).abs() / w.abs().max(1e-12)
        );
    }
    let v = Tensors::read(&dir.join("expected/pearl_views.safetensors"));
    let (pred, target) = losses.embeddings.clone().unwrap();
    for (t, name) in [(pred, "pred_embedding"), (target, "target_embedding")] {
        let d = super::max_abs_diff(&tensor_vec(t), &v.f32(name), |_| true);
        eprintln!("{name}: max |diff| {d:.2e}");
        assert!(d < 1e-3, "{name} differs by {d}");
    }
    for (name, value) in pairs {
        let w = want[name].as_f64().unwrap();
        assert!(
            (value - w).abs() / w.abs().max(1e-12) < 1e-4,
            "{name}: {value} vs {w}"
        );
    }

    let grads = GradientsParams::from_grads(losses.total.backward(), &model);
    let (_, (worst, name)) = gradient_errors_in(dir, &model, &grads);
    eprintln!("worst gradient relative L2 error {worst:.2e} ({name})");
    assert!(worst < 1e-3, "gradient {name} off by {worst:.2e}");
}
