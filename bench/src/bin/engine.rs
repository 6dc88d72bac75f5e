//! Engine benchmarks: put, trigger -> upcall and get, each beside the machine's floors.
//!
//! Run with `cargo run --release -p bench --bin engine -- [--quick] [--dir D] [--duration-ms N]`.
//! It first measures the floors (memcpy, the data disk's fdatasync, thread
//! hand-offs), then the engine, and ends with the targets as
//! measured / limit / ratio / PASS or MISS. A miss never fails the run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bench::floors::{self, Floors};
use bench::report::{self, Bound, Target};
use bench::{
    fmt_rate, fmt_size, fmt_us, latency_histogram, nanos_since, print_latency, record, spin_until,
    Budget, Latency,
};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use kascade_core::{
    Engine, EngineConfig, FsyncPolicy, Get, Key, LambdaContext, LambdaError, ObjectVersion,
    PoolConfig, Put, Retention, Storage, WaitPolicy,
};
use parking_lot::Mutex;

/// Benchmarks the Kascade engine beside the machine's floors.
#[derive(Parser, Debug)]
#[command(
    name = "engine",
    about = "Kascade engine benchmarks, each figure beside the machine's floors"
)]
struct Args {
    /// A short smoke run (a few seconds in all), for CI.
    #[arg(long)]
    quick: bool,
    /// Parent of the data dir: persistent pools and the fdatasync floor go in a temporary directory under it.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Measured milliseconds of each case (default 1000, or 40 with --quick).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// The fsync interval of the `interval` persistent pool, in milliseconds.
    #[arg(long, default_value_t = 10)]
    fsync_interval_ms: u64,
    /// Paced rate of the trigger -> upcall stream, puts per second.
    #[arg(long, default_value_t = 10_000)]
    upcall_rate: u64,
    /// Versions kept on the key that gets are measured on.
    #[arg(long, default_value_t = 10_000)]
    versions: usize,
    /// Upcall wait policies of the trigger -> upcall section (comma separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    waits: Vec<Wait>,
    /// Upcall worker threads of the trigger -> upcall engines (default: the engine's default).
    #[arg(long)]
    upcall_workers: Option<usize>,
    /// Value sizes of the put matrix, in bytes (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1 << 10, 10 << 10, 1 << 20])]
    sizes: Vec<usize>,
    /// Writer-thread counts of the put matrix (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    writers: Vec<usize>,
    /// Storage flavours of the put matrix (comma separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    storage: Vec<Flavour>,
    /// Run only these sections (comma separated); the floors always run.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

/// The sections of the benchmark, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// The put matrix: storage x value size x writers.
    Put,
    /// Persistent fsync=always with many writers.
    GroupCommit,
    /// Trigger -> upcall latency under a paced stream.
    Upcall,
    /// Get latency on a key with many versions.
    Get,
}

/// Versions kept per key in the put benchmarks: bounds memory even at 1 MiB values.
const MAX_VERSIONS: u64 = 8;
/// Shards of the benchmark pools (the engine's default).
const SHARDS: u32 = 4;
/// The spin of the engine's default upcall wait policy, in µs (the floor uses the same).
fn default_spin_us() -> u64 {
    match WaitPolicy::default() {
        WaitPolicy::SpinThenPark { spin_us } => spin_us,
        _ => 200,
    }
}

/// The upcall wait policies, for `--waits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Wait {
    /// `WaitPolicy::SpinThenPark` with the default spin (the engine's default).
    SpinThenPark,
    /// `WaitPolicy::Block`: park at once.
    Block,
    /// `WaitPolicy::BusyPoll`: never park.
    BusyPoll,
}

/// The storage flavours of the put matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Flavour {
    /// A trigger pool: ordered, upcalled, never stored.
    Trigger,
    /// A volatile pool: in memory only.
    Volatile,
    /// A persistent pool whose every write waits for fdatasync.
    FsyncAlways,
    /// A persistent pool fsynced in the background every `--fsync-interval-ms`.
    FsyncInterval,
}

impl Flavour {
    fn name(self, interval_ms: u64) -> String {
        match self {
            Flavour::Trigger => "trigger pool (no lambda bound)".into(),
            Flavour::Volatile => "volatile pool".into(),
            Flavour::FsyncAlways => "persistent pool, fsync = always".into(),
            Flavour::FsyncInterval => format!("persistent pool, fsync = interval {interval_ms} ms"),
        }
    }

    fn pool(self, prefix: &str, interval_ms: u64, shards: u32) -> PoolConfig {
        let storage = match self {
            Flavour::Trigger => Storage::Trigger,
            Flavour::Volatile => Storage::Volatile,
            Flavour::FsyncAlways | Flavour::FsyncInterval => Storage::Persistent,
        };
        let fsync = match self {
            Flavour::FsyncInterval => FsyncPolicy::Interval { ms: interval_ms },
            _ => FsyncPolicy::Always,
        };
        PoolConfig::new(prefix, storage)
            .shards(shards)
            .fsync(fsync)
            .retention(Retention {
                max_versions: Some(MAX_VERSIONS),
                ..Retention::default()
            })
    }

    fn persistent(self) -> bool {
        matches!(self, Flavour::FsyncAlways | Flavour::FsyncInterval)
    }
}

/// What one put case measured.
struct PutResult {
    latency: Latency,
    ops_per_s: f64,
    bytes_per_s: f64,
}

/// A fresh engine for one case; persistent engines get their own data dir under `root`.
fn open_engine(
    root: &Path,
    persistent: bool,
    upcall_wait: WaitPolicy,
) -> (Engine, Option<tempfile::TempDir>) {
    let dir = persistent.then(|| {
        tempfile::Builder::new()
            .prefix("engine-")
            .tempdir_in(root)
            .expect("creating a data dir")
    });
    let engine = Engine::open(EngineConfig {
        data_dir: dir.as_ref().map(|d| d.path().to_path_buf()),
        upcall_wait,
        ..EngineConfig::default()
    })
    .expect("opening the engine");
    (engine, dir)
}

/// `n` keys under `prefix` that land on distinct shards when `n` <= shards.
///
/// A shard's first write gets version 1, so a probe put answered with version 1
/// opened a shard no earlier key uses. Only the public API is used.
fn keys_on_distinct_shards(engine: &Engine, prefix: &str, n: usize, shards: u32) -> Vec<Key> {
    if n > shards as usize {
        return (0..n)
            .map(|i| Key::new(&format!("{prefix}/w{i}")).expect("valid key"))
            .collect();
    }
    let mut keys = Vec::new();
    for i in 0.. {
        let key = Key::new(&format!("{prefix}/k{i}")).expect("valid key");
        if engine
            .put(Put::new(key.clone(), "probe"))
            .expect("probe put")
            .version
            == 1
        {
            keys.push(key);
            if keys.len() == n {
                break;
            }
        }
    }
    keys
}

/// Runs one writer thread per key for the budget, each putting fresh `size`-byte values.
fn put_case(engine: &Engine, keys: &[Key], size: usize, budget: &Budget) -> PutResult {
    let barrier = Barrier::new(keys.len());
    let per_thread: Vec<(Histogram<u64>, u64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let barrier = &barrier;
                std::thread::Builder::new()
                    .name(format!("put-w{i}"))
                    .spawn_scoped(s, move || {
                        let src = vec![0xA5u8; size];
                        // Each put carries a fresh value, as a client's would: one copy, timed.
                        let put = || {
                            engine
                                .put(Put::new(key.clone(), Bytes::copy_from_slice(&src)))
                                .expect("put")
                        };
                        let warm_end = Instant::now() + budget.warmup;
                        while Instant::now() < warm_end {
                            put();
                        }
                        barrier.wait();
                        let mut h = latency_histogram();
                        let start = Instant::now();
                        let end = start + budget.case;
                        let mut n = 0u64;
                        loop {
                            let t = Instant::now();
                            put();
                            record(&mut h, nanos_since(t));
                            n += 1;
                            if t >= end {
                                break;
                            }
                        }
                        (h, n, start.elapsed())
                    })
                    .expect("spawning a writer")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer panicked"))
            .collect()
    });
    let mut all = latency_histogram();
    let mut ops_per_s = 0.0;
    for (h, n, elapsed) in &per_thread {
        all.add(h).expect("same histogram bounds");
        ops_per_s += *n as f64 / elapsed.as_secs_f64();
    }
    PutResult {
        latency: Latency::of(&all),
        ops_per_s,
        bytes_per_s: ops_per_s * size as f64,
    }
}

/// One put case on a fresh engine: `writers` threads on separate keys (on separate shards when they fit).
fn run_put(
    root: &Path,
    flavour: Flavour,
    size: usize,
    writers: usize,
    shards: u32,
    args: &Args,
    budget: &Budget,
) -> PutResult {
    let (engine, dir) = open_engine(root, flavour.persistent(), WaitPolicy::default());
    engine
        .create_pool(flavour.pool("/bench", args.fsync_interval_ms, shards))
        .expect("creating the pool");
    let keys = keys_on_distinct_shards(&engine, "/bench", writers, shards);
    let r = put_case(&engine, &keys, size, budget);
    drop(engine);
    drop(dir);
    r
}

fn print_put_header(floor_col: &str) {
    println!(
        "  {:>8} {:>7}  {:>8} {:>8} {:>8}  {:>9} {:>9}  {}",
        "size", "writers", "p50 µs", "p99 µs", "p99.9 µs", "ops/s", "MB/s", floor_col
    );
}

fn print_put_row(size: usize, writers: usize, r: &PutResult, vs_floor: &str) {
    println!(
        "  {:>8} {:>7}  {:>8} {:>8} {:>8}  {:>9} {:>9.1}  {}",
        fmt_size(size),
        writers,
        fmt_us(r.latency.p50),
        fmt_us(r.latency.p99),
        fmt_us(r.latency.p999),
        fmt_rate(r.ops_per_s),
        r.bytes_per_s / 1e6,
        vs_floor
    );
}

/// Results the targets need.
#[derive(Default)]
struct Figures {
    volatile_1k_two: Option<f64>,
    volatile_1m_one_bps: Option<f64>,
    always_100_one: Option<Latency>,
    always_100_many: Option<f64>,
    upcall_default: Option<Latency>,
}

fn run_put_matrix(
    root: &Path,
    floors: &Floors,
    args: &Args,
    budget: &Budget,
    figures: &mut Figures,
) {
    for flavour in [
        Flavour::Trigger,
        Flavour::Volatile,
        Flavour::FsyncAlways,
        Flavour::FsyncInterval,
    ] {
        if !args.storage.is_empty() && !args.storage.contains(&flavour) {
            continue;
        }
        println!(
            "\n-- put: {} ({SHARDS} shards, retention max_versions={MAX_VERSIONS}, fresh value per put) --",
            flavour.name(args.fsync_interval_ms)
        );
        let floor_col = if flavour == Flavour::FsyncAlways {
            "p50 / fdatasync p50; MB/s / memcpy 64 MiB | 1 MiB"
        } else {
            "MB/s / memcpy 64 MiB | 1 MiB"
        };
        print_put_header(floor_col);
        for &size in &args.sizes {
            for &writers in &args.writers {
                let r = run_put(root, flavour, size, writers, SHARDS, args, budget);
                let mut vs = format!(
                    "{:.1}% | {:.1}%",
                    100.0 * r.bytes_per_s / floors.memcpy_large,
                    100.0 * r.bytes_per_s / floors.memcpy_1mib
                );
                if flavour == Flavour::FsyncAlways {
                    vs = format!(
                        "{:.2}x fdatasync ({} µs); {vs}",
                        r.latency.p50 as f64 / floors.fdatasync.p50 as f64,
                        fmt_us(floors.fdatasync.p50)
                    );
                }
                print_put_row(size, writers, &r, &vs);
                match (flavour, size, writers) {
                    (Flavour::Volatile, 1024, 2) => figures.volatile_1k_two = Some(r.ops_per_s),
                    (Flavour::Volatile, 1048576, 1) => {
                        figures.volatile_1m_one_bps = Some(r.bytes_per_s)
                    }
                    (Flavour::FsyncAlways, 100, 1) => figures.always_100_one = Some(r.latency),
                    _ => {}
                }
            }
        }
    }
}

fn run_group_commit(
    root: &Path,
    floors: &Floors,
    args: &Args,
    budget: &Budget,
    figures: &mut Figures,
) {
    println!("\n-- group commit: persistent pool, fsync = always, 100 B, one key per writer --");
    println!(
        "  floors: fdatasync {} µs p50 on one file ({:.1}k syncs/s); {} files in parallel {:.1}k syncs/s in all",
        fmt_us(floors.fdatasync.p50),
        1e6 / floors.fdatasync.p50.max(1) as f64,
        floors.parallel_files,
        floors.fdatasync_parallel_rate / 1e3
    );
    println!("  with perfect group commit each sync covers every waiting writer: N writers -> up to N x one writer's rate");
    print_put_header("x single writer");
    let single = run_put(root, Flavour::FsyncAlways, 100, 1, SHARDS, args, budget);
    print_put_row(100, 1, &single, "1.00x");
    for (writers, shards) in [(8, SHARDS), (32, SHARDS), (32, 1)] {
        let r = run_put(
            root,
            Flavour::FsyncAlways,
            100,
            writers,
            shards,
            args,
            budget,
        );
        let label = format!(
            "{:.2}x ({shards} shard{})",
            r.ops_per_s / single.ops_per_s,
            if shards == 1 { "" } else { "s" }
        );
        print_put_row(100, writers, &r, &label);
        if writers == 32 && shards == SHARDS {
            figures.always_100_many = Some(r.ops_per_s / single.ops_per_s);
        }
    }
}

/// What the probe lambda saw.
struct Probe {
    base: Instant,
    latency: Mutex<Histogram<u64>>,
    seen: AtomicU64,
}

/// Trigger -> upcall latency under a paced stream: from just before the `put` call (its
/// value already built) to the lambda's start.
fn run_upcall(
    policy: WaitPolicy,
    workers: usize,
    rate: u64,
    budget: &Budget,
) -> (Histogram<u64>, Histogram<u64>) {
    let engine = Engine::open(EngineConfig {
        upcall_wait: policy,
        upcall_workers: workers,
        ..EngineConfig::default()
    })
    .expect("opening the engine");
    engine
        .create_pool(PoolConfig::new("/up", Storage::Trigger).shards(SHARDS))
        .expect("creating the trigger pool");
    let probe = Arc::new(Probe {
        base: Instant::now(),
        latency: Mutex::new(latency_histogram()),
        seen: AtomicU64::new(0),
    });
    let p = probe.clone();
    let lambda =
        move |_ctx: &LambdaContext<'_>, obj: &Arc<ObjectVersion>| -> Result<(), LambdaError> {
            let now = nanos_since(p.base);
            let sent = u64::from_le_bytes(obj.value[..8].try_into().expect("8 bytes"));
            if obj.value[8] == 1 {
                record(&mut p.latency.lock(), now.saturating_sub(sent));
            }
            p.seen.fetch_add(1, Ordering::Release);
            Ok(())
        };
    engine
        .bind_local("probe", "/up", Arc::new(lambda))
        .expect("binding the probe");
    let key = Key::new("/up/stream").expect("valid key");
    // A copy: the probe's own line is the lambda's to write.
    let base = probe.base;
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut put_latency = latency_histogram();
    let mut sent = 0u64;
    let warm_end = Instant::now() + budget.warmup.max(Duration::from_millis(20));
    let end = warm_end + budget.case * 2;
    let mut next = Instant::now();
    loop {
        next += period;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now > next + period {
            next = now; // fell behind: restart the schedule instead of bursting
        } else {
            spin_until(next);
        }
        let measured = now >= warm_end;
        // The client's work comes first: a fresh value and the Put around it. The clock
        // starts just before the put() call, and its reading is written into the value
        // in place (no second allocation), so the figure is the put call to lambda start.
        let mut value = BytesMut::zeroed(16);
        value[8] = u8::from(measured);
        let mut put = Put::new(key.clone(), Bytes::new());
        let t = Instant::now();
        let stamp = t.saturating_duration_since(base).as_nanos() as u64;
        value[..8].copy_from_slice(&stamp.to_le_bytes());
        put.value = value.freeze();
        engine.put(put).expect("put");
        if measured {
            record(&mut put_latency, nanos_since(t));
        }
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.seen.load(Ordering::Acquire) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let seen = probe.seen.load(Ordering::Acquire);
    if seen < sent {
        println!("  warning: only {seen} of {sent} upcalls ran within 10 s");
    }
    drop(engine);
    let upcall = probe.latency.lock().clone();
    (upcall, put_latency)
}

/// Prints how a latency compares with a floor.
fn print_vs_floor(label: &str, l: &Latency, floor: &Latency) {
    println!(
        "  {label:<44} p50 {:>8} µs  p99 {:>8} µs  -> p50 {:.1}x floor, p99 {:.1}x floor",
        fmt_us(floor.p50),
        fmt_us(floor.p99),
        l.p50 as f64 / floor.p50.max(1) as f64,
        l.p99 as f64 / floor.p99.max(1) as f64
    );
}

fn run_upcalls(floors: &Floors, args: &Args, budget: &Budget, figures: &mut Figures) {
    let workers = args
        .upcall_workers
        .unwrap_or(EngineConfig::default().upcall_workers);
    let sparse = (args.upcall_rate / 10).max(1);
    println!(
        "\n-- trigger -> upcall: paced {} puts/s (spin-paced) into a trigger pool, one key, {workers} upcall workers --",
        fmt_rate(args.upcall_rate as f64)
    );
    println!("  latency = lambda start - the clock read just before the put() call (value and Put already built); floor = the hand-off of the same wait policy");
    let spin_name = format!("SpinThenPark {} µs (default)", default_spin_us());
    let sparse_name = format!("{spin_name}, sparse stream");
    for (wait, name, policy, rate, floor) in [
        (
            Wait::SpinThenPark,
            spin_name.as_str(),
            WaitPolicy::default(),
            args.upcall_rate,
            floors.spin_then_park,
        ),
        (
            Wait::Block,
            "Block",
            WaitPolicy::Block,
            args.upcall_rate,
            floors.idle_wake,
        ),
        (
            Wait::BusyPoll,
            "BusyPoll",
            WaitPolicy::BusyPoll,
            args.upcall_rate,
            floors.spin,
        ),
        (
            Wait::SpinThenPark,
            sparse_name.as_str(),
            WaitPolicy::default(),
            sparse,
            floors.idle_wake,
        ),
    ] {
        if !args.waits.is_empty() && !args.waits.contains(&wait) {
            continue;
        }
        if wait == Wait::BusyPoll && workers + 1 > report::nproc() {
            println!(
                "  note: {workers} busy-polling workers asked for; the engine runs at most {} on {} CPUs (one CPU left to the producer)",
                report::nproc().saturating_sub(1).max(1),
                report::nproc()
            );
        }
        if rate == sparse {
            println!(
                "  sparse stream: {} µs between puts, longer than the {} µs spin, so the worker parks every time",
                1_000_000 / sparse,
                default_spin_us()
            );
        }
        let (upcall, put) = run_upcall(policy, workers, rate, budget);
        let l = Latency::of(&upcall);
        println!("  {name}, {} puts/s:", fmt_rate(rate as f64));
        print_latency("  put -> lambda start", &upcall);
        print_latency("  put() call itself", &put);
        if rate == sparse {
            print_vs_floor("  floor: wake of a parked thread", &l, &floor);
            print_vs_floor(
                "  floor: the waker's unpark() (in put)",
                &Latency::of(&put),
                &floors.unpark_call,
            );
            continue;
        }
        print_vs_floor("  floor: same-policy one-way hand-off", &l, &floor);
        if policy == WaitPolicy::default() {
            let label = format!(
                "  floor: same, paced every {} µs",
                floors.idle_gap.as_micros()
            );
            print_vs_floor(&label, &l, &floors.spin_then_park_paced);
            figures.upcall_default = Some(l);
        }
    }
}

/// A small xorshift generator: enough to pick read positions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn run_gets(floors: &Floors, args: &Args, budget: &Budget) {
    let n = args.versions.max(1);
    println!("\n-- get: one key with {n} retained versions of 100 B (volatile pool) --");
    println!(
        "  floor: clock read p50 {} µs (included in every sample)",
        fmt_us(floors.clock.p50)
    );
    let (engine, _dir) = open_engine(Path::new("."), false, WaitPolicy::default());
    engine
        .create_pool(
            PoolConfig::new("/hist", Storage::Volatile).retention(Retention {
                max_versions: Some(n as u64),
                ..Retention::default()
            }),
        )
        .expect("creating the pool");
    let key = Key::new("/hist/k").expect("valid key");
    let value = Bytes::from(vec![7u8; 100]);
    let mut first_ts = 0;
    let mut last_ts = 0;
    for i in 0..n {
        let r = engine
            .put(Put::new(key.clone(), value.clone()))
            .expect("put");
        if i == 0 {
            first_ts = r.timestamp_us;
        }
        last_ts = r.timestamp_us;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for label in ["Get::Latest", "Get::Seq(random)", "Get::AtTime(random)"] {
        let mut h = latency_histogram();
        let end = Instant::now() + budget.case / 2;
        loop {
            let q = match label {
                "Get::Latest" => Get::Latest,
                "Get::Seq(random)" => Get::Seq(rng.below(n as u64)),
                _ => Get::AtTime(first_ts + rng.below(last_ts - first_ts + 1)),
            };
            let t = Instant::now();
            let got = engine.get(&key, q).expect("get");
            record(&mut h, nanos_since(t));
            assert!(std::hint::black_box(got).is_some(), "{label} found nothing");
            if t >= end {
                break;
            }
        }
        print_latency(label, &h);
    }
}

fn targets(floors: &Floors, f: &Figures) -> Vec<Target> {
    let mut t = Vec::new();
    if let Some(up) = f.upcall_default {
        t.push(Target {
            name: format!(
                "trigger->upcall p50 <= 3 x spin-then-park hand-off p50 ({} µs)",
                fmt_us(floors.spin_then_park.p50)
            ),
            measured: up.p50 as f64 / 1000.0,
            limit: 3.0 * floors.spin_then_park.p50 as f64 / 1000.0,
            unit: "µs",
            bound: Bound::AtMost,
        });
        t.push(Target {
            name: "trigger->upcall p99 <= 50 µs".into(),
            measured: up.p99 as f64 / 1000.0,
            limit: 50.0,
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    if let Some(rate) = f.volatile_1k_two {
        t.push(Target {
            name: "volatile put 1 KiB, two writers >= 1M ops/s".into(),
            measured: rate,
            limit: 1e6,
            unit: "ops/s",
            bound: Bound::AtLeast,
        });
    }
    if let Some(one) = f.always_100_one {
        t.push(Target {
            name: format!(
                "persistent fsync=always put 100 B p50 <= 1.3 x fdatasync p50 ({} µs)",
                fmt_us(floors.fdatasync.p50)
            ),
            measured: one.p50 as f64 / 1000.0,
            limit: 1.3 * floors.fdatasync.p50 as f64 / 1000.0,
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    if let Some(x) = f.always_100_many {
        t.push(Target {
            name: format!(
                "persistent fsync=always, 32 writers ({SHARDS} shards) >= 10 x single-writer rate"
            ),
            measured: x,
            limit: 10.0,
            unit: "x",
            bound: Bound::AtLeast,
        });
    }
    if let Some(bps) = f.volatile_1m_one_bps {
        t.push(Target {
            name: format!(
                "volatile put 1 MiB, 1 writer >= 30% of memcpy bandwidth ({:.2} GB/s)",
                floors.memcpy_large / 1e9
            ),
            measured: bps / 1e9,
            limit: 0.3 * floors.memcpy_large / 1e9,
            unit: "GB/s",
            bound: Bound::AtLeast,
        });
    }
    t
}

fn main() {
    let args = Args::parse();
    let budget = Budget::new(args.quick, args.duration_ms);
    std::fs::create_dir_all(&args.dir).expect("creating --dir");
    let root = tempfile::Builder::new()
        .prefix("kascade-bench-")
        .tempdir_in(&args.dir)
        .expect("creating the benchmark's data dir");
    let started = Instant::now();
    report::print_machine("kascade engine benchmark", root.path());
    println!(
        "run       : {} ms per case, {} ms warm-up, {} ms per floor{}",
        budget.case.as_millis(),
        budget.warmup.as_millis(),
        budget.floor.as_millis(),
        if args.quick { " (--quick)" } else { "" }
    );

    let gap = Duration::from_nanos(1_000_000_000 / args.upcall_rate.max(1));
    let floors = floors::measure(
        root.path(),
        budget.floor,
        default_spin_us(),
        gap,
        SHARDS as usize,
    )
    .expect("measuring the floors");
    report::print_floors(&floors);

    let mut figures = Figures::default();
    let run = |s: Section| args.only.is_empty() || args.only.contains(&s);
    if run(Section::Put) {
        run_put_matrix(root.path(), &floors, &args, &budget, &mut figures);
    }
    if run(Section::GroupCommit) {
        run_group_commit(root.path(), &floors, &args, &budget, &mut figures);
    }
    if run(Section::Upcall) {
        run_upcalls(&floors, &args, &budget, &mut figures);
    }
    if run(Section::Get) {
        run_gets(&floors, &args, &budget);
    }

    report::print_floors(&floors);
    report::print_targets(&targets(&floors, &figures));
    println!(
        "\nloadavg at end: {}; total {:.1} s",
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
}
