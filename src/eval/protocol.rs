//! The fixed evaluation protocol (Pearl/LVR): the prompt, the decoding budget, and how a letter is
//! read back out of the model's raw output. `docs/evaluation.md` states the same rules for users.

use crate::data::chat::{Message, Part, Role};
use crate::data::mcq::{McqItem, option_letter};
use regex::Regex;
use std::sync::LazyLock;

/// Greedy decoding with at most this many new tokens (Pearl's `eval/evaluate.py`).
pub const MAX_NEW_TOKENS: usize = 4;

/// The one-turn chat for an item: a user message with the item's images (in order), then the
/// prompt text (`McqItem::prompt`: question, lettered options, answer suffix). No system prompt:
/// the chat template supplies Qwen's default one.
pub fn chat_for(item: &McqItem) -> Vec<Message> {
    let mut content: Vec<Part> = item
        .images
        .iter()
        .map(|i| Part::Image { image: i.clone() })
        .collect();
    content.push(Part::Text {
        text: item.prompt(),
    });
    vec![Message::new(Role::User, content)]
}

/// The prompt of [`chat_for`] with `{question}` and `{option_k}` placeholders (for the protocol
/// card), made by the same code that makes real prompts.
pub fn prompt_template() -> String {
    McqItem {
        id: String::new(),
        images: vec![],
        question: "{question}".into(),
        options: vec!["{option_1}".into(), "{option_2}".into(), "...".into()],
        answer: "A".into(),
        category: String::new(),
        meta: serde_json::Value::Null,
    }
    .prompt()
}

/// The extraction rules' name with what [`extract_choice`] reads out of fixed outputs (one letter
/// each, `-` for none): any change to the rules changes it, so the protocol card tells runs read
/// by different rules apart.
pub fn extraction_rule() -> String {
    const PROBES: [&str; 18] = [
        "B",
        "(b)",
        "**C**",
        "B. blue",
        "(d) green",
        "a cat",
        "A cat",
        "I think C",
        "A or B",
        "The answer is (C).",
        "option D",
        "<answer>D</answer> B",
        "\\boxed{A}",
        "<think>A or B? C</think> D",
        "<think>A or B",
        "blue",
        "dark red",
        "",
    ];
    let options: Vec<String> = ["red", "blue", "dark red", "green"]
        .map(String::from)
        .to_vec();
    let read: String = PROBES
        .iter()
        .map(|p| extract_choice(p, &options).map_or('-', option_letter))
        .collect();
    format!("pearl extract_choice, docs/evaluation.md (probe reading {read})")
}

/// Reads the chosen option's index (into `options`) out of a raw model output, or `None` when no
/// rule applies (then the item counts as wrong). Rules, first match wins:
///
/// 1. Scope: reasoning is skipped first: if the output holds `</think>` (Qwen3 Thinking models
///    write `<think>…</think>` before the answer) only what follows the last one is read, and an
///    output that opens `<think>` without closing it (cut off while reasoning) has no answer. Then,
///    if it holds `<answer>…</answer>` only the last such span is read; else if it holds
///    `\boxed{…}` only the last box is read; otherwise the whole output.
/// 2. Bare letter: the scope, stripped of whitespace, `()*.:`, quotes and brackets, is a single
///    letter of a valid option, in either case ("B", "(b)", "B.", "**C**").
/// 3. Leading letter: the scope starts with a valid capital letter, or any-case letter in
///    parentheses, followed by a delimiter (`.`, `)`, `:`, `,`, whitespace, end): "B. blue",
///    "(b) blue", "C: the cup". A lowercase letter without parentheses is a word ("a cat"), and so
///    is a capital "A" or "I" followed by a lowercase word ("A cat", "I think").
/// 4. Phrase: "answer is X", "answer: X", "option X", "choice X" (phrase in any case, X a valid
///    capital letter or a letter in parentheses); the last such phrase wins.
/// 5. Lone letter: exactly one distinct valid capital letter stands alone (between
///    non-alphanumerics) in the scope ("I think C"), and not only as the word "A"/"I"; two
///    different letters ("A or B") are ambiguous and read as nothing.
/// 6. Option text: the scope, normalised (lowercase, alphanumerics and single spaces), equals one
///    option's normalised text; else exactly one option's text occurs in it as whole words, where an
///    option that is part of a longer matching option ("red" in "dark red") yields to the longer one.
pub fn extract_choice(raw: &str, options: &[String]) -> Option<usize> {
    let n = options.len();
    let scope = answer_scope(raw);
    let valid = |c: char| -> Option<usize> {
        let i = (c.to_ascii_uppercase() as u32).checked_sub('A' as u32)? as usize;
        (c.is_ascii_alphabetic() && i < n).then_some(i)
    };

    // 2. Bare letter.
    let bare: String = scope
        .chars()
        .filter(|c| !c.is_whitespace() && !"()*.:'\"`[]".contains(*c))
        .collect();
    let mut bare_chars = bare.chars();
    if let (Some(c), None) = (bare_chars.next(), bare_chars.next())
        && let Some(i) = valid(c)
    {
        return Some(i);
    }

    // 3. Leading letter.
    if let Some(caps) = LEADING.captures(scope) {
        let paren = caps.get(1).and_then(|m| m.as_str().chars().next());
        let capital = caps.get(2).and_then(|m| m.as_str().chars().next());
        let word_follows = caps
            .get(3)
            .is_some_and(|m| m.as_str().ends_with(|c: char| c.is_ascii_lowercase()));
        let article = word_follows && matches!(capital, Some('A' | 'I'));
        if let Some(i) = paren.or(capital).filter(|_| !article).and_then(valid) {
            return Some(i);
        }
    }

    // 4. Phrase.
    if let Some(i) = PHRASE
        .captures_iter(scope)
        .filter_map(|c| {
            c.get(1)
                .or(c.get(2))
                .and_then(|m| m.as_str().chars().next())
                .and_then(valid)
        })
        .last()
    {
        return Some(i);
    }

    // 5. Lone letter.
    let lone = lone_capitals(scope);
    let mut letters: Vec<usize> = lone.iter().filter_map(|&(c, _)| valid(c)).collect();
    letters.sort_unstable();
    letters.dedup();
    if let [i] = letters[..] {
        let only_as_word = lone
            .iter()
            .filter(|&&(c, _)| valid(c) == Some(i))
            .all(|&(_, article)| article);
        if !only_as_word {
            return Some(i);
        }
    }

    // 6. Option text.
    option_text_match(scope, options)
}

/// The letter of `extract_choice`'s answer, as stored in run records.
pub fn extract_letter(raw: &str, options: &[String]) -> Option<char> {
    extract_choice(raw, options).map(option_letter)
}

/// Where a thinking model's reasoning ends.
const THINK_END: &str = "</think>";

static ANSWER_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("static regex"));
static BOXED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\\boxed\{([^{}]*)\}").expect("static regex"));
static LEADING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^[\s*"'`]*(?:\(([A-Za-z])\)|([A-Z])([.):,]|\s+[a-z]|\s|$))"#)
        .expect("static regex")
});
static PHRASE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i:answer\s*(?:is|:)|option|choice)\s*[*:]*\s*(?:\(([A-Za-z])\)|([A-Z])\b)")
        .expect("static regex")
});
/// Capital letters standing alone (neighbours not alphanumeric), each flagged when it reads as
/// the word "A" or "I" (whitespace, then a lowercase letter). Scanned by hand because the regex
/// crate has no look-around, and matches must not consume the delimiter a neighbour needs.
fn lone_capitals(s: &str) -> Vec<(char, bool)> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = vec![];
    for (i, &c) in chars.iter().enumerate() {
        let before_ok = i == 0 || !chars[i - 1].is_alphanumeric();
        let after_ok = chars.get(i + 1).is_none_or(|n| !n.is_alphanumeric());
        if c.is_ascii_uppercase() && before_ok && after_ok {
            let next_word = chars[i + 1..].iter().find(|n| !n.is_whitespace());
            let spaced = chars.get(i + 1).is_some_and(|n| n.is_whitespace());
            let article = matches!(c, 'A' | 'I')
                && spaced
                && next_word.is_some_and(|n| n.is_ascii_lowercase());
            out.push((c, article));
        }
    }
    out
}

fn answer_scope(raw: &str) -> &str {
    let raw = match raw.rfind(THINK_END) {
        Some(at) => &raw[at + THINK_END.len()..],
        None if raw.trim_start().starts_with("<think>") => "",
        None => raw,
    };
    if let Some(m) = ANSWER_TAG.captures_iter(raw).last() {
        return m.get(1).map_or(raw, |g| g.as_str()).trim();
    }
    if let Some(m) = BOXED.captures_iter(raw).last() {
        return m.get(1).map_or(raw, |g| g.as_str()).trim();
    }
    raw.trim()
}

fn normalise(s: &str) -> String {
    let spaced: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn option_text_match(scope: &str, options: &[String]) -> Option<usize> {
    let out = normalise(scope);
    if out.is_empty() {
        return None;
    }
    let norm: Vec<String> = options.iter().map(|o| normalise(o)).collect();
    if let Some(i) = norm.iter().position(|o| *o == out) {
        return Some(i);
    }
    let padded = format!(" {out} ");
    let hits: Vec<usize> = (0..norm.len())
        .filter(|&i| !norm[i].is_empty() && padded.contains(&format!(" {} ", norm[i])))
        .collect();
    // Drop options whose text is part of another matching option's text.
    let maximal: Vec<usize> = hits
        .iter()
        .copied()
        .filter(|&i| {
            !hits.iter().any(|&j| {
                j != i
                    && norm[j].len() > norm[i].len()
                    && format!(" {} ", norm[j]).contains(&format!(" {} ", norm[i]))
            })
        })
        .collect();
    (maximal.len() == 1).then(|| maximal[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn letter(raw: &str) -> Option<char> {
        extract_letter(raw, &opts(&["red", "blue", "green", "dark red"]))
    }

    #[test]
    fn bare_and_decorated_letters() {
        for raw in [
            "B", " B\n", "(B)", "B.", "b", "(b)", "**B**", "B)", "\"B\"", "[B]",
        ] {
            assert_eq!(letter(raw), Some('B'), "{raw:?}");
        }
    }

    #[test]
    fn leading_letter_with_text() {
        assert_eq!(letter("C. green"), Some('C'));
        assert_eq!(letter("(d) dark red"), Some('D'));
        assert_eq!(letter("A: red, because"), Some('A'));
        assert_eq!(letter("D dark"), Some('D'));
    }

    /// Qwen3 Thinking models reason in `<think>…</think>` before answering: only the answer after
    /// it is read, and reasoning cut off before `</think>` reads as no answer.
    #[test]
    fn a_thinking_block_is_skipped() {
        assert_eq!(letter("<think>A or B? Not C.</think>\n\nD"), Some('D'));
        assert_eq!(letter("A or B? Not C.</think> The answer is B"), Some('B'));
        assert_eq!(
            letter("<think>first</think><think>B?</think> (c)"),
            Some('C')
        );
        assert_eq!(letter("<think>It is clearly B"), None);
        assert_eq!(letter("<think>B</think>"), None);
    }

    #[test]
    fn phrases_and_tags() {
        assert_eq!(letter("The answer is B"), Some('B'));
        assert_eq!(letter("the answer is (c)"), Some('C'));
        assert_eq!(letter("Answer: D"), Some('D'));
        assert_eq!(letter("I pick option A"), Some('A'));
        assert_eq!(
            letter("<think>A or B?</think><answer>B</answer>"),
            Some('B')
        );
        assert_eq!(letter("<answer>(c)</answer>"), Some('C'));
        assert_eq!(letter("so \\boxed{D}"), Some('D'));
        assert_eq!(letter("I think C"), Some('C'));
    }

    #[test]
    fn out_of_range_and_ambiguous_letters_are_rejected() {
        // E is not an option of a 4-option item; "A or B" names two letters.
        assert_eq!(letter("E"), None);
        assert_eq!(letter("A or B"), None);
        assert_eq!(extract_letter("C", &opts(&["yes", "no"])), None);
        assert_eq!(letter(""), None);
        assert_eq!(letter("I don't know"), None);
    }

    #[test]
    fn articles_are_not_letters() {
        // "A cat" is an article; without option text there is nothing to read.
        assert_eq!(letter("A cat sits"), None);
        // A lowercase "a" at the start is a word, but the option text still matches.
        assert_eq!(letter("a blue one"), Some('B'));
    }

    #[test]
    fn option_text_fallback() {
        assert_eq!(letter("Blue."), Some('B'));
        assert_eq!(letter("it is green"), Some('C'));
        // "dark red" contains "red": the longer option wins.
        assert_eq!(letter("dark red"), Some('D'));
        assert_eq!(letter("the dark red one"), Some('D'));
        // Two unrelated options named: ambiguous.
        assert_eq!(letter("green or blue"), None);
        // Words only, not substrings: "reddish" is not "red".
        assert_eq!(letter("reddish"), None);
    }

    #[test]
    fn chat_has_images_then_prompt() {
        let item = McqItem {
            id: "x".into(),
            images: vec!["/a.png".into(), "/b.png".into()],
            question: "Which?".into(),
            options: opts(&["u", "v"]),
            answer: "A".into(),
            category: String::new(),
            meta: serde_json::Value::Null,
        };
        let chat = chat_for(&item);
        assert_eq!(chat.len(), 1);
        assert_eq!(chat[0].role, Role::User);
        assert_eq!(chat[0].images().collect::<Vec<_>>(), ["/a.png", "/b.png"]);
        let text = chat[0].joined_text();
        assert!(
            text.starts_with("Which?\nOptions:\n(A) u\n(B) v\n"),
            "{text}"
        );
        assert!(text.ends_with(crate::data::mcq::ANSWER_SUFFIX));
        assert!(matches!(chat[0].content.last(), Some(Part::Text { .. })));
    }
}
