//! GPU support of the broker: opens the GPU the settings name (feature `cuda`),
//! says in the log whether GPU support is on and, if not, why, and hands the
//! GPU (or the reason) to the engine and to the `cuda` lambda kind.
//!
//! Nothing here makes a CUDA call before `kascade_core::gpu::Gpu::open` has
//! checked that the driver library loads: a broker built with the feature
//! starts on a machine without a driver or a GPU, logs that GPU support is off,
//! and reports it at `GET /v1/gpu` and as the metric `kascade_gpu_available 0`.

use std::sync::Arc;

use kascade_core::EngineBuilder;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::lambdas::LambdaHost;

/// Whether the broker uses a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// Use one when the driver and a device are there (needs the `cuda` feature).
    #[default]
    Auto,
    /// Never touch CUDA.
    Off,
}

/// Sets up GPU support for a broker about to open its engine: the engine's GPU
/// (for pools with `gpu = true`) and the `cuda` kind's.
pub fn attach(config: &Config, lambdas: &Arc<LambdaHost>, builder: EngineBuilder) -> EngineBuilder {
    #[cfg(feature = "cuda")]
    {
        use kascade_core::gpu::{Gpu, GpuOptions};
        let opened = match config.gpu {
            GpuMode::Off => Err("turned off by --gpu off (KASCADE_GPU=off)".to_string()),
            GpuMode::Auto => Gpu::open(&GpuOptions {
                device: config.gpu_device,
                cache_bytes: config.gpu_cache_bytes,
            }),
        };
        lambdas.set_gpu(opened.clone());
        match opened {
            Ok(gpu) => {
                let device = gpu.device();
                tracing::info!(
                    device = %device.name,
                    ordinal = device.ordinal,
                    compute_capability = %device.compute_capability,
                    driver = %device.driver_version,
                    cache_bytes = gpu.cache_report().capacity_bytes,
                    nvrtc = kascade_core::gpu::nvrtc_present(),
                    "GPU support is on"
                );
                builder.gpu(gpu)
            }
            Err(reason) => {
                tracing::warn!(
                    "GPU support is off: {reason}; pools with gpu = true stay in host memory and cuda lambdas cannot be deployed"
                );
                builder.gpu_off(reason)
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (config, lambdas);
        builder.gpu_off(kascade_core::gpu::NO_FEATURE)
    }
}
