//! Tensor helpers below the model and the kernels' composed forms: dtype casts (differentiable:
//! the gradient is cast back) and index tensors for `select`.

use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};

/// `t` in `dtype` (no op, and no autodiff node, when it already is).
pub fn cast<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(FloatDType::from(dtype))
    }
}

/// `t` in f32: what every loss and every host read-out takes.
pub fn in_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    cast(t, DType::F32)
}

/// `[idx.len()]` row indices for `select`.
pub fn index_tensor(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}
