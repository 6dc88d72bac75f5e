//! What the engine remembers across a restart (idempotence, pools, bindings,
//! pipelines, retention, segments), affinity placement, and the typed errors a
//! user gets for bad input. Every test closes the engine (dropping every handle,
//! which releases the data dir lock) and opens the same data dir again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kascade_core::{
    Ack, BindingSpec, Destination, EmitMode, Engine, EngineConfig, Error, Get, IdempotenceToken,
    Key, Lambda, LambdaContext, LambdaError, ObjectVersion, PipelineSpec, PoolConfig, Prefix, Put,
    RangeLimit, Retention, Storage, UpcallOrdering, Vertex, WriteResult,
};

fn config(dir: &Path) -> EngineConfig {
    EngineConfig {
        data_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    }
}

fn open(dir: &Path) -> Engine {
    Engine::open(config(dir)).expect("open the engine")
}

fn close(engine: Engine) {
    engine.shutdown();
    drop(engine);
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

fn all() -> RangeLimit {
    RangeLimit {
        max_bytes: usize::MAX,
        max_versions: usize::MAX,
    }
}

fn token(writer: u64, epoch: u32, sequence: i64) -> IdempotenceToken {
    IdempotenceToken {
        writer,
        epoch,
        sequence,
    }
}

fn persistent(prefix: &str) -> PoolConfig {
    PoolConfig::new(prefix, Storage::Persistent)
}

// ----- idempotence -----

#[test]
fn a_retried_put_is_not_written_twice_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine.create_pool(persistent("/idem")).unwrap();
    let k = key("/idem/k");
    let first = engine
        .put(Put::new(k.clone(), "a").token(token(7, 0, 0)))
        .unwrap();
    let again = engine
        .put(Put::new(k.clone(), "a").token(token(7, 0, 0)))
        .unwrap();
    assert_eq!(again, first, "a retry answers with the original result");
    let second = engine
        .put(Put::new(k.clone(), "bcd").count(3).token(token(7, 0, 1)))
        .unwrap();
    assert_eq!(second.seq, 1);
    assert_eq!(
        engine
            .put(Put::new(k.clone(), "a").token(token(7, 0, 0)))
            .unwrap(),
        first,
        "an older retry in the window"
    );
    assert_eq!(
        engine.bounds(&k).unwrap().next_seq,
        4,
        "nothing was written twice"
    );
    close(engine);

    let engine = open(dir.path());
    assert_eq!(
        engine
            .put(Put::new(k.clone(), "bcd").count(3).token(token(7, 0, 1)))
            .unwrap(),
        second
    );
    assert_eq!(
        engine
            .put(Put::new(k.clone(), "a").token(token(7, 0, 0)))
            .unwrap(),
        first
    );
    let history = engine.range(&k, 0, all()).unwrap();
    assert_eq!(
        history.len(),
        2,
        "still two versions after retries across a restart"
    );
    assert_eq!(
        engine.writers_of(&k).unwrap(),
        vec![(7, 0, 4)],
        "the dedup state was recovered from the log"
    );
    let third = engine
        .put(Put::new(k.clone(), "e").token(token(7, 0, 4)))
        .unwrap();
    assert_eq!(
        (third.seq, engine.bounds(&k).unwrap().next_seq),
        (4, 5),
        "the next sequence is fresh"
    );
    close(engine);
}

#[test]
fn a_sequence_gap_is_refused_as_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine.create_pool(persistent("/idem")).unwrap();
    let k = key("/idem/k");
    engine
        .put(Put::new(k.clone(), "ab").count(2).token(token(1, 3, 0)))
        .unwrap();
    let err = engine
        .put(Put::new(k.clone(), "x").token(token(1, 3, 5)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfOrderSequence {
                writer: 1,
                got: 5,
                expected: 2
            }
        ),
        "a gap: {err:?}"
    );
    assert_eq!(
        engine.bounds(&k).unwrap().next_seq,
        2,
        "the refused write was not stored"
    );
    close(engine);
    let engine = open(dir.path());
    let err = engine
        .put(Put::new(k.clone(), "x").token(token(1, 3, 3)))
        .unwrap_err();
    assert!(
        matches!(err, Error::OutOfOrderSequence { expected: 2, .. }),
        "after restart: {err:?}"
    );
    let err = engine
        .put(Put::new(k.clone(), "x").token(token(1, 4, 1)))
        .unwrap_err();
    assert!(
        matches!(err, Error::OutOfOrderSequence { expected: 0, .. }),
        "a new epoch starts at 0: {err:?}"
    );
    close(engine);
}

#[test]
fn an_older_epoch_is_fenced_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine.create_pool(persistent("/idem")).unwrap();
    let k = key("/idem/k");
    engine
        .put(Put::new(k.clone(), "old").token(token(9, 1, 0)))
        .unwrap();
    engine
        .put(Put::new(k.clone(), "new").token(token(9, 2, 0)))
        .unwrap();
    let err = engine
        .put(Put::new(k.clone(), "zombie").token(token(9, 1, 1)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::FencedEpoch {
                writer: 9,
                epoch: 1,
                current: 2
            }
        ),
        "{err:?}"
    );
    close(engine);
    let engine = open(dir.path());
    let err = engine
        .put(Put::new(k.clone(), "zombie").token(token(9, 1, 1)))
        .unwrap_err();
    assert!(
        matches!(err, Error::FencedEpoch { current: 2, .. }),
        "after restart: {err:?}"
    );
    assert_eq!(
        &engine.get(&k, Get::Latest).unwrap().unwrap().value[..],
        b"new"
    );
    close(engine);
}

#[test]
fn a_retry_older_than_the_dedup_window_is_refused_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine.create_pool(persistent("/idem")).unwrap();
    let k = key("/idem/k");
    for s in 0..8 {
        engine
            .put(Put::new(k.clone(), "v").token(token(2, 0, s)))
            .unwrap();
    }
    let err = engine
        .put(Put::new(k.clone(), "v").token(token(2, 0, 0)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DuplicateOutsideWindow {
                writer: 2,
                sequence: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(engine.bounds(&k).unwrap().next_seq, 8);
    close(engine);
}

// ----- pools -----

#[test]
fn pools_survive_a_restart_as_created_altered_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine.create_pool(persistent("/a").shards(2)).unwrap();
    engine
        .create_pool(PoolConfig::new("/b", Storage::Volatile))
        .unwrap();
    engine.create_pool(persistent("/c")).unwrap();
    engine
        .create_pool(PoolConfig::new("/a/trig/", Storage::Trigger))
        .unwrap();
    let altered = PoolConfig {
        max_value_bytes: 10,
        ..persistent("/a")
            .shards(2)
            .ordering(UpcallOrdering::Concurrent)
            .retention(Retention {
                max_versions: Some(3),
                ..Retention::default()
            })
    };
    engine.alter_pool(altered.clone()).unwrap();
    engine.put(Put::new(key("/a/x"), "kept")).unwrap();
    engine.put(Put::new(key("/b/x"), "lost")).unwrap();
    engine.put(Put::new(key("/c/x"), "gone")).unwrap();
    let c_dir = dir.path().join("pools").join("%2Fc");
    assert!(c_dir.exists());
    engine.remove_pool("/c").unwrap();
    assert!(!c_dir.exists(), "a removed pool's files are deleted");
    assert!(matches!(
        engine.put(Put::new(key("/c/x"), "v")),
        Err(Error::NoPool(_))
    ));
    let before = engine.pools();
    close(engine);

    let engine = open(dir.path());
    assert_eq!(
        engine.pools(),
        before,
        "the same pools, with the altered config"
    );
    let prefixes: Vec<String> = engine.pools().into_iter().map(|p| p.prefix).collect();
    assert_eq!(prefixes, ["/a", "/a/trig", "/b", "/kascade"]);
    assert_eq!(engine.pool_of(&key("/a/x")).unwrap(), altered);
    assert_eq!(
        engine.pool_of(&key("/a/trig/t")).unwrap().storage,
        Storage::Trigger,
        "the longest prefix wins"
    );
    assert_eq!(
        &engine
            .get(&key("/a/x"), Get::Latest)
            .unwrap()
            .unwrap()
            .value[..],
        b"kept"
    );
    assert_eq!(
        engine.get(&key("/b/x"), Get::Latest).unwrap(),
        None,
        "a volatile pool comes back empty"
    );
    assert!(matches!(
        engine.put(Put::new(key("/a/x"), "more than ten bytes")),
        Err(Error::ValueTooLarge { limit: 10, .. })
    ));
    assert!(
        matches!(
            engine.put(Put::new(key("/c/x"), "v")),
            Err(Error::NoPool(_))
        ),
        "a removed pool stays removed"
    );
    engine.create_pool(persistent("/c")).unwrap();
    assert_eq!(
        engine.bounds(&key("/c/x")).unwrap().next_seq,
        0,
        "a recreated pool starts empty"
    );
    close(engine);
}

// ----- lambdas and pipelines -----

/// A kind whose lambdas emit the input with a prefix taken from their config.
fn tag_kind(config: &serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError> {
    let tag = config
        .get("tag")
        .and_then(|t| t.as_str())
        .ok_or_else(|| LambdaError("the tag kind needs a \"tag\"".into()))?
        .to_string();
    Ok(Arc::new(
        move |ctx: &LambdaContext<'_>, obj: &Arc<ObjectVersion>| {
            let mut v = tag.clone().into_bytes();
            v.extend_from_slice(&obj.value);
            ctx.emit(obj, Bytes::from(v)).map(|_| ())
        },
    ))
}

fn open_with_tag(dir: &Path) -> Engine {
    Engine::builder(config(dir))
        .lambda_kind("tag", tag_kind)
        .open()
        .unwrap()
}

fn dest(prefix: &str, mode: EmitMode) -> Destination {
    Destination {
        prefix: prefix.into(),
        mode,
    }
}

/// Puts `value` at `from` and returns the value that shows up at `to` (seq `seq`).
fn flows(engine: &Engine, from: &str, to: &str, seq: u64, value: &str) -> Option<Bytes> {
    let w = engine.wait_for_seq(&key(to), seq).unwrap();
    engine.put(Put::new(key(from), value.to_string())).unwrap();
    if !w.wait_timeout(Duration::from_secs(10)) {
        return None;
    }
    engine
        .get(&key(to), Get::Seq(seq))
        .unwrap()
        .map(|v| v.value.clone())
}

fn active(engine: &Engine) -> Vec<String> {
    let mut names: Vec<String> = engine.lambda_stats().into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[test]
fn stored_bindings_and_pipelines_are_active_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with_tag(dir.path());
    for p in ["/src", "/dst", "/tagged", "/p"] {
        engine.create_pool(persistent(p)).unwrap();
    }
    engine
        .create_pool(PoolConfig::new("/p/mid", Storage::Volatile))
        .unwrap();
    engine
        .bind(BindingSpec {
            name: "copy".into(),
            prefix: "/src/plain".into(),
            kind: "forward".into(),
            config: serde_json::Value::Null,
            destinations: vec![dest("/dst", EmitMode::Put)],
        })
        .unwrap();
    engine
        .bind(BindingSpec {
            name: "tagger".into(),
            prefix: "/src/tag".into(),
            kind: "tag".into(),
            config: serde_json::json!({ "tag": "t:" }),
            destinations: vec![dest("/tagged", EmitMode::Put)],
        })
        .unwrap();
    let pipeline = PipelineSpec::parse(
        r#"
        name = "pipe"
        [[vertex]]
        name = "first"
        prefix = "/p/in"
        kind = "forward"
        destinations = [{ prefix = "/p/mid", mode = "trigger" }]
        [[vertex]]
        name = "second"
        prefix = "/p/mid"
        kind = "tag"
        config = { tag = "p:" }
        destinations = [{ prefix = "/p/out", mode = "put" }]
        "#,
    )
    .unwrap();
    engine.load_pipeline(pipeline.clone()).unwrap();
    assert_eq!(
        flows(&engine, "/src/plain/k", "/dst/k", 0, "one").as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        flows(&engine, "/src/tag/k", "/tagged/k", 0, "one").as_deref(),
        Some(&b"t:one"[..])
    );
    assert_eq!(
        flows(&engine, "/p/in/k", "/p/out/k", 0, "one").as_deref(),
        Some(&b"p:one"[..])
    );
    let specs = engine.binding_specs();
    close(engine);

    // Reopened with every kind registered: everything runs again.
    let engine = open_with_tag(dir.path());
    assert_eq!(engine.binding_specs(), specs);
    assert_eq!(engine.pipelines(), vec![pipeline.clone()]);
    assert_eq!(
        active(&engine),
        ["copy", "pipe.first", "pipe.second", "tagger"]
    );
    assert_eq!(
        flows(&engine, "/src/plain/k", "/dst/k", 1, "two").as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        flows(&engine, "/src/tag/k", "/tagged/k", 1, "two").as_deref(),
        Some(&b"t:two"[..])
    );
    assert_eq!(
        flows(&engine, "/p/in/k", "/p/out/k", 1, "two").as_deref(),
        Some(&b"p:two"[..])
    );
    close(engine);

    // Reopened without the "tag" kind: its bindings are kept but not active.
    let engine = open(dir.path());
    assert_eq!(
        engine.binding_specs(),
        specs,
        "a binding whose kind is missing is still stored"
    );
    assert_eq!(active(&engine), ["copy", "pipe.first"]);
    assert!(matches!(
        engine.bind(BindingSpec {
            name: "nope".into(),
            prefix: "/src".into(),
            kind: "no-such-kind".into(),
            config: serde_json::Value::Null,
            destinations: vec![],
        }),
        Err(Error::Lambda(_))
    ));
    close(engine);

    // And with it again, active again; then unbound and removed for good.
    let engine = open_with_tag(dir.path());
    assert_eq!(
        active(&engine),
        ["copy", "pipe.first", "pipe.second", "tagger"]
    );
    assert!(engine.unbind("copy").unwrap());
    assert!(engine.remove_pipeline("pipe").unwrap());
    close(engine);
    let engine = open_with_tag(dir.path());
    assert_eq!(active(&engine), ["tagger"]);
    assert_eq!(engine.binding_specs().len(), 1);
    assert!(engine.pipelines().is_empty());
    engine.put(Put::new(key("/src/plain/k"), "three")).unwrap();
    assert_eq!(
        flows(&engine, "/src/tag/k", "/tagged/k", 2, "three").as_deref(),
        Some(&b"t:three"[..])
    );
    assert_eq!(
        engine.bounds(&key("/dst/k")).unwrap().next_seq,
        2,
        "the unbound lambda no longer runs"
    );
    close(engine);
}

#[test]
fn a_bad_pipeline_is_refused_whole() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    let spec = PipelineSpec {
        name: "half".into(),
        vertices: vec![
            Vertex {
                name: "ok".into(),
                prefix: "/x".into(),
                kind: "forward".into(),
                config: serde_json::Value::Null,
                destinations: vec![],
            },
            Vertex {
                name: "bad".into(),
                prefix: "/y".into(),
                kind: "missing".into(),
                config: serde_json::Value::Null,
                destinations: vec![],
            },
        ],
    };
    assert!(matches!(
        engine.load_pipeline(spec),
        Err(Error::Pipeline(_))
    ));
    assert!(
        engine.lambda_stats().is_empty(),
        "no vertex of a refused pipeline stays bound"
    );
    assert!(engine.pipelines().is_empty());
}

// ----- retention and segments -----

fn shard_segments(dir: &Path, encoded: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("pools").join(encoded)).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn retention_by_versions_and_bytes_keeps_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let by_versions = Retention {
        max_versions: Some(3),
        ..Retention::default()
    };
    let by_bytes = Retention {
        max_bytes: Some(1000),
        ..Retention::default()
    };
    engine
        .create_pool(persistent("/rv").retention(by_versions))
        .unwrap();
    engine
        .create_pool(PoolConfig::new("/vv", Storage::Volatile).retention(by_versions))
        .unwrap();
    engine
        .create_pool(persistent("/rb").retention(by_bytes))
        .unwrap();
    for k in ["/rv/k", "/vv/k"] {
        for i in 0..10u8 {
            engine.put(Put::new(key(k), vec![i; 10])).unwrap();
        }
        let info = engine.bounds(&key(k)).unwrap();
        assert_eq!(
            (info.start_seq, info.next_seq),
            (7, 10),
            "{k}: three versions kept"
        );
        assert_eq!(
            engine.get(&key(k), Get::Seq(6)).unwrap(),
            None,
            "{k}: older versions are gone"
        );
        assert!(matches!(
            engine.range(&key(k), 6, all()),
            Err(Error::SeqOutOfRange { start: 7, .. })
        ));
        let seqs: Vec<u64> = engine
            .range(&key(k), 7, all())
            .unwrap()
            .iter()
            .map(|v| v.seq)
            .collect();
        assert_eq!(seqs, [7, 8, 9]);
    }
    // Each version accounts for its value, its key and 48 bytes: 300 + 5 + 48 = 353.
    let k = key("/rb/k");
    for i in 0..5u8 {
        engine.put(Put::new(k.clone(), vec![i; 300])).unwrap();
    }
    assert_eq!(
        engine
            .range(&k, engine.bounds(&k).unwrap().start_seq, all())
            .unwrap()
            .len(),
        2,
        "two fit in 1000 bytes"
    );
    engine.put(Put::new(k.clone(), vec![9u8; 5000])).unwrap();
    let kept = engine
        .range(&k, engine.bounds(&k).unwrap().start_seq, all())
        .unwrap();
    assert_eq!(
        kept.len(),
        1,
        "a version over the limit alone is still kept"
    );
    assert_eq!(kept[0].value.len(), 5000);
    close(engine);

    let engine = open(dir.path());
    let info = engine.bounds(&key("/rv/k")).unwrap();
    assert_eq!(
        (info.start_seq, info.next_seq),
        (7, 10),
        "the same history after a restart"
    );
    assert_eq!(
        engine.bounds(&key("/vv/k")).unwrap().next_seq,
        0,
        "volatile history is gone"
    );
    let kept = engine
        .range(&k, engine.bounds(&k).unwrap().start_seq, all())
        .unwrap();
    assert_eq!((kept.len(), kept[0].seq), (1, 5));
    close(engine);
}

#[test]
fn segments_roll_and_are_deleted_once_retention_drops_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let pool = PoolConfig {
        segment_bytes: 4096,
        ..persistent("/seg").shards(1).retention(Retention {
            max_versions: Some(2),
            ..Retention::default()
        })
    };
    engine.create_pool(pool).unwrap();
    let keys = ["/seg/a", "/seg/b", "/seg/c"];
    let mut written = 0u64;
    let mut most_segments = 0;
    for round in 0..100u64 {
        for k in keys {
            engine
                .put(Put::new(key(k), vec![round as u8; 300]))
                .unwrap();
            written += 1;
        }
        most_segments = most_segments.max(shard_segments(dir.path(), "%2Fseg").len());
    }
    let segs = shard_segments(dir.path(), "%2Fseg");
    assert!(written * 300 / 4096 > 20, "enough bytes for many segments");
    assert!(most_segments >= 2, "the log rolled");
    assert!(segs.len() <= 4, "old segments were deleted: {segs:?}");
    assert!(
        !segs[0].ends_with("00000000000000000001.log"),
        "the first segment is gone"
    );
    close(engine);

    let engine = open(dir.path());
    for k in keys {
        let info = engine.bounds(&key(k)).unwrap();
        assert_eq!(
            (info.start_seq, info.next_seq),
            (98, 100),
            "{k}: bounds after a restart"
        );
        assert!(
            matches!(
                engine.range(&key(k), 0, all()),
                Err(Error::SeqOutOfRange { start: 98, .. })
            ),
            "{k}"
        );
        let kept: Vec<(u64, u8)> = engine
            .range(&key(k), 98, all())
            .unwrap()
            .iter()
            .map(|v| (v.seq, v.value[0]))
            .collect();
        assert_eq!(
            kept,
            [(98, 98), (99, 99)],
            "{k}: the newest versions, intact"
        );
        assert_eq!(
            engine.put(Put::new(key(k), "next")).unwrap().seq,
            100,
            "{k}: seqs continue where they were"
        );
    }
    close(engine);
}

#[test]
fn a_trimmed_key_keeps_its_log_end_after_its_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let pool = PoolConfig {
        segment_bytes: 4096,
        ..persistent("/tr").shards(1).retention(Retention {
            max_versions: Some(1),
            ..Retention::default()
        })
    };
    engine.create_pool(pool).unwrap();
    let a = key("/tr/a");
    let b = key("/tr/b");
    for _ in 0..5 {
        engine.put(Put::new(a.clone(), "a")).unwrap();
    }
    for _ in 0..40 {
        engine.put(Put::new(b.clone(), vec![1u8; 300])).unwrap();
    }
    assert_eq!(engine.trim(&a, 5).unwrap(), 5, "trim all of a");
    for _ in 0..40 {
        engine.put(Put::new(b.clone(), vec![2u8; 300])).unwrap();
    }
    let segs = shard_segments(dir.path(), "%2Ftr");
    assert!(
        !segs[0].ends_with("00000000000000000001.log"),
        "a's puts were in a deleted segment: {segs:?}"
    );
    close(engine);

    let engine = open(dir.path());
    let info = engine.bounds(&a).unwrap();
    assert_eq!(
        (info.start_seq, info.next_seq),
        (5, 5),
        "a's log start and end survive"
    );
    assert_eq!(
        engine.put(Put::new(a.clone(), "again")).unwrap().seq,
        5,
        "a's seq does not go back"
    );
    close(engine);
}

#[test]
fn a_key_keeps_its_log_start_after_its_older_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let pool = PoolConfig {
        segment_bytes: 4096,
        ..persistent("/ls").shards(1).retention(Retention {
            max_versions: Some(1),
            ..Retention::default()
        })
    };
    engine.create_pool(pool).unwrap();
    let a = key("/ls/a");
    let b = key("/ls/b");
    // Write a until its newest version opens a fresh segment, so none of its
    // older versions share a segment with it.
    let mut a_next = 0;
    while shard_segments(dir.path(), "%2Fls").len() < 2 {
        a_next = engine.put(Put::new(a.clone(), vec![7u8; 300])).unwrap().seq + 1;
    }
    for _ in 0..40 {
        engine.put(Put::new(b.clone(), vec![1u8; 300])).unwrap();
    }
    let segs = shard_segments(dir.path(), "%2Fls");
    assert!(
        !segs[0].ends_with("00000000000000000001.log"),
        "a's older versions were deleted: {segs:?}"
    );
    let before = engine.bounds(&a).unwrap();
    assert_eq!((before.start_seq, before.next_seq), (a_next - 1, a_next));
    close(engine);

    let engine = open(dir.path());
    assert_eq!(
        engine.bounds(&a).unwrap(),
        before,
        "a's log start survives a restart"
    );
    assert!(
        matches!(engine.range(&a, 0, all()), Err(Error::SeqOutOfRange { .. })),
        "reading below the log start is refused after a restart too"
    );
    close(engine);
}

#[test]
fn segments_rolled_by_trims_do_not_take_live_records_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let pool = PoolConfig {
        segment_bytes: 4096,
        ..persistent("/rt").shards(1).retention(Retention {
            max_versions: Some(1),
            ..Retention::default()
        })
    };
    engine.create_pool(pool).unwrap();
    let keys: Vec<Key> = (0..400).map(|i| key(&format!("/rt/key{i:04}"))).collect();
    for k in &keys {
        engine.put(Put::new(k.clone(), "first")).unwrap();
    }
    // Several segments' worth of trims with no put in between: every roll happens on a trim.
    for k in &keys {
        assert_eq!(engine.trim(k, 1).unwrap(), 1);
    }
    for k in &keys {
        engine.put(Put::new(k.clone(), "second")).unwrap();
    }
    // More rolls, so segments before the trims get deleted.
    let other = key("/rt/other");
    for i in 0..200 {
        engine.put(Put::new(other.clone(), format!("{i}"))).unwrap();
    }
    close(engine);

    let engine = open(dir.path());
    for k in &keys {
        let latest = engine.get(k, Get::Latest).unwrap();
        assert_eq!(
            latest.map(|v| v.value.clone()),
            Some(Bytes::from("second")),
            "{k} after a restart"
        );
        let info = engine.bounds(k).unwrap();
        assert_eq!((info.start_seq, info.next_seq), (1, 2), "{k}");
    }
    close(engine);
}

// ----- affinity -----

#[test]
fn puts_with_one_affinity_key_land_on_one_shard_and_are_listed_together() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine.create_pool(persistent("/af").shards(8)).unwrap();
    let user = key("/users/42");
    let keys: Vec<Key> = (0..10).map(|i| key(&format!("/af/obj{i}"))).collect();
    for k in &keys {
        engine
            .put(Put::new(k.clone(), k.to_string()).affinity(user.clone()))
            .unwrap();
    }
    let non_empty: Vec<PathBuf> = shard_segments(dir.path(), "%2Faf")
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    assert_eq!(
        non_empty.len(),
        1,
        "one shard holds them all: {non_empty:?}"
    );
    let mut expect = keys.clone();
    expect.sort();
    assert_eq!(engine.affinity_set(&keys[0], &user).unwrap(), expect);
    for k in &keys {
        let v = engine
            .get_placed(k, &user, Get::Latest)
            .unwrap()
            .expect("placed");
        assert_eq!(
            (&v.value[..], v.affinity.as_ref()),
            (k.as_str().as_bytes(), Some(&user))
        );
    }

    // put_many over the set is one atomic update.
    let many: Vec<Put> = keys[..3]
        .iter()
        .map(|k| Put::new(k.clone(), "batch").affinity(user.clone()))
        .collect();
    let results: Vec<WriteResult> = engine.put_many(many, Ack::Durable).unwrap();
    assert_eq!(results[1].version, results[0].version + 1);
    assert_eq!(results[2].version, results[0].version + 2);

    // Mixed affinity, keys without one, or several pools: refused, and nothing written.
    let next = engine
        .get_placed(&keys[0], &user, Get::Latest)
        .unwrap()
        .unwrap()
        .version;
    let bad = [
        vec![
            Put::new(keys[0].clone(), "x").affinity(user.clone()),
            Put::new(keys[1].clone(), "x").affinity(key("/users/43")),
        ],
        vec![
            Put::new(keys[0].clone(), "x"),
            Put::new(keys[1].clone(), "x"),
        ],
        vec![
            Put::new(keys[0].clone(), "x").affinity(user.clone()),
            Put::new(keys[1].clone(), "x"),
        ],
    ];
    for puts in bad {
        let err = engine.put_many(puts, Ack::Durable).unwrap_err();
        assert!(matches!(err, Error::NotOneAffinitySet(_)), "{err:?}");
    }
    engine.create_pool(persistent("/other")).unwrap();
    let err = engine
        .put_many(
            vec![
                Put::new(keys[0].clone(), "x").affinity(user.clone()),
                Put::new(key("/other/x"), "x").affinity(user.clone()),
            ],
            Ack::Durable,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::NotOneAffinitySet(_)),
        "two pools: {err:?}"
    );
    assert_eq!(
        engine
            .get_placed(&keys[0], &user, Get::Latest)
            .unwrap()
            .unwrap()
            .version,
        next,
        "nothing written"
    );
    close(engine);

    let engine = open(dir.path());
    assert_eq!(
        engine.affinity_set(&keys[0], &user).unwrap(),
        expect,
        "the set survives a restart"
    );
    assert_eq!(
        &engine
            .get_placed(&keys[2], &user, Get::Latest)
            .unwrap()
            .unwrap()
            .value[..],
        b"batch"
    );
    close(engine);
}

// ----- errors -----

#[test]
fn bad_keys_unknown_pools_and_oversized_values_are_typed_errors() {
    for bad in ["", "relative", "/", "/a//b", "/a/", "/a/../b", "/a/./b"] {
        assert!(
            matches!(Key::new(bad), Err(Error::InvalidKey { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        Key::new(&format!("/{}", "x".repeat(2000))),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        Prefix::new("no-slash"),
        Err(Error::InvalidKey { .. })
    ));

    let engine = Engine::open(EngineConfig::default()).unwrap();
    let small = PoolConfig {
        max_value_bytes: 100,
        ..PoolConfig::new("/small", Storage::Volatile)
    };
    engine.create_pool(small.clone()).unwrap();
    assert!(matches!(
        engine.create_pool(small.clone()),
        Err(Error::PoolExists(_))
    ));
    assert!(matches!(
        engine.put(Put::new(key("/nowhere/x"), "v")),
        Err(Error::NoPool(_))
    ));
    assert!(matches!(
        engine.get(&key("/nowhere/x"), Get::Latest),
        Err(Error::NoPool(_))
    ));
    assert!(matches!(
        engine.alter_pool(PoolConfig::new("/nowhere", Storage::Volatile)),
        Err(Error::UnknownPool(_))
    ));
    assert!(matches!(
        engine.remove_pool("/nowhere"),
        Err(Error::UnknownPool(_))
    ));
    let k = key("/small/k");
    let big = vec![0u8; 101];
    assert!(matches!(
        engine.put(Put::new(k.clone(), big.clone())),
        Err(Error::ValueTooLarge {
            size: 101,
            limit: 100,
            ..
        })
    ));
    assert!(matches!(
        engine.trigger(&k, big.clone()),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        engine.put_many(
            vec![Put::new(k.clone(), "ok"), Put::new(k.clone(), big)],
            Ack::Durable
        ),
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(
        engine.bounds(&k).unwrap().next_seq,
        0,
        "a refused put_many writes none of its puts"
    );
    assert!(matches!(
        engine.put(Put::new(k.clone(), "v").count(0)),
        Err(Error::ZeroCount(_))
    ));
    engine.put(Put::new(k.clone(), vec![0u8; 100])).unwrap();

    let refused = [
        persistent("/p"),                                    // no data dir
        PoolConfig::new("/kascade/mine", Storage::Volatile), // reserved
        PoolConfig::new("/s", Storage::Volatile).shards(0),  // no shards
        PoolConfig::new("relative", Storage::Volatile),      // not a prefix
        PoolConfig {
            segment_bytes: 10,
            ..PoolConfig::new("/s", Storage::Volatile)
        },
    ];
    for config in refused {
        let err = engine.create_pool(config.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidPoolConfig { .. } | Error::InvalidKey { .. }
            ),
            "{config:?}: {err:?}"
        );
    }
    let changed = PoolConfig {
        storage: Storage::Trigger,
        ..small
    };
    assert!(
        matches!(
            engine.alter_pool(changed),
            Err(Error::InvalidPoolConfig { .. })
        ),
        "storage is fixed"
    );
    assert!(matches!(
        engine.remove_pool("/kascade"),
        Err(Error::InvalidPoolConfig { .. })
    ));
    assert!(matches!(
        engine.bind_local(
            "bad name!",
            "/small",
            Arc::new(|_: &LambdaContext<'_>, _: &Arc<ObjectVersion>| Ok(()))
        ),
        Err(Error::Lambda(_))
    ));
}

#[test]
fn a_data_dir_is_locked_while_an_engine_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let second = Engine::open(config(dir.path()));
    assert!(
        matches!(second, Err(Error::Io { .. })),
        "a second engine on one data dir is refused"
    );
    let clone = engine.clone();
    drop(engine);
    assert!(
        Engine::open(config(dir.path())).is_err(),
        "a clone still holds it"
    );
    close(clone);
    close(open(dir.path()));
}
