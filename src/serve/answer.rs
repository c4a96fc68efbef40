//! The answer of one request as its tokens arrive: decoded incrementally with the tokenizer's
//! own streaming decoder (`tokenizers::DecodeStream`, which holds back the bytes of a character
//! split across byte-level tokens), ended at the first stop string, and released to a streaming
//! client only as far as no stop string can still begin in it.

use crate::infer::stop::StopStrings;
use crate::processor::QwenTokenizer;
use tokenizers::{
    DecodeStream, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper,
};

type Decoder<'t> = DecodeStream<
    't,
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

pub struct Answer<'t> {
    decoder: Decoder<'t>,
    stop_tokens: &'t [u32],
    stops: &'t StopStrings,
    /// The text decoded so far; once a stop string is found, the text before it.
    text: String,
    /// Bytes of `text` already released.
    released: usize,
    stopped: bool,
    /// The incremental decoder failed (its output would no longer be a prefix of the answer):
    /// nothing more is released until [`Answer::finish`].
    broken: bool,
}

/// What is left when generation ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    /// The whole answer, cut before the first stop string.
    pub text: String,
    /// The part of `text` not released yet (empty when all of it was).
    pub rest: String,
    /// A stop string ended the answer.
    pub stop_string: bool,
}

impl<'t> Answer<'t> {
    /// Special tokens are skipped, as in the answer's complete decode.
    pub fn new(
        tokenizer: &'t QwenTokenizer,
        stop_tokens: &'t [u32],
        stops: &'t StopStrings,
    ) -> Self {
        Self {
            decoder: tokenizer.inner().decode_stream(true),
            stop_tokens,
            stops,
            text: String::new(),
            released: 0,
            stopped: false,
            broken: false,
        }
    }

    /// Feeds one generated token; `false` once a stop string has ended the answer (generation
    /// should stop).
    pub fn push(&mut self, token: u32) -> bool {
        // A stop token ends generation and is not part of the answer's text.
        if self.stopped || self.broken || self.stop_tokens.contains(&token) {
            return !self.stopped;
        }
        match self.decoder.step(token) {
            Ok(Some(piece)) => {
                let seen = self.text.len();
                self.text.push_str(&piece);
                if let Some(at) = self.stops.find(&self.text, seen) {
                    self.text.truncate(at);
                    self.stopped = true;
                }
            }
            Ok(None) => {}
            Err(_) => self.broken = true,
        }
        !self.stopped
    }

    /// Text that is final and was not released before: what a streaming client may be sent now.
    pub fn release(&mut self) -> Option<String> {
        if self.broken {
            return None;
        }
        let settled = match self.stopped {
            true => self.text.len(),
            false => self.stops.settled_len(&self.text),
        };
        (settled > self.released).then(|| {
            let delta = self.text[self.released..settled].to_string();
            self.released = settled;
            delta
        })
    }

    /// Ends the answer given the complete decode of every generated token (the reference: it
    /// also holds a trailing character the incremental decoder was still waiting to complete).
    pub fn finish(self, full_text: &str) -> Final {
        let cut = self.stops.find(full_text, 0);
        let text = full_text[..cut.unwrap_or(full_text.len())].to_string();
        let released = &self.text[..self.released];
        // What was released is a prefix of the answer (the decoders agree, and release stops
        // short of any stop string); if they ever disagree, nothing more can be sent coherently.
        let rest = match text.strip_prefix(released) {
            Some(rest) => rest.to_string(),
            None => String::new(),
        };
        Final {
            text,
            rest,
            stop_string: cut.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tokenizer() -> QwenTokenizer {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny/model");
        QwenTokenizer::from_dir(&dir).unwrap()
    }

    /// Streams `tokens` through an `Answer`: the released chunks, then the final state.
    fn stream(tok: &QwenTokenizer, tokens: &[u32], stops: &StopStrings) -> (Vec<String>, Final) {
        let mut answer = Answer::new(tok, &[], stops);
        let mut chunks = vec![];
        for &t in tokens {
            let more = answer.push(t);
            chunks.extend(answer.release());
            if !more {
                break;
            }
        }
        let full = tok.decode(tokens, true).unwrap();
        let end = answer.finish(&full);
        chunks.extend((!end.rest.is_empty()).then(|| end.rest.clone()));
        (chunks, end)
    }

    #[test]
    fn characters_split_across_tokens_stream_whole() {
        let tok = tokenizer();
        let text = "Voilà: 世界 😀 € done";
        let tokens = tok.encode(text).unwrap();
        // The fixture's byte-level BPE has no whole token for these characters: each takes
        // several, so a naive per-token decode would emit U+FFFD halves.
        for ch in ["à", "界", "😀", "€"] {
            let n = tok.encode(ch).unwrap().len();
            assert!(
                n >= 2,
                "{ch:?} is {n} token(s): pick a character that spans tokens"
            );
        }
        let (chunks, end) = stream(&tok, &tokens, &StopStrings::default());
        assert_eq!(chunks.concat(), text);
        assert_eq!(end.text, text);
        assert!(chunks.len() > 3, "streamed in pieces: {chunks:?}");
        for c in &chunks {
            assert!(
                !c.contains('\u{FFFD}'),
                "a chunk holds half a character: {chunks:?}"
            );
        }
        assert!(
            end.rest.is_empty(),
            "everything was released while streaming"
        );
    }

    #[test]
    fn a_stop_string_ends_the_answer_and_is_never_released() {
        let tok = tokenizer();
        let tokens = tok.encode("alpha beta<END>gamma").unwrap();
        let stops = StopStrings::new(vec!["<END>".into(), "zzz".into()]).unwrap();
        let mut answer = Answer::new(&tok, &[], &stops);
        let mut released = String::new();
        let mut fed = 0;
        for &t in &tokens {
            fed += 1;
            let more = answer.push(t);
            released += &answer.release().unwrap_or_default();
            assert!(
                !released.contains('<'),
                "released the start of a stop string: {released:?}"
            );
            if !more {
                break;
            }
        }
        assert!(
            fed < tokens.len(),
            "generation stops at the stop string, not after gamma"
        );
        let end = answer.finish(&tok.decode(&tokens[..fed], true).unwrap());
        assert_eq!(end.text, "alpha beta");
        assert!(end.stop_string);
        assert_eq!(released + &end.rest, "alpha beta");

        // The held-back start of a stop string that never completes is released at the end.
        let tokens = tok.encode("alpha <EN").unwrap();
        let (chunks, end) = stream(&tok, &tokens, &stops);
        assert_eq!(chunks.concat(), "alpha <EN");
        assert_eq!(chunks.last().unwrap(), "<EN", "{chunks:?}");
        assert!(!end.stop_string);
    }

    #[test]
    fn a_stop_token_is_not_text() {
        let tok = tokenizer();
        // A stop token that is an ordinary token (a generation_config may name any id).
        let bang = tok.encode("!").unwrap();
        assert_eq!(bang.len(), 1);
        let stops = StopStrings::default();
        let mut answer = Answer::new(&tok, &bang, &stops);
        for t in tok.encode("ok").unwrap() {
            assert!(answer.push(t));
        }
        answer.push(bang[0]);
        assert_eq!(answer.release().as_deref(), Some("ok"));
        assert_eq!(answer.release(), None);
    }
}
