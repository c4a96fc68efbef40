//! Where a model runs, from a user's spelling: `cpu` (burn's Flex CPU backend), `cuda:N` (the
//! N-th NVIDIA GPU; needs the `cuda` feature) or `wgpu[:API]` (burn's wgpu backend, the CubeCL
//! kernels a CUDA build runs, through a graphics API; needs the `wgpu` feature). Training wraps
//! the result with `.autodiff()`.

use anyhow::{Context, bail};
use burn::tensor::Device;
use std::fmt;

const EXPECTED: &str = "expected cpu, cuda, cuda:N, wgpu, wgpu:gl or wgpu:vulkan";

/// A parsed device spelling, comparable before any device is touched (`cuda` and `cuda:0` are the
/// same GPU), so that a run file's device list can be checked for duplicates and mixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Wgpu(WgpuApi),
}

/// The graphics API a `wgpu` device runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WgpuApi {
    /// wgpu's choice: a GPU's Vulkan (or Metal, DX12) where there is one, else a software one.
    Auto,
    /// OpenGL (EGL) only: on a machine without a GPU, Mesa's llvmpipe software rasteriser,
    /// which runs every kernel here (Mesa 22.3's Vulkan rasteriser, lavapipe, crashes while
    /// building the matmul and reduce pipelines, so `wgpu` must not pick it).
    Gl,
    /// Vulkan only.
    Vulkan,
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda` (GPU 0), `cuda:N`, `wgpu`, `wgpu:gl` or `wgpu:vulkan`; whether the
    /// build can use it is checked by [`DeviceSpec::device`].
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let spec = spec.trim();
        match spec {
            "cpu" => return Ok(Self::Cpu),
            "wgpu" => return Ok(Self::Wgpu(WgpuApi::Auto)),
            "wgpu:gl" => return Ok(Self::Wgpu(WgpuApi::Gl)),
            "wgpu:vulkan" => return Ok(Self::Wgpu(WgpuApi::Vulkan)),
            _ => {}
        }
        let Some(rest) = spec.strip_prefix("cuda") else {
            bail!("unknown device {spec:?} ({EXPECTED})");
        };
        match rest.strip_prefix(':') {
            None if rest.is_empty() => Ok(Self::Cuda(0)),
            Some(n) => Ok(Self::Cuda(n.parse().with_context(|| {
                format!("device {spec:?}: {n:?} is not a GPU index")
            })?)),
            None => bail!("unknown device {spec:?} ({EXPECTED})"),
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
            Self::Wgpu(_) if cfg!(not(feature = "wgpu")) => bail!(
                "device \"{self}\" needs a build with the wgpu backend (rebuild with `--features wgpu`)"
            ),
            Self::Wgpu(_) => Ok(()),
        }
    }

    /// The burn device (without autodiff).
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            // Explicitly Flex: `Device::default()` is the GPU in a build with `--features cuda`.
            Self::Cpu => Ok(Device::flex()),
            Self::Cuda(index) => cuda(index).with_context(|| format!("device \"{self}\"")),
            Self::Wgpu(api) => wgpu(api).with_context(|| format!("device \"{self}\"")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Wgpu(WgpuApi::Auto) => write!(f, "wgpu"),
            Self::Wgpu(WgpuApi::Gl) => write!(f, "wgpu:gl"),
            Self::Wgpu(WgpuApi::Vulkan) => write!(f, "wgpu:vulkan"),
        }
    }
}

/// Parses a device spelling ([`DeviceSpec::parse`]) into a device.
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

/// The wgpu device on `api`, brought up once per process: burn registers a wgpu runtime once
/// (a second `init` of the same one is an error), and every later call shares it. Choosing the
/// API here is what spares the user an environment variable (`WGPU_BACKEND`).
#[cfg(feature = "wgpu")]
fn wgpu(api: WgpuApi) -> anyhow::Result<Device> {
    use burn::tensor::wgpu::WgpuBackend;
    use std::sync::OnceLock;
    static DEVICES: [OnceLock<Result<Device, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (slot, backend) = match api {
        WgpuApi::Auto => (&DEVICES[0], WgpuBackend::Auto),
        WgpuApi::Gl => (&DEVICES[1], WgpuBackend::Gl),
        WgpuApi::Vulkan => (&DEVICES[2], WgpuBackend::Vulkan),
    };
    let device = slot.get_or_init(|| {
        Device::wgpu_options()
            .graphics_api(backend)
            .init()
            .map_err(|e| format!("no wgpu adapter on {backend:?}: {e}"))
    });
    device.clone().map_err(anyhow::Error::msg)
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_: WgpuApi) -> anyhow::Result<Device> {
    bail!("this build has no wgpu backend (rebuild with `--features wgpu`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_errors() {
        assert!(!parse_device("cpu").expect("cpu").is_autodiff());
        for bad in [
            "gpu",
            "cuda:x",
            "cuda0",
            "cuda:-1",
            "",
            "wgpu:",
            "wgpu:metal",
            "wgpu0",
        ] {
            assert!(parse_device(bad).is_err(), "{bad:?} should be rejected");
        }
        if cfg!(not(feature = "cuda")) {
            let e = parse_device("cuda:1").expect_err("no cuda feature");
            assert!(format!("{e:#}").contains("--features cuda"), "{e:#}");
        }
        if cfg!(not(feature = "wgpu")) {
            for spec in ["wgpu", "wgpu:gl"] {
                let e = DeviceSpec::parse_available(spec).expect_err("no wgpu feature");
                let e = format!("{e:#}");
                assert!(e.contains(spec) && e.contains("--features wgpu"), "{e}");
                let e = parse_device(spec).expect_err("no wgpu feature");
                assert!(format!("{e:#}").contains("--features wgpu"), "{e:#}");
            }
        }
    }

    #[test]
    fn specs_normalise_gpu_zero() {
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse(" cuda:0 ").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("cuda:3").unwrap().to_string(), "cuda:3");
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        for (spelling, api) in [
            ("wgpu", WgpuApi::Auto),
            ("wgpu:gl", WgpuApi::Gl),
            (" wgpu:vulkan", WgpuApi::Vulkan),
        ] {
            let spec = DeviceSpec::parse(spelling).unwrap();
            assert_eq!(spec, DeviceSpec::Wgpu(api));
            assert_eq!(spec.to_string(), spelling.trim());
        }
    }
}
