//! The seed's three-stage no-op pipeline (filter -> score -> store) through each
//! lambda kind (built-in `forward`, `wasm`, `cdylib`), loaded as a
//! `PipelineSpec`; a failing stage is isolated and counted on that stage only.

#![cfg(feature = "wasm")] // the tests bind the example WebAssembly lambda

mod lambda_support;

use kascade_core::{PipelineSpec, PoolConfig, Put, Storage, Vertex};
use lambda_support::*;

/// One no-op stage of `kind`: the kind's forwarding handler.
fn stage(kind: &str, name: &str, prefix: &str, next: &str, mode: &str) -> Vertex {
    let config = match kind {
        "forward" => serde_json::Value::Null,
        "wasm" => serde_json::to_value(wasm_config("forward")).unwrap(),
        "cdylib" => {
            let mut c = kascade::lambdas::cdylib::CdylibConfig::new(example_c_library());
            c.symbol = "forward".into();
            serde_json::to_value(c).unwrap()
        }
        other => panic!("no kind {other}"),
    };
    Vertex {
        name: name.into(),
        prefix: prefix.into(),
        kind: kind.into(),
        config,
        destinations: serde_json::from_value(serde_json::json!([{ "prefix": next, "mode": mode }]))
            .unwrap(),
    }
}

/// The farm pipeline of `kind` under `/<root>`: frames -(put)-> filtered
/// -(trigger)-> scored -(put)-> stored.
fn farm(kind: &str, root: &str) -> PipelineSpec {
    PipelineSpec {
        name: root.into(),
        vertices: vec![
            stage(
                kind,
                "filter",
                &format!("/{root}/frames"),
                &format!("/{root}/filtered"),
                "put",
            ),
            stage(
                kind,
                "score",
                &format!("/{root}/filtered"),
                &format!("/{root}/scored"),
                "trigger",
            ),
            stage(
                kind,
                "store",
                &format!("/{root}/scored"),
                &format!("/{root}/stored"),
                "put",
            ),
        ],
    }
}

fn pools(engine: &kascade_core::Engine, root: &str) {
    for (p, storage) in [
        ("frames", Storage::Volatile),
        ("filtered", Storage::Volatile),
        ("scored", Storage::Trigger),
        ("stored", Storage::Volatile),
    ] {
        engine
            .create_pool(PoolConfig::new(&format!("/{root}/{p}"), storage))
            .unwrap();
    }
}

#[test]
fn the_three_stage_pipeline_runs_through_every_lambda_kind() {
    let b = open(&[]);
    let engine = b.engine();
    let kinds = ["forward", "wasm", "cdylib"];
    for kind in kinds {
        pools(engine, kind);
        engine.load_pipeline(farm(kind, kind)).unwrap();
    }
    let n = 100u64;
    for i in 0..n {
        for kind in kinds {
            for camera in ["cam1", "cam2"] {
                engine
                    .put(Put::new(
                        key(&format!("/{kind}/frames/{camera}")),
                        format!("frame {camera} {i}"),
                    ))
                    .unwrap();
            }
        }
    }
    for kind in kinds {
        for camera in ["cam1", "cam2"] {
            let stored = format!("/{kind}/stored/{camera}");
            eventually(&format!("{stored} holds every frame"), || {
                values(engine, &stored).len() as u64 >= n
            });
            let expected: Vec<String> = (0..n).map(|i| format!("frame {camera} {i}")).collect();
            assert_eq!(
                values(engine, &stored),
                expected,
                "{kind}: in order, each once"
            );
        }
        let stages = engine.pipeline_stats(kind).unwrap();
        assert_eq!(stages.len(), 3);
        for s in &stages {
            assert_eq!((s.calls, s.errors), (2 * n, 0), "{kind}: {s:?}");
        }
    }
}

#[test]
fn a_failing_stage_is_isolated_and_counted_on_that_stage() {
    let b = open(&[]);
    let engine = b.engine();
    for root in ["healthy", "broken_wasm", "broken_c"] {
        pools(engine, root);
    }
    engine.load_pipeline(farm("wasm", "healthy")).unwrap();
    // The middle stage traps (an endless loop, stopped by fuel) in one pipeline
    // and returns an error (C) in the other.
    let mut trapping = farm("wasm", "broken_wasm");
    let mut spin = wasm_config("spin");
    spin.fuel = 1_000_000;
    trapping.vertices[1].config = serde_json::to_value(spin).unwrap();
    engine.load_pipeline(trapping).unwrap();
    let mut failing = farm("cdylib", "broken_c");
    failing.vertices[1].config["symbol"] = "reject".into();
    engine.load_pipeline(failing).unwrap();
    let n = 20u64;
    for i in 0..n {
        for root in ["healthy", "broken_wasm", "broken_c"] {
            engine
                .put(Put::new(key(&format!("/{root}/frames/k")), format!("{i}")))
                .unwrap();
        }
    }
    eventually("the healthy pipeline delivers everything", || {
        values(engine, "/healthy/stored/k").len() as u64 >= n
    });
    for root in ["broken_wasm", "broken_c"] {
        wait_calls(engine, &format!("{root}.score"), n);
        let stages = engine.pipeline_stats(root).unwrap();
        let counts: Vec<(u64, u64)> = stages.iter().map(|s| (s.calls, s.errors)).collect();
        assert_eq!(counts, [(n, 0), (n, n), (0, 0)], "{root}: {stages:?}");
        assert!(values(engine, &format!("/{root}/stored/k")).is_empty());
    }
    let healthy: Vec<(u64, u64)> = engine
        .pipeline_stats("healthy")
        .unwrap()
        .iter()
        .map(|s| (s.calls, s.errors))
        .collect();
    assert_eq!(healthy, [(n, 0); 3]);
}
