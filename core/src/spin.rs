//! Spin-then-park: how hot hand-offs (upcall workers, group commit) wait.
//!
//! On these 2-vCPU VMs an idle vCPU halts at once, so waking a parked thread
//! costs 30-45 µs while a spinning hand-off costs well under a microsecond.
//! A waiter spins for a bounded time, then parks.

use std::ops::Deref;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a thread waits for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum WaitPolicy {
    /// Park at once; the cheapest on CPU, a 30-45 µs wake-up on an idle core.
    Block,
    /// Spin this many microseconds, then park: the default.
    SpinThenPark {
        /// Microseconds to spin before parking.
        spin_us: u64,
    },
    /// Never park: lowest latency, one core busy per waiting thread. An engine runs
    /// at most one fewer busy-polling upcall workers than the machine has CPUs (at
    /// least one), whatever `upcall_workers` asks for: a busy-polling worker per CPU
    /// leaves the threads that put, and so feed it, no CPU to run on.
    BusyPoll,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy::SpinThenPark { spin_us: 200 }
    }
}

impl WaitPolicy {
    /// The bounded spin before parking; `None` for busy polling (never park).
    pub fn spin(&self) -> Option<Duration> {
        match self {
            WaitPolicy::Block => Some(Duration::ZERO),
            WaitPolicy::SpinThenPark { spin_us } => Some(Duration::from_micros(*spin_us)),
            WaitPolicy::BusyPoll => None,
        }
    }
}

/// A value alone on its cache lines (two, against the adjacent-line prefetcher), so that
/// threads writing neighbouring values do not steal each other's lines.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
