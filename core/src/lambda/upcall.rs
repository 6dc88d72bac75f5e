//! The upcall stage: a pool of worker threads that run lambdas after a version is applied.
//!
//! Each worker owns a queue. A key's upcalls in a `per-key` pool always go to
//! the same worker (by hash), so they run one at a time in seq order; in a
//! `concurrent` pool they are spread round-robin. Workers wait spin-then-park.
//! Queues are unbounded on purpose: the sequencer must never block on a
//! lambda, and a lambda may write to the very shard whose upcall it runs.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use parking_lot::Mutex;

use super::{Binding, LambdaContext};
use crate::engine::EngineInner;
use crate::object::ObjectVersion;
use crate::spin::WaitPolicy;

struct Task {
    binding: Arc<Binding>,
    object: Arc<ObjectVersion>,
}

struct Queue {
    tasks: Mutex<VecDeque<Task>>,
    len: AtomicUsize,
    sleeping: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

/// The worker pool.
pub struct UpcallPool {
    queues: Vec<Arc<Queue>>,
    next: AtomicUsize,
    stop: Arc<AtomicBool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl UpcallPool {
    /// Starts `workers` threads that wait by `policy`.
    pub(crate) fn start(
        workers: usize,
        policy: WaitPolicy,
        engine: Weak<EngineInner>,
    ) -> UpcallPool {
        let stop = Arc::new(AtomicBool::new(false));
        let mut queues = Vec::new();
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let q = Arc::new(Queue {
                tasks: Mutex::new(VecDeque::new()),
                len: AtomicUsize::new(0),
                sleeping: AtomicBool::new(false),
                thread: Mutex::new(None),
            });
            let (q2, stop2, engine2) = (q.clone(), stop.clone(), engine.clone());
            let handle = std::thread::Builder::new()
                .name(format!("kascade-upcall-{i}"))
                .spawn(move || worker(q2, stop2, policy, engine2))
                .expect("spawning an upcall worker thread");
            *q.thread.lock() = Some(handle.thread().clone());
            queues.push(q);
            handles.push(handle);
        }
        UpcallPool {
            queues,
            next: AtomicUsize::new(0),
            stop,
            handles: Mutex::new(handles),
            hasher: Default::default(),
        }
    }

    /// Queues an upcall; `per_key` keeps a key's upcalls on one worker, in order.
    pub(crate) fn submit(&self, binding: Arc<Binding>, object: Arc<ObjectVersion>, per_key: bool) {
        let index = if per_key {
            (self.hasher.hash_one(&object.key) as usize) % self.queues.len()
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len()
        };
        let q = &self.queues[index];
        q.tasks.lock().push_back(Task { binding, object });
        q.len.fetch_add(1, Ordering::SeqCst);
        if q.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = q.thread.lock().as_ref() {
                t.unpark();
            }
        }
    }

    /// Upcalls queued and not yet started.
    pub fn backlog(&self) -> usize {
        self.queues
            .iter()
            .map(|q| q.len.load(Ordering::Relaxed))
            .sum()
    }

    /// Stops the workers after the queued upcalls ran.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for q in &self.queues {
            if let Some(t) = q.thread.lock().as_ref() {
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
    loop {
        let task = q.tasks.lock().pop_front();
        if let Some(task) = task {
            q.len.fetch_sub(1, Ordering::SeqCst);
            run(&engine, task);
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // Spin a bounded while, then park.
        let spin = policy.spin();
        let start = Instant::now();
        while q.len.load(Ordering::Acquire) == 0 && !stop.load(Ordering::Relaxed) {
            match spin {
                None => std::hint::spin_loop(),
                Some(limit) if start.elapsed() < limit => std::hint::spin_loop(),
                Some(_) => {
                    q.sleeping.store(true, Ordering::SeqCst);
                    if q.len.load(Ordering::SeqCst) == 0 && !stop.load(Ordering::SeqCst) {
                        std::thread::park();
                    }
                    q.sleeping.store(false, Ordering::SeqCst);
                    break;
                }
            }
        }
    }
}

fn run(engine: &Weak<EngineInner>, task: Task) {
    let binding = &task.binding;
    let ctx = LambdaContext { engine, binding };
    let start = Instant::now();
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| binding.lambda.call(&ctx, &task.object)));
    let elapsed = start.elapsed();
    binding.stats.calls.fetch_add(1, Ordering::Relaxed);
    binding
        .stats
        .busy_ns
        .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    binding.calls_metric.increment(1);
    binding.duration_metric.record(elapsed.as_secs_f64());
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
