//! Batched matrix products for the fused attention op, on the CPU backend straight through the
//! `gemm` crate into a result buffer we allocate.
//!
//! Why not burn-flex's `float_matmul`: in burn-flex 0.22 every product's output is allocated as a
//! zeroed byte vector and then copied into a fresh 16-byte-aligned buffer
//! (`Bytes::from_bytes_vec`), two serial passes over the result on the calling thread. For the
//! attention scores (`[batch, kv_heads, group * q, k]`, 60 MiB per decoder layer here) that was a
//! visible share of a training step. Inputs are read in place through their strides (transposed
//! views included), as burn-flex does. Other backends, dtypes and broadcast batch dimensions use
//! the backend's product.

use super::cpu::f32_tensor;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata};
use burn::tensor::{DType, Shape};
use rayon::prelude::*;

/// A backend's batched matrix product, `[.., m, k] x [.., k, n]`, with a faster CPU path.
pub trait BatchMatmul: Backend {
    fn batch_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(a, b)
    }
}

impl BatchMatmul for Flex {
    fn batch_matmul(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        if fits(&a, &b) {
            flex_matmul(&a, &b)
        } else {
            Flex::float_matmul(a, b)
        }
    }
}

/// f32, same rank >= 2, same batch dimensions, matching inner dimensions.
fn fits(a: &FlexTensor, b: &FlexTensor) -> bool {
    let (da, db) = (a.shape().to_vec(), b.shape().to_vec());
    let r = da.len();
    a.dtype() == DType::F32
        && b.dtype() == DType::F32
        && r >= 2
        && db.len() == r
        && da[..r - 2] == db[..r - 2]
        && da[r - 1] == db[r - 2]
}

/// Raw pointers handed to the thread pool; each task writes only its own output matrix.
#[derive(Clone, Copy)]
struct Ptrs {
    a: *const f32,
    b: *const f32,
    out: *mut f32,
}
// SAFETY: the inputs are only read, and tasks write disjoint output matrices.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

impl Ptrs {
    /// Taken through a method so that closures capture the whole (`Send`) struct rather than
    /// its raw-pointer fields.
    fn get(self) -> (*const f32, *const f32, *mut f32) {
        (self.a, self.b, self.out)
    }
}

fn flex_matmul(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let da = a.shape().to_vec();
    let r = da.len();
    let (m, k, n) = (da[r - 2], da[r - 1], b.shape()[r - 1]);
    let batch_dims = &da[..r - 2];
    let batch: usize = batch_dims.iter().product();
    let (sa, sb) = (a.layout().strides().to_vec(), b.layout().strides().to_vec());
    // Element offset of batch item `i` in a tensor with strides `s`.
    let offset = |mut i: usize, s: &[isize]| {
        let mut o = 0isize;
        for d in (0..batch_dims.len()).rev() {
            o += (i % batch_dims[d]) as isize * s[d];
            i /= batch_dims[d];
        }
        o
    };
    let mut out = vec![0f32; batch * m * n];
    let p = Ptrs {
        // SAFETY: start offsets lie within the buffers (burn-flex layouts).
        a: unsafe { a.storage::<f32>().as_ptr().add(a.layout().start_offset()) },
        b: unsafe { b.storage::<f32>().as_ptr().add(b.layout().start_offset()) },
        out: out.as_mut_ptr(),
    };
    let one = |i: usize, parallelism: gemm::Parallelism| {
        let (pa, pb, pout) = p.get();
        // SAFETY: `offset` and the strides address elements of `a` and `b` (their layouts),
        // and output matrix `i` is `m * n` elements of `out`, written by this call only.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                pout.add(i * m * n),
                1,
                n as isize,
                false,
                pa.offset(offset(i, &sa)),
                sa[r - 1],
                sa[r - 2],
                pb.offset(offset(i, &sb)),
                sb[r - 1],
                sb[r - 2],
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    };
    // Whole matrices per thread when there are enough of them, else gemm splits each one.
    if batch >= rayon::current_num_threads() {
        (0..batch)
            .into_par_iter()
            .for_each(|i| one(i, gemm::Parallelism::None));
    } else {
        (0..batch).for_each(|i| one(i, gemm::Parallelism::Rayon(0)));
    }
    let mut dims = da;
    dims[r - 1] = n;
    f32_tensor(out, Shape::from(dims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn flex(dims: [usize; 4], seed: f32) -> FlexTensor {
        let len: usize = dims.iter().product();
        let v: Vec<f32> = (0..len).map(|i| (i as f32 * 0.61 + seed).sin()).collect();
        FlexTensor::from_data(TensorData::new(v, dims))
    }

    #[test]
    fn products_match_burn_flex_including_transposed_views() {
        // One batch item per thread and fewer than the threads; plain and transposed right sides.
        for batch in [1, 8] {
            let a = flex([2, batch, 5, 7], 0.0).reshape(Shape::new([2 * batch, 1, 5, 7]));
            let b = flex([2 * batch, 1, 9, 7], 1.0).transpose(2, 3); // [.., 7, 9], strided
            let c = flex([2 * batch, 1, 7, 9], 2.0);
            for rhs in [b, c] {
                assert!(fits(&a, &rhs));
                let got = Flex::batch_matmul(a.clone(), rhs.clone()).into_data();
                let want = Flex::float_matmul(a.clone(), rhs).into_data();
                got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-5));
            }
        }
    }

    #[test]
    fn broadcast_batches_take_burn_flex() {
        let a = flex([2, 3, 5, 7], 0.0);
        let b = flex([1, 3, 7, 4], 1.0);
        assert!(!fits(&a, &b));
        let got = Flex::batch_matmul(a.clone(), b.clone()).into_data();
        got.assert_approx_eq::<f32>(
            &Flex::float_matmul(a, b).into_data(),
            burn::tensor::Tolerance::absolute(1e-5),
        );
    }
}
