//! No-op pipeline latency (the seed's Fig. 7): 1 to 4 forwarding stages, their
//! outputs passed on by trigger or by volatile put, per lambda kind (the
//! built-in `forward`, the example WebAssembly module's `forward`, the example C
//! library's zero-copy `forward`, and the example external process
//! `wire/examples/process_lambda.rs`, which upper-cases each value and writes it
//! back through the native client over shared memory), beside the engine's single put latency and
//! the bare put -> lambda hand-off measured in the same run.
//!
//! Run with `cargo run --release -p bench --bin pipeline -- [--quick]`. It builds
//! the example lambdas as a user does (cargo for wasm32-unknown-unknown, `cc
//! -shared -fPIC`); a kind whose build fails is skipped with a note.
//!
//! One message at a time: the time is read, the first stage's input is put (or
//! triggered), and a probe lambda bound after the last stage records when it
//! starts; the next message goes once it arrived. Latency = probe start - the
//! clock read before the put. The target is that each extra in-process stage
//! adds at most 5 µs at p50: the least-squares slope of p50 over 1-4 stages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::report::{self, Bound, Target};
use bench::{fmt_us, latency_histogram, nanos_since, print_latency, record, Budget, Latency};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use kascade_core::{
    Destination, EmitMode, Engine, EngineConfig, Key, LambdaContext, ObjectVersion, PipelineSpec,
    PoolConfig, Put, Retention, Storage, Vertex, WaitPolicy,
};

/// Measures no-op pipeline latency per lambda kind and stage count.
#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    about = "No-op pipeline latency, 1-4 stages, trigger and volatile put, per lambda kind"
)]
struct Args {
    /// A short smoke run (a few seconds in all), for CI.
    #[arg(long)]
    quick: bool,
    /// Measured milliseconds of each case (default 1000, or 40 with --quick).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Most stages measured.
    #[arg(long, default_value_t = 4)]
    max_stages: usize,
    /// Value size, bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Upcall worker threads (one keeps every stage on one thread: no hand-off between stages).
    #[arg(long, default_value_t = 1)]
    upcall_workers: usize,
    /// Lambda kinds measured (comma separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    kinds: Vec<Kind>,
}

/// The lambda kinds, for `--kinds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// Core's built-in `forward`.
    Forward,
    /// The example WebAssembly module's `forward` (copies the value in and out).
    Wasm,
    /// The example C library's `forward` (zero-copy).
    Cdylib,
    /// The example external process (an upcall and its output over the native client).
    Process,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Forward => "forward",
            Kind::Wasm => "wasm",
            Kind::Cdylib => "cdylib",
            Kind::Process => "process",
        }
    }
}

/// How a stage passes its output on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Trigger,
    Put,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Trigger => "trigger",
            Mode::Put => "volatile put",
        }
    }
}

/// Versions kept per key: bounds memory over a long run.
const MAX_VERSIONS: u64 = 16;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench sits in the repository")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// Builds examples/wasm-lambda for wasm32-unknown-unknown; its bytes or why not.
fn build_wasm() -> Result<Vec<u8>, String> {
    let target = target_dir().join("wasm-lambda");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--manifest-path",
        ])
        .arg(repo().join("examples/wasm-lambda/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let path = target.join("wasm32-unknown-unknown/release/kascade_wasm_lambda.wasm");
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Compiles examples/c-lambda/upper.c into `dir`; the library's path or why not.
fn build_c(dir: &Path) -> Result<PathBuf, String> {
    let lib = dir.join("libkascade_upper.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-I"])
        .arg(repo().join("include"))
        .arg("-o")
        .arg(&lib)
        .arg(repo().join("examples/c-lambda/upper.c"))
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(lib)
}

/// The example process's path, once built.
static PROCESS_PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Builds wire/examples/process_lambda in this benchmark's profile; its path or why not.
fn build_process() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (flags, profile): (&[&str], _) = if cfg!(debug_assertions) {
        (&[], "debug")
    } else {
        (&["--release"], "release")
    };
    let out = Command::new(cargo)
        .args(["build", "-p", "kascade-wire", "--example", "process_lambda"])
        .args(flags)
        .current_dir(repo())
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let path = target_dir().join(profile).join("examples/process_lambda");
    let path = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !path.exists() {
        return Err(format!("{} was not built", path.display()));
    }
    Ok(path)
}

/// Starts the native listener (shared memory in `dir`) on `engine`, for the `process` kind.
fn start_native(
    engine: &Engine,
    host: &Arc<kascade::lambdas::LambdaHost>,
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
) -> Result<kascade::native::NativeServer, String> {
    let _enter = runtime.enter();
    let config = kascade::Config {
        data_dir: dir.to_path_buf(),
        ..kascade::Config::default()
    };
    let bound = "127.0.0.1:9092".parse().map_err(|e| format!("{e}"))?;
    let state = kascade::kafka::State::open(engine.clone(), &config, bound)
        .map_err(|e| format!("the Kafka face: {e}"))?;
    let state = Arc::new(state);
    host.attach_kafka(&state);
    let settings =
        kascade::native::NativeSettings::from_config(&config).map_err(|e| format!("{e}"))?;
    let native = kascade::native::NativeServer::start(
        state,
        &settings,
        runtime.handle().clone(),
        host.processes().clone(),
    )
    .map_err(|e| format!("the native listener: {e}"))?;
    host.set_native_url(native.shm_url().map(str::to_owned));
    Ok(native)
}

/// The config of `kind`'s forwarding stage.
fn stage_config(kind: Kind, wasm: &[u8], c_library: &Path) -> serde_json::Value {
    match kind {
        Kind::Forward => serde_json::Value::Null,
        Kind::Wasm => {
            let mut c = kascade::lambdas::wasm::WasmConfig::new(wasm);
            c.handler = "forward".into();
            serde_json::to_value(c).expect("a serializable config")
        }
        Kind::Cdylib => {
            let mut c = kascade::lambdas::cdylib::CdylibConfig::new(c_library);
            c.symbol = "forward".into();
            serde_json::to_value(c).expect("a serializable config")
        }
        Kind::Process => {
            let program = PROCESS_PROGRAM
                .get()
                .expect("the example process was built");
            serde_json::json!({ "command": [program] })
        }
    }
}

/// The engine with the broker's lambda kinds, and their host. In memory, unless
/// `data_dir` is given (the Kafka face the native listener needs keeps its
/// metadata in persistent pools); the measured pools are volatile or trigger either way.
fn open_engine(
    workers: usize,
    data_dir: Option<PathBuf>,
) -> (Engine, Arc<kascade::lambdas::LambdaHost>) {
    let host = kascade::lambdas::LambdaHost::new();
    let engine = host
        .register(Engine::builder(EngineConfig {
            data_dir,
            upcall_workers: workers,
            upcall_wait: WaitPolicy::default(),
        }))
        .open()
        .expect("opening the engine");
    (engine, host)
}

/// Where the probe lambda records arrivals.
struct Probe {
    base: Instant,
    arrived: AtomicU64,
    at_ns: AtomicU64,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe {
            base: Instant::now(),
            arrived: AtomicU64::new(0),
            at_ns: AtomicU64::new(0),
        })
    }

    /// Binds the probe at `prefix` as a local lambda.
    fn bind(self: &Arc<Self>, engine: &Engine, name: &str, prefix: &str) {
        let probe = self.clone();
        engine
            .bind_local(
                name,
                prefix,
                Arc::new(move |_: &LambdaContext<'_>, _: &Arc<ObjectVersion>| {
                    probe
                        .at_ns
                        .store(nanos_since(probe.base), Ordering::Release);
                    probe.arrived.fetch_add(1, Ordering::AcqRel);
                    Ok(())
                }),
            )
            .expect("binding the probe");
    }

    /// Spins until the probe has seen `n` arrivals; the last one's time, ns since `base`.
    fn wait(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.arrived.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
            assert!(
                Instant::now() < deadline,
                "a message was lost in the pipeline"
            );
        }
        self.at_ns.load(Ordering::Acquire)
    }
}

fn pool(prefix: &str, mode: Mode) -> PoolConfig {
    let storage = match mode {
        Mode::Trigger => Storage::Trigger,
        Mode::Put => Storage::Volatile,
    };
    PoolConfig::new(prefix, storage)
        .shards(1)
        .retention(Retention {
            max_versions: Some(MAX_VERSIONS),
            ..Retention::default()
        })
}

/// Sends messages into `first` one at a time for `duration`; latency until the probe starts.
fn drive(
    engine: &Engine,
    probe: &Probe,
    first: &Key,
    mode: Mode,
    value: &Bytes,
    warmup: Duration,
    duration: Duration,
) -> Histogram<u64> {
    let mut h = latency_histogram();
    let mut sent = probe.arrived.load(Ordering::Acquire);
    let started = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= warmup + duration {
            break;
        }
        let t0 = nanos_since(probe.base);
        match mode {
            Mode::Put => engine.put(Put::new(first.clone(), value.clone())),
            Mode::Trigger => engine.trigger(first, value.clone()),
        }
        .expect("the first stage's write");
        sent += 1;
        let at = probe.wait(sent);
        if elapsed >= warmup {
            record(&mut h, at.saturating_sub(t0));
        }
    }
    h
}

/// One case: `stages` stages of `kind` passing by `mode`; the latency histogram.
#[allow(clippy::too_many_arguments)]
fn run_case(
    engine: &Engine,
    kind: Kind,
    mode: Mode,
    stages: usize,
    wasm: &[u8],
    c_library: &Path,
    value: &Bytes,
    budget: &Budget,
) -> Histogram<u64> {
    let root = format!(
        "/{}/{}/{stages}",
        kind.name(),
        if mode == Mode::Put { "put" } else { "trigger" }
    );
    for s in 0..=stages {
        engine
            .create_pool(pool(&format!("{root}/s{s}"), mode))
            .expect("creating a stage's pool");
    }
    let name = format!(
        "{}-{}-{stages}",
        kind.name(),
        if mode == Mode::Put { "put" } else { "trigger" }
    );
    let emit = match mode {
        Mode::Put => EmitMode::Put,
        Mode::Trigger => EmitMode::Trigger,
    };
    let spec = PipelineSpec {
        name: name.clone(),
        vertices: (0..stages)
            .map(|s| Vertex {
                name: format!("s{s}"),
                prefix: format!("{root}/s{s}"),
                kind: kind.name().into(),
                config: stage_config(kind, wasm, c_library),
                destinations: vec![Destination {
                    prefix: format!("{root}/s{}", s + 1),
                    mode: emit,
                }],
            })
            .collect(),
    };
    engine.load_pipeline(spec).expect("loading the pipeline");
    let probe = Probe::new();
    probe.bind(
        engine,
        &format!("{name}.probe"),
        &format!("{root}/s{stages}"),
    );
    let first = Key::new(&format!("{root}/s0/k")).expect("a valid key");
    let h = drive(
        engine,
        &probe,
        &first,
        mode,
        value,
        budget.warmup,
        budget.case,
    );
    if let Some(stats) = engine.pipeline_stats(&name) {
        let errors: u64 = stats.iter().map(|s| s.errors).sum();
        assert_eq!(errors, 0, "a stage failed: {stats:?}");
        if std::env::var_os("KASCADE_BENCH_STAGES").is_some() {
            for s in stats {
                println!(
                    "      {:<24} queue lag mean {} µs, call mean {} µs",
                    s.name,
                    fmt_us(s.mean_lag_ns),
                    fmt_us(s.mean_ns)
                );
            }
        }
    }
    engine
        .remove_pipeline(&name)
        .expect("removing the pipeline");
    engine
        .unbind(&format!("{name}.probe"))
        .expect("unbinding the probe");
    h
}

/// What the `wasm` kind's choice of reusing an instance per worker saves: one
/// call of the example's `forward` on a kept instance (fresh fuel, alloc,
/// handler) against the same call on a new store and instance each time.
/// The host functions are stubs here: only the runtime's cost is measured.
fn wasm_instances(
    wasm: &[u8],
    budget: &Budget,
) -> wasmtime::Result<(Histogram<u64>, Histogram<u64>)> {
    use wasmtime::{Config, Linker, Module, Store, TypedFunc};
    let mut config = Config::new();
    config.consume_fuel(true).wasm_backtrace(false);
    let engine = wasmtime::Engine::new(&config)?;
    let module = Module::new(&engine, wasm)?;
    let mut linker = Linker::<()>::new(&engine);
    linker.func_wrap("kascade", "emit", |_: i32, _: i32| 0i32)?;
    linker.func_wrap("kascade", "put", |_: i32, _: i32, _: i32, _: i32| 0i32)?;
    linker.func_wrap("kascade", "trigger", |_: i32, _: i32, _: i32, _: i32| 0i32)?;
    linker.func_wrap("kascade", "get", |_: i32, _: i32, _: i32, _: i32| -1i64)?;
    linker.func_wrap("kascade", "log", |_: i32, _: i32, _: i32| {})?;
    let pre = linker.instantiate_pre(&module)?;
    type Handle = TypedFunc<(i32, i32, i32, i32, i64, i64, i64), i32>;
    let call = |store: &mut Store<()>, alloc: &TypedFunc<i32, i32>, handle: &Handle| {
        store.set_fuel(100_000_000)?;
        let at = alloc.call(&mut *store, 101)?;
        handle.call(&mut *store, (at, 1, at + 1, 100, 1, 1, 1))
    };
    let fresh_one = || -> wasmtime::Result<(Store<()>, TypedFunc<i32, i32>, Handle)> {
        let mut store = Store::new(&engine, ());
        store.set_fuel(100_000_000)?;
        let instance = pre.instantiate(&mut store)?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "kascade_alloc")?;
        let handle = instance.get_typed_func(&mut store, "forward")?;
        Ok((store, alloc, handle))
    };
    let (mut reused, mut fresh) = (latency_histogram(), latency_histogram());
    let (mut store, alloc, handle) = fresh_one()?;
    let started = Instant::now();
    while started.elapsed() < budget.warmup + budget.case {
        let t0 = Instant::now();
        call(&mut store, &alloc, &handle)?;
        if started.elapsed() >= budget.warmup {
            record(&mut reused, nanos_since(t0));
        }
    }
    let started = Instant::now();
    while started.elapsed() < budget.warmup + budget.case {
        let t0 = Instant::now();
        let (mut store, alloc, handle) = fresh_one()?;
        call(&mut store, &alloc, &handle)?;
        drop(store);
        if started.elapsed() >= budget.warmup {
            record(&mut fresh, nanos_since(t0));
        }
    }
    Ok((reused, fresh))
}

/// The engine's own floors in this run: a put() into a volatile pool with no
/// lambda, and put -> the start of a lambda bound on the key (0 stages).
fn floors(engine: &Engine, value: &Bytes, budget: &Budget) -> (Histogram<u64>, Histogram<u64>) {
    engine
        .create_pool(pool("/floor/plain", Mode::Put))
        .expect("creating the floor pool");
    let key = Key::new("/floor/plain/k").expect("a valid key");
    let mut put = latency_histogram();
    let started = Instant::now();
    while started.elapsed() < budget.warmup + budget.case {
        let t0 = Instant::now();
        engine
            .put(Put::new(key.clone(), value.clone()))
            .expect("put");
        if started.elapsed() >= budget.warmup {
            record(&mut put, nanos_since(t0));
        }
    }
    engine
        .create_pool(pool("/floor/probe", Mode::Put))
        .expect("creating the probe pool");
    let probe = Probe::new();
    probe.bind(engine, "floor.probe", "/floor/probe");
    let key = Key::new("/floor/probe/k").expect("a valid key");
    let hop = drive(
        engine,
        &probe,
        &key,
        Mode::Put,
        value,
        budget.warmup,
        budget.case,
    );
    engine.unbind("floor.probe").expect("unbinding the probe");
    (put, hop)
}

/// The least-squares slope of `p50s[i]` (ns) against the stage count `i + 1`.
fn slope(p50s: &[u64]) -> f64 {
    let n = p50s.len() as f64;
    let xs = (1..=p50s.len()).map(|x| x as f64);
    let mean_x = xs.clone().sum::<f64>() / n;
    let mean_y = p50s.iter().map(|&y| y as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, &y) in xs.zip(p50s) {
        num += (x - mean_x) * (y as f64 - mean_y);
        den += (x - mean_x) * (x - mean_x);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn main() {
    let args = Args::parse();
    let budget = Budget::new(args.quick, args.duration_ms);
    let started = Instant::now();
    report::print_machine("Kascade no-op pipeline benchmark", Path::new("."));
    let kinds = if args.kinds.is_empty() {
        vec![Kind::Forward, Kind::Wasm, Kind::Cdylib]
    } else {
        args.kinds.clone()
    };
    let scratch = tempfile::tempdir().expect("a scratch dir");
    let mut wasm = Vec::new();
    let mut runnable = Vec::new();
    for kind in kinds {
        let ready = match kind {
            Kind::Forward => Ok(()),
            Kind::Wasm => build_wasm().map(|w| wasm = w),
            Kind::Cdylib => build_c(scratch.path()).map(|_| ()),
            Kind::Process => build_process().map(|p| {
                let _ = PROCESS_PROGRAM.set(p);
            }),
        };
        match ready {
            Ok(()) => runnable.push(kind),
            Err(e) => println!(
                "  note: kind {} skipped, its example did not build:\n{e}",
                kind.name()
            ),
        }
    }
    let c_library = scratch.path().join("libkascade_upper.so");
    let data_dir = runnable
        .contains(&Kind::Process)
        .then(|| scratch.path().join("engine"));
    let (engine, host) = open_engine(args.upcall_workers, data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut native = None;
    if runnable.contains(&Kind::Process) {
        match start_native(&engine, &host, &runtime, scratch.path()) {
            Ok(n) => native = Some(n),
            Err(e) => {
                println!("  note: kind process skipped: {e}");
                runnable.retain(|k| *k != Kind::Process);
            }
        }
    }
    let value = Bytes::from(vec![b'x'; args.size]);
    println!(
        "\n-- no-op pipeline, {} B values, one message in flight, {} upcall worker(s) ({} running), wait {:?} --",
        args.size,
        args.upcall_workers,
        engine.upcall_workers(),
        WaitPolicy::default()
    );
    println!("  latency = the probe lambda after the last stage starts - the clock read before the first put/trigger");
    let (put, hop) = floors(&engine, &value, &budget);
    print_latency(
        "floor: engine put() of one value (volatile, no lambda)",
        &put,
    );
    print_latency("floor: put -> a lambda on that key starts (0 stages)", &hop);
    if runnable.contains(&Kind::Wasm) {
        match wasm_instances(&wasm, &budget) {
            Ok((reused, fresh)) => {
                print_latency("wasm runtime: forward call, instance kept", &reused);
                print_latency("wasm runtime: same, new instance per call", &fresh);
            }
            Err(e) => println!("  note: the wasm runtime comparison failed: {e:#}"),
        }
    }
    let mut targets = Vec::new();
    for kind in &runnable {
        for mode in [Mode::Trigger, Mode::Put] {
            println!("  {} stages, passing by {}:", kind.name(), mode.name());
            let mut p50s = Vec::new();
            for stages in 1..=args.max_stages.max(1) {
                let h = run_case(
                    &engine, *kind, mode, stages, &wasm, &c_library, &value, &budget,
                );
                let l = Latency::of(&h);
                print_latency(&format!("  {stages} stage(s)"), &h);
                p50s.push(l.p50);
            }
            if p50s.len() >= 2 {
                let per_stage = slope(&p50s);
                println!(
                    "    each extra stage adds {} µs at p50 (least-squares slope over 1-{} stages)",
                    fmt_us(per_stage.max(0.0) as u64),
                    p50s.len()
                );
                // The target is for in-process stages; a process stage is an IPC round trip.
                if *kind != Kind::Process {
                    targets.push(Target {
                        name: format!("{} / {}: extra stage, p50", kind.name(), mode.name()),
                        measured: per_stage / 1000.0,
                        limit: 5.0,
                        unit: "µs",
                        bound: Bound::AtMost,
                    });
                }
            }
        }
    }
    host.stop_processes();
    if let Some(n) = native {
        n.shutdown();
    }
    engine.shutdown();
    report::print_targets(&targets);
    println!(
        "\nloadavg at end: {}; total {:.1} s",
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
}
