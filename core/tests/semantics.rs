//! Edge semantics found in review: what a trigger wakes, how an atomic batch's
//! idempotence tokens are checked, how many busy-polling workers an engine runs,
//! and how a data dir lock held for a moment is waited for.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kascade_core::{
    Ack, Engine, EngineConfig, Error, IdempotenceToken, Key, LambdaContext, ObjectVersion,
    PoolConfig, Prefix, Put, RangeLimit, Storage, WaitPolicy,
};

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

fn token(writer: u64, epoch: u32, sequence: i64) -> IdempotenceToken {
    IdempotenceToken {
        writer,
        epoch,
        sequence,
    }
}

fn all() -> RangeLimit {
    RangeLimit {
        max_bytes: usize::MAX,
        max_versions: usize::MAX,
    }
}

/// Polls `done` until it holds or `secs` pass.
fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Binds a lambda at `prefix` counting its upcalls.
fn count_upcalls(engine: &Engine, name: &str, prefix: &str) -> Arc<AtomicU64> {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    engine
        .bind_local(
            name,
            prefix,
            Arc::new(move |_: &LambdaContext<'_>, _: &Arc<ObjectVersion>| {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        )
        .unwrap();
    calls
}

// ----- triggers and waiters -----

#[test]
fn a_trigger_into_a_storing_pool_upcalls_but_wakes_no_waiter() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/v", Storage::Volatile))
        .unwrap();
    let k = key("/v/k");
    engine.put(Put::new(k.clone(), "stored")).unwrap();
    let calls = count_upcalls(&engine, "watch", "/v");
    let by_seq = engine.wait_for_seq(&k, 1).unwrap();
    let by_prefix = engine.wait_for_prefix(&Prefix::new("/v").unwrap());
    engine.trigger(&k, "not stored").unwrap();
    eventually(10, "the trigger was upcalled", || {
        calls.load(Ordering::SeqCst) == 1
    });
    assert!(
        !by_seq.wait_timeout(Duration::from_millis(30)),
        "no version at seq 1 exists, so its waiter sleeps"
    );
    assert!(
        !by_prefix.is_ready(),
        "a trigger is no version: prefix waiters sleep"
    );
    assert_eq!(engine.bounds(&k).unwrap().next_seq, 1, "seq did not move");
    engine.put(Put::new(k.clone(), "stored too")).unwrap();
    assert!(by_seq.wait_timeout(Duration::from_secs(5)));
    assert!(by_prefix.wait_timeout(Duration::from_secs(5)));
}

#[test]
fn in_a_trigger_pool_every_ordered_update_advances_seq_and_wakes_its_waiters() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/t", Storage::Trigger))
        .unwrap();
    let k = key("/t/k");
    let first = engine.wait_for_seq(&k, 0).unwrap();
    let second = engine.wait_for_seq(&k, 1).unwrap();
    assert_eq!(engine.trigger(&k, "a").unwrap().seq, 0);
    assert!(first.wait_timeout(Duration::from_secs(5)));
    assert!(!second.is_ready());
    assert_eq!(engine.put(Put::new(k.clone(), "b")).unwrap().seq, 1);
    assert!(second.wait_timeout(Duration::from_secs(5)));
    assert_eq!(engine.bounds(&k).unwrap().next_seq, 2);
    assert!(
        engine.range(&k, 0, all()).unwrap().is_empty(),
        "nothing stored"
    );
}

// ----- idempotence within one atomic batch -----

#[test]
fn tokens_in_one_batch_are_checked_in_order() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/b", Storage::Volatile))
        .unwrap();
    let k = key("/b/k");
    engine
        .put(Put::new(k.clone(), "zero").token(token(3, 0, 0)))
        .unwrap();
    let batch = vec![
        Put::new(k.clone(), "one").token(token(3, 0, 1)),
        Put::new(k.clone(), "two three")
            .count(2)
            .token(token(3, 0, 2)),
    ];
    let results = engine.put_many(batch.clone(), Ack::Durable).unwrap();
    assert_eq!(
        results.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2],
        "the second token follows the first, in the same batch"
    );
    assert_eq!(engine.writers_of(&k).unwrap(), vec![(3, 0, 4)]);
    assert_eq!(
        engine.put_many(batch, Ack::Durable).unwrap(),
        results,
        "a retried batch is answered from the dedup window, both puts"
    );
    assert_eq!(engine.bounds(&k).unwrap().next_seq, 4);
}

#[test]
fn a_token_repeated_in_one_batch_is_written_once() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/b", Storage::Volatile))
        .unwrap();
    let k = key("/b/k");
    let results = engine
        .put_many(
            vec![
                Put::new(k.clone(), "once").token(token(4, 0, 0)),
                Put::new(k.clone(), "once").token(token(4, 0, 0)),
            ],
            Ack::Durable,
        )
        .unwrap();
    assert_eq!(
        results[0], results[1],
        "the repeat is a duplicate of the first"
    );
    assert_eq!(engine.range(&k, 0, all()).unwrap().len(), 1);
    assert_eq!(engine.bounds(&k).unwrap().next_seq, 1);
}

#[test]
fn a_gap_inside_a_batch_refuses_the_whole_batch() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/b", Storage::Volatile))
        .unwrap();
    let k = key("/b/k");
    let err = engine
        .put_many(
            vec![
                Put::new(k.clone(), "zero").token(token(5, 0, 0)),
                Put::new(k.clone(), "two").token(token(5, 0, 2)),
            ],
            Ack::Durable,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::OutOfOrderSequence { expected: 1, .. }),
        "{err}"
    );
    assert_eq!(engine.bounds(&k).unwrap().next_seq, 0, "nothing written");
    assert!(
        engine.writers_of(&k).unwrap().is_empty(),
        "nothing recorded"
    );
}

// ----- busy polling -----

#[test]
fn busy_polling_workers_leave_a_cpu_to_the_writers() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engine = Engine::open(EngineConfig {
        upcall_workers: cpus + 4,
        upcall_wait: WaitPolicy::BusyPoll,
        ..EngineConfig::default()
    })
    .unwrap();
    assert_eq!(engine.upcall_workers(), cpus.saturating_sub(1).max(1));
    engine
        .create_pool(PoolConfig::new("/bp", Storage::Volatile))
        .unwrap();
    let calls = count_upcalls(&engine, "busy", "/bp");
    for i in 0..1000 {
        engine
            .put(Put::new(key(&format!("/bp/k{}", i % 10)), "x"))
            .unwrap();
    }
    eventually(20, "every upcall ran", || {
        calls.load(Ordering::SeqCst) == 1000
    });
    engine.shutdown();

    let spinning = Engine::open(EngineConfig {
        upcall_workers: cpus + 4,
        ..EngineConfig::default()
    })
    .unwrap();
    assert_eq!(
        spinning.upcall_workers(),
        cpus + 4,
        "only busy polling is capped"
    );
}

// ----- the data dir lock -----

#[test]
fn opening_waits_a_moment_for_a_lock_held_briefly() {
    let dir = tempfile::tempdir().unwrap();
    // Another open file description holding the lock for a moment, as a child
    // process forked by another thread does until it execs.
    let holder = File::create(dir.path().join("LOCK")).unwrap();
    holder.lock().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(holder);
    });
    let engine = Engine::open(EngineConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    })
    .expect("the lock was released within the retry time");
    release.join().unwrap();
    engine.shutdown();
}

#[test]
fn a_lock_held_for_good_is_reported_after_a_bounded_wait() {
    let dir = tempfile::tempdir().unwrap();
    let holder = File::create(dir.path().join("LOCK")).unwrap();
    holder.lock().unwrap();
    let start = Instant::now();
    let err = Engine::open(EngineConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    })
    .err()
    .expect("refused while the lock is held");
    let waited = start.elapsed();
    assert!(
        err.to_string().contains("another kascade"),
        "the error says why: {err}"
    );
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "bounded retry, waited {waited:?}"
    );
}
