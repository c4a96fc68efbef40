//! The runner: evaluates a `ChatModel` over MCQ items in batches, under the fixed protocol or as
//! the tool-using agent, and writes the run directory:
//! `items.jsonl` (one `ItemRecord` per item, appended batch by batch so an interrupted run keeps
//! what it finished), `summary.json` and `summary.md`.

use super::agent::{self, AgentConfig};
use super::answerer::{ChatModel, generate_checked};
use super::protocol;
use super::record::{ItemRecord, ToolUse};
use super::stats::Bootstrap;
use super::summary::{Summary, summarize};
use crate::data::mcq::{McqItem, option_letter};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::Path;

/// How each item is answered.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The fixed protocol: one user turn, greedy, `protocol::MAX_NEW_TOKENS`.
    Direct,
    /// The tool-using baseline (`agent`).
    Tools(AgentConfig),
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Benchmark name written into the summary.
    pub bench: String,
    pub batch_size: usize,
    pub bootstrap: Bootstrap,
    /// Draw a progress bar with ETA on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// Evaluates `items` and writes the run to `out` (created if missing; an existing `items.jsonl`
/// is replaced). Returns the summary that was written.
pub fn evaluate(
    model: &mut dyn ChatModel,
    items: &[McqItem],
    mode: &Mode,
    cfg: &RunConfig,
    out: &Path,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(!items.is_empty(), "no items to evaluate");
    anyhow::ensure!(cfg.batch_size >= 1, "batch size must be at least 1");
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run directory {}", out.display()))?;
    let items_path = out.join("items.jsonl");
    let mut sink = std::io::BufWriter::new(
        std::fs::File::create(&items_path)
            .with_context(|| format!("cannot create {}", items_path.display()))?,
    );

    let bar = progress_bar(items.len(), cfg.progress);
    let mut records = Vec::with_capacity(items.len());
    for batch in items.chunks(cfg.batch_size) {
        let done = match mode {
            Mode::Direct => answer_direct(model, batch)?,
            Mode::Tools(agent_cfg) => answer_with_tools(model, batch, agent_cfg)?,
        };
        for r in &done {
            writeln!(sink, "{}", serde_json::to_string(r)?)
                .with_context(|| format!("cannot write {}", items_path.display()))?;
        }
        sink.flush()
            .with_context(|| format!("cannot write {}", items_path.display()))?;
        records.extend(done);
        let right = records.iter().filter(|r| r.correct).count();
        bar.set_message(format!(
            "acc {:.1}%",
            100.0 * right as f64 / records.len() as f64
        ));
        bar.inc(batch.len() as u64);
    }
    bar.finish();

    let (mode_name, max_new) = match mode {
        Mode::Direct => ("direct", protocol::MAX_NEW_TOKENS),
        Mode::Tools(a) => ("tools", a.max_new_tokens),
    };
    let summary = summarize(
        &records,
        &cfg.bench,
        mode_name,
        max_new,
        cfg.batch_size,
        &cfg.bootstrap,
    )?;
    let json_path = out.join("summary.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let md_path = out.join("summary.md");
    std::fs::write(&md_path, summary.to_markdown())
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    Ok(summary)
}

fn progress_bar(n: usize, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    let style = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} items [{elapsed_precise}, ETA {eta_precise}] {msg}",
    )
    .expect("static progress template");
    bar.set_style(style);
    bar
}

fn answer_direct(model: &mut dyn ChatModel, batch: &[McqItem]) -> anyhow::Result<Vec<ItemRecord>> {
    let chats: Vec<_> = batch.iter().map(protocol::chat_for).collect();
    let gens = generate_checked(model, &chats, protocol::MAX_NEW_TOKENS)?;
    Ok(batch
        .iter()
        .zip(gens)
        .map(|(item, g)| {
            let mut r = score(item, &g.text);
            (r.latency_s, r.new_tokens, r.prompt_tokens, r.image_tokens) =
                (g.seconds, g.new_tokens, g.prompt_tokens, g.image_tokens);
            r
        })
        .collect())
}

fn answer_with_tools(
    model: &mut dyn ChatModel,
    batch: &[McqItem],
    cfg: &AgentConfig,
) -> anyhow::Result<Vec<ItemRecord>> {
    let episodes = agent::run_episodes(model, batch, cfg)?;
    Ok(batch
        .iter()
        .zip(episodes)
        .map(|(item, e)| {
            let mut r = score(item, &e.final_text);
            (r.latency_s, r.new_tokens, r.prompt_tokens, r.image_tokens) =
                (e.seconds, e.new_tokens, e.prompt_tokens, e.image_tokens);
            r.tools = Some(ToolUse {
                calls: e.calls,
                valid_calls: e.valid_calls,
                on_target: e.on_target,
                errors: e.errors,
                turns: e.turns,
            });
            r
        })
        .collect())
}

/// The record of `item` answered with `raw`, cost fields zero.
pub fn score(item: &McqItem, raw: &str) -> ItemRecord {
    let choice = protocol::extract_choice(raw, &item.options);
    ItemRecord {
        id: item.id.clone(),
        category: item.category.clone(),
        pair: pair_of(item),
        prompt: item.prompt(),
        raw_output: raw.to_string(),
        parsed: choice.map(|i| option_letter(i).to_string()),
        answer: item
            .answer_index()
            .map_or_else(|| item.answer.clone(), |i| option_letter(i).to_string()),
        correct: choice.is_some() && choice == item.answer_index(),
        latency_s: 0.0,
        new_tokens: 0,
        prompt_tokens: 0,
        image_tokens: 0,
        tools: None,
    }
}

/// `meta.pair` (a string or a number), which the MMVP loader sets.
fn pair_of(item: &McqItem) -> Option<String> {
    match item.meta.get("pair")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::answerer::testing::ScriptedModel;
    use super::*;

    fn item(id: &str, q: &str, answer: &str, pair: Option<u32>) -> McqItem {
        McqItem {
            id: id.into(),
            images: vec!["/img.png".into()],
            question: q.into(),
            options: vec!["cat".into(), "dog".into()],
            answer: answer.into(),
            category: "animals".into(),
            meta: pair.map_or(
                serde_json::Value::Null,
                |p| serde_json::json!({ "pair": p }),
            ),
        }
    }

    #[test]
    fn writes_records_and_summaries() {
        let items = vec![
            item("q1", "first?", "A", Some(0)),
            item("q2", "second?", "B", Some(0)),
            item("q3", "third?", "A", Some(1)),
            item("q4", "fourth?", "(b)", Some(1)),
            item("q5", "fifth?", "A", None),
        ];
        let mut model = ScriptedModel::new("no idea")
            .script("first?", &["A"])
            .script("second?", &["(B)"])
            .script("third?", &["The answer is B"])
            .script("fourth?", &["dog"]);
        let dir = tempfile::tempdir().unwrap();
        let cfg = RunConfig {
            bench: "toy".into(),
            batch_size: 2,
            bootstrap: Bootstrap::default(),
            progress: false,
        };
        let s = evaluate(&mut model, &items, &Mode::Direct, &cfg, dir.path()).unwrap();

        // Three batches of at most two, each prompt under the protocol.
        assert_eq!(model.seen.len(), 5);
        assert!(
            model.seen[0][0]
                .joined_text()
                .ends_with(crate::data::mcq::ANSWER_SUFFIX)
        );
        let recs = super::super::record::read_run(dir.path()).unwrap();
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.id.as_str(), r.parsed.as_deref(), r.correct))
            .collect();
        assert_eq!(
            got,
            [
                ("q1", Some("A"), true),
                ("q2", Some("B"), true),
                ("q3", Some("B"), false),
                ("q4", Some("B"), true),
                ("q5", None, false)
            ]
        );
        assert_eq!(recs[3].answer, "B");
        assert_eq!(recs[0].pair.as_deref(), Some("0"));
        assert!(recs[0].latency_s > 0.0 && recs[0].image_tokens == 16);

        assert_eq!((s.overall.n, s.overall.correct), (5, 3));
        let written: Summary = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(written, s);
        assert!(
            std::fs::read_to_string(dir.path().join("summary.md"))
                .unwrap()
                .contains("| animals | 5 | 60.0 |")
        );
    }

    #[test]
    fn a_model_breaking_the_contract_is_an_error() {
        struct Short;
        impl ChatModel for Short {
            fn generate(
                &mut self,
                _: &[Vec<crate::data::chat::Message>],
                _: usize,
            ) -> anyhow::Result<Vec<super::super::answerer::Generation>> {
                Ok(vec![])
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = RunConfig {
            bench: "toy".into(),
            batch_size: 4,
            bootstrap: Bootstrap::default(),
            progress: false,
        };
        let err = evaluate(
            &mut Short,
            &[item("q", "x?", "A", None)],
            &Mode::Direct,
            &cfg,
            dir.path(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("0 generations for a batch of 1"),
            "{err}"
        );
    }
}
