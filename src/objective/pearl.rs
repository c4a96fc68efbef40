//! The Pearl objective on one batch:
//! `L = L_vlm + lambda * L_jepa + lambda * (L_nextlat_state + L_nextlat_token)`.
//!
//! One pass of the vision tower and one of the decoder over the full view (with gradients), whose
//! keys/values then serve the two other views as continuations: the input view (prediction, with
//! gradients) and the trajectory view (target, run on the plain backend: no autodiff graph at all).

use super::ObjectiveConfig;
use super::batch::TrainBatch;
use super::continuation::{FullContext, view_embeddings};
use super::dynamics::DynamicsHead;
use super::jepa::jepa_loss;
use super::nextlat::nextlat_losses;
use super::sft::{next_tokens, vlm_loss};
use crate::model::Vlm;
use crate::model::decoder::KvCache;
use anyhow::{Context, Result, ensure};
use burn::module::Module;
use burn::tensor::Tensor;
use serde::Serialize;

/// The model Pearl trains: the VLM and, for NextLat, the dynamics head.
#[derive(Module, Debug)]
pub struct PearlModel {
    pub vlm: Vlm,
    pub dynamics: Option<DynamicsHead>,
}

/// The loss terms as numbers (what logs and `pearl inspect loss` print).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LossValues {
    /// Next-token cross-entropy (for LVR: on the answer).
    pub vlm: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jepa: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nextlat_state: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nextlat_token: Option<f64>,
    /// LVR's latent regression (MSE to the region's vision embeddings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent: Option<f64>,
    pub total: f64,
}

pub struct Losses {
    /// The scalar to differentiate.
    pub total: Tensor<1>,
    pub values: LossValues,
    /// JEPA's predicted and target trajectory embeddings `[batch, d]` (target detached).
    pub embeddings: Option<(Tensor<2>, Tensor<2>)>,
}

fn value(t: &Tensor<1>) -> f64 {
    f64::from(t.clone().into_scalar::<f32>())
}

pub fn compute_losses(
    model: &PearlModel,
    batch: &TrainBatch,
    cfg: &ObjectiveConfig,
) -> Result<Losses> {
    let vlm = &model.vlm;
    let vocab = vlm.vocab_size() as i64;
    if let Some(&bad) = batch.full.input_ids.iter().find(|&&t| t < 0 || t >= vocab) {
        anyhow::bail!(
            "token id {bad} is outside the model's vocabulary ({vocab} rows): grow the embeddings for the added tokens first"
        );
    }
    let full = &batch.full;
    let images = if full.image_grid_thw.is_empty() {
        None
    } else {
        Some(vlm.encode_images(&full.pixel_values, &full.image_grid_thw)?)
    };
    let x = vlm.embed(full, images.as_ref())?;
    let mut cache = KvCache::new(vlm.num_layers());
    let keep_cache = cfg.jepa.then_some(&mut cache);
    let decoded = vlm.decode_cached(x, full, images.as_ref(), false, keep_cache)?;
    let hidden = decoded.last_hidden;
    // The states JEPA and NextLat read: `hidden_states[-1]` in the chosen convention.
    let states = vlm.last_hidden_state(hidden.clone(), decoded.pre_norm, cfg.hidden_states);

    let next = next_tokens(&batch.labels, full.batch, full.seq_len);
    ensure!(
        !next.positions.is_empty(),
        "the batch has no supervised tokens"
    );
    let l_vlm = vlm_loss(vlm, &hidden, &next);
    let mut total = l_vlm.clone();
    let mut values = LossValues {
        vlm: value(&l_vlm),
        jepa: None,
        nextlat_state: None,
        nextlat_token: None,
        latent: None,
        total: 0.0,
    };

    let mut embeddings = None;
    if cfg.jepa {
        let input = batch
            .input
            .as_ref()
            .context("the batch was built without the input view")?;
        let traj = batch
            .trajectory
            .as_ref()
            .context("the batch was built without the trajectory view")?;
        let ctx = FullContext {
            batch: full,
            cache: &cache,
            images: images.as_ref(),
        };
        let pred = view_embeddings(vlm, &ctx, input, cfg.hidden_states)?;
        let target = {
            let (plain_cache, plain_images) = ctx.without_autodiff();
            let plain = FullContext {
                batch: full,
                cache: &plain_cache,
                images: plain_images.as_ref(),
            };
            view_embeddings(&vlm.valid(), &plain, traj, cfg.hidden_states)?
        };
        let l = jepa_loss(pred.clone(), target.clone(), cfg.distance);
        embeddings = Some((pred, target));
        values.jepa = Some(value(&l));
        total = total + l.mul_scalar(cfg.lambda);
    }

    if cfg.nextlat {
        let head = model
            .dynamics
            .as_ref()
            .context("NextLat needs a dynamics head")?;
        let nl = nextlat_losses(vlm, head, full, &states, &next);
        values.nextlat_state = Some(value(&nl.state));
        values.nextlat_token = Some(value(&nl.token));
        total = total + (nl.state + nl.token).mul_scalar(cfg.lambda);
    }
    values.total = value(&total);
    Ok(Losses {
        total,
        values,
        embeddings,
    })
}

impl PearlModel {
    /// The model for an objective: a fresh dynamics head (seeded) when NextLat is on.
    pub fn new(vlm: Vlm, cfg: &ObjectiveConfig, seed: u64) -> Self {
        let dynamics = cfg
            .nextlat
            .then(|| DynamicsHead::init(vlm.hidden_size(), seed, &vlm.device()));
        Self { vlm, dynamics }
    }
}
