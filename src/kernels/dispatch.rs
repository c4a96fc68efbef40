//! The one place that decides where a hand-written op runs.
//!
//! An op with a fused form describes it as a [`Kernel`]: its forward pass on the CPU backend's
//! tensors, and its backward pass from what the forward pass saved. [`fused`] tries the kernel
//! on each backend of the ladder, in order, and the first on which all the op's tensors live
//! runs it:
//!
//! 1. `Autodiff<Flex, NoCheckpointing>`: training;
//! 2. `Autodiff<Flex, BalancedCheckpointing>`: training with gradient checkpointing;
//! 3. `Flex`: inference.
//!
//! `None` (another backend or dtype, or the switch in [`super::fused`] off) tells the caller to
//! compose the op from burn's differentiable ops, which is what a GPU runs.
//!
//! The autodiff side is written once, for any backend (`impl Runs for Autodiff<B, C>`).
//!
//! An op written once in burn's own tensor ops, so that every backend runs it, but with a
//! backward pass of its own (blockwise attention, which must not keep what burn's autodiff would
//! keep), is a [`Portable`] op: [`portable`] runs it on plain tensors directly, and on autodiff
//! tensors through the same machinery, with the portable op as the kernel of the inner backend.
//! A backend gets that custom backward pass by having its autodiff rungs in [`portable`].

use super::fused;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{BackendPrimitive, Float, Tensor};
use std::fmt::Debug;
use std::marker::PhantomData;

/// An op with `N` float tensor inputs and one float output, computed by hand on backend `B`.
/// What is not a tensor (an epsilon, target ids, a scale) lives in the implementing value.
pub trait Kernel<B: Backend, const N: usize>: Clone + Debug + Send + 'static {
    /// What the backward pass needs from the forward pass.
    type Saved: Clone + Debug + Send + 'static;

    /// The output; with `track`, also what the backward pass needs (`None` without).
    fn forward(
        &self,
        inputs: [FloatTensor<B>; N],
        track: bool,
    ) -> (FloatTensor<B>, Option<Self::Saved>);

    /// The inputs' gradients from the output's, `d_out`; only those in `wanted` are needed
    /// (the others' `None`s are ignored).
    fn backward(
        self,
        saved: Self::Saved,
        d_out: FloatTensor<B>,
        wanted: [bool; N],
    ) -> [Option<FloatTensor<B>>; N];
}

/// A backend a kernel for `B` runs on: `B` itself, or `B` under autodiff with any checkpointing.
pub trait Runs<K: Kernel<B, N>, B: Backend, const N: usize>: Backend {
    fn run(kernel: K, inputs: [FloatTensor<Self>; N]) -> FloatTensor<Self>;
}

impl<K: Kernel<Flex, N>, const N: usize> Runs<K, Flex, N> for Flex {
    fn run(kernel: K, inputs: [FloatTensor<Flex>; N]) -> FloatTensor<Flex> {
        kernel.forward(inputs, false).0
    }
}

impl<K: Kernel<B, N>, B: Backend, C: CheckpointStrategy, const N: usize> Runs<K, B, N>
    for Autodiff<B, C>
{
    fn run(kernel: K, inputs: [FloatTensor<Self>; N]) -> FloatTensor<Self> {
        // Guards first: they keep the inputs' graph nodes registered while the primitives are used.
        let nodes = inputs.each_ref().map(|t| t.node());
        let prep = KernelBackward::<K>(PhantomData)
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful();
        let inputs = inputs.map(|t| t.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let (out, saved) = kernel.forward(inputs, true);
                let saved = saved.expect("a tracked kernel saves its state");
                prep.finish((kernel, saved), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(kernel.forward(inputs, false).0),
        }
    }
}

/// The backward step of kernel `K` in burn's autodiff graph.
#[derive(Debug)]
struct KernelBackward<K>(PhantomData<K>);

impl<K: Kernel<B, N>, B: Backend, const N: usize> Backward<B, N> for KernelBackward<K> {
    type State = (K, K::Saved);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let (kernel, saved) = ops.state;
        let wanted = ops.parents.each_ref().map(|p| p.is_some());
        let d_inputs = kernel.backward(saved, d_out, wanted);
        for (parent, d) in ops.parents.into_iter().zip(d_inputs) {
            if let (Some(node), Some(d)) = (parent, d) {
                grads.register::<B>(node.id, d);
            }
        }
    }
}

/// Runs `kernel` on the first backend of the ladder that holds all of `inputs` (each a
/// tensor's [`Tensor::into_dispatch`]), or `None`: then the caller composes the op. The output
/// has rank `D`.
pub fn fused<K: Kernel<Flex, N>, const N: usize, const D: usize>(
    kernel: K,
    inputs: [DispatchTensor; N],
) -> Option<Tensor<D>> {
    if !fused::enabled() {
        return None;
    }
    on::<Autodiff<Flex, NoCheckpointing>, K, N, D>(&kernel, &inputs)
        .or_else(|| on::<Autodiff<Flex, BalancedCheckpointing>, K, N, D>(&kernel, &inputs))
        .or_else(|| on::<Flex, K, N, D>(&kernel, &inputs))
}

/// Runs `kernel` on backend `R` if every input lives there.
fn on<R, K, const N: usize, const D: usize>(
    kernel: &K,
    inputs: &[DispatchTensor; N],
) -> Option<Tensor<D>>
where
    K: Kernel<Flex, N>,
    R: Runs<K, Flex, N>,
    Float: BackendPrimitive<R, Primitive = FloatTensor<R>>,
    DispatchTensor: DispatchKindConversion<R>,
{
    on_backend::<R, Flex, K, N, D>(kernel, inputs)
}

/// Runs `kernel` (a kernel for backend `B`) on backend `R` if every input lives there.
fn on_backend<R, B, K, const N: usize, const D: usize>(
    kernel: &K,
    inputs: &[DispatchTensor; N],
) -> Option<Tensor<D>>
where
    B: Backend,
    K: Kernel<B, N>,
    R: Runs<K, B, N>,
    Float: BackendPrimitive<R, Primitive = FloatTensor<R>>,
    DispatchTensor: DispatchKindConversion<R>,
{
    let prims = inputs.each_ref().map(|t| primitive::<R>(t.clone()));
    if prims.iter().any(Option::is_none) {
        return None;
    }
    let prims = prims.map(|p| p.expect("checked above"));
    Some(Tensor::from_primitive::<R>(R::run(kernel.clone(), prims)))
}

/// Whether `t` lives on a backend of the fused kernels' ladder (the CPU backend, with or without
/// autodiff).
pub fn on_cpu<const D: usize>(t: &Tensor<D>) -> bool {
    let t = t.clone().into_dispatch();
    primitive::<Flex>(t.clone()).is_some()
        || primitive::<Autodiff<Flex, NoCheckpointing>>(t.clone()).is_some()
        || primitive::<Autodiff<Flex, BalancedCheckpointing>>(t).is_some()
}

/// An op with `N` float inputs of rank `D` and one float output of rank `O`, written in burn's
/// tensor ops (so every backend runs it), with a backward pass of its own. Its tensors are plain
/// ones (no autodiff); what is not a tensor lives in the implementing value.
pub trait Portable<const N: usize, const D: usize, const O: usize>:
    Clone + Debug + Send + 'static
{
    /// What the backward pass needs from the forward pass.
    type Saved: Clone + Debug + Send + 'static;

    /// The output; with `track`, also what the backward pass needs (`None` without).
    fn forward(&self, inputs: [Tensor<D>; N], track: bool) -> (Tensor<O>, Option<Self::Saved>);

    /// The inputs' gradients from the output's; only those in `wanted` are needed.
    fn backward(
        self,
        saved: Self::Saved,
        d_out: Tensor<O>,
        wanted: [bool; N],
    ) -> [Option<Tensor<D>>; N];
}

/// Portable op `P` as the kernel of backend `B`: primitives in, primitives out.
#[derive(Debug, Clone)]
struct OnBackend<P, const D: usize, const O: usize>(P);

impl<P, B, const N: usize, const D: usize, const O: usize> Kernel<B, N> for OnBackend<P, D, O>
where
    P: Portable<N, D, O>,
    B: Backend,
    Float: BackendPrimitive<B, Primitive = FloatTensor<B>>,
    DispatchTensor: DispatchKindConversion<B>,
{
    type Saved = P::Saved;

    fn forward(
        &self,
        inputs: [FloatTensor<B>; N],
        track: bool,
    ) -> (FloatTensor<B>, Option<P::Saved>) {
        let inputs = inputs.map(|p| Tensor::<D>::from_primitive::<B>(p));
        let (out, saved) = self.0.forward(inputs, track);
        (into_primitive::<B, O>(out), saved)
    }

    fn backward(
        self,
        saved: P::Saved,
        d_out: FloatTensor<B>,
        wanted: [bool; N],
    ) -> [Option<FloatTensor<B>>; N] {
        let d_out = Tensor::<O>::from_primitive::<B>(d_out);
        let grads = self.0.backward(saved, d_out, wanted);
        grads.map(|g| g.map(into_primitive::<B, D>))
    }
}

/// The primitive of a portable op's tensor: its ops keep the inputs' backend.
fn into_primitive<B: Backend, const D: usize>(t: Tensor<D>) -> FloatTensor<B>
where
    Float: BackendPrimitive<B, Primitive = FloatTensor<B>>,
    DispatchTensor: DispatchKindConversion<B>,
{
    match primitive::<B>(t.into_dispatch()) {
        Some(p) => p,
        None => unreachable!("a portable op's tensors stay on its inputs' backend"),
    }
}

/// Runs portable op `op`: on plain tensors directly; on autodiff tensors with its own backward
/// pass, on the backends whose autodiff rungs are here (the CPU's, and with the `cuda` or `wgpu`
/// feature the GPU's). `None` for autodiff tensors elsewhere: the caller composes the op.
pub fn portable<P, const N: usize, const D: usize, const O: usize>(
    op: P,
    inputs: [Tensor<D>; N],
) -> Option<Tensor<O>>
where
    P: Portable<N, D, O>,
{
    if !inputs.iter().any(|t| t.is_autodiff()) {
        return Some(op.forward(inputs, false).0);
    }
    let kernel = OnBackend::<P, D, O>(op);
    let inputs = inputs.map(|t| t.into_dispatch());
    on_backend::<Autodiff<Flex, NoCheckpointing>, Flex, _, N, O>(&kernel, &inputs)
        .or_else(|| {
            on_backend::<Autodiff<Flex, BalancedCheckpointing>, Flex, _, N, O>(&kernel, &inputs)
        })
        .or_else(|| on_gpu(&kernel, &inputs))
}

/// The GPU's autodiff rungs (burn's cubecl backend, whose device says CUDA, wgpu or another
/// runtime): the same generic code the CPU rungs run, so GPU training keeps blockwise attention
/// and the chunked head loss. Run on wgpu (`tests/wgpu_device.rs`); CUDA shares the code.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn on_gpu<P, const N: usize, const D: usize, const O: usize>(
    kernel: &OnBackend<P, D, O>,
    inputs: &[DispatchTensor; N],
) -> Option<Tensor<O>>
where
    P: Portable<N, D, O>,
{
    use burn::backend::Cube;
    on_backend::<Autodiff<Cube, NoCheckpointing>, Cube, _, N, O>(kernel, inputs).or_else(|| {
        on_backend::<Autodiff<Cube, BalancedCheckpointing>, Cube, _, N, O>(kernel, inputs)
    })
}

/// Without a GPU feature there is no GPU backend to try.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn on_gpu<P, const N: usize, const D: usize, const O: usize>(
    _: &OnBackend<P, D, O>,
    _: &[DispatchTensor; N],
) -> Option<Tensor<O>> {
    None
}

/// The float primitive of a tensor on backend `R`, if it lives there.
fn primitive<R: Backend>(t: DispatchTensor) -> Option<FloatTensor<R>>
where
    Float: BackendPrimitive<R, Primitive = FloatTensor<R>>,
    DispatchTensor: DispatchKindConversion<R>,
{
    let t = <DispatchTensor as DispatchKindConversion<R>>::try_into_backend(t).ok()?;
    <Float as BackendPrimitive<R>>::try_into_primitive(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::FlexTensor;
    use burn::backend::ops::FloatTensorOps;
    use burn::tensor::{Device, TensorData, Tolerance};
    use std::sync::{Arc, Mutex};

    /// `y = 2 a + b`, recording which gradients its backward pass was asked for.
    #[derive(Debug, Clone, Default)]
    struct TwiceAPlusB {
        asked: Arc<Mutex<Option<[bool; 2]>>>,
    }

    impl Kernel<Flex, 2> for TwiceAPlusB {
        type Saved = ();

        fn forward(&self, [a, b]: [FlexTensor; 2], track: bool) -> (FlexTensor, Option<()>) {
            let y = Flex::float_add(Flex::float_mul_scalar(a, 2.0.into()), b);
            (y, track.then_some(()))
        }

        fn backward(self, _: (), d: FlexTensor, wanted: [bool; 2]) -> [Option<FlexTensor>; 2] {
            *self.asked.lock().unwrap() = Some(wanted);
            [Some(Flex::float_mul_scalar(d.clone(), 2.0.into())), Some(d)]
        }
    }

    fn run(device: &Device) -> (Option<Tensor<1>>, TwiceAPlusB, Tensor<1>, Tensor<1>) {
        let a = Tensor::<1>::from_data(TensorData::from([1.0f32, -2.0, 3.0]), device);
        let b = Tensor::<1>::from_data(TensorData::from([0.5f32, 0.5, 0.5]), device);
        let kernel = TwiceAPlusB::default();
        let args = [a.clone().into_dispatch(), b.clone().into_dispatch()];
        (fused(kernel.clone(), args), kernel, a, b)
    }

    #[test]
    fn runs_on_the_plain_cpu_backend() {
        let device = Device::flex();
        let (y, _, _, _) = run(&device);
        let y = y.expect("the plain CPU backend is a rung");
        let want = TensorData::from([2.5f32, -3.5, 6.5]);
        y.into_data()
            .assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-6));
    }

    /// Both autodiff rungs: the kernel's backward pass gives the inputs' gradients, and is asked
    /// only for those of inputs that need one.
    #[test]
    fn runs_with_its_backward_under_autodiff_with_and_without_checkpointing() {
        for checkpointing in [false, true] {
            let mut device = Device::flex().autodiff();
            if checkpointing {
                device = device.gradient_checkpointing();
            }
            let probe = Tensor::<1>::zeros([1], &device);
            let on_rung = match checkpointing {
                true => probe.try_into_primitive::<Autodiff<Flex, BalancedCheckpointing>>(),
                false => probe.try_into_primitive::<Autodiff<Flex, NoCheckpointing>>(),
            };
            assert!(on_rung.is_ok(), "the device is the rung under test");

            let a = Tensor::<1>::from_data(TensorData::from([1.0f32, -2.0, 3.0]), &device)
                .require_grad();
            let b = Tensor::<1>::from_data(TensorData::from([0.5f32, 0.5, 0.5]), &device);
            let kernel = TwiceAPlusB::default();
            let args = [a.clone().into_dispatch(), b.clone().into_dispatch()];
            let y: Tensor<1> = fused(kernel.clone(), args).expect("an autodiff rung");
            let grads = y.mul_scalar(3.0).sum().backward();
            let da = a.grad(&grads).expect("a's gradient");
            da.into_data().assert_approx_eq::<f32>(
                &TensorData::from([6.0f32, 6.0, 6.0]),
                Tolerance::absolute(1e-6),
            );
            assert!(b.grad(&grads).is_none(), "b needs no gradient");
            assert_eq!(*kernel.asked.lock().unwrap(), Some([true, false]));
        }
    }

    #[test]
    fn untracked_inputs_run_without_a_backward_pass() {
        let device = Device::flex().autodiff();
        let (y, kernel, _, _) = run(&device);
        let y = y.expect("an autodiff rung");
        y.into_data().assert_approx_eq::<f32>(
            &TensorData::from([2.5f32, -3.5, 6.5]),
            Tolerance::absolute(1e-6),
        );
        assert_eq!(*kernel.asked.lock().unwrap(), None);
    }
}
