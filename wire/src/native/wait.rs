//! How a side waits: for data (consumer) or for credits (producer).
//!
//! The protocol (see `native-design.md`): spin on the shared word for a
//! bounded time, then set this side's sleeping flag, `fence(SeqCst)`, check
//! once more, and park on the doorbell. The peer, after publishing, fences and
//! rings the doorbell only when it sees the flag set, so a spinning or busy
//! side costs its peer no syscall.

use std::io;
use std::str::FromStr;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use super::NativeError;

/// How a side waits for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Park at once (set the sleeping flag and wait on the doorbell).
    Block,
    /// Spin up to `spin_us` microseconds, then park.
    SpinThenPark {
        /// How long to spin before parking.
        spin_us: u32,
    },
    /// Spin and never park (a core stays busy).
    BusyPoll,
}

impl Default for WaitStrategy {
    /// Spin 50 µs, then park.
    fn default() -> Self {
        WaitStrategy::SpinThenPark { spin_us: 50 }
    }
}

impl WaitStrategy {
    /// Builds a strategy from the broker's `--native-wait block|spin|busy` and
    /// `--native-spin-us` values.
    pub fn from_name(name: &str, spin_us: u32) -> Option<WaitStrategy> {
        match name {
            "block" => Some(WaitStrategy::Block),
            "spin" => Some(WaitStrategy::SpinThenPark { spin_us }),
            "busy" => Some(WaitStrategy::BusyPoll),
            _ => None,
        }
    }
}

impl FromStr for WaitStrategy {
    type Err = String;

    /// `block`, `busy`, `spin` (50 µs) or `spin:<us>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(us) = s.strip_prefix("spin:") {
            let spin_us = us
                .parse()
                .map_err(|_| format!("bad spin time {us:?}: want microseconds"))?;
            return Ok(WaitStrategy::SpinThenPark { spin_us });
        }
        WaitStrategy::from_name(s, 50).ok_or_else(|| {
            format!("unknown wait strategy {s:?}: want block, spin, spin:<us> or busy")
        })
    }
}

/// Wakes the peer, and waits to be woken.
pub trait Doorbell {
    /// Wakes the peer.
    fn ring(&self) -> io::Result<()>;
    /// Waits until rung or `timeout` passes (`Ok` either way); an error when
    /// the peer is gone.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<()>;
}

/// Something a side can wait for, in the terms of the wait protocol.
pub trait Waitable {
    /// Checks the condition; cheap (no syscall) for rings.
    fn ready(&mut self) -> Result<bool, NativeError>;
    /// Sets or clears this side's sleeping flag(s).
    fn set_sleeping(&mut self, on: bool);
    /// Blocks until rung, the timeout, or the peer's death (an error).
    fn park(&mut self, timeout: Option<Duration>) -> Result<(), NativeError>;
    /// Checks the peer is alive while spinning (every ~10 ms); default: no check.
    fn check_alive(&mut self) -> Result<(), NativeError> {
        Ok(())
    }
}

/// Iterations between clock reads while spinning.
const CLOCK_EVERY: u32 = 64;
/// Time between liveness checks while spinning.
const ALIVE_EVERY: Duration = Duration::from_millis(10);

/// Waits per `strategy` until `w` is ready (`Ok(true)`) or `deadline` passes
/// (`Ok(false)`). Errors: the peer died, or the condition check failed.
pub fn wait_until(
    strategy: WaitStrategy,
    w: &mut impl Waitable,
    deadline: Option<Instant>,
) -> Result<bool, NativeError> {
    if w.ready()? {
        return Ok(true);
    }
    let spin_for = match strategy {
        WaitStrategy::Block => Some(Duration::ZERO),
        WaitStrategy::SpinThenPark { spin_us } => Some(Duration::from_micros(u64::from(spin_us))),
        WaitStrategy::BusyPoll => None,
    };
    if spin_for != Some(Duration::ZERO) {
        let start = Instant::now();
        let mut last_alive = start;
        let mut i = 0u32;
        loop {
            std::hint::spin_loop();
            if w.ready()? {
                return Ok(true);
            }
            i = i.wrapping_add(1);
            if i.is_multiple_of(CLOCK_EVERY) {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Ok(false);
                }
                if spin_for.is_some_and(|s| now - start >= s) {
                    break;
                }
                if now - last_alive >= ALIVE_EVERY {
                    w.check_alive()?;
                    last_alive = now;
                }
            }
        }
    }
    loop {
        w.set_sleeping(true);
        fence(Ordering::SeqCst);
        let ready = w.ready();
        if !matches!(ready, Ok(false)) {
            w.set_sleeping(false);
            return ready;
        }
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout == Some(Duration::ZERO) {
            w.set_sleeping(false);
            return Ok(false);
        }
        let parked = w.park(timeout);
        w.set_sleeping(false);
        parked?;
        if w.ready()? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_from_flags() {
        assert_eq!("block".parse(), Ok(WaitStrategy::Block));
        assert_eq!("busy".parse(), Ok(WaitStrategy::BusyPoll));
        assert_eq!(
            "spin".parse(),
            Ok(WaitStrategy::SpinThenPark { spin_us: 50 })
        );
        assert_eq!(
            "spin:7".parse(),
            Ok(WaitStrategy::SpinThenPark { spin_us: 7 })
        );
        assert!("nap".parse::<WaitStrategy>().is_err());
        assert_eq!(
            WaitStrategy::from_name("spin", 3),
            Some(WaitStrategy::SpinThenPark { spin_us: 3 })
        );
    }
}
