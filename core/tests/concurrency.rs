//! Many threads at once: upcall ordering and exactly-once delivery, waiters that
//! never miss a write, failing lambdas that are counted and isolated, and a
//! pipeline that carries every record to its last stage in order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kascade_core::{
    Engine, EngineConfig, FsyncPolicy, Get, Key, LambdaContext, LambdaError, ObjectVersion,
    PipelineSpec, PoolConfig, Prefix, Put, RangeLimit, Storage, UpcallOrdering,
};

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

fn engine_with_dir() -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        data_dir: Some(dir.path().to_path_buf()),
        upcall_workers: 3,
        ..EngineConfig::default()
    })
    .unwrap();
    (engine, dir)
}

/// Polls `done` until it holds or `secs` pass.
fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

type Seen = Arc<Mutex<HashMap<Key, Vec<(u64, u32)>>>>;

/// Binds a lambda at `prefix` that records `(seq, count)` of every upcall by key.
fn record_upcalls(engine: &Engine, name: &str, prefix: &str) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    engine
        .bind_local(
            name,
            prefix,
            Arc::new(move |_: &LambdaContext<'_>, obj: &Arc<ObjectVersion>| {
                s.lock()
                    .unwrap()
                    .entry(obj.key.clone())
                    .or_default()
                    .push((obj.seq, obj.count));
                Ok(())
            }),
        )
        .unwrap();
    seen
}

/// `threads` writers, each with its own keys, `puts` puts per key with counts 1..=3.
/// Returns every key's `(seq, count)` in write order.
fn write_concurrently(
    engine: &Engine,
    prefix: &str,
    threads: usize,
    keys_per_thread: usize,
    puts: usize,
) -> BTreeMap<Key, Vec<(u64, u32)>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out: BTreeMap<Key, Vec<(u64, u32)>> = BTreeMap::new();
                    for n in 0..puts * keys_per_thread {
                        let k = key(&format!("{prefix}/t{t}/k{}", n % keys_per_thread));
                        let count = 1 + (n % 3) as u32;
                        let r = engine
                            .put(Put::new(k.clone(), format!("{n}")).count(count))
                            .unwrap();
                        out.entry(k).or_default().push((r.seq, count));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn per_key_upcalls_arrive_once_each_in_seq_order(storage: Storage) {
    let (engine, _dir) = engine_with_dir();
    engine
        .create_pool(PoolConfig::new("/o", storage).shards(4))
        .unwrap();
    let seen = record_upcalls(&engine, "order", "/o");
    let written = write_concurrently(&engine, "/o", 6, 4, 40);
    let total: usize = written.values().map(Vec::len).sum();
    eventually(20, "every upcall ran", || {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() >= total
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), written.len(), "every key was upcalled");
    for (k, puts) in &written {
        assert_eq!(
            seen.get(k),
            Some(puts),
            "{k}: each version upcalled exactly once, in seq order"
        );
        let mut next = 0;
        for (seq, count) in puts {
            assert_eq!(*seq, next, "{k}: seqs are dense");
            next += u64::from(*count);
        }
    }
    assert_eq!(engine.upcall_backlog(), 0);
}

#[test]
fn per_key_upcalls_arrive_once_each_in_seq_order_in_a_volatile_pool() {
    per_key_upcalls_arrive_once_each_in_seq_order(Storage::Volatile);
}

#[test]
fn per_key_upcalls_arrive_once_each_in_seq_order_in_a_persistent_pool() {
    per_key_upcalls_arrive_once_each_in_seq_order(Storage::Persistent);
}

#[test]
fn concurrent_upcalls_arrive_exactly_once() {
    let (engine, _dir) = engine_with_dir();
    let pool = PoolConfig::new("/cc", Storage::Persistent)
        .ordering(UpcallOrdering::Concurrent)
        .fsync(FsyncPolicy::Interval { ms: 2 });
    engine.create_pool(pool).unwrap();
    let seen = record_upcalls(&engine, "any-order", "/cc");
    let written = write_concurrently(&engine, "/cc", 6, 3, 40);
    let total: usize = written.values().map(Vec::len).sum();
    eventually(20, "every upcall ran", || {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() >= total
    });
    eventually(20, "every call was counted", || {
        engine.lambda_stats()[0].calls as usize >= total
    });
    let seen = seen.lock().unwrap();
    for (k, puts) in &written {
        let mut got = seen.get(k).cloned().unwrap_or_default();
        got.sort();
        assert_eq!(&got, puts, "{k}: each version upcalled exactly once");
    }
    let stats = engine.lambda_stats();
    assert_eq!(stats[0].calls as usize, total);
}

#[test]
fn a_trigger_pool_upcalls_every_put_and_stores_nothing() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/trig", Storage::Trigger))
        .unwrap();
    let seen = record_upcalls(&engine, "watch", "/trig");
    let written = write_concurrently(&engine, "/trig", 4, 2, 25);
    let total: usize = written.values().map(Vec::len).sum();
    eventually(20, "every upcall ran", || {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() >= total
    });
    let seen = seen.lock().unwrap();
    for (k, puts) in &written {
        assert_eq!(seen.get(k), Some(puts), "{k}: in order, once each");
        assert_eq!(
            engine.get(k, Get::Latest).unwrap(),
            None,
            "{k}: nothing stored"
        );
        let last = puts.last().unwrap();
        assert_eq!(
            engine.bounds(k).unwrap().next_seq,
            last.0 + u64::from(last.1),
            "{k}: but the seq advanced"
        );
    }
}

// ----- waiters -----

#[test]
fn a_seq_waiter_wakes_once_its_seq_is_written_and_never_misses_one() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/w", Storage::Volatile))
        .unwrap();
    let k = key("/w/k");
    let n = 400u64;
    std::thread::scope(|s| {
        let (engine, k) = (&engine, &k);
        let waiter = s.spawn(move || {
            for seq in 0..n {
                let w = engine.wait_for_seq(k, seq).unwrap();
                assert!(
                    w.wait_timeout(Duration::from_secs(10)),
                    "the waiter for seq {seq} was missed"
                );
                let info = engine.bounds(k).unwrap();
                assert!(
                    info.next_seq > seq,
                    "woken only once seq {seq} is there: {info:?}"
                );
            }
        });
        for i in 0..n {
            engine.put(Put::new(k.clone(), format!("{i}"))).unwrap();
            if i % 7 == 0 {
                std::thread::yield_now();
            }
        }
        waiter.join().unwrap();
    });
    // One already written fires at once; one not yet written does not fire.
    assert!(engine.wait_for_seq(&k, 3).unwrap().is_ready());
    let later = engine.wait_for_seq(&k, n).unwrap();
    assert!(
        !later.wait_timeout(Duration::from_millis(30)),
        "no version at seq {n} yet"
    );
    // Many waiters on one seq all fire on the one put that reaches it.
    let many: Vec<_> = (0..20)
        .map(|_| engine.wait_for_seq(&k, n + 2).unwrap())
        .collect();
    engine.put(Put::new(k.clone(), "three").count(3)).unwrap();
    assert!(later.wait_timeout(Duration::from_secs(5)));
    for w in &many {
        assert!(
            w.wait_timeout(Duration::from_secs(5)),
            "a put of count 3 covers seq {}",
            n + 2
        );
    }
}

#[test]
fn a_seq_waiter_on_a_persistent_pool_wakes_once_the_write_is_durable() {
    let (engine, _dir) = engine_with_dir();
    engine
        .create_pool(PoolConfig::new("/wp", Storage::Persistent))
        .unwrap();
    let k = key("/wp/k");
    for seq in 0..100 {
        let w = engine.wait_for_seq(&k, seq).unwrap();
        let writer = {
            let (engine, k) = (engine.clone(), k.clone());
            std::thread::spawn(move || engine.put(Put::new(k, "v")).unwrap())
        };
        assert!(w.wait_timeout(Duration::from_secs(10)), "seq {seq}");
        assert!(
            engine.get(&k, Get::Seq(seq)).unwrap().is_some(),
            "visible when the waiter fires"
        );
        writer.join().unwrap();
    }
}

#[test]
fn a_prefix_waiter_fires_on_a_write_under_its_prefix_only() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/w", Storage::Volatile))
        .unwrap();
    let w = engine.wait_for_prefix(&Prefix::new("/w/a").unwrap());
    engine
        .put(Put::new(key("/w/ab"), "not under /w/a"))
        .unwrap();
    engine.put(Put::new(key("/w/b/x"), "elsewhere")).unwrap();
    assert!(
        !w.wait_timeout(Duration::from_millis(30)),
        "writes elsewhere do not fire it"
    );
    let writer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            engine.put(Put::new(key("/w/a/deep/x"), "here")).unwrap();
        })
    };
    assert!(w.wait_timeout(Duration::from_secs(10)));
    writer.join().unwrap();
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls `fut` on this thread, parking between polls.
fn block_on<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let deadline = Instant::now() + timeout;
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[test]
fn a_waiter_can_be_awaited() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/w", Storage::Volatile))
        .unwrap();
    let k = key("/w/async");
    for seq in 0..50 {
        let w = engine.wait_for_seq(&k, seq).unwrap();
        let writer = {
            let (engine, k) = (engine.clone(), k.clone());
            std::thread::spawn(move || engine.put(Put::new(k, "v")).unwrap())
        };
        assert!(
            block_on(w, Duration::from_secs(10)).is_some(),
            "awaiting seq {seq}"
        );
        writer.join().unwrap();
    }
    let never = engine.wait_for_seq(&k, 1000).unwrap();
    assert!(block_on(never, Duration::from_millis(20)).is_none());
}

// ----- failing lambdas -----

#[test]
fn failing_and_panicking_lambdas_are_counted_and_isolated() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/l", Storage::Volatile))
        .unwrap();
    let good = Arc::new(AtomicU64::new(0));
    let g = good.clone();
    engine
        .bind_local(
            "good",
            "/l",
            Arc::new(move |_: &LambdaContext<'_>, _: &Arc<ObjectVersion>| {
                g.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        )
        .unwrap();
    engine
        .bind_local(
            "erring",
            "/l",
            Arc::new(|_: &LambdaContext<'_>, obj: &Arc<ObjectVersion>| {
                if obj.seq.is_multiple_of(2) {
                    Err(LambdaError(format!("refusing seq {}", obj.seq)))
                } else {
                    Ok(())
                }
            }),
        )
        .unwrap();
    engine
        .bind_local(
            "panicking",
            "/l",
            Arc::new(
                |_: &LambdaContext<'_>, obj: &Arc<ObjectVersion>| -> Result<(), LambdaError> {
                    panic!("lambda blew up on seq {}", obj.seq)
                },
            ),
        )
        .unwrap();
    let k = key("/l/k");
    for i in 0..50 {
        engine.put(Put::new(k.clone(), format!("{i}"))).unwrap();
    }
    let stats_of = |name: &str| {
        engine
            .lambda_stats()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    };
    eventually(20, "every lambda ran 50 times", || {
        ["good", "erring", "panicking"]
            .iter()
            .all(|n| stats_of(n).calls == 50)
    });
    assert_eq!(
        good.load(Ordering::SeqCst),
        50,
        "the good lambda saw everything"
    );
    assert_eq!(stats_of("good").errors, 0);
    assert_eq!(stats_of("erring").errors, 25, "errors are counted");
    assert_eq!(stats_of("panicking").errors, 50, "panics are counted");
    // The engine and its workers keep going.
    for i in 50..60 {
        engine.put(Put::new(k.clone(), format!("{i}"))).unwrap();
    }
    eventually(20, "the workers survived the panics", || {
        good.load(Ordering::SeqCst) == 60
    });
    assert_eq!(
        engine.get(&k, Get::Latest).unwrap().unwrap().value,
        Bytes::from("59")
    );
    assert!(engine.unbind("panicking").unwrap());
    assert!(!engine.unbind("panicking").unwrap());
}

// ----- pipelines -----

#[test]
fn a_three_stage_pipeline_delivers_every_record_to_the_last_stage_in_order() {
    let (engine, _dir) = engine_with_dir();
    engine
        .create_pool(PoolConfig::new("/farm/frames", Storage::Volatile))
        .unwrap();
    engine
        .create_pool(PoolConfig::new("/farm/filtered", Storage::Persistent))
        .unwrap();
    engine
        .create_pool(PoolConfig::new("/farm/scored", Storage::Trigger))
        .unwrap();
    engine
        .create_pool(PoolConfig::new("/farm/stored", Storage::Persistent))
        .unwrap();
    let spec = PipelineSpec::parse(
        r#"
        name = "farm"
        [[vertex]]
        name = "filter"
        prefix = "/farm/frames"
        kind = "forward"
        destinations = [{ prefix = "/farm/filtered", mode = "put" }]
        [[vertex]]
        name = "score"
        prefix = "/farm/filtered"
        kind = "forward"
        destinations = [{ prefix = "/farm/scored", mode = "trigger" }]
        [[vertex]]
        name = "store"
        prefix = "/farm/scored"
        kind = "forward"
        destinations = [{ prefix = "/farm/stored", mode = "put" }]
        "#,
    )
    .unwrap();
    engine.load_pipeline(spec).unwrap();
    let cameras = 4;
    let frames = 60u64;
    std::thread::scope(|s| {
        for c in 0..cameras {
            let engine = &engine;
            s.spawn(move || {
                let k = key(&format!("/farm/frames/cam{c}/feed"));
                for f in 0..frames {
                    engine
                        .put(Put::new(k.clone(), format!("cam{c}-frame{f}")))
                        .unwrap();
                }
            });
        }
    });
    for c in 0..cameras {
        let out = key(&format!("/farm/stored/cam{c}/feed"));
        let w = engine.wait_for_seq(&out, frames - 1).unwrap();
        assert!(
            w.wait_timeout(Duration::from_secs(20)),
            "cam{c}: every frame reached the last stage"
        );
        let stored = engine
            .range(
                &out,
                0,
                RangeLimit {
                    max_bytes: usize::MAX,
                    max_versions: usize::MAX,
                },
            )
            .unwrap();
        let values: Vec<String> = stored
            .iter()
            .map(|v| String::from_utf8(v.value.to_vec()).unwrap())
            .collect();
        let expect: Vec<String> = (0..frames).map(|f| format!("cam{c}-frame{f}")).collect();
        assert_eq!(values, expect, "cam{c}: in order, once each");
        let scored = engine
            .bounds(&key(&format!("/farm/scored/cam{c}/feed")))
            .unwrap();
        assert_eq!(
            scored.next_seq, frames,
            "the trigger stage was ordered like puts"
        );
        assert_eq!(scored.latest_version, 0, "and stored nothing");
    }
    let stats: BTreeSet<String> = engine
        .lambda_stats()
        .into_iter()
        .filter(|s| s.errors == 0)
        .map(|s| s.name)
        .collect();
    assert_eq!(
        stats.len(),
        3,
        "no stage failed: {:?}",
        engine.lambda_stats()
    );
}
