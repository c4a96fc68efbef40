//! The LVR baseline's training side on the tiny fixture model and synthetic crop trajectories:
//! the batch's latent slots, labels and region rows; the loss against a hand-built forward pass
//! (the teacher-forcing convention); gradients from both terms into the LoRA factors; AdamW
//! lowering both terms; clear errors for unusable inputs.

mod common;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use common::{fixture_dir, tensor_vec};
use pearl::data::synth::{SynthConfig, Task, generate};
use pearl::data::trajectory::{TrajectoryFile, load_jsonl};
use pearl::model::names::named_params;
use pearl::model::{Qwen2_5Vl, VlFamily, Vlm};
use pearl::objective::freeze::lora_only;
use pearl::objective::lvr::{
    LvrBatch, LvrConfig, LvrExample, LvrExamples, lvr_lora_only, lvr_losses, region_tokens,
};
use pearl::peft::lora::{LoraConfig, init_lora, load_peft_adapter};
use pearl::processor::Processor;
use pearl::processor::tokenizer::{LVR_END, LVR_LATENT, LVR_START};

/// A few synthetic single-crop trajectories (small scenes: fast to load and encode).
fn synth(dir: &std::path::Path, n: usize) -> TrajectoryFile {
    synth_split(dir, n, 0)
}

/// `n` training trajectories and `test` held-out MCQ items (`test_mcq.jsonl`).
fn synth_split(dir: &std::path::Path, n: usize, test: usize) -> TrajectoryFile {
    let mut cfg = SynthConfig::new(Task::Attribute, 7, 0);
    (cfg.train, cfg.val, cfg.test) = (n, 0, test);
    cfg.scene.width = 240;
    cfg.scene.height = 200;
    cfg.scene.object_size = 8.0;
    cfg.scene.clutter = 8;
    cfg.distractors = (3, 6);
    cfg.threads = 1;
    generate(&cfg, dir).unwrap();
    load_jsonl(&dir.join("train.jsonl")).unwrap()
}

fn processor() -> Processor {
    let mut p = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    p.tokenizer.add_lvr_tokens();
    p
}

fn examples(file: &TrajectoryFile) -> Vec<LvrExample> {
    let out = LvrExamples::from_file(file).unwrap();
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    out.examples
}

fn model(p: &Processor, device: &Device) -> Vlm {
    let mut m = Vlm::from_dir(&fixture_dir().join("model"), device).unwrap();
    m.ensure_vocab(p.tokenizer.vocab_size());
    m
}

#[test]
fn lvr_tokens_are_added_once() {
    let mut p = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    let before = p.tokenizer.vocab_size();
    let ids = p.tokenizer.add_lvr_tokens();
    assert_eq!(ids.len(), 3);
    assert_eq!(p.tokenizer.vocab_size(), before + 3);
    assert_eq!(p.tokenizer.add_lvr_tokens(), ids);
    assert_eq!(p.tokenizer.vocab_size(), before + 3);
    // Each is one token, even inside text.
    let enc = p
        .tokenizer
        .encode(&format!("a{LVR_START}{LVR_LATENT}{LVR_LATENT}{LVR_END}b"))
        .unwrap();
    assert_eq!(&enc[1..5], &[ids[0], ids[2], ids[2], ids[1]]);
}

#[test]
fn the_batch_has_one_latent_slot_per_region_token_and_supervises_only_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), 3);
    let p = processor();
    let ex = examples(&file);
    let batch = LvrBatch::build(&p, &ex).unwrap();
    let t = &batch.tokens;
    let id = |s: &str| i64::from(p.tokenizer.token_id(s).unwrap());
    let (start, end, latent) = (id(LVR_START), id(LVR_END), id(LVR_LATENT));
    let mut row_offset = 0;
    let mut at = 0;
    for (b, e) in ex.iter().enumerate() {
        let i0 = p.load_image(e.image().unwrap(), &e.base_dir).unwrap();
        let region = region_tokens(i0.grid_thw, 2, 14, e.bbox).unwrap();
        assert_eq!(batch.latents[b], region.len());
        let row = &t.input_ids[b * t.seq_len..(b + 1) * t.seq_len];
        // The slots are contiguous, right after <|lvr_start|> and right before <|lvr_end|>.
        let pos: Vec<usize> = batch.latent_positions[at..at + region.len()]
            .iter()
            .map(|&q| q - b * t.seq_len)
            .collect();
        assert!(pos.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(row[pos[0] - 1], start);
        assert_eq!(row[pos[pos.len() - 1] + 1], end);
        assert!(pos.iter().all(|&q| row[q] == latent));
        assert_eq!(row.iter().filter(|&&x| x == latent).count(), region.len());
        // Region rows index I0's tokens among the batch's image embeddings.
        let rows: Vec<usize> = region.iter().map(|r| row_offset + r).collect();
        assert_eq!(batch.latent_rows[at..at + region.len()], rows[..]);
        row_offset += p.image.num_image_tokens(i0.grid_thw);
        at += region.len();
        // Supervised: the answer and the closing <|im_end|>\n, nothing else.
        let sup: Vec<u32> = batch.labels[b * t.seq_len..(b + 1) * t.seq_len]
            .iter()
            .filter(|&&l| l != -100)
            .map(|&l| l as u32)
            .collect();
        let text = p.tokenizer.decode(&sup, false).unwrap();
        assert_eq!(text, format!("{}<|im_end|>\n", e.answer));
    }
    assert_eq!(at, batch.latent_positions.len());
    assert_eq!(
        row_offset,
        t.input_ids.iter().filter(|&&x| x == 584).count()
    );
}

/// The loss computed by hand: image embeddings placed at the slots one by one, the hidden state
/// before each slot against its region embedding.
#[test]
fn the_latent_loss_regresses_each_region_token_from_the_position_before_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), 2);
    let p = processor();
    let device = Device::default();
    let m = model(&p, &device);
    let batch = LvrBatch::build(&p, &examples(&file)).unwrap();
    let cfg = LvrConfig::default();
    let got = lvr_losses(&m, &batch, &cfg).unwrap();

    let t = &batch.tokens;
    let images = m.encode_images(&t.pixel_values, &t.image_grid_thw).unwrap();
    let img = images.embeds.clone();
    let mut x = m.embed(t, Some(&images)).unwrap();
    for (&q, &r) in batch.latent_positions.iter().zip(&batch.latent_rows) {
        let (b, s) = (q / t.seq_len, q % t.seq_len);
        let z: Tensor<2> = img.clone().narrow(0, r, 1);
        x = x.slice_assign([b..b + 1, s..s + 1], z.unsqueeze());
    }
    let hidden = m.decode(x, t, Some(&images), false).unwrap().last_hidden;
    let h = tensor_vec(hidden);
    let z = tensor_vec(img);
    let d = m.hidden_size();
    let mut sum = 0.0f64;
    for (&q, &r) in batch.latent_positions.iter().zip(&batch.latent_rows) {
        for k in 0..d {
            let diff = h[(q - 1) * d + k] as f64 - z[r * d + k] as f64;
            sum += diff * diff;
        }
    }
    let mse = sum / (batch.latent_positions.len() * d) as f64;
    assert!(
        (got.latent - mse).abs() <= 1e-4 * mse,
        "{} vs {mse}",
        got.latent
    );
    assert!(got.latent > 0.0 && got.text > 0.0);
    assert_eq!(got.latents, batch.latents.iter().sum::<usize>());
    let total = f64::from(got.total.into_scalar::<f32>());
    let want = got.text + 0.1 * got.latent;
    assert!((total - want).abs() < 1e-4 * want, "{total} vs {want}");
}

fn lora_grads(model: &Vlm, g: &GradientsParams) -> Vec<(String, Vec<f32>)> {
    named_params(model)
        .into_iter()
        .filter(|p| p.path.contains(".lora."))
        .filter_map(|p| {
            let v = match p.dims.len() {
                2 => g.get::<2>(p.id).map(tensor_vec),
                _ => None,
            };
            v.map(|v| (p.path, v))
        })
        .collect()
}

#[test]
fn both_terms_send_gradients_into_the_lora_factors_of_decoder_and_vision_tower() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), 2);
    let p = processor();
    let device = Device::default().autodiff();
    // The fixture adapter has non-zero A and B everywhere, so both factors get gradients.
    let m = load_peft_adapter(model(&p, &device), &fixture_dir().join("adapter")).unwrap();
    let m = lora_only(m);
    let batch = LvrBatch::build(&p, &examples(&file)).unwrap();
    let grads = |w: f64| {
        let cfg = LvrConfig {
            latent_weight: w,
            ..LvrConfig::default()
        };
        let l = lvr_losses(&m, &batch, &cfg).unwrap();
        lora_grads(&m, &GradientsParams::from_grads(l.total.backward(), &m))
    };
    let text = grads(0.0);
    let with = grads(1.0);
    assert_eq!(text.len(), with.len());
    let n_lora = named_params(&m)
        .iter()
        .filter(|p| p.path.contains(".lora."))
        .count();
    assert_eq!(text.len(), n_lora, "some LoRA factor got no gradient");
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let (mut text_seen, mut latent_seen) = (Vec::new(), Vec::new());
    for ((name, a), (_, b)) in text.iter().zip(&with) {
        let latent: Vec<f32> = b.iter().zip(a).map(|(x, y)| x - y).collect();
        if norm(a) > 0.0 {
            text_seen.push(name.clone());
        }
        if norm(&latent) > 1e-6 * norm(b).max(1e-12) {
            latent_seen.push(name.clone());
        }
    }
    for part in ["visual.", "model.layers."] {
        for (what, seen) in [("text", &text_seen), ("latent", &latent_seen)] {
            for f in ["lora.a", "lora.b"] {
                assert!(
                    seen.iter().any(|n| n.contains(part) && n.contains(f)),
                    "no {what} gradient reaches {part}*{f}: {seen:?}"
                );
            }
        }
    }
    // Base weights are frozen: no gradient at all.
    let l = lvr_losses(&m, &batch, &LvrConfig::default()).unwrap();
    let g = GradientsParams::from_grads(l.total.backward(), &m);
    for prm in named_params(&m)
        .iter()
        .filter(|p| !p.path.contains(".lora."))
    {
        let has = match prm.dims.len() {
            1 => g.get::<1>(prm.id).is_some(),
            2 => g.get::<2>(prm.id).is_some(),
            _ => false,
        };
        assert!(!has, "frozen {} got a gradient", prm.path);
    }
    // LVR's recipe: the vision tower (hence the targets) stays fixed, the decoder's adapters train.
    let m = lvr_lora_only(m);
    let l = lvr_losses(&m, &batch, &LvrConfig::default()).unwrap();
    let g = lora_grads(&m, &GradientsParams::from_grads(l.total.backward(), &m));
    assert!(
        g.iter().all(|(n, _)| !n.starts_with("visual.")),
        "vision adapters train"
    );
    let decoder = named_params(&m)
        .iter()
        .filter(|p| p.path.starts_with("model.layers.") && p.path.contains(".lora."))
        .count();
    assert_eq!(g.len(), decoder);
}

#[test]
fn adamw_on_lora_lowers_both_terms() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), 4);
    let p = processor();
    let device = Device::default().autodiff();
    let lora = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        lora_dropout: 0.0,
        target_regex: None,
    };
    let mut m = lvr_lora_only(init_lora(model(&p, &device), &lora, 3).unwrap());
    let batch = LvrBatch::build(&p, &examples(&file)).unwrap();
    // At LVR's weight 0.1 the 6-nat cross-entropy of the untrained model dominates the first
    // dozens of steps (the latent MSE hardly moves in 60 steps); weight 1 shows both terms fall
    // within a test's budget.
    let cfg = LvrConfig {
        latent_weight: 1.0,
        ..LvrConfig::default()
    };
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut history = Vec::new();
    for _ in 0..30 {
        let l = lvr_losses(&m, &batch, &cfg).unwrap();
        history.push((l.text, l.latent));
        let g = GradientsParams::from_grads(l.total.backward(), &m);
        m = optim.step(1e-2, m, g);
    }
    let first = history[0];
    let last = *history.last().unwrap();
    assert!(
        last.0 < 0.7 * first.0,
        "text loss {} -> {}",
        first.0,
        last.0
    );
    assert!(
        last.1 < 0.8 * first.1,
        "latent loss {} -> {}",
        first.1,
        last.1
    );
}

#[test]
fn unusable_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), 1);
    let ex = examples(&file);
    // A tokenizer without LVR's tokens.
    let plain = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    let err = format!("{:#}", LvrBatch::build(&plain, &ex).unwrap_err());
    assert!(err.contains("<|lvr_start|>"), "{err}");
    // A model whose embeddings were not grown for them.
    let p = processor();
    let mut small_cfg =
        pearl::model::Qwen2_5VlConfig::from_file(&fixture_dir().join("model/config.json")).unwrap();
    // Too small for the 3 added tokens.
    small_cfg.text.vocab_size = p.tokenizer.vocab_size() - 3;
    let small = Vlm::from(Qwen2_5Vl::random(&small_cfg, 1, &Device::default()).unwrap());
    let batch = LvrBatch::build(&p, &ex).unwrap();
    let err = lvr_losses(&small, &batch, &LvrConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vocabulary"), "{err}");
    // A missing image names the example and the file.
    let mut broken = ex[0].clone();
    broken.prompt[1].content[0] = pearl::data::chat::Part::Image {
        image: "missing.png".into(),
    };
    let err = format!("{:#}", LvrBatch::build(&p, &[broken]).unwrap_err());
    assert!(
        err.contains(&ex[0].id) && err.contains("missing.png"),
        "{err}"
    );
    // A negative weight is refused.
    let m = model(&p, &Device::default());
    let err = lvr_losses(
        &m,
        &batch,
        &LvrConfig {
            latent_weight: -1.0,
            ..LvrConfig::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("latent_weight"), "{err}");
}

/// The seam the lead's `pearl eval` uses: a briefly trained LVR model answers held-out synthetic
/// items through the harness, at two latent step counts, exactly as `lvr_generate` answers them.
#[test]
fn a_trained_lvr_model_goes_through_the_evaluation_harness() {
    use pearl::eval::run::{Mode, RunConfig, evaluate};
    let dir = tempfile::tempdir().unwrap();
    let file = synth_split(dir.path(), 3, 4);
    let items = pearl::eval::bench::jsonl::load(&dir.path().join("test_mcq.jsonl")).unwrap();
    let p = processor();
    let device = Device::default().autodiff();
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_regex: None,
    };
    let mut m = lvr_lora_only(init_lora(model(&p, &device), &lora, 5).unwrap());
    let batch = LvrBatch::build(&p, &examples(&file)).unwrap();
    let mut optim = AdamWConfig::new().init();
    for _ in 0..5 {
        let l = lvr_losses(&m, &batch, &LvrConfig::default()).unwrap();
        let g = GradientsParams::from_grads(l.total.backward(), &m);
        m = optim.step(1e-2, m, g);
    }
    let m = m.valid();
    let mut lvr = pearl::infer::lvr::LvrChatModel {
        model: m,
        processor: p,
        latent_steps: 1,
        feed: Default::default(),
    };
    let cfg = RunConfig {
        bench: "synth".into(),
        batch_size: 3,
        bootstrap: Default::default(),
        progress: false,
    };
    for steps in [1, 8] {
        lvr.latent_steps = steps;
        let out = dir.path().join(format!("run_{steps}"));
        let summary = evaluate(&mut lvr, &items, &Mode::Direct, &cfg, &out).unwrap();
        assert_eq!(summary.overall.n, items.len());
        let records: Vec<pearl::eval::record::ItemRecord> =
            std::fs::read_to_string(out.join("items.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        let chats: Vec<_> = items.iter().map(pearl::eval::protocol::chat_for).collect();
        let direct = pearl::infer::lvr::lvr_generate(
            &lvr.model,
            &lvr.processor,
            &chats,
            steps,
            pearl::eval::protocol::MAX_NEW_TOKENS,
        )
        .unwrap();
        for (r, g) in records.iter().zip(&direct) {
            assert_eq!(r.raw_output, g.text, "S={steps}, item {}", r.id);
        }
    }
}
