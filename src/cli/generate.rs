//! `pearl generate`: one chat turn from a model directory (optionally with a LoRA adapter), on
//! the command line. The answer goes to stdout, token counts and timings to stderr.

use crate::data::chat::{Message, Part, Role};
use crate::eval::answerer::ChatModel;
use crate::infer::Sampling;
use anyhow::{Context, ensure};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: super::model_args::ModelArgs,
    /// Image(s) placed before the prompt, in order.
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// The user's message.
    #[arg(long)]
    pub prompt: String,
    /// A system message (default: the chat template's own).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 = greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only within the smallest set of tokens holding this probability mass.
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    sampling.validate()?;
    let chat = chat_of(&a)?;
    let mut model = a.model.load_chat_model()?;
    model.sampling = sampling;
    let g = model
        .generate(&[chat], a.max_new_tokens)?
        .pop()
        .context("the model returned no generation")?;
    println!("{}", g.text);
    eprintln!(
        "{} prompt tokens ({} image), {} new tokens, {:.2} s",
        g.prompt_tokens, g.image_tokens, g.new_tokens, g.seconds
    );
    Ok(())
}

/// The conversation: optional system turn, then the images and the prompt as one user turn.
/// Image paths are made absolute (the chat model's contract) and checked here, so a typo is
/// reported before the model is loaded.
fn chat_of(a: &GenerateArgs) -> anyhow::Result<Vec<Message>> {
    let mut content = Vec::with_capacity(a.image.len() + 1);
    for p in &a.image {
        ensure!(p.is_file(), "image {} does not exist", p.display());
        let abs = std::path::absolute(p)
            .with_context(|| format!("cannot make {} absolute", p.display()))?;
        content.push(Part::Image {
            image: abs.to_string_lossy().into_owned(),
        });
    }
    content.push(Part::Text {
        text: a.prompt.clone(),
    });
    let mut chat = Vec::new();
    if let Some(s) = &a.system {
        chat.push(Message::text(Role::System, s.clone()));
    }
    chat.push(Message::new(Role::User, content));
    Ok(chat)
}
