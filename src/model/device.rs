//! Where a model runs, from a user's spelling: `cpu` (burn's Flex CPU backend) or `cuda:N` (the
//! N-th NVIDIA GPU; needs the `cuda` feature). Training wraps the result with `.autodiff()`.

use anyhow::{Context, bail};
use burn::tensor::Device;
use std::fmt;

/// A parsed device spelling, comparable before any device is touched (`cuda` and `cuda:0` are the
/// same GPU), so that a run file's device list can be checked for duplicates and mixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`; whether the build can use it is checked by
    /// [`DeviceSpec::device`].
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let spec = spec.trim();
        if spec == "cpu" {
            return Ok(Self::Cpu);
        }
        let Some(rest) = spec.strip_prefix("cuda") else {
            bail!("unknown device {spec:?} (expected cpu, cuda or cuda:N)");
        };
        match rest.strip_prefix(':') {
            None if rest.is_empty() => Ok(Self::Cuda(0)),
            Some(n) => Ok(Self::Cuda(n.parse().with_context(|| {
                format!("device {spec:?}: {n:?} is not a GPU index")
            })?)),
            None => bail!("unknown device {spec:?} (expected cpu, cuda or cuda:N)"),
        }
    }

    /// Parses a spelling and checks that this build has its backend: what a command's
    /// `--device` flag takes, so that a GPU build's flag is refused before any work starts.
    pub fn parse_available(spec: &str) -> anyhow::Result<Self> {
        let parsed = Self::parse(spec)?;
        parsed.check_built()?;
        Ok(parsed)
    }

    /// Whether this build has the device's backend (without touching the device).
    pub fn check_built(self) -> anyhow::Result<()> {
        match self {
            Self::Cpu => Ok(()),
            Self::Cuda(index) if cfg!(not(feature = "cuda")) => bail!(
                "device \"{self}\": GPU {index} needs a build with GPU support (rebuild with `--features cuda`)"
            ),
            Self::Cuda(_) => Ok(()),
        }
    }

    /// The burn device (without autodiff).
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            // Explicitly Flex: `Device::default()` is the GPU in a build with `--features cuda`.
            Self::Cpu => Ok(Device::flex()),
            Self::Cuda(index) => cuda(index).with_context(|| format!("device \"{self}\"")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Parses `cpu`, `cuda` (GPU 0) or `cuda:N` into a device.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    DeviceSpec::parse(spec)?.device()
}

/// `device` with autodiff, for training; with burn's balanced gradient checkpointing (cheap
/// activations recomputed in the backward pass instead of kept) when asked.
pub fn training_device(device: Device, gradient_checkpointing: bool) -> Device {
    let device = device.autodiff();
    if gradient_checkpointing {
        device.gradient_checkpointing()
    } else {
        device
    }
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

    #[test]
    fn specs_normalise_gpu_zero() {
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse(" cuda:0 ").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("cuda:3").unwrap().to_string(), "cuda:3");
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
    }
}
