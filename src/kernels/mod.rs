//! Hand-written ops: CPU kernels with their backward passes, taking tensors (never modules), and
//! the process-wide switch that turns them off (`fused`).

pub mod attention;
pub mod cpu;
pub mod cross_entropy;
pub mod dispatch;
pub mod fused;
pub mod gelu;
pub mod head_loss;
pub mod layer_norm;
pub mod matmul;
pub mod matvec;
pub mod projection;
pub mod rms_norm;
pub mod rope_apply;
pub mod softmax;
pub mod swiglu;
pub mod tensor;
