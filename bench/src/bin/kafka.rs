//! Kafka-path benchmarks: a real `kascade serve` process driven by librdkafka
//! (the `rdkafka` crate), each figure beside floors measured in the same run.
//!
//! Run with `cargo build --release -p kascade -p bench && target/release/kafka [--quick]`.
//! The floors are the loopback TCP round trip between two processes (this
//! binary re-executed as an echo child) and the same client against
//! librdkafka's in-process mock cluster: what the client itself costs. Then
//! it starts `kascade serve` on a free port with a temporary data dir (the
//! binary beside this one, or `--kascade-bin` / `KASCADE_BIN`), creates its
//! topics with the admin client (1 partition, a volatile and a persistent
//! line), and measures produce throughput per value size and acks, and paced
//! produce -> ack and produce -> consume latency with the consumer's
//! `fetch.wait.max.ms` left at its 500 ms default, so a long poll has to be
//! answered by the arriving record. It ends with the targets as
//! measured / limit / ratio / PASS or MISS; a miss never fails the run.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bench::kafka_path::{drained, paced, prime, producer, send, FETCH_WAIT_NS, PACED_SIZE};
use bench::report::{self, Bound, Target};
use bench::served::{cores, Admin, Broker, CpuMark, ServedArgs, Storage};
use bench::{
    fmt_latency as lat, fmt_rate, fmt_size, fmt_us, latency_histogram, print_latency, Budget,
    Latency,
};
use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{Producer, PurgeConfig};

/// Benchmarks Kascade's Kafka face with librdkafka, beside the machine's and the client's floors.
#[derive(Parser, Debug)]
#[command(
    name = "kafka",
    about = "Kascade Kafka-path benchmarks (librdkafka client), each figure beside same-run floors"
)]
struct Args {
    #[command(flatten)]
    served: ServedArgs,
    /// Parent of the broker's temporary data dir (and of the fdatasync floor's file).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Value sizes of the throughput section, in bytes (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1 << 10, 10 << 10, 1 << 20])]
    sizes: Vec<usize>,
    /// Paced rates of the latency section, messages per second (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 5_000, 10_000])]
    rates: Vec<u64>,
    /// Topic storage of the broker under test (comma separated; default both).
    #[arg(long, value_enum, value_delimiter = ',')]
    storage: Vec<Storage>,
    /// Run only these sections (comma separated); the floors they need always run.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

/// The sections of the benchmark, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Produce throughput per value size, acks=1 and acks=all.
    Throughput,
    /// Paced produce -> ack and produce -> consume latency.
    Latency,
}

/// The rate, size and acks of the targets (1 partition, volatile topic).
const TARGET_RATE: u64 = 5_000;

/// The two acks settings of the throughput matrix.
const ACKS: [&str; 2] = ["1", "all"];

// ---------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------

/// Produce throughput of one case.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    msgs_per_s: f64,
    bytes_per_s: f64,
    /// CPU of this process (client, and the mock cluster when it is the broker), in cores.
    client_cpu: Option<f64>,
    /// CPU of the broker process, in cores.
    broker_cpu: Option<f64>,
}

/// Produces `size`-byte values as fast as the client takes them; the rate of acknowledged messages.
fn throughput(
    bootstrap: &str,
    topic: &str,
    size: usize,
    acks: &str,
    budget: &Budget,
    broker_pid: Option<u32>,
) -> Result<Rate, String> {
    let base = Instant::now();
    let p = producer(bootstrap, acks, false, base)?;
    let payload = vec![0xA5u8; size];
    prime(&p, topic, &payload)?;
    let ctx = p.context().clone();
    let warm_end = Instant::now() + budget.warmup;
    while Instant::now() < warm_end {
        send(&p, topic, &payload, 0)?;
    }
    let (d0, t0) = (ctx.delivered.load(Ordering::Acquire), Instant::now());
    let cpu = CpuMark::now(broker_pid);
    let end = t0 + budget.case;
    while Instant::now() < end {
        send(&p, topic, &payload, 0)?;
    }
    let (d1, t1) = (ctx.delivered.load(Ordering::Acquire), Instant::now());
    let (client_cpu, broker_cpu) = cpu.share_since(broker_pid);
    let failed = ctx.failed.load(Ordering::Acquire);
    p.purge(PurgeConfig::default().queue());
    drained(&p, Duration::from_secs(30));
    if failed > 0 {
        return Err(format!(
            "{failed} deliveries failed: {}",
            ctx.first_error.lock().clone().unwrap_or_default()
        ));
    }
    let msgs_per_s = (d1 - d0) as f64 / (t1 - t0).as_secs_f64();
    Ok(Rate {
        msgs_per_s,
        bytes_per_s: msgs_per_s * size as f64,
        client_cpu,
        broker_cpu,
    })
}

// ---------------------------------------------------------------------------
// Floors
// ---------------------------------------------------------------------------

/// Everything measured before the broker under test, to judge it against.
#[derive(Default)]
struct Floors {
    clock: Latency,
    loopback: Latency,
    loopback_paced: Latency,
    gap: Duration,
    fdatasync: Latency,
    /// Mock cluster produce -> ack at each paced rate.
    mock_ack: Vec<(u64, Latency)>,
    /// Mock cluster throughput: (size, acks, rate).
    mock_rate: Vec<(usize, &'static str, Rate)>,
}

impl Floors {
    fn mock_ack_at(&self, rate: u64) -> Option<Latency> {
        self.mock_ack
            .iter()
            .find(|(r, _)| *r == rate)
            .map(|(_, l)| *l)
    }

    fn mock_rate_of(&self, size: usize, acks: &str) -> Option<Rate> {
        self.mock_rate
            .iter()
            .find(|(s, a, _)| *s == size && *a == acks)
            .map(|(_, _, r)| *r)
    }
}

fn print_floors(f: &Floors) {
    println!("\n-- floors (measured now, same binary) --");
    println!(
        "  clock read (Instant::now pair)                 {}",
        lat(&f.clock)
    );
    println!(
        "  loopback TCP round trip, 64 B, two processes   {}",
        lat(&f.loopback)
    );
    println!(
        "    ... {:>4} µs idle before each               {}",
        f.gap.as_micros(),
        lat(&f.loopback_paced)
    );
    println!(
        "  write 1 KiB + fdatasync (data dir's disk)      {}",
        lat(&f.fdatasync)
    );
    if !f.mock_ack.is_empty() {
        println!(
            "  librdkafka mock cluster (in this process, 1 partition), the client's own cost:"
        );
        for (rate, l) in &f.mock_ack {
            println!(
                "    produce -> ack, 1 KiB, acks=all, {:>5}/s   {}",
                fmt_rate(*rate as f64),
                lat(l)
            );
        }
    }
    if !f.mock_rate.is_empty() {
        println!("    produce throughput (client defaults, linger.ms=5):");
        for (size, acks, r) in &f.mock_rate {
            println!(
                "      {:>8}  acks={:<3}  {:>9} msgs/s  {:>8.1} MB/s  (client + mock CPU {})",
                fmt_size(*size),
                acks,
                fmt_rate(r.msgs_per_s),
                r.bytes_per_s / 1e6,
                cores(r.client_cpu)
            );
        }
    }
}

fn measure_floors(
    args: &Args,
    budget: &Budget,
    root: &Path,
    run: impl Fn(Section) -> bool,
) -> Floors {
    let gap = Duration::from_nanos(1_000_000_000 / TARGET_RATE);
    let mut f = Floors {
        clock: Latency::of(&bench::floors::clock_overhead(budget.floor / 4)),
        gap,
        ..Floors::default()
    };
    match bench::loopback::loopback_floor(64, gap, budget.floor) {
        Ok((b, p)) => (f.loopback, f.loopback_paced) = (b, p),
        Err(e) => println!("  error: {e}"),
    }
    match bench::floors::fdatasync_latency(root, 1 << 10, budget.floor) {
        Ok(h) => f.fdatasync = Latency::of(&h),
        Err(e) => println!("  error: fdatasync floor: {e}"),
    }
    let mock = match MockCluster::new(1) {
        Ok(m) => m,
        Err(e) => {
            println!("  error: starting the mock cluster: {e}");
            return f;
        }
    };
    let bootstrap = mock.bootstrap_servers();
    let mut n = 0;
    let mut topic = || {
        n += 1;
        let name = format!("mock-{n}");
        mock.create_topic(&name, 1, 1).map(|()| name)
    };
    if run(Section::Latency) {
        for &rate in &args.rates {
            let r = topic()
                .map_err(|e| e.to_string())
                .and_then(|t| paced(&bootstrap, &t, rate, false, budget));
            match r {
                Ok(p) => f.mock_ack.push((rate, Latency::of(&p.ack))),
                Err(e) => println!("  error: mock produce -> ack at {rate}/s: {e}"),
            }
        }
    }
    if run(Section::Throughput) {
        for &size in &args.sizes {
            for acks in ACKS {
                let r = topic()
                    .map_err(|e| e.to_string())
                    .and_then(|t| throughput(&bootstrap, &t, size, acks, budget, None));
                match r {
                    Ok(rate) => f.mock_rate.push((size, acks, rate)),
                    Err(e) => println!(
                        "  error: mock throughput {} acks={acks}: {e}",
                        fmt_size(size)
                    ),
                }
            }
        }
    }
    f
}

// ---------------------------------------------------------------------------
// The broker's figures
// ---------------------------------------------------------------------------

/// Results the targets need (volatile topic).
#[derive(Default)]
struct Figures {
    /// Produce -> ack and produce -> consume at the target rate.
    at_target: Option<(Latency, Latency)>,
    /// acks=all throughput per size.
    rates_all: Vec<(usize, Rate)>,
}

fn run_throughput(
    admin: &Admin,
    broker: &Broker,
    storage: Storage,
    floors: &Floors,
    args: &Args,
    budget: &Budget,
    figures: &mut Figures,
) {
    println!(
        "\n-- produce throughput: kascade, {} topic, 1 partition (client defaults: linger.ms=5, batch.size=1 MB) --",
        storage.name()
    );
    println!(
        "  {:>8} {:>5}  {:>10} {:>9}   {:>12} {:>9}  {:>7}   {:>10} {:>10}",
        "size",
        "acks",
        "msgs/s",
        "MB/s",
        "mock msgs/s",
        "mock MB/s",
        "vs mock",
        "client CPU",
        "broker CPU"
    );
    for &size in &args.sizes {
        for acks in ACKS {
            let topic = format!("tput-{}-{size}-{acks}", storage.name());
            let r = admin.create(&topic, storage).and_then(|()| {
                throughput(
                    &broker.addr,
                    &topic,
                    size,
                    acks,
                    budget,
                    Some(broker.child.id()),
                )
            });
            admin.delete(&topic);
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    println!("  {:>8} {acks:>5}  error: {e}", fmt_size(size));
                    continue;
                }
            };
            let mock = floors.mock_rate_of(size, acks);
            println!(
                "  {:>8} {:>5}  {:>10} {:>9.1}   {:>12} {:>9}  {:>7}   {:>10} {:>10}",
                fmt_size(size),
                acks,
                fmt_rate(r.msgs_per_s),
                r.bytes_per_s / 1e6,
                mock.map_or("-".into(), |m| fmt_rate(m.msgs_per_s)),
                mock.map_or("-".into(), |m| format!("{:.1}", m.bytes_per_s / 1e6)),
                mock.map_or("-".into(), |m| format!(
                    "{:.0}%",
                    100.0 * r.msgs_per_s / m.msgs_per_s
                )),
                cores(r.client_cpu),
                cores(r.broker_cpu),
            );
            if storage == Storage::Volatile && acks == "all" {
                figures.rates_all.push((size, r));
            }
        }
    }
    if let Some(rss) = broker.rss_mib() {
        println!("  broker RSS after the section: {rss:.0} MiB");
    }
}

fn print_vs(label: &str, l: &Latency, floor: &Latency) {
    println!(
        "  {label:<44} p50 {:>8} µs  p99 {:>8} µs  -> p50 {:.2}x, p99 {:.2}x",
        fmt_us(floor.p50),
        fmt_us(floor.p99),
        l.p50 as f64 / floor.p50.max(1) as f64,
        l.p99 as f64 / floor.p99.max(1) as f64
    );
}

fn run_latency(
    admin: &Admin,
    broker: &Broker,
    storage: Storage,
    floors: &Floors,
    args: &Args,
    budget: &Budget,
    figures: &mut Figures,
) {
    println!(
        "\n-- paced produce, {} values, acks=all, linger.ms=0: kascade, {} topic, 1 partition --",
        fmt_size(PACED_SIZE),
        storage.name()
    );
    println!(
        "  consumer: fetch.wait.max.ms left at 500 (default), so each long poll must be answered by the arriving record"
    );
    println!("  produce->ack: send() -> delivery report; produce->consume: send() -> consumer poll() returns it");
    for &rate in &args.rates {
        let topic = format!("lat-{}-{rate}", storage.name());
        let r = admin
            .create(&topic, storage)
            .and_then(|()| paced(&broker.addr, &topic, rate, true, budget));
        admin.delete(&topic);
        let p = match r {
            Ok(p) => p,
            Err(e) => {
                println!("  {}/s: error: {e}", fmt_rate(rate as f64));
                continue;
            }
        };
        println!(
            "  {} msgs/s ({} sent, {} consumed{}):",
            fmt_rate(rate as f64),
            p.sent,
            p.received,
            if p.fell_behind > 0 {
                format!(", sender fell behind {} times", p.fell_behind)
            } else {
                String::new()
            }
        );
        print_latency("  produce -> ack", &p.ack);
        let e2e = p.e2e.unwrap_or_else(latency_histogram);
        print_latency("  produce -> consume", &e2e);
        // Records consumed >= 450 ms after they were sent, beyond those whose ack was
        // as late, waited for the consumer's 500 ms fetch timer instead of waking the
        // long poll. The two counts come from different records, so a surplus under
        // 1% of the samples is noise around the threshold.
        let slow = |h: &Histogram<u64>| h.count_between(FETCH_WAIT_NS * 9 / 10, u64::MAX);
        let waited = slow(&e2e).saturating_sub(slow(&p.ack));
        if waited > (e2e.len() / 100).max(1) {
            println!(
                "    {waited} more records than acks took >= 450 ms: long polls answered by the 500 ms timer"
            );
        }
        let (ack, e2e) = (Latency::of(&p.ack), Latency::of(&e2e));
        if let Some(mock) = floors.mock_ack_at(rate) {
            print_vs("  floor: mock cluster ack (ack vs it)", &ack, &mock);
        }
        print_vs(
            "  floor: loopback round trip (ack vs it)",
            &ack,
            &floors.loopback,
        );
        if storage == Storage::Persistent {
            print_vs(
                "  floor: 1 KiB fdatasync (ack vs it)",
                &ack,
                &floors.fdatasync,
            );
        }
        if storage == Storage::Volatile && rate == TARGET_RATE {
            figures.at_target = Some((ack, e2e));
        }
    }
}

fn targets(floors: &Floors, f: &Figures) -> Vec<Target> {
    let mut t = Vec::new();
    let rate = fmt_rate(TARGET_RATE as f64);
    if let (Some((ack, e2e)), Some(mock)) = (f.at_target, floors.mock_ack_at(TARGET_RATE)) {
        let mock_us = mock.p50 as f64 / 1000.0;
        t.push(Target {
            name: format!(
                "produce->ack p50 <= 1.5 x mock ack p50 ({} µs) [1 KiB, {rate}/s, acks=all, volatile]",
                fmt_us(mock.p50)
            ),
            measured: ack.p50 as f64 / 1000.0,
            limit: 1.5 * mock_us,
            unit: "µs",
            bound: Bound::AtMost,
        });
        t.push(Target {
            name: format!(
                "produce->consume p50 <= 2 x mock ack p50 ({} µs)",
                fmt_us(mock.p50)
            ),
            measured: e2e.p50 as f64 / 1000.0,
            limit: 2.0 * mock_us,
            unit: "µs",
            bound: Bound::AtMost,
        });
        t.push(Target {
            name: "produce->consume p99 <= 1 ms".into(),
            measured: e2e.p99 as f64 / 1000.0,
            limit: 1000.0,
            unit: "µs",
            bound: Bound::AtMost,
        });
        t.push(Target {
            name: "produce->ack p99 <= 1 ms".into(),
            measured: ack.p99 as f64 / 1000.0,
            limit: 1000.0,
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    for (size, r) in &f.rates_all {
        if let Some(mock) = floors.mock_rate_of(*size, "all") {
            t.push(Target {
                name: format!(
                    "produce {} acks=all, volatile >= 90% of mock ({} msgs/s)",
                    fmt_size(*size),
                    fmt_rate(mock.msgs_per_s)
                ),
                measured: r.msgs_per_s,
                limit: 0.9 * mock.msgs_per_s,
                unit: "msgs/s",
                bound: Bound::AtLeast,
            });
        }
    }
    t
}

fn main() {
    bench::loopback::run_echo_child_if_asked();
    let args = Args::parse();
    let budget = args.served.budget();
    std::fs::create_dir_all(&args.dir).expect("creating --dir");
    let root = tempfile::Builder::new()
        .prefix("kascade-kafka-bench-")
        .tempdir_in(&args.dir)
        .expect("creating the benchmark's data dir");
    let started = Instant::now();
    report::print_machine(
        "kascade Kafka-path benchmark (librdkafka client)",
        root.path(),
    );
    println!(
        "client    : librdkafka {} (rdkafka crate); client, broker and floors share these {} CPUs",
        rdkafka::util::get_rdkafka_version().1,
        report::nproc()
    );
    println!(
        "run       : {} ms per throughput case, {} ms per paced case, {} ms warm-up, {} ms per floor{}",
        budget.case.as_millis(),
        (budget.case * 3).as_millis(),
        budget.warmup.as_millis(),
        budget.floor.as_millis(),
        if args.served.quick { " (--quick)" } else { "" }
    );
    let run = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let floors = measure_floors(&args, &budget, root.path(), run);
    print_floors(&floors);

    let bin = args.served.bin_or_exit();
    let mut broker = match Broker::start(&bin, root.path(), &[]) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "\nbroker    : {} serve --listen {} (pid {})",
        bin.display(),
        broker.addr,
        broker.child.id()
    );
    let admin = match Admin::new(&broker.addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };

    let storages: Vec<Storage> = [Storage::Volatile, Storage::Persistent]
        .into_iter()
        .filter(|s| args.storage.is_empty() || args.storage.contains(s))
        .collect();
    let mut figures = Figures::default();
    if run(Section::Throughput) {
        for &s in &storages {
            run_throughput(&admin, &broker, s, &floors, &args, &budget, &mut figures);
        }
    }
    if run(Section::Latency) {
        for &s in &storages {
            run_latency(&admin, &broker, s, &floors, &args, &budget, &mut figures);
        }
    }
    if let Some(note) = broker.exited() {
        println!("\nwarning: {note}");
    }

    print_floors(&floors);
    report::print_targets(&targets(&floors, &figures));
    println!(
        "\nloadavg at end: {}; total {:.1} s",
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
}
