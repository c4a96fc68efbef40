//! L_jepa: how far the input view's embedding (the prediction) is from the trajectory view's
//! (the target, stop-gradient). The embeddings themselves come from `continuation`.

use super::Distance;
use crate::model::precision::in_f32;
use burn::nn::loss::SmoothL1LossConfig;
use burn::tensor::Tensor;

/// `pred, target: [batch, d]` -> scalar loss, averaged over the batch.
pub fn jepa_loss(pred: Tensor<2>, target: Tensor<2>, distance: Distance) -> Tensor<1> {
    let (pred, target) = (in_f32(pred), in_f32(target.detach()));
    match distance {
        Distance::Cosine => {
            // 1 - cos, with PyTorch's eps guard on the norms.
            let dot = (pred.clone() * target.clone()).sum_dim(1);
            let norms =
                pred.powi_scalar(2).sum_dim(1).sqrt() * target.powi_scalar(2).sum_dim(1).sqrt();
            (dot / norms.clamp_min(1e-8)).neg().add_scalar(1.0).mean()
        }
        Distance::SmoothL1 => SmoothL1LossConfig::new()
            .init()
            .forward(pred, target)
            .mean(),
        Distance::L2 => (pred - target).powi_scalar(2).sum_dim(1).sqrt().mean(),
        Distance::Mse => (pred - target).powi_scalar(2).mean(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nn::tensor2;
    use burn::tensor::Device;

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn distances_on_known_vectors() {
        let d = Device::default();
        let p = || tensor2(vec![1.0, 0.0, 0.0, 2.0], [2, 2], &d);
        let t = || tensor2(vec![0.0, 1.0, 0.0, 4.0], [2, 2], &d);
        // cos = 0 and 1 -> mean(1 - cos) = 0.5
        assert!((scalar(jepa_loss(p(), t(), Distance::Cosine)) - 0.5).abs() < 1e-6);
        // squared errors 1,1,0,4 -> mse 1.5; l2 norms sqrt2, 2 -> mean 1.7071
        assert!((scalar(jepa_loss(p(), t(), Distance::Mse)) - 1.5).abs() < 1e-6);
        assert!(
            (scalar(jepa_loss(p(), t(), Distance::L2)) - (2f32.sqrt() + 2.0) / 2.0).abs() < 1e-6
        );
        // smooth l1 (beta 1): |1|->0.5, |1|->0.5, 0->0, |2|->1.5 -> mean 0.625
        assert!((scalar(jepa_loss(p(), t(), Distance::SmoothL1)) - 0.625).abs() < 1e-6);
    }
}
