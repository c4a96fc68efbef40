//! `pearl bench train --seq-len T`: the benchmark's trajectories lengthened to a sequence length
//! of the paper's scale (3-8k tokens), so that memory and step time can be measured against `T`.
//!
//! Filler words go into each trajectory's first user turn, after its images and before its
//! question: the full view and the input view (what the JEPA loss encodes) grow to `T`, the
//! trajectory view and the supervised answer stay as they are. The images stay, so the vision
//! tower's cost is the data's own at every `T`.

use crate::data::chat::{Message, Part, Role};
use crate::objective::batch::Example;
use crate::objective::{ObjectiveConfig, TrainBatch};
use crate::processor::Processor;
use anyhow::{Context, Result, bail, ensure};
use std::path::Path;

/// The filler, one word (and, with Qwen's tokenizer, one token) per repetition.
const WORD: &str = " data";

/// `chat` with `words` filler words in its first user turn (a text part before its first text).
pub fn lengthened(chat: &[Message], words: usize) -> Result<Vec<Message>> {
    let mut chat = chat.to_vec();
    let user = chat
        .iter_mut()
        .find(|m| m.role == Role::User)
        .context("a trajectory without a user turn")?;
    let at = user
        .content
        .iter()
        .position(|p| matches!(p, Part::Text { .. }))
        .unwrap_or(user.content.len());
    let filler = Part::Text {
        text: format!("{}\n", WORD.repeat(words)),
    };
    user.content.insert(at, filler);
    Ok(chat)
}

/// The full view's length (the batch's padded sequence length) of `chats` with `words` filler
/// words each.
fn full_len(
    processor: &Processor,
    chats: &[Vec<Message>],
    ids: &[String],
    base_dir: &Path,
    words: usize,
) -> Result<usize> {
    let long: Vec<Vec<Message>> = chats
        .iter()
        .map(|c| lengthened(c, words))
        .collect::<Result<_>>()?;
    let examples: Vec<Example> = long
        .iter()
        .zip(ids)
        .map(|(chat, id)| Example { id, chat, base_dir })
        .collect();
    let batch = TrainBatch::build(processor, &examples, &ObjectiveConfig::sft())?;
    Ok(batch.full.seq_len)
}

/// How many filler words bring the longest chat's full view to `target` tokens (to within a
/// token or two: a word's tokens are measured, not assumed). Refuses a `target` shorter than the
/// data as it is.
pub fn words_for(
    processor: &Processor,
    chats: &[Vec<Message>],
    ids: &[String],
    base_dir: &Path,
    target: usize,
) -> Result<usize> {
    const PROBE: usize = 64;
    let base = full_len(processor, chats, ids, base_dir, 0)?;
    ensure!(
        target >= base,
        "--seq-len {target} is shorter than the data's own {base} tokens"
    );
    let probe = full_len(processor, chats, ids, base_dir, PROBE)?;
    if probe <= base {
        bail!("the filler {WORD:?} adds no tokens with this tokenizer");
    }
    let per_word = (probe - base) as f64 / PROBE as f64;
    Ok(((target - base) as f64 / per_word).round() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::trajectory::load_jsonl;

    /// The fixture's trajectories lengthened to 100 tokens past their own length land on it
    /// (within a token per example), and a target below their length is refused.
    #[test]
    fn words_for_reaches_the_target_length() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny");
        let mut processor = Processor::from_dir(&fixture.join("model")).unwrap();
        processor.tokenizer.add_pearl_tokens();
        let file = load_jsonl(&fixture.join("expected/pearl_trajectories.jsonl")).unwrap();
        let chats: Vec<Vec<Message>> = file
            .items
            .iter()
            .map(|n| n.trajectory.messages.clone())
            .collect();
        let ids: Vec<String> = file.items.iter().map(|n| n.trajectory.id.clone()).collect();
        let base = full_len(&processor, &chats, &ids, &file.base_dir, 0).unwrap();
        let target = base + 100;
        let words = words_for(&processor, &chats, &ids, &file.base_dir, target).unwrap();
        let got = full_len(&processor, &chats, &ids, &file.base_dir, words).unwrap();
        assert!(
            got.abs_diff(target) <= 2,
            "{got} tokens for a target of {target}"
        );
        let e = words_for(&processor, &chats, &ids, &file.base_dir, base - 1).unwrap_err();
        assert!(format!("{e:#}").contains("shorter than the data"), "{e:#}");
    }

    #[test]
    fn filler_goes_before_the_first_users_question() {
        let chat = vec![
            Message::text(Role::System, "sys"),
            Message::new(
                Role::User,
                vec![
                    Part::Image {
                        image: "a.png".into(),
                    },
                    Part::Text { text: "Q?".into() },
                ],
            ),
            Message::text(Role::Assistant, "A"),
        ];
        let long = lengthened(&chat, 3).unwrap();
        assert_eq!(long[0], chat[0]);
        assert_eq!(long[2], chat[2]);
        assert_eq!(
            long[1].content,
            vec![
                Part::Image {
                    image: "a.png".into()
                },
                Part::Text {
                    text: " data data data\n".into()
                },
                Part::Text { text: "Q?".into() },
            ]
        );
        let e = lengthened(&chat[..1], 3).expect_err("no user turn");
        assert!(format!("{e:#}").contains("user turn"), "{e:#}");
    }
}
