//! GPU-resident objects (feature `cuda`).
//!
//! A pool with `gpu = true` keeps each new version of its objects in GPU memory
//! too: after the sequencer applies a version, the upcall stage hands it to a
//! staging thread ([`Gpu`]) that copies it once, through pinned host memory,
//! into a bounded device cache (LRU by size, affinity sets kept and evicted
//! together, entries keyed by `(key, version)` so a stale version is never
//! served). GPU lambdas (the broker's `cuda` kind) find their input there, or
//! copy it themselves when it is not resident yet.
//!
//! Everything here checks that the CUDA driver can be loaded before it makes a
//! CUDA call: without the feature, a driver or a device, the engine runs as
//! usual, pools keep `gpu = true` (reported inactive) and [`GpuReport`] says why.

#[cfg(feature = "cuda")]
mod device;
#[cfg(any(feature = "cuda", test))]
pub(crate) mod lru;
#[cfg(feature = "cuda")]
mod transfer;

#[cfg(feature = "cuda")]
pub use device::{Gpu, GpuObject, GpuOptions};
#[cfg(feature = "cuda")]
pub use transfer::Transfer;

use serde::{Deserialize, Serialize};

/// The GPU the engine uses, as reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// The CUDA device ordinal.
    pub ordinal: usize,
    /// Its name, as the driver gives it.
    pub name: String,
    /// Compute capability, `major.minor`.
    pub compute_capability: String,
    /// Device memory, bytes.
    pub memory_bytes: u64,
    /// The driver's CUDA version, `major.minor`.
    pub driver_version: String,
}

/// What the GPU cache holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuCacheReport {
    /// The most bytes it holds.
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
    /// Versions the staging thread had no room in its queue for (a lambda copies them on use).
    pub stage_skipped: u64,
}

/// A pool that asks for `gpu = true`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuPool {
    /// The pool's prefix.
    pub prefix: String,
    /// True when its objects are staged in GPU memory; false while GPU support is off.
    pub active: bool,
}

/// Whether the engine has GPU support, and if not, why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuReport {
    /// True when a GPU is in use.
    pub available: bool,
    /// Why GPU support is off (no driver, no device, built without the feature, ...).
    pub reason: Option<String>,
    /// True when this build has the `cuda` feature.
    pub feature: bool,
    /// The device, when one is in use.
    pub device: Option<GpuDevice>,
    /// True when NVRTC (the CUDA C compiler GPU lambdas are built with) can be loaded.
    pub nvrtc: bool,
    /// The cache of GPU-resident objects, when a GPU is in use.
    pub cache: Option<GpuCacheReport>,
    /// The pools that ask for `gpu = true`.
    pub pools: Vec<GpuPool>,
}

/// The reason GPU support is off in a build without the `cuda` feature.
pub const NO_FEATURE: &str = "this build has no GPU support (built without the `cuda` feature)";

/// True when NVRTC, the CUDA C compiler, can be loaded (always false without the feature).
pub fn nvrtc_present() -> bool {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: loading and unloading the library runs its initialisers only; cudarc
        // tries the same names it would load later. No symbol of it is called.
        std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
            .unwrap_or(false)
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}
