//! The `wasm` lambda kind, in-process: the example crate (examples/wasm-lambda)
//! built with cargo for wasm32 and bound like a user binds it; its host
//! functions; runaway modules stopped by fuel and the memory cap while the
//! broker keeps serving; modules refused at bind; redeploy while puts flow.

#![cfg(feature = "wasm")] // the tests bind the example WebAssembly lambda

mod lambda_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kascade_core::{BindingSpec, EmitMode, Get, Put};
use lambda_support::*;

#[test]
fn the_example_module_upper_cases_each_value_in_order_per_key() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine();
    engine
        .bind(wasm_binding(
            "upper",
            "/in",
            "kascade_handle",
            &[("/out", EmitMode::Put)],
        ))
        .unwrap();
    let n = 200;
    for i in 0..n {
        for k in ["a", "b/c"] {
            engine
                .put(Put::new(key(&format!("/in/{k}")), format!("value {k} {i}")))
                .unwrap();
        }
    }
    wait_calls(engine, "upper", 2 * n);
    for k in ["a", "b/c"] {
        let out = values(engine, &format!("/out/{k}"));
        let expected: Vec<String> = (0..n)
            .map(|i| format!("VALUE {} {i}", k.to_uppercase()))
            .collect();
        assert_eq!(out, expected, "outputs of /in/{k}");
    }
    assert_eq!(stats(engine, "upper").errors, 0);
}

#[test]
fn a_module_reads_and_writes_other_keys_and_logs() {
    let b = open(&["/in", "/counts"]);
    let engine = b.engine();
    engine
        .bind(wasm_binding("count", "/in", "count", &[]))
        .unwrap();
    let n = 50;
    for i in 0..n {
        engine.put(Put::new(key("/in/x"), format!("{i}"))).unwrap();
    }
    wait_calls(engine, "count", n);
    // Each call read the count its predecessor put: writes are made before the
    // key's next upcall starts.
    let latest = engine
        .get(&key("/counts/in/x"), Get::Latest)
        .unwrap()
        .unwrap();
    assert_eq!(latest.value, n.to_string());
    assert_eq!(values(engine, "/counts/in/x").len(), n as usize);
    assert_eq!(stats(engine, "count").errors, 0);
}

#[test]
fn runaway_modules_are_stopped_and_counted_while_others_keep_working() {
    let b = open(&["/spin", "/hog", "/in", "/out"]);
    let engine = b.engine();
    // Default limits: the endless loop runs out of fuel, the hoarder hits the memory cap.
    for (name, handler) in [("spin", "spin"), ("hog", "hog")] {
        engine
            .bind(wasm_binding(
                name,
                &format!("/{name}"),
                handler,
                &[("/out", EmitMode::Put)],
            ))
            .unwrap();
    }
    engine
        .bind(wasm_binding(
            "upper",
            "/in",
            "kascade_handle",
            &[("/out", EmitMode::Put)],
        ))
        .unwrap();
    let runs = 3;
    for i in 0..runs {
        engine.put(Put::new(key("/spin/k"), "go")).unwrap();
        engine.put(Put::new(key("/hog/k"), "go")).unwrap();
        engine
            .put(Put::new(key("/in/k"), format!("still here {i}")))
            .unwrap();
    }
    for name in ["spin", "hog"] {
        let s = wait_calls(engine, name, runs);
        assert_eq!(s.errors, runs, "every call of {name} failed: {s:?}");
    }
    let s = wait_calls(engine, "upper", runs);
    assert_eq!(s.errors, 0);
    assert_eq!(
        values(engine, "/out/k"),
        (0..runs)
            .map(|i| format!("STILL HERE {i}"))
            .collect::<Vec<_>>(),
        "only the healthy lambda wrote, every time"
    );
    // The engine still serves reads and writes after the traps.
    engine.put(Put::new(key("/in/after"), "ok")).unwrap();
    wait_calls(engine, "upper", runs + 1);
    assert_eq!(values(engine, "/out/after"), ["OK"]);
}

#[test]
fn tighter_limits_from_the_config_are_obeyed() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine();
    // Fuel too small for even the upper-casing of a long value.
    let mut config = wasm_config("kascade_handle");
    config.fuel = 1_000;
    engine
        .bind(BindingSpec {
            name: "starved".into(),
            prefix: "/in/starved".into(),
            kind: "wasm".into(),
            config: serde_json::to_value(config).unwrap(),
            destinations: to(&[("/out", EmitMode::Put)]),
        })
        .unwrap();
    // An output cap under the value's size.
    let mut config = wasm_config("forward");
    config.max_output_bytes = 10;
    engine
        .bind(BindingSpec {
            name: "capped".into(),
            prefix: "/in/capped".into(),
            kind: "wasm".into(),
            config: serde_json::to_value(config).unwrap(),
            destinations: to(&[("/out", EmitMode::Put)]),
        })
        .unwrap();
    let long = "x".repeat(10_000);
    engine
        .put(Put::new(key("/in/starved/k"), long.clone()))
        .unwrap();
    engine.put(Put::new(key("/in/capped/k"), long)).unwrap();
    engine
        .put(Put::new(key("/in/capped/small"), "tiny"))
        .unwrap();
    assert_eq!(wait_calls(engine, "starved", 1).errors, 1);
    let capped = wait_calls(engine, "capped", 2);
    assert_eq!(capped.errors, 1, "{capped:?}");
    assert!(
        values(engine, "/out/k").is_empty(),
        "a failed call writes nothing"
    );
    assert_eq!(values(engine, "/out/small"), ["tiny"]);
}

#[test]
fn a_failing_handler_is_counted_and_writes_nothing() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine();
    engine
        .bind(wasm_binding(
            "reject",
            "/in",
            "reject",
            &[("/out", EmitMode::Put)],
        ))
        .unwrap();
    for _ in 0..5 {
        engine.put(Put::new(key("/in/k"), "v")).unwrap();
    }
    let s = wait_calls(engine, "reject", 5);
    assert_eq!(s.errors, 5);
    assert!(values(engine, "/out/k").is_empty());
}

#[test]
fn modules_without_the_abi_are_refused_at_bind() {
    let b = open(&["/in"]);
    let engine = b.engine();
    let bind = |config: serde_json::Value| {
        engine
            .bind(BindingSpec {
                name: "bad".into(),
                prefix: "/in".into(),
                kind: "wasm".into(),
                config,
                destinations: Vec::new(),
            })
            .unwrap_err()
            .to_string()
    };
    let module = |wat_text: &str| {
        serde_json::to_value(kascade::lambdas::wasm::WasmConfig::new(
            &wat::parse_str(wat_text).unwrap(),
        ))
        .unwrap()
    };
    let e = bind(serde_json::json!({ "module_base64": "not base64!" }));
    assert!(e.contains("base64"), "{e}");
    let e = bind(serde_json::json!({ "module_base64": "AAAA" }));
    assert!(e.contains("does not compile"), "{e}");
    let e = bind(serde_json::json!({ "module": "x" }));
    assert!(e.contains("module_base64"), "{e}");
    // WASI is not offered.
    let e = bind(module(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                   (memory (export "memory") 1))"#,
    ));
    assert!(e.contains("imports something"), "{e}");
    let e = bind(module(r#"(module (memory (export "memory") 1))"#));
    assert!(e.contains("kascade_alloc"), "{e}");
    let e = bind(module(
        r#"(module (memory (export "memory") 1)
                   (func (export "kascade_alloc") (param i32) (result i32) i32.const 0)
                   (func (export "kascade_handle") (param i32) (result i32) i32.const 0))"#,
    ));
    assert!(e.contains("kascade_handle"), "{e}");
    // A start function that never ends is stopped by fuel at bind.
    let e = bind(module(
        r#"(module (memory (export "memory") 1)
                   (func $forever (loop $l (br $l)))
                   (start $forever))"#,
    ));
    assert!(e.contains("instantiating"), "{e}");
    assert!(engine.binding_specs().is_empty());
}

#[test]
fn a_handwritten_module_gets_error_codes_for_a_bad_key_and_a_bad_pointer() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine();
    // Puts to an invalid key (code -2, stored as the value written to /out),
    // then emits from past the end of its memory (code -2), then returns 0.
    let wat_text = r#"
        (module
          (import "kascade" "put" (func $put (param i32 i32 i32 i32) (result i32)))
          (import "kascade" "emit" (func $emit (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "bad//key")
          (func (export "kascade_alloc") (param i32) (result i32) i32.const 1024)
          (func (export "kascade_handle") (param i32 i32 i32 i32 i64 i64 i64) (result i32)
            (i32.store8 (i32.const 0)
              (i32.add (i32.const 48) (i32.sub (i32.const 0)
                (call $put (i32.const 16) (i32.const 8) (i32.const 16) (i32.const 1)))))
            (drop (call $emit (i32.const 0) (i32.const 1)))
            (if (i32.ne (call $emit (i32.const 65535) (i32.const 2)) (i32.const -2))
              (then unreachable))
            i32.const 0))"#;
    engine
        .bind(BindingSpec {
            name: "hand".into(),
            prefix: "/in".into(),
            kind: "wasm".into(),
            config: serde_json::to_value(kascade::lambdas::wasm::WasmConfig::new(
                &wat::parse_str(wat_text).unwrap(),
            ))
            .unwrap(),
            destinations: to(&[("/out", EmitMode::Put)]),
        })
        .unwrap();
    engine.put(Put::new(key("/in/k"), "v")).unwrap();
    assert_eq!(wait_calls(engine, "hand", 1).errors, 0);
    // '0' + 2: put answered -2 (an invalid key).
    assert_eq!(values(engine, "/out/k"), ["2"]);
}

#[test]
fn redeploying_while_puts_flow_handles_each_input_exactly_once() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine().clone();
    let bind = |handler: &str| {
        engine
            .bind(wasm_binding(
                "live",
                "/in",
                handler,
                &[("/out", EmitMode::Put)],
            ))
            .unwrap()
    };
    // Version 1 upper-cases, version 2 forwards: each output says which one ran.
    bind("kascade_handle");
    let keys = ["/in/a", "/in/b", "/in/c"];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut written = 0usize;
            while !stop.load(Ordering::SeqCst) {
                for k in keys {
                    engine.put(Put::new(key(k), format!("v{written}"))).unwrap();
                }
                written += 1;
            }
            written
        })
    };
    let outputs = |k: &str| values(&engine, &k.replace("/in", "/out"));
    let swaps = ["forward", "kascade_handle", "forward"];
    for handler in swaps {
        let seen = outputs("/in/a").len();
        eventually("outputs flow before the redeploy", || {
            outputs("/in/a").len() >= seen + 50
        });
        bind(handler);
    }
    let after = outputs("/in/a").len();
    eventually("the last version handles some inputs", || {
        outputs("/in/a").len() >= after + 50
    });
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    eventually("every input is handled", || {
        keys.iter().all(|k| outputs(k).len() >= written)
    });
    for k in keys {
        let out = outputs(k);
        assert_eq!(out.len(), written, "{k}: one output per input, none twice");
        let mut by_version = Vec::new();
        for (i, v) in out.iter().enumerate() {
            let upper = format!("V{i}");
            let plain = format!("v{i}");
            let version = if v == &upper {
                1
            } else if v == &plain {
                2
            } else {
                panic!("{k}: output {i} is {v:?}, from no input");
            };
            if by_version.last() != Some(&version) {
                by_version.push(version);
            }
        }
        // In order, each version handling one contiguous run of the inputs.
        assert!(
            by_version.len() <= swaps.len() + 1,
            "{k}: versions interleaved: {by_version:?}"
        );
        assert!(
            by_version.contains(&1) && by_version.contains(&2),
            "{k}: {by_version:?}"
        );
    }
}
