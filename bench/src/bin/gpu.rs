//! GPU lambda latency per object (feature `cuda`): for 1 KiB, 1 MiB and 8 MiB
//! float32 payloads, the example kernel (examples/gpu-lambda/threshold.cu)
//! split into host -> device copy, kernel and device -> host copy, and end to
//! end (an engine put -> the lambda's output version visible), through the GPU
//! cache (a `gpu = true` pool) and without it; beside the same pipeline with a
//! CPU lambda (the same computation in Rust), and floors measured in the same
//! run: a bare pinned cuMemcpy of the same size each way, an empty kernel's
//! launch + synchronise, a host memcpy of the same size, and the engine's
//! put -> `forward` lambda -> output.
//!
//! `cargo run --release -p bench --features cuda --bin gpu -- [--quick]`.
//! Without the feature, a driver or a GPU it prints `no GPU: skipped (why)`
//! and exits 0.

#[cfg(not(feature = "cuda"))]
fn main() {
    println!("no GPU: skipped (built without the `cuda` feature: cargo run --release -p bench --features cuda --bin gpu)");
}

#[cfg(feature = "cuda")]
fn main() {
    run::main();
}

#[cfg(feature = "cuda")]
#[path = "../../../examples/gpu-lambda/cpu.rs"]
mod cpu;

#[cfg(feature = "cuda")]
mod run {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bench::{latency_histogram, nanos_since, print_latency, record};
    use bytes::Bytes;
    use clap::Parser;
    use cudarc::driver::{result, LaunchConfig};
    use hdrhistogram::Histogram;
    use kascade::lambdas::cuda::{CudaConfig, CudaProgram, DeviceInput};
    use kascade::lambdas::LambdaHost;
    use kascade_core::gpu::{Gpu, GpuOptions, Transfer};
    use kascade_core::{
        Ack, BindingSpec, Destination, EmitMode, Engine, EngineConfig, Key, LambdaContext,
        ObjectVersion, PoolConfig, Put, Storage, WaitPolicy,
    };

    use super::cpu;

    const SOURCE: &str = include_str!("../../../examples/gpu-lambda/threshold.cu");
    const PTX: &str = include_str!("../../../examples/gpu-lambda/threshold.ptx");
    /// An empty kernel, in PTX: the launch floor needs no compiler.
    const NOP_PTX: &str =
        ".version 7.0\n.target sm_75\n.address_size 64\n.visible .entry nop()\n{\n\tret;\n}\n";
    const LIMIT: f32 = 0.5;
    const GUARD: Duration = Duration::from_secs(30);

    /// GPU lambda latency per payload size, by phase, beside its floors.
    #[derive(Parser, Debug)]
    #[command(
        name = "gpu",
        about = "GPU lambda latency per object, by phase, beside its floors"
    )]
    struct Args {
        /// A short smoke run.
        #[arg(long)]
        quick: bool,
        /// Samples per case (default 200, or 20 with --quick; 8 MiB cases take a quarter).
        #[arg(long)]
        samples: Option<usize>,
        /// The CUDA device.
        #[arg(long, default_value_t = 0)]
        device: usize,
    }

    pub fn main() {
        let args = Args::parse();
        let gpu = match Gpu::open(&GpuOptions {
            device: args.device,
            cache_bytes: 1 << 30,
        }) {
            Ok(gpu) => gpu,
            Err(why) => {
                println!("no GPU: skipped ({why})");
                return;
            }
        };
        let d = gpu.device();
        println!(
            "GPU {} (compute {}, {} MiB, driver CUDA {}); NVRTC {}",
            d.name,
            d.compute_capability,
            d.memory_bytes >> 20,
            d.driver_version,
            if kascade_core::gpu::nvrtc_present() {
                "present"
            } else {
                "absent: the committed PTX is used"
            }
        );
        if let Err(e) = measure(&gpu, &args) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }

    fn config() -> CudaConfig {
        let mut c = if kascade_core::gpu::nvrtc_present() {
            CudaConfig::from_source(SOURCE, "threshold")
        } else {
            let mut c = CudaConfig::from_source("", "threshold");
            c.source = None;
            c.ptx = Some(PTX.to_string());
            c
        };
        c = c.params(&LIMIT.to_le_bytes());
        c.grid = Some(1);
        c.block = 1024;
        c
    }

    fn ptx(gpu: &Gpu, c: &CudaConfig) -> Result<String, String> {
        match (&c.source, &c.ptx) {
            (Some(s), _) => {
                kascade::lambdas::cuda::compile(s, "threshold", Some(gpu.compute_capability()))
                    .map_err(|e| e.to_string())
            }
            (None, Some(p)) => Ok(p.clone()),
            _ => Err("no program".into()),
        }
    }

    fn payload(size: usize) -> Vec<u8> {
        let mut v = 0.75f32.to_le_bytes().to_vec();
        v.extend(cpu::payload(size / 4 - 1, size as u64));
        v
    }

    fn measure(gpu: &Arc<Gpu>, args: &Args) -> Result<(), String> {
        let samples = args.samples.unwrap_or(if args.quick { 20 } else { 200 });
        let c = config();
        let (program, mut worker) =
            CudaProgram::load(gpu, &ptx(gpu, &c)?, &LIMIT.to_le_bytes(), &c)
                .map_err(|e| e.to_string())?;
        let mut transfer = gpu.transfer().map_err(|e| e.to_string())?;
        let nop = gpu
            .context()
            .load_module(cudarc::nvrtc::Ptx::from_src(NOP_PTX))
            .and_then(|m| m.load_function("nop"))
            .map_err(|e| format!("loading the empty kernel: {e}"))?;
        let (engine, _host) = engine(gpu)?;

        let mut launch = latency_histogram();
        for _ in 0..samples * 2 {
            let start = Instant::now();
            let stream = transfer.stream().clone();
            // SAFETY: the empty kernel takes no arguments.
            unsafe {
                stream
                    .launch_builder(&nop)
                    .launch(LaunchConfig::for_num_elems(1))
            }
            .map_err(|e| e.to_string())?;
            transfer.synchronize().map_err(|e| e.to_string())?;
            record(&mut launch, nanos_since(start));
        }
        println!("\nfloor");
        print_latency("empty kernel: launch + synchronise", &launch);

        for (index, size) in [1usize << 10, 1 << 20, 8 << 20].into_iter().enumerate() {
            let n = if size >= 8 << 20 {
                samples.div_ceil(4)
            } else {
                samples
            };
            let input = payload(size);
            let expected = cpu::threshold(&input, LIMIT);
            println!(
                "\n{} payload ({} float32s, {} bytes kept)",
                bench::fmt_size(size),
                size / 4,
                expected.len()
            );
            floors(gpu, &mut transfer, &input, n)?;

            // Phases, input copied by the lambda (a pool without gpu = true).
            let (mut h2d, mut kernel, mut d2h, mut total) = (
                latency_histogram(),
                latency_histogram(),
                latency_histogram(),
                latency_histogram(),
            );
            for _ in 0..n {
                let start = Instant::now();
                let (out, p) = program
                    .run(&mut worker, DeviceInput::Host(&input))
                    .map_err(|e| e.to_string())?;
                record(&mut total, nanos_since(start));
                if out != expected {
                    return Err(format!("{size} bytes: the GPU's output is not the CPU's"));
                }
                record(&mut h2d, p.h2d.as_nanos() as u64);
                record(&mut kernel, p.kernel.as_nanos() as u64);
                record(&mut d2h, p.d2h.as_nanos() as u64);
            }
            println!("GPU lambda, input copied per call");
            print_latency("h2d: pinned staging + copy", &h2d);
            print_latency("kernel: launch to completion", &kernel);
            print_latency("d2h: length word + output", &d2h);
            print_latency("the three together", &total);

            // Staging into the GPU cache (what a gpu = true pool does once per version),
            // then the kernel on the resident copy: h2d is a cache hit.
            let (mut stage, mut hit, mut resident_total) = (
                latency_histogram(),
                latency_histogram(),
                latency_histogram(),
            );
            let mut object = ObjectVersion {
                key: Key::new(&format!("/bench/object{index}")).map_err(|e| e.to_string())?,
                version: 0,
                seq: 0,
                count: 1,
                timestamp_us: 1,
                prev_version: 0,
                affinity: None,
                tombstone: false,
                value: Bytes::from(input.clone()),
            };
            for i in 0..n {
                object.version = i as u64 + 1;
                let start = Instant::now();
                gpu.resident(&object, &mut transfer)
                    .map_err(|e| e.to_string())?;
                record(&mut stage, nanos_since(start));
                let start = Instant::now();
                let entry = gpu
                    .resident(&object, worker.transfer())
                    .map_err(|e| e.to_string())?
                    .ok_or("not cached")?;
                let address = entry
                    .device_address(worker.transfer())
                    .ok_or("not resident")?;
                record(&mut hit, nanos_since(start));
                let (out, _) = program
                    .run(
                        &mut worker,
                        DeviceInput::Resident {
                            address,
                            len: input.len(),
                        },
                    )
                    .map_err(|e| e.to_string())?;
                record(&mut resident_total, nanos_since(start));
                if out != expected {
                    return Err(format!(
                        "{size} bytes: the resident GPU output is not the CPU's"
                    ));
                }
            }
            println!("GPU lambda, input in the GPU cache (gpu = true pool)");
            print_latency("staging a new version (off the lambda's path)", &stage);
            print_latency("h2d: cache hit", &hit);
            print_latency("hit + kernel + d2h", &resident_total);

            // End to end through the engine: put -> lambda -> output version visible.
            for (label, prefix) in [
                ("e2e put -> GPU lambda (gpu pool) -> output", "/gin"),
                ("e2e put -> GPU lambda (copying) -> output", "/gcopy"),
                ("e2e put -> CPU lambda (Rust) -> output", "/cin"),
                ("floor: e2e put -> forward lambda -> output", "/fin"),
            ] {
                let h = end_to_end(&engine, prefix, index, &input, n)?;
                print_latency(label, &h);
            }
            let mut cpu_only = latency_histogram();
            for _ in 0..n {
                let start = Instant::now();
                let out = cpu::threshold(&input, LIMIT);
                record(&mut cpu_only, nanos_since(start));
                std::hint::black_box(out);
            }
            print_latency("CPU computation alone", &cpu_only);
        }
        let cache = gpu.cache_report();
        println!(
            "\nGPU cache: {} entries, {} bytes, {} hits, {} misses, {} evictions",
            cache.entries, cache.bytes, cache.hits, cache.misses, cache.evictions
        );
        Ok(())
    }

    /// Bare copies of `input`'s size from and to pinned memory, and a host memcpy.
    fn floors(
        gpu: &Arc<Gpu>,
        transfer: &mut Transfer,
        input: &[u8],
        n: usize,
    ) -> Result<(), String> {
        let size = input.len();
        let device = transfer.alloc(size).map_err(|e| e.to_string())?;
        let address = transfer.address(&device);
        // SAFETY: filled below before any read.
        let mut pinned = unsafe { gpu.context().alloc_pinned_with_flags::<u8>(size, 0) }
            .map_err(|e| e.to_string())?;
        pinned
            .as_mut_slice()
            .map_err(|e| e.to_string())?
            .copy_from_slice(input);
        let (mut up, mut down, mut memcpy) = (
            latency_histogram(),
            latency_histogram(),
            latency_histogram(),
        );
        transfer.bind().map_err(|e| e.to_string())?;
        for _ in 0..n {
            let host = pinned.as_mut_slice().map_err(|e| e.to_string())?;
            let start = Instant::now();
            // SAFETY: `address` holds `size` bytes; the pinned buffer outlives the synchronised copy.
            unsafe { result::memcpy_htod_async(address, &host[..], transfer.stream().cu_stream()) }
                .map_err(|e| e.to_string())?;
            transfer.synchronize().map_err(|e| e.to_string())?;
            record(&mut up, nanos_since(start));
            let start = Instant::now();
            // SAFETY: as above, the other way.
            unsafe {
                result::memcpy_dtoh_async(&mut host[..], address, transfer.stream().cu_stream())
            }
            .map_err(|e| e.to_string())?;
            transfer.synchronize().map_err(|e| e.to_string())?;
            record(&mut down, nanos_since(start));
            let mut copy = vec![0u8; size];
            let start = Instant::now();
            copy.copy_from_slice(input);
            record(&mut memcpy, nanos_since(start));
            std::hint::black_box(copy);
        }
        println!("floors");
        print_latency("bare cuMemcpyHtoD from pinned memory", &up);
        print_latency("bare cuMemcpyDtoH to pinned memory", &down);
        print_latency("host memcpy of the same size", &memcpy);
        Ok(())
    }

    /// An engine with the GPU, its `cuda` kind, and the four pipelines the e2e cases use.
    fn engine(gpu: &Arc<Gpu>) -> Result<(Engine, Arc<LambdaHost>), String> {
        let host = LambdaHost::new();
        host.set_gpu(Ok(gpu.clone()));
        let engine_config = EngineConfig {
            data_dir: None,
            upcall_workers: 1,
            upcall_wait: WaitPolicy::SpinThenPark { spin_us: 200 },
        };
        let engine = host
            .register(Engine::builder(engine_config).gpu(gpu.clone()))
            .open()
            .map_err(|e| e.to_string())?;
        let e = |r: kascade_core::Result<()>| r.map_err(|e| e.to_string());
        for (prefix, gpu_pool) in [
            ("/gin", true),
            ("/gcopy", false),
            ("/cin", false),
            ("/fin", false),
            ("/out", false),
        ] {
            e(engine.create_pool(
                PoolConfig::new(prefix, Storage::Volatile)
                    .shards(1)
                    .gpu(gpu_pool),
            ))?;
        }
        let c = serde_json::to_value(config()).map_err(|e| e.to_string())?;
        for (name, prefix, kind) in [
            ("gin", "/gin", "cuda"),
            ("gcopy", "/gcopy", "cuda"),
            ("fin", "/fin", "forward"),
        ] {
            e(engine.bind(BindingSpec {
                name: name.into(),
                prefix: prefix.into(),
                kind: kind.into(),
                config: if kind == "cuda" {
                    c.clone()
                } else {
                    serde_json::Value::Null
                },
                destinations: vec![Destination {
                    prefix: format!("/out{prefix}"),
                    mode: EmitMode::Put,
                }],
            }))?;
        }
        e(engine.bind_local(
            "cin",
            "/cin",
            Arc::new(|ctx: &LambdaContext<'_>, o: &Arc<ObjectVersion>| {
                let engine = ctx
                    .engine()
                    .ok_or_else(|| kascade_core::LambdaError("stopping".into()))?;
                let key = Key::new(&format!("/out{}", o.key.as_str()))?;
                engine.put_with(Put::new(key, cpu::threshold(&o.value, LIMIT)), Ack::Applied)?;
                Ok(())
            }),
        ))?;
        Ok((engine, host))
    }

    /// Put -> output visible, `n` times, one at a time.
    fn end_to_end(
        engine: &Engine,
        prefix: &str,
        index: usize,
        input: &[u8],
        n: usize,
    ) -> Result<Histogram<u64>, String> {
        let key = Key::new(&format!("{prefix}/k{index}")).map_err(|e| e.to_string())?;
        let out = Key::new(&format!("/out{prefix}/k{index}")).map_err(|e| e.to_string())?;
        let value = Bytes::from(input.to_vec());
        let mut h = latency_histogram();
        let first = engine.bounds(&out).map_err(|e| e.to_string())?.next_seq;
        for i in 0..n as u64 {
            let waiter = engine
                .wait_for_seq(&out, first + i)
                .map_err(|e| e.to_string())?;
            let start = Instant::now();
            engine
                .put_with(Put::new(key.clone(), value.clone()), Ack::Applied)
                .map_err(|e| e.to_string())?;
            if !waiter.wait_timeout(GUARD) {
                return Err(format!(
                    "{prefix}: no output within {GUARD:?} (see the lambda's errors)"
                ));
            }
            record(&mut h, nanos_since(start));
        }
        Ok(h)
    }
}
