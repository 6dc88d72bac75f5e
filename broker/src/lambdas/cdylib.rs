//! The `cdylib` kind: a trusted shared library with the C ABI of
//! `include/kascade_lambda.h`, loaded into the broker's process.
//!
//! The handler gets pointers into the stored version (zero-copy), and what it
//! emits from inside the input value is shared with the output, not copied.
//! Nothing isolates it: a crash in it is a crash of the broker. A library is
//! loaded once per path for the life of the process (the dynamic loader
//! reuses an image already loaded from that path), so deploy a changed
//! library under a new file name.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Arc;

use kascade_core::{Lambda, LambdaError, LambdaKind};
use libloading::Library;
use serde::{Deserialize, Serialize};

use super::{Call, Handler, HandlerLambda, HostCode, Input, LambdaHost};

/// The ABI version of `include/kascade_lambda.h` this broker speaks.
pub const ABI_VERSION: u32 = 1;

/// A `cdylib` binding's config (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdylibConfig {
    /// The library's path (absolute: the broker's working directory is no guide).
    pub path: PathBuf,
    /// The exported handler.
    #[serde(default = "default_symbol")]
    pub symbol: String,
    /// Bytes one call may emit, put and trigger in all: past it, the host
    /// functions answer `KASCADE_INVALID`.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
}

fn default_symbol() -> String {
    "kascade_handle".into()
}
fn default_max_output_bytes() -> u64 {
    u64::MAX
}

impl CdylibConfig {
    /// A config for the library at `path`, with the default handler symbol.
    pub fn new(path: impl Into<PathBuf>) -> CdylibConfig {
        CdylibConfig {
            path: path.into(),
            symbol: default_symbol(),
            max_output_bytes: default_max_output_bytes(),
        }
    }
}

/// `kascade_input` of the header.
#[repr(C)]
struct CInput {
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    version: u64,
    seq: u64,
    timestamp_us: u64,
}

/// `kascade_host` of the header.
#[repr(C)]
struct CHost {
    ctx: *mut c_void,
    emit: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> i32,
    put: unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> i32,
    trigger: unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> i32,
    get: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut *const u8, *mut usize) -> i32,
    log: unsafe extern "C" fn(*mut c_void, i32, *const u8, usize),
}

type HandleFn = unsafe extern "C" fn(*const CHost, *const CInput) -> i32;
type AbiVersionFn = unsafe extern "C" fn() -> u32;

/// Registers as `cdylib`.
pub struct CdylibKind {
    host: Arc<LambdaHost>,
}

impl CdylibKind {
    /// The kind.
    pub fn new(host: Arc<LambdaHost>) -> CdylibKind {
        CdylibKind { host }
    }
}

impl LambdaKind for CdylibKind {
    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError> {
        let config: CdylibConfig = serde_json::from_value(config.clone()).map_err(|e| {
            LambdaError(format!(
                "cdylib config: {e} (expected {{\"path\": \"/abs/lib.so\", \"symbol\", \"max_output_bytes\"}})"
            ))
        })?;
        if !config.path.is_absolute() {
            return Err(LambdaError(format!(
                "cdylib path {} must be absolute",
                config.path.display()
            )));
        }
        // SAFETY: loading a library runs its initialisers in this process. The
        // `cdylib` kind is for trusted code only (docs/lambdas.md says so): whoever
        // binds it vouches for it as for code linked into the broker.
        let library = unsafe { Library::new(&config.path) }
            .map_err(|e| LambdaError(format!("cannot load {}: {e}", config.path.display())))?;
        // SAFETY: the symbol's type is the header's `uint32_t kascade_abi_version(void)`.
        let version = unsafe {
            let f = library
                .get::<AbiVersionFn>(b"kascade_abi_version\0")
                .map_err(|e| {
                    LambdaError(format!(
                        "{} exports no kascade_abi_version (include kascade_lambda.h and define it): {e}",
                        config.path.display()
                    ))
                })?;
            f()
        };
        if version != ABI_VERSION {
            return Err(LambdaError(format!(
                "{} was built for lambda ABI {version}; this broker speaks {ABI_VERSION}",
                config.path.display()
            )));
        }
        let mut symbol = config.symbol.clone().into_bytes();
        symbol.push(0);
        // SAFETY: the symbol is declared with the header's handler type; the library
        // stays loaded as long as the pointer is used (both live in `CdylibHandler`).
        let handle: HandleFn = unsafe {
            *library.get::<HandleFn>(&symbol).map_err(|e| {
                LambdaError(format!(
                    "{} exports no handler {}: {e}",
                    config.path.display(),
                    config.symbol
                ))
            })?
        };
        Ok(Arc::new(HandlerLambda {
            handler: CdylibHandler {
                handle,
                max_output_bytes: config.max_output_bytes,
                _library: library,
            },
            host: self.host.clone(),
        }))
    }
}

/// A loaded handler; the library stays loaded while it exists.
struct CdylibHandler {
    handle: HandleFn,
    max_output_bytes: u64,
    _library: Library,
}

impl Handler for CdylibHandler {
    fn handle(&self, input: &Input<'_>, call: &mut Call<'_>) -> Result<(), LambdaError> {
        let c_input = CInput {
            key: input.key.as_ptr(),
            key_len: input.key.len(),
            value: input.value.as_ptr(),
            value_len: input.value.len(),
            version: input.version,
            seq: input.seq,
            timestamp_us: input.timestamp_us,
        };
        let host = CHost {
            ctx: (call as *mut Call<'_>).cast(),
            emit: host_emit,
            put: host_put,
            trigger: host_trigger,
            get: host_get,
            log: host_log,
        };
        // SAFETY: `handle` has the header's signature (checked by name and ABI
        // version only: the library is trusted); `host` and `c_input` outlive the
        // call, and `host.ctx` points at `call`, which nothing else touches until
        // the handler returns.
        let code = unsafe { (self.handle)(&host, &c_input) };
        if code == 0 {
            Ok(())
        } else {
            Err(LambdaError(format!("the C handler returned {code}")))
        }
    }

    fn max_output_bytes(&self) -> u64 {
        self.max_output_bytes
    }
}

/// The bytes a C caller passed; `None` for a null pointer with a non-zero length.
///
/// # Safety
/// `ptr` must point at `len` readable bytes that stay valid while the slice is used.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise, as the header states it for every host function.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The call behind a host function's `ctx`.
///
/// # Safety
/// `ctx` must be the `host->ctx` of a handler call still running on this thread.
unsafe fn call_of<'a>(ctx: *mut c_void) -> &'a mut Call<'a> {
    // SAFETY: `handle` set `ctx` to its `&mut Call`, which lives until the handler
    // returns, and the handler (on this thread) is the only user meanwhile.
    unsafe { &mut *ctx.cast::<Call<'a>>() }
}

unsafe extern "C" fn host_emit(ctx: *mut c_void, value: *const u8, len: usize) -> i32 {
    // SAFETY: the header's contract for host functions (see `call_of` and `bytes`).
    let (call, value) = unsafe { (call_of(ctx), bytes(value, len)) };
    match value {
        Some(v) if call.emit(v) => 0,
        _ => HostCode::Invalid as i32,
    }
}

unsafe fn write(
    ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    trigger: bool,
) -> i32 {
    // SAFETY: the header's contract for host functions (see `call_of` and `bytes`).
    let (call, key, value) =
        unsafe { (call_of(ctx), bytes(key, key_len), bytes(value, value_len)) };
    let (Some(key), Some(value)) = (key, value) else {
        return HostCode::Invalid as i32;
    };
    match call.write(key, value, trigger) {
        Ok(()) => 0,
        Err(code) => code as i32,
    }
}

unsafe extern "C" fn host_put(
    ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32 {
    // SAFETY: passed on as the C caller gave them.
    unsafe { write(ctx, key, key_len, value, value_len, false) }
}

unsafe extern "C" fn host_trigger(
    ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32 {
    // SAFETY: passed on as the C caller gave them.
    unsafe { write(ctx, key, key_len, value, value_len, true) }
}

unsafe extern "C" fn host_get(
    ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> i32 {
    if value.is_null() || value_len.is_null() {
        return HostCode::Invalid as i32;
    }
    // SAFETY: the header's contract for host functions (see `call_of` and `bytes`).
    let (call, key) = unsafe { (call_of(ctx), bytes(key, key_len)) };
    let Some(key) = key else {
        return HostCode::Invalid as i32;
    };
    match call.get(key) {
        Ok(object) => {
            // SAFETY: both out-pointers were checked non-null; the caller owns them.
            // The bytes stay valid while the call holds the version (until it returns).
            unsafe {
                *value = object.value.as_ptr();
                *value_len = object.value.len();
            }
            0
        }
        Err(code) => code as i32,
    }
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, message: *const u8, len: usize) {
    // SAFETY: the header's contract for host functions (see `call_of` and `bytes`).
    let (call, message) = unsafe { (call_of(ctx), bytes(message, len)) };
    let Some(message) = message else {
        return;
    };
    let message = String::from_utf8_lossy(&message[..message.len().min(4096)]);
    let lambda = call.binding_name();
    match level {
        0 => tracing::error!(lambda, "{message}"),
        1 => tracing::warn!(lambda, "{message}"),
        2 => tracing::info!(lambda, "{message}"),
        3 => tracing::debug!(lambda, "{message}"),
        _ => tracing::trace!(lambda, "{message}"),
    }
}
