//! GPU support (feature `cuda`) through a real `kascade serve` built with it,
//! and its admin API.
//!
//! Runs everywhere: `--gpu off` is reported and nothing breaks (pools keep
//! `gpu = true`, inactive; a cuda lambda is refused with a clear 400); a host
//! without a driver starts and says so. With NVRTC (`KASCADE_NVRTC_DIR`, or the
//! `nvidia-cuda-nvrtc` wheel in the CI's venv): a compile error comes back with
//! NVRTC's log, and the committed PTX of the example is what NVRTC makes of its
//! source. With a GPU: a GPU lambda sees each new version's bytes, never a stale
//! one, and the GPU cache evicts when full. A test that needs what the host
//! lacks prints `skipped: <why>` and passes; `.ci/gpu-check.sh` runs this file
//! on a GPU host.

#![cfg(feature = "cuda")]

#[path = "../../examples/gpu-lambda/cpu.rs"]
mod cpu;
mod http;
mod spawn;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::Http;
use serde_json::{json, Value};

/// The example kernel and its PTX, carried inside the test binary.
const SOURCE: &str = include_str!("../../examples/gpu-lambda/threshold.cu");
const PTX: &str = include_str!("../../examples/gpu-lambda/threshold.ptx");
/// The example's threshold.
const LIMIT: f32 = 0.5;
/// A guard against a hung test, not a speed check.
const GUARD: Duration = Duration::from_secs(60);

fn skip(why: &str) {
    println!("skipped: {why}");
    eprintln!("skipped: {why}");
}

/// Where NVRTC's libraries are: `KASCADE_NVRTC_DIR`, else the wheel in the CI's venv.
fn nvrtc_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("libnvrtc.so.13").is_file();
    if let Some(d) = std::env::var_os("KASCADE_NVRTC_DIR") {
        let d = PathBuf::from(d);
        return has(&d).then_some(d);
    }
    let lib = PathBuf::from(std::env::var_os("HOME")?).join(".cache/kascade-venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/nvidia/cu13/lib"))
        .find(|d| has(d))
}

/// `LD_LIBRARY_PATH` with NVRTC's directory first, when known.
fn library_path() -> OsString {
    let mut parts: Vec<PathBuf> = nvrtc_dir().into_iter().collect();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        parts.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(parts).unwrap_or_default()
}

struct Broker {
    served: spawn::Served,
    http: Http,
    dir: PathBuf,
    early: std::cell::RefCell<Vec<String>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Broker {
    fn start(extra: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut b = Broker::start_in(&dir, extra);
        b._tmp = Some(tmp);
        b
    }

    fn start_in(dir: &Path, extra: &[&str]) -> Broker {
        let mut child = spawn::command("127.0.0.1:0", "127.0.0.1:0", dir, extra)
            .env("LD_LIBRARY_PATH", library_path())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn kascade");
        let log = spawn::log_lines(&mut child);
        // The lines before "ready" (the GPU's among them) are kept for `log_line`.
        let mut early = Vec::new();
        let ready = loop {
            let line = log
                .recv_timeout(spawn::LOG_GUARD)
                .expect("kascade is ready");
            if line.contains("kascade is ready") {
                break line;
            }
            early.push(line);
        };
        let served = spawn::Served { child, log, ready };
        let http = Http::new(&served.admin_addr(), None);
        Broker {
            served,
            http,
            dir: dir.to_path_buf(),
            early: std::cell::RefCell::new(early),
            _tmp: None,
        }
    }

    fn gpu(&self) -> Value {
        let a = self.http.get("/v1/gpu");
        assert_eq!(a.status, 200, "{a:?}");
        a.json()
    }

    fn stop(mut self) -> Option<tempfile::TempDir> {
        spawn::stop(&mut self.served.child);
        self._tmp.take()
    }

    /// The next log line with `needle` (lines already read by an earlier wait are gone).
    fn log_line(&self, needle: &str) -> String {
        let mut early = self.early.borrow_mut();
        if let Some(i) = early.iter().position(|l| l.contains(needle)) {
            return early.drain(..=i).next_back().unwrap_or_default();
        }
        early.clear();
        spawn::wait_for(&self.served.log, needle)
    }

    fn create_pool(&self, prefix: &str, storage: &str, gpu: bool) {
        let a = self.http.json(
            "POST",
            "/v1/pools",
            &json!({"prefix": prefix, "storage": storage, "gpu": gpu}),
        );
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json()["gpu"], gpu);
    }

    fn put(&self, key: &str, value: &[u8]) -> Value {
        let a = self.http.send(
            "PUT",
            &format!("/v1/kv{key}"),
            value,
            "application/octet-stream",
        );
        assert!(a.status < 300, "{a:?}");
        a.json()
    }

    /// The value of `key` at `seq`, once there (a lambda's output arrives after its input).
    fn wait_value(&self, key: &str, seq: u64) -> Vec<u8> {
        let deadline = Instant::now() + GUARD;
        loop {
            let a = self.http.get(&format!("/v1/kv{key}?seq={seq}"));
            if a.status == 200 {
                return a.body;
            }
            assert!(Instant::now() < deadline, "no {key} at seq {seq}: {a:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deploys the example kernel on `prefix` -> `dest`: the CUDA C when the broker has
    /// NVRTC, else the committed PTX. The answer.
    fn deploy_example(&self, name: &str, prefix: &str, dest: &str) -> http::Answer {
        let program = if self.gpu()["nvrtc"] == true {
            json!({"source": SOURCE})
        } else {
            println!("note: the broker has no NVRTC: deploying the committed PTX");
            json!({"ptx": PTX})
        };
        let mut config = json!({
            "kernel": "threshold",
            "grid": 1,
            "block": 1024,
            "params_base64": base64::engine::general_purpose::STANDARD.encode(LIMIT.to_le_bytes()),
        });
        for (k, v) in program.as_object().unwrap() {
            config[k] = v.clone();
        }
        self.http.json(
            "POST",
            "/v1/lambdas",
            &json!({"name": name, "prefix": prefix, "kind": "cuda", "config": config,
                    "destinations": [{"prefix": dest}]}),
        )
    }
}

#[test]
fn gpu_off_is_reported_and_pools_and_lambdas_say_so() {
    let b = Broker::start(&["--gpu", "off"]);
    let line = b.log_line("GPU support is off");
    assert!(line.contains("--gpu off"), "{line}");
    let report = b.gpu();
    assert_eq!(report["available"], false, "{report}");
    assert_eq!(report["feature"], true, "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("--gpu off"),
        "{report}"
    );
    let metrics = String::from_utf8(b.http.get("/metrics").body).unwrap();
    assert!(
        metrics.lines().any(|l| l == "kascade_gpu_available 0"),
        "no kascade_gpu_available 0 in /metrics"
    );

    // The setting is accepted, kept, reported inactive, and nothing breaks.
    b.create_pool("/frames", "persistent", true);
    let line = b.log_line("pool asks for gpu = true, but GPU support is off");
    assert!(line.contains("/frames"), "{line}");
    assert_eq!(
        b.gpu()["pools"],
        json!([{"prefix": "/frames", "active": false}])
    );
    b.put("/frames/a", b"still a store");
    assert_eq!(b.wait_value("/frames/a", 0), b"still a store");
    // The CLI passes it too, on create and alter.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(spawn::binary())
            .args(args)
            .args(["--admin", &b.http.base, "--json"])
            .env_remove("KASCADE_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let created = cli(&["pool", "create", "/cli", "--storage", "volatile", "--gpu"]);
    assert_eq!(created["gpu"], true, "{created}");
    let altered = cli(&["pool", "alter", "/cli", "--gpu", "false"]);
    assert_eq!(altered["gpu"], false, "{altered}");

    // A cuda lambda cannot run here: a clear 400, not a panic.
    let a = b.http.json(
        "POST",
        "/v1/lambdas",
        &json!({"name": "above", "prefix": "/frames", "kind": "cuda",
                "config": {"ptx": PTX, "kernel": "threshold"}}),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().contains("GPU support is off"), "{}", a.error());
    let kinds = b.http.get("/v1/lambda-kinds").json();
    assert!(kinds["kinds"].as_array().unwrap().contains(&json!("cuda")));

    // The pool's setting survives a restart, and so does the broker's health.
    let dir = b.dir.clone();
    let tmp = b.stop();
    let b = Broker::start_in(&dir, &["--gpu", "off"]);
    assert_eq!(b.http.get("/v1/pools/frames").json()["gpu"], true);
    assert_eq!(b.wait_value("/frames/a", 0), b"still a store");
    b.stop();
    drop(tmp);
}

#[test]
fn without_a_driver_the_broker_starts_and_says_gpu_support_is_off() {
    let b = Broker::start(&[]);
    let report = b.gpu();
    if report["available"] == true {
        skip(&format!(
            "this host has a GPU ({}): the no-driver path is covered by --gpu off",
            report["device"]["name"]
        ));
        b.stop();
        return;
    }
    let reason = report["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("driver") || reason.contains("GPU"),
        "{reason}"
    );
    let line = b.log_line("GPU support is off");
    assert!(line.contains(&reason), "{line}");
    let metrics = String::from_utf8(b.http.get("/metrics").body).unwrap();
    assert!(metrics.lines().any(|l| l == "kascade_gpu_available 0"));
    b.stop();
}

#[test]
fn a_compile_error_comes_back_to_the_caller_with_nvrtcs_log() {
    let b = Broker::start(&[]);
    if b.gpu()["nvrtc"] != true {
        skip("no NVRTC on this host (set KASCADE_NVRTC_DIR to the directory of libnvrtc.so.13)");
        b.stop();
        return;
    }
    b.create_pool("/in", "volatile", false);
    let broken = "extern \"C\" __global__ void broken(const unsigned char *input) {\n    int x = undefined_thing;\n}\n";
    let a = b.http.json(
        "POST",
        "/v1/lambdas",
        &json!({"name": "broken", "prefix": "/in", "kind": "cuda",
                "config": {"source": broken, "kernel": "broken"}}),
    );
    assert_eq!(a.status, 400, "{a:?}");
    let error = a.error();
    assert!(error.contains("did not compile"), "{error}");
    assert!(
        error.contains("broken.cu(2): error") && error.contains("undefined_thing"),
        "NVRTC's log, with file and line: {error}"
    );
    // The example compiles; then it needs a GPU.
    let a = b.deploy_example("above", "/in", "/out");
    if b.gpu()["available"] == true {
        assert_eq!(a.status, 201, "{a:?}");
    } else {
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.error().contains("GPU support is off"), "{}", a.error());
    }
    b.stop();
}

#[test]
fn the_committed_ptx_is_the_example_compiled_by_nvrtc() {
    let Some(dir) = nvrtc_dir() else {
        skip("no NVRTC on this host (set KASCADE_NVRTC_DIR to the directory of libnvrtc.so.13)");
        return;
    };
    // Loaded by path, so that cudarc's load by name (and NVRTC's of its builtins)
    // finds them in this process.
    for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
        // SAFETY: NVRTC's initialisers only; the library stays loaded for the process.
        let lib = unsafe { libloading::Library::new(dir.join(name)) }.expect("load NVRTC");
        std::mem::forget(lib);
    }
    let ptx =
        kascade::lambdas::cuda::compile(SOURCE, "threshold", None).expect("the example compiles");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gpu-lambda/threshold.ptx");
    if std::env::var_os("KASCADE_WRITE_PTX").is_some() {
        std::fs::write(&path, &ptx).unwrap();
    }
    let release = |p: &str| {
        p.lines()
            .find(|l| l.contains("Cuda compilation tools"))
            .map(str::to_string)
    };
    if release(&ptx) != release(PTX) {
        skip(&format!(
            "this NVRTC ({:?}) is not the one the committed PTX was made with ({:?})",
            release(&ptx),
            release(PTX)
        ));
        return;
    }
    assert_eq!(
        ptx, PTX,
        "examples/gpu-lambda/threshold.ptx is stale: rerun with KASCADE_WRITE_PTX=1"
    );
}

/// `payload` after one value the threshold keeps: every input has output, so every
/// input's output can be waited for.
fn with_one_kept(payload: Vec<u8>) -> Vec<u8> {
    let mut value = 0.75f32.to_le_bytes().to_vec();
    value.extend(payload);
    value
}

/// A broker with a GPU, or `None` (and the test skips).
fn gpu_broker(extra: &[&str]) -> Option<Broker> {
    let b = Broker::start(extra);
    let report = b.gpu();
    if report["available"] != true {
        skip(&format!("no GPU: {}", report["reason"]));
        b.stop();
        return None;
    }
    Some(b)
}

#[test]
fn a_gpu_lambda_reads_each_new_version_never_a_stale_one() {
    let Some(b) = gpu_broker(&[]) else {
        return;
    };
    b.create_pool("/frames", "volatile", true);
    b.create_pool("/scored", "volatile", false);
    let a = b.deploy_example("above", "/frames", "/scored");
    assert_eq!(a.status, 201, "{a:?}");
    // Versions of one key, each different, some larger than the last, some smaller.
    for (seq, count) in [1000usize, 64 << 10, 3, 200_000, 17]
        .into_iter()
        .enumerate()
    {
        let value = with_one_kept(cpu::payload(count, seq as u64 + 1));
        b.put("/frames/cam1", &value);
        let out = b.wait_value("/scored/cam1", seq as u64);
        assert_eq!(
            out,
            cpu::threshold(&value, LIMIT),
            "version {seq}: the GPU's output is not the CPU's for that version's bytes"
        );
    }
    let report = b.gpu();
    let cache = &report["cache"];
    assert!(
        cache["hits"].as_u64().unwrap() + cache["misses"].as_u64().unwrap() >= 5,
        "{report}"
    );
    assert!(cache["entries"].as_u64().unwrap() >= 1, "{report}");
    let l = b.http.get("/v1/lambdas/above").json();
    assert_eq!(l["stats"]["errors"], 0, "{l}");
    b.stop();
}

#[test]
fn the_gpu_cache_evicts_when_full_and_stays_within_its_capacity() {
    let capacity = 3u64 << 20;
    let Some(b) = gpu_broker(&["--gpu-cache-bytes", &capacity.to_string()]) else {
        return;
    };
    b.create_pool("/frames", "volatile", true);
    b.create_pool("/scored", "volatile", false);
    assert_eq!(b.deploy_example("above", "/frames", "/scored").status, 201);
    // Six objects of 1 MiB through a 3 MiB cache, twice, and one larger than the cache.
    let values: Vec<Vec<u8>> = (0..6)
        .map(|i| with_one_kept(cpu::payload(1 << 18, 100 + i)))
        .collect();
    for round in 0..2u64 {
        for (i, v) in values.iter().enumerate() {
            let key = format!("/frames/k{i}");
            b.put(&key, v);
            let out = b.wait_value(&format!("/scored/k{i}"), round);
            assert_eq!(out, cpu::threshold(v, LIMIT), "k{i} round {round}");
        }
    }
    let big = with_one_kept(cpu::payload(1 << 20, 7));
    b.put("/frames/big", &big);
    assert_eq!(b.wait_value("/scored/big", 0), cpu::threshold(&big, LIMIT));
    let report = b.gpu();
    let cache = &report["cache"];
    assert_eq!(cache["capacity_bytes"], capacity, "{report}");
    assert!(cache["bytes"].as_u64().unwrap() <= capacity, "{report}");
    assert!(cache["entries"].as_u64().unwrap() <= 3, "{report}");
    assert!(cache["evictions"].as_u64().unwrap() >= 9, "{report}");
    assert!(cache["too_big"].as_u64().unwrap() >= 1, "{report}");
    let metrics = String::from_utf8(b.http.get("/metrics").body).unwrap();
    assert!(metrics.lines().any(|l| l == "kascade_gpu_available 1"));
    assert_eq!(b.http.get("/v1/lambdas/above").json()["stats"]["errors"], 0);
    b.stop();
}
