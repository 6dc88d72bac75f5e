//! GPU support: whether the broker uses a GPU (and if not, why), which, what its
//! cache of GPU-resident objects holds, and which pools ask for `gpu = true`.

use axum::extract::State;
use axum::Json;
use kascade_core::GpuReport;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Shared;

/// The GPU in use.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuDeviceBody {
    /// The CUDA device ordinal.
    pub ordinal: usize,
    /// Its name.
    pub name: String,
    /// Compute capability, `major.minor`.
    pub compute_capability: String,
    /// Device memory, bytes.
    pub memory_bytes: u64,
    /// The driver's CUDA version, `major.minor`.
    pub driver_version: String,
}

/// The cache of GPU-resident objects.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuCacheBody {
    /// The most bytes it holds (`--gpu-cache-bytes`).
    pub capacity_bytes: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Versions held now.
    pub entries: u64,
    /// Lookups that found their version resident.
    pub hits: u64,
    /// Lookups that had to copy it.
    pub misses: u64,
    /// Versions evicted to make room.
    pub evictions: u64,
    /// Versions larger than the whole cache (never cached).
    pub too_big: u64,
    /// Versions the staging thread copied.
    pub staged: u64,
    /// Versions the staging thread had no room in its queue for.
    pub stage_skipped: u64,
}

/// A pool that asks for `gpu = true`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuPoolBody {
    /// Its prefix.
    pub prefix: String,
    /// False while GPU support is off: its objects stay in host memory only.
    pub active: bool,
}

/// Whether the broker uses a GPU.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuStatus {
    /// True when a GPU is in use.
    pub available: bool,
    /// Why GPU support is off.
    pub reason: Option<String>,
    /// True when the broker was built with the `cuda` feature.
    pub feature: bool,
    /// The GPU in use.
    pub device: Option<GpuDeviceBody>,
    /// True when NVRTC (needed to deploy CUDA C; PTX needs none) can be loaded.
    pub nvrtc: bool,
    /// The cache of GPU-resident objects.
    pub cache: Option<GpuCacheBody>,
    /// The pools that ask for `gpu = true`.
    pub pools: Vec<GpuPoolBody>,
}

impl From<GpuReport> for GpuStatus {
    fn from(r: GpuReport) -> GpuStatus {
        GpuStatus {
            available: r.available,
            reason: r.reason,
            feature: r.feature,
            device: r.device.map(|d| GpuDeviceBody {
                ordinal: d.ordinal,
                name: d.name,
                compute_capability: d.compute_capability,
                memory_bytes: d.memory_bytes,
                driver_version: d.driver_version,
            }),
            nvrtc: r.nvrtc,
            cache: r.cache.map(|c| GpuCacheBody {
                capacity_bytes: c.capacity_bytes,
                bytes: c.bytes,
                entries: c.entries,
                hits: c.hits,
                misses: c.misses,
                evictions: c.evictions,
                too_big: c.too_big,
                staged: c.staged,
                stage_skipped: c.stage_skipped,
            }),
            pools: r
                .pools
                .into_iter()
                .map(|p| GpuPoolBody {
                    prefix: p.prefix,
                    active: p.active,
                })
                .collect(),
        }
    }
}

/// Whether the broker uses a GPU, and if not, why.
#[utoipa::path(operation_id = "gpu_status", get, path = "/v1/gpu", tag = "broker",
    responses((status = 200, description = "GPU support, its device and cache, and the pools that ask for it", body = GpuStatus)))]
pub async fn status(State(state): State<Shared>) -> Json<GpuStatus> {
    Json(state.engine.gpu_report().into())
}
