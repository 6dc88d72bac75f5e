//! What the lambda tests share: the example lambdas built as users build them
//! (cargo for the WebAssembly crate, cc for the C library), an in-process
//! broker on a temporary data dir, and readers of what lambdas wrote.

#![allow(dead_code)] // each test file uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kascade::lambdas::cdylib::CdylibConfig;
#[cfg(feature = "wasm")]
use kascade::lambdas::wasm::WasmConfig;
use kascade::{Broker, Config};
use kascade_core::{
    BindingSpec, Destination, EmitMode, Engine, Key, ObjectVersion, PoolConfig, RangeLimit, Storage,
};

/// How long to wait for lambdas to finish: a guard against a hung test, not a speed check.
pub const GUARD: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the broker crate sits in the repository")
        .to_path_buf()
}

/// The example WebAssembly lambda (examples/wasm-lambda), built once per test
/// binary with the command docs/lambdas.md gives.
#[cfg(feature = "wasm")]
pub fn example_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-lambda");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--manifest-path",
            ])
            .arg(repo().join("examples/wasm-lambda/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building examples/wasm-lambda failed (is the wasm32-unknown-unknown target installed? \
             `rustup target add wasm32-unknown-unknown`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = target.join("wasm32-unknown-unknown/release/kascade_wasm_lambda.wasm");
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    })
}

/// The example C lambda (examples/c-lambda/upper.c), compiled once per test
/// binary with `cc -shared -fPIC`.
pub fn example_c_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| compile_c("kascade_upper", &repo().join("examples/c-lambda/upper.c")))
}

/// Compiles C `source` into `lib<name>.so` with `cc -shared -fPIC` and the
/// repository's `include/`. It is compiled under a name of its own and renamed
/// into place, so that no process ever has a library it loaded rewritten.
pub fn compile_c(name: &str, source: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-lambda");
    std::fs::create_dir_all(&dir).expect("create the C lambdas' dir");
    let lib = dir.join(format!("lib{name}.so"));
    let building = dir.join(format!("lib{name}.so.{}", std::process::id()));
    let out = Command::new("cc")
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-I",
        ])
        .arg(repo().join("include"))
        .arg("-o")
        .arg(&building)
        .arg(source)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&building, &lib).expect("move the library into place");
    lib
}

/// A binding's destinations: each prefix with its mode.
pub fn to(destinations: &[(&str, EmitMode)]) -> Vec<Destination> {
    destinations
        .iter()
        .map(|(prefix, mode)| Destination {
            prefix: prefix.to_string(),
            mode: *mode,
        })
        .collect()
}

/// The `wasm` config of the example module with `handler`.
#[cfg(feature = "wasm")]
pub fn wasm_config(handler: &str) -> WasmConfig {
    let mut config = WasmConfig::new(example_wasm());
    config.handler = handler.to_string();
    config
}

/// A binding of the example WebAssembly module's `handler`.
#[cfg(feature = "wasm")]
pub fn wasm_binding(
    name: &str,
    prefix: &str,
    handler: &str,
    out: &[(&str, EmitMode)],
) -> BindingSpec {
    BindingSpec {
        name: name.into(),
        prefix: prefix.into(),
        kind: "wasm".into(),
        config: serde_json::to_value(wasm_config(handler)).unwrap(),
        destinations: to(out),
    }
}

/// A binding of the example C library's `symbol`.
pub fn c_binding(name: &str, prefix: &str, symbol: &str, out: &[(&str, EmitMode)]) -> BindingSpec {
    let mut config = CdylibConfig::new(example_c_library());
    config.symbol = symbol.into();
    BindingSpec {
        name: name.into(),
        prefix: prefix.into(),
        kind: "cdylib".into(),
        config: serde_json::to_value(config).unwrap(),
        destinations: to(out),
    }
}

/// A broker opened in-process on a temporary data dir (kept with it).
pub struct Opened {
    /// The broker.
    pub broker: Broker,
    /// Its data dir.
    pub dir: tempfile::TempDir,
}

impl Opened {
    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.broker.engine()
    }
}

/// Opens a broker (engine and lambda kinds, no listeners) with volatile pools at `pools`.
pub fn open(pools: &[&str]) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = Broker::open(&config).unwrap();
    for prefix in pools {
        broker
            .engine()
            .create_pool(PoolConfig::new(prefix, Storage::Volatile))
            .unwrap();
    }
    Opened { broker, dir }
}

/// A key.
pub fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

/// Every stored version of `k`, oldest first.
pub fn versions(engine: &Engine, k: &str) -> Vec<Arc<ObjectVersion>> {
    engine
        .range(
            &key(k),
            0,
            RangeLimit {
                max_bytes: usize::MAX,
                max_versions: usize::MAX,
            },
        )
        .unwrap()
}

/// Every stored value of `k`, oldest first.
pub fn values(engine: &Engine, k: &str) -> Vec<Bytes> {
    versions(engine, k)
        .iter()
        .map(|v| v.value.clone())
        .collect()
}

/// Polls `done` until it holds; panics past [`GUARD`].
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The stats of binding `name`.
pub fn stats(engine: &Engine, name: &str) -> kascade_core::lambda::LambdaStatsSnapshot {
    engine
        .lambda_stats()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no binding {name}"))
}

/// Waits until binding `name` has run `calls` upcalls, and returns its stats.
pub fn wait_calls(
    engine: &Engine,
    name: &str,
    calls: u64,
) -> kascade_core::lambda::LambdaStatsSnapshot {
    eventually(&format!("{name} ran {calls} upcalls"), || {
        stats(engine, name).calls >= calls
    });
    stats(engine, name)
}
