//! The composed forms of the fused CPU kernels are what a GPU (or any backend other than burn's
//! CPU one) runs. With the fused kernels switched off (`kernels::fused`), the CPU takes that same
//! code, so the fixture's reference checks here prove the GPU's code path against transformers
//! and the authors' objective, at the f32 tolerances, without a GPU.

mod common;

use common::{check_forward, pearl_fixture};

fn composed_only() {
    // Process-wide, and every test of this binary wants it off.
    pearl::kernels::fused::set_enabled(false);
}

#[test]
fn composed_forward_matches_transformers() {
    composed_only();
    for name in ["forward_single", "forward_batch", "forward_text_only"] {
        check_forward(name);
    }
}

#[test]
fn composed_pearl_objective_matches_the_reference() {
    composed_only();
    pearl_fixture::check_against_reference();
}

/// The same for Qwen3-VL: its vision LayerNorms and tanh-GELU MLPs run composed from burn's ops.
#[test]
fn composed_qwen3_forward_and_objective_match_the_references() {
    composed_only();
    let dir = common::qwen3_fixture_dir();
    for name in ["forward_single", "forward_batch", "forward_text_only"] {
        common::check_forward_in(&dir, name);
    }
    pearl_fixture::check_against_reference_in(&dir);
}
