//! The engine: pools of shards, the upcall stage, waiters, and the system pool
//! under `/kascade` that stores pools, lambda bindings and pipelines.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::key::{Key, Prefix};
use crate::lambda::upcall::{BindingSet, UpcallPool};
use crate::lambda::{Binding, BindingSpec, Lambda, LambdaKind, LambdaStatsSnapshot};
use crate::object::{Ack, Get, KeyInfo, ObjectVersion, Put, RangeLimit, WriteResult};
use crate::pipeline::{check_name, PipelineSpec};
use crate::pool::{longest_match, FsyncPolicy, PoolConfig, Storage};
use crate::sequencer::Sequencer;
use crate::shard::{now_us, PoolState, Shard};
use crate::spin::WaitPolicy;
use crate::waiter::{Waiter, Waiters};

/// The prefix of the system pool, reserved for the engine's own metadata.
pub const SYSTEM_PREFIX: &str = "/kascade";
const POOLS: &str = "/kascade/pools";
const LAMBDAS: &str = "/kascade/lambdas";
const PIPELINES: &str = "/kascade/pipelines";

/// How an engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where persistent pools and the system pool live; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Upcall worker threads (with `WaitPolicy::BusyPoll`, at most one fewer than the CPUs).
    pub upcall_workers: usize,
    /// How idle upcall workers wait.
    pub upcall_wait: WaitPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: None,
            upcall_workers: 2,
            upcall_wait: WaitPolicy::default(),
        }
    }
}

/// The engine's GPU: in use, or off and why.
#[derive(Clone)]
enum GpuState {
    /// GPU support is off, for this reason.
    Off(String),
    /// This GPU is in use.
    #[cfg(feature = "cuda")]
    On(Arc<crate::gpu::Gpu>),
}

impl Default for GpuState {
    fn default() -> Self {
        #[cfg(feature = "cuda")]
        let reason = "GPU support was not set up for this engine (EngineBuilder::gpu)";
        #[cfg(not(feature = "cuda"))]
        let reason = crate::gpu::NO_FEATURE;
        GpuState::Off(reason.to_string())
    }
}

/// Delivers each visible version to its lambdas and waiters.
pub(crate) struct Dispatch {
    /// The bindings in force; replaced whole on bind/unbind, read on every dispatch.
    bindings: RwLock<Arc<BindingSet>>,
    pub(crate) waiters: Waiters,
    upcalls: OnceLock<UpcallPool>,
    flusher: Mutex<Option<std::thread::Thread>>,
    flush_requested: AtomicBool,
    /// Where versions of `gpu` pools are staged.
    #[cfg(feature = "cuda")]
    gpu: Option<Arc<crate::gpu::Gpu>>,
}

impl Dispatch {
    /// Hands a newly visible version to the upcall stage and wakes its waiters.
    pub(crate) fn dispatch(&self, object: &Arc<ObjectVersion>, config: &PoolConfig) {
        // Staged before the upcalls are queued, so the copy usually starts before a GPU
        // lambda asks for it; the staging thread copies, this only queues (never blocks).
        #[cfg(feature = "cuda")]
        if config.gpu {
            if let Some(gpu) = &self.gpu {
                gpu.stage_later(object);
            }
        }
        self.upcall(object, config);
        self.waiters.notify(object);
    }

    /// Hands `object` to the lambdas bound over its key, and to nothing else: what a
    /// trigger into a storing pool does (it is no version, so no waiter wakes).
    pub(crate) fn upcall(&self, object: &Arc<ObjectVersion>, config: &PoolConfig) {
        // The snapshot is read under the lock rather than cloned: no reference count
        // shared by every producer is touched per dispatch.
        let set = self.bindings.read();
        if set.bindings.is_empty() {
            return;
        }
        if let Some(upcalls) = self.upcalls.get() {
            let per_key = config.ordering == crate::pool::UpcallOrdering::PerKey;
            for (i, b) in set.bindings.iter().enumerate() {
                if object.key.is_under(&b.prefix) {
                    upcalls.submit(&set, i, object, per_key);
                }
            }
        }
    }

    /// Replaces the bindings snapshot with `bindings`.
    fn replace_bindings(&self, set: &mut Arc<BindingSet>, bindings: Vec<Arc<Binding>>) {
        *set = Arc::new(BindingSet {
            generation: set.generation + 1,
            bindings,
        });
    }

    /// Asks the background flusher to fsync soon (after an `Ack::Applied` write).
    pub(crate) fn request_flush(&self, _shard: &Shard) {
        if !self.flush_requested.swap(true, Ordering::SeqCst) {
            if let Some(t) = self.flusher.lock().as_ref() {
                t.unpark();
            }
        }
    }
}

/// Engine state shared by every handle.
pub struct EngineInner {
    config: EngineConfig,
    pools: RwLock<Vec<Arc<PoolState>>>,
    dispatch: Arc<Dispatch>,
    kinds: RwLock<HashMap<String, Arc<dyn LambdaKind>>>,
    specs: Mutex<HashMap<String, BindingSpec>>,
    pipelines: Mutex<HashMap<String, PipelineSpec>>,
    admin: Mutex<()>,
    stopping: AtomicBool,
    flusher: Mutex<Option<JoinHandle<()>>>,
    _lock: Option<File>,
    gets: metrics::Counter,
    ranges: metrics::Counter,
    gpu: GpuState,
}

/// A handle to a running engine; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<EngineInner>);

/// Registers lambda kinds before the engine opens, so stored bindings can be restored.
pub struct EngineBuilder {
    config: EngineConfig,
    kinds: HashMap<String, Arc<dyn LambdaKind>>,
    gpu: GpuState,
}

impl EngineBuilder {
    /// Registers a lambda kind under `name`.
    pub fn lambda_kind(mut self, name: &str, kind: impl LambdaKind) -> EngineBuilder {
        self.kinds.insert(name.to_string(), Arc::new(kind));
        self
    }

    /// Uses `gpu` for the pools with `gpu = true` (see [`crate::gpu`]).
    #[cfg(feature = "cuda")]
    pub fn gpu(mut self, gpu: Arc<crate::gpu::Gpu>) -> EngineBuilder {
        self.gpu = GpuState::On(gpu);
        self
    }

    /// Runs without a GPU, saying why: pools with `gpu = true` are reported inactive.
    pub fn gpu_off(mut self, reason: impl Into<String>) -> EngineBuilder {
        self.gpu = GpuState::Off(reason.into());
        self
    }

    /// Opens the engine: recovers the system pool, then every pool, binding and pipeline.
    pub fn open(self) -> Result<Engine> {
        Engine::open_with(self.config, self.kinds, self.gpu)
    }
}

fn pool_dir_name(prefix: &Prefix) -> String {
    let mut out = String::new();
    for b in prefix.as_str().bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long `open` keeps trying a data dir lock that someone holds.
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// Takes the data dir's `LOCK` file, so that two engines never share a data dir.
///
/// A lock can be held for a moment by no other kascade at all: while another
/// thread of this process forks a child, the child holds a copy of every open
/// file until it execs, the lock file of an engine just closed included. So a
/// held lock is retried for up to [`LOCK_RETRY`] before it is reported.
fn lock_data_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create data dir", dir, e))?;
    let path = dir.join("LOCK");
    let f = File::create(&path).map_err(|e| Error::io("create lock file", &path, e))?;
    let deadline = Instant::now() + LOCK_RETRY;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::io(
                    "lock data dir (is another kascade using it?)",
                    dir,
                    std::io::Error::from(std::io::ErrorKind::WouldBlock),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io("lock data dir", dir, e));
            }
        }
    }
}

fn shard_of(key: &Key, shards: usize) -> usize {
    (crc32c::crc32c(key.as_str().as_bytes()) as usize) % shards
}

impl Engine {
    /// A builder, to register lambda kinds before opening.
    pub fn builder(config: EngineConfig) -> EngineBuilder {
        EngineBuilder {
            config,
            kinds: HashMap::new(),
            gpu: GpuState::default(),
        }
    }

    /// Opens an engine with only the built-in lambda kinds.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        Engine::builder(config).open()
    }

    pub(crate) fn from_inner(inner: Arc<EngineInner>) -> Engine {
        Engine(inner)
    }

    fn open_with(
        config: EngineConfig,
        mut kinds: HashMap<String, Arc<dyn LambdaKind>>,
        gpu: GpuState,
    ) -> Result<Engine> {
        kinds
            .entry("forward".into())
            .or_insert_with(|| Arc::new(crate::lambda::forward_kind()));
        let lock = match &config.data_dir {
            Some(dir) => Some(lock_data_dir(dir)?),
            None => None,
        };
        let dispatch = Arc::new(Dispatch {
            bindings: RwLock::new(Arc::new(BindingSet {
                generation: 0,
                bindings: Vec::new(),
            })),
            waiters: Waiters::default(),
            upcalls: OnceLock::new(),
            flusher: Mutex::new(None),
            flush_requested: AtomicBool::new(false),
            #[cfg(feature = "cuda")]
            gpu: match &gpu {
                GpuState::On(g) => Some(g.clone()),
                GpuState::Off(_) => None,
            },
        });
        metrics::gauge!("kascade_gpu_available").set(match &gpu {
            GpuState::Off(_) => 0.0,
            #[cfg(feature = "cuda")]
            GpuState::On(_) => 1.0,
        });
        let inner = Arc::new_cyclic(|weak: &Weak<EngineInner>| {
            let _ = dispatch.upcalls.set(UpcallPool::start(
                config.upcall_workers,
                config.upcall_wait,
                weak.clone(),
            ));
            EngineInner {
                config: config.clone(),
                pools: RwLock::new(Vec::new()),
                dispatch: dispatch.clone(),
                kinds: RwLock::new(kinds),
                specs: Mutex::new(HashMap::new()),
                pipelines: Mutex::new(HashMap::new()),
                admin: Mutex::new(()),
                stopping: AtomicBool::new(false),
                flusher: Mutex::new(None),
                _lock: lock,
                gets: metrics::counter!("kascade_gets_total"),
                ranges: metrics::counter!("kascade_ranges_total"),
                gpu,
            }
        });
        let engine = Engine(inner);
        let storage = if config.data_dir.is_some() {
            Storage::Persistent
        } else {
            Storage::Volatile
        };
        engine.open_pool(PoolConfig::new(SYSTEM_PREFIX, storage).shards(1))?;
        engine.restore()?;
        engine.start_flusher();
        Ok(engine)
    }

    fn restore(&self) -> Result<()> {
        for info in self.list(&Prefix::new(POOLS)?)? {
            let Some(obj) = self.get(&info.key, Get::Latest)? else {
                continue;
            };
            match serde_json::from_slice::<PoolConfig>(&obj.value) {
                Ok(config) => {
                    if let Err(e) = self.open_pool(config) {
                        tracing::error!(key = %info.key, "could not open a stored pool: {e}");
                    }
                }
                Err(e) => {
                    tracing::error!(key = %info.key, "ignoring an unreadable pool config: {e}")
                }
            }
        }
        for info in self.list(&Prefix::new(LAMBDAS)?)? {
            let Some(obj) = self.get(&info.key, Get::Latest)? else {
                continue;
            };
            match serde_json::from_slice::<BindingSpec>(&obj.value) {
                Ok(spec) => {
                    if let Err(e) = self.activate(&spec) {
                        tracing::warn!(binding = %spec.name, "stored lambda binding not active: {e}");
                    }
                    self.0.specs.lock().insert(spec.name.clone(), spec);
                }
                Err(e) => {
                    tracing::error!(key = %info.key, "ignoring an unreadable lambda binding: {e}")
                }
            }
        }
        for info in self.list(&Prefix::new(PIPELINES)?)? {
            let Some(obj) = self.get(&info.key, Get::Latest)? else {
                continue;
            };
            match serde_json::from_slice::<PipelineSpec>(&obj.value) {
                Ok(spec) => {
                    for b in spec.bindings() {
                        if let Err(e) = self.activate(&b) {
                            tracing::warn!(binding = %b.name, "stored pipeline vertex not active: {e}");
                        }
                    }
                    self.0.pipelines.lock().insert(spec.name.clone(), spec);
                }
                Err(e) => tracing::error!(key = %info.key, "ignoring an unreadable pipeline: {e}"),
            }
        }
        Ok(())
    }

    fn start_flusher(&self) {
        let weak = Arc::downgrade(&self.0);
        let handle = std::thread::Builder::new()
            .name("kascade-flusher".into())
            .spawn(move || flusher(weak))
            .expect("spawning the flusher thread");
        *self.0.dispatch.flusher.lock() = Some(handle.thread().clone());
        *self.0.flusher.lock() = Some(handle);
    }

    // ----- pools -----

    fn open_pool(&self, config: PoolConfig) -> Result<Arc<PoolState>> {
        let prefix = config.validate()?;
        if config.gpu {
            self.log_gpu_pool(&prefix);
        }
        let shared = Arc::new(RwLock::new(Arc::new(config.clone())));
        let dir = self.pool_dir(&prefix);
        let mut shards = Vec::with_capacity(config.shards as usize);
        for i in 0..config.shards as usize {
            let shard_dir = dir.as_ref().map(|d| d.join(format!("shard-{i}")));
            shards.push(Shard::open(
                &prefix,
                shared.clone(),
                i,
                shard_dir.as_deref(),
                self.0.dispatch.clone(),
            )?);
        }
        let pool = Arc::new(PoolState {
            prefix: prefix.clone(),
            config: shared,
            shards,
        });
        let mut pools = self.0.pools.write();
        pools.retain(|p| p.prefix != prefix);
        pools.push(pool.clone());
        Ok(pool)
    }

    fn pool_dir(&self, prefix: &Prefix) -> Option<PathBuf> {
        self.0
            .config
            .data_dir
            .as_ref()
            .map(|d| d.join("pools").join(pool_dir_name(prefix)))
    }

    fn pool_key(prefix: &Prefix) -> Result<Key> {
        Key::new(&format!("{POOLS}/{}", pool_dir_name(prefix)))
    }

    /// Creates a pool and stores its config; it survives restart.
    pub fn create_pool(&self, config: PoolConfig) -> Result<()> {
        let _admin = self.0.admin.lock();
        let prefix = config.validate()?;
        if Prefix::new(SYSTEM_PREFIX)?.covers(prefix.as_str()) {
            return Err(Error::InvalidPoolConfig {
                prefix: config.prefix,
                reason: format!("{SYSTEM_PREFIX} is reserved for the engine"),
            });
        }
        if self.0.pools.read().iter().any(|p| p.prefix == prefix) {
            return Err(Error::PoolExists(prefix.to_string()));
        }
        let mut config = config;
        config.prefix = prefix.to_string();
        if let (Storage::Persistent, None) = (config.storage, &self.0.config.data_dir) {
            return Err(Error::InvalidPoolConfig {
                prefix: config.prefix,
                reason: "persistent pools need an engine with a data dir".into(),
            });
        }
        if let Some(dir) = self.pool_dir(&prefix) {
            // Leftovers of an earlier pool with this prefix must not be recovered into the new one.
            let _ = std::fs::remove_dir_all(dir);
        }
        self.open_pool(config.clone())?;
        self.store_json(Self::pool_key(&prefix)?, &config)
    }

    /// Changes a pool's retention, ordering, fsync policy, value limit or segment size.
    pub fn alter_pool(&self, config: PoolConfig) -> Result<()> {
        let _admin = self.0.admin.lock();
        let prefix = config.validate()?;
        let pool = self
            .0
            .pools
            .read()
            .iter()
            .find(|p| p.prefix == prefix && p.prefix.as_str() != SYSTEM_PREFIX)
            .cloned()
            .ok_or_else(|| Error::UnknownPool(prefix.to_string()))?;
        let mut config = config;
        config.prefix = prefix.to_string();
        config.validate_change(&pool.config.read())?;
        if config.gpu && !pool.config.read().gpu {
            self.log_gpu_pool(&prefix);
        }
        self.store_json(Self::pool_key(&prefix)?, &config)?;
        for s in &pool.shards {
            s.set_config(&config);
        }
        *pool.config.write() = Arc::new(config);
        Ok(())
    }

    /// Removes a pool and all its objects.
    pub fn remove_pool(&self, prefix: &str) -> Result<()> {
        let _admin = self.0.admin.lock();
        let prefix = Prefix::new(prefix)?;
        if prefix.as_str() == SYSTEM_PREFIX {
            return Err(Error::InvalidPoolConfig {
                prefix: prefix.to_string(),
                reason: "the system pool cannot be removed".into(),
            });
        }
        let removed = {
            let mut pools = self.0.pools.write();
            let before = pools.len();
            pools.retain(|p| p.prefix != prefix);
            before != pools.len()
        };
        if !removed {
            return Err(Error::UnknownPool(prefix.to_string()));
        }
        // Its keys and versions may be used again by a new pool: nothing cached may answer for them.
        #[cfg(feature = "cuda")]
        if let GpuState::On(gpu) = &self.0.gpu {
            gpu.invalidate(&prefix);
        }
        self.remove(&Self::pool_key(&prefix)?)?;
        if let Some(dir) = self.pool_dir(&prefix) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "could not delete a removed pool's files: {e}");
            }
        }
        Ok(())
    }

    /// Every pool's config, the system pool included.
    pub fn pools(&self) -> Vec<PoolConfig> {
        let mut out: Vec<PoolConfig> = self
            .0
            .pools
            .read()
            .iter()
            .map(|p| (**p.config.read()).clone())
            .collect();
        out.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        out
    }

    /// The config of the pool that holds `key`.
    pub fn pool_of(&self, key: &Key) -> Result<PoolConfig> {
        Ok((**self.pool(key.as_str())?.config.read()).clone())
    }

    fn pool(&self, key: &str) -> Result<Arc<PoolState>> {
        let pools = self.0.pools.read();
        longest_match(pools.iter().map(|p| (&p.prefix, p)), key)
            .cloned()
            .ok_or_else(|| Error::NoPool(key.to_string()))
    }

    /// The shard that holds `key` (placed by `affinity` when given), without taking a
    /// reference to its pool: the write path's lookup.
    fn shard_for(&self, key: &Key, affinity: Option<&Key>) -> Result<Arc<Shard>> {
        let pools = self.0.pools.read();
        let pool = longest_match(pools.iter().map(|p| (&p.prefix, p)), key.as_str())
            .ok_or_else(|| Error::NoPool(key.to_string()))?;
        let placement = affinity.unwrap_or(key);
        Ok(pool.shards[shard_of(placement, pool.shards.len())].clone())
    }

    fn shard(&self, key: &Key, affinity: Option<&Key>) -> Result<(Arc<PoolState>, Arc<Shard>)> {
        let pool = self.pool(key.as_str())?;
        let placement = affinity.unwrap_or(key);
        let shard = pool.shards[shard_of(placement, pool.shards.len())].clone();
        Ok((pool, shard))
    }

    // ----- GPU -----

    /// Says, once per pool opened or switched to `gpu = true`, whether its objects go to the GPU.
    fn log_gpu_pool(&self, prefix: &Prefix) {
        match &self.0.gpu {
            GpuState::Off(reason) => tracing::warn!(
                pool = %prefix,
                "pool asks for gpu = true, but GPU support is off ({reason}): its objects stay in host memory only (inactive)"
            ),
            #[cfg(feature = "cuda")]
            GpuState::On(gpu) => tracing::info!(
                pool = %prefix,
                device = %gpu.device().name,
                "new versions of this pool are staged in GPU memory"
            ),
        }
    }

    /// Whether the engine has GPU support (and if not, why), its device, cache, and
    /// the pools that ask for `gpu = true`.
    pub fn gpu_report(&self) -> crate::gpu::GpuReport {
        let available = !matches!(self.0.gpu, GpuState::Off(_));
        let pools = self
            .pools()
            .into_iter()
            .filter(|p| p.gpu)
            .map(|p| crate::gpu::GpuPool {
                prefix: p.prefix,
                active: available,
            })
            .collect();
        let mut report = crate::gpu::GpuReport {
            available,
            reason: None,
            feature: cfg!(feature = "cuda"),
            device: None,
            nvrtc: crate::gpu::nvrtc_present(),
            cache: None,
            pools,
        };
        match &self.0.gpu {
            GpuState::Off(reason) => report.reason = Some(reason.clone()),
            #[cfg(feature = "cuda")]
            GpuState::On(gpu) => {
                report.device = Some(gpu.device().clone());
                report.cache = Some(gpu.cache_report());
            }
        }
        report
    }

    /// The GPU in use, if any.
    #[cfg(feature = "cuda")]
    pub fn gpu(&self) -> Option<&Arc<crate::gpu::Gpu>> {
        match &self.0.gpu {
            GpuState::On(gpu) => Some(gpu),
            GpuState::Off(_) => None,
        }
    }

    /// `object`'s value in GPU memory when its pool has `gpu = true` and a GPU is in
    /// use: from the cache, or copied into it now. `None` otherwise (or when the value
    /// is larger than the whole cache): the caller copies the bytes itself.
    #[cfg(feature = "cuda")]
    pub fn gpu_object(
        &self,
        object: &ObjectVersion,
        transfer: &mut crate::gpu::Transfer,
    ) -> Result<Option<Arc<crate::gpu::GpuObject>>> {
        let GpuState::On(gpu) = &self.0.gpu else {
            return Ok(None);
        };
        let in_gpu_pool = self
            .pool(object.key.as_str())
            .is_ok_and(|p| p.config.read().gpu);
        if !in_gpu_pool || object.value.is_empty() {
            return Ok(None);
        }
        gpu.resident(object, transfer)
    }

    // ----- writes -----

    /// Stores a new version and returns where it landed, once durable.
    pub fn put(&self, put: Put) -> Result<WriteResult> {
        self.put_with(put, Ack::Durable)
    }

    /// Stores a new version, returning at the chosen acknowledgement point.
    pub fn put_with(&self, put: Put, ack: Ack) -> Result<WriteResult> {
        let shard = self.shard_for(&put.key, put.affinity.as_ref())?;
        Sequencer::write_one(&*shard, put, false, ack)
    }

    /// Stores several versions atomically: all keys must share one pool and one affinity key.
    pub fn put_many(&self, puts: Vec<Put>, ack: Ack) -> Result<Vec<WriteResult>> {
        let Some(first) = puts.first() else {
            return Ok(Vec::new());
        };
        let (pool, shard) = self.shard(&first.key, first.affinity.as_ref())?;
        for p in &puts {
            let other = self.pool(p.key.as_str())?;
            if !Arc::ptr_eq(&other, &pool) || p.affinity != first.affinity {
                return Err(Error::NotOneAffinitySet(format!(
                    "{} and {} differ in pool or affinity key",
                    first.key, p.key
                )));
            }
            if p.affinity.is_none() && p.key != first.key {
                return Err(Error::NotOneAffinitySet(format!(
                    "{} and {} have no affinity key naming one set",
                    first.key, p.key
                )));
            }
        }
        Sequencer::write(&*shard, puts.into_iter().map(|p| (p, false)).collect(), ack)
    }

    /// Upcalls lambdas bound over `key` with `value` without storing anything.
    ///
    /// In a `trigger` pool the trigger is ordered like a put: it advances the key's
    /// seq and wakes its waiters. In a pool that stores, it is no version: the seq
    /// stays, and waiters (which wait for stored versions) do not wake.
    pub fn trigger(&self, key: &Key, value: impl Into<Bytes>) -> Result<WriteResult> {
        let value = value.into();
        let shard = self.shard_for(key, None)?;
        if shard.storage() == Storage::Trigger {
            // In a trigger pool a trigger is ordered like a put: it advances the key's seq.
            return Sequencer::write_one(
                &*shard,
                Put::new(key.clone(), value),
                false,
                Ack::Applied,
            );
        }
        Sequencer::trigger(&*shard, key, value)
    }

    /// Removes an object: writes a tombstone version, keeping its history readable.
    pub fn remove(&self, key: &Key) -> Result<WriteResult> {
        let shard = self.shard_for(key, None)?;
        let put = Put::new(key.clone(), Bytes::new());
        Sequencer::write_one(&*shard, put, true, Ack::Durable)
    }

    /// Drops a key's history before `start_seq`; returns the new first seq.
    pub fn trim(&self, key: &Key, start_seq: u64) -> Result<u64> {
        let shard = self.shard_for(key, None)?;
        Sequencer::trim(&*shard, key, start_seq)
    }

    // ----- reads -----

    /// Reads a version of `key`; `None` when there is no such version (or the latest is a tombstone).
    pub fn get(&self, key: &Key, query: Get) -> Result<Option<Arc<ObjectVersion>>> {
        self.0.gets.increment(1);
        Ok(self.shard_for(key, None)?.get(key, query))
    }

    /// Reads a version of an object placed by an affinity key.
    pub fn get_placed(
        &self,
        key: &Key,
        affinity: &Key,
        query: Get,
    ) -> Result<Option<Arc<ObjectVersion>>> {
        self.0.gets.increment(1);
        Ok(self.shard_for(key, Some(affinity))?.get(key, query))
    }

    /// Reads the versions of `key` from `from_seq` on, within `limit`.
    pub fn range(
        &self,
        key: &Key,
        from_seq: u64,
        limit: RangeLimit,
    ) -> Result<Vec<Arc<ObjectVersion>>> {
        self.0.ranges.increment(1);
        self.shard_for(key, None)?.range(key, from_seq, limit)
    }

    /// A key's first and next seq; zeros for a key never written.
    pub fn bounds(&self, key: &Key) -> Result<KeyInfo> {
        Ok(self.shard_for(key, None)?.info(key).unwrap_or(KeyInfo {
            key: key.clone(),
            start_seq: 0,
            next_seq: 0,
            latest_version: 0,
            removed: false,
        }))
    }

    /// Keys at or under `prefix` (not removed), sorted.
    pub fn list(&self, prefix: &Prefix) -> Result<Vec<KeyInfo>> {
        let pools = self.0.pools.read().clone();
        let mut out = Vec::new();
        for pool in pools {
            if prefix.covers(pool.prefix.as_str()) || pool.prefix.covers(prefix.as_str()) {
                for s in &pool.shards {
                    s.list(prefix, &mut out);
                }
            }
        }
        // A key under a longer pool's prefix belongs to that pool only.
        let all = self.0.pools.read().clone();
        out.retain(|info| {
            longest_match(all.iter().map(|p| (&p.prefix, p)), info.key.as_str())
                .is_some_and(|p| p.shards.iter().any(|s| s.info(&info.key).is_some()))
        });
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    /// The keys placed by `affinity` in the pool of `pool_key` (any key in that pool).
    pub fn affinity_set(&self, pool_key: &Key, affinity: &Key) -> Result<Vec<Key>> {
        let shard = self.shard_for(pool_key, Some(affinity))?;
        Ok(shard.affinity_set(affinity))
    }

    /// The dedup state of a key's writers: `(writer, epoch, next sequence)`.
    pub fn writers_of(&self, key: &Key) -> Result<Vec<(u64, u32, i64)>> {
        Ok(self.shard_for(key, None)?.writers_of(key))
    }

    /// Why the shard holding `key` refuses writes, if it does (corruption, I/O failure).
    pub fn shard_failure(&self, key: &Key) -> Result<Option<String>> {
        Ok(self.shard_for(key, None)?.failure())
    }

    // ----- waiters -----

    /// A waiter that fires once `key` holds a visible version at or past `seq`.
    pub fn wait_for_seq(&self, key: &Key, seq: u64) -> Result<Waiter> {
        let shard = self.shard_for(key, None)?;
        let w = self.0.dispatch.waiters.for_key(key, seq);
        if shard.info(key).is_some_and(|i| i.next_seq > seq) {
            self.0.dispatch.waiters.fire_now(&w);
        }
        Ok(w)
    }

    /// A waiter that fires on the next version under `prefix`.
    pub fn wait_for_prefix(&self, prefix: &Prefix) -> Waiter {
        self.0.dispatch.waiters.for_prefix(prefix)
    }

    // ----- lambdas -----

    /// Binds an in-process lambda to `prefix` (not stored: bind it again after a restart).
    pub fn bind_local(&self, name: &str, prefix: &str, lambda: Arc<dyn Lambda>) -> Result<()> {
        check_name(name).map_err(Error::Lambda)?;
        let binding = Binding::new(name.to_string(), Prefix::new(prefix)?, lambda, Vec::new());
        self.install(binding);
        Ok(())
    }

    /// Binds a lambda of a registered kind and stores the binding, so it survives restart.
    pub fn bind(&self, spec: BindingSpec) -> Result<()> {
        let _admin = self.0.admin.lock();
        check_name(&spec.name).map_err(Error::Lambda)?;
        self.activate(&spec)?;
        self.store_json(Key::new(&format!("{LAMBDAS}/{}", spec.name))?, &spec)?;
        self.0.specs.lock().insert(spec.name.clone(), spec);
        Ok(())
    }

    fn activate(&self, spec: &BindingSpec) -> Result<()> {
        let kind = self
            .0
            .kinds
            .read()
            .get(&spec.kind)
            .cloned()
            .ok_or_else(|| {
                Error::Lambda(format!(
                    "no lambda kind named {:?} is registered",
                    spec.kind
                ))
            })?;
        let lambda = kind.build_binding(spec).map_err(|e| Error::Lambda(e.0))?;
        let mut destinations = Vec::new();
        for d in &spec.destinations {
            destinations.push((Prefix::new(&d.prefix)?, d.mode));
        }
        self.install(Binding::new(
            spec.name.clone(),
            Prefix::new(&spec.prefix)?,
            lambda,
            destinations,
        ));
        Ok(())
    }

    fn install(&self, binding: Binding) {
        let dispatch = &self.0.dispatch;
        let mut set = dispatch.bindings.write();
        let mut next: Vec<Arc<Binding>> = set
            .bindings
            .iter()
            .filter(|b| b.name != binding.name)
            .cloned()
            .collect();
        let old: Vec<Arc<Binding>> = set
            .bindings
            .iter()
            .filter(|b| b.name == binding.name)
            .cloned()
            .collect();
        next.push(Arc::new(binding));
        dispatch.replace_bindings(&mut set, next);
        drop(set);
        for b in old {
            b.lambda.removed();
        }
    }

    /// Removes a binding (stored or local); true when one existed.
    pub fn unbind(&self, name: &str) -> Result<bool> {
        let _admin = self.0.admin.lock();
        let existed = self.uninstall(name);
        if self.0.specs.lock().remove(name).is_some() {
            self.remove(&Key::new(&format!("{LAMBDAS}/{name}"))?)?;
        }
        Ok(existed)
    }

    fn uninstall(&self, name: &str) -> bool {
        let dispatch = &self.0.dispatch;
        let mut set = dispatch.bindings.write();
        let next: Vec<Arc<Binding>> = set
            .bindings
            .iter()
            .filter(|b| b.name != name)
            .cloned()
            .collect();
        let old: Vec<Arc<Binding>> = set
            .bindings
            .iter()
            .filter(|b| b.name == name)
            .cloned()
            .collect();
        let existed = !old.is_empty();
        if existed {
            dispatch.replace_bindings(&mut set, next);
        }
        drop(set);
        for b in old {
            b.lambda.removed();
        }
        existed
    }

    /// The names of the registered lambda kinds, sorted (what a binding's `kind` may be).
    pub fn lambda_kinds(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.kinds.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// The stored bindings (local ones are not listed).
    pub fn binding_specs(&self) -> Vec<BindingSpec> {
        let mut v: Vec<_> = self.0.specs.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Counters of every active binding.
    pub fn lambda_stats(&self) -> Vec<LambdaStatsSnapshot> {
        self.0
            .dispatch
            .bindings
            .read()
            .bindings
            .iter()
            .map(|b| b.snapshot())
            .collect()
    }

    /// Counters of each stage of pipeline `name`, in the order of its vertices
    /// (a vertex that is not active is left out); `None` when no such pipeline is loaded.
    pub fn pipeline_stats(&self, name: &str) -> Option<Vec<LambdaStatsSnapshot>> {
        let names: Vec<String> = self
            .0
            .pipelines
            .lock()
            .get(name)?
            .bindings()
            .into_iter()
            .map(|b| b.name)
            .collect();
        let set = self.0.dispatch.bindings.read().clone();
        Some(
            names
                .iter()
                .filter_map(|n| set.bindings.iter().find(|b| &b.name == n))
                .map(|b| b.snapshot())
                .collect(),
        )
    }

    /// The upcall worker threads running (`BusyPoll` runs fewer than asked, see [`WaitPolicy`]).
    pub fn upcall_workers(&self) -> usize {
        self.0.dispatch.upcalls.get().map_or(0, |u| u.workers())
    }

    /// Upcalls queued and not yet started.
    pub fn upcall_backlog(&self) -> usize {
        self.0.dispatch.upcalls.get().map_or(0, |u| u.backlog())
    }

    // ----- pipelines -----

    /// Loads (or replaces) a pipeline: binds each vertex and stores the description.
    pub fn load_pipeline(&self, spec: PipelineSpec) -> Result<()> {
        spec.validate()?;
        let _admin = self.0.admin.lock();
        if let Some(old) = self.0.pipelines.lock().get(&spec.name) {
            for b in old.bindings() {
                self.uninstall(&b.name);
            }
        }
        for b in spec.bindings() {
            if let Err(e) = self.activate(&b) {
                for b in spec.bindings() {
                    self.uninstall(&b.name);
                }
                return Err(Error::Pipeline(format!("vertex {}: {e}", b.name)));
            }
        }
        self.store_json(Key::new(&format!("{PIPELINES}/{}", spec.name))?, &spec)?;
        self.0.pipelines.lock().insert(spec.name.clone(), spec);
        Ok(())
    }

    /// Removes a pipeline and its bindings; true when it existed.
    pub fn remove_pipeline(&self, name: &str) -> Result<bool> {
        let _admin = self.0.admin.lock();
        let Some(spec) = self.0.pipelines.lock().remove(name) else {
            return Ok(false);
        };
        for b in spec.bindings() {
            self.uninstall(&b.name);
        }
        self.remove(&Key::new(&format!("{PIPELINES}/{name}"))?)?;
        Ok(true)
    }

    /// The loaded pipelines.
    pub fn pipelines(&self) -> Vec<PipelineSpec> {
        let mut v: Vec<_> = self.0.pipelines.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn store_json<T: serde::Serialize>(&self, key: Key, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Lambda(e.to_string()))?;
        self.put(Put::new(key, bytes)).map(|_| ())
    }

    /// The data dir, if the engine has one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.0.config.data_dir.as_deref()
    }

    /// Flushes every persistent shard and stops the engine's threads; further writes still work
    /// but lambdas no longer run. Called on drop of the last handle too.
    pub fn shutdown(&self) {
        self.0.shutdown();
    }
}

impl EngineInner {
    fn shutdown(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(t) = self.dispatch.flusher.lock().as_ref() {
            t.unpark();
        }
        if let Some(h) = self.flusher.lock().take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        for pool in self.pools.read().iter() {
            for s in &pool.shards {
                s.flush();
            }
        }
        if let Some(u) = self.dispatch.upcalls.get() {
            u.shutdown();
        }
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The background thread: fsyncs `interval` pools and writes acknowledged before
/// their fsync, and applies age retention. It is never on a write's latency path.
fn flusher(engine: Weak<EngineInner>) {
    let mut last_sweep = Instant::now();
    let mut last_interval_flush = Instant::now();
    loop {
        let period = {
            let Some(inner) = engine.upgrade() else {
                return;
            };
            if inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            let requested = inner.dispatch.flush_requested.swap(false, Ordering::SeqCst);
            let pools = inner.pools.read().clone();
            let mut period = Duration::from_secs(1);
            for pool in &pools {
                let config = pool.config.read().clone();
                let interval = match config.fsync {
                    FsyncPolicy::Interval { ms } => Some(Duration::from_millis(ms)),
                    FsyncPolicy::Always => None,
                };
                if let Some(i) = interval {
                    period = period.min(i);
                }
                let due = requested || interval.is_some_and(|i| last_interval_flush.elapsed() >= i);
                if config.storage == Storage::Persistent && due {
                    for s in &pool.shards {
                        if s.is_dirty() {
                            s.flush();
                        }
                    }
                }
            }
            if last_interval_flush.elapsed() >= period {
                last_interval_flush = Instant::now();
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                let now = now_us();
                for pool in &pools {
                    for s in &pool.shards {
                        s.sweep(now);
                    }
                }
            }
            period
        };
        std::thread::park_timeout(period);
    }
}
