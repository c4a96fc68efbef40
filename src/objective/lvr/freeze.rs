//! Which parameters the LVR baseline trains: LoRA adapters of the language model only. LVR's
//! own recipe freezes the vision tower and the merger (`--freeze_vision_tower True
//! --freeze_merger True`), and it must: the latent targets are the merger's output, so an
//! adapter there would move the targets while the decoder chases them (with vision adapters the
//! cross-entropy alone grows the image embeddings step after step and the MSE diverges).

use crate::objective::freeze::set_trainable;
use burn::module::Module;

/// Freezes everything but the LoRA adapters outside the vision tower (`visual.*`).
pub fn lvr_lora_only<M: Module>(module: M) -> M {
    set_trainable(module, |p| p.contains(".lora.") && !is_vision(p))
}

fn is_vision(path: &str) -> bool {
    path.starts_with("visual.") || path.contains(".visual.")
}
