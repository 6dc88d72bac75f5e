//! Native-path benchmarks: publish -> subscriber callback latency and publish
//! throughput through a real `kascade serve` process, with the native client
//! over shared memory (blocking wake-ups, spin-then-park, busy-polling) and
//! over TCP, each figure beside floors measured in the same run.
//!
//! Run with `cargo build --release -p kascade -p bench && target/release/native [--quick]`.
//! The floors: two processes ping-ponging through shared memory, waiting each
//! way the transport can (spin, spin-then-futex, futex, eventfd), back to back
//! and paced at the stream's gap; the loopback TCP round trip to a child
//! process (this binary re-executed); and the Kafka path (librdkafka produce
//! -> consume, 1 KiB, acks=all, volatile topic, at the stream's rate) against
//! the same `kascade` binary with its default settings. Then one broker per
//! wait mode (`--native-wait block|spin|busy`, `--upcall-wait block` unless
//! told otherwise) serves the cases: one publisher and 1 or 4 subscribers (threads of this process, each
//! its own client), values stamped with `CLOCK_MONOTONIC`, a paced stream
//! for latency and an unpaced one for throughput. It ends with the targets as
//! measured / limit / ratio / PASS or MISS; a miss never fails the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bench::kafka_path::PACED_SIZE;
use bench::native_path::{self, Case, Cpu, PacedResult, RateResult, MIN_VALUE};
use bench::report::{self, Bound, Target};
use bench::served::{cores, kascade_bin, Admin, Broker, Storage};
use bench::shm_floor::{shm_ping_pong, ShmWait};
use bench::{fmt_rate, fmt_size, fmt_us, Budget, Latency};
use clap::Parser;
use kascade_wire::native::WaitStrategy;

/// Benchmarks Kascade's native path (shared memory and TCP), beside same-run floors.
#[derive(Parser, Debug)]
#[command(
    name = "native",
    about = "Kascade native-path benchmarks (shm and tcp clients), each figure beside same-run floors"
)]
struct Args {
    /// A short smoke run (a few seconds in all), for CI.
    #[arg(long)]
    quick: bool,
    /// Parent of the brokers' temporary data dirs and sockets (default: the system's
    /// temporary dir; a Unix socket path must stay under 108 bytes).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Measured milliseconds of each throughput case (default 1000, or 40 with --quick);
    /// each paced latency case runs three times as long.
    #[arg(long)]
    duration_ms: Option<u64>,
    /// The paced stream's rate, records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Microseconds the broker and the clients spin before parking with spin-then-park
    /// (also the spin-then-futex floor's); longer than the stream's gap, so a steady
    /// stream finds them spinning.
    #[arg(long, default_value_t = 200)]
    spin_us: u32,
    /// The brokers' `--upcall-wait` (block, spin or busy). Subscriptions to volatile topics
    /// are pumped by the native core thread; the messaging lambda's upcall workers only
    /// back that up, and spinning there takes a vCPU from the clients.
    #[arg(long, default_value = "block")]
    upcall_wait: String,
    /// Value sizes of the latency section, in bytes (comma separated; at least 16).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1 << 10, 64 << 10])]
    sizes: Vec<usize>,
    /// Subscriber counts of the latency section (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    subscribers: Vec<usize>,
    /// Value sizes of the throughput section, in bytes (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1 << 10, 64 << 10])]
    tput_sizes: Vec<usize>,
    /// Subscriber counts of the throughput section (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0, 1])]
    tput_subscribers: Vec<usize>,
    /// Transports and wait modes to run (comma separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    modes: Vec<Mode>,
    /// Run only these sections (comma separated); the floors always run.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// The `kascade` binary to run (default: the one beside this binary).
    #[arg(long, env = "KASCADE_BIN")]
    kascade_bin: Option<PathBuf>,
}

/// The sections of the benchmark, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Paced publish -> subscriber latency.
    Latency,
    /// Publish throughput.
    Throughput,
    /// The Kafka path's produce -> consume latency (librdkafka).
    Kafka,
}

/// A transport and the way its clients and the broker wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Shared memory, everyone parks at once.
    Block,
    /// Shared memory, spin `--spin-us` then park.
    Spin,
    /// Shared memory, never park.
    Busy,
    /// TCP on loopback, spin-then-park.
    Tcp,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Block, Mode::Spin, Mode::Busy, Mode::Tcp];

    fn label(self, spin_us: u32) -> String {
        match self {
            Mode::Block => "shm, blocking wake-ups".into(),
            Mode::Spin => format!("shm, spin {spin_us} µs then park"),
            Mode::Busy => "shm, busy-polling".into(),
            Mode::Tcp => format!("tcp, spin {spin_us} µs then park"),
        }
    }

    /// The broker's `--native-wait`.
    fn broker_wait(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Spin | Mode::Tcp => "spin",
            Mode::Busy => "busy",
        }
    }

    fn client_wait(self, spin_us: u32) -> WaitStrategy {
        match self {
            Mode::Block => WaitStrategy::Block,
            Mode::Spin | Mode::Tcp => WaitStrategy::SpinThenPark { spin_us },
            Mode::Busy => WaitStrategy::BusyPoll,
        }
    }
}

/// Everything measured to judge the native path against.
#[derive(Default)]
struct Floors {
    clock: Latency,
    gap: Duration,
    /// One-way shared-memory hand-off per wait: (back to back, paced at `gap`).
    shm: Vec<(ShmWait, Latency, Latency)>,
    /// Loopback TCP round trip of 1 KiB: (back to back, paced at `gap`).
    loopback: Option<(Latency, Latency)>,
    /// The Kafka path at the stream's rate: (produce -> ack, produce -> consume).
    kafka: Option<(Latency, Latency)>,
}

impl Floors {
    /// The paced one-way shm floor of `wait`'s kind.
    fn shm_paced(&self, pick: fn(&ShmWait) -> bool) -> Option<Latency> {
        self.shm.iter().find(|(w, ..)| pick(w)).map(|(_, _, p)| *p)
    }

    /// The floor a mode's latency is read against: (name, latency).
    fn for_mode(&self, mode: Mode) -> Option<(&'static str, Latency)> {
        match mode {
            Mode::Block => self
                .shm_paced(|w| *w == ShmWait::Futex)
                .map(|l| ("futex", l)),
            Mode::Spin => self
                .shm_paced(|w| matches!(w, ShmWait::SpinThenFutex(_)))
                .map(|l| ("spin-futex", l)),
            Mode::Busy => self.shm_paced(|w| *w == ShmWait::Spin).map(|l| ("spin", l)),
            Mode::Tcp => self.loopback.map(|(_, p)| ("tcp rtt", p)),
        }
    }
}

fn lat(l: &Latency) -> String {
    format!(
        "p50 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs",
        fmt_us(l.p50),
        fmt_us(l.p99),
        fmt_us(l.p999)
    )
}

fn wait_name(w: &ShmWait) -> String {
    match w {
        ShmWait::Spin => "spin".into(),
        ShmWait::SpinThenFutex(d) => format!("spin {} µs then futex", d.as_micros()),
        ShmWait::Futex => "futex".into(),
        ShmWait::Eventfd => "eventfd".into(),
    }
}

fn measure_floors(budget: &Budget, gap: Duration, spin_us: u32) -> Floors {
    let mut f = Floors {
        clock: Latency::of(&bench::floors::clock_overhead(budget.floor / 4)),
        gap,
        ..Floors::default()
    };
    for wait in [
        ShmWait::Spin,
        ShmWait::SpinThenFutex(Duration::from_micros(spin_us.into())),
        ShmWait::Futex,
        ShmWait::Eventfd,
    ] {
        let both = shm_ping_pong(wait, Duration::ZERO, budget.floor)
            .and_then(|b| Ok((b, shm_ping_pong(wait, gap, budget.floor)?)));
        match both {
            Ok((b, p)) => f.shm.push((wait, Latency::of(&b), Latency::of(&p))),
            Err(e) => println!("  error: shm ping-pong, {}: {e}", wait_name(&wait)),
        }
    }
    match bench::loopback::loopback_floor(PACED_SIZE, gap, budget.floor) {
        Ok(l) => f.loopback = Some(l),
        Err(e) => println!("  error: loopback floor: {e}"),
    }
    f
}

fn print_floors(f: &Floors) {
    println!("\n-- floors (measured now, same binary) --");
    println!(
        "  clock read (Instant::now pair)                        {}",
        lat(&f.clock)
    );
    println!("  shared-memory ping-pong between two processes, one way (round trip / 2):");
    for (w, back, paced) in &f.shm {
        println!(
            "    {:<24} back to back         {}",
            wait_name(w),
            lat(back)
        );
        println!(
            "    {:<24} {:>4} µs apart         {}",
            "",
            f.gap.as_micros(),
            lat(paced)
        );
    }
    if let Some((back, paced)) = &f.loopback {
        println!(
            "  loopback TCP round trip, 1 KiB, two processes         {}",
            lat(back)
        );
        println!(
            "    ... {:>4} µs idle before each                       {}",
            f.gap.as_micros(),
            lat(paced)
        );
    }
    if let Some((ack, e2e)) = &f.kafka {
        let rate = 1e9 / f.gap.as_nanos().max(1) as f64;
        println!(
            "  Kafka path (librdkafka, kascade default settings), 1 KiB, acks=all, volatile, {}/s:",
            fmt_rate(rate)
        );
        println!(
            "    produce -> ack                                      {}",
            lat(ack)
        );
        println!(
            "    produce -> consume                                  {}",
            lat(e2e)
        );
    }
}

/// The Kafka path's paced produce -> ack and produce -> consume, against a broker
/// of its own with default settings.
fn kafka_path(
    bin: &Path,
    root: &Path,
    rate: u64,
    budget: &Budget,
) -> Result<(Latency, Latency), String> {
    let dir = root.join("broker-kafka");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
    let broker = Broker::start(bin, &dir, &[])?;
    let admin = Admin::new(&broker.addr)?;
    on_topic(&admin, "kafka-path", |topic| {
        let p = bench::kafka_path::paced(&broker.addr, topic, rate, true, budget)?;
        let e2e = p.e2e.map(|h| Latency::of(&h)).unwrap_or_default();
        Ok((Latency::of(&p.ack), e2e))
    })
}

/// One latency row.
struct LatencyRow {
    mode: Mode,
    size: usize,
    subscribers: usize,
    result: Result<PacedResult, String>,
}

/// One throughput row.
struct RateRow {
    mode: Mode,
    size: usize,
    subscribers: usize,
    result: Result<RateResult, String>,
}

/// Runs `f` on a fresh one-partition volatile topic of `admin`'s broker.
fn on_topic<T>(
    admin: &Admin,
    name: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    admin.create(name, Storage::Volatile)?;
    let r = f(name);
    admin.delete(name);
    r
}

fn cpu_cols(c: &Cpu) -> String {
    format!("{:>11} {:>11}", cores(c.clients), cores(c.broker))
}

fn print_latency_table(rows: &[LatencyRow], floors: &Floors, args: &Args) {
    println!(
        "\n-- publish -> subscriber callback, paced at {}/s, volatile topic, 1 partition --",
        fmt_rate(args.rate as f64)
    );
    println!("  one publisher (sleeps between sends), subscribers are threads of this process; p50/floor: the mode's paced floor above");
    println!(
        "  {:<30} {:>6} {:>4}  {:>8} {:>8} {:>8} {:>8}  {:>7}  {:>16}  {:>11} {:>11}",
        "mode",
        "size",
        "subs",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "n",
        "p50 / floor",
        "client CPU",
        "broker CPU"
    );
    for r in rows {
        let head = format!(
            "  {:<30} {:>6} {:>4}",
            r.mode.label(args.spin_us),
            fmt_size(r.size),
            r.subscribers
        );
        let p = match &r.result {
            Ok(p) => p,
            Err(e) => {
                println!("{head}  error: {e}");
                continue;
            }
        };
        let l = Latency::of(&p.latency);
        let vs = floors.for_mode(r.mode).map_or("-".into(), |(name, f)| {
            format!("{:.1}x {name}", l.p50 as f64 / f.p50.max(1) as f64)
        });
        let mut notes = Vec::new();
        if p.received != p.sent * r.subscribers as u64 {
            notes.push(format!(
                "received {} of {}",
                p.received,
                p.sent * r.subscribers as u64
            ));
        }
        if p.fell_behind > 0 {
            notes.push(format!("publisher fell behind {} times", p.fell_behind));
        }
        println!(
            "{head}  {:>8} {:>8} {:>8} {:>8}  {:>7}  {:>16}  {}{}",
            fmt_us(l.p50),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            l.count,
            vs,
            cpu_cols(&p.cpu),
            if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join(", "))
            }
        );
    }
}

fn print_rate_table(rows: &[RateRow], args: &Args) {
    println!("\n-- publish throughput: one publisher, publish_nowait (the broker coalesces what is queued), acks collected every ~1 MiB --");
    println!(
        "  {:<30} {:>6} {:>4}  {:>10} {:>9}  {:>15}  {:>11} {:>11}",
        "mode", "size", "subs", "msgs/s", "MB/s", "delivered/s", "client CPU", "broker CPU"
    );
    for r in rows {
        let head = format!(
            "  {:<30} {:>6} {:>4}",
            r.mode.label(args.spin_us),
            fmt_size(r.size),
            r.subscribers
        );
        match &r.result {
            Ok(t) => println!(
                "{head}  {:>10} {:>9.1}  {:>15}  {}",
                fmt_rate(t.msgs_per_s),
                t.bytes_per_s / 1e6,
                t.delivered_per_s.map_or("-".into(), fmt_rate),
                cpu_cols(&t.cpu)
            ),
            Err(e) => println!("{head}  error: {e}"),
        }
    }
}

fn targets(floors: &Floors, lat: &[LatencyRow], rates: &[RateRow], args: &Args) -> Vec<Target> {
    let us = |ns: u64| ns as f64 / 1000.0;
    let find = |mode: Mode| {
        lat.iter()
            .find(|r| r.mode == mode && r.size == 1 << 10 && r.subscribers == 1)
            .and_then(|r| r.result.as_ref().ok())
            .map(|p| Latency::of(&p.latency))
    };
    let gap = floors.gap.as_micros();
    let mut t = Vec::new();
    let spin = find(Mode::Spin);
    if let (Some(l), Some((_, f))) = (spin, floors.for_mode(Mode::Spin)) {
        t.push(Target {
            name: format!(
                "spin-then-park 1 KiB p50 <= 3 x spin-then-futex floor ({} µs, {gap} µs apart)",
                fmt_us(f.p50)
            ),
            measured: us(l.p50),
            limit: 3.0 * us(f.p50),
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    if let Some(l) = spin {
        t.push(Target {
            name: format!(
                "spin-then-park 1 KiB p99 <= 50 µs ({}/s stream)",
                fmt_rate(args.rate as f64)
            ),
            measured: us(l.p99),
            limit: 50.0,
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    if let (Some(l), Some((_, f))) = (find(Mode::Block), floors.for_mode(Mode::Block)) {
        t.push(Target {
            name: format!(
                "blocking 1 KiB p50 <= 1.5 x futex floor ({} µs, {gap} µs apart)",
                fmt_us(f.p50)
            ),
            measured: us(l.p50),
            limit: 1.5 * us(f.p50),
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    let best = rates
        .iter()
        .filter(|r| r.size == 64 && r.subscribers == 0)
        .filter_map(|r| r.result.as_ref().ok().map(|t| (r.mode, t.msgs_per_s)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((mode, rate)) = best {
        t.push(Target {
            name: format!(
                "64 B from one publisher >= 1M msgs/s (best mode: {})",
                mode.label(args.spin_us)
            ),
            measured: rate,
            limit: 1e6,
            unit: "msgs/s",
            bound: Bound::AtLeast,
        });
    }
    if let (Some(l), Some((_, kafka))) = (spin, floors.kafka) {
        t.push(Target {
            name: format!(
                "Kafka path p50 ({} µs) / native spin-then-park 1 KiB p50 >= 20",
                fmt_us(kafka.p50)
            ),
            measured: kafka.p50 as f64 / l.p50.max(1) as f64,
            limit: 20.0,
            unit: "x",
            bound: Bound::AtLeast,
        });
    }
    t
}

/// One line on stderr as each case ends: the run's progress.
fn progress(
    mode: Mode,
    size: usize,
    subscribers: usize,
    args: &Args,
    what: &Result<String, &String>,
) {
    let what = match what {
        Ok(s) => s.clone(),
        Err(e) => format!("error: {e}"),
    };
    eprintln!(
        "  case: {} {} x{subscribers}: {what}",
        mode.label(args.spin_us),
        fmt_size(size)
    );
}

/// Starts a broker whose native core waits by `wait`, with the TCP listener when asked.
fn start_broker(
    bin: &Path,
    root: &Path,
    wait: &str,
    args: &Args,
    tcp: bool,
) -> Result<Broker, String> {
    let spin_us = args.spin_us;
    let dir = root.join(format!("broker-{wait}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
    let socket = root.join(format!("{wait}.sock"));
    let mut flags = vec![
        "--native".to_string(),
        format!("unix://{}", socket.display()),
        "--native-wait".to_string(),
        wait.to_string(),
        "--native-spin-us".to_string(),
        spin_us.to_string(),
        "--upcall-wait".to_string(),
        args.upcall_wait.clone(),
    ];
    if tcp {
        flags.extend(["--native-tcp".to_string(), "127.0.0.1:0".to_string()]);
    }
    Broker::start(bin, &dir, &flags)
}

fn main() {
    bench::loopback::run_echo_child_if_asked();
    let args = Args::parse();
    let budget = Budget::new(args.quick, args.duration_ms);
    let run = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| args.modes.is_empty() || args.modes.contains(m))
        .collect();
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).expect("creating --dir");
    let root = tempfile::Builder::new()
        .prefix("kascade-native-bench-")
        .tempdir_in(&dir)
        .expect("creating the benchmark's data dir");
    // The socket URLs must be absolute.
    let root_path = std::path::absolute(root.path()).unwrap_or_else(|_| root.path().into());
    let started = Instant::now();
    report::print_machine("kascade native-path benchmark", &root_path);
    println!(
        "clients   : kascade_wire::native::Client; publisher, subscribers, broker and floors share these {} CPUs",
        report::nproc()
    );
    println!(
        "run       : {} ms per throughput case, {} ms per paced case at {}/s, {} ms warm-up, {} ms per floor, spin {} µs, brokers' --upcall-wait {}{}",
        budget.case.as_millis(),
        (budget.case * 3).as_millis(),
        fmt_rate(args.rate as f64),
        budget.warmup.as_millis(),
        budget.floor.as_millis(),
        args.spin_us,
        args.upcall_wait,
        if args.quick { " (--quick)" } else { "" }
    );
    let gap = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let mut floors = measure_floors(&budget, gap, args.spin_us);
    print_floors(&floors);

    let bin = match kascade_bin(args.kascade_bin.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut lat_rows = Vec::new();
    let mut rate_rows = Vec::new();
    if run(Section::Kafka) {
        match kafka_path(&bin, &root_path, args.rate, &budget) {
            Ok(k) => floors.kafka = Some(k),
            Err(e) => println!("  error: Kafka path: {e}"),
        }
    }
    // One broker per wait mode; the spin broker also serves TCP.
    for wait in ["spin", "block", "busy"] {
        let served: Vec<Mode> = modes
            .iter()
            .copied()
            .filter(|m| m.broker_wait() == wait)
            .collect();
        if served.is_empty() || !(run(Section::Latency) || run(Section::Throughput)) {
            continue;
        }
        let started = start_broker(&bin, &root_path, wait, &args, served.contains(&Mode::Tcp))
            .and_then(|b| Ok((Admin::new(&b.addr)?, b)));
        let (admin, mut broker) = match started {
            Ok(b) => b,
            Err(e) => {
                println!("\nerror: starting the {wait} broker: {e}");
                continue;
            }
        };
        eprintln!("broker ({wait}): {}", broker.ready);
        let mut n = 0;
        for &mode in &served {
            let url = match mode {
                Mode::Tcp => broker.field("native_tcp"),
                _ => broker.field("native"),
            };
            let Some(url) = url.filter(|u| u != "off") else {
                println!(
                    "  error: no native URL for {mode:?} in the ready line: {}",
                    broker.ready
                );
                continue;
            };
            let case = |size: usize, subscribers: usize, n: usize| Case {
                url: url.clone(),
                topic: format!("native-{wait}-{n}"),
                wait: mode.client_wait(args.spin_us),
                size: size.max(MIN_VALUE),
                subscribers,
                broker_pid: broker.child.id(),
            };
            if run(Section::Latency) {
                for &size in &args.sizes {
                    for &subscribers in &args.subscribers {
                        n += 1;
                        let c = case(size, subscribers, n);
                        let result = on_topic(&admin, &c.topic, |_| {
                            native_path::paced(&c, args.rate, budget.warmup, budget.case * 3)
                        });
                        progress(
                            mode,
                            size,
                            subscribers,
                            &args,
                            &result.as_ref().map(|p| {
                                let l = Latency::of(&p.latency);
                                format!("p50 {} µs, p99 {} µs", fmt_us(l.p50), fmt_us(l.p99))
                            }),
                        );
                        lat_rows.push(LatencyRow {
                            mode,
                            size,
                            subscribers,
                            result,
                        });
                    }
                }
            }
            if run(Section::Throughput) {
                for &size in &args.tput_sizes {
                    for &subscribers in &args.tput_subscribers {
                        n += 1;
                        let c = case(size, subscribers, n);
                        let result = on_topic(&admin, &c.topic, |_| {
                            native_path::throughput(&c, budget.warmup, budget.case)
                        });
                        progress(
                            mode,
                            size,
                            subscribers,
                            &args,
                            &result
                                .as_ref()
                                .map(|t| format!("{} msgs/s", fmt_rate(t.msgs_per_s))),
                        );
                        rate_rows.push(RateRow {
                            mode,
                            size,
                            subscribers,
                            result,
                        });
                    }
                }
            }
        }
        if let Some(rss) = broker.rss_mib() {
            println!("  {wait} broker RSS at the end: {rss:.0} MiB");
        }
        if let Some(note) = broker.exited() {
            println!("\nwarning: {note}");
        }
    }

    print_floors(&floors);
    if !lat_rows.is_empty() {
        print_latency_table(&lat_rows, &floors, &args);
    }
    if !rate_rows.is_empty() {
        print_rate_table(&rate_rows, &args);
    }
    report::print_targets(&targets(&floors, &lat_rows, &rate_rows, &args));
    println!(
        "\nloadavg at end: {}; total {:.1} s",
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
}
