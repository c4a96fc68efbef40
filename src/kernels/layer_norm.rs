//! LayerNorm with a shift, `y = (x - mean) / sqrt(var + eps) * gamma + beta` over the last
//! dimension (Qwen3-VL's vision norms), as ONE differentiable op with a hand-written backward
//! pass, on the CPU backend.
//!
//! Why by hand: under autodiff burn decomposes LayerNorm into a dozen elementwise ops and
//! reductions, each a serial pass whose output it keeps. Here each row is normalised in one
//! parallel pass that keeps only the input, each row's mean and reciprocal deviation `r`; the
//! backward pass is, per row with `n = (x - mean) r` and `g = d_y * gamma`,
//! `d_x = r (g - mean(g) - n mean(g n))`, `d_gamma = sum over rows of d_y n`, `d_beta = sum of d_y`.
//! Other backends and dtypes take [`composed`] (burn's `LayerNorm`).

use super::cpu::{dot, f32_tensor, f32_values, rows_per_task, with_simd};
use super::dispatch::{Kernel, fused};
use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::nn::LayerNorm;
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

/// `norm.forward(x)`, fused on the CPU backend; `eps` is the norm's epsilon (burn keeps it
/// private).
pub fn layer_norm<const D: usize>(norm: &LayerNorm, eps: f64, x: Tensor<D>) -> Tensor<D> {
    let gamma = norm.gamma.val();
    if let Some(beta) = &norm.beta
        && x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && let Some(y) = fused(
            FusedLayerNorm { eps },
            [
                x.clone().into_dispatch(),
                gamma.into_dispatch(),
                beta.val().into_dispatch(),
            ],
        )
    {
        return y;
    }
    composed(norm, x)
}

/// burn's LayerNorm (any backend, any dtype).
pub fn composed<const D: usize>(norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    norm.forward(x)
}

/// The fused op on `[x, gamma, beta]`.
#[derive(Debug, Clone)]
struct FusedLayerNorm {
    eps: f64,
}

#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    gamma: FlexTensor,
    /// Each row's mean and reciprocal standard deviation.
    mean: Vec<f32>,
    r: Vec<f32>,
}

impl Kernel<Flex, 3> for FusedLayerNorm {
    type Saved = Saved;

    fn forward(
        &self,
        [x, gamma, beta]: [FlexTensor; 3],
        track: bool,
    ) -> (FlexTensor, Option<Saved>) {
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let (xs, g, b) = (f32_values(&x), f32_values(&gamma), f32_values(&beta));
        let rows_total = xs.len() / d.max(1);
        let (mut y, mut mean, mut r) = (
            vec![0f32; xs.len()],
            vec![0f32; rows_total],
            vec![0f32; rows_total],
        );
        let rows = rows_per_task(d);
        let eps = self.eps as f32;
        y.par_chunks_mut(rows * d)
            .zip(mean.par_chunks_mut(rows).zip(r.par_chunks_mut(rows)))
            .zip(xs.par_chunks(rows * d))
            .for_each(|((y, (mean, r)), x)| {
                with_simd(|| {
                    let rows = y.chunks_mut(d).zip(mean.iter_mut().zip(r.iter_mut()));
                    for ((y, (m, r)), x) in rows.zip(x.chunks(d)) {
                        *m = x.iter().sum::<f32>() / d as f32;
                        let var = x.iter().map(|&v| (v - *m) * (v - *m)).sum::<f32>() / d as f32;
                        *r = 1.0 / (var + eps).sqrt();
                        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(g.iter()).zip(b.iter()) {
                            *y = (x - *m) * *r * g + b;
                        }
                    }
                })
            });
        drop((xs, g, b));
        let y = f32_tensor(y, shape);
        (y, track.then_some(Saved { x, gamma, mean, r }))
    }

    fn backward(
        self,
        Saved { x, gamma, mean, r }: Saved,
        d_y: FlexTensor,
        [want_x, want_gamma, want_beta]: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let (xs, g, dy) = (f32_values(&x), f32_values(&gamma), f32_values(&d_y));
        let rows = rows_per_task(d);
        let dx = want_x.then(|| {
            let mut dx = vec![0f32; xs.len()];
            dx.par_chunks_mut(rows * d)
                .zip(xs.par_chunks(rows * d).zip(dy.par_chunks(rows * d)))
                .zip(mean.par_chunks(rows).zip(r.par_chunks(rows)))
                .for_each(|((dx, (x, dy)), (mean, r))| {
                    with_simd(|| {
                        let mut gd = vec![0f32; d];
                        let mut n = vec![0f32; d];
                        let stats = mean.iter().zip(r);
                        let rows = dx
                            .chunks_mut(d)
                            .zip(x.chunks(d))
                            .zip(dy.chunks(d))
                            .zip(stats);
                        for (((dx, x), dy), (&m, &r)) in rows {
                            for (((gd, n), (&dy, &g)), &x) in gd
                                .iter_mut()
                                .zip(n.iter_mut())
                                .zip(dy.iter().zip(g.iter()))
                                .zip(x)
                            {
                                *gd = dy * g;
                                *n = (x - m) * r;
                            }
                            let mean_g = gd.iter().sum::<f32>() / d as f32;
                            let mean_gn = dot(&gd, &n) / d as f32;
                            for ((dx, &gd), &n) in dx.iter_mut().zip(&gd).zip(&n) {
                                *dx = r * (gd - mean_g - n * mean_gn);
                            }
                        }
                    })
                });
            f32_tensor(dx, shape.clone())
        });
        // Per block of rows: partial sums of `d_y n` and `d_y`, then their sums.
        let sums = (want_gamma || want_beta).then(|| {
            xs.par_chunks(rows * d)
                .zip(dy.par_chunks(rows * d))
                .zip(mean.par_chunks(rows).zip(r.par_chunks(rows)))
                .map(|((x, dy), (mean, r))| {
                    let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
                    let stats = mean.iter().zip(r);
                    for ((x, dy), (&m, &r)) in x.chunks(d).zip(dy.chunks(d)).zip(stats) {
                        for (((dg, db), &x), &dy) in dg.iter_mut().zip(db.iter_mut()).zip(x).zip(dy)
                        {
                            *dg += dy * (x - m) * r;
                            *db += dy;
                        }
                    }
                    (dg, db)
                })
                .reduce(
                    || (vec![0f32; d], vec![0f32; d]),
                    |(mut a, mut b), (c, e)| {
                        a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
                        b.iter_mut().zip(&e).for_each(|(b, e)| *b += e);
                        (a, b)
                    },
                )
        });
        let (d_gamma, d_beta) = match sums {
            Some((dg, db)) => (
                want_gamma.then(|| f32_tensor(dg, Shape::new([d]))),
                want_beta.then(|| f32_tensor(db, Shape::new([d]))),
            ),
            None => (None, None),
        };
        [dx, d_gamma, d_beta]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn norm(d: usize, device: &Device) -> LayerNorm {
        let mut n = LayerNormConfig::new(d).with_epsilon(1e-6).init(device);
        n.gamma = Param::from_tensor(Tensor::random([d], Distribution::Normal(1.0, 0.5), device));
        n.beta = Some(Param::from_tensor(Tensor::random(
            [d],
            Distribution::Normal(0.0, 0.5),
            device,
        )));
        n
    }

    #[test]
    fn fused_forward_matches_burns_module() {
        let device = Device::default();
        let n = norm(37, &device);
        let x: Tensor<3> = Tensor::random([2, 5, 37], Distribution::Normal(1.0, 3.0), &device);
        let inputs = [
            x.clone().into_dispatch(),
            n.gamma.val().into_dispatch(),
            n.beta.as_ref().unwrap().val().into_dispatch(),
        ];
        assert!(fused::<_, 3, 3>(FusedLayerNorm { eps: 1e-6 }, inputs).is_some());
        layer_norm(&n, 1e-6, x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&n.forward(x).into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn fused_gradients_match_autodiff_of_burns_module() {
        let device = Device::default().autodiff();
        // Enough rows to be split over several tasks (rows_per_task(37) = 1771).
        let x: Tensor<2> = Tensor::random([4000, 37], Distribution::Normal(1.0, 3.0), &device);
        let w: Tensor<2> = Tensor::random([4000, 37], Distribution::Normal(0.0, 1.0), &device);
        let n0 = norm(37, &device);
        let grads_of = |fused: bool| {
            let mut n = LayerNormConfig::new(37).with_epsilon(1e-6).init(&device);
            n.gamma = Param::from_tensor(n0.gamma.val().detach().require_grad());
            let beta = n0.beta.as_ref().unwrap().val().detach().require_grad();
            n.beta = Some(Param::from_tensor(beta));
            let x = x.clone().detach().require_grad();
            let y = if fused {
                layer_norm(&n, 1e-6, x.clone())
            } else {
                n.forward(x.clone())
            };
            let grads = (y * w.clone()).sum().backward();
            let dx = x.grad(&grads).expect("x gradient");
            let dg = n.gamma.val().grad(&grads).expect("gamma gradient");
            let db = n
                .beta
                .as_ref()
                .unwrap()
                .val()
                .grad(&grads)
                .expect("beta gradient");
            (dx, dg, db)
        };
        let (dx, dg, db) = grads_of(true);
        let (rdx, rdg, rdb) = grads_of(false);
        dx.into_data()
            .assert_approx_eq::<f32>(&rdx.into_data(), Tolerance::absolute(1e-4));
        // Sums over 4000 rows: compare relative to their size.
        dg.into_data()
            .assert_approx_eq::<f32>(&rdg.into_data(), Tolerance::rel_abs(1e-4, 1e-3));
        db.into_data()
            .assert_approx_eq::<f32>(&rdb.into_data(), Tolerance::rel_abs(1e-4, 1e-3));
    }
}
