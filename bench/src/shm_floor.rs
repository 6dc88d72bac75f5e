//! The cross-process floors of the native path: two processes ping-ponging a
//! counter through shared memory, waiting the ways the shared-memory transport
//! can wait (pure spinning, a bounded spin then a futex, a futex at once, an
//! eventfd at once).
//!
//! The page is `MAP_SHARED | MAP_ANONYMOUS` and the responder is a `fork`ed
//! child that touches nothing but that page, the futex and eventfd syscalls and
//! `_exit`, so forking a threaded benchmark is safe. Each figure is one way: the
//! round trip halved, as in [`crate::floors::handoff`].

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::{latency_histogram, nanos_since, record};

/// How each side waits for the other's write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmWait {
    /// Spin on the word, never sleep.
    Spin,
    /// Spin this long, then sleep on a futex on the word.
    SpinThenFutex(Duration),
    /// Sleep on a futex at once.
    Futex,
    /// Sleep on an eventfd at once (what a transport that polls many peers uses).
    Eventfd,
}

const STOP: u32 = u32::MAX;

/// One direction: the value and whether its reader sleeps; apart from the other on its own lines.
#[repr(C, align(128))]
struct Word {
    value: AtomicU32,
    sleeping: AtomicU32,
}

#[repr(C)]
struct Page {
    ping: Word,
    pong: Word,
}

/// A shared anonymous mapping holding one [`Page`].
struct Mapping(*mut Page);

impl Mapping {
    fn new() -> std::io::Result<Mapping> {
        // SAFETY: an anonymous shared mapping of one page; nothing else aliases it yet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping(ptr.cast()))
    }

    fn page(&self) -> &Page {
        // SAFETY: the mapping is page-sized, zero-filled (a valid Page of atomics) and
        // lives as long as self; both processes only touch it through atomics.
        unsafe { &*self.0 }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps the page mapped in `new`; no reference to it outlives self.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a live, aligned u32 in shared memory (not FUTEX_PRIVATE: the
    // other process waits on the same physical page). It only reads the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32; wakes at most one waiter.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

fn eventfd_signal(fd: i32) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn eventfd_wait(fd: i32) {
    let mut count: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from an eventfd we own.
    unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
}

fn send(word: &Word, v: u32, wait: ShmWait, eventfd: i32) {
    word.value.store(v, Ordering::SeqCst);
    if wait != ShmWait::Spin && word.sleeping.load(Ordering::SeqCst) == 1 {
        if wait == ShmWait::Eventfd {
            eventfd_signal(eventfd);
        } else {
            futex_wake(&word.value);
        }
    }
}

fn wait_change(word: &Word, last: u32, wait: ShmWait, eventfd: i32) -> u32 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let v = word.value.load(Ordering::Acquire);
        if v != last {
            return v;
        }
        let sleep = match wait {
            ShmWait::Spin => false,
            ShmWait::SpinThenFutex(limit) => {
                spins += 1;
                spins.is_multiple_of(64) && start.elapsed() >= limit
            }
            ShmWait::Futex | ShmWait::Eventfd => true,
        };
        if !sleep {
            std::hint::spin_loop();
            continue;
        }
        word.sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if word.value.load(Ordering::SeqCst) == last {
            if wait == ShmWait::Eventfd {
                eventfd_wait(eventfd);
            } else {
                futex_wait(&word.value, last);
            }
        }
        word.sleeping.store(0, Ordering::SeqCst);
    }
}

/// One-way latency (round trip / 2) of a ping-pong between this process and a forked
/// child through shared memory, both waiting by `wait`, with `gap` of spinning before
/// each round trip (zero: back to back), for about `duration`.
pub fn shm_ping_pong(
    wait: ShmWait,
    gap: Duration,
    duration: Duration,
) -> std::io::Result<Histogram<u64>> {
    let mapping = Mapping::new()?;
    // SAFETY: plain eventfd creation; the fds are closed below in both processes.
    let (to_child, to_parent) = unsafe { (libc::eventfd(0, 0), libc::eventfd(0, 0)) };
    if to_child < 0 || to_parent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the child only runs `respond`, which touches the shared page, futex and
    // eventfd syscalls and then `_exit`s: nothing that needs another thread's lock.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if child == 0 {
        let page = mapping.page();
        let mut last = 0;
        loop {
            let v = wait_change(&page.ping, last, wait, to_child);
            if v == STOP {
                // SAFETY: ends the forked child without running the parent's atexit handlers.
                unsafe { libc::_exit(0) };
            }
            send(&page.pong, v, wait, to_parent);
            last = v;
        }
    }
    let page = mapping.page();
    let mut h = latency_histogram();
    let end = Instant::now() + duration;
    let warmup = if gap.is_zero() { 1000 } else { 10 };
    let mut i = 0u32;
    loop {
        i += 1;
        if !gap.is_zero() {
            crate::spin_until(Instant::now() + gap);
        }
        let t = Instant::now();
        send(&page.ping, i, wait, to_child);
        wait_change(&page.pong, i - 1, wait, to_parent);
        let rtt = nanos_since(t);
        if i > warmup {
            record(&mut h, rtt / 2);
        }
        if (i > warmup + 30 && t >= end) || i >= STOP - 1 {
            break;
        }
    }
    send(&page.ping, STOP, wait, to_child);
    let mut status = 0;
    // SAFETY: reaps our own child; then closes our eventfds.
    unsafe {
        libc::waitpid(child, &mut status, 0);
        libc::close(to_child);
        libc::close(to_parent);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wait_mode_completes_round_trips_between_processes() {
        for wait in [
            ShmWait::Spin,
            ShmWait::SpinThenFutex(Duration::from_micros(20)),
            ShmWait::Futex,
            ShmWait::Eventfd,
        ] {
            let h = shm_ping_pong(wait, Duration::ZERO, Duration::from_millis(30))
                .expect("ping-pong runs");
            assert!(h.len() > 30, "{wait:?}: only {} round trips", h.len());
        }
    }
}
