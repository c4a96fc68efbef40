//! KV-cached generation on the tiny fixture model: the cache changes nothing, batching changes
//! nothing, stop tokens and budgets end sequences, sampling is reproducible.

mod common;
use burn::tensor::Device;
use common::*;
use pearl::data::chat::{Message, Part, Role};
use pearl::eval::answerer::ChatModel;
use pearl::infer::{GenerateOptions, LocalModel, Sampling, generate};
use pearl::model::VlBatch;
use pearl::processor::EncodedBatch;

fn local() -> LocalModel {
    LocalModel::load(
        &fixture_dir().join("model"),
        None,
        &Device::flex(),
        pearl::model::precision::Precision::F32,
    )
    .unwrap()
}

fn image(name: &str) -> Part {
    Part::Image {
        image: fixture_dir()
            .join("images")
            .join(name)
            .to_string_lossy()
            .into_owned(),
    }
}

fn text(t: &str) -> Part {
    Part::Text { text: t.into() }
}

/// Three prompts of different lengths: one image, a system turn and another image, text only.
fn chats() -> Vec<Vec<Message>> {
    vec![
        vec![Message::new(
            Role::User,
            vec![
                image("scene0.png"),
                text("What is the color of the small square?"),
            ],
        )],
        vec![
            Message::text(Role::System, "You are a helpful assistant."),
            Message::new(
                Role::User,
                vec![
                    image("scene1.png"),
                    text("Which circle is nearest the centre? Options: (A) red (B) blue"),
                ],
            ),
        ],
        vec![Message::text(Role::User, "Hello")],
    ]
}

fn greedy(max_new_tokens: usize, stop_tokens: Vec<u32>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: Sampling::greedy(),
        stop_tokens,
    }
}

/// Greedy decoding without a cache: the whole sequence through `forward` at every step, positions
/// recomputed from scratch, the last position's logits argmaxed.
fn recompute_greedy(m: &LocalModel, enc: &EncodedBatch, steps: usize) -> Vec<u32> {
    assert_eq!(enc.batch, 1);
    let mut batch = enc.to_vl();
    let mut out = vec![];
    for _ in 0..steps {
        let o = m.model.forward(&batch, false).unwrap();
        let logits = tensor_vec(m.model.logits(o.last_hidden));
        let v = logits.len() / batch.seq_len;
        let last = &logits[(batch.seq_len - 1) * v..];
        let tok = pearl::infer::sampling::argmax(last);
        out.push(tok);
        batch = VlBatch {
            input_ids: [batch.input_ids.clone(), vec![i64::from(tok)]].concat(),
            attention_mask: [batch.attention_mask.clone(), vec![1]].concat(),
            seq_len: batch.seq_len + 1,
            ..batch
        };
    }
    out
}

#[test]
fn cached_decoding_equals_recomputing_the_sequence() {
    let m = local();
    for chat in [&chats()[0], &chats()[1]] {
        let enc = m.encode(std::slice::from_ref(chat)).unwrap();
        assert!(!enc.image_grid_thw.is_empty());
        let cached = generate(&m.model, &enc.to_vl(), &greedy(8, vec![])).unwrap();
        assert_eq!(cached.sequences[0].tokens, recompute_greedy(&m, &enc, 8));
        assert!(!cached.sequences[0].stopped);
    }
}

#[test]
fn a_batch_gives_each_prompt_what_it_gives_alone() {
    let m = local();
    let chats = chats();
    let enc = m.encode(&chats).unwrap();
    assert!(enc.lengths[0] != enc.lengths[1] && enc.lengths[1] != enc.lengths[2]);
    let batched = generate(&m.model, &enc.to_vl(), &greedy(6, vec![])).unwrap();
    for (i, chat) in chats.iter().enumerate() {
        let one = m.encode(std::slice::from_ref(chat)).unwrap();
        let alone = generate(&m.model, &one.to_vl(), &greedy(6, vec![])).unwrap();
        assert_eq!(batched.sequences[i], alone.sequences[0], "prompt {i}");
    }
    assert_eq!(batched.timing.step_seconds.len(), 5);
}

#[test]
fn stop_tokens_end_one_sequence_and_the_others_go_on() {
    let m = local();
    let enc = m.encode(&chats()[..2]).unwrap();
    let free = generate(&m.model, &enc.to_vl(), &greedy(6, vec![])).unwrap();
    let (a, b) = (&free.sequences[0].tokens, &free.sequences[1].tokens);
    // Stop on prompt 0's third token, provided prompt 1 never produces it.
    let stop = a[2];
    assert!(
        !b.contains(&stop) && !a[..2].contains(&stop),
        "fixture changed: pick another stop token"
    );
    let out = generate(&m.model, &enc.to_vl(), &greedy(6, vec![stop])).unwrap();
    assert_eq!(out.sequences[0].tokens, a[..3].to_vec());
    assert!(out.sequences[0].stopped);
    // Prompt 1 continues alone after prompt 0 left the batch (its cache rows are dropped).
    assert_eq!(&out.sequences[1].tokens, b);
    assert!(!out.sequences[1].stopped);
}

#[test]
fn the_model_dirs_stop_tokens_are_used_and_removed_from_the_text() {
    let mut m = local();
    // generation_config.json of the fixture lists 574 (<|im_end|>) and 572.
    assert_eq!(m.stop_tokens, vec![574, 572]);
    let enc = m.encode(&chats()[2..]).unwrap();
    let free = generate(&m.model, &enc.to_vl(), &greedy(3, vec![])).unwrap();
    let first = free.sequences[0].tokens[0];
    m.stop_tokens = vec![first];
    let g = m.generate(&chats()[2..], 3).unwrap();
    assert_eq!(g[0].new_tokens, 1);
    assert_eq!(g[0].text, "", "the stop token is not part of the answer");
}

#[test]
fn sampling_is_reproducible_and_near_zero_temperature_is_greedy() {
    let m = local();
    let enc = m.encode(&chats()[..1]).unwrap();
    let batch = enc.to_vl();
    let sampled = |temperature: f32, seed: u64| {
        let opts = GenerateOptions {
            max_new_tokens: 8,
            sampling: Sampling {
                temperature,
                top_k: None,
                top_p: Some(0.95),
                seed,
            },
            stop_tokens: vec![],
        };
        generate(&m.model, &batch, &opts).unwrap().sequences[0]
            .tokens
            .clone()
    };
    let greedy_tokens = generate(&m.model, &batch, &greedy(8, vec![]))
        .unwrap()
        .sequences[0]
        .tokens
        .clone();
    // Random weights give nearly flat logits: temperature 1.5 samples far from the argmax.
    let a = sampled(1.5, 7);
    assert_eq!(a, sampled(1.5, 7));
    assert_ne!(a, sampled(1.5, 8));
    assert_ne!(a, greedy_tokens);
    assert_eq!(sampled(1e-6, 7), greedy_tokens);
}

#[test]
fn local_model_reports_tokens_and_respects_the_budget() {
    let mut m = local();
    m.stop_tokens = vec![];
    let chats = chats();
    let enc = m.encode(&chats).unwrap();
    let gens = m.generate(&chats, 4).unwrap();
    assert_eq!(gens.len(), 3);
    for (i, g) in gens.iter().enumerate() {
        assert_eq!(g.new_tokens, 4);
        assert_eq!(g.prompt_tokens, enc.lengths[i]);
        assert!(g.seconds > 0.0);
    }
    // scene0 (200x150) and scene1 (317x233) at the fixture's pixel budget; no image in prompt 3.
    let grids: Vec<usize> = enc
        .image_grid_thw
        .iter()
        .map(|g| g.iter().product::<usize>() / 4)
        .collect();
    assert_eq!(gens[0].image_tokens, grids[0]);
    assert_eq!(gens[1].image_tokens, grids[1]);
    assert_eq!(gens[2].image_tokens, 0);
    assert!(
        m.generate(&chats, 0)
            .unwrap()
            .iter()
            .all(|g| g.new_tokens == 0)
    );
}

#[test]
fn bad_inputs_are_errors() {
    let mut m = local();
    let missing = vec![vec![Message::new(
        Role::User,
        vec![image("no_such.png"), text("?")],
    )]];
    let err = format!("{:#}", m.generate(&missing, 2).unwrap_err());
    assert!(err.contains("no_such.png"), "{err}");
    assert!(
        LocalModel::load(
            &fixture_dir().join("images"),
            None,
            &Device::flex(),
            pearl::model::precision::Precision::F32
        )
        .is_err(),
        "a directory without a model"
    );
    let bad_sampling = GenerateOptions {
        max_new_tokens: 2,
        sampling: Sampling {
            temperature: -1.0,
            ..Sampling::greedy()
        },
        stop_tokens: vec![],
    };
    let enc = m.encode(&chats()[2..]).unwrap();
    assert!(generate(&m.model, &enc.to_vl(), &bad_sampling).is_err());
}

/// Qwen3-VL (its family chosen by the model directory): cached decoding, whose prefill adds the
/// DeepStack features, gives the tokens of recomputing the whole sequence at every step, alone
/// and in a padded batch.
#[test]
fn qwen3_cached_decoding_equals_recomputing_the_sequence() {
    let dir = qwen3_fixture_dir();
    let m = LocalModel::load(
        &dir.join("model"),
        None,
        &Device::flex(),
        pearl::model::precision::Precision::F32,
    )
    .unwrap();
    let image = |name: &str| Part::Image {
        image: dir.join("images").join(name).to_string_lossy().into_owned(),
    };
    let chats = vec![
        vec![Message::new(
            Role::User,
            vec![
                image("scene0.png"),
                text("What is the color of the square?"),
            ],
        )],
        vec![Message::new(
            Role::User,
            vec![
                image("scene1.png"),
                text("Which circle is nearest the centre?"),
            ],
        )],
    ];
    let mut alone = vec![];
    for chat in &chats {
        let enc = m.encode(std::slice::from_ref(chat)).unwrap();
        let cached = generate(&m.model, &enc.to_vl(), &greedy(6, vec![])).unwrap();
        assert_eq!(cached.sequences[0].tokens, recompute_greedy(&m, &enc, 6));
        alone.push(cached.sequences[0].tokens.clone());
    }
    let enc = m.encode(&chats).unwrap();
    let both = generate(&m.model, &enc.to_vl(), &greedy(6, vec![])).unwrap();
    for (i, s) in both.sequences.iter().enumerate() {
        assert_eq!(s.tokens, alone[i], "prompt {i} in a batch");
    }
}
