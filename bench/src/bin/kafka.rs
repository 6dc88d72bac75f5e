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

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::report::{self, Bound, Target};
use bench::{
    fmt_rate, fmt_size, fmt_us, latency_histogram, nanos_since, print_latency, record, Budget,
    Latency,
};
use clap::Parser;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, PurgeConfig};
use rdkafka::{Offset, TopicPartitionList};

/// Benchmarks Kascade's Kafka face with librdkafka, beside the machine's and the client's floors.
#[derive(Parser, Debug)]
#[command(
    name = "kafka",
    about = "Kascade Kafka-path benchmarks (librdkafka client), each figure beside same-run floors"
)]
struct Args {
    /// A short smoke run (a few seconds in all), for CI.
    #[arg(long)]
    quick: bool,
    /// Parent of the broker's temporary data dir (and of the fdatasync floor's file).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Measured milliseconds of each throughput case (default 1000, or 40 with --quick);
    /// each paced latency case runs three times as long.
    #[arg(long)]
    duration_ms: Option<u64>,
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
    /// The `kascade` binary to run (default: the one beside this binary).
    #[arg(long, env = "KASCADE_BIN")]
    kascade_bin: Option<PathBuf>,
    /// Internal: run as the echo end of the loopback round-trip floor, connecting to this address.
    #[arg(long, hide = true)]
    echo_child: Option<String>,
}

/// The sections of the benchmark, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Produce throughput per value size, acks=1 and acks=all.
    Throughput,
    /// Paced produce -> ack and produce -> consume latency.
    Latency,
}

/// The storage of a topic on the broker under test (`kascade.storage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Storage {
    /// In memory only: acks=all returns once the batch is applied.
    Volatile,
    /// On disk: acks=all waits for the fdatasync that covers the batch.
    Persistent,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Storage::Volatile => "volatile",
            Storage::Persistent => "persistent",
        }
    }
}

/// The rate, size and acks of the targets (1 partition, volatile topic).
const TARGET_RATE: u64 = 5_000;
/// The value size of every paced case.
const PACED_SIZE: usize = 1 << 10;
/// Largest message the clients and topics accept: room for 1 MiB values and their framing.
const MAX_MESSAGE: &str = "2097152";
/// Retention of the benchmark's topics: bounds the broker's memory at 1 MiB values.
const RETENTION_BYTES: &str = "268435456";

/// The consumer's `fetch.wait.max.ms` (librdkafka's default, left as is), in ns.
const FETCH_WAIT_NS: u64 = 500_000_000;

/// The two acks settings of the throughput matrix.
const ACKS: [&str; 2] = ["1", "all"];

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// The producer's context: counts deliveries and records produce -> ack latency.
struct Acks {
    base: Instant,
    /// Sends stamped (ns since `base`) before this are not recorded; `u64::MAX`: record none.
    measure_from: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Acks {
    fn new(base: Instant) -> Acks {
        Acks {
            base,
            measure_from: AtomicU64::new(u64::MAX),
            latency: Mutex::new(latency_histogram()),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn note_error(&self, e: String) {
        self.first_error.lock().get_or_insert(e);
    }
}

impl ClientContext for Acks {
    fn error(&self, error: KafkaError, reason: &str) {
        self.note_error(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, stamp: usize) {
        let now = nanos_since(self.base);
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Release);
                let stamp = stamp as u64;
                if stamp >= self.measure_from.load(Ordering::Relaxed) {
                    record(&mut self.latency.lock(), now.saturating_sub(stamp));
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Release);
                self.note_error(format!("delivery failed: {e}"));
            }
        }
    }
}

/// A producer with its own event thread (delivery reports), which polls in short slices
/// so that dropping the client takes milliseconds, not the 100 ms of `ThreadedProducer`.
struct Client {
    producer: Arc<BaseProducer<Acks>>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn new(producer: BaseProducer<Acks>) -> Result<Client, String> {
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (producer.clone(), stop.clone());
        let poller = std::thread::Builder::new()
            .name("delivery-poll".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    p.poll(Duration::from_millis(5));
                }
            })
            .map_err(|e| format!("spawning the delivery poller: {e}"))?;
        Ok(Client {
            producer,
            stop,
            poller: Some(poller),
        })
    }
}

impl std::ops::Deref for Client {
    type Target = BaseProducer<Acks>;

    fn deref(&self) -> &BaseProducer<Acks> {
        &self.producer
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.poller.take() {
            let _ = h.join();
        }
    }
}

/// A producer of the benchmark: client defaults except acks, the size limits, and `linger.ms=0` when paced.
fn producer(
    bootstrap: &str,
    acks: &str,
    linger_zero: bool,
    base: Instant,
) -> Result<Client, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("message.max.bytes", MAX_MESSAGE)
        .set("queue.buffering.max.kbytes", "65536");
    if linger_zero {
        c.set("linger.ms", "0");
    }
    let p = c
        .create_with_context(Acks::new(base))
        .map_err(|e| format!("creating a producer: {e}"))?;
    Client::new(p)
}

/// Enqueues one message, waiting while the client's queue is full.
fn send(p: &Client, topic: &str, payload: &[u8], stamp: u64) -> Result<(), String> {
    let mut rec =
        BaseRecord::<(), [u8], usize>::with_opaque_to(topic, stamp as usize).payload(payload);
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err((e, _)) => return Err(format!("send: {e}")),
        }
    }
}

/// Waits until every message sent has been acknowledged (or failed), up to `timeout`.
///
/// `flush` would do, but with the delivery reports served by another thread it
/// sleeps in 100 ms slices; this polls the queue length every millisecond.
fn drained(p: &Client, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while p.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Sends one message and waits for its ack: connection and metadata are then warm.
fn prime(p: &Client, topic: &str, payload: &[u8]) -> Result<(), String> {
    send(p, topic, payload, 0)?;
    if !drained(p, Duration::from_secs(15)) {
        return Err(format!("first message to {topic} not acknowledged in 15 s"));
    }
    let ctx = p.context();
    if ctx.delivered.load(Ordering::Acquire) == 0 {
        return Err(format!(
            "first message to {topic} failed: {}",
            ctx.first_error.lock().clone().unwrap_or_default()
        ));
    }
    Ok(())
}

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

/// What a paced case measured.
struct Paced {
    ack: Histogram<u64>,
    e2e: Option<Histogram<u64>>,
    sent: u64,
    received: u64,
    /// Times the sender fell 50 periods behind and restarted its schedule.
    fell_behind: u64,
}

/// What the consumer thread of a paced case shares.
struct Received {
    latency: Mutex<Histogram<u64>>,
    count: AtomicU64,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
}

/// A consumer of partition 0 of `topic` from offset 0, with the client's fetch defaults
/// (fetch.wait.max.ms = 500, fetch.min.bytes = 1), recording send -> receive latency.
fn spawn_consumer(
    bootstrap: &str,
    topic: &str,
    base: Instant,
    measure_from: Arc<AtomicU64>,
) -> Result<(Arc<Received>, std::thread::JoinHandle<()>), String> {
    // assign() needs a group id; offsets are never committed and no group is joined.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kascade-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("receive.message.max.bytes", "104857600")
        .create()
        .map_err(|e| format!("creating a consumer: {e}"))?;
    // An absolute offset (the fresh topic's first), not Offset::Beginning: that needs a
    // ListOffsets which librdkafka, with a group id and no coordinator, defers ~500 ms.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .map_err(|e| format!("assignment: {e}"))?;
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assigning {topic}/0: {e}"))?;
    let shared = Arc::new(Received {
        latency: Mutex::new(latency_histogram()),
        count: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
    });
    let s = shared.clone();
    let handle = std::thread::Builder::new()
        .name("consumer".into())
        .spawn(move || {
            while !s.stop.load(Ordering::Acquire) {
                match consumer.poll(Duration::from_millis(50)) {
                    None => {}
                    Some(Ok(m)) => {
                        let now = nanos_since(base);
                        let Some(stamp) = m
                            .payload()
                            .and_then(|p| p.get(..8))
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_le_bytes)
                        else {
                            continue;
                        };
                        if stamp >= measure_from.load(Ordering::Relaxed) {
                            record(&mut s.latency.lock(), now.saturating_sub(stamp));
                        }
                        s.count.fetch_add(1, Ordering::Release);
                    }
                    Some(Err(e)) => {
                        s.error.lock().get_or_insert(e.to_string());
                    }
                }
            }
        })
        .map_err(|e| format!("spawning the consumer: {e}"))?;
    Ok((shared, handle))
}

/// Lowers this thread's timer slack to 1 ns so that paced sleeps end on time.
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches only this thread's state.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// Produces 1 KiB values at `rate`/s (acks=all, linger.ms=0), paced by sleeping (late sends are
/// caught up at once), recording produce -> ack and, with `consume`, produce -> consume latency.
fn paced(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    consume: bool,
    budget: &Budget,
) -> Result<Paced, String> {
    let base = Instant::now();
    let p = producer(bootstrap, "all", true, base)?;
    let measure_from = Arc::new(AtomicU64::new(u64::MAX));
    let consumer = if consume {
        Some(spawn_consumer(
            bootstrap,
            topic,
            base,
            measure_from.clone(),
        )?)
    } else {
        None
    };
    let stop_consumer = |c: Option<(Arc<Received>, std::thread::JoinHandle<()>)>| {
        c.map(|(r, h)| {
            r.stop.store(true, Ordering::Release);
            let _ = h.join();
            r
        })
    };
    let mut payload = vec![0u8; PACED_SIZE];
    payload[..8].copy_from_slice(&0u64.to_le_bytes());
    if let Err(e) = prime(&p, topic, &payload) {
        stop_consumer(consumer);
        return Err(e);
    }
    if let Some((r, _)) = &consumer {
        let deadline = Instant::now() + Duration::from_secs(15);
        while r.count.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if r.count.load(Ordering::Acquire) == 0 {
            let err = r.error.lock().clone().unwrap_or_default();
            stop_consumer(consumer);
            return Err(format!(
                "the consumer received nothing within 15 s (error: {err})"
            ));
        }
    }
    tight_timer_slack();
    let ctx = p.context().clone();
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let warm_end = Instant::now() + budget.warmup.max(Duration::from_millis(100));
    let end = warm_end + budget.case * 3;
    let mut measuring = false;
    let mut sent = 1u64;
    let mut fell_behind = 0;
    let mut next = Instant::now();
    let result = loop {
        let now = Instant::now();
        if now >= end {
            break Ok(());
        }
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        if !measuring && now >= warm_end {
            measuring = true;
            let from = nanos_since(base);
            ctx.measure_from.store(from, Ordering::Relaxed);
            measure_from.store(from, Ordering::Relaxed);
        }
        let stamp = nanos_since(base);
        payload[..8].copy_from_slice(&stamp.to_le_bytes());
        if let Err(e) = send(&p, topic, &payload, stamp) {
            break Err(e);
        }
        sent += 1;
        next += period;
        if now > next + period * 50 {
            next = now + period;
            fell_behind += 1;
        }
    };
    drained(&p, Duration::from_secs(15));
    if let Some((r, _)) = &consumer {
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.count.load(Ordering::Acquire) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let received = stop_consumer(consumer);
    result?;
    let failed = ctx.failed.load(Ordering::Acquire);
    if failed > 0 {
        return Err(format!(
            "{failed} deliveries failed: {}",
            ctx.first_error.lock().clone().unwrap_or_default()
        ));
    }
    let ack = ctx.latency.lock().clone();
    Ok(Paced {
        ack,
        received: received
            .as_ref()
            .map_or(0, |r| r.count.load(Ordering::Acquire)),
        e2e: received.map(|r| r.latency.lock().clone()),
        sent,
        fell_behind,
    })
}

// ---------------------------------------------------------------------------
// The broker under test
// ---------------------------------------------------------------------------

/// A `kascade serve` child process on a free loopback port; killed on drop.
struct Broker {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Broker {
    fn start(bin: &Path, root: &Path) -> Result<Broker, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let data = root.join("broker-data");
        let log = root.join("broker.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("creating {log:?}: {e}"))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(&addr)
            .args(["--admin-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut broker = Broker { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(&broker.addr).is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "kascade serve exited ({status}) before listening:\n{}",
                    broker.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kascade serve did not listen on {} within 20 s",
                    broker.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The broker's resident memory, from `/proc`.
    fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// CPU used by this process and the broker over a measured interval.
#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    me: Option<Duration>,
    broker: Option<Duration>,
}

impl CpuMark {
    fn now(broker_pid: Option<u32>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            me: cpu_time("self"),
            broker: broker_pid.and_then(|p| cpu_time(&p.to_string())),
        }
    }

    /// (this process, broker) CPU since `self`, as a share of one core.
    fn share_since(&self, broker_pid: Option<u32>) -> (Option<f64>, Option<f64>) {
        let later = CpuMark::now(broker_pid);
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let share = |a: Option<Duration>, b: Option<Duration>| {
            Some(b?.saturating_sub(a?).as_secs_f64() / wall)
        };
        (share(self.me, later.me), share(self.broker, later.broker))
    }
}

/// The `kascade` binary: `--kascade-bin`, else the one beside this binary.
fn kascade_bin(args: &Args) -> Result<PathBuf, String> {
    if let Some(b) = &args.kascade_bin {
        return Ok(b.clone());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let beside = me.with_file_name("kascade");
    if beside.exists() {
        return Ok(beside);
    }
    // `cargo run` of an example or a test puts the binary one level deeper.
    if let Some(up) = me.parent().and_then(Path::parent) {
        let b = up.join("kascade");
        if b.exists() {
            return Ok(b);
        }
    }
    Err(format!(
        "no kascade binary beside {}: run `cargo build --release -p kascade` or set KASCADE_BIN",
        me.display()
    ))
}

/// Creates and deletes topics on the broker under test with the admin client.
struct Admin {
    client: AdminClient<DefaultClientContext>,
    rt: tokio::runtime::Runtime,
}

impl Admin {
    fn new(bootstrap: &str) -> Result<Admin, String> {
        let client = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| format!("creating the admin client: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Admin { client, rt })
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .operation_timeout(Some(Duration::from_secs(10)))
    }

    /// Creates a one-partition topic of `storage`.
    fn create(&self, name: &str, storage: Storage) -> Result<(), String> {
        let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1))
            .set("kascade.storage", storage.name())
            .set("max.message.bytes", MAX_MESSAGE)
            .set("retention.bytes", RETENTION_BYTES);
        let results = self
            .rt
            .block_on(self.client.create_topics([&topic], &Self::options()))
            .map_err(|e| format!("creating topic {name}: {e}"))?;
        for r in results {
            r.map_err(|(t, code)| format!("creating topic {t}: {code}"))?;
        }
        Ok(())
    }

    /// Deletes a topic, releasing what it holds; failures are reported, not fatal.
    fn delete(&self, name: &str) {
        let result = self
            .rt
            .block_on(self.client.delete_topics(&[name], &Self::options()));
        let err = match result {
            Ok(rs) => rs
                .into_iter()
                .find_map(|r| r.err())
                .map(|(t, c)| format!("{t}: {c}")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = err {
            println!("  note: deleting topic {name} failed: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Floors
// ---------------------------------------------------------------------------

/// Loopback TCP round trips to a child process (this binary with `--echo-child`), 64 B each way:
/// back to back, and with an idle gap before each (the paced case's gap at the target rate).
fn loopback_floor(budget: &Budget, gap: Duration) -> Result<(Latency, Latency), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(me)
        .arg("--echo-child")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning the echo child: {e}"))?;
    let (mut stream, _) = listener
        .accept()
        .map_err(|e| format!("accepting the echo child: {e}"))?;
    let result = (|| {
        let back_to_back =
            bench::floors::tcp_round_trip(&mut stream, 64, Duration::ZERO, budget.floor)?;
        let paced = bench::floors::tcp_round_trip(&mut stream, 64, gap, budget.floor)?;
        Ok::<_, std::io::Error>((Latency::of(&back_to_back), Latency::of(&paced)))
    })()
    .map_err(|e| format!("loopback round trips: {e}"));
    drop(stream);
    let _ = child.wait();
    result
}

/// The echo child's whole life: connect, echo until the parent closes.
fn echo_child(addr: &str) -> ! {
    let code = match TcpStream::connect(addr).and_then(bench::floors::tcp_echo) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("echo child: {e}");
            1
        }
    };
    std::process::exit(code)
}

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

/// A CPU share as cores used ("0.85 cores"), or "?".
fn cores(c: Option<f64>) -> String {
    c.map_or("?".into(), |c| format!("{c:.2} cores"))
}

fn lat(l: &Latency) -> String {
    format!(
        "p50 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs",
        fmt_us(l.p50),
        fmt_us(l.p99),
        fmt_us(l.p999)
    )
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
    match loopback_floor(budget, gap) {
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
    let args = Args::parse();
    if let Some(addr) = &args.echo_child {
        echo_child(addr);
    }
    let budget = Budget::new(args.quick, args.duration_ms);
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
        if args.quick { " (--quick)" } else { "" }
    );
    let run = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let floors = measure_floors(&args, &budget, root.path(), run);
    print_floors(&floors);

    let bin = match kascade_bin(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut broker = match Broker::start(&bin, root.path()) {
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
    if let Ok(Some(status)) = broker.child.try_wait() {
        println!("\nwarning: the broker exited during the run ({status})");
    }

    print_floors(&floors);
    report::print_targets(&targets(&floors, &figures));
    println!(
        "\nloadavg at end: {}; total {:.1} s",
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
}
