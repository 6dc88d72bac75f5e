//! The admin HTTP API of a real `kascade serve` process, resource by resource:
//! round trips through HTTP, the error statuses and their JSON bodies.

mod http;
mod spawn;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Answer, Http};
use serde_json::{json, Value};

/// A broker process and a client of its admin API.
struct Broker {
    served: spawn::Served,
    api: Http,
}

/// A test that fails half way still ends its broker.
impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.served.child.try_wait() {
            let _ = self.served.child.kill();
            let _ = self.served.child.wait();
        }
    }
}

impl Broker {
    fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        let served = spawn::serve("127.0.0.1:0", data_dir, extra);
        let api = Http::new(&served.admin_addr(), None);
        Broker { served, api }
    }

    fn stop(mut self) {
        spawn::stop(&mut self.served.child);
    }
}

/// Polls `path` until it answers 200 (a guard against a hang, not a speed check).
fn eventually(api: &Http, path: &str) -> Answer {
    let deadline = Instant::now() + spawn::LOG_GUARD;
    loop {
        let a = api.get(path);
        if a.status == 200 {
            return a;
        }
        assert!(Instant::now() < deadline, "{path} never appeared: {a:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pool(api: &Http, prefix: &str, storage: &str) {
    let a = api.json(
        "POST",
        "/v1/pools",
        &json!({ "prefix": prefix, "storage": storage }),
    );
    assert_eq!(a.status, 201, "{a:?}");
}

#[test]
fn pools_are_created_listed_changed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let api = &b.api;

    let created = api.json(
        "POST",
        "/v1/pools",
        &json!({"prefix": "/sensors", "storage": "volatile", "shards": 2}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let p = created.json();
    assert_eq!(p["prefix"], "/sensors");
    assert_eq!(p["shards"], 2);
    assert_eq!(p["ordering"], "per-key");
    assert_eq!(p["fsync"]["mode"], "always");

    let again = api.json(
        "POST",
        "/v1/pools",
        &json!({"prefix": "/sensors", "storage": "volatile"}),
    );
    assert_eq!(again.status, 409);
    assert!(again.error().contains("already exists"), "{again:?}");
    for (bad, why) in [
        (
            json!({"prefix": "sensors", "storage": "volatile"}),
            "start with",
        ),
        (
            json!({"prefix": "/cms/x", "storage": "volatile"}),
            "/v1/topics",
        ),
        (
            json!({"prefix": "/kascade/x", "storage": "volatile"}),
            "reserved",
        ),
        (
            json!({"prefix": "/a", "storage": "volatile", "shards": 0}),
            "shards",
        ),
        (
            json!({"prefix": "/a", "storage": "floppy"}),
            "unknown variant",
        ),
        (
            json!({"prefix": "/a", "storage": "volatile", "sharts": 2}),
            "sharts",
        ),
    ] {
        let a = api.json("POST", "/v1/pools", &bad);
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert!(a.error().contains(why), "{bad}: {}", a.error());
    }

    let list = api.get("/v1/pools").json();
    let prefixes: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prefix"].as_str().unwrap())
        .collect();
    assert!(prefixes.contains(&"/sensors"), "{prefixes:?}");
    assert!(prefixes.contains(&"/kascade"), "{prefixes:?}");
    assert_eq!(api.get("/v1/pools/sensors").json()["shards"], 2);

    let changed = api.json(
        "PATCH",
        "/v1/pools/sensors",
        &json!({"retention": {"max_versions": 3}, "ordering": "concurrent"}),
    );
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(changed.json()["retention"]["max_versions"], 3);
    let read = api.get("/v1/pools/sensors").json();
    assert_eq!(read["ordering"], "concurrent");
    assert_eq!(read["retention"]["max_versions"], 3);

    let shards = api.json("PATCH", "/v1/pools/sensors", &json!({"shards": 8}));
    assert_eq!(shards.status, 400);
    assert!(shards.error().contains("cannot change"), "{shards:?}");
    assert_eq!(api.get("/v1/pools/sensors").json()["shards"], 2);
    let missing = api.json("PATCH", "/v1/pools/nope", &json!({}));
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("/nope"));

    assert_eq!(api.delete("/v1/pools/cms/meta").status, 409);
    assert_eq!(api.delete("/v1/pools/kascade").status, 400);
    assert_eq!(api.delete("/v1/pools/sensors").status, 204);
    assert_eq!(api.get("/v1/pools/sensors").status, 404);
    assert_eq!(api.delete("/v1/pools/sensors").status, 404);

    // The root pool, whose prefix is `/`, is `%2F` in the path.
    pool(api, "/", "volatile");
    assert_eq!(api.get("/v1/pools/%2F").json()["prefix"], "/");
    assert_eq!(api.delete("/v1/pools/%2F").status, 204);
    assert_eq!(api.get("/v1/pools/%2F").status, 404);
    b.stop();
}

#[test]
fn topics_made_here_are_topics_for_kafka_clients() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let api = &b.api;

    let created = api.json(
        "POST",
        "/v1/topics",
        &json!({"name": "orders", "partitions": 3, "configs": {"retention.ms": "60000"}}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let t = created.json();
    assert_eq!(t["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(t["configs"]["retention.ms"], "60000");

    for (body, status, why) in [
        (json!({"name": "orders"}), 409, "already exists"),
        (json!({"name": "a/b"}), 400, "invalid topic name"),
        (json!({"name": "x", "partitions": 0}), 400, "partitions"),
        (
            json!({"name": "x", "configs": {"cleanup.policy": "compact"}}),
            400,
            "compaction",
        ),
        (
            json!({"name": "x", "replication_factor": 3}),
            400,
            "replication",
        ),
    ] {
        let a = api.json("POST", "/v1/topics", &body);
        assert_eq!(a.status, status, "{body}: {a:?}");
        assert!(a.error().contains(why), "{body}: {}", a.error());
    }

    // A Kafka client sees the topic and produces to it; the API sees the offsets move.
    let python = std::env::var("KASCADE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1]})
for i in range(5):
    p.produce("orders", value=b"r%d" % i, partition=1)
assert p.flush(30) == 0
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, &b.served.kafka_addr()])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = api.get("/v1/topics/orders").json();
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts[1]["start_offset"], 0);
    assert_eq!(parts[1]["end_offset"], 5);
    assert_eq!(parts[0]["end_offset"], 0);

    let list = api.get("/v1/topics").json();
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["partitions"], 3);

    // Its pool is the topic's, not the pools API's.
    assert_eq!(api.delete("/v1/pools/cms/topics/orders").status, 409);
    assert_eq!(api.delete("/v1/topics/orders").status, 204);
    let gone = api.get("/v1/topics/orders");
    assert_eq!(gone.status, 404);
    assert!(gone.error().contains("orders"));
    assert_eq!(api.delete("/v1/topics/orders").status, 404);
    b.stop();
}

#[test]
fn objects_are_read_by_version_seq_and_time_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &["--admin-max-body-bytes", "65536"]);
    let api = &b.api;
    pool(api, "/sensors", "persistent");

    let first = api.send(
        "PUT",
        "/v1/kv/sensors/t1",
        b"21.5",
        "application/octet-stream",
    );
    assert_eq!(first.status, 200, "{first:?}");
    let first = first.json();
    assert_eq!(first["key"], "/sensors/t1");
    assert_eq!(first["seq"], 0);
    let second = api
        .send(
            "PUT",
            "/v1/kv/sensors/t1",
            b"21.7",
            "application/octet-stream",
        )
        .json();
    assert_eq!(second["seq"], 1);

    let latest = api.get("/v1/kv/sensors/t1");
    assert_eq!(latest.status, 200);
    assert_eq!(latest.body, b"21.7");
    assert_eq!(
        latest.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(latest.header("kascade-seq").as_deref(), Some("1"));
    assert_eq!(
        latest.header("kascade-prev-version"),
        Some(first["version"].to_string())
    );
    let v1 = first["version"].as_u64().unwrap();
    let t1 = first["timestamp_us"].as_u64().unwrap();
    for query in [
        "seq=0".to_string(),
        format!("version={v1}"),
        format!("at_us={t1}"),
    ] {
        let a = api.get(&format!("/v1/kv/sensors/t1?{query}"));
        assert_eq!(a.body, b"21.5", "{query}: {a:?}");
    }
    let j = api.get("/v1/kv/sensors/t1?seq=0&format=json").json();
    assert_eq!(j["version"], v1);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(j["value_base64"].as_str().unwrap())
            .unwrap(),
        b"21.5"
    );

    let both = api.get("/v1/kv/sensors/t1?seq=0&version=1");
    assert_eq!(both.status, 400);
    assert!(both.error().contains("at most one"));
    let far = api.get("/v1/kv/sensors/t1?seq=99");
    assert_eq!(far.status, 404);
    assert!(far.error().contains("seq 99"), "{}", far.error());
    let nopool = api.send(
        "PUT",
        "/v1/kv/elsewhere/x",
        b"1",
        "application/octet-stream",
    );
    assert_eq!(nopool.status, 404);
    assert!(
        nopool.error().contains("create a pool"),
        "{}",
        nopool.error()
    );
    let reserved = api.send(
        "PUT",
        "/v1/kv/kascade/pools/x",
        b"1",
        "application/octet-stream",
    );
    assert_eq!(reserved.status, 400);
    assert!(reserved.error().contains("/kascade"));
    let notnum = api.get("/v1/kv/sensors/t1?seq=abc");
    assert_eq!(notnum.status, 400);
    notnum.error();

    api.send("PUT", "/v1/kv/sensors/t2", b"x", "application/octet-stream");
    let list = api.get("/v1/kv?prefix=/sensors").json();
    let keys: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["/sensors/t1", "/sensors/t2"]);
    assert_eq!(list["keys"][0]["next_seq"], 2);
    assert_eq!(list["truncated"], false);
    let one = api.get("/v1/kv?prefix=/sensors&limit=1").json();
    assert_eq!(one["keys"].as_array().unwrap().len(), 1);
    assert_eq!(one["truncated"], true);

    let removed = api.delete("/v1/kv/sensors/t1");
    assert_eq!(removed.status, 200, "{removed:?}");
    assert_eq!(api.get("/v1/kv/sensors/t1").status, 404);
    // The history stays readable by seq.
    assert_eq!(api.get("/v1/kv/sensors/t1?seq=0").body, b"21.5");
    assert_eq!(api.delete("/v1/kv/sensors/t1").status, 404);
    let keys = api.get("/v1/kv?prefix=/sensors").json()["keys"].clone();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");

    // A value over the pool's limit, and a body over the API's.
    pool(api, "/tiny", "volatile");
    let patched = api.json("PATCH", "/v1/pools/tiny", &json!({"max_value_bytes": 16}));
    assert_eq!(patched.status, 200, "{patched:?}");
    let big = api.send(
        "PUT",
        "/v1/kv/tiny/a",
        &[7u8; 32],
        "application/octet-stream",
    );
    assert_eq!(big.status, 413);
    assert!(big.error().contains("limit of 16"), "{}", big.error());
    let huge = api.send(
        "PUT",
        "/v1/kv/sensors/huge",
        &vec![1u8; 100_000],
        "application/octet-stream",
    );
    assert_eq!(huge.status, 413);
    assert!(
        huge.error().contains("--admin-max-body-bytes"),
        "{}",
        huge.error()
    );
    assert_eq!(api.get("/v1/kv/sensors/huge").status, 404);
    b.stop();
}

fn deploy(api: &Http, body: Value) -> Answer {
    api.json("POST", "/v1/lambdas", &body)
}

#[test]
fn lambdas_are_deployed_replaced_counted_and_removed_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let api = &b.api;
    for p in ["/in", "/out", "/out2"] {
        pool(api, p, "persistent");
    }
    let kinds = api.get("/v1/lambda-kinds").json();
    assert!(kinds["kinds"]
        .as_array()
        .unwrap()
        .contains(&json!("forward")));

    let d = deploy(
        api,
        json!({"name": "fwd", "prefix": "/in", "kind": "forward",
               "destinations": [{"prefix": "/out"}]}),
    );
    assert_eq!(d.status, 201, "{d:?}");
    assert_eq!(d.json()["destinations"][0]["mode"], "put");

    for (body, status, why) in [
        (
            json!({"name": "fwd", "prefix": "/in", "kind": "forward"}),
            409,
            "PUT /v1/lambdas/fwd",
        ),
        (
            json!({"name": "x", "prefix": "/in", "kind": "nope"}),
            400,
            "known kinds: cdylib, forward",
        ),
        (
            json!({"name": "back", "prefix": "/out", "kind": "forward",
                   "destinations": [{"prefix": "/in/again"}]}),
            400,
            "back -> fwd -> back",
        ),
        (
            json!({"name": "self", "prefix": "/x", "kind": "forward",
                   "destinations": [{"prefix": "/x/y"}]}),
            400,
            "loop",
        ),
        (
            json!({"name": "bad name", "prefix": "/x", "kind": "forward"}),
            400,
            "must be 1-128",
        ),
        (
            json!({"name": "x", "prefix": "x", "kind": "forward"}),
            400,
            "start with",
        ),
    ] {
        let a = deploy(api, body.clone());
        assert_eq!(a.status, status, "{body}: {a:?}");
        assert!(a.error().contains(why), "{body}: {}", a.error());
    }

    api.send("PUT", "/v1/kv/in/a", b"hello", "application/octet-stream");
    assert_eq!(eventually(api, "/v1/kv/out/a").body, b"hello");
    let list = api.get("/v1/lambdas").json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "fwd");
    assert_eq!(list[0]["active"], true);
    assert!(list[0]["stats"]["calls"].as_u64().unwrap() >= 1, "{list}");
    let one = api.get("/v1/lambdas/fwd").json();
    assert_eq!(one["kind"], "forward");
    assert!(one["config"].is_null());

    // Replacing rebinds at once: what is put after the answer goes the new way.
    let r = api.json(
        "PUT",
        "/v1/lambdas/fwd",
        &json!({"prefix": "/in", "kind": "forward",
                "destinations": [{"prefix": "/out2", "mode": "put"}]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    api.send("PUT", "/v1/kv/in/b", b"two", "application/octet-stream");
    assert_eq!(eventually(api, "/v1/kv/out2/b").body, b"two");
    assert_eq!(api.get("/v1/kv/out/b").status, 404);

    // A trigger reaches the lambda without storing the input.
    let t = api.send("POST", "/v1/trigger/in/c", b"t", "application/octet-stream");
    assert_eq!(t.status, 200, "{t:?}");
    assert_eq!(eventually(api, "/v1/kv/out2/c").body, b"t");
    assert_eq!(api.get("/v1/kv/in/c").status, 404);

    let config_too = api.json(
        "PUT",
        "/v1/lambdas/keep",
        &json!({"prefix": "/out2", "kind": "forward", "config": {"module_base64": "A".repeat(3000)}}),
    );
    assert_eq!(config_too.status, 200);
    assert_eq!(
        api.get("/v1/lambdas/keep").json()["config"]["module_base64"],
        "<3000 characters>"
    );
    assert_eq!(
        api.get("/v1/lambdas/keep?full=true").json()["config"]["module_base64"]
            .as_str()
            .unwrap()
            .len(),
        3000
    );

    assert_eq!(api.delete("/v1/lambdas/fwd").status, 204);
    assert_eq!(api.get("/v1/lambdas/fwd").status, 404);
    assert_eq!(api.delete("/v1/lambdas/fwd").status, 404);
    api.send("PUT", "/v1/kv/in/d", b"gone", "application/octet-stream");

    let data = dir.path().to_path_buf();
    b.stop();
    let b = Broker::start(&data, &[]);
    let after = b.api.get("/v1/lambdas").json();
    let names: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keep"], "{after}");
    assert_eq!(after[0]["active"], true);
    assert_eq!(b.api.get("/v1/kv/out2/d").status, 404);
    b.stop();
}

#[test]
fn pipelines_are_loaded_from_toml_or_json_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let api = &b.api;
    pool(api, "/farm", "volatile");
    let toml = r#"
name = "farm"
[[vertex]]
name = "filter"
prefix = "/farm/frames"
kind = "forward"
destinations = [{ prefix = "/farm/scored", mode = "trigger" }]
[[vertex]]
name = "score"
prefix = "/farm/scored"
kind = "forward"
destinations = [{ prefix = "/farm/stored" }]
"#;
    let loaded = api.send("POST", "/v1/pipelines", toml.as_bytes(), "application/toml");
    assert_eq!(loaded.status, 201, "{loaded:?}");
    let p = loaded.json();
    assert_eq!(p["vertices"][0]["lambda"], "farm.filter");
    assert_eq!(p["vertices"][1]["destinations"][0]["mode"], "put");

    api.send(
        "PUT",
        "/v1/kv/farm/frames/cam1",
        b"frame",
        "application/octet-stream",
    );
    assert_eq!(eventually(api, "/v1/kv/farm/stored/cam1").body, b"frame");
    // The middle stage was reached by trigger: nothing stored there.
    assert_eq!(api.get("/v1/kv/farm/scored/cam1").status, 404);
    let list = api.get("/v1/pipelines").json();
    assert_eq!(list[0]["name"], "farm");
    for v in list[0]["vertices"].as_array().unwrap() {
        assert!(v["stats"]["calls"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(v["active"], true);
    }
    assert_eq!(
        api.get("/v1/pipelines/farm").json()["vertices"][1]["name"],
        "score"
    );
    // The vertices are not lambdas of the lambdas API.
    assert_eq!(api.get("/v1/lambdas").json(), json!([]));
    let clash = deploy(
        api,
        json!({"name": "farm.filter", "prefix": "/farm/x", "kind": "forward"}),
    );
    assert_eq!(clash.status, 409);
    assert!(clash.error().contains("pipeline farm"));

    let again = api.send("POST", "/v1/pipelines", toml.as_bytes(), "application/toml");
    assert_eq!(again.status, 409);
    assert!(again.error().contains("PUT /v1/pipelines/farm"));
    for (body, why) in [
        ("name = ", "invalid pipeline"),
        (
            r#"{"name":"p","vertex":[{"name":"v","prefix":"/farm/a","kind":"nope"}]}"#,
            "known kinds",
        ),
        (
            r#"{"name":"p","vertex":[{"name":"a","prefix":"/farm/a","kind":"forward","destinations":[{"prefix":"/farm/b"}]},
                {"name":"b","prefix":"/farm/b","kind":"forward","destinations":[{"prefix":"/farm/a"}]}]}"#,
            "p.a -> p.b -> p.a",
        ),
    ] {
        let a = api.send("POST", "/v1/pipelines", body.as_bytes(), "application/json");
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert!(a.error().contains(why), "{body}: {}", a.error());
    }
    let json_form = r#"{"name":"farm","vertex":[{"name":"only","prefix":"/farm/frames","kind":"forward",
        "destinations":[{"prefix":"/farm/direct"}]}]}"#;
    let wrong = api.send(
        "PUT",
        "/v1/pipelines/other",
        json_form.as_bytes(),
        "application/json",
    );
    assert_eq!(wrong.status, 400);
    let replaced = api.send(
        "PUT",
        "/v1/pipelines/farm",
        json_form.as_bytes(),
        "application/json",
    );
    assert_eq!(replaced.status, 200, "{replaced:?}");
    api.send(
        "PUT",
        "/v1/kv/farm/frames/cam2",
        b"f2",
        "application/octet-stream",
    );
    assert_eq!(eventually(api, "/v1/kv/farm/direct/cam2").body, b"f2");
    assert_eq!(
        api.get("/v1/pipelines/farm").json()["vertices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    assert_eq!(api.delete("/v1/pipelines/farm").status, 204);
    assert_eq!(api.get("/v1/pipelines/farm").status, 404);
    assert_eq!(api.delete("/v1/pipelines/farm").status, 404);
    assert_eq!(api.get("/v1/pipelines").json(), json!([]));
    b.stop();
}

#[test]
fn every_error_is_json_with_a_status_a_client_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &[]);
    let api = &b.api;
    let cases: Vec<(Answer, u16, &str)> = vec![
        (api.get("/v1/nope"), 404, "/openapi.json"),
        (api.delete("/v1/topics"), 405, "does not take DELETE"),
        (
            api.send("POST", "/v1/pools", b"{", "application/json"),
            400,
            "invalid JSON",
        ),
        (
            api.send("POST", "/v1/pipelines", &[0xff, 0xfe], "application/toml"),
            400,
            "UTF-8",
        ),
        (api.get("/v1/lambdas/none"), 404, "no lambda named"),
    ];
    let allow = api.delete("/v1/topics").header("allow").unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    for (answer, status, why) in cases {
        assert_eq!(answer.status, status, "{answer:?}");
        assert!(answer.error().contains(why), "{}", answer.error());
    }
    let doc = api.get("/openapi.json").json();
    assert_eq!(doc["info"]["title"], "Kascade admin API");
    assert!(doc["paths"]["/v1/kv/{key}"]["put"].is_object());
    b.stop();
}
