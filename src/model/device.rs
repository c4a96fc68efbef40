//! Where a model runs, from a user's spelling: `cpu` (burn's Flex CPU backend) or `cuda:N` (the
//! N-th NVIDIA GPU; needs the `cuda` feature). Training wraps the result with `.autodiff()`.

use anyhow::{Context, bail};
use burn::tensor::Device;

/// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    let spec = spec.trim();
    if spec == "cpu" {
        return Ok(Device::default());
    }
    let Some(rest) = spec.strip_prefix("cuda") else {
        bail!("unknown device {spec:?} (expected cpu, cuda or cuda:N)");
    };
    let index: usize = match rest.strip_prefix(':') {
        None if rest.is_empty() => 0,
        Some(n) => n
            .parse()
            .with_context(|| format!("device {spec:?}: {n:?} is not a GPU index"))?,
        None => bail!("unknown device {spec:?} (expected cpu, cuda or cuda:N)"),
    };
    cuda(index).with_context(|| format!("device {spec:?}"))
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> anyhow::Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(index: usize) -> anyhow::Result<Device> {
    bail!("GPU {index}: this build has no GPU support (rebuild with `--features cuda`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_errors() {
        assert!(!parse_device("cpu").expect("cpu").is_autodiff());
        for bad in ["gpu", "cuda:x", "cuda0", "cuda:-1", ""] {
            assert!(parse_device(bad).is_err(), "{bad:?} should be rejected");
        }
        if cfg!(not(feature = "cuda")) {
            let e = parse_device("cuda:1").expect_err("no cuda feature");
            assert!(format!("{e:#}").contains("--features cuda"), "{e:#}");
        }
    }
}
