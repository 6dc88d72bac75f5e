//! The upcall stage: a pool of worker threads that run lambdas after a version is applied.
//!
//! Each worker owns a queue. A key's upcalls in a `per-key` pool always go to
//! the same worker (by hash), so they run one at a time in seq order; in a
//! `concurrent` pool they are spread round-robin. Workers wait spin-then-park.
//!
//! The queue is built for the hand-off, which on a 2-vCPU VM costs a few cache
//! line transfers when the worker spins and 30-45 µs when it has parked:
//! - a ring of slots, each on its own cache line, filled in order under a
//!   producer-side lock that the worker never takes; the worker spins on the
//!   sequence word of the slot it expects next (a plain load), then reads the
//!   slot without writing it, and publishes its progress on a line of its own,
//!   which producers read only when the ring looks full;
//! - a task names its binding by index into the bindings snapshot of the
//!   dispatch that queued it, and carries that snapshot only when it changed
//!   since the queue's previous task, so no reference count is shared between
//!   the producer and the worker per upcall and nothing is allocated per upcall;
//! - the ring never blocks a producer: when it is full, tasks go to an
//!   overflow list that the worker drains, in order, once the ring is empty
//!   (the sequencer must never wait on a lambda, and a lambda may write to the
//!   very shard whose upcall it runs).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use parking_lot::Mutex;

use super::{Binding, LambdaContext};
use crate::engine::EngineInner;
use crate::object::ObjectVersion;
use crate::spin::{Padded, WaitPolicy};

/// Slots per worker ring; a power of two.
const RING: usize = 256;
/// Spin iterations between two reads of the clock while waiting.
const SPINS_PER_CLOCK_READ: u32 = 64;

/// The bindings in force, as one immutable snapshot: replaced, never changed.
pub(crate) struct BindingSet {
    /// Increases with every replacement, so a queue can tell snapshots apart.
    pub(crate) generation: u64,
    /// The live bindings.
    pub(crate) bindings: Vec<Arc<Binding>>,
}

struct Task {
    object: Arc<ObjectVersion>,
    /// The binding's index in the snapshot the worker holds once it has read this task.
    binding: usize,
    /// The snapshot, when it differs from the one of the queue's previous task.
    bindings: Option<Arc<BindingSet>>,
}

/// One ring slot. The producer of ring position `p` fills `task`, then stores
/// `seq = p + 1`; the worker, expecting position `p`, waits for that `seq`, then
/// takes the task. Neither takes a lock, and the worker never writes the slot.
struct Slot {
    seq: AtomicU64,
    task: UnsafeCell<Option<Task>>,
}

// SAFETY: `task` is only ever accessed by one thread at a time, by this protocol:
// - a producer writes the slot of position `p` only under the producer lock, and only
//   once the worker's `taken` (stored with Release after it took position `p - RING`,
//   read here with Acquire) is past `p - RING`: the worker is done with the slot;
// - the worker reads the slot of position `p` only after loading `seq == p + 1` with
//   Acquire, which the producer stored with Release after writing the task, and it
//   finishes with it before storing `taken > p`, which no producer passes before.
// A `Task` holds only `Send + Sync` values, so handing it between threads is sound.
unsafe impl Sync for Slot {}

/// What producers share, under the producer lock.
struct Producer {
    /// The next ring position to fill.
    tail: u64,
    /// The worker's `taken` as last read: the ring has room up to `taken + RING`.
    taken: u64,
    /// Tasks that found the ring full; while any waits here, new tasks queue behind them.
    overflow: VecDeque<Task>,
    /// The snapshot generation of the last task queued (the worker's after reading it).
    generation: u64,
    /// Tasks queued since start.
    submitted: u64,
    /// Tasks the worker took from the overflow list since start.
    taken_overflow: u64,
}

struct Queue {
    producer: Padded<Mutex<Producer>>,
    slots: Box<[Padded<Slot>]>,
    /// Set by a producer when the overflow list becomes non-empty.
    overflowed: Padded<AtomicBool>,
    /// Ring positions the worker has taken (written by the worker only): the slots of
    /// the positions below it are free for producers to fill again.
    taken: Padded<AtomicU64>,
    /// True while the worker is (about to be) parked.
    sleeping: Padded<AtomicBool>,
    thread: OnceLock<Thread>,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            producer: Padded(Mutex::new(Producer {
                tail: 0,
                taken: 0,
                overflow: VecDeque::new(),
                generation: u64::MAX,
                submitted: 0,
                taken_overflow: 0,
            })),
            slots: (0..RING)
                .map(|_| {
                    Padded(Slot {
                        // No position `p` has `seq == p + 1` before it is filled.
                        seq: AtomicU64::new(0),
                        task: UnsafeCell::new(None),
                    })
                })
                .collect(),
            overflowed: Padded(AtomicBool::new(false)),
            taken: Padded(AtomicU64::new(0)),
            sleeping: Padded(AtomicBool::new(false)),
            thread: OnceLock::new(),
        }
    }

    fn slot(&self, position: u64) -> &Slot {
        &self.slots[(position as usize) & (RING - 1)]
    }

    fn push(&self, set: &Arc<BindingSet>, binding: usize, object: &Arc<ObjectVersion>) {
        {
            let mut p = self.producer.lock();
            let bindings = (p.generation != set.generation).then(|| {
                p.generation = set.generation;
                set.clone()
            });
            let task = Task {
                object: object.clone(),
                binding,
                bindings,
            };
            p.submitted += 1;
            let tail = p.tail;
            if p.overflow.is_empty() && tail - p.taken >= RING as u64 {
                p.taken = self.taken.load(Ordering::Acquire);
            }
            if p.overflow.is_empty() && tail - p.taken < RING as u64 {
                let slot = self.slot(tail);
                // SAFETY: see `Slot`: we hold the producer lock, and the worker has taken
                // every position up to `p.taken > tail - RING`, this slot's previous one.
                unsafe { *slot.task.get() = Some(task) };
                slot.seq.store(tail + 1, Ordering::Release);
                p.tail = tail + 1;
            } else {
                p.overflow.push_back(task);
                self.overflowed.store(true, Ordering::Release);
            }
        }
        // Pairs with the worker's `sleeping` store and re-check before it parks.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// True when the slot at `head` holds a task (a plain load: the worker's spin check).
    fn ready(&self, head: u64) -> bool {
        self.slot(head).seq.load(Ordering::Acquire) == head + 1
    }

    /// Takes the task at `head` from the ring, if it is there (worker only).
    fn pop(&self, head: &mut u64) -> Option<Task> {
        if !self.ready(*head) {
            return None;
        }
        let slot = self.slot(*head);
        // SAFETY: see `Slot`: `seq == head + 1` was published after the task was written,
        // and no producer writes this slot again before `taken` passes `head`.
        let task = unsafe { (*slot.task.get()).take() };
        *head += 1;
        self.taken.store(*head, Ordering::Release);
        task
    }

    /// Takes the overflow list, but only while the ring is empty: producers fill the
    /// ring under the lock held here, and queue behind the overflow while it is not
    /// empty, so the ring's tasks are older than the overflow's and order is kept.
    fn take_overflow(&self, head: u64) -> Option<VecDeque<Task>> {
        let mut p = self.producer.lock();
        if self.ready(head) {
            return None;
        }
        self.overflowed.store(false, Ordering::Relaxed);
        let batch = std::mem::take(&mut p.overflow);
        p.taken_overflow += batch.len() as u64;
        Some(batch)
    }

    fn has_work(&self, head: u64) -> bool {
        self.ready(head) || self.overflowed.load(Ordering::Acquire)
    }

    fn backlog(&self) -> usize {
        let p = self.producer.lock();
        let taken = self.taken.load(Ordering::Relaxed) + p.taken_overflow;
        p.submitted.saturating_sub(taken) as usize
    }
}

/// The worker pool.
pub struct UpcallPool {
    queues: Vec<Arc<Queue>>,
    next: AtomicUsize,
    stop: Arc<AtomicBool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// How many workers a pool runs: busy-polling workers are capped at one fewer
/// than the CPUs (at least one), so that a producer always has a CPU to run on.
pub(crate) fn worker_count(requested: usize, policy: WaitPolicy, cpus: usize) -> usize {
    let requested = requested.max(1);
    match policy {
        WaitPolicy::BusyPoll => requested.min(cpus.saturating_sub(1).max(1)),
        _ => requested,
    }
}

impl UpcallPool {
    /// Starts `workers` threads that wait by `policy` (fewer for `BusyPoll`, see [`worker_count`]).
    pub(crate) fn start(
        workers: usize,
        policy: WaitPolicy,
        engine: Weak<EngineInner>,
    ) -> UpcallPool {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = worker_count(workers, policy, cpus);
        if count < workers {
            tracing::info!(
                requested = workers,
                running = count,
                cpus,
                "busy-polling upcall workers capped at one fewer than the CPUs"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut queues = Vec::new();
        let mut handles = Vec::new();
        for i in 0..count {
            let q = Arc::new(Queue::new());
            let (q2, stop2, engine2) = (q.clone(), stop.clone(), engine.clone());
            let handle = std::thread::Builder::new()
                .name(format!("kascade-upcall-{i}"))
                .spawn(move || worker(q2, stop2, policy, engine2))
                .expect("spawning an upcall worker thread");
            let _ = q.thread.set(handle.thread().clone());
            queues.push(q);
            handles.push(handle);
        }
        UpcallPool {
            queues,
            next: AtomicUsize::new(0),
            stop,
            handles: Mutex::new(handles),
        }
    }

    /// Queues an upcall of `set.bindings[binding]`; `per_key` keeps a key's upcalls on
    /// one worker, in order.
    pub(crate) fn submit(
        &self,
        set: &Arc<BindingSet>,
        binding: usize,
        object: &Arc<ObjectVersion>,
        per_key: bool,
    ) {
        let n = self.queues.len();
        let index = if n == 1 {
            0
        } else if per_key {
            let h = crc32c::crc32c(object.key.as_str().as_bytes());
            // Mixed, so that the worker does not simply follow the shard (also a crc32c).
            ((u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize) % n
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        self.queues[index].push(set, binding, object);
    }

    /// Upcalls queued and not yet started.
    pub fn backlog(&self) -> usize {
        self.queues.iter().map(|q| q.backlog()).sum()
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.queues.len()
    }

    /// Stops the workers after the queued upcalls ran.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for q in &self.queues {
            if let Some(t) = q.thread.get() {
                t.unpark();
            }
        }
        let current = std::thread::current().id();
        for h in self.handles.lock().drain(..) {
            if h.thread().id() != current {
                let _ = h.join();
            }
        }
    }
}

fn worker(q: Arc<Queue>, stop: Arc<AtomicBool>, policy: WaitPolicy, engine: Weak<EngineInner>) {
    let mut head = 0u64;
    let mut bindings: Option<Arc<BindingSet>> = None;
    loop {
        if let Some(task) = q.pop(&mut head) {
            run(&engine, &mut bindings, task);
            continue;
        }
        if q.overflowed.load(Ordering::Acquire) {
            for task in q.take_overflow(head).into_iter().flatten() {
                run(&engine, &mut bindings, task);
            }
            continue;
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        wait(&q, head, &stop, policy);
    }
}

/// Waits by `policy` until the queue has work or the pool stops.
fn wait(q: &Queue, head: u64, stop: &AtomicBool, policy: WaitPolicy) {
    let limit = policy.spin();
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if q.has_work(head) || stop.load(Ordering::Relaxed) {
            return;
        }
        spins += 1;
        let park = match limit {
            None => false,
            Some(limit) if limit.is_zero() => true,
            Some(limit) => spins.is_multiple_of(SPINS_PER_CLOCK_READ) && start.elapsed() >= limit,
        };
        if !park {
            std::hint::spin_loop();
            continue;
        }
        q.sleeping.store(true, Ordering::Relaxed);
        // Pairs with the producer's fence between filling a slot and reading `sleeping`.
        fence(Ordering::SeqCst);
        if !q.has_work(head) && !stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        q.sleeping.store(false, Ordering::Relaxed);
        return;
    }
}

fn run(engine: &Weak<EngineInner>, bindings: &mut Option<Arc<BindingSet>>, task: Task) {
    if let Some(set) = task.bindings {
        *bindings = Some(set);
    }
    let Some(binding) = bindings.as_ref().and_then(|s| s.bindings.get(task.binding)) else {
        // Cannot happen: the first task of a queue always carries its snapshot.
        tracing::error!(key = %task.object.key, "an upcall named a binding its worker does not hold");
        return;
    };
    let ctx = LambdaContext { engine, binding };
    // The one wall-clock read an upcall adds: the queue lag is measured against the
    // sequencer's timestamp, which is wall-clock time.
    let lag_ns = wall_clock_ns().saturating_sub(task.object.timestamp_us.saturating_mul(1000));
    let start = Instant::now();
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| binding.lambda.call(&ctx, &task.object)));
    let elapsed = start.elapsed();
    let stats = &binding.stats;
    stats.calls.fetch_add(1, Ordering::Relaxed);
    stats
        .busy_ns
        .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    stats.lag_ns.fetch_add(lag_ns, Ordering::Relaxed);
    binding.calls_metric.increment(1);
    binding.duration_metric.record(elapsed.as_secs_f64());
    binding.lag_metric.record(lag_ns as f64 * 1e-9);
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.0,
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .map_or_else(|| "panicked".to_string(), |m| format!("panicked: {m}")),
    };
    binding.stats.errors.fetch_add(1, Ordering::Relaxed);
    binding.errors_metric.increment(1);
    tracing::warn!(lambda = %binding.name, key = %task.object.key, version = task.object.version,
        "lambda failed: {failure}");
}

/// Nanoseconds since the Unix epoch (0 before it).
fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use bytes::Bytes;

    fn object(version: u64) -> Arc<ObjectVersion> {
        Arc::new(ObjectVersion {
            key: Key::new("/k").unwrap(),
            version,
            seq: version,
            count: 1,
            timestamp_us: 0,
            prev_version: 0,
            affinity: None,
            tombstone: false,
            value: Bytes::new(),
        })
    }

    /// Takes everything queued, as the worker does: the ring, then the overflow.
    fn drain(q: &Queue, head: &mut u64, out: &mut Vec<u64>) {
        loop {
            if let Some(task) = q.pop(head) {
                out.push(task.object.version);
                continue;
            }
            if q.overflowed.load(Ordering::Acquire) {
                if let Some(batch) = q.take_overflow(*head) {
                    out.extend(batch.iter().map(|t| t.object.version));
                }
                continue;
            }
            return;
        }
    }

    #[test]
    fn a_full_ring_overflows_and_order_is_kept() {
        let q = Queue::new();
        let set = Arc::new(BindingSet {
            generation: 7,
            bindings: Vec::new(),
        });
        let n = RING as u64 * 3;
        for v in 0..n / 2 {
            q.push(&set, 0, &object(v));
        }
        assert_eq!(q.backlog(), (n / 2) as usize);
        let mut head = 0;
        let first = q.pop(&mut head).unwrap();
        assert!(
            first.bindings.is_some(),
            "the first task carries the snapshot"
        );
        let mut seen = vec![first.object.version];
        for _ in 0..9 {
            let task = q.pop(&mut head).unwrap();
            assert!(
                task.bindings.is_none(),
                "later tasks of one snapshot do not"
            );
            seen.push(task.object.version);
        }
        // The ring has room again, but tasks queue behind the overflow until it is taken.
        for v in n / 2..n {
            q.push(&set, 0, &object(v));
        }
        drain(&q, &mut head, &mut seen);
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert_eq!(q.backlog(), 0);
        q.push(&set, 0, &object(n));
        assert_eq!(q.pop(&mut head).map(|t| t.object.version), Some(n));
    }

    #[test]
    fn producers_and_a_worker_on_other_threads_lose_and_reorder_nothing() {
        let q = Arc::new(Queue::new());
        let set = Arc::new(BindingSet {
            generation: 1,
            bindings: Vec::new(),
        });
        let (producers, each) = (2u64, 100_000u64);
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let (mut head, mut seen) = (0, Vec::new());
                while (seen.len() as u64) < producers * each {
                    drain(&q, &mut head, &mut seen);
                    std::hint::spin_loop();
                }
                seen
            })
        };
        std::thread::scope(|scope| {
            for p in 0..producers {
                let (q, set) = (&q, &set);
                scope.spawn(move || {
                    for i in 0..each {
                        q.push(set, 0, &object(p * each + i));
                        if i % 1000 == 0 {
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        let seen = consumer.join().unwrap();
        assert_eq!(seen.len() as u64, producers * each);
        for p in 0..producers {
            let mine: Vec<u64> = seen.iter().copied().filter(|v| v / each == p).collect();
            assert_eq!(mine, (p * each..(p + 1) * each).collect::<Vec<_>>());
        }
        assert_eq!(q.backlog(), 0);
    }

    #[test]
    fn busy_polling_workers_leave_one_cpu_to_the_producers() {
        assert_eq!(worker_count(2, WaitPolicy::BusyPoll, 2), 1);
        assert_eq!(worker_count(8, WaitPolicy::BusyPoll, 4), 3);
        assert_eq!(worker_count(2, WaitPolicy::BusyPoll, 1), 1);
        assert_eq!(worker_count(2, WaitPolicy::BusyPoll, 16), 2);
        assert_eq!(worker_count(0, WaitPolicy::BusyPoll, 2), 1);
        assert_eq!(worker_count(2, WaitPolicy::default(), 2), 2);
        assert_eq!(worker_count(3, WaitPolicy::Block, 2), 3);
    }
}
