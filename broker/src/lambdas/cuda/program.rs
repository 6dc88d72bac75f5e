//! A GPU lambda's program: CUDA C compiled by NVRTC (or PTX), loaded into the
//! GPU's context, and launched once per input on a worker's stream.
//!
//! The kernel signature (docs/lambdas.md):
//!
//! ```c
//! extern "C" __global__ void NAME(
//!     const unsigned char *input, unsigned long long input_len,     // the input value, in GPU memory
//!     unsigned char *output, unsigned long long output_cap,         // room for the output
//!     unsigned long long *output_len,                               // set it: bytes written (0 on entry)
//!     const unsigned char *params, unsigned long long params_len);  // the binding's parameter block
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use kascade_core::gpu::{Gpu, Transfer};

use super::CudaConfig;

/// Why a GPU lambda could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The binding's config is unusable.
    #[error("cuda config: {0}")]
    Config(String),
    /// CUDA C was given, but NVRTC cannot be loaded on the broker's host.
    #[error("cannot compile CUDA C: NVRTC (libnvrtc.so.13, the CUDA toolkit's runtime compiler) is not installed on the broker's host or not on its library path; install it, or deploy PTX (config \"ptx\")")]
    NoNvrtc,
    /// NVRTC refused the source; its log says why.
    #[error("CUDA C did not compile (NVRTC log follows):\n{log}")]
    Compile {
        /// NVRTC's log: file, line and message of each error.
        log: String,
    },
    /// The broker has no GPU to run the program on.
    #[error("GPU support is off on this broker: {0}. A cuda lambda needs an NVIDIA GPU with its driver, and a broker built with the `cuda` feature")]
    GpuOff(String),
    /// The PTX could not be loaded, or has no such kernel.
    #[error("{0}")]
    Load(String),
    /// A copy, allocation or launch failed.
    #[error("{0}")]
    Gpu(String),
}

impl From<kascade_core::Error> for CudaError {
    fn from(e: kascade_core::Error) -> Self {
        CudaError::Gpu(e.to_string())
    }
}

/// Compiles CUDA C `source` to PTX with NVRTC, for compute capability `arch`
/// (`None`: 7.5, the oldest NVRTC 13 targets; its PTX runs on every newer GPU).
/// Needs no GPU. A compile error carries NVRTC's log.
pub fn compile(source: &str, kernel: &str, arch: Option<(u32, u32)>) -> Result<String, CudaError> {
    if source.contains('\0') {
        return Err(CudaError::Config(
            "the CUDA C source holds a NUL byte".into(),
        ));
    }
    if !kascade_core::gpu::nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    let (major, minor) = arch.unwrap_or((7, 5));
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
        name: Some(format!("{kernel}.cu")),
        ..CompileOptions::default()
    };
    let source = source.to_string();
    let compiled =
        std::panic::catch_unwind(move || cudarc::nvrtc::compile_ptx_with_opts(source, options))
            .map_err(|_| CudaError::Compile {
                log: "NVRTC failed while compiling (its log could not be read)".into(),
            })?;
    match compiled {
        Ok(ptx) => ptx_text(&ptx),
        Err(CompileError::CompileError { log, .. }) => Err(CudaError::Compile {
            log: log.to_string_lossy().trim_end().to_string(),
        }),
        Err(other) => Err(CudaError::Compile {
            log: format!("{other:?}"),
        }),
    }
}

/// The text of PTX that NVRTC made.
fn ptx_text(ptx: &Ptx) -> Result<String, CudaError> {
    let bytes = ptx.as_bytes().ok_or_else(|| CudaError::Compile {
        log: "NVRTC returned no PTX".into(),
    })?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// How long each part of one call took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Making the input resident: a cache lookup, or a copy host -> device.
    pub h2d: Duration,
    /// The kernel, launch to completion.
    pub kernel: Duration,
    /// Reading the output length and the output back, device -> host.
    pub d2h: Duration,
}

/// Where a call's input is.
pub enum DeviceInput<'a> {
    /// In host memory: copied to the worker's device buffer first.
    Host(&'a [u8]),
    /// Already in GPU memory (a cached version, or a record inside one).
    Resident {
        /// Its device address.
        address: CUdeviceptr,
        /// Its length in bytes.
        len: usize,
    },
}

/// What one upcall worker runs a program with: its stream and device buffers.
pub struct Worker {
    transfer: Transfer,
    output: CudaSlice<u8>,
    output_len: CudaSlice<u8>,
    scratch: Option<CudaSlice<u8>>,
}

impl Worker {
    /// The worker's copier (its stream), for looking inputs up in the GPU cache.
    pub fn transfer(&mut self) -> &mut Transfer {
        &mut self.transfer
    }
}

/// A loaded kernel with its launch shape and parameter block.
pub struct CudaProgram {
    gpu: Arc<Gpu>,
    function: CudaFunction,
    params: Option<CudaSlice<u8>>,
    params_len: usize,
    block: u32,
    grid: Option<u32>,
    bytes_per_thread: u32,
    shared_mem_bytes: u32,
    max_output_bytes: usize,
}

impl CudaProgram {
    /// Loads `ptx` into `gpu`'s context and finds `config.kernel` in it; `params`
    /// goes to GPU memory once. Returns the program and a first worker.
    pub fn load(
        gpu: &Arc<Gpu>,
        ptx: &str,
        params: &[u8],
        config: &CudaConfig,
    ) -> Result<(CudaProgram, Worker), CudaError> {
        if ptx.contains('\0') {
            return Err(CudaError::Config("the PTX holds a NUL byte".into()));
        }
        let module = gpu
            .context()
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| CudaError::Load(format!("the GPU driver could not load the PTX: {e}")))?;
        let function = module.load_function(&config.kernel).map_err(|e| {
            CudaError::Load(format!(
                "the program has no kernel named {:?} (declare it extern \"C\" __global__): {e}",
                config.kernel
            ))
        })?;
        let mut program = CudaProgram {
            gpu: gpu.clone(),
            function,
            params: None,
            params_len: params.len(),
            block: config.block,
            grid: config.grid,
            bytes_per_thread: config.bytes_per_thread,
            shared_mem_bytes: config.shared_mem_bytes,
            max_output_bytes: config.max_output_bytes as usize,
        };
        let mut worker = program.worker()?;
        if !params.is_empty() {
            let buffer = worker.transfer.alloc(params.len())?;
            let address = worker.transfer.address(&buffer);
            worker.transfer.upload(params, address)?;
            program.params = Some(buffer);
        }
        Ok((program, worker))
    }

    /// A new worker: a stream of its own, an output buffer of `max_output_bytes` and
    /// the output length word.
    pub fn worker(&self) -> Result<Worker, CudaError> {
        let transfer = self.gpu.transfer()?;
        let output = transfer.alloc(self.max_output_bytes)?;
        let output_len = transfer.alloc(8)?;
        Ok(Worker {
            transfer,
            output,
            output_len,
            scratch: None,
        })
    }

    /// The launch shape for `input_len` bytes of input.
    fn launch_config(&self, input_len: usize) -> LaunchConfig {
        let grid = self.grid.unwrap_or_else(|| {
            let items = input_len
                .div_ceil(self.bytes_per_thread.max(1) as usize)
                .max(1);
            items
                .div_ceil(self.block as usize)
                .clamp(1, i32::MAX as usize) as u32
        });
        LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (self.block, 1, 1),
            shared_mem_bytes: self.shared_mem_bytes,
        }
    }

    /// Runs the kernel once on `input` with `worker`'s stream; the output bytes and
    /// how long each part took. The stream is idle when this returns.
    pub fn run(
        &self,
        worker: &mut Worker,
        input: DeviceInput<'_>,
    ) -> Result<(Vec<u8>, Phases), CudaError> {
        let mut phases = Phases::default();
        let start = Instant::now();
        let (input_address, input_len) = match input {
            DeviceInput::Resident { address, len } => (address, len),
            DeviceInput::Host(bytes) => {
                if worker
                    .scratch
                    .as_ref()
                    .is_none_or(|s| s.len() < bytes.len())
                {
                    worker.scratch = None;
                    let size = bytes.len().next_power_of_two().max(4096);
                    worker.scratch = Some(worker.transfer.alloc(size)?);
                }
                let scratch = worker
                    .scratch
                    .as_ref()
                    .ok_or_else(|| CudaError::Gpu("no input buffer".into()))?;
                let address = worker.transfer.address(scratch);
                worker.transfer.upload(bytes, address)?;
                (address, bytes.len())
            }
        };
        phases.h2d = start.elapsed();

        let start = Instant::now();
        let output = worker.transfer.address(&worker.output);
        let length_word = worker.transfer.address(&worker.output_len);
        worker.transfer.zero(length_word, 8)?;
        let params = self
            .params
            .as_ref()
            .map_or(0, |p| worker.transfer.address(p));
        let (input_len, capacity, params_len) = (
            input_len as u64,
            self.max_output_bytes as u64,
            self.params_len as u64,
        );
        let stream = worker.transfer.stream().clone();
        let mut launch = stream.launch_builder(&self.function);
        launch
            .arg(&input_address)
            .arg(&input_len)
            .arg(&output)
            .arg(&capacity)
            .arg(&length_word)
            .arg(&params)
            .arg(&params_len);
        // SAFETY: the arguments match the documented kernel signature (three device
        // addresses and four 64-bit lengths, in its order), each address holds at least
        // the length given beside it, and nothing else uses these buffers until the
        // stream is synchronised below. What the kernel does inside them is its own
        // business: a kernel that writes out of bounds faults the context (reported).
        unsafe { launch.launch(self.launch_config(input_len as usize)) }
            .map_err(|e| CudaError::Gpu(format!("launching the kernel: {e}")))?;
        worker.transfer.synchronize().map_err(|e| {
            CudaError::Gpu(format!(
                "{e} (the kernel faulted: GPU lambdas on this broker may fail until it restarts)"
            ))
        })?;
        phases.kernel = start.elapsed();

        let start = Instant::now();
        let written = worker.transfer.download_u64(length_word)?;
        if written > capacity {
            return Err(CudaError::Gpu(format!(
                "the kernel reported {written} bytes of output, more than its capacity of {capacity} (max_output_bytes)"
            )));
        }
        let bytes = if written == 0 {
            Vec::new()
        } else {
            worker.transfer.download(output, written as usize)?
        };
        phases.d2h = start.elapsed();
        Ok((bytes, phases))
    }
}
