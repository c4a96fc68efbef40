//! The GPU code path executed, not only type-checked: burn's wgpu backend runs the CubeCL kernels
//! a CUDA build runs (compiled to WGSL instead of PTX), here on OpenGL, which on a machine
//! without a GPU is Mesa's llvmpipe software rasteriser (`wgpu:gl`). Against the fixtures'
//! references at the CPU tests' tolerances: the forward pass (transformers' hidden states and
//! logits), and the Pearl objective's five losses and every LoRA and dynamics-head gradient,
//! which go through blockwise attention and the chunked head loss with their own backward passes.
//!
//! Only in a build with `--features wgpu`, best in its own target directory:
//! `CARGO_TARGET_DIR=target-wgpu cargo test --features wgpu --test wgpu_device`.
#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{check_forward_on, fixture_dir, pearl_fixture};
use pearl::kernels::dispatch::{Portable, portable};
use pearl::model::device::DeviceSpec;
use pearl::model::precision::Precision;
use std::sync::{Arc, Mutex};

/// The OpenGL device every test here shares (burn brings a wgpu runtime up once per process).
fn gl() -> Device {
    // The fused CPU kernels never take a wgpu tensor; switched off all the same, so that nothing
    // the model computes on the side (masks, positions) could reach them either.
    pearl::kernels::fused::set_enabled(false);
    DeviceSpec::parse_available("wgpu:gl")
        .and_then(DeviceSpec::device)
        .expect("an OpenGL adapter (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri)")
}

#[test]
fn forward_matches_transformers_on_wgpu() {
    let device = gl();
    for name in ["forward_single", "forward_batch", "forward_text_only"] {
        check_forward_on(&device, &fixture_dir(), name);
    }
}

#[test]
fn pearl_losses_and_gradients_match_the_reference_on_wgpu() {
    pearl_fixture::check_against_reference_on(&fixture_dir(), &gl());
}

/// `y = 3 x`, recording whether its own backward pass ran.
#[derive(Debug, Clone, Default)]
struct Triple {
    backward_ran: Arc<Mutex<bool>>,
}

impl Portable<1, 1, 1> for Triple {
    type Saved = ();

    fn forward(&self, [x]: [Tensor<1>; 1], track: bool) -> (Tensor<1>, Option<()>) {
        (x.mul_scalar(3.0), track.then_some(()))
    }

    fn backward(self, _: (), d: Tensor<1>, _: [bool; 1]) -> [Option<Tensor<1>>; 1] {
        *self.backward_ran.lock().unwrap() = true;
        [Some(d.mul_scalar(3.0))]
    }
}

/// The wgpu backend's autodiff rungs are in `dispatch::portable` (with and without gradient
/// checkpointing): an op's own backward pass runs there, instead of the dense composed fallback
/// that would keep attention's `[T, T]` probabilities.
#[test]
fn portable_ops_keep_their_backward_pass_on_wgpu() {
    for checkpointing in [false, true] {
        let mut device = gl().autodiff();
        if checkpointing {
            device = device.gradient_checkpointing();
        }
        let x = Tensor::<1>::from_data(TensorData::from([1.0f32, -2.0]), &device).require_grad();
        let op = Triple::default();
        let y: Tensor<1> = portable(op.clone(), [x.clone()]).expect("a wgpu autodiff rung");
        let grads = y.sum().backward();
        let dx = x.grad(&grads).expect("x's gradient").into_data();
        assert_eq!(dx.to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
        assert!(
            *op.backward_ran.lock().unwrap(),
            "checkpointing {checkpointing}: the op's own backward pass"
        );
    }
}

/// OpenGL compute shaders (WGSL through naga to GLSL) have no 16-bit floats: bf16 is refused
/// with the device named, before any weight is read.
#[test]
fn bf16_is_refused_on_the_gl_device() {
    let device = gl();
    let e = Precision::Bf16
        .check_supported(&device)
        .expect_err("no bf16 on OpenGL");
    let e = format!("{e:#}");
    assert!(
        e.contains("bf16") && e.to_lowercase().contains("wgpu"),
        "{e}"
    );
    Precision::F32.check_supported(&device).expect("f32");
}
