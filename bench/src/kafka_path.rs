//! The Kafka path as librdkafka clients see it: producers whose delivery
//! reports record produce -> ack latency, and the paced produce -> ack and
//! produce -> consume measurement (values stamped with the send time, a
//! consumer with the client's fetch defaults answering its long polls).
//!
//! Shared by the benchmarks that compare against the Kafka path (`kafka`, `native`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::served::MAX_MESSAGE;
use crate::{latency_histogram, nanos_since, record, Budget};

/// The value size of every paced case.
pub const PACED_SIZE: usize = 1 << 10;

/// The consumer's `fetch.wait.max.ms` (librdkafka's default, left as is), in ns.
pub const FETCH_WAIT_NS: u64 = 500_000_000;

/// The producer's context: counts deliveries and records produce -> ack latency.
pub struct Acks {
    base: Instant,
    /// Sends stamped (ns since `base`) before this are not recorded; `u64::MAX`: record none.
    pub measure_from: AtomicU64,
    /// Produce -> ack latency of the recorded sends.
    pub latency: Mutex<Histogram<u64>>,
    /// Messages acknowledged.
    pub delivered: AtomicU64,
    /// Messages whose delivery failed.
    pub failed: AtomicU64,
    /// The first error the client reported.
    pub first_error: Mutex<Option<String>>,
}

impl Acks {
    /// Counters at zero; send stamps are ns since `base`.
    pub fn new(base: Instant) -> Acks {
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
pub struct Producer {
    producer: Arc<BaseProducer<Acks>>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    /// Wraps `producer` and starts its delivery-report thread.
    pub fn new(producer: BaseProducer<Acks>) -> Result<Producer, String> {
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
        Ok(Producer {
            producer,
            stop,
            poller: Some(poller),
        })
    }
}

impl std::ops::Deref for Producer {
    type Target = BaseProducer<Acks>;

    fn deref(&self) -> &BaseProducer<Acks> {
        &self.producer
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.poller.take() {
            let _ = h.join();
        }
    }
}

/// A producer of the benchmark: client defaults except acks, the size limits, and `linger.ms=0` when paced.
pub fn producer(
    bootstrap: &str,
    acks: &str,
    linger_zero: bool,
    base: Instant,
) -> Result<Producer, String> {
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
    Producer::new(p)
}

/// Enqueues one message, waiting while the client's queue is full.
pub fn send(p: &Producer, topic: &str, payload: &[u8], stamp: u64) -> Result<(), String> {
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
pub fn drained(p: &Producer, timeout: Duration) -> bool {
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
pub fn prime(p: &Producer, topic: &str, payload: &[u8]) -> Result<(), String> {
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

/// What a paced case measured.
pub struct Paced {
    /// Produce -> ack latency.
    pub ack: Histogram<u64>,
    /// Produce -> consume latency, when a consumer ran.
    pub e2e: Option<Histogram<u64>>,
    /// Messages sent.
    pub sent: u64,
    /// Messages the consumer received.
    pub received: u64,
    /// Times the sender fell 50 periods behind and restarted its schedule.
    pub fell_behind: u64,
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
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches only this thread's state.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// Produces 1 KiB values at `rate`/s (acks=all, linger.ms=0), paced by sleeping (late sends are
/// caught up at once), recording produce -> ack and, with `consume`, produce -> consume latency.
pub fn paced(
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
