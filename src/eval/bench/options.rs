//! Splitting a question that carries its options inline, "Question?\n(A) x\n(B) y\nSuffix" (V*'s
//! HF `text`) or "(a) x (b) y" (MMVP's `Options`), into the question and the option texts.

use regex::Regex;
use std::sync::LazyLock;

static MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\(([A-Za-z])\)").expect("static regex"));

/// Finds the markers "(A)", "(B)", ... (or "(a)", "(b)", ...) in order, each at the start of the
/// text or after whitespace. Returns the text before the first marker (trimmed) and each
/// option's text; the last option ends at the end of its line, so a trailing instruction line
/// ("Answer with the option's letter...") is dropped. `None` when fewer than two markers are
/// found in sequence.
pub fn split_lettered(text: &str) -> Option<(String, Vec<String>)> {
    let mut marks: Vec<(usize, usize)> = vec![];
    let mut expect_lower: Option<bool> = None;
    for m in MARKER.find_iter(text) {
        let letter = text[m.start() + 1..].chars().next()?;
        let lower = letter.is_ascii_lowercase();
        let want = (if lower { b'a' } else { b'A' } + marks.len() as u8) as char;
        let starts_token = m.start() == 0 || text[..m.start()].ends_with(char::is_whitespace);
        if letter == want && starts_token && expect_lower.is_none_or(|l| l == lower) {
            expect_lower = Some(lower);
            marks.push((m.start(), m.end()));
        }
    }
    if marks.len() < 2 {
        return None;
    }
    let question = text[..marks[0].0].trim().to_string();
    let mut options = vec![];
    for (k, &(_, end)) in marks.iter().enumerate() {
        let stop = match marks.get(k + 1) {
            Some(&(next, _)) => next,
            None => text[end..].find('\n').map_or(text.len(), |n| end + n),
        };
        options.push(text[end..stop].trim().to_string());
    }
    Some((question, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_with_suffix() {
        let t = "What is the color of the cup?\n(A) red\n(B) dark blue\n(C) green\nAnswer with the option's letter from the given choices directly.";
        let (q, o) = split_lettered(t).unwrap();
        assert_eq!(q, "What is the color of the cup?");
        assert_eq!(o, ["red", "dark blue", "green"]);
    }

    #[test]
    fn inline_lowercase() {
        let (q, o) = split_lettered("(a) Open (b) Closed").unwrap();
        assert_eq!(q, "");
        assert_eq!(o, ["Open", "Closed"]);
        let (q, o) = split_lettered("Is it on? (A) yes (B) no").unwrap();
        assert_eq!((q.as_str(), o.len()), ("Is it on?", 2));
    }

    #[test]
    fn out_of_sequence_markers_are_text() {
        // "(b)" inside option text after "(B)" of another case, and "(A)" glued to a word.
        let (_, o) = split_lettered("Q (A) a(B) (B) the (c) one").unwrap();
        assert_eq!(o, ["a(B)", "the (c) one"]);
        assert!(split_lettered("only (A) one").is_none());
        assert!(split_lettered("no options").is_none());
    }
}
