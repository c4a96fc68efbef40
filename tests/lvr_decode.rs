//! LVR's latent decoding on the tiny fixture model, against references that run the whole
//! sequence from scratch at every step (no cache): exactly S latent steps, each the previous
//! hidden state fed back at the next position; S = 0 is plain greedy decoding of the prompt with
//! `<|lvr_start|><|lvr_end|>` appended; batched, padded prompts decode as they do alone;
//! decoding is deterministic; unusable inputs are clear errors.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{fixture_dir, max_abs_diff, tensor_vec};
use pearl::data::chat::{Message, Part, Role};
use pearl::eval::answerer::generate_checked;
use pearl::infer::lvr::generate::encode_prompts;
use pearl::infer::lvr::{LatentDecoder, LvrChatModel, lvr_generate};
use pearl::model::{Qwen2_5Vl, Qwen2_5VlConfig, VlBatch, VlFamily, Vlm};
use pearl::processor::tokenizer::{LVR_END, LVR_LATENT, LVR_START};
use pearl::processor::{Processor, pad_right};
use std::path::Path;

fn processor() -> Processor {
    let mut p = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    p.tokenizer.add_lvr_tokens();
    p
}

fn model(p: &Processor) -> Vlm {
    let mut m = Vlm::from_dir(&fixture_dir().join("model"), &Device::default()).unwrap();
    m.ensure_vocab(p.tokenizer.vocab_size());
    m
}

fn chat(image: &str, question: &str) -> Vec<Message> {
    let path = fixture_dir().join("images").join(image);
    vec![
        Message::text(Role::System, "You are a helpful assistant."),
        Message::new(
            Role::User,
            vec![
                Part::Image {
                    image: path.display().to_string(),
                },
                Part::Text {
                    text: question.into(),
                },
            ],
        ),
    ]
}

/// Two prompts of different lengths, so the batch is padded.
fn chats() -> Vec<Vec<Message>> {
    vec![
        chat("scene0.png", "What color is the square?"),
        chat(
            "scene1.png",
            "Which object is left of the circle? Answer with the option's letter.",
        ),
    ]
}

/// One prompt with `suffix` appended to its rendered text, as a batch of one.
fn single(p: &Processor, chat: &[Message], suffix: &str) -> VlBatch {
    let text = p.render(chat, true).unwrap() + suffix;
    let images: Vec<_> = chat
        .iter()
        .flat_map(Message::images)
        .map(|r| p.load_image(r, Path::new("/")).unwrap())
        .collect();
    let ids = p.encode_text_with_images(&text, &images).unwrap();
    let pixels = images.iter().flat_map(|i| i.pixel_values.clone()).collect();
    let grids = images.iter().map(|i| i.grid_thw).collect();
    VlBatch::from(pad_right(&[ids], 0, pixels, p.image.patch_dim(), grids))
}

fn id(p: &Processor, t: &str) -> i64 {
    i64::from(p.tokenizer.token_id(t).unwrap())
}

/// Logits after the prompt, `steps` latents (each the last hidden state of the sequence so far,
/// recomputed from scratch) and `<|lvr_end|>`.
fn reference_logits(m: &Vlm, p: &Processor, chat: &[Message], steps: usize) -> Vec<f32> {
    let prompt = single(p, chat, LVR_START);
    let img = m
        .encode_images(&prompt.pixel_values, &prompt.image_grid_thw)
        .unwrap();
    let x0 = m.embed(&prompt, Some(&img)).unwrap();
    let d = m.hidden_size();
    // Runs embeddings whose extra positions hold `extra` ids (the latent placeholder is plain
    // text for M-RoPE, like any token after the prompt).
    let run = |x: Tensor<3>, extra: &[i64]| -> Tensor<3> {
        let mut b = prompt.clone();
        b.input_ids.extend_from_slice(extra);
        b.seq_len += extra.len();
        b.attention_mask = vec![1; b.seq_len];
        m.decode(x, &b, Some(&img), false).unwrap().last_hidden
    };
    let mut latents: Vec<Tensor<3>> = Vec::new();
    for k in 0..steps {
        let x = Tensor::cat([vec![x0.clone()], latents.clone()].concat(), 1);
        let h = run(x, &vec![id(p, LVR_LATENT); k]);
        let s = h.dims()[1];
        latents.push(h.slice([0..1, s - 1..s, 0..d]));
    }
    let inputs: Vec<Tensor<2>> = latents.into_iter().map(|l| l.reshape([1, d])).collect();
    logits_with_inputs(m, p, chat, &inputs)
}

#[test]
fn exactly_s_latent_steps_each_feeding_back_the_last_hidden_state() {
    let p = processor();
    let m = model(&p);
    let chats = chats();
    let prompts = encode_prompts(&p, &chats).unwrap();
    let lengths = prompts.tokens.lengths();
    assert_ne!(lengths[0], lengths[1], "the batch should be padded");
    let vocab = m.vocab_size();
    for steps in [0, 1, 3] {
        let mut dec = LatentDecoder::prefill(&m, &prompts.tokens).unwrap();
        let start = dec.next_positions().to_vec();
        for _ in 0..steps {
            dec.latent_step();
        }
        dec.feed_tokens(&[id(&p, LVR_END); 2]).unwrap();
        assert_eq!(dec.latent_steps(), steps);
        let got = tensor_vec(dec.logits());
        for (r, chat) in chats.iter().enumerate() {
            // S latents and <|lvr_end|> took S + 1 positions.
            assert_eq!(dec.next_positions()[r], start[r] + steps as i64 + 1);
            let row = &got[r * vocab..(r + 1) * vocab];
            let want = reference_logits(&m, &p, chat, steps);
            let diff = max_abs_diff(row, &want, |_| true);
            assert!(diff < 1e-4, "S={steps}, row {r}: logits differ by {diff}");
            // ... and not the logits of one more latent step.
            let other = reference_logits(&m, &p, chat, steps + 1);
            let apart = max_abs_diff(row, &other, |_| true);
            assert!(
                apart > 1e-3,
                "S={steps}: one more step changes nothing ({apart})"
            );
        }
    }
}

/// Greedy decoding from scratch: the whole sequence through the model for every new token.
fn plain_greedy(m: &Vlm, p: &Processor, chat: &[Message], max_new: usize) -> Vec<u32> {
    let mut batch = single(p, chat, &format!("{LVR_START}{LVR_END}"));
    let stops = [
        p.tokenizer.special().im_end,
        p.tokenizer.special().end_of_text,
    ];
    let mut out = Vec::new();
    for _ in 0..max_new {
        let h = m.forward(&batch, false).unwrap().last_hidden;
        let [_, s, d] = h.dims();
        let logits = tensor_vec(m.logits(h.slice([0..1, s - 1..s, 0..d])));
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        out.push(next);
        if stops.contains(&next) {
            break;
        }
        batch.input_ids.push(i64::from(next));
        batch.attention_mask.push(1);
        batch.seq_len += 1;
    }
    out
}

#[test]
fn zero_steps_is_plain_greedy_decoding_after_the_two_delimiters() {
    let p = processor();
    let m = model(&p);
    let chats = chats();
    let got = lvr_generate(&m, &p, &chats, 0, 6).unwrap();
    assert_eq!(got.len(), 2);
    for (g, chat) in got.iter().zip(&chats) {
        let want = plain_greedy(&m, &p, chat, 6);
        assert_eq!(g.new_tokens, want.len());
        assert_eq!(g.text, p.tokenizer.decode(&want, true).unwrap());
        assert!(g.new_tokens > 0);
    }
}

#[test]
fn decoding_is_deterministic_and_the_chat_model_reports_its_costs() {
    let p = processor();
    let m = model(&p);
    let chats = chats();
    let a = lvr_generate(&m, &p, &chats, 4, 5).unwrap();
    let b = lvr_generate(&m, &p, &chats, 4, 5).unwrap();
    let strip = |g: &[pearl::eval::answerer::Generation]| -> Vec<(String, usize, usize, usize)> {
        g.iter()
            .map(|g| {
                (
                    g.text.clone(),
                    g.new_tokens,
                    g.prompt_tokens,
                    g.image_tokens,
                )
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    let prompts = encode_prompts(&p, &chats).unwrap();
    let image_id = m.image_token_id() as i64;
    let t = &prompts.tokens;
    for (r, g) in a.iter().enumerate() {
        let row = &t.input_ids[r * t.seq_len..r * t.seq_len + g.prompt_tokens];
        assert_eq!(g.prompt_tokens, t.lengths()[r]);
        assert_eq!(
            g.image_tokens,
            row.iter().filter(|&&x| x == image_id).count()
        );
        assert_eq!(*row.last().unwrap(), id(&p, LVR_START));
        assert!(g.new_tokens >= 1 && g.new_tokens <= 5);
        assert!(g.seconds > 0.0);
    }
    let mut cm = LvrChatModel {
        model: m,
        processor: p,
        latent_steps: 4,
        feed: Default::default(),
    };
    let c = generate_checked(&mut cm, &chats, 5).unwrap();
    assert_eq!(strip(&c), strip(&a));
}

#[test]
fn unusable_inputs_are_clear_errors() {
    let p = processor();
    let m = model(&p);
    let err = |chats: &[Vec<Message>], steps: usize| {
        format!("{:#}", lvr_generate(&m, &p, chats, steps, 4).unwrap_err())
    };
    let no_image = vec![Message::text(Role::User, "What is 2 + 2?")];
    let e = err(&[chats()[0].clone(), no_image], 4);
    assert!(e.contains("chat 1") && e.contains("no image"), "{e}");
    let mut answered = chats()[0].clone();
    answered.push(Message::text(Role::Assistant, "(A)"));
    let e = err(&[answered], 4);
    assert!(e.contains("assistant turn"), "{e}");
    assert!(err(&[], 4).contains("no chats"));
    let e = err(&chats(), 129);
    assert!(e.contains("at most 128"), "{e}");
    let missing = chat("does_not_exist.png", "Q?");
    let e = err(&[missing], 4);
    assert!(e.contains("does_not_exist.png"), "{e}");
    // A tokenizer without LVR's tokens, a model without rows for them.
    let plain = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    let e = format!(
        "{:#}",
        lvr_generate(&m, &plain, &chats(), 4, 4).unwrap_err()
    );
    assert!(e.contains("<|lvr_end|>"), "{e}");
    let mut cfg = Qwen2_5VlConfig::from_file(&fixture_dir().join("model/config.json")).unwrap();
    cfg.text.vocab_size = p.tokenizer.vocab_size() - 3;
    let small = Vlm::from(Qwen2_5Vl::random(&cfg, 1, &Device::default()).unwrap());
    let e = format!(
        "{:#}",
        lvr_generate(&small, &p, &chats(), 4, 4).unwrap_err()
    );
    assert!(e.contains("vocabulary"), "{e}");
}

/// Logits after the prompt, the given latent inputs (one `[1, d]` row each, fed as they are) and
/// `<|lvr_end|>`, the whole sequence run from scratch.
fn logits_with_inputs(m: &Vlm, p: &Processor, chat: &[Message], inputs: &[Tensor<2>]) -> Vec<f32> {
    let prompt = single(p, chat, LVR_START);
    let img = m
        .encode_images(&prompt.pixel_values, &prompt.image_grid_thw)
        .unwrap();
    let x0 = m.embed(&prompt, Some(&img)).unwrap();
    let d = m.hidden_size();
    let end =
        Tensor::<2, Int>::from_data(TensorData::new(vec![id(p, LVR_END)], [1, 1]), &m.device());
    let latents: Vec<Tensor<3>> = inputs
        .iter()
        .map(|x| x.clone().reshape([1, 1, d]))
        .collect();
    let x = Tensor::cat(
        [vec![x0], latents, vec![m.embed_tokens().forward(end)]].concat(),
        1,
    );
    let mut b = prompt.clone();
    b.input_ids.extend(vec![id(p, LVR_LATENT); inputs.len()]);
    b.input_ids.push(id(p, LVR_END));
    b.seq_len += inputs.len() + 1;
    b.attention_mask = vec![1; b.seq_len];
    let h = m.decode(x, &b, Some(&img), false).unwrap().last_hidden;
    let s = h.dims()[1];
    tensor_vec(m.logits(h.slice([0..1, s - 1..s, 0..d])))
}

fn row_norms(t: &Tensor<2>) -> Vec<f32> {
    tensor_vec(t.clone().powi_scalar(2).sum_dim(1).sqrt())
}

/// The mediation test's variants feed what they say: zeros; noise of each row's hidden-state norm
/// (seeded, not the hidden state); the expert crop's region embeddings of I0 pooled to one vector
/// per step (contiguous runs of the row-major region rows averaged); and the
/// decoder really feeds each input (its logits equal a from-scratch run on those inputs).
#[test]
fn mediation_variants_feed_zeros_noise_or_the_crop_target() {
    use pearl::infer::lvr::LatentFeed;
    use pearl::infer::lvr::feed::{LatentInputs, pool_runs};
    use pearl::objective::lvr::region::region_tokens;
    let p = processor();
    let m = model(&p);
    let chats = chats();
    let prompts = encode_prompts(&p, &chats).unwrap();
    let steps = 4;
    let (merge, patch) = (p.image.merge_size, p.image.patch_size);
    let boxes: std::collections::BTreeMap<String, [f64; 4]> = chats
        .iter()
        .map(|c| {
            (
                c[1].images().next().unwrap().to_string(),
                [0.0, 0.0, 1.0, 0.5],
            )
        })
        .collect();
    let feeds = [
        LatentFeed::Own,
        LatentFeed::Zeros,
        LatentFeed::Noise { seed: 3 },
        LatentFeed::CropTarget {
            boxes: boxes.clone(),
        },
    ];
    for feed in &feeds {
        let mut dec = LatentDecoder::prefill(&m, &prompts.tokens).unwrap();
        let embeds = dec.image_embeds().unwrap().clone();
        let mut inputs = LatentInputs::new(
            feed,
            steps,
            Some(&embeds),
            &prompts.first_images,
            merge,
            patch,
        )
        .unwrap();
        let mut fed: Vec<Tensor<2>> = Vec::new();
        for step in 0..steps {
            let h = dec.last_hidden().clone();
            let x = inputs.input(step, &h).unwrap();
            assert_eq!(x.dims(), h.dims());
            let (xv, hv) = (tensor_vec(x.clone()), tensor_vec(h.clone()));
            match feed {
                LatentFeed::Own => assert_eq!(xv, hv),
                LatentFeed::Zeros => assert!(xv.iter().all(|&v| v == 0.0)),
                LatentFeed::Noise { .. } => {
                    for (a, b) in row_norms(&x).iter().zip(row_norms(&h)) {
                        assert!((a - b).abs() <= 1e-4 * b.max(1.0), "norm {a} vs {b}");
                    }
                    assert!(max_abs_diff(&xv, &hv, |_| true) > 1e-3);
                    // Seeded: the same seed gives the same noise for the same hidden state.
                    let mut again =
                        LatentInputs::new(feed, steps, None, &[], merge, patch).unwrap();
                    for k in 0..step {
                        again.input(k, &h).unwrap();
                    }
                    assert_eq!(tensor_vec(again.input(step, &h).unwrap()), xv);
                }
                LatentFeed::CropTarget { .. } => {
                    let d = h.dims()[1];
                    let all = tensor_vec(embeds.clone());
                    for (r, img) in prompts.first_images.iter().enumerate() {
                        let region =
                            region_tokens(img.grid_thw, merge, patch, [0.0, 0.0, 1.0, 0.5])
                                .unwrap();
                        // More region rows than steps: each step averages its run of rows.
                        assert!(region.len() > steps, "{img:?}: {region:?}");
                        let run = &pool_runs(&region, steps)[step];
                        assert!(!run.is_empty());
                        for j in 0..d {
                            let want = run
                                .iter()
                                .map(|&t| all[(img.first_row + t) * d + j])
                                .sum::<f32>()
                                / run.len() as f32;
                            assert!((xv[r * d + j] - want).abs() < 1e-5);
                        }
                    }
                }
            }
            fed.push(x.clone());
            dec.latent_step_with(x);
        }
        dec.feed_tokens(&[id(&p, LVR_END); 2]).unwrap();
        let got = tensor_vec(dec.logits());
        let vocab = m.vocab_size();
        for (r, chat) in chats.iter().enumerate() {
            let rows: Vec<Tensor<2>> = fed
                .iter()
                .map(|x| x.clone().slice([r..r + 1, 0..x.dims()[1]]))
                .collect();
            let want = logits_with_inputs(&m, &p, chat, &rows);
            let diff = max_abs_diff(&got[r * vocab..(r + 1) * vocab], &want, |_| true);
            assert!(diff < 1e-4, "{feed:?} row {r}: logits differ by {diff}");
        }
    }
    // A prompt without an expert crop box is a clear error naming its image.
    let e = lvr_generate_with_err(&m, &p, &chats);
    assert!(
        e.contains("no expert crop box") && e.contains("scene1.png"),
        "{e}"
    );
}

fn lvr_generate_with_err(m: &Vlm, p: &Processor, chats: &[Vec<Message>]) -> String {
    let only_first: std::collections::BTreeMap<String, [f64; 4]> = [(
        chats[0][1].images().next().unwrap().to_string(),
        [0.0, 0.0, 0.5, 0.5],
    )]
    .into();
    let feed = pearl::infer::lvr::LatentFeed::CropTarget { boxes: only_first };
    format!(
        "{:#}",
        pearl::infer::lvr::lvr_generate_with(m, p, chats, 4, 4, &feed).unwrap_err()
    )
}
