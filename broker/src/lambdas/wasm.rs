//! The `wasm` kind: a WebAssembly module, sandboxed, deployed at run time.
//!
//! The module is compiled once, at bind. Each upcall worker that runs it
//! takes an instance (its own store and linear memory) from a small pool and
//! puts it back after the call, so a module is instantiated about once per
//! worker, not per call. Every call gets a fresh fuel budget; the store's
//! limits cap its memory. A call that runs out of fuel, grows past the cap,
//! emits past its output limit or traps in any other way fails (counted by
//! the engine as a lambda error) and its instance is dropped: the next call
//! gets a fresh one. The ABI is in `docs/lambdas.md`.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use kascade_core::{Engine, Get, Lambda, LambdaError, LambdaKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use wasmtime::{
    Caller, Config, InstancePre, Linker, Memory, Module, OptLevel, Store, StoreLimits,
    StoreLimitsBuilder, TypedFunc,
};

use super::{writable_key, Call, Handler, HandlerLambda, HostCode, Input, LambdaHost, Output};

/// Fuel (about one unit per WebAssembly instruction) of one call, by default.
pub const DEFAULT_FUEL: u64 = 100_000_000;
/// Linear memory cap of one instance, by default.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;
/// Bytes one call may emit, put and trigger in all, by default.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 << 20;
/// Longest log message kept; the rest is cut.
const MAX_LOG_BYTES: usize = 4096;
/// The module the host functions are imported from.
const IMPORT_MODULE: &str = "kascade";

/// A `wasm` binding's config (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmConfig {
    /// The module's bytes (`.wasm`), in standard base64.
    pub module_base64: String,
    /// The exported handler function to call.
    #[serde(default = "default_handler")]
    pub handler: String,
    /// Fuel of one call: a call that spends it traps ("an endless loop").
    #[serde(default = "default_fuel")]
    pub fuel: u64,
    /// Linear memory cap of an instance, bytes: growing past it traps.
    #[serde(default = "default_max_memory_bytes")]
    pub max_memory_bytes: u64,
    /// Bytes one call may emit, put and trigger in all: more traps.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
}

fn default_handler() -> String {
    "kascade_handle".into()
}
fn default_fuel() -> u64 {
    DEFAULT_FUEL
}
fn default_max_memory_bytes() -> u64 {
    DEFAULT_MAX_MEMORY_BYTES
}
fn default_max_output_bytes() -> u64 {
    DEFAULT_MAX_OUTPUT_BYTES
}

impl WasmConfig {
    /// A config for `module` (`.wasm` bytes) with the default handler and limits.
    pub fn new(module: &[u8]) -> WasmConfig {
        WasmConfig {
            module_base64: base64::engine::general_purpose::STANDARD.encode(module),
            handler: default_handler(),
            fuel: DEFAULT_FUEL,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// What host functions see of a call; lives in the instance's store.
struct HostState {
    limits: StoreLimits,
    memory: Option<Memory>,
    /// Set for the length of a call, and only for modules that import `get`.
    engine: Option<Engine>,
    outputs: Vec<Output>,
    output_bytes: u64,
    max_output_bytes: u64,
    /// The binding's name, for log lines.
    binding: String,
}

impl HostState {
    /// Counts `len` more output bytes; an error (a trap) once over the limit.
    fn charge(&mut self, len: usize) -> wasmtime::Result<()> {
        self.output_bytes = self.output_bytes.saturating_add(len as u64);
        if self.output_bytes > self.max_output_bytes {
            return Err(wasmtime::Error::msg(format!(
                "the call's output passed max_output_bytes ({})",
                self.max_output_bytes
            )));
        }
        Ok(())
    }
}

/// The handler's signature: key ptr/len, value ptr/len, version, seq, timestamp (µs).
type HandleFn = TypedFunc<(i32, i32, i32, i32, i64, i64, i64), i32>;

/// One instance with its store.
struct Instance {
    store: Store<HostState>,
    alloc: TypedFunc<i32, i32>,
    handle: HandleFn,
    memory: Memory,
}

/// Registers as `wasm`: compiles modules with one shared wasmtime engine.
pub struct WasmKind {
    /// The compiler and the host functions, made at the first bind: a broker
    /// that runs no WebAssembly never starts the runtime (nor installs its
    /// signal handlers).
    runtime: OnceLock<Result<Runtime, String>>,
    host: Arc<LambdaHost>,
}

/// The wasmtime engine and the linker holding the host functions.
struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
}

impl Runtime {
    fn start() -> Result<Runtime, String> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .wasm_backtrace(false)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = wasmtime::Engine::new(&config).map_err(|e| format!("{e:#}"))?;
        let linker = host_functions(&engine).map_err(|e| format!("{e:#}"))?;
        Ok(Runtime { engine, linker })
    }
}

impl WasmKind {
    /// The kind; the runtime starts at the first bind.
    pub fn new(host: Arc<LambdaHost>) -> WasmKind {
        WasmKind {
            runtime: OnceLock::new(),
            host,
        }
    }
}

impl LambdaKind for WasmKind {
    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError> {
        let runtime = self
            .runtime
            .get_or_init(Runtime::start)
            .as_ref()
            .map_err(|e| LambdaError(format!("the WebAssembly runtime did not start: {e}")))?;
        let config: WasmConfig = serde_json::from_value(config.clone()).map_err(|e| {
            LambdaError(format!(
                "wasm config: {e} (expected {{\"module_base64\": ..., \"handler\", \"fuel\", \
                 \"max_memory_bytes\", \"max_output_bytes\"}})"
            ))
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(config.module_base64.trim())
            .map_err(|e| LambdaError(format!("module_base64 is not standard base64: {e}")))?;
        let module = Module::new(&runtime.engine, &bytes)
            .map_err(|e| LambdaError(format!("the module does not compile: {e:#}")))?;
        let pre = runtime.linker.instantiate_pre(&module).map_err(|e| {
            LambdaError(format!(
                "the module imports something the host does not offer (only {IMPORT_MODULE}.emit, \
                 put, trigger, get and log): {e:#}"
            ))
        })?;
        let uses_get = module
            .imports()
            .any(|i| i.module() == IMPORT_MODULE && i.name() == "get");
        let handler = WasmHandler {
            pre,
            uses_get,
            config,
            pool: Mutex::new(Vec::new()),
        };
        // Instantiated once now, so that a module without the ABI's exports, or
        // whose start runs past its limits, is refused at bind, not at its first call.
        let first = handler.instantiate()?;
        handler.pool.lock().push(first);
        Ok(Arc::new(HandlerLambda {
            handler,
            host: self.host.clone(),
        }))
    }
}

/// A compiled module and its pool of idle instances.
struct WasmHandler {
    pre: InstancePre<HostState>,
    uses_get: bool,
    config: WasmConfig,
    pool: Mutex<Vec<Instance>>,
}

impl WasmHandler {
    fn instantiate(&self) -> Result<Instance, LambdaError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.config.max_memory_bytes).unwrap_or(usize::MAX))
            .memories(1)
            .tables(4)
            .table_elements(100_000)
            .instances(1)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            self.pre.module().engine(),
            HostState {
                limits,
                memory: None,
                engine: None,
                outputs: Vec::new(),
                output_bytes: 0,
                max_output_bytes: self.config.max_output_bytes,
                binding: String::new(),
            },
        );
        store.limiter(|s| &mut s.limits);
        let bad = |what: &str, e: wasmtime::Error| LambdaError(format!("{what}: {e:#}"));
        // A start function and data initialisers run on this budget.
        store
            .set_fuel(self.config.fuel)
            .map_err(|e| bad("fuel", e))?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| bad("instantiating the module", e))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| LambdaError("the module exports no memory named \"memory\"".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "kascade_alloc")
            .map_err(|e| bad("export kascade_alloc(len: i32) -> i32", e))?;
        let handle = instance
            .get_typed_func(&mut store, &self.config.handler)
            .map_err(|e| {
                bad(
                    &format!(
                        "export {}(key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32, \
                         version: i64, seq: i64, timestamp_us: i64) -> i32",
                        self.config.handler
                    ),
                    e,
                )
            })?;
        store.data_mut().memory = Some(memory);
        Ok(Instance {
            store,
            alloc,
            handle,
            memory,
        })
    }

    /// One call on `instance`: `Err` with `true` when the instance must be dropped (it trapped).
    fn run(
        &self,
        instance: &mut Instance,
        input: &Input<'_>,
        call: &mut Call<'_>,
    ) -> Result<(), (LambdaError, bool)> {
        let trapped = |what: &str, e: wasmtime::Error| {
            (
                LambdaError(format!("wasm trap in {what}: {}", describe(&e))),
                true,
            )
        };
        let Instance {
            store,
            alloc,
            handle,
            memory,
        } = instance;
        store
            .set_fuel(self.config.fuel)
            .map_err(|e| trapped("setting fuel", e))?;
        let state = store.data_mut();
        if state.binding != call.binding_name() {
            state.binding = call.binding_name().to_string();
        }
        state.output_bytes = 0;
        let (key_len, value_len) = (input.key.len(), input.value.len());
        let total = i32::try_from(key_len + value_len).map_err(|_| {
            (
                LambdaError(format!(
                    "an input of {} bytes is over a WebAssembly lambda's 2 GiB",
                    key_len + value_len
                )),
                false,
            )
        })?;
        let at = alloc
            .call(&mut *store, total)
            .map_err(|e| trapped("kascade_alloc", e))?;
        let start = u32::try_from(at).unwrap_or(u32::MAX) as usize;
        memory
            .write(&mut *store, start, input.key)
            .and_then(|()| memory.write(&mut *store, start + key_len, input.value))
            .map_err(|_| {
                (
                    LambdaError(format!(
                        "kascade_alloc({total}) returned {at}, which is not room for the input"
                    )),
                    true,
                )
            })?;
        if self.uses_get {
            store.data_mut().engine = call.engine();
        }
        let outcome = handle.call(
            &mut *store,
            (
                at,
                key_len as i32,
                at.wrapping_add(key_len as i32),
                value_len as i32,
                input.version as i64,
                input.seq as i64,
                input.timestamp_us as i64,
            ),
        );
        let state = store.data_mut();
        state.engine = None;
        let outputs = std::mem::take(&mut state.outputs);
        match outcome {
            Ok(0) => {
                for o in outputs {
                    call.push(o);
                }
                Ok(())
            }
            Ok(code) => Err((
                LambdaError(format!("{} returned {code}", self.config.handler)),
                false,
            )),
            Err(e) => Err(trapped(&self.config.handler, e)),
        }
    }
}

impl Handler for WasmHandler {
    fn handle(&self, input: &Input<'_>, call: &mut Call<'_>) -> Result<(), LambdaError> {
        let mut instance = match self.pool.lock().pop() {
            Some(i) => i,
            None => self.instantiate()?,
        };
        match self.run(&mut instance, input, call) {
            Ok(()) => {
                self.pool.lock().push(instance);
                Ok(())
            }
            Err((e, trapped)) => {
                if !trapped {
                    self.pool.lock().push(instance);
                }
                Err(e)
            }
        }
    }

    fn max_output_bytes(&self) -> u64 {
        self.config.max_output_bytes
    }
}

/// A trap in words: fuel and memory limits named as such.
fn describe(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => {
            "ran out of fuel (an endless loop, or more work than the binding's fuel allows)".into()
        }
        _ => format!("{e:#}"),
    }
}

/// The bytes `[ptr, ptr + len)` of a module's memory, if they are inside it.
fn region(memory: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    let start = usize::try_from(ptr as u32).ok()?;
    let len = usize::try_from(len).ok()?;
    memory.get(start..start.checked_add(len)?)
}

/// The host functions a module may import from `kascade`.
fn host_functions(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        IMPORT_MODULE,
        "emit",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(memory) = caller.data().memory else {
                return Ok(HostCode::Unavailable as i32);
            };
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let Some(value) = region(data, ptr, len) else {
                return Ok(HostCode::Invalid as i32);
            };
            state.charge(value.len())?;
            let value = Bytes::copy_from_slice(value);
            state.outputs.push(Output::Emit(value));
            Ok(0)
        },
    )?;
    for (name, trigger) in [("put", false), ("trigger", true)] {
        linker.func_wrap(
            IMPORT_MODULE,
            name,
            move |mut caller: Caller<'_, HostState>,
                  key_ptr: i32,
                  key_len: i32,
                  value_ptr: i32,
                  value_len: i32|
                  -> wasmtime::Result<i32> {
                let Some(memory) = caller.data().memory else {
                    return Ok(HostCode::Unavailable as i32);
                };
                let (data, state) = memory.data_and_store_mut(&mut caller);
                let (Some(key), Some(value)) = (
                    region(data, key_ptr, key_len),
                    region(data, value_ptr, value_len),
                ) else {
                    return Ok(HostCode::Invalid as i32);
                };
                let key = match writable_key(key) {
                    Ok(k) => k,
                    Err(code) => return Ok(code as i32),
                };
                state.charge(value.len())?;
                let value = Bytes::copy_from_slice(value);
                state.outputs.push(if trigger {
                    Output::Trigger(key, value)
                } else {
                    Output::Put(key, value)
                });
                Ok(0)
            },
        )?;
    }
    linker.func_wrap(
        IMPORT_MODULE,
        "get",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         buf_ptr: i32,
         buf_cap: i32|
         -> wasmtime::Result<i64> {
            let Some(memory) = caller.data().memory else {
                return Ok(HostCode::Unavailable as i64);
            };
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let Some(key) = region(data, key_ptr, key_len)
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| kascade_core::Key::new(k).ok())
            else {
                return Ok(HostCode::Invalid as i64);
            };
            let Some(engine) = &state.engine else {
                return Ok(HostCode::Unavailable as i64);
            };
            let value = match engine.get(&key, Get::Latest) {
                Ok(Some(object)) => object.value.clone(),
                Ok(None) | Err(_) => return Ok(HostCode::NotFound as i64),
            };
            let Some(len) = usize::try_from(buf_cap).ok() else {
                return Ok(HostCode::Invalid as i64);
            };
            let copied = len.min(value.len());
            let Some(buf) = usize::try_from(buf_ptr as u32)
                .ok()
                .and_then(|start| data.get_mut(start..start.checked_add(copied)?))
            else {
                return Ok(HostCode::Invalid as i64);
            };
            buf.copy_from_slice(&value[..copied]);
            Ok(value.len() as i64)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            let Some(memory) = caller.data().memory else {
                return;
            };
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let Some(bytes) = region(data, ptr, len) else {
                return;
            };
            let message = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LOG_BYTES)]);
            let lambda = state.binding.as_str();
            match level {
                0 => tracing::error!(lambda, "{message}"),
                1 => tracing::warn!(lambda, "{message}"),
                2 => tracing::info!(lambda, "{message}"),
                3 => tracing::debug!(lambda, "{message}"),
                _ => tracing::trace!(lambda, "{message}"),
            }
        },
    )?;
    Ok(linker)
}
