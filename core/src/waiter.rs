//! Waiters: "wake me when key K reaches seq S" or "when anything under prefix P changes".
//!
//! Served by the upcall stage right after a version becomes visible; nothing
//! polls. A `Waiter` can be awaited from async code or waited on by a thread.
//!
//! Waiters wait for versions, that is for updates that advance a key's seq: puts
//! and removes, and in a `trigger` pool every ordered update (a trigger there is
//! sequenced like a put, so its key's seq moves and its waiters fire). A trigger
//! into a `volatile` or `persistent` pool stores nothing and leaves the seq where
//! it is, so it upcalls lambdas but wakes no waiter: a fetch waiting for the next
//! record must not wake to find nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::key::{Key, Prefix};
use crate::object::ObjectVersion;

#[derive(Default)]
struct Cell {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
    thread: Mutex<Option<Thread>>,
}

impl Cell {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
        if let Some(t) = self.thread.lock().take() {
            t.unpark();
        }
    }
}

/// A one-shot wake-up; await it, or block on it with `wait_timeout`.
#[derive(Clone)]
pub struct Waiter(Arc<Cell>);

impl Waiter {
    fn new() -> Waiter {
        Waiter(Arc::new(Cell::default()))
    }

    /// True once the condition held.
    pub fn is_ready(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Blocks the thread until the condition holds or `timeout` passes; true when it held.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        *self.0.thread.lock() = Some(std::thread::current());
        loop {
            if self.is_ready() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::park_timeout(deadline - now);
        }
    }
}

impl Future for Waiter {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_ready() {
            return Poll::Ready(());
        }
        *self.0.waker.lock() = Some(cx.waker().clone());
        if self.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Every pending waiter of an engine.
#[derive(Default)]
pub struct Waiters {
    count: AtomicUsize,
    by_key: Mutex<HashMap<Key, Vec<(u64, Waiter)>>>,
    by_prefix: Mutex<Vec<(Prefix, Waiter)>>,
}

impl Waiters {
    /// Registers a waiter for `key` reaching past `seq`; the caller then checks the
    /// current state and fires it if already true (`fire_now`).
    pub(crate) fn for_key(&self, key: &Key, seq: u64) -> Waiter {
        let w = Waiter::new();
        let mut map = self.by_key.lock();
        let list = map.entry(key.clone()).or_default();
        let before = list.len();
        // Forget waiters whose owners gave up (only the registry still holds them).
        list.retain(|(_, w)| Arc::strong_count(&w.0) > 1);
        self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
        list.push((seq, w.clone()));
        self.count.fetch_add(1, Ordering::SeqCst);
        w
    }

    /// Registers a waiter for the next change under `prefix`.
    pub(crate) fn for_prefix(&self, prefix: &Prefix) -> Waiter {
        let w = Waiter::new();
        let mut list = self.by_prefix.lock();
        let before = list.len();
        list.retain(|(_, w)| Arc::strong_count(&w.0) > 1);
        self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
        list.push((prefix.clone(), w.clone()));
        self.count.fetch_add(1, Ordering::SeqCst);
        w
    }

    /// Fires a waiter at once (the condition already held when it was registered).
    pub(crate) fn fire_now(&self, w: &Waiter) {
        w.0.fire();
    }

    /// Wakes every waiter satisfied by a newly visible version.
    pub(crate) fn notify(&self, object: &ObjectVersion) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let next = object.next_seq();
        let mut fired = 0;
        {
            let mut map = self.by_key.lock();
            if let Some(list) = map.get_mut(&object.key) {
                list.retain(|(seq, w)| {
                    if next > *seq || w.is_ready() {
                        w.0.fire();
                        fired += 1;
                        false
                    } else {
                        true
                    }
                });
                if list.is_empty() {
                    map.remove(&object.key);
                }
            }
        }
        {
            let mut list = self.by_prefix.lock();
            if !list.is_empty() {
                list.retain(|(p, w)| {
                    if object.key.is_under(p) {
                        w.0.fire();
                        fired += 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        self.count.fetch_sub(fired, Ordering::Relaxed);
    }
}
