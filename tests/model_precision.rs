//! bf16 mixed precision (`model::precision`): frozen weights and activations in bf16, trainable
//! parameters as f32 master copies. Against the fixture's f32 reference, the losses, embeddings and
//! gradients must agree to within what bf16 rounding explains (its unit roundoff is 2^-8, about
//! 0.4 %, per stored value), and everything that trains must stay f32.

mod common;

use burn::optim::GradientsParams;
use burn::tensor::{DType, Device};
use common::pearl_fixture::{self, rel_l2};
use common::{Tensors, fixture_dir, tensor_vec};
use pearl::model::names::named_params;
use pearl::model::precision::Precision;
use pearl::objective::grads::named_gradients;
use pearl::objective::{ObjectiveConfig, compute_losses};

#[test]
fn bf16_stores_frozen_weights_in_bf16_and_keeps_trainable_ones_f32() {
    let device = Device::default().autodiff();
    let mut model = pearl_fixture::model(&device);
    model.vlm = model.vlm.with_precision(Precision::Bf16).unwrap();
    let params = named_params(&model);
    let (mut frozen, mut trainable) = (0, 0);
    for p in &params {
        if p.require_grad {
            trainable += 1;
            assert_eq!(p.dtype, DType::F32, "{} trains: it must stay f32", p.path);
        } else {
            frozen += 1;
            assert_eq!(
                p.dtype,
                DType::BF16,
                "{} is frozen: it must be bf16",
                p.path
            );
        }
    }
    assert!(
        frozen > 0 && trainable > 0,
        "{frozen} frozen, {trainable} trainable"
    );
    // Back to f32: every parameter is f32 again.
    model.vlm = model.vlm.with_precision(Precision::F32).unwrap();
    assert!(named_params(&model).iter().all(|p| p.dtype == DType::F32));
}

#[test]
fn bf16_pearl_losses_and_gradients_agree_with_the_f32_reference() {
    let cfg = ObjectiveConfig::pearl();
    let device = Device::default().autodiff();
    let mut model = pearl_fixture::model(&device);
    model.vlm = model.vlm.with_precision(Precision::Bf16).unwrap();
    let batch = pearl_fixture::batch(&cfg);
    let dir = fixture_dir();
    let expected = pearl_fixture::expected();

    // Activations flow in bf16; what losses read comes back as f32.
    let out = model.vlm.forward(&batch.full, false).unwrap();
    assert_eq!(out.last_hidden.dtype(), DType::BF16);
    assert_eq!(model.vlm.logits(out.last_hidden).dtype(), DType::F32);

    let losses = compute_losses(&model, &batch, &cfg).unwrap();
    let want = &expected["losses"];
    let got = losses.values;
    for (name, value) in [
        ("vlm", got.vlm),
        ("jepa", got.jepa.unwrap()),
        ("nextlat_state", got.nextlat_state.unwrap()),
        ("nextlat_token", got.nextlat_token.unwrap()),
        ("total", got.total),
    ] {
        let w = want[name].as_f64().unwrap();
        let rel = (value - w).abs() / w.abs();
        eprintln!("{name}: bf16 {value:.6} f32 reference {w:.6} rel {rel:.2e}");
        assert!(value.is_finite() && rel < 0.05, "{name}: {value} vs {w}");
    }
    let v = Tensors::read(&dir.join("expected/pearl_views.safetensors"));
    let (pred, target) = losses.embeddings.clone().unwrap();
    for (t, name) in [(pred, "pred_embedding"), (target, "target_embedding")] {
        let e = rel_l2(&tensor_vec(t), &v.f32(name));
        eprintln!("{name}: relative L2 {e:.2e}");
        assert!(e < 0.05, "{name} off by {e:.2e}");
    }

    let grads = GradientsParams::from_grads(losses.total.backward(), &model);
    for p in named_params(&model).iter().filter(|p| p.require_grad) {
        let dtype = match p.dims.len() {
            1 => grads.get::<1>(p.id).map(|g| g.dtype()),
            _ => grads.get::<2>(p.id).map(|g| g.dtype()),
        };
        assert_eq!(dtype, Some(DType::F32), "gradient of {}", p.path);
    }
    let (total, worst) = pearl_fixture::gradient_errors(&model, &grads);
    eprintln!(
        "gradients: relative L2 {total:.2e} overall, worst tensor {:.2e} ({})",
        worst.0, worst.1
    );
    // No PyTorch bf16 run of the Pearl objective exists to compare with; the like-for-like
    // comparison is the SFT test below (PyTorch's own bf16 moves those gradients by 3.1e-2).
    // Pearl's gradients pass through more bf16 arithmetic (three views, the JEPA cosine), so the
    // bound here is looser: the update's direction must survive (relative L2 0.15 = cosine >= 0.989).
    assert!(total < 0.15, "gradients off by {total:.2e}");
    assert!(worst.0 < 0.4, "gradient {} off by {:.2e}", worst.1, worst.0);
}

/// `(logits at non-pad positions, LoRA gradients by PEFT name)` of the cross-entropy over every
/// non-pad next token of the fixture's `forward_batch`, in the given precision.
fn sft_logits_and_grads(precision: Precision) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    use pearl::objective::sft::{next_tokens, rows, vlm_loss};
    let device = Device::default().autodiff();
    let mut model = pearl_fixture::model(&device);
    model.dynamics = None;
    model.vlm = model.vlm.with_precision(precision).unwrap();
    let batch = common::fixture_batch("forward_batch");
    let labels: Vec<i64> = batch
        .input_ids
        .iter()
        .zip(&batch.attention_mask)
        .map(|(&t, &m)| if m != 0 { t } else { -100 })
        .collect();
    let out = model.vlm.forward(&batch, false).unwrap();
    let real: Vec<usize> = (0..batch.input_ids.len())
        .filter(|&i| batch.attention_mask[i] != 0)
        .collect();
    let logits = tensor_vec(model.vlm.logits(rows(&out.last_hidden, &real)));
    let next = next_tokens(&labels, batch.batch, batch.seq_len);
    let loss = vlm_loss(&model.vlm, &out.last_hidden, &next);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let grads = named_gradients(&model, &grads)
        .into_iter()
        .map(|(n, _, g)| (n, g))
        .collect();
    (logits, grads)
}

/// The same computation as `scripts/torch_bf16_error.py` runs in PyTorch
/// (transformers + PEFT, base in bf16, adapter kept f32): there, bf16 moves the non-pad logits by
/// a relative L2 of 2.2e-2 and the LoRA gradients by 3.1e-2 overall (worst tensor 9.1e-2). Ours
/// must stay within twice those: bf16 may not cost more here than it costs in PyTorch, beyond
/// the different order of rounding.
#[test]
fn bf16_error_is_comparable_to_pytorchs_own_bf16_error() {
    let (l32, g32) = sft_logits_and_grads(Precision::F32);
    let (l16, g16) = sft_logits_and_grads(Precision::Bf16);
    let logits = rel_l2(&l16, &l32);
    assert_eq!(g32.len(), g16.len());
    let cat = |g: &[(String, Vec<f32>)]| g.iter().flat_map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let overall = rel_l2(&cat(&g16), &cat(&g32));
    let worst = g16
        .iter()
        .zip(&g32)
        .map(|((n, a), (m, b))| {
            assert_eq!(n, m);
            (rel_l2(a, b), n.clone())
        })
        .fold((0.0, String::new()), |w, x| if x.0 > w.0 { x } else { w });
    eprintln!(
        "bf16 vs f32: logits {logits:.3e}, gradients {overall:.3e} overall, worst {:.3e} ({})",
        worst.0, worst.1
    );
    assert!(logits < 2.0 * 2.2e-2, "logits off by {logits:.3e}");
    assert!(overall < 2.0 * 3.1e-2, "gradients off by {overall:.3e}");
    assert!(worst.0 < 2.0 * 9.1e-2, "{} off by {:.3e}", worst.1, worst.0);
}

/// Inference in bf16: every weight is stored in bf16 as it is read, the adapter merged in f32 and
/// stored in bf16 too, and the model answers.
#[test]
fn bf16_inference_stores_every_weight_in_bf16_and_answers() {
    use pearl::eval::answerer::ChatModel;
    let dir = fixture_dir();
    let mut model = pearl::infer::LocalModel::load(
        &dir.join("model"),
        Some(&dir.join("adapter")),
        &Device::flex(),
        Precision::Bf16,
    )
    .unwrap();
    assert_eq!(model.model.precision(), Precision::Bf16);
    let params = named_params(&model.model);
    assert!(!params.is_empty());
    for p in &params {
        assert_eq!(p.dtype, DType::BF16, "{}", p.path);
    }
    assert!(params.iter().all(|p| !p.path.contains(".lora.")), "merged");
    use pearl::data::chat::{Message, Role};
    let chat = vec![Message::text(Role::User, "Hi")];
    let g = model.generate(&[chat], 3).unwrap();
    assert_eq!(g.len(), 1);
    assert!((1..=3).contains(&g[0].new_tokens), "{:?}", g[0].new_tokens);
}
