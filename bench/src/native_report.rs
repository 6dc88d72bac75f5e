//! What the native bench prints: its transports and wait modes, the floors
//! it reads them against, its tables and the targets.

use std::time::Duration;

use kascade_wire::native::WaitStrategy;

use crate::kafka_path::PACED_SIZE;
use crate::native_path::{Cpu, PacedResult, RateResult};
use crate::report::{Bound, Target};
use crate::served::cores;
use crate::shm_floor::{shm_ping_pong, ShmWait};
use crate::{fmt_latency as lat, fmt_rate, fmt_size, fmt_us, Budget, Latency};

/// A transport and the way its clients and the broker wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
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
    /// Every mode, in the order they run.
    pub const ALL: [Mode; 4] = [Mode::Block, Mode::Spin, Mode::Busy, Mode::Tcp];

    /// How the tables name the mode.
    pub fn label(self, spin_us: u32) -> String {
        match self {
            Mode::Block => "shm, blocking wake-ups".into(),
            Mode::Spin => format!("shm, spin {spin_us} µs then park"),
            Mode::Busy => "shm, busy-polling".into(),
            Mode::Tcp => format!("tcp, spin {spin_us} µs then park"),
        }
    }

    /// The broker's `--native-wait`.
    pub fn broker_wait(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Spin | Mode::Tcp => "spin",
            Mode::Busy => "busy",
        }
    }

    /// How the mode's clients wait.
    pub fn client_wait(self, spin_us: u32) -> WaitStrategy {
        match self {
            Mode::Block => WaitStrategy::Block,
            Mode::Spin | Mode::Tcp => WaitStrategy::SpinThenPark { spin_us },
            Mode::Busy => WaitStrategy::BusyPoll,
        }
    }
}

/// Everything measured to judge the native path against.
#[derive(Default)]
pub struct Floors {
    /// Reading the clock twice.
    pub clock: Latency,
    /// The paced stream's gap between records.
    pub gap: Duration,
    /// One-way shared-memory hand-off per wait: (back to back, paced at `gap`).
    pub shm: Vec<(ShmWait, Latency, Latency)>,
    /// Loopback TCP round trip of 1 KiB: (back to back, paced at `gap`).
    pub loopback: Option<(Latency, Latency)>,
    /// The Kafka path at the stream's rate: (produce -> ack, produce -> consume).
    pub kafka: Option<(Latency, Latency)>,
}

impl Floors {
    /// The paced one-way shm floor of `wait`'s kind.
    fn shm_paced(&self, pick: fn(&ShmWait) -> bool) -> Option<Latency> {
        self.shm.iter().find(|(w, ..)| pick(w)).map(|(_, _, p)| *p)
    }

    /// The floor a mode's latency is read against: (name, latency).
    pub fn for_mode(&self, mode: Mode) -> Option<(&'static str, Latency)> {
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

fn wait_name(w: &ShmWait) -> String {
    match w {
        ShmWait::Spin => "spin".into(),
        ShmWait::SpinThenFutex(d) => format!("spin {} µs then futex", d.as_micros()),
        ShmWait::Futex => "futex".into(),
        ShmWait::Eventfd => "eventfd".into(),
    }
}

/// Measures the clock, shm ping-pong and loopback floors; the Kafka path comes later.
pub fn measure_floors(budget: &Budget, gap: Duration, spin_us: u32) -> Floors {
    let mut f = Floors {
        clock: Latency::of(&crate::floors::clock_overhead(budget.floor / 4)),
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
    match crate::loopback::loopback_floor(PACED_SIZE, gap, budget.floor) {
        Ok(l) => f.loopback = Some(l),
        Err(e) => println!("  error: loopback floor: {e}"),
    }
    f
}

/// Prints the floors block.
pub fn print_floors(f: &Floors) {
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

/// One case of a table: what ran and what it measured.
pub struct Row<T> {
    /// Transport and waits.
    pub mode: Mode,
    /// Value size.
    pub size: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// The publisher's own thread is one of them.
    pub colocated: bool,
    /// What it measured.
    pub result: Result<T, String>,
}

impl<T> Row<T> {
    /// The row's first columns: mode, size, subscribers (`1*`: the publisher's own thread).
    pub fn head(&self, spin_us: u32) -> String {
        let star = if self.colocated { "*" } else { " " };
        format!(
            "  {:<30} {:>6} {:>4}{star}",
            self.mode.label(spin_us),
            fmt_size(self.size),
            self.subscribers
        )
    }
}

/// A row of the latency table.
pub type LatencyRow = Row<PacedResult>;

/// A row of the throughput table.
pub type RateRow = Row<RateResult>;

fn cpu_cols(c: &Cpu) -> String {
    format!("{:>11} {:>11}", cores(c.clients), cores(c.broker))
}

/// Prints the latency table.
pub fn print_latency_table(rows: &[LatencyRow], floors: &Floors, rate: u64, spin_us: u32) {
    println!(
        "\n-- publish -> subscriber callback, paced at {}/s, volatile topic, 1 partition --",
        fmt_rate(rate as f64)
    );
    println!("  one publisher (sleeps between sends, collects acks before each); subscribers are threads of this process;");
    println!("  1*: the publisher's own thread subscribes (waits for each record it sent): two threads, broker core and it, need a CPU");
    println!("  p50 / floor: against the mode's floor paced at the stream's gap (above)");
    println!(
        "  {:<30} {:>6} {:>5}  {:>8} {:>8} {:>8} {:>8}  {:>7}  {:>16}  {:>11} {:>11}",
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
        let head = r.head(spin_us);
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

/// Prints the throughput table.
pub fn print_rate_table(rows: &[RateRow], spin_us: u32) {
    println!("\n-- publish throughput: one publisher, publish_nowait (the broker coalesces what is queued), acks collected every ~1 MiB --");
    println!(
        "  {:<30} {:>6} {:>5}  {:>10} {:>9}  {:>15}  {:>11} {:>11}",
        "mode", "size", "subs", "msgs/s", "MB/s", "delivered/s", "client CPU", "broker CPU"
    );
    for r in rows {
        let head = r.head(spin_us);
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

/// The targets, from this run's figures and floors.
pub fn targets(
    floors: &Floors,
    lat: &[LatencyRow],
    rates: &[RateRow],
    rate: u64,
    spin_us: u32,
) -> Vec<Target> {
    let us = |ns: u64| ns as f64 / 1000.0;
    // 1 KiB, one subscriber: the publisher's own thread when measured (the floors'
    // two parties on these CPUs), else a subscriber thread of its own.
    let find = |mode: Mode| {
        let one = |colocated: bool| {
            lat.iter().find(|r| {
                r.mode == mode
                    && r.size == 1 << 10
                    && r.subscribers == 1
                    && r.colocated == colocated
            })
        };
        one(true).or_else(|| one(false)).and_then(|r| {
            r.result
                .as_ref()
                .ok()
                .map(|p| (r.colocated, Latency::of(&p.latency)))
        })
    };
    let which = |c: bool| if c { "1*" } else { "1" };
    let gap = floors.gap.as_micros();
    let mut t = Vec::new();
    let spin = find(Mode::Spin);
    if let (Some((c, l)), Some((_, f))) = (spin, floors.for_mode(Mode::Spin)) {
        t.push(Target {
            name: format!(
                "spin-then-park 1 KiB x{} p50 <= 3 x spin-then-futex floor ({} µs, {gap} µs apart)",
                which(c),
                fmt_us(f.p50)
            ),
            measured: us(l.p50),
            limit: 3.0 * us(f.p50),
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    if let Some((c, l)) = spin {
        t.push(Target {
            name: format!(
                "spin-then-park 1 KiB x{} p99 <= 50 µs ({}/s stream)",
                which(c),
                fmt_rate(rate as f64)
            ),
            measured: us(l.p99),
            limit: 50.0,
            unit: "µs",
            bound: Bound::AtMost,
        });
    }
    if let (Some((c, l)), Some((_, f))) = (find(Mode::Block), floors.for_mode(Mode::Block)) {
        t.push(Target {
            name: format!(
                "blocking 1 KiB x{} p50 <= 1.5 x futex floor ({} µs, {gap} µs apart)",
                which(c),
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
                mode.label(spin_us)
            ),
            measured: rate,
            limit: 1e6,
            unit: "msgs/s",
            bound: Bound::AtLeast,
        });
    }
    if let (Some((c, l)), Some((_, kafka))) = (spin, floors.kafka) {
        t.push(Target {
            name: format!(
                "Kafka produce->consume p50 ({} µs) / native spin-then-park 1 KiB x{} p50 >= 20",
                fmt_us(kafka.p50),
                which(c)
            ),
            measured: kafka.p50 as f64 / l.p50.max(1) as f64,
            limit: 20.0,
            unit: "x",
            bound: Bound::AtLeast,
        });
    }
    t
}
