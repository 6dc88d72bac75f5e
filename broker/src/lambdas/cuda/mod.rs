//! The `cuda` kind (feature `cuda`): a GPU kernel, deployed at run time as CUDA C
//! (compiled by NVRTC at deploy) or PTX, launched once per input.
//!
//! Each call runs the kernel on the input value in GPU memory: the cached copy
//! when the input's pool has `gpu = true` (a record of a Kafka batch is a range
//! of the cached batch: no copy at all), else a copy made on the call's stream.
//! Each upcall worker takes a [`program::Worker`] (a CUDA stream and device
//! buffers of its own) from a small pool and puts it back after the call, as
//! the `wasm` kind does with instances. The kernel's output is copied back and
//! emitted to the binding's destinations like any lambda's output (to topics
//! through the record adaptor). The signature and config are in
//! `docs/lambdas.md`.

pub mod program;

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use kascade_core::{Lambda, LambdaError, LambdaKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{Call, Handler, HandlerLambda, Input, LambdaHost};
pub use program::{compile, CudaError, CudaProgram, DeviceInput, Phases, Worker};

/// Largest parameter block, bytes.
pub const MAX_PARAMS_BYTES: usize = 4096;
/// Bytes one call may emit, by default (also the kernel's output capacity).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 << 20;
/// Largest output capacity a binding may ask for.
pub const MAX_OUTPUT_BYTES: u64 = 1 << 30;

/// A `cuda` binding's config (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CudaConfig {
    /// CUDA C source, compiled by NVRTC at deploy (exactly one of `source` and `ptx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// PTX text, loaded as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptx: Option<String>,
    /// The `extern "C" __global__` function to launch.
    pub kernel: String,
    /// The parameter block the kernel gets, standard base64 (at most 4 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_base64: Option<String>,
    /// Threads per block (1 to 1024).
    #[serde(default = "default_block")]
    pub block: u32,
    /// Blocks per launch; unset: enough for one thread per `bytes_per_thread` input bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<u32>,
    /// Input bytes per thread when `grid` is unset.
    #[serde(default = "default_bytes_per_thread")]
    pub bytes_per_thread: u32,
    /// Dynamic shared memory per block, bytes.
    #[serde(default)]
    pub shared_mem_bytes: u32,
    /// The output buffer's capacity, which is also what one call may emit.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
}

fn default_block() -> u32 {
    256
}
fn default_bytes_per_thread() -> u32 {
    1
}
fn default_max_output_bytes() -> u64 {
    DEFAULT_MAX_OUTPUT_BYTES
}

impl CudaConfig {
    /// A config for CUDA C `source` and its kernel `kernel`, with the defaults.
    pub fn from_source(source: &str, kernel: &str) -> CudaConfig {
        CudaConfig {
            source: Some(source.to_string()),
            ptx: None,
            kernel: kernel.to_string(),
            params_base64: None,
            block: default_block(),
            grid: None,
            bytes_per_thread: default_bytes_per_thread(),
            shared_mem_bytes: 0,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }

    /// Sets the parameter block.
    pub fn params(mut self, params: &[u8]) -> CudaConfig {
        self.params_base64 = Some(base64::engine::general_purpose::STANDARD.encode(params));
        self
    }

    /// Checks every field; returns the decoded parameter block.
    pub fn validate(&self) -> Result<Vec<u8>, CudaError> {
        let bad = |m: String| Err(CudaError::Config(m));
        match (&self.source, &self.ptx) {
            (Some(_), Some(_)) => {
                return bad("give either \"source\" (CUDA C) or \"ptx\", not both".into())
            }
            (None, None) => return bad("give \"source\" (CUDA C) or \"ptx\"".into()),
            _ => {}
        }
        let name_ok = !self.kernel.is_empty()
            && self.kernel.len() <= 256
            && self
                .kernel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !self.kernel.as_bytes()[0].is_ascii_digit();
        if !name_ok {
            return bad(format!(
                "kernel {:?} is not a C identifier (letters, digits and _, not starting with a digit)",
                self.kernel
            ));
        }
        if !(1..=1024).contains(&self.block) {
            return bad(format!(
                "block must be 1 to 1024 threads (got {})",
                self.block
            ));
        }
        if self.grid == Some(0) || self.grid.is_some_and(|g| g > i32::MAX as u32) {
            return bad("grid must be 1 to 2147483647 blocks".into());
        }
        if self.bytes_per_thread == 0 {
            return bad("bytes_per_thread must be at least 1".into());
        }
        if !(1..=MAX_OUTPUT_BYTES).contains(&self.max_output_bytes) {
            return bad(format!(
                "max_output_bytes must be 1 to {MAX_OUTPUT_BYTES} (got {})",
                self.max_output_bytes
            ));
        }
        let params = match &self.params_base64 {
            None => Vec::new(),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    CudaError::Config(format!("params_base64 is not standard base64: {e}"))
                })?,
        };
        if params.len() > MAX_PARAMS_BYTES {
            return bad(format!(
                "the parameter block is {} bytes; at most {MAX_PARAMS_BYTES}",
                params.len()
            ));
        }
        Ok(params)
    }
}

/// Registers as `cuda`.
pub struct CudaKind {
    host: Arc<LambdaHost>,
}

impl CudaKind {
    /// The kind; it finds the GPU through `host` at each bind.
    pub fn new(host: Arc<LambdaHost>) -> CudaKind {
        CudaKind { host }
    }

    /// Builds the handler: checks the config, compiles CUDA C (compile errors come
    /// first, GPU or not), then loads the program on the GPU.
    fn handler(&self, config: &serde_json::Value) -> Result<CudaHandler, CudaError> {
        let config: CudaConfig = serde_json::from_value(config.clone()).map_err(|e| {
            CudaError::Config(format!(
                "{e} (expected {{\"source\": \"<CUDA C>\" or \"ptx\": \"...\", \"kernel\": \"name\", \"params_base64\", \"block\", \"grid\", \"bytes_per_thread\", \"shared_mem_bytes\", \"max_output_bytes\"}})"
            ))
        })?;
        let params = config.validate()?;
        let gpu = self.host.gpu();
        let ptx = match (&config.source, &config.ptx) {
            (Some(source), _) => compile(
                source,
                &config.kernel,
                gpu.as_ref().ok().map(|g| g.compute_capability()),
            )?,
            (None, Some(ptx)) => ptx.clone(),
            (None, None) => return Err(CudaError::Config("no source and no ptx".into())),
        };
        let gpu = gpu.map_err(CudaError::GpuOff)?;
        let (program, worker) = CudaProgram::load(&gpu, &ptx, &params, &config)?;
        Ok(CudaHandler {
            program,
            workers: Mutex::new(vec![worker]),
            max_output_bytes: config.max_output_bytes,
        })
    }
}

impl LambdaKind for CudaKind {
    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError> {
        let handler = self
            .handler(config)
            .map_err(|e| LambdaError(e.to_string()))?;
        Ok(Arc::new(HandlerLambda {
            handler,
            host: self.host.clone(),
        }))
    }
}

/// A loaded program and the workers that run it.
struct CudaHandler {
    program: CudaProgram,
    workers: Mutex<Vec<Worker>>,
    max_output_bytes: u64,
}

impl CudaHandler {
    fn run(
        &self,
        worker: &mut Worker,
        input: &Input<'_>,
        call: &mut Call<'_>,
    ) -> Result<(Vec<u8>, Phases), CudaError> {
        // The input's version in GPU memory, when its pool keeps versions there; the
        // value (or record) is a range of it. Held until the kernel is done.
        let object = call.object().clone();
        let resident = match call.engine() {
            Some(engine) => engine.gpu_object(&object, worker.transfer())?,
            None => None,
        };
        let range = value_range(&object.value, input.value);
        let device_input = match (&resident, range) {
            (Some(entry), Some((offset, len))) => match entry.device_address(worker.transfer()) {
                Some(base) => DeviceInput::Resident {
                    address: base + offset as u64,
                    len,
                },
                None => DeviceInput::Host(input.value),
            },
            _ => DeviceInput::Host(input.value),
        };
        let placed = match device_input {
            DeviceInput::Resident { .. } => "resident",
            DeviceInput::Host(_) => "copied",
        };
        metrics::counter!("kascade_gpu_lambda_inputs_total", "lambda" => call.binding_name().to_string(), "input" => placed)
            .increment(1);
        let out = self.program.run(worker, device_input)?;
        drop(resident);
        Ok(out)
    }
}

/// Where `value` lies inside `stored` (offset, length), when it does.
fn value_range(stored: &[u8], value: &[u8]) -> Option<(usize, usize)> {
    let start = stored.as_ptr() as usize;
    let at = value.as_ptr() as usize;
    (at >= start && at + value.len() <= start + stored.len()).then(|| (at - start, value.len()))
}

impl Handler for CudaHandler {
    fn handle(&self, input: &Input<'_>, call: &mut Call<'_>) -> Result<(), LambdaError> {
        let taken = self.workers.lock().pop();
        let mut worker = match taken {
            Some(w) => w,
            None => self
                .program
                .worker()
                .map_err(|e| LambdaError(e.to_string()))?,
        };
        // A failed call drops its worker (its stream may hold an error): the next gets a fresh one.
        let (output, phases) = self
            .run(&mut worker, input, call)
            .map_err(|e| LambdaError(e.to_string()))?;
        self.workers.lock().push(worker);
        let lambda = call.binding_name().to_string();
        for (phase, took) in [
            ("h2d", phases.h2d),
            ("kernel", phases.kernel),
            ("d2h", phases.d2h),
        ] {
            metrics::histogram!("kascade_gpu_lambda_phase_seconds", "lambda" => lambda.clone(), "phase" => phase)
                .record(took.as_secs_f64());
        }
        if output.is_empty() {
            return Ok(());
        }
        if !call.emit_owned(Bytes::from(output)) {
            return Err(LambdaError(format!(
                "the call's output passed max_output_bytes ({})",
                self.max_output_bytes
            )));
        }
        Ok(())
    }

    fn max_output_bytes(&self) -> u64 {
        self.max_output_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked_before_anything_is_compiled() {
        let ok = CudaConfig::from_source("x", "threshold").params(&1.5f32.to_le_bytes());
        assert_eq!(ok.validate().unwrap(), 1.5f32.to_le_bytes());
        let mut both = ok.clone();
        both.ptx = Some(".version 9.0".into());
        assert!(both.validate().is_err());
        for kernel in ["", "9lives", "a-b", "a b"] {
            let c = CudaConfig::from_source("x", kernel);
            assert!(c.validate().is_err(), "{kernel:?}");
        }
        let mut big = ok.clone();
        big.block = 2048;
        assert!(big.validate().is_err());
        let too_many = CudaConfig::from_source("x", "k").params(&[0u8; MAX_PARAMS_BYTES + 1]);
        assert!(too_many.validate().is_err());
        let json: CudaConfig = serde_json::from_value(serde_json::json!({
            "ptx": "p", "kernel": "k", "grid": 1, "block": 1024
        }))
        .unwrap();
        assert_eq!(
            (json.grid, json.block, json.max_output_bytes),
            (Some(1), 1024, DEFAULT_MAX_OUTPUT_BYTES)
        );
        assert!(serde_json::from_value::<CudaConfig>(
            serde_json::json!({"ptx": "p", "kernel": "k", "blok": 1})
        )
        .is_err());
    }

    #[test]
    fn a_record_inside_its_batch_is_found_as_a_range() {
        let batch = vec![0u8; 100];
        assert_eq!(value_range(&batch, &batch[10..30]), Some((10, 20)));
        assert_eq!(value_range(&batch, &batch[..]), Some((0, 100)));
        let elsewhere = vec![0u8; 5];
        assert_eq!(value_range(&batch, &elsewhere), None);
    }
}
