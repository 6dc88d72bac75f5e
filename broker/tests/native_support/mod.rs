//! A `kascade serve` process with its native listeners (shared memory and
//! TCP) for the native tests, and what they ask of it over the admin API:
//! topics, pools and the Prometheus metrics.

#![allow(dead_code)] // each test file uses its own part of this module

use std::time::{Duration, Instant};

use kascade_wire::native::{Client, ClientOptions};
use serde_json::json;

use crate::http::Http;
use crate::spawn;

/// How long to wait for the broker to reach a state: a hang guard, not a speed check.
pub const GUARD: Duration = Duration::from_secs(30);

/// A running broker with both native listeners.
pub struct Native {
    /// The process.
    pub served: spawn::Served,
    /// Its admin API.
    pub http: Http,
    /// `shm:///.../native.sock`.
    pub shm: String,
    /// `tcp://127.0.0.1:port`.
    pub tcp: String,
    /// Its data dir.
    pub dir: tempfile::TempDir,
}

impl Drop for Native {
    fn drop(&mut self) {
        if let Ok(None) = self.served.child.try_wait() {
            let _ = self.served.child.kill();
            let _ = self.served.child.wait();
        }
    }
}

impl Native {
    /// Starts a broker on free ports with `extra` flags.
    pub fn start(extra: &[&str]) -> Native {
        let dir = tempfile::tempdir().expect("a data dir");
        let mut flags = vec!["--native-tcp", "127.0.0.1:0"];
        flags.extend_from_slice(extra);
        let served = spawn::serve("127.0.0.1:0", dir.path(), &flags);
        let field = |name: &str| {
            spawn::field(&served.ready, name)
                .unwrap_or_else(|| panic!("no {name}= in {:?}", served.ready))
        };
        let shm = field("native");
        let tcp = field("native_tcp");
        assert!(shm.starts_with("shm:///"), "{shm}");
        assert!(tcp.starts_with("tcp://"), "{tcp}");
        let http = Http::new(&served.admin_addr(), None);
        Native {
            served,
            http,
            shm,
            tcp,
            dir,
        }
    }

    /// Both native URLs.
    pub fn urls(&self) -> [String; 2] {
        [self.shm.clone(), self.tcp.clone()]
    }

    /// Connects a client with a name (and a hang guard on every answer).
    pub fn client(&self, url: &str, name: &str) -> Client {
        self.client_with(url, name, 0)
    }

    /// Connects a client asking for rings of `ring` bytes (0: the broker's default).
    pub fn client_with(&self, url: &str, name: &str, ring: u32) -> Client {
        Client::connect_with(
            url,
            ClientOptions {
                client_name: name.into(),
                ring_capacity: ring,
                request_timeout: Some(GUARD),
                ..ClientOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
    }

    /// Creates a topic through the admin API.
    pub fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let configs: serde_json::Map<String, serde_json::Value> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let a = self.http.json(
            "POST",
            "/v1/topics",
            &json!({"name": name, "partitions": partitions, "configs": configs}),
        );
        assert_eq!(a.status, 201, "creating topic {name}: {a:?}");
    }

    /// Creates a pool through the admin API.
    pub fn create_pool(&self, prefix: &str, storage: &str) {
        let a = self.http.json(
            "POST",
            "/v1/pools",
            &json!({"prefix": prefix, "storage": storage}),
        );
        assert_eq!(a.status, 201, "creating pool {prefix}: {a:?}");
    }

    /// The value of metric `name` with exactly these labels (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let a = self.http.get("/metrics");
        assert_eq!(a.status, 200);
        let text = String::from_utf8_lossy(&a.body).into_owned();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse::<f64>().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Waits (with a hang guard) until `series` reads `want`.
    pub fn wait_metric(&self, series: &str, want: f64) {
        let deadline = Instant::now() + GUARD;
        loop {
            let got = self.metric(series);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {got}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next broker log line containing `needle` (with a hang guard).
    pub fn wait_log(&self, needle: &str) -> String {
        spawn::wait_for(&self.served.log, needle)
    }

    /// True while the broker process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.served.child.try_wait(), Ok(None))
    }
}

/// One record as a subscriber received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
    /// The headers, in order.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Every record a client receives until it has `n`.
pub fn receive(c: &mut Client, n: usize) -> Vec<Received> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = c
            .next_record(Some(GUARD))
            .expect("next record")
            .unwrap_or_else(|| panic!("only {} of {n} records arrived", out.len()));
        out.push(Received {
            partition: d.partition(),
            offset: d.offset(),
            key: d.key().map(<[u8]>::to_vec),
            value: d.value().to_vec(),
            headers: d
                .headers()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
        });
    }
    out
}
