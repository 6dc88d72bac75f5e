//! The GPU the engine uses: its CUDA context, the cache of GPU-resident
//! versions, and the staging thread that fills it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaSlice};
use parking_lot::Mutex;

use super::lru::{Entry, Lookup, Lru};
use super::transfer::Transfer;
use super::{GpuCacheReport, GpuDevice};
use crate::error::{Error, Result};
use crate::key::Prefix;
use crate::object::ObjectVersion;

/// Versions waiting for the staging thread; past this, new ones are left to the lambdas.
const STAGE_QUEUE: usize = 4096;

/// How the engine opens its GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// The CUDA device ordinal.
    pub device: usize,
    /// The cache's capacity in bytes; 0 takes a quarter of the device memory free at start.
    pub cache_bytes: u64,
}

/// One version resident in GPU memory (shared: it outlives an eviction while in use).
pub type GpuObject = Entry<CudaSlice<u8>>;

impl GpuObject {
    /// The device address of the value's first byte.
    pub fn device_address(&self, transfer: &Transfer) -> Option<CUdeviceptr> {
        self.buffer().map(|b| transfer.address(b))
    }
}

/// An open GPU: context, cache and staging thread.
pub struct Gpu {
    context: Arc<CudaContext>,
    device: GpuDevice,
    cache: Mutex<Lru<CudaSlice<u8>>>,
    stage: Mutex<Option<SyncSender<Arc<ObjectVersion>>>>,
    staged: AtomicU64,
    stage_skipped: AtomicU64,
    metrics: CacheMetrics,
}

struct CacheMetrics {
    bytes: metrics::Gauge,
    entries: metrics::Gauge,
    hits: metrics::Counter,
    misses: metrics::Counter,
    evictions: metrics::Counter,
    staged_bytes: metrics::Counter,
    stage_skipped: metrics::Counter,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("device", &self.device).finish()
    }
}

impl Gpu {
    /// Opens device `options.device`, after checking that the CUDA driver can be
    /// loaded at all; the error says in words why GPU support is off.
    pub fn open(options: &GpuOptions) -> std::result::Result<Arc<Gpu>, String> {
        // SAFETY: loading the driver library runs its initialisers only; no symbol is
        // called. cudarc panics on a CUDA call when the library is missing, so this
        // check comes before any.
        let present =
            std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
                .unwrap_or(false);
        if !present {
            return Err(
                "no CUDA driver: libcuda.so could not be loaded (install the NVIDIA driver, or set LD_LIBRARY_PATH to its directory)"
                    .into(),
            );
        }
        // A driver too old for the bindings lacks symbols, which cudarc answers with a panic.
        match std::panic::catch_unwind(|| Gpu::open_device(options)) {
            Ok(result) => result,
            Err(panic) => Err(format!(
                "the CUDA driver could not be used (is it older than CUDA 13?): {}",
                panic_text(&panic)
            )),
        }
    }

    fn open_device(options: &GpuOptions) -> std::result::Result<Arc<Gpu>, String> {
        let count = CudaContext::device_count()
            .map_err(|e| format!("the CUDA driver found no usable device: {e}"))?;
        if count <= 0 {
            return Err("the CUDA driver is installed but reports no GPU".into());
        }
        if options.device >= count as usize {
            return Err(format!(
                "GPU {} was asked for (--gpu-device), but the driver reports {count}",
                options.device
            ));
        }
        let context = CudaContext::new(options.device)
            .map_err(|e| format!("could not open GPU {}: {e}", options.device))?;
        // Synchronisation is explicit here: every copy and kernel waits for its own
        // stream before its buffers are used elsewhere or freed (see `Transfer`).
        // SAFETY: no device buffer exists yet, and every user follows that rule.
        unsafe { context.disable_event_tracking() };
        let name = context.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = context
            .compute_capability()
            .map_err(|e| format!("could not read the GPU's compute capability: {e}"))?;
        let memory = context.total_mem().unwrap_or(0) as u64;
        let free = context
            .mem_get_info()
            .map(|(free, _)| free as u64)
            .unwrap_or(memory);
        let mut version = 0i32;
        // SAFETY: a plain out-parameter of the right type.
        let driver = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        let driver_version = if driver == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            format!("{}.{}", version / 1000, (version % 1000) / 10)
        } else {
            "unknown".into()
        };
        let capacity = if options.cache_bytes > 0 {
            options.cache_bytes
        } else {
            free / 4
        };
        let gpu = Arc::new(Gpu {
            context,
            device: GpuDevice {
                ordinal: options.device,
                name,
                compute_capability: format!("{major}.{minor}"),
                memory_bytes: memory,
                driver_version,
            },
            cache: Mutex::new(Lru::new(capacity)),
            stage: Mutex::new(None),
            staged: AtomicU64::new(0),
            stage_skipped: AtomicU64::new(0),
            metrics: CacheMetrics {
                bytes: metrics::gauge!("kascade_gpu_cache_bytes"),
                entries: metrics::gauge!("kascade_gpu_cache_entries"),
                hits: metrics::counter!("kascade_gpu_cache_hits_total"),
                misses: metrics::counter!("kascade_gpu_cache_misses_total"),
                evictions: metrics::counter!("kascade_gpu_cache_evictions_total"),
                staged_bytes: metrics::counter!("kascade_gpu_staged_bytes_total"),
                stage_skipped: metrics::counter!("kascade_gpu_stage_skipped_total"),
            },
        });
        metrics::gauge!("kascade_gpu_cache_capacity_bytes").set(capacity as f64);
        let (tx, rx) = sync_channel(STAGE_QUEUE);
        let weak = Arc::downgrade(&gpu);
        std::thread::Builder::new()
            .name("kascade-gpu-stage".into())
            .spawn(move || stager(weak, rx))
            .map_err(|e| format!("could not start the GPU staging thread: {e}"))?;
        *gpu.stage.lock() = Some(tx);
        Ok(gpu)
    }

    /// The CUDA context (for loading modules and making streams).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }

    /// The device, as reported.
    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    /// Compute capability `(major, minor)`, for compiling kernels for this device.
    pub fn compute_capability(&self) -> (u32, u32) {
        let mut parts = self.device.compute_capability.split('.');
        let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (next(), next())
    }

    /// The cache's counters.
    pub fn cache_report(&self) -> GpuCacheReport {
        let mut report = self.cache.lock().counters();
        report.staged = self.staged.load(Ordering::Relaxed);
        report.stage_skipped = self.stage_skipped.load(Ordering::Relaxed);
        report
    }

    /// Queues `object` for the staging thread; never blocks (a full queue leaves the
    /// copy to the first lambda that needs it).
    pub fn stage_later(&self, object: &Arc<ObjectVersion>) {
        if object.tombstone || object.value.is_empty() {
            return;
        }
        let sender = self.stage.lock();
        let Some(sender) = sender.as_ref() else {
            return;
        };
        match sender.try_send(object.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stage_skipped.fetch_add(1, Ordering::Relaxed);
                self.metrics.stage_skipped.increment(1);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// `object`'s value in GPU memory: from the cache, or copied now (once, whoever
    /// asks first; concurrent askers wait for that copy). `None` when the value is
    /// larger than the whole cache: the caller copies it to memory of its own.
    pub fn resident(
        &self,
        object: &ObjectVersion,
        transfer: &mut Transfer,
    ) -> Result<Option<Arc<GpuObject>>> {
        let lookup = self.cache.lock().lookup(object);
        let (entry, reserved) = match lookup {
            Lookup::TooBig => return Ok(None),
            Lookup::Hit(entry) => (entry, false),
            Lookup::Reserved(entry) => (entry, true),
        };
        if reserved {
            self.metrics.misses.increment(1);
        } else {
            self.metrics.hits.increment(1);
        }
        let filled = entry.buf.get_or_init(|| {
            let copy = transfer.alloc(object.value.len()).and_then(|buf| {
                transfer.upload(&object.value, transfer.address(&buf))?;
                Ok(buf)
            });
            if copy.is_ok() {
                self.metrics
                    .staged_bytes
                    .increment(object.value.len() as u64);
            }
            copy.map_err(|e| e.to_string())
        });
        let failed = filled.as_ref().err().cloned();
        {
            let mut cache = self.cache.lock();
            if failed.is_some() {
                cache.forget(&entry);
            }
            let c = cache.counters();
            self.metrics.bytes.set(c.bytes as f64);
            self.metrics.entries.set(c.entries as f64);
            self.metrics.evictions.absolute(c.evictions);
        }
        match failed {
            Some(e) => Err(Error::Gpu(format!(
                "staging {} version {} in GPU memory: {e}",
                object.key, object.version
            ))),
            None => Ok(Some(entry)),
        }
    }

    /// Drops the cached versions of every key under `prefix` (its pool was removed).
    pub fn invalidate(&self, prefix: &Prefix) {
        self.cache.lock().invalidate(prefix);
    }

    /// A copier with a stream of its own, for a thread that copies or launches.
    pub fn transfer(self: &Arc<Self>) -> Result<Transfer> {
        Transfer::new(self)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Closing the queue ends the staging thread.
        self.stage.lock().take();
    }
}

/// The staging thread: copies each queued version into the cache, off the
/// sequencer's and the lambdas' paths.
fn stager(gpu: Weak<Gpu>, queue: Receiver<Arc<ObjectVersion>>) {
    let mut transfer: Option<Transfer> = None;
    while let Ok(object) = queue.recv() {
        let Some(gpu) = gpu.upgrade() else {
            return;
        };
        if transfer.is_none() {
            match gpu.transfer() {
                Ok(t) => transfer = Some(t),
                Err(e) => {
                    tracing::warn!("the GPU staging thread has no stream: {e}");
                    continue;
                }
            }
        }
        let Some(t) = transfer.as_mut() else {
            continue;
        };
        match gpu.resident(&object, t) {
            Ok(Some(_)) => {
                gpu.staged.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("{e}"),
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}
