//! Tokens and images of the three views for a batch of chats. Each image is decoded and resized
//! once; the input and trajectory views carry no pixels of their own, only which rows of the full
//! view's image embeddings fill their image tokens (the views show the same images).

use super::ObjectiveConfig;
use super::views::{TurnTokens, assistant_labels, input_view, trajectory_view};
use crate::data::chat::Message;
use crate::data::trajectory::TrajectoryFile;
use crate::model::VlBatch;
use crate::processor::{EncodedBatch, ProcessedImage, Processor, pad_right};
use anyhow::{Context, Result, ensure};
use std::path::Path;

/// One chat to train on, with the directory its relative image paths resolve against.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    pub id: &'a str,
    pub chat: &'a [Message],
    pub base_dir: &'a Path,
}

impl<'a> Example<'a> {
    /// Every chat of a trajectory file, as stored (its images resolve against the file's folder).
    pub fn all_of(file: &'a TrajectoryFile) -> Vec<Example<'a>> {
        file.items
            .iter()
            .map(|n| Example {
                id: &n.trajectory.id,
                chat: &n.trajectory.messages,
                base_dir: &file.base_dir,
            })
            .collect()
    }
}

/// A view that is run as a continuation of the full view (see `continuation`).
#[derive(Debug, Clone)]
pub struct ViewBatch {
    /// Right-padded ids and mask; `image_grid_thw` lists the view's images; no pixel values.
    pub tokens: VlBatch,
    /// Per example, the rows of the full view's image embeddings its image tokens take, in order.
    pub image_rows: Vec<Vec<usize>>,
}

#[derive(Debug, Clone)]
pub struct TrainBatch {
    pub ids: Vec<String>,
    /// The whole chats, with every image's pixels.
    pub full: VlBatch,
    /// `[batch * seq_len]` next-token targets of the full view, `-100` where not supervised
    /// (HF convention: `labels[t]` is the token at `t`, predicted from position `t - 1`).
    pub labels: Vec<i64>,
    pub input: Option<ViewBatch>,
    pub trajectory: Option<ViewBatch>,
}

impl TrainBatch {
    /// Supervised tokens of the full view.
    pub fn supervised_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != -100).count()
    }

    /// Tokens of the full view (no padding).
    pub fn tokens(&self) -> usize {
        self.full.lengths().iter().sum()
    }

    /// Builds the batch. Without JEPA only the full view is tokenized.
    pub fn build(
        processor: &Processor,
        examples: &[Example],
        cfg: &ObjectiveConfig,
    ) -> Result<Self> {
        ensure!(!examples.is_empty(), "cannot build an empty batch");
        let tok = &processor.tokenizer;
        let turns = TurnTokens::of(tok)?;
        if cfg.jepa {
            let k = crate::processor::tokenizer::predictor_token(cfg.predictors);
            tok.token_id(&k).with_context(|| {
                format!("the tokenizer has no {k}: add Pearl's tokens before building batches")
            })?;
        }
        let mut full = Vec::new();
        let mut input = Vec::new();
        let mut traj = Vec::new();
        let mut images_per_example = Vec::new();
        let mut pixel_values = Vec::new();
        let mut grids = Vec::new();
        for ex in examples {
            let ctx = || format!("example {:?}", ex.id);
            let images: Vec<ProcessedImage> = ex
                .chat
                .iter()
                .flat_map(Message::images)
                .map(|r| processor.load_image(r, ex.base_dir))
                .collect::<Result<_>>()
                .with_context(ctx)?;
            let encode = |view: &[Message], n_images: usize| -> Result<Vec<u32>> {
                let text = processor.render(view, false)?;
                processor.encode_text_with_images(&text, &images[..n_images])
            };
            full.push(encode(ex.chat, images.len()).with_context(ctx)?);
            if cfg.jepa {
                let iv = input_view(ex.chat, cfg.predictors).with_context(ctx)?;
                let n_in = iv.iter().flat_map(Message::images).count();
                input.push((encode(&iv, n_in).with_context(ctx)?, n_in));
                let tv = trajectory_view(ex.chat).with_context(ctx)?;
                traj.push((encode(&tv, images.len()).with_context(ctx)?, images.len()));
            }
            images_per_example.push(images.len());
            for img in images {
                pixel_values.extend_from_slice(&img.pixel_values);
                grids.push(img.grid_thw);
            }
        }
        let pad = tok.pad_id();
        let enc = pad_right(&full, pad, pixel_values, processor.image.patch_dim(), grids);
        let mut labels = Vec::with_capacity(enc.input_ids.len());
        for b in 0..enc.batch {
            let row = &enc.input_ids[b * enc.seq_len..(b + 1) * enc.seq_len];
            let len = enc.lengths[b];
            let mut l = assistant_labels(&row[..len], &turns, cfg.supervise);
            l.resize(enc.seq_len, -100);
            labels.extend(l);
        }
        ensure!(
            labels.iter().any(|&l| l != -100),
            "no assistant tokens to supervise in this batch (examples {:?})",
            examples.iter().map(|e| e.id).collect::<Vec<_>>()
        );
        let rows = image_rows(&enc, &images_per_example, |g| {
            processor.image.num_image_tokens(g)
        });
        let view = |seqs: Vec<(Vec<u32>, usize)>| -> ViewBatch {
            let (ids, counts): (Vec<_>, Vec<_>) = seqs.into_iter().unzip();
            let image_rows: Vec<Vec<usize>> = rows
                .iter()
                .zip(&counts)
                .map(|(r, &n)| r[..n].iter().flat_map(|r| r.clone()).collect())
                .collect();
            let grids = per_example_grids(&enc.image_grid_thw, &images_per_example)
                .into_iter()
                .zip(&counts)
                .flat_map(|(g, &n)| g[..n].to_vec())
                .collect();
            let e = pad_right(&ids, pad, Vec::new(), enc.patch_dim, grids);
            ViewBatch {
                tokens: VlBatch::from(e),
                image_rows,
            }
        };
        let (input, trajectory) = if cfg.jepa {
            (Some(view(input)), Some(view(traj)))
        } else {
            (None, None)
        };
        Ok(Self {
            ids: examples.iter().map(|e| e.id.to_string()).collect(),
            full: VlBatch::from(enc),
            labels,
            input,
            trajectory,
        })
    }
}

fn per_example_grids(grids: &[[usize; 3]], counts: &[usize]) -> Vec<Vec<[usize; 3]>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &n in counts {
        out.push(grids[at..at + n].to_vec());
        at += n;
    }
    out
}

/// Per example, per image: the rows of the batch's image embeddings (merged tokens) it fills.
fn image_rows(
    enc: &EncodedBatch,
    counts: &[usize],
    tokens_of: impl Fn([usize; 3]) -> usize,
) -> Vec<Vec<std::ops::Range<usize>>> {
    let mut at = 0;
    per_example_grids(&enc.image_grid_thw, counts)
        .into_iter()
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    let n = tokens_of(*g);
                    at += n;
                    at - n..at
                })
                .collect()
        })
        .collect()
}
