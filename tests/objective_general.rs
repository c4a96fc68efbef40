//! The objective beyond the fixture: on another member of the family (deeper, GQA 8/4, tied
//! embeddings, other M-RoPE sections and windows), with other K, distance, lambda and supervision
//! policy, full fine-tuning, the continuation trick gives the same embeddings and the same
//! gradients as running every view from scratch (the reference's way).

mod common;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use common::{fixture_dir, max_abs_diff, other_config, tensor_vec};
use pearl::data::chat::Message;
use pearl::data::trajectory::load_jsonl;
use pearl::kernels::tensor::index_tensor;
use pearl::model::names::named_params;
use pearl::model::{Qwen2_5Vl, VlBatch, VlFamily, Vlm};
use pearl::objective::batch::Example;
use pearl::objective::jepa::jepa_loss;
use pearl::objective::views::{input_view, trajectory_view};
use pearl::objective::{
    Distance, DynamicsHead, ObjectiveConfig, PearlModel, Supervise, TrainBatch, compute_losses,
};
use pearl::processor::Processor;

/// Hidden state at `len - 2` of each conversation, running the view on its own.
fn from_scratch(
    model: &Vlm,
    p: &Processor,
    chats: &[Vec<Message>],
    base: &std::path::Path,
) -> Tensor<2> {
    let enc = p.encode(chats, &vec![false; chats.len()], base).unwrap();
    let lens = enc.lengths.clone();
    let batch = VlBatch::from(enc);
    let h = model.forward(&batch, false).unwrap().last_hidden;
    let [b, s, d] = h.dims();
    let at: Vec<usize> = (0..b).map(|i| i * s + lens[i] - 2).collect();
    h.reshape([b * s, d])
        .select(0, index_tensor(&at, &model.device()))
}

#[test]
fn continuations_equal_views_run_from_scratch_with_gradients() {
    let device = Device::default().autodiff();
    let cfg = ObjectiveConfig {
        predictors: 2,
        distance: Distance::Mse,
        lambda: 0.5,
        supervise: Supervise::LastAssistant,
        ..ObjectiveConfig::pearl()
    };
    let vlm = Vlm::from(Qwen2_5Vl::random(&other_config(), 11, &device).unwrap());
    let head = DynamicsHead::init(vlm.hidden_size(), 3, &device);
    let model = PearlModel {
        vlm,
        dynamics: Some(head),
    };
    let mut p = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    p.tokenizer.add_pearl_tokens();
    let file = load_jsonl(&fixture_dir().join("expected/pearl_trajectories.jsonl")).unwrap();
    let chats: Vec<Vec<Message>> = file
        .items
        .iter()
        .map(|n| n.trajectory.messages.clone())
        .collect();
    let examples = Example::all_of(&file);
    let batch = TrainBatch::build(&p, &examples, &cfg).unwrap();

    // Ours: JEPA-only part of the objective via continuations.
    let ours = compute_losses(&model, &batch, &cfg).unwrap();
    let (pred, target) = ours.embeddings.clone().unwrap();

    // Reference: every view from scratch.
    let inputs: Vec<_> = chats.iter().map(|c| input_view(c, 2).unwrap()).collect();
    let trajs: Vec<_> = chats.iter().map(|c| trajectory_view(c).unwrap()).collect();
    let pred_ref = from_scratch(&model.vlm, &p, &inputs, &file.base_dir);
    let target_ref = from_scratch(&model.vlm, &p, &trajs, &file.base_dir);
    let dp = max_abs_diff(
        &tensor_vec(pred.clone()),
        &tensor_vec(pred_ref.clone()),
        |_| true,
    );
    let dt = max_abs_diff(
        &tensor_vec(target.clone()),
        &tensor_vec(target_ref.clone()),
        |_| true,
    );
    assert!(
        dp < 1e-4 && dt < 1e-4,
        "prediction differs by {dp}, target by {dt}"
    );

    // Gradients of the JEPA term through the continuation vs from scratch, every parameter.
    let g_ours =
        GradientsParams::from_grads(jepa_loss(pred, target, cfg.distance).backward(), &model);
    let g_ref = GradientsParams::from_grads(
        jepa_loss(pred_ref, target_ref, cfg.distance).backward(),
        &model,
    );
    let mut checked = 0;
    for prm in named_params(&model) {
        let (a, b) = match prm.dims.len() {
            1 => (
                g_ours.get::<1>(prm.id).map(tensor_vec),
                g_ref.get::<1>(prm.id).map(tensor_vec),
            ),
            2 => (
                g_ours.get::<2>(prm.id).map(tensor_vec),
                g_ref.get::<2>(prm.id).map(tensor_vec),
            ),
            _ => continue,
        };
        match (a, b) {
            (Some(a), Some(b)) => {
                let err: f32 = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).powi(2))
                    .sum::<f32>()
                    .sqrt();
                let norm: f32 = b.iter().map(|y| y * y).sum::<f32>().sqrt();
                assert!(
                    err <= 1e-3 * norm + 1e-9,
                    "{}: rel err {}",
                    prm.path,
                    err / norm
                );
                checked += 1;
            }
            (None, None) => {}
            (a, b) => panic!(
                "{}: gradient present in one only ({} / {})",
                prm.path,
                a.is_some(),
                b.is_some()
            ),
        }
    }
    assert!(checked > 20, "only {checked} gradients compared");
}

#[test]
fn sft_is_the_next_token_loss_alone_and_needs_no_views() {
    let device = Device::default();
    let vlm = Vlm::from_dir(&fixture_dir().join("model"), &device).unwrap();
    let vlm = pearl::peft::lora::load_peft_adapter(vlm, &fixture_dir().join("adapter")).unwrap();
    let model = PearlModel {
        vlm,
        dynamics: None,
    };
    let p = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    let file = load_jsonl(&fixture_dir().join("expected/pearl_trajectories.jsonl")).unwrap();
    let examples = Example::all_of(&file);
    let sft = ObjectiveConfig::sft();
    let batch = TrainBatch::build(&p, &examples, &sft).unwrap();
    assert!(batch.input.is_none() && batch.trajectory.is_none());
    let l = compute_losses(&model, &batch, &sft).unwrap().values;
    assert_eq!(
        (l.jepa, l.nextlat_state, l.nextlat_token),
        (None, None, None)
    );
    assert_eq!(l.total, l.vlm);
    // The fixture's reference L_vlm (with its adapter), from the same chats and labels.
    assert!((l.vlm - 6.680456638).abs() / 6.68 < 1e-4, "{}", l.vlm);
    // Pearl without the head is refused clearly, and so is JEPA without Pearl's tokens.
    let err = compute_losses(
        &model,
        &batch,
        &ObjectiveConfig {
            jepa: false,
            ..ObjectiveConfig::pearl()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("dynamics head"), "{err}");
    let err = TrainBatch::build(&p, &examples, &ObjectiveConfig::pearl())
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("predictor"), "{err:#}");
}

/// `hidden_states = "transformers4.57"` changes exactly what it should. On Qwen3-VL the JEPA
/// embeddings become the last layer's output before the final norm (as running each view from
/// scratch gives it) and NextLat reads those states too, while the next-token loss is unchanged;
/// on Qwen2.5-VL (whose last entry is after the norm in every version) nothing changes.
#[test]
fn transformers_4_57_hidden_states_read_pre_norm_states_on_qwen3_only() {
    use pearl::model::decoder::HiddenStates;
    let device = Device::default();
    for (dir, changes) in [(common::qwen3_fixture_dir(), true), (fixture_dir(), false)] {
        let vlm = Vlm::from_dir(&dir.join("model"), &device).unwrap();
        let head = DynamicsHead::init(vlm.hidden_size(), 3, &device);
        let mut p = Processor::from_dir(&dir.join("model")).unwrap();
        p.tokenizer.add_pearl_tokens();
        let mut vlm = vlm;
        vlm.ensure_vocab(p.tokenizer.vocab_size());
        let model = PearlModel {
            vlm,
            dynamics: Some(head),
        };
        let file = load_jsonl(&dir.join("expected/pearl_trajectories.jsonl")).unwrap();
        let examples = Example::all_of(&file);
        let v5 = ObjectiveConfig {
            predictors: 2,
            ..ObjectiveConfig::pearl()
        };
        let v457 = ObjectiveConfig {
            hidden_states: HiddenStates::Transformers4_57,
            ..v5.clone()
        };
        let batch = TrainBatch::build(&p, &examples, &v5).unwrap();
        let a = compute_losses(&model, &batch, &v5).unwrap();
        let b = compute_losses(&model, &batch, &v457).unwrap();
        assert_eq!(
            a.values.vlm, b.values.vlm,
            "the next-token loss reads the head's input"
        );
        let (pred, target) = b.embeddings.unwrap();
        if !changes {
            assert_eq!(a.values, b.values);
            continue;
        }
        assert_ne!(a.values.jepa, b.values.jepa);
        assert_ne!(a.values.nextlat_state, b.values.nextlat_state);
        assert_ne!(a.values.nextlat_token, b.values.nextlat_token);
        // The embeddings are the pre-norm states of the views run from scratch.
        let chats: Vec<Vec<Message>> = file
            .items
            .iter()
            .map(|n| n.trajectory.messages.clone())
            .collect();
        let pre_norm = |chats: &[Vec<Message>]| {
            let enc = p
                .encode(chats, &vec![false; chats.len()], &file.base_dir)
                .unwrap();
            let lens = enc.lengths.clone();
            let batch = VlBatch::from(enc);
            let vlm = &model.vlm;
            let images = vlm
                .encode_images(&batch.pixel_values, &batch.image_grid_thw)
                .unwrap();
            let x = vlm.embed(&batch, Some(&images)).unwrap();
            let h = vlm
                .decode(x, &batch, Some(&images), false)
                .unwrap()
                .pre_norm;
            let [n, s, d] = h.dims();
            let at: Vec<usize> = (0..n).map(|i| i * s + lens[i] - 2).collect();
            tensor_vec(
                h.reshape([n * s, d])
                    .select(0, index_tensor(&at, &vlm.device())),
            )
        };
        let inputs: Vec<_> = chats.iter().map(|c| input_view(c, 2).unwrap()).collect();
        let trajs: Vec<_> = chats.iter().map(|c| trajectory_view(c).unwrap()).collect();
        let dp = max_abs_diff(&tensor_vec(pred), &pre_norm(&inputs), |_| true);
        let dt = max_abs_diff(&tensor_vec(target), &pre_norm(&trajs), |_| true);
        assert!(
            dp < 1e-4 && dt < 1e-4,
            "prediction off by {dp}, target by {dt}"
        );
    }
}
