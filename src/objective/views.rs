//! The three views Pearl derives from one expert chat, and the full view's labels.
//!
//! - full view: the whole chat; next-token loss on assistant turns;
//! - input view: system + first user turn, `<|predictor_K|>...<|predictor_1|>` appended as a text
//!   item; its embedding predicts the trajectory's;
//! - trajectory view: the whole chat with the first user turn reduced to its image(s); its
//!   embedding (stop-gradient) is the target.
//!
//! A view's embedding is the last-layer hidden state at index `length - 2`: the `<|im_end|>` that
//! closes it (the template ends every turn with `<|im_end|>\n`).

use super::Supervise;
use crate::data::chat::{Message, Part, Role};
use crate::processor::tokenizer::predictor_token;
use anyhow::{Context, Result, bail};

/// Index of the first user turn: the one holding the question image and the question.
fn first_user(chat: &[Message]) -> Result<usize> {
    chat.iter()
        .position(|m| m.role == Role::User)
        .context("the chat has no user turn")
}

/// System + first user turn, with the K predictor tokens appended as a text item.
pub fn input_view(chat: &[Message], predictors: usize) -> Result<Vec<Message>> {
    let u = first_user(chat)?;
    let mut view = chat[..=u].to_vec();
    let tokens: String = (1..=predictors).rev().map(predictor_token).collect();
    view[u].content.push(Part::Text { text: tokens });
    Ok(view)
}

/// The whole chat with the first user turn reduced to its image(s).
pub fn trajectory_view(chat: &[Message]) -> Result<Vec<Message>> {
    let u = first_user(chat)?;
    let mut view = chat.to_vec();
    view[u].content.retain(|p| matches!(p, Part::Image { .. }));
    if view[u].content.is_empty() {
        bail!("the first user turn has no image, so the trajectory view would be empty");
    }
    Ok(view)
}

/// Token ids that open and close chat turns, as the Qwen chat template writes them.
#[derive(Debug, Clone)]
pub struct TurnTokens {
    pub im_start: i64,
    /// Ids of `assistant\n`, the header that follows `<|im_start|>` in an assistant turn.
    pub assistant_header: Vec<i64>,
}

impl TurnTokens {
    /// The ids of a Qwen tokenizer.
    pub fn of(tok: &crate::processor::QwenTokenizer) -> Result<Self> {
        Ok(Self {
            im_start: i64::from(tok.token_id("<|im_start|>")?),
            assistant_header: tok
                .encode("assistant\n")?
                .into_iter()
                .map(i64::from)
                .collect(),
        })
    }
}

/// Labels of the full view (`-100` = not supervised): an assistant turn's text plus the
/// `<|im_end|>\n` that closes it, so the model learns to stop. Tokens of one turn end where the
/// next `<|im_start|>` begins (special tokens split tokenization, so turn boundaries are token
/// boundaries).
pub fn assistant_labels(ids: &[i64], turns: &TurnTokens, policy: Supervise) -> Vec<i64> {
    let starts: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == turns.im_start)
        .map(|(i, _)| i)
        .collect();
    let h = &turns.assistant_header;
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let body = s + 1 + h.len();
        if body <= ids.len() && ids[s + 1..body] == h[..] {
            let end = starts.get(k + 1).copied().unwrap_or(ids.len());
            if body < end {
                spans.push((body, end));
            }
        }
    }
    if policy == Supervise::LastAssistant && spans.len() > 1 {
        spans.drain(..spans.len() - 1);
    }
    let mut labels = vec![-100i64; ids.len()];
    for (a, b) in spans {
        labels[a..b].copy_from_slice(&ids[a..b]);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(role: Role, t: &str) -> Message {
        Message::new(role, vec![Part::Text { text: t.into() }])
    }

    fn chat() -> Vec<Message> {
        vec![
            text(Role::System, "sys"),
            Message::new(
                Role::User,
                vec![
                    Part::Image {
                        image: "a.png".into(),
                    },
                    Part::Text { text: "Q?".into() },
                ],
            ),
            text(Role::Assistant, "look"),
            Message::new(
                Role::User,
                vec![Part::Image {
                    image: "b.png".into(),
                }],
            ),
            text(Role::Assistant, "(A)"),
        ]
    }

    #[test]
    fn input_view_keeps_question_and_appends_predictors_in_descending_order() {
        let v = input_view(&chat(), 3).unwrap();
        assert_eq!(v.len(), 2);
        let Part::Text { text } = v[1].content.last().unwrap() else {
            panic!("last part is not text")
        };
        assert_eq!(text, "<|predictor_3|><|predictor_2|><|predictor_1|>");
        assert_eq!(v[1].content.len(), 3);
    }

    #[test]
    fn trajectory_view_drops_only_the_question_text() {
        let v = trajectory_view(&chat()).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(
            v[1].content,
            vec![Part::Image {
                image: "a.png".into()
            }]
        );
        assert_eq!(v[2..], chat()[2..]);
    }

    #[test]
    fn a_chat_without_first_image_has_no_trajectory_view() {
        let c = vec![text(Role::User, "hi"), text(Role::Assistant, "yo")];
        assert!(trajectory_view(&c).is_err());
    }

    #[test]
    fn labels_cover_assistant_bodies_and_their_closing_tokens() {
        // <s> user \n q <e> \n <s> assistant \n a b <e> \n <s> assistant \n c <e> \n
        let (s, e, nl, asst, user) = (1, 2, 3, 4, 5);
        let ids = [
            s, user, nl, 10, e, nl, s, asst, nl, 11, 12, e, nl, s, asst, nl, 13, e, nl,
        ];
        let turns = TurnTokens {
            im_start: s,
            assistant_header: vec![asst, nl],
        };
        let all = assistant_labels(&ids, &turns, Supervise::AllAssistant);
        let sup: Vec<usize> = (0..ids.len()).filter(|&i| all[i] != -100).collect();
        assert_eq!(sup, [9, 10, 11, 12, 16, 17, 18]);
        let last = assistant_labels(&ids, &turns, Supervise::LastAssistant);
        let sup: Vec<usize> = (0..ids.len()).filter(|&i| last[i] != -100).collect();
        assert_eq!(sup, [16, 17, 18]);
    }
}
