//! NextLat's dynamics head: from the hidden state `h_t` and the next token's embedding `e_{t+1}`,
//! predict the next hidden state: `h_t + MLP(LayerNorm([h_t ; e_{t+1}]))`, the MLP being
//! Linear(2d, d) -> GELU -> Linear(d, d) -> GELU -> Linear(d, d). A new module that trains fully
//! (no LoRA). Saved as safetensors with the authors' key names (`dynamics_head.ln.*`,
//! `dynamics_head.mlp.{0,2,4}.*`, PyTorch `[out, in]` layout).

use crate::model::checkpoint::write_safetensors;
use crate::model::nn::{Proj, tensor1, transpose};
use crate::model::weights::{ParamKind, SafetensorsWeights, WeightSource};
use anyhow::{Context, Result};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::path::Path;

const LN_EPS: f64 = 1e-6;
pub const PREFIX: &str = "dynamics_head";

#[derive(Module, Debug)]
pub struct DynamicsHead {
    pub ln: LayerNorm,
    pub mlp0: Linear,
    pub mlp2: Linear,
    pub mlp4: Linear,
}

impl DynamicsHead {
    /// `h: [n, d]`, `e_next: [n, d]` -> predicted next hidden state `[n, d]`.
    pub fn forward(&self, h: Tensor<2>, e_next: Tensor<2>) -> Tensor<2> {
        let x = self.ln.forward(Tensor::cat(vec![h.clone(), e_next], 1));
        let x = gelu(self.mlp0.forward(x));
        let x = gelu(self.mlp2.forward(x));
        h + self.mlp4.forward(x)
    }

    pub fn hidden_size(&self) -> usize {
        self.mlp4.weight.dims()[1]
    }

    /// PyTorch's default initialisation (LayerNorm 1/0, linears U(-1/sqrt(in), 1/sqrt(in))),
    /// from a seed so that runs are reproducible.
    pub fn init(d: usize, seed: u64, device: &Device) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut linear = |d_in: usize, d_out: usize| {
            let bound = 1.0 / (d_in as f32).sqrt();
            let mut u = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let w = u(d_in * d_out);
            let b = u(d_out);
            Proj::from_pytorch(&w, Some(b), d_in, d_out, device).base
        };
        Self {
            ln: LayerNormConfig::new(2 * d)
                .with_epsilon(LN_EPS)
                .init(device),
            mlp0: linear(2 * d, d),
            mlp2: linear(d, d),
            mlp4: linear(d, d),
        }
    }

    /// Loads `dynamics_head.*` tensors (hidden size `d`) from a safetensors file.
    pub fn load(path: &Path, d: usize, device: &Device) -> Result<Self> {
        let mut src = SafetensorsWeights::open_file(path)?;
        let ctx = || format!("cannot load the dynamics head from {}", path.display());
        let mut vec = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            src.take(&format!("{PREFIX}.{name}"), shape, ParamKind::Weight)
        };
        let mut ln = LayerNormConfig::new(2 * d)
            .with_epsilon(LN_EPS)
            .init(device);
        ln.gamma = Param::from_tensor(tensor1(
            vec("ln.weight", &[2 * d]).with_context(ctx)?,
            device,
        ));
        ln.beta = Some(Param::from_tensor(tensor1(
            vec("ln.bias", &[2 * d]).with_context(ctx)?,
            device,
        )));
        let mut linear = |i: usize, d_in: usize| -> Result<Linear> {
            let w = vec(&format!("mlp.{i}.weight"), &[d, d_in])?;
            let b = vec(&format!("mlp.{i}.bias"), &[d])?;
            Ok(Proj::from_pytorch(&w, Some(b), d_in, d, device).base)
        };
        Ok(Self {
            mlp0: linear(0, 2 * d).with_context(ctx)?,
            mlp2: linear(2, d).with_context(ctx)?,
            mlp4: linear(4, d).with_context(ctx)?,
            ln,
        })
    }

    /// Tensors under the authors' names, PyTorch layout: `(name, shape, values)`.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let v1 = |t: Tensor<1>| t.try_into_vec_as::<f32>().unwrap_or_default();
        let mut out = vec![(
            format!("{PREFIX}.ln.weight"),
            self.ln.gamma.dims().to_vec(),
            v1(self.ln.gamma.val()),
        )];
        if let Some(b) = &self.ln.beta {
            out.push((format!("{PREFIX}.ln.bias"), b.dims().to_vec(), v1(b.val())));
        }
        for (i, l) in [(0, &self.mlp0), (2, &self.mlp2), (4, &self.mlp4)] {
            let [d_in, d_out] = l.weight.dims();
            let w = l.weight.val().try_into_vec_as::<f32>().unwrap_or_default();
            out.push((
                format!("{PREFIX}.mlp.{i}.weight"),
                vec![d_out, d_in],
                transpose(&w, d_in, d_out),
            ));
            if let Some(b) = &l.bias {
                out.push((format!("{PREFIX}.mlp.{i}.bias"), vec![d_out], v1(b.val())));
            }
        }
        out
    }

    /// Writes the head atomically; refuses non-finite values.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_safetensors(path, &self.tensors(), None)
    }
}

/// Maps a burn module path inside the head (`ln.gamma`, `mlp0.weight`) to the authors' key.
pub fn key_of_path(path: &str) -> Option<String> {
    let (module, param) = path.split_once('.')?;
    let module = match module {
        "ln" => "ln".to_string(),
        m => format!("mlp.{}", m.strip_prefix("mlp")?),
    };
    let param = match param {
        "gamma" => "weight",
        "beta" => "bias",
        p => p,
    };
    Some(format!("{PREFIX}.{module}.{param}"))
}
