//! What answering costs Pearl-style (one turn, the protocol's 4 tokens) versus through tool calls,
//! on the same expert trajectories. The tool-using side is replayed: for each assistant turn of
//! a trajectory (rendered with its `<tool_call>` markup) the model prefills the conversation so far
//! and decodes as many tokens as that turn has, exactly what `pearl eval --agent tools` makes a
//! tool-using model do when it follows the trajectory. Random weights cannot choose those turns
//! themselves, but they cost the same arithmetic as trained ones, so the latency is real.

use super::median;
use crate::data::chat::{Message, Part, Role};
use crate::data::trajectory::load_jsonl;
use crate::eval::answerer::ChatModel;
use crate::infer::LocalModel;
use anyhow::{Context, ensure};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct ItemCost {
    pub id: String,
    pub direct_seconds: f64,
    pub direct_prompt_tokens: usize,
    pub tool_seconds: f64,
    /// Assistant turns replayed (tool calls + the answer).
    pub tool_turns: usize,
    pub tool_new_tokens: usize,
    /// Prompt of the last turn (the longest context, crops included).
    pub tool_prompt_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnswerCostReport {
    pub trajectories: String,
    pub answer_tokens: usize,
    pub runs: usize,
    pub items: Vec<ItemCost>,
    pub median_direct_seconds: f64,
    pub median_tool_seconds: f64,
}

/// Times every trajectory of `path` both ways; each time is the median of `runs` runs after one
/// warm-up pass.
pub fn run(
    model: &mut LocalModel,
    path: &Path,
    answer_tokens: usize,
    runs: usize,
) -> anyhow::Result<AnswerCostReport> {
    ensure!(runs >= 1, "need at least one run");
    let file = load_jsonl(path)?;
    ensure!(
        !file.items.is_empty(),
        "{} holds no trajectories",
        path.display()
    );
    let mut items = Vec::with_capacity(file.items.len());
    for n in &file.items {
        let t = &n.trajectory;
        let chat = absolute_images(t.render_for_tool_agent(), &file.base_dir)?;
        let user = t
            .first_user_turn()
            .map(|(i, _)| i)
            .with_context(|| format!("{}:{}: no user turn", path.display(), n.line))?;
        let direct_chat = chat[..=user].to_vec();
        let turns: Vec<usize> = (user + 1..chat.len())
            .filter(|&k| chat[k].role == Role::Assistant)
            .collect();
        ensure!(
            !turns.is_empty(),
            "{}:{}: no assistant turn to replay",
            path.display(),
            n.line
        );
        let mut direct = vec![];
        let mut tool = vec![];
        let mut cost = ItemCost {
            id: t.id.clone(),
            direct_seconds: 0.0,
            direct_prompt_tokens: 0,
            tool_seconds: 0.0,
            tool_turns: turns.len(),
            tool_new_tokens: 0,
            tool_prompt_tokens: 0,
        };
        for run in 0..=runs {
            let g = model.generate(std::slice::from_ref(&direct_chat), answer_tokens)?;
            cost.direct_prompt_tokens = g[0].prompt_tokens;
            let mut seconds = 0.0;
            cost.tool_new_tokens = 0;
            for &k in &turns {
                // `<|im_end|>` closes the turn: one token more than its text.
                let len = model
                    .processor
                    .tokenizer
                    .encode(&chat[k].joined_text())?
                    .len()
                    + 1;
                let g = model.generate(&[chat[..k].to_vec()], len)?;
                seconds += g[0].seconds;
                cost.tool_new_tokens += g[0].new_tokens;
                cost.tool_prompt_tokens = g[0].prompt_tokens;
            }
            if run > 0 {
                direct.push(g[0].seconds);
                tool.push(seconds);
            }
        }
        cost.direct_seconds = median(&direct);
        cost.tool_seconds = median(&tool);
        items.push(cost);
    }
    let d: Vec<f64> = items.iter().map(|c| c.direct_seconds).collect();
    let t: Vec<f64> = items.iter().map(|c| c.tool_seconds).collect();
    Ok(AnswerCostReport {
        trajectories: path.display().to_string(),
        answer_tokens,
        runs,
        median_direct_seconds: median(&d),
        median_tool_seconds: median(&t),
        items,
    })
}

/// Image references made absolute against the trajectory file's directory (the chat model's
/// contract); `data:` URIs stay as they are.
fn absolute_images(chat: Vec<Message>, base: &Path) -> anyhow::Result<Vec<Message>> {
    chat.into_iter()
        .map(|m| {
            let content = m
                .content
                .into_iter()
                .map(|p| match p {
                    Part::Image { image } if !image.starts_with("data:") => {
                        let abs = std::path::absolute(base.join(&image))
                            .with_context(|| format!("bad image path {image}"))?;
                        Ok(Part::Image {
                            image: abs.to_string_lossy().into_owned(),
                        })
                    }
                    other => Ok(other),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Message::new(m.role, content))
        })
        .collect()
}

impl AnswerCostReport {
    pub fn to_table(&self) -> String {
        let mut s = String::from(
            "| item | Pearl-style (direct) | tool-using | turns | generated tokens | prompt tokens direct / last turn |\n|---|---|---|---|---|---|\n",
        );
        for c in &self.items {
            s += &format!(
                "| {} | {:.1} ms | {:.1} ms | {} | {} vs {} | {} / {} |\n",
                c.id,
                c.direct_seconds * 1e3,
                c.tool_seconds * 1e3,
                c.tool_turns,
                self.answer_tokens,
                c.tool_new_tokens,
                c.direct_prompt_tokens,
                c.tool_prompt_tokens
            );
        }
        let ratio = self.median_tool_seconds / self.median_direct_seconds.max(1e-12);
        s += &format!(
            "| **median** | {:.1} ms | {:.1} ms ({ratio:.1}x) | | | |\n",
            self.median_direct_seconds * 1e3,
            self.median_tool_seconds * 1e3
        );
        s
    }
}
