//! What transformers' `Qwen2_5_VLProcessor` computes, as plain Rust data: chat template ->
//! text, images -> patches, `<|image_pad|>` expanded to one token per merged patch, tokenized and
//! right-padded into a batch. The model turns `EncodedBatch` into tensors.

pub mod chat_template;
pub mod decode;
pub mod image;
pub mod resample;
pub mod tokenizer;

use anyhow::{Context, Result, ensure};
use std::path::Path;

use crate::data::chat::{ImageSource, Message};
use crate::model::qwen2_5_vl::VlBatch;
pub use chat_template::ChatTemplate;
pub use image::{ImageProcessorConfig, ProcessedImage, smart_resize};
pub use tokenizer::QwenTokenizer;

/// The processor of one model directory.
pub struct Processor {
    pub image: ImageProcessorConfig,
    pub tokenizer: QwenTokenizer,
    pub template: ChatTemplate,
    /// Prefix each image with "Picture N: " (the template's `add_vision_id`), off by default.
    pub add_vision_id: bool,
}

/// A right-padded batch. Row-major: `input_ids[b * seq_len + s]`,
/// `pixel_values[n * patch_dim + d]` with the patches of all images of the batch in order.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub batch: usize,
    pub seq_len: usize,
    pub pixel_values: Vec<f32>,
    pub patch_dim: usize,
    /// One entry per image, in the order the images appear in the batch.
    pub image_grid_thw: Vec<[usize; 3]>,
    /// Unpadded length of each sequence.
    pub lengths: Vec<usize>,
}

/// The model's view of a batch: ids, mask and pixels as the model takes them.
impl From<EncodedBatch> for VlBatch {
    fn from(e: EncodedBatch) -> Self {
        VlBatch {
            input_ids: e.input_ids,
            attention_mask: e.attention_mask,
            batch: e.batch,
            seq_len: e.seq_len,
            pixel_values: e.pixel_values,
            image_grid_thw: e.image_grid_thw,
        }
    }
}

impl EncodedBatch {
    /// The model's view of this batch (a copy; `VlBatch::from` moves instead).
    pub fn to_vl(&self) -> VlBatch {
        VlBatch::from(self.clone())
    }

    /// Number of patch rows in `pixel_values`.
    pub fn num_patches(&self) -> usize {
        self.image_grid_thw
            .iter()
            .map(|g| g.iter().product::<usize>())
            .sum()
    }
}

impl Processor {
    /// Loads `preprocessor_config.json`, `tokenizer.json` (+ `tokenizer_config.json`,
    /// `generation_config.json` for the pad token) and the chat template from `model_dir`.
    pub fn from_dir(model_dir: &Path) -> Result<Self> {
        let image = ImageProcessorConfig::from_file(&model_dir.join("preprocessor_config.json"))?;
        let tokenizer = QwenTokenizer::from_dir(model_dir)?;
        let template = ChatTemplate::from_dir(model_dir)?;
        Ok(Self {
            image,
            tokenizer,
            template,
            add_vision_id: false,
        })
    }

    /// Overrides the pixel budget of resized images (what `min_pixels=`/`max_pixels=` do in
    /// transformers); `None` keeps the configured value.
    pub fn set_pixel_limits(
        &mut self,
        min_pixels: Option<usize>,
        max_pixels: Option<usize>,
    ) -> Result<()> {
        let mut cfg = self.image.clone();
        cfg.min_pixels = min_pixels.unwrap_or(cfg.min_pixels);
        cfg.max_pixels = max_pixels.unwrap_or(cfg.max_pixels);
        cfg.validate().context("invalid pixel limits")?;
        self.image = cfg;
        Ok(())
    }

    /// The chat text of one conversation, image placeholders not yet expanded.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template
            .render_with(messages, add_generation_prompt, self.add_vision_id)
    }

    /// Decodes and preprocesses the image `reference` (path relative to `base_dir`, absolute
    /// path or data URI).
    pub fn load_image(&self, reference: &str, base_dir: &Path) -> Result<ProcessedImage> {
        let source = ImageSource::resolve(reference, base_dir)?;
        let img = decode::load_image(&source)?;
        self.image
            .preprocess(&img)
            .with_context(|| format!("cannot preprocess image {}", source.describe()))
    }

    /// Token ids of rendered chat text whose `<|image_pad|>` placeholders stand for `images`
    /// (one each, in order): each placeholder becomes as many pads as the image has merged
    /// patches. Video placeholders are refused.
    pub fn encode_text_with_images(
        &self,
        rendered: &str,
        images: &[ProcessedImage],
    ) -> Result<Vec<u32>> {
        let special = self.tokenizer.special();
        let ids = self.tokenizer.encode(rendered)?;
        if let Some(video) = special.video_pad {
            ensure!(
                !ids.contains(&video),
                "video inputs are not supported (the text contains {})",
                tokenizer::VIDEO_PAD
            );
        }
        let placeholders = ids.iter().filter(|&&t| t == special.image_pad).count();
        ensure!(
            placeholders == images.len(),
            "the text has {placeholders} image placeholder(s) but {} image(s) were given",
            images.len()
        );
        // Expanding ids rather than text: the pad is a special token, so both give the same ids.
        let mut pads_per_image = images
            .iter()
            .map(|img| self.image.num_image_tokens(img.grid_thw));
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if id == special.image_pad {
                // The counts match (checked above), so every placeholder has its image.
                out.extend(std::iter::repeat_n(id, pads_per_image.next().unwrap_or(0)));
            } else {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Renders, loads images, tokenizes and right-pads a batch of conversations. Image
    /// references are resolved against `base_dir`.
    pub fn encode(
        &self,
        conversations: &[Vec<Message>],
        add_generation_prompt: &[bool],
        base_dir: &Path,
    ) -> Result<EncodedBatch> {
        ensure!(!conversations.is_empty(), "cannot encode an empty batch");
        ensure!(
            add_generation_prompt.len() == conversations.len(),
            "{} conversations but {} add_generation_prompt flags",
            conversations.len(),
            add_generation_prompt.len()
        );
        let mut sequences = Vec::with_capacity(conversations.len());
        let mut pixel_values = Vec::new();
        let mut image_grid_thw = Vec::new();
        for (i, (messages, &gen_prompt)) in
            conversations.iter().zip(add_generation_prompt).enumerate()
        {
            let rendered = self
                .render(messages, gen_prompt)
                .with_context(|| format!("conversation {i}"))?;
            let images = messages
                .iter()
                .flat_map(Message::images)
                .map(|r| {
                    self.load_image(r, base_dir)
                        .with_context(|| format!("image {r:?} of conversation {i}"))
                })
                .collect::<Result<Vec<_>>>()?;
            let ids = self
                .encode_text_with_images(&rendered, &images)
                .with_context(|| format!("conversation {i}"))?;
            for img in images {
                pixel_values.extend_from_slice(&img.pixel_values);
                image_grid_thw.push(img.grid_thw);
            }
            sequences.push(ids);
        }
        Ok(pad_right(
            &sequences,
            self.tokenizer.pad_id(),
            pixel_values,
            self.image.patch_dim(),
            image_grid_thw,
        ))
    }
}

/// Pads every sequence on the right to the longest one, with `pad_id` and attention mask 0.
pub fn pad_right(
    sequences: &[Vec<u32>],
    pad_id: u32,
    pixel_values: Vec<f32>,
    patch_dim: usize,
    image_grid_thw: Vec<[usize; 3]>,
) -> EncodedBatch {
    let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    let seq_len = lengths.iter().copied().max().unwrap_or(0);
    let mut input_ids = Vec::with_capacity(sequences.len() * seq_len);
    let mut attention_mask = Vec::with_capacity(sequences.len() * seq_len);
    for seq in sequences {
        input_ids.extend(seq.iter().map(|&t| i64::from(t)));
        input_ids.extend(std::iter::repeat_n(i64::from(pad_id), seq_len - seq.len()));
        attention_mask.extend(std::iter::repeat_n(1, seq.len()));
        attention_mask.extend(std::iter::repeat_n(0, seq_len - seq.len()));
    }
    EncodedBatch {
        input_ids,
        attention_mask,
        batch: sequences.len(),
        seq_len,
        pixel_values,
        patch_dim,
        image_grid_thw,
        lengths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_padding_layout() {
        let b = pad_right(&[vec![5, 6, 7], vec![8]], 0, vec![], 12, vec![]);
        assert_eq!((b.batch, b.seq_len), (2, 3));
        assert_eq!(b.input_ids, [5, 6, 7, 8, 0, 0]);
        assert_eq!(b.attention_mask, [1, 1, 1, 1, 0, 0]);
        assert_eq!(b.lengths, [3, 1]);
    }
}
