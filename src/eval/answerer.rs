//! The seam between the evaluation harness and a model: batched chat generation.
//!
//! Contract for image references: every `Part::Image` the harness passes is either an absolute
//! file path or a `data:` URI, never a relative path. The benchmark loaders resolve relative
//! references (and write embedded image bytes to a cache directory) before items reach the
//! runner, and the tool agent saves its crops as absolute paths, so an implementation can call
//! `ImageSource::resolve(reference, Path::new("/"))` without knowing where a benchmark lives.

use crate::data::chat::Message;

/// What one prompt of a batch produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    /// The decoded new tokens, special tokens (stop tokens) removed.
    pub text: String,
    /// Tokens generated (stop token included if one was produced).
    pub new_tokens: usize,
    /// Tokens of the prompt, image placeholders included.
    pub prompt_tokens: usize,
    /// How many of `prompt_tokens` are image tokens (after the vision merger).
    pub image_tokens: usize,
    /// Wall time attributed to this prompt. With batched decoding an implementation reports the
    /// batch's wall time for each of its prompts (what a user of that batch waited); latency
    /// comparisons should therefore be run with batch size 1.
    pub seconds: f64,
}

/// A chat model that completes a batch of conversations greedily (the evaluation protocol is
/// greedy; sampling, if an implementation offers it, is configured outside this trait).
pub trait ChatModel {
    /// Completes each conversation with one assistant turn of at most `max_new_tokens` tokens.
    /// Returns exactly one `Generation` per chat, in order.
    fn generate(
        &mut self,
        chats: &[Vec<Message>],
        max_new_tokens: usize,
    ) -> anyhow::Result<Vec<Generation>>;
}

impl<M: ChatModel + ?Sized> ChatModel for Box<M> {
    fn generate(
        &mut self,
        chats: &[Vec<Message>],
        max_new_tokens: usize,
    ) -> anyhow::Result<Vec<Generation>> {
        (**self).generate(chats, max_new_tokens)
    }
}

/// Calls `model.generate` and checks the one-generation-per-chat part of the contract, so a
/// faulty implementation fails loudly instead of silently misaligning answers with items.
pub fn generate_checked(
    model: &mut dyn ChatModel,
    chats: &[Vec<Message>],
    max_new_tokens: usize,
) -> anyhow::Result<Vec<Generation>> {
    let out = model.generate(chats, max_new_tokens)?;
    anyhow::ensure!(
        out.len() == chats.len(),
        "model returned {} generations for a batch of {} chats",
        out.len(),
        chats.len()
    );
    Ok(out)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Scripted fake models shared by the harness's unit tests.
    use super::*;
    use std::collections::VecDeque;

    /// Answers each call from a queue of scripted replies keyed by the first text part of the
    /// chat's first user message (so batching order does not matter); records every chat seen.
    pub struct ScriptedModel {
        pub replies: std::collections::HashMap<String, VecDeque<String>>,
        pub seen: Vec<Vec<Message>>,
        pub default_reply: String,
    }

    impl ScriptedModel {
        pub fn new(default_reply: &str) -> Self {
            Self {
                replies: Default::default(),
                seen: vec![],
                default_reply: default_reply.into(),
            }
        }
        /// Replies for the chat whose prompt text contains `key`, in order.
        pub fn script(mut self, key: &str, replies: &[&str]) -> Self {
            self.replies
                .insert(key.into(), replies.iter().map(|s| s.to_string()).collect());
            self
        }
    }

    impl ChatModel for ScriptedModel {
        fn generate(
            &mut self,
            chats: &[Vec<Message>],
            _max: usize,
        ) -> anyhow::Result<Vec<Generation>> {
            let mut out = vec![];
            for chat in chats {
                self.seen.push(chat.clone());
                let prompt = chat
                    .iter()
                    .map(|m| m.joined_text())
                    .collect::<Vec<_>>()
                    .join("\n");
                let reply = self
                    .replies
                    .iter_mut()
                    .find(|(k, _)| prompt.contains(k.as_str()))
                    .and_then(|(_, q)| q.pop_front())
                    .unwrap_or_else(|| self.default_reply.clone());
                let images = chat.iter().map(|m| m.images().count()).sum::<usize>();
                out.push(Generation {
                    new_tokens: reply.split_whitespace().count().max(1),
                    prompt_tokens: prompt.split_whitespace().count() + 16 * images,
                    image_tokens: 16 * images,
                    seconds: 0.01,
                    text: reply,
                });
            }
            Ok(out)
        }
    }
}
