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
//! wait mode (`--native-wait block|spin|busy`, other settings the defaults
//! unless `--broker-args` says otherwise) serves the cases: one publisher and
//! 1 or 4 subscribers (threads of this process, each its own client, or the
//! publisher's own thread), values stamped with `CLOCK_MONOTONIC`, a paced stream
//! for latency and an unpaced one for throughput. It ends with the targets as
//! measured / limit / ratio / PASS or MISS; a miss never fails the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bench::native_path::{self, Case, MIN_VALUE};
use bench::native_report::{
    measure_floors, print_floors, print_latency_table, print_rate_table, targets, Mode, Row,
};
use bench::report;
use bench::served::{Admin, Broker, ServedArgs, Storage};
use bench::{fmt_rate, fmt_us, Budget, Latency};
use clap::Parser;

/// Benchmarks Kascade's native path (shared memory and TCP), beside same-run floors.
#[derive(Parser, Debug)]
#[command(
    name = "native",
    about = "Kascade native-path benchmarks (shm and tcp clients), each figure beside same-run floors"
)]
struct Args {
    #[command(flatten)]
    served: ServedArgs,
    /// Parent of the brokers' temporary data dirs and sockets (default: the system's
    /// temporary dir; a Unix socket path must stay under 108 bytes).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The paced stream's rate, records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Microseconds the broker and the clients spin before parking with spin-then-park
    /// (also the spin-then-futex floor's); longer than the stream's gap, so a steady
    /// stream finds them spinning.
    #[arg(long, default_value_t = 200)]
    spin_us: u32,
    /// More flags for the native-path brokers, space separated (for instance
    /// "--upcall-wait block"): a subscribed topic's records also go through the messaging
    /// lambda's upcall workers, whose waiting competes for these CPUs too.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    broker_args: String,
    /// Run the publisher and subscriber threads on these CPUs only (comma separated;
    /// default: anywhere). On 2 vCPUs, `--client-cpus 1` leaves CPU 0 to the broker's
    /// core thread, so the scheduler cannot stack the spinning threads on one CPU.
    #[arg(long, value_delimiter = ',')]
    client_cpus: Vec<usize>,
    /// Value sizes of the latency section, in bytes (comma separated; at least 16).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1 << 10, 64 << 10])]
    sizes: Vec<usize>,
    /// Subscriber counts of the latency section (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    subscribers: Vec<usize>,
    /// Also measure latency with the publisher's own thread as the only subscriber (it waits
    /// for each record it publishes): two threads need a CPU per record, as in the ping-pong
    /// floors, where a separate subscriber makes three on these 2 vCPUs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    colocated: bool,
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

/// The cases one broker serves, each on a fresh topic.
struct Cases<'a> {
    admin: &'a Admin,
    broker: &'a Broker,
    wait: &'static str,
    spin_us: u32,
    client_cpus: &'a [usize],
    /// Topics made so far (names them).
    n: usize,
}

impl Cases<'_> {
    /// Runs `f` for every value size and subscriber count in `mode`, on a fresh topic each,
    /// with one progress line on stderr per case; `f` also returns that line.
    fn run<T>(
        &mut self,
        mode: Mode,
        sizes: &[usize],
        subscribers: &[(usize, bool)],
        f: impl Fn(&Case) -> Result<(T, String), String>,
    ) -> Vec<Row<T>> {
        let url = match mode {
            Mode::Tcp => self.broker.field("native_tcp"),
            _ => self.broker.field("native"),
        }
        .filter(|u| u != "off");
        let mut rows = Vec::new();
        for &size in sizes {
            for &(subs, colocated) in subscribers {
                self.n += 1;
                let result = url
                    .clone()
                    .ok_or_else(|| format!("no URL in the ready line: {}", self.broker.ready))
                    .and_then(|url| {
                        let case = Case {
                            url,
                            topic: format!("native-{}-{}", self.wait, self.n),
                            wait: mode.client_wait(self.spin_us),
                            size: size.max(MIN_VALUE),
                            subscribers: subs,
                            colocated,
                            broker_pid: self.broker.child.id(),
                            client_cpus: self.client_cpus.to_vec(),
                        };
                        on_topic(self.admin, &case.topic, |_| f(&case))
                    });
                let (result, line) = match result {
                    Ok((t, line)) => (Ok(t), line),
                    Err(e) => (Err(e.clone()), format!("error: {e}")),
                };
                let row = Row {
                    mode,
                    size,
                    subscribers: subs,
                    colocated,
                    result,
                };
                eprintln!("case {}: {line}", row.head(self.spin_us).trim());
                rows.push(row);
            }
        }
        rows
    }
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
    ];
    flags.extend(args.broker_args.split_whitespace().map(str::to_string));
    if tcp {
        flags.extend(["--native-tcp".to_string(), "127.0.0.1:0".to_string()]);
    }
    Broker::start(bin, &dir, &flags)
}

fn main() {
    bench::loopback::run_echo_child_if_asked();
    let args = Args::parse();
    let budget = args.served.budget();
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
        "run       : {} ms per throughput case, {} ms per paced case at {}/s, {} ms warm-up, {} ms per floor, spin {} µs, broker flags [{}]{}",
        budget.case.as_millis(),
        (budget.case * 3).as_millis(),
        fmt_rate(args.rate as f64),
        budget.warmup.as_millis(),
        budget.floor.as_millis(),
        args.spin_us,
        args.broker_args,
        if args.served.quick { " (--quick)" } else { "" }
    );
    if !args.client_cpus.is_empty() {
        println!(
            "pinning  : publisher and subscriber threads on CPUs {:?}",
            args.client_cpus
        );
    }
    let gap = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let mut floors = measure_floors(&budget, gap, args.spin_us);
    print_floors(&floors);

    let bin = args.served.bin_or_exit();
    // (subscribers, the publisher's thread is one of them)
    let latency_subs: Vec<(usize, bool)> = args
        .colocated
        .then_some((1, true))
        .into_iter()
        .chain(args.subscribers.iter().map(|&n| (n, false)))
        .collect();
    let tput_subs: Vec<(usize, bool)> = args.tput_subscribers.iter().map(|&n| (n, false)).collect();
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
        let mut cases = Cases {
            admin: &admin,
            broker: &broker,
            wait,
            spin_us: args.spin_us,
            client_cpus: &args.client_cpus,
            n: 0,
        };
        for &mode in &served {
            if run(Section::Latency) {
                lat_rows.extend(cases.run(mode, &args.sizes, &latency_subs, |c| {
                    let p = native_path::paced(c, args.rate, budget.warmup, budget.case * 3)?;
                    let l = Latency::of(&p.latency);
                    let line = format!("p50 {} µs, p99 {} µs", fmt_us(l.p50), fmt_us(l.p99));
                    Ok((p, line))
                }));
            }
            if run(Section::Throughput) {
                rate_rows.extend(cases.run(mode, &args.tput_sizes, &tput_subs, |c| {
                    let t = native_path::throughput(c, budget.warmup, budget.case)?;
                    let line = format!("{} msgs/s", fmt_rate(t.msgs_per_s));
                    Ok((t, line))
                }));
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
        print_latency_table(&lat_rows, &floors, args.rate, args.spin_us);
    }
    if !rate_rows.is_empty() {
        print_rate_table(&rate_rows, args.spin_us);
    }
    report::print_targets(&targets(
        &floors,
        &lat_rows,
        &rate_rows,
        args.rate,
        args.spin_us,
    ));
    println!(
        "\nloadavg at end: {}; total {:.1} s",
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
}
