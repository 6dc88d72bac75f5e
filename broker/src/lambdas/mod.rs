//! The lambda kinds the broker registers on the engine, beside core's
//! built-in `forward`:
//! - `wasm` (feature `wasm`, on by default): sandboxed WebAssembly modules,
//!   compiled once at bind, run with a fuel budget and a memory cap per call;
//! - `cdylib`: trusted shared libraries with a C ABI (`include/kascade_lambda.h`),
//!   handed pointers into the stored value (zero-copy);
//! - `cuda` (feature `cuda`): GPU kernels (CUDA C compiled by NVRTC at deploy,
//!   or PTX), launched on the input in GPU memory.
//!
//! Both run behind one adaptor ([`HandlerLambda`]): a call's writes (emit, put,
//! trigger) are collected and made only once the handler returns success, so a
//! failing or trapping call writes nothing. When the bound key is a Kafka
//! partition (`/cms/topics/T/p`, whose versions are record batches), the
//! handler runs once per record, and what it emits to a destination under
//! `/cms/topics/T2` is appended to topic `T2` as one record batch, through the
//! produce path (see [`topics`]). The ABI is documented in `docs/lambdas.md`.
//!
//! [`LambdaHost`] registers the kinds before the engine opens (so stored
//! bindings come back after a restart) and links them to the Kafka face once
//! it runs.

pub mod cdylib;
#[cfg(feature = "cuda")]
pub mod cuda;
mod output;
pub mod process;
pub mod topics;
#[cfg(feature = "wasm")]
pub mod wasm;

use std::sync::{Arc, Weak};

use bytes::Bytes;
use kascade_core::{
    Engine, EngineBuilder, Get, Key, Lambda, LambdaContext, LambdaError, ObjectVersion,
};
use parking_lot::RwLock;

/// What the lambda kinds share: the link to the Kafka face, for writing to topics,
/// and the GPU (feature `cuda`).
#[derive(Default)]
pub struct LambdaHost {
    kafka: RwLock<Weak<crate::kafka::State>>,
    /// The `process` bindings' attachments.
    processes: Arc<process::registry::Registry>,
    /// The native URL started processes attach to.
    native_url: RwLock<Option<String>>,
    /// Every supervisor started, to stop them all at shutdown.
    supervisors: parking_lot::Mutex<Vec<Weak<process::Supervisor>>>,
    #[cfg(feature = "cuda")]
    gpu: RwLock<Option<Result<Arc<kascade_core::gpu::Gpu>, String>>>,
}

impl LambdaHost {
    /// A host with no Kafka face yet: output to topics fails until [`LambdaHost::attach_kafka`].
    pub fn new() -> Arc<LambdaHost> {
        Arc::new(LambdaHost::default())
    }

    /// Registers the `cdylib` and `process` kinds and, with feature `wasm`, the `wasm` kind, and
    /// with feature `cuda`, the `cuda` kind.
    pub fn register(self: &Arc<Self>, builder: EngineBuilder) -> EngineBuilder {
        let builder = builder
            .lambda_kind("cdylib", cdylib::CdylibKind::new(self.clone()))
            .lambda_kind("process", process::ProcessKind::new(self.clone()));
        #[cfg(feature = "wasm")]
        let builder = builder.lambda_kind("wasm", wasm::WasmKind::new(self.clone()));
        #[cfg(feature = "cuda")]
        let builder = builder.lambda_kind("cuda", cuda::CudaKind::new(self.clone()));
        builder
    }

    /// Gives the `cuda` kind its GPU, or the reason there is none.
    #[cfg(feature = "cuda")]
    pub fn set_gpu(&self, gpu: Result<Arc<kascade_core::gpu::Gpu>, String>) {
        *self.gpu.write() = Some(gpu);
    }

    /// The GPU lambdas run on, or why there is none.
    #[cfg(feature = "cuda")]
    pub fn gpu(&self) -> Result<Arc<kascade_core::gpu::Gpu>, String> {
        self.gpu.read().clone().unwrap_or_else(|| {
            Err("GPU support was not set up for this broker (kascade::gpu::attach)".into())
        })
    }

    /// Links the Kafka face, so lambdas can append to topics. Held weakly: the
    /// face owns the engine, which owns the lambdas.
    pub fn attach_kafka(&self, state: &Arc<crate::kafka::State>) {
        *self.kafka.write() = Arc::downgrade(state);
    }

    /// The `process` bindings' attachments (the native listener attaches connections here).
    pub fn processes(&self) -> &Arc<process::registry::Registry> {
        &self.processes
    }

    /// Sets the native URL that started processes attach to (`None`: the listener is off).
    pub fn set_native_url(&self, url: Option<String>) {
        *self.native_url.write() = url;
    }

    /// The native URL that started processes attach to.
    pub fn native_url(&self) -> Option<String> {
        self.native_url.read().clone()
    }

    fn track(&self, sup: &Arc<process::Supervisor>) {
        let mut all = self.supervisors.lock();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(sup));
    }

    /// Stops every external lambda process (broker shutdown: SIGTERM, SIGKILL
    /// after the grace period) and waits for them; their bindings stay stored.
    pub fn stop_processes(&self) {
        let all: Vec<_> = self.supervisors.lock().drain(..).collect();
        let live: Vec<_> = all.iter().filter_map(Weak::upgrade).collect();
        for sup in &live {
            sup.stop();
        }
        for sup in &live {
            sup.wait_finished(process::GRACE + std::time::Duration::from_secs(1));
        }
    }

    pub(crate) fn kafka(&self) -> Option<Arc<crate::kafka::State>> {
        self.kafka.read().upgrade()
    }
}

/// One input of a handler call: a stored version, or one record of a stored batch.
pub(crate) struct Input<'a> {
    /// The key (the record key, for a record; empty for a null key).
    pub key: &'a [u8],
    /// The value (the record value, for a record; empty for a null value).
    pub value: &'a [u8],
    /// The version's shard version number.
    pub version: u64,
    /// The version's seq (the record's offset).
    pub seq: u64,
    /// Microseconds since the epoch: the sequencer's, or the record's timestamp.
    pub timestamp_us: u64,
}

/// A write a handler asked for, made after it returns success.
pub(crate) enum Output {
    /// To every destination of the binding.
    Emit(Bytes),
    /// A put of a key the handler named.
    Put(Key, Bytes),
    /// A trigger of a key the handler named.
    Trigger(Key, Bytes),
}

/// What a host function answers a lambda with, beside success (0): the ABI's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostCode {
    /// No such object.
    NotFound = -1,
    /// A bad pointer or length, a key that is not a valid key, or a key the
    /// lambda may not write (partitions under `/cms/topics`: emit to a topic instead).
    Invalid = -2,
    /// The engine is shutting down.
    Unavailable = -4,
}

/// The per-call state shared by every kind: the collected output and reads.
pub(crate) struct Call<'c> {
    ctx: &'c LambdaContext<'c>,
    /// The stored version the call handles (a batch, for a record).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    object: &'c Arc<ObjectVersion>,
    /// The stored value the input points into: emitted bytes inside it are shared, not copied.
    source: &'c Bytes,
    engine: Option<Engine>,
    outputs: Vec<Output>,
    output_bytes: u64,
    max_output_bytes: u64,
    /// Versions read during the call: a C lambda holds pointers into them until it returns.
    held: Vec<Arc<ObjectVersion>>,
}

impl<'c> Call<'c> {
    pub(crate) fn new(
        ctx: &'c LambdaContext<'c>,
        object: &'c Arc<ObjectVersion>,
        max_output_bytes: u64,
    ) -> Self {
        Call {
            ctx,
            object,
            source: &object.value,
            engine: None,
            outputs: Vec::new(),
            output_bytes: 0,
            max_output_bytes,
            held: Vec::new(),
        }
    }

    /// The engine, looked up once per call and only when a lambda reads.
    pub(crate) fn engine(&mut self) -> Option<Engine> {
        if self.engine.is_none() {
            self.engine = self.ctx.engine();
        }
        self.engine.clone()
    }

    /// The binding's name, for logs.
    pub(crate) fn binding_name(&self) -> &str {
        self.ctx.binding_name()
    }

    /// Counts `len` more output bytes; false once over the call's limit.
    fn charge(&mut self, len: usize) -> bool {
        self.output_bytes = self.output_bytes.saturating_add(len as u64);
        self.output_bytes <= self.max_output_bytes
    }

    /// Emits `data`: shared with the stored value when it lies inside it, else copied.
    /// False when the call's output would pass its limit (nothing is emitted).
    pub(crate) fn emit(&mut self, data: &[u8]) -> bool {
        if !self.charge(data.len()) {
            return false;
        }
        let bytes = share(self.source, data);
        self.outputs.push(Output::Emit(bytes));
        true
    }

    /// Emits bytes the kind made itself (a GPU kernel's output). False when the
    /// call's output would pass its limit (nothing is emitted).
    #[cfg(feature = "cuda")]
    pub(crate) fn emit_owned(&mut self, data: Bytes) -> bool {
        if !self.charge(data.len()) {
            return false;
        }
        self.outputs.push(Output::Emit(data));
        true
    }

    /// The stored version the call handles (for a record: its batch).
    #[cfg(feature = "cuda")]
    pub(crate) fn object(&self) -> &Arc<ObjectVersion> {
        self.object
    }

    /// Queues a put (or a trigger) of `key`; the key is checked now.
    pub(crate) fn write(
        &mut self,
        key: &[u8],
        value: &[u8],
        trigger: bool,
    ) -> Result<(), HostCode> {
        let key = writable_key(key)?;
        if !self.charge(value.len()) {
            return Err(HostCode::Invalid);
        }
        let value = share(self.source, value);
        self.outputs.push(if trigger {
            Output::Trigger(key, value)
        } else {
            Output::Put(key, value)
        });
        Ok(())
    }

    /// Reads the latest version of `key`, and keeps it alive until the call ends.
    pub(crate) fn get(&mut self, key: &[u8]) -> Result<&ObjectVersion, HostCode> {
        let key = std::str::from_utf8(key)
            .ok()
            .and_then(|k| Key::new(k).ok())
            .ok_or(HostCode::Invalid)?;
        let engine = self.engine().ok_or(HostCode::Unavailable)?;
        match engine.get(&key, Get::Latest) {
            Ok(Some(object)) => {
                self.held.push(object);
                self.held.last().map(|o| &**o).ok_or(HostCode::NotFound)
            }
            // No pool covers the key: there is no such object either.
            Ok(None) | Err(_) => Err(HostCode::NotFound),
        }
    }

    /// Adds a write a kind collected itself (already counted against its limit).
    #[cfg(feature = "wasm")]
    pub(crate) fn push(&mut self, output: Output) {
        self.outputs.push(output);
    }

    /// Takes the collected output.
    pub(crate) fn take_outputs(&mut self) -> Vec<Output> {
        self.output_bytes = 0;
        std::mem::take(&mut self.outputs)
    }
}

/// Checks a key a lambda names for a put or trigger.
pub(crate) fn writable_key(key: &[u8]) -> Result<Key, HostCode> {
    let key = std::str::from_utf8(key)
        .ok()
        .and_then(|k| Key::new(k).ok())
        .ok_or(HostCode::Invalid)?;
    // A partition holds record batches only: a lambda writes to it by emitting.
    if topics::partition_of(&key).is_some() {
        return Err(HostCode::Invalid);
    }
    Ok(key)
}

/// `data` as `Bytes`: a slice of `source` when it lies inside it (no copy), else a copy.
pub(crate) fn share(source: &Bytes, data: &[u8]) -> Bytes {
    let (start, end) = (
        source.as_ptr() as usize,
        source.as_ptr() as usize + source.len(),
    );
    let at = data.as_ptr() as usize;
    if !data.is_empty() && at >= start && at + data.len() <= end {
        source.slice_ref(data)
    } else {
        Bytes::copy_from_slice(data)
    }
}

/// A kind's code: runs once per input, collecting its writes in `call`.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Runs the code on one input; an error (a trap, a non-zero return) discards its writes.
    fn handle(&self, input: &Input<'_>, call: &mut Call<'_>) -> Result<(), LambdaError>;

    /// The most bytes one call may emit, put and trigger in all.
    fn max_output_bytes(&self) -> u64;
}

/// Runs a [`Handler`] as an engine lambda: once per version, or once per
/// record when the key is a Kafka partition, then makes its writes.
pub(crate) struct HandlerLambda<H> {
    pub(crate) handler: H,
    pub(crate) host: Arc<LambdaHost>,
}

impl<H: Handler> Lambda for HandlerLambda<H> {
    fn call(
        &self,
        ctx: &LambdaContext<'_>,
        object: &Arc<ObjectVersion>,
    ) -> Result<(), LambdaError> {
        if let Some(partition) = topics::partition_of(&object.key) {
            return topics::call_records(self, ctx, object, partition);
        }
        let input = Input {
            key: object.key.as_str().as_bytes(),
            value: &object.value,
            version: object.version,
            seq: object.seq,
            timestamp_us: object.timestamp_us,
        };
        let mut call = Call::new(ctx, object, self.handler.max_output_bytes());
        self.handler.handle(&input, &mut call)?;
        let outputs = call.take_outputs();
        if outputs.is_empty() {
            return Ok(());
        }
        let mut writer = output::Writer::new(ctx, &self.host, object, None)?;
        let record = output::RecordMeta {
            key: Some(object.key.as_str().as_bytes()),
            timestamp_ms: (object.timestamp_us / 1000) as i64,
        };
        for o in outputs {
            writer.write(o, &record)?;
        }
        writer.finish()
    }
}
