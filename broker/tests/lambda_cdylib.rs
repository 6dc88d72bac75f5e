//! The `cdylib` lambda kind, in-process: the example C library
//! (examples/c-lambda/upper.c) compiled with `cc -shared -fPIC` and bound like a
//! user binds it; zero-copy forwarding; failures counted; bad libraries refused.

mod lambda_support;

use kascade::lambdas::cdylib::CdylibConfig;
use kascade_core::{BindingSpec, EmitMode, Get, Put};
use lambda_support::*;

#[test]
fn the_c_example_upper_cases_each_value_in_order_per_key() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine();
    engine
        .bind(c_binding(
            "upper",
            "/in",
            "kascade_handle",
            &[("/out", EmitMode::Put)],
        ))
        .unwrap();
    let n = 200;
    for i in 0..n {
        for k in ["a", "b"] {
            engine
                .put(Put::new(key(&format!("/in/{k}")), format!("value {k} {i}")))
                .unwrap();
        }
    }
    wait_calls(engine, "upper", 2 * n);
    for k in ["a", "b"] {
        let expected: Vec<String> = (0..n)
            .map(|i| format!("VALUE {} {i}", k.to_uppercase()))
            .collect();
        assert_eq!(values(engine, &format!("/out/{k}")), expected);
    }
    assert_eq!(stats(engine, "upper").errors, 0);
}

#[test]
fn forwarding_from_c_shares_the_stored_bytes() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine();
    engine
        .bind(c_binding(
            "forward",
            "/in",
            "forward",
            &[("/out", EmitMode::Put)],
        ))
        .unwrap();
    engine.put(Put::new(key("/in/k"), vec![7u8; 4096])).unwrap();
    wait_calls(engine, "forward", 1);
    let input = engine.get(&key("/in/k"), Get::Latest).unwrap().unwrap();
    let output = engine.get(&key("/out/k"), Get::Latest).unwrap().unwrap();
    assert_eq!(output.value, input.value);
    assert_eq!(
        output.value.as_ptr(),
        input.value.as_ptr(),
        "the output version holds the input's bytes, not a copy"
    );
}

#[test]
fn a_failing_c_handler_is_counted_and_isolated() {
    let b = open(&["/in", "/out"]);
    let engine = b.engine();
    engine
        .bind(c_binding(
            "reject",
            "/in/bad",
            "reject",
            &[("/out", EmitMode::Put)],
        ))
        .unwrap();
    engine
        .bind(c_binding(
            "upper",
            "/in/good",
            "kascade_handle",
            &[("/out", EmitMode::Put)],
        ))
        .unwrap();
    for i in 0..10 {
        engine
            .put(Put::new(key("/in/bad/k"), format!("{i}")))
            .unwrap();
        engine
            .put(Put::new(key("/in/good/k"), format!("ok {i}")))
            .unwrap();
    }
    assert_eq!(wait_calls(engine, "reject", 10).errors, 10);
    assert_eq!(wait_calls(engine, "upper", 10).errors, 0);
    assert_eq!(
        values(engine, "/out/k"),
        (0..10).map(|i| format!("OK {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn libraries_that_do_not_fit_are_refused_at_bind() {
    let b = open(&["/in"]);
    let engine = b.engine();
    let bind = |config: serde_json::Value| {
        engine
            .bind(BindingSpec {
                name: "bad".into(),
                prefix: "/in".into(),
                kind: "cdylib".into(),
                config,
                destinations: Vec::new(),
            })
            .unwrap_err()
            .to_string()
    };
    let e = bind(serde_json::json!({ "path": "relative/lib.so" }));
    assert!(e.contains("absolute"), "{e}");
    let e = bind(serde_json::json!({ "path": "/nonexistent/libnothing.so" }));
    assert!(e.contains("cannot load"), "{e}");
    let mut config = CdylibConfig::new(example_c_library());
    config.symbol = "no_such_handler".into();
    let e = bind(serde_json::to_value(&config).unwrap());
    assert!(e.contains("no_such_handler"), "{e}");
    // A library without the ABI version export, and one built for another version.
    let dir = tempfile::tempdir().unwrap();
    for (name, source, expected) in [
        (
            "kascade_no_abi",
            "#include <stdint.h>\nint32_t kascade_handle(const void *h, const void *i) { (void)h; (void)i; return 0; }\n",
            "exports no kascade_abi_version",
        ),
        (
            "kascade_abi_99",
            "#include \"kascade_lambda.h\"\nuint32_t kascade_abi_version(void) { return 99; }\n",
            "built for lambda ABI 99",
        ),
    ] {
        let path = dir.path().join(format!("{name}.c"));
        std::fs::write(&path, source).unwrap();
        let lib = compile_c(name, &path);
        let e = bind(serde_json::to_value(CdylibConfig::new(lib)).unwrap());
        assert!(e.contains(expected), "{e}");
    }
    assert!(engine.binding_specs().is_empty());
}
