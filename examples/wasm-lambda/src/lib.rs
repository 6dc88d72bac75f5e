//! An example Kascade lambda, built to WebAssembly (see docs/lambdas.md):
//!
//! ```sh
//! cargo build --release --target wasm32-unknown-unknown --manifest-path examples/wasm-lambda/Cargo.toml
//! ```
//!
//! gives `kascade_wasm_lambda.wasm`, whose handlers are chosen by a binding's
//! `"handler"` config:
//! - `kascade_handle` (the default): emits each value upper-cased (ASCII);
//! - `forward`: emits each value unchanged (a no-op pipeline stage);
//! - `count`: counts the inputs of each key under `/counts<key>` (get, then put);
//! - `reject`: fails every call (returns 1), to show failures are counted;
//! - `spin`: loops forever, until its fuel runs out;
//! - `hog`: allocates forever, until its memory cap stops it.
//!
//! No dependencies, no WASI: the module imports only the host's `kascade` functions.

use std::cell::UnsafeCell;

/// The host functions (module `kascade`); each returns 0 or a negative code.
mod host {
    #[link(wasm_import_module = "kascade")]
    extern "C" {
        /// Sends a value to every destination of the binding.
        pub fn emit(ptr: *const u8, len: usize) -> i32;
        /// Stores a value under a key.
        pub fn put(key: *const u8, key_len: usize, value: *const u8, value_len: usize) -> i32;
        /// Copies up to `cap` bytes of a key's latest value to `buf`; returns its
        /// full length, or -1 when there is none.
        pub fn get(key: *const u8, key_len: usize, buf: *mut u8, cap: usize) -> i64;
        /// Logs a message (level 0 error .. 4 trace).
        pub fn log(level: i32, ptr: *const u8, len: usize);
    }
}

/// The buffer the host writes each input into (key, then value).
struct InputBuffer(UnsafeCell<Vec<u8>>);

// SAFETY: wasm32-unknown-unknown runs one thread: the host calls `kascade_alloc`,
// then the handler, never two at once.
unsafe impl Sync for InputBuffer {}

static INPUT: InputBuffer = InputBuffer(UnsafeCell::new(Vec::new()));

/// Room for the next input: the host asks once per call and writes key then value there.
/// The same buffer serves every call, so nothing leaks.
#[no_mangle]
pub extern "C" fn kascade_alloc(len: usize) -> *mut u8 {
    // SAFETY: see `InputBuffer`: nothing else holds a reference into it now.
    let buffer = unsafe { &mut *INPUT.0.get() };
    buffer.clear();
    buffer.resize(len, 0);
    buffer.as_mut_ptr()
}

/// The bytes the host wrote at `ptr`.
///
/// # Safety
/// `ptr` and `len` must be what the host passed to the handler running now.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the host wrote `len` bytes at `ptr`, inside the input buffer.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

fn emit(value: &[u8]) -> i32 {
    // SAFETY: a valid slice of this module's memory.
    unsafe { host::emit(value.as_ptr(), value.len()) }
}

/// Emits each value upper-cased.
#[no_mangle]
pub extern "C" fn kascade_handle(
    _key: *const u8,
    _key_len: usize,
    value: *const u8,
    value_len: usize,
    _version: u64,
    _seq: u64,
    _timestamp_us: u64,
) -> i32 {
    // SAFETY: the host's arguments.
    let value = unsafe { bytes(value, value_len) };
    emit(&value.to_ascii_uppercase())
}

/// Emits each value unchanged.
#[no_mangle]
pub extern "C" fn forward(
    _key: *const u8,
    _key_len: usize,
    value: *const u8,
    value_len: usize,
    _version: u64,
    _seq: u64,
    _timestamp_us: u64,
) -> i32 {
    // SAFETY: the host's arguments.
    emit(unsafe { bytes(value, value_len) })
}

/// Counts the inputs of each key: `/counts<key>` holds the count, in decimal.
#[no_mangle]
pub extern "C" fn count(
    key: *const u8,
    key_len: usize,
    _value: *const u8,
    _value_len: usize,
    _version: u64,
    seq: u64,
    _timestamp_us: u64,
) -> i32 {
    // SAFETY: the host's arguments.
    let key = unsafe { bytes(key, key_len) };
    let mut counter = b"/counts".to_vec();
    counter.extend_from_slice(key);
    let mut buf = [0u8; 20];
    // SAFETY: valid slices of this module's memory.
    let len = unsafe { host::get(counter.as_ptr(), counter.len(), buf.as_mut_ptr(), buf.len()) };
    let so_far: u64 = match usize::try_from(len) {
        Ok(n) if n <= buf.len() => std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let next = (so_far + 1).to_string();
    let message = format!("input at seq {seq} makes count {next}");
    // SAFETY: valid slices of this module's memory.
    unsafe {
        host::log(3, message.as_ptr(), message.len());
        host::put(counter.as_ptr(), counter.len(), next.as_ptr(), next.len())
    }
}

/// Fails every call.
#[no_mangle]
pub extern "C" fn reject(
    _key: *const u8,
    _key_len: usize,
    _value: *const u8,
    _value_len: usize,
    _version: u64,
    _seq: u64,
    _timestamp_us: u64,
) -> i32 {
    1
}

/// Never returns: the binding's fuel stops it.
#[no_mangle]
pub extern "C" fn spin(
    _key: *const u8,
    _key_len: usize,
    _value: *const u8,
    _value_len: usize,
    _version: u64,
    _seq: u64,
    _timestamp_us: u64,
) -> i32 {
    let mut turns = 0u64;
    loop {
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
}

/// Allocates a MiB after another: the binding's memory cap stops it.
#[no_mangle]
pub extern "C" fn hog(
    _key: *const u8,
    _key_len: usize,
    _value: *const u8,
    _value_len: usize,
    _version: u64,
    _seq: u64,
    _timestamp_us: u64,
) -> i32 {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
