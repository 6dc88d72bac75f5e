//! # bench: Kascade's load generators and benchmarks
//!
//! This crate owns the measuring side of Kascade: the benchmark binaries
//! (`engine` for the K/V engine, `kafka` for the Kafka path driven by
//! librdkafka against a real `kascade serve` process, `native` for the native
//! path's clients against the same) and the helpers they share. Its rule is
//! that no figure is printed alone: every binary first measures the machine's
//! own limits in the same run
//! (memory bandwidth, the data disk's `write` + `fdatasync`, the cost of handing
//! work from one thread to another) with [`floors`], then prints each result
//! beside the limit it should be judged against, and ends with the targets of
//! the issue as measured / limit / ratio / PASS or MISS ([`report`]). A miss is
//! information, never a failure: the binaries always exit 0 once they ran.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub mod floors;
pub mod kafka_path;
pub mod loopback;
pub mod native_path;
pub mod native_report;
pub mod report;
pub mod served;
pub mod shm_floor;

/// A latency histogram in nanoseconds, from 1 ns to 100 s at three significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns` into `h`, clamping it into the histogram's range.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// Nanoseconds elapsed since `start`, as a `u64`.
pub fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Busy-waits (never sleeps) until `deadline`: pacing that does not add a wake-up.
pub fn spin_until(deadline: Instant) {
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// The summary of one latency histogram, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Summarises `h`.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Formats nanoseconds as microseconds with a precision that suits the size.
pub fn fmt_us(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us < 10.0 {
        format!("{us:.2}")
    } else if us < 1000.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// Formats a rate with a k/M suffix (`1.23M`).
pub fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2}M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1}k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// Formats a byte count with a binary suffix (`100 B`, `10 KiB`, `1 MiB`).
pub fn fmt_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// p50, p99 and p99.9 in µs on one line.
pub fn fmt_latency(l: &Latency) -> String {
    format!(
        "p50 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs",
        fmt_us(l.p50),
        fmt_us(l.p99),
        fmt_us(l.p999)
    )
}

/// Prints one latency line: a label, p50/p99/p99.9/max in µs and the sample count.
pub fn print_latency(label: &str, h: &Histogram<u64>) {
    let l = Latency::of(h);
    println!(
        "  {label:<44} p50 {:>8} µs  p99 {:>8} µs  p99.9 {:>8} µs  max {:>8} µs  (n={})",
        fmt_us(l.p50),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.max),
        l.count
    );
}

/// How long each part of a benchmark runs.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Measured time of one case.
    pub case: Duration,
    /// Unmeasured warm-up before each case.
    pub warmup: Duration,
    /// Measured time of each floor.
    pub floor: Duration,
}

impl Budget {
    /// The budget for a `--quick` smoke run or a full run, with an optional per-case override.
    pub fn new(quick: bool, case_ms: Option<u64>) -> Budget {
        let case = Duration::from_millis(case_ms.unwrap_or(if quick { 40 } else { 1000 }));
        Budget {
            case,
            warmup: (case / 10).clamp(Duration::from_millis(20), Duration::from_millis(100)),
            floor: if quick {
                Duration::from_millis(40)
            } else {
                Duration::from_millis(700)
            },
        }
    }
}
