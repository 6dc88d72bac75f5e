//! What every benchmark prints around its figures: the machine, its floors, and the targets.

use std::path::Path;

use crate::floors::Floors;
use crate::fmt_latency;

/// The number of CPUs this process may run on.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU model named by `/proc/cpuinfo`, or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The first line of a file under `/proc`, trimmed, or "?".
fn proc_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "?".into())
}

/// The load average line, to show whether other work shared the machine during the run.
pub fn loadavg() -> String {
    proc_line("/proc/loadavg")
}

/// The mount holding `path`: `(device, mount point, filesystem type)`, from `/proc/self/mounts`.
pub fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .filter(|(_, mnt, _)| path.starts_with(mnt))
        .max_by_key(|(_, mnt, _)| mnt.len())
}

/// Prints the machine header: CPUs, CPU model, kernel, load, and the data dir's filesystem.
pub fn print_machine(title: &str, data_dir: &Path) {
    println!("== {title} ==");
    println!("machine   : {} CPUs, {}", nproc(), cpu_model());
    println!(
        "kernel    : Linux {}",
        proc_line("/proc/sys/kernel/osrelease")
    );
    println!(
        "loadavg   : {}  (other work on the machine perturbs every figure)",
        loadavg()
    );
    match mount_of(data_dir) {
        Some((dev, mnt, fs)) => println!(
            "data dir  : {} ({fs} on {dev}, mounted at {mnt})",
            data_dir.display()
        ),
        None => println!("data dir  : {}", data_dir.display()),
    }
}

/// Prints the floors block that every later figure is compared with.
pub fn print_floors(f: &Floors) {
    let lat = fmt_latency;
    println!("\n-- machine floors (measured now, same binary) --");
    println!(
        "  clock read (Instant::now pair)               {}",
        lat(&f.clock)
    );
    println!(
        "  memcpy, 64 MiB buffers (1 thread)            {:>7.2} GB/s",
        f.memcpy_large / 1e9
    );
    println!(
        "  memcpy, 1 MiB buffers (1 thread, in cache)   {:>7.2} GB/s",
        f.memcpy_1mib / 1e9
    );
    println!(
        "  write 100 B + fdatasync (data dir's disk)    {}",
        lat(&f.fdatasync)
    );
    println!(
        "    ... pwrite into a preallocated file        {}",
        lat(&f.fdatasync_prealloc)
    );
    println!(
        "    ... {} threads, one file each             {}  = {:.1}k syncs/s",
        f.parallel_files,
        lat(&f.fdatasync_parallel),
        f.fdatasync_parallel_rate / 1e3
    );
    println!(
        "  hand-off one-way, spin <-> spin              {}",
        lat(&f.spin)
    );
    println!(
        "  hand-off one-way, spin-then-park (spinning)  {}",
        lat(&f.spin_then_park)
    );
    println!(
        "    ... paced, one every {:>4} µs (cold caches) {}",
        f.idle_gap.as_micros(),
        lat(&f.spin_then_park_paced)
    );
    println!(
        "  hand-off one-way, park/unpark back to back   {}",
        lat(&f.park)
    );
    println!(
        "  wake of a thread parked {:>4} µs (idle CPU)   {}",
        f.idle_gap.as_micros(),
        lat(&f.idle_wake)
    );
    println!(
        "    ... the waker's unpark() call itself      {}",
        lat(&f.unpark_call)
    );
}

/// Which way a target bounds its figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The figure must be at most the limit (latencies).
    AtMost,
    /// The figure must be at least the limit (rates).
    AtLeast,
}

/// One target of the issue, evaluated against this run's floors.
#[derive(Clone, Debug)]
pub struct Target {
    /// What is bounded and how the limit is derived.
    pub name: String,
    /// The measured figure.
    pub measured: f64,
    /// The limit it is judged against.
    pub limit: f64,
    /// The unit both are printed in.
    pub unit: &'static str,
    /// Whether the figure must stay below or reach the limit.
    pub bound: Bound,
}

impl Target {
    /// True when the figure meets its limit.
    pub fn pass(&self) -> bool {
        match self.bound {
            Bound::AtMost => self.measured <= self.limit,
            Bound::AtLeast => self.measured >= self.limit,
        }
    }
}

/// Prints the targets as measured / limit / ratio / PASS or MISS (informational: never fails).
pub fn print_targets(targets: &[Target]) {
    println!("\n-- targets (informational: a MISS never fails the run) --");
    let width = targets
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(6);
    println!(
        "  {:<width$}  {:>13} {:>13} {:>7}  result",
        "target", "measured", "limit", "ratio"
    );
    for t in targets {
        let ratio = if t.limit > 0.0 {
            t.measured / t.limit
        } else {
            f64::NAN
        };
        println!(
            "  {:<width$}  {:>13} {:>13} {:>7.2}  {}",
            t.name,
            format!("{} {}", sig(t.measured), t.unit),
            format!("{} {}", sig(t.limit), t.unit),
            ratio,
            if t.pass() { "PASS" } else { "MISS" }
        );
    }
    let missed = targets.iter().filter(|t| !t.pass()).count();
    println!(
        "  {} of {} targets met; ratio = measured / limit",
        targets.len() - missed,
        targets.len()
    );
}

/// A number with about three significant figures, without exponent.
fn sig(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}
