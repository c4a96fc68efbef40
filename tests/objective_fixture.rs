//! The Pearl objective against the fixture's reference (PyTorch, following the authors' trainer):
//! the three views' tokens, the five losses, and every gradient of the LoRA factors and the
//! dynamics head.

mod common;

use burn::optim::GradientsParams;
use burn::tensor::Device;
use common::{Tensors, fixture_dir, tensor_vec};
use pearl::data::trajectory::load_jsonl;
use pearl::model::Qwen2_5Vl;
use pearl::model::lora::load_peft_adapter;
use pearl::objective::batch::Example;
use pearl::objective::freeze::lora_only;
use pearl::objective::grads::named_gradients;
use pearl::objective::{DynamicsHead, ObjectiveConfig, PearlModel, TrainBatch, compute_losses};
use pearl::processor::Processor;

struct Setup {
    model: PearlModel,
    batch: TrainBatch,
    expected: serde_json::Value,
}

fn setup(cfg: &ObjectiveConfig) -> Setup {
    let dir = fixture_dir();
    let device = Device::default().autodiff();
    let vlm = Qwen2_5Vl::from_dir(&dir.join("model"), &device).unwrap();
    let vlm = load_peft_adapter(vlm, &dir.join("adapter")).unwrap();
    let d = vlm.cfg.text.hidden_size;
    let head = DynamicsHead::load(&dir.join("dynamics_head.safetensors"), d, &device).unwrap();
    let model = lora_only(PearlModel {
        vlm,
        dynamics: Some(head),
    });
    let mut processor = Processor::from_dir(&dir.join("model")).unwrap();
    processor.tokenizer.add_pearl_tokens();
    let file = load_jsonl(&dir.join("expected/pearl_trajectories.jsonl")).unwrap();
    let examples = Example::all_of(&file);
    let batch = TrainBatch::build(&processor, &examples, cfg).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected/pearl_loss.json")).unwrap(),
    )
    .unwrap();
    Setup {
        model,
        batch,
        expected,
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Unpadded rows of a `[batch, seq]` tensor.
fn rows(ids: &[i64], mask: &[i64], batch: usize) -> Vec<Vec<i64>> {
    let s = ids.len() / batch;
    (0..batch)
        .map(|b| {
            (0..s)
                .filter(|&t| mask[b * s + t] != 0)
                .map(|t| ids[b * s + t])
                .collect()
        })
        .collect()
}

#[test]
fn views_match_the_reference_tokens() {
    let s = setup(&ObjectiveConfig::pearl());
    let v = Tensors::read(&fixture_dir().join("expected/pearl_views.safetensors"));
    let b = s.batch.full.batch;
    let full_mask = v.i64("full_attention_mask");
    assert_eq!(
        rows(&s.batch.full.input_ids, &s.batch.full.attention_mask, b),
        rows(&v.i64("full_input_ids"), &full_mask, b)
    );
    assert_eq!(
        rows(&s.batch.labels, &s.batch.full.attention_mask, b),
        rows(&v.i64("labels"), &full_mask, b)
    );
    for (view, name) in [
        (s.batch.input.as_ref().unwrap(), "input_view"),
        (s.batch.trajectory.as_ref().unwrap(), "trajectory_view"),
    ] {
        assert_eq!(
            rows(&view.tokens.input_ids, &view.tokens.attention_mask, b),
            rows(
                &v.i64(&format!("{name}_input_ids")),
                &v.i64(&format!("{name}_attention_mask")),
                b
            ),
            "{name}"
        );
    }
}

#[test]
fn losses_embeddings_and_gradients_match_the_reference() {
    let cfg = ObjectiveConfig::pearl();
    let s = setup(&cfg);
    let losses = compute_losses(&s.model, &s.batch, &cfg).unwrap();
    let want = &s.expected["losses"];
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
            rel(value, w)
        );
    }
    let v = Tensors::read(&fixture_dir().join("expected/pearl_views.safetensors"));
    let (pred, target) = losses.embeddings.clone().unwrap();
    for (t, name) in [(pred, "pred_embedding"), (target, "target_embedding")] {
        let d = common::max_abs_diff(&tensor_vec(t), &v.f32(name), |_| true);
        eprintln!("{name}: max |diff| {d:.2e}");
        assert!(d < 1e-3, "{name} differs by {d}");
    }
    for (name, value) in pairs {
        let w = want[name].as_f64().unwrap();
        assert!(rel(value, w) < 1e-4, "{name}: {value} vs {w}");
    }

    let grads = GradientsParams::from_grads(losses.total.backward(), &s.model);
    let ours = named_gradients(&s.model, &grads);
    let reference = Tensors::read(&fixture_dir().join("expected/pearl_grads.safetensors"));
    let names = s.expected["grad_names"].as_array().unwrap();
    assert_eq!(ours.len(), names.len(), "one gradient per trainable tensor");
    let mut worst = (0.0f64, String::new());
    for n in names {
        let n = n.as_str().unwrap();
        let (_, shape, g) = ours
            .iter()
            .find(|(k, _, _)| k == n)
            .unwrap_or_else(|| panic!("no gradient for {n}"));
        assert_eq!(*shape, reference.shape(n), "{n}");
        let r = reference.f32(n);
        let err: f64 = g
            .iter()
            .zip(&r)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = r.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>().sqrt();
        let e = err / norm.max(1e-30);
        if e > worst.0 {
            worst = (e, n.to_string());
        }
    }
    eprintln!(
        "worst gradient relative L2 error {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-3,
        "gradient {} off by {:.2e}",
        worst.1,
        worst.0
    );
}
