//! Per-stage timing: every binding counts its queue lag (call start minus the
//! input's timestamp) and its call time, and a pipeline's stages report them in
//! vertex order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kascade_core::{
    Ack, Engine, EngineConfig, Key, LambdaContext, ObjectVersion, PipelineSpec, PoolConfig, Put,
    Storage,
};

/// Polls `done` until it holds or `secs` pass.
fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_upcall_queued_behind_a_slow_one_counts_the_wait_as_queue_lag() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    engine
        .create_pool(PoolConfig::new("/slow", Storage::Volatile))
        .unwrap();
    let pause = Duration::from_millis(30);
    engine
        .bind_local(
            "slow",
            "/slow",
            Arc::new(move |_: &LambdaContext<'_>, _: &Arc<ObjectVersion>| {
                std::thread::sleep(pause);
                Ok(())
            }),
        )
        .unwrap();
    // One atomic write of two versions of one key: both carry one timestamp, and the
    // second upcall can start only after the first one's pause (per-key order).
    let key = Key::new("/slow/k").unwrap();
    engine
        .put_many(
            vec![Put::new(key.clone(), "a"), Put::new(key, "b")],
            Ack::Applied,
        )
        .unwrap();
    eventually(10, "both upcalls ran", || {
        engine.lambda_stats()[0].calls == 2
    });
    let stats = &engine.lambda_stats()[0];
    let pause_ns = pause.as_nanos() as u64;
    assert!(
        stats.busy_ns >= 2 * pause_ns,
        "two calls of {pause:?} each count as call time: {stats:?}"
    );
    assert!(
        stats.lag_ns >= pause_ns,
        "the second upcall waited behind the first: {stats:?}"
    );
    assert_eq!(stats.mean_lag_ns, stats.lag_ns / 2);
    assert_eq!(stats.mean_ns, stats.busy_ns / 2);
    assert_eq!(stats.errors, 0);
}

#[test]
fn a_pipeline_reports_each_stage_in_vertex_order() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    for (prefix, storage) in [
        ("/p/in", Storage::Volatile),
        ("/p/mid", Storage::Trigger),
        ("/p/out", Storage::Volatile),
    ] {
        engine
            .create_pool(PoolConfig::new(prefix, storage))
            .unwrap();
    }
    let spec = PipelineSpec::parse(
        r#"
        name = "p"
        [[vertex]]
        name = "first"
        prefix = "/p/in"
        kind = "forward"
        destinations = [{ prefix = "/p/mid", mode = "trigger" }]
        [[vertex]]
        name = "second"
        prefix = "/p/mid"
        kind = "forward"
        destinations = [{ prefix = "/p/out", mode = "put" }]
        "#,
    )
    .unwrap();
    engine.load_pipeline(spec).unwrap();
    assert!(engine.pipeline_stats("nope").is_none());
    let n = 50u64;
    for i in 0..n {
        engine
            .put(Put::new(Key::new("/p/in/k").unwrap(), format!("{i}")))
            .unwrap();
    }
    let out = Key::new("/p/out/k").unwrap();
    eventually(10, "every input reached the last stage", || {
        engine.bounds(&out).unwrap().next_seq == n
    });
    let stages = engine.pipeline_stats("p").unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["p.first", "p.second"]);
    for s in &stages {
        assert_eq!((s.calls, s.errors), (n, 0), "{s:?}");
        assert!(s.busy_ns > 0, "call time is counted: {s:?}");
        assert_eq!(s.mean_lag_ns, s.lag_ns / n);
    }
    let json = serde_json::to_value(&stages[0]).unwrap();
    for field in [
        "calls",
        "errors",
        "mean_ns",
        "mean_lag_ns",
        "busy_ns",
        "lag_ns",
    ] {
        assert!(json.get(field).is_some(), "{field} is serialized: {json}");
    }
}
