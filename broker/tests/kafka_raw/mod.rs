//! A real `kascade serve` process and raw Kafka connections to it: requests
//! are encoded and responses decoded with `kafka-protocol`, but the bytes go
//! over a plain TCP socket, so a test can also send anything else.

#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// How long a read may block before the test gives up: a guard against a
/// hung test, not an assertion about speed.
const READ_GUARD: Duration = Duration::from_secs(60);

/// A `kascade serve` child process with a private data dir on a free port.
pub struct Broker {
    child: Child,
    logs: mpsc::Receiver<String>,
    /// Every log line read so far.
    pub seen: Vec<String>,
    /// The Kafka listener's address.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts the binary with `extra` flags and waits until it is ready.
    pub fn start(extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kascade"))
            .args([
                "serve",
                "--admin-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .env("KASCADE_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn kascade");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut broker = Broker {
            child,
            logs,
            seen: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
        };
        let ready = broker.wait_log("kascade is ready");
        let addr = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kafka="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no kafka=ADDR in {ready:?}"));
        broker.addr = addr;
        broker
    }

    /// Waits for a log line containing `needle` (seen before or arriving) and returns it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.logs.recv_timeout(READ_GUARD) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no log line containing {needle:?} ({e}); log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Takes the log lines that have arrived, without waiting.
    pub fn drain_logs(&mut self) {
        while let Ok(line) = self.logs.try_recv() {
            self.seen.push(line);
        }
    }

    /// Asserts that the process is still running.
    pub fn assert_alive(&mut self, after: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.drain_logs();
            panic!(
                "the broker died ({status}) after {after}; log:\n{}",
                self.seen.join("\n")
            );
        }
    }

    /// Opens a connection to the Kafka listener.
    pub fn connect(&self) -> Conn {
        let stream = TcpStream::connect(self.addr).expect("connect to the broker");
        stream.set_read_timeout(Some(READ_GUARD)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            next_correlation: 1,
        }
    }

    /// Sends SIGTERM, checks that the broker exits 0 and never logged a panic.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        self.wait_log("kascade stopped");
        let status = self.child.wait().expect("wait");
        self.drain_logs();
        assert!(
            status.success(),
            "exit status {status:?}; log:\n{}",
            self.seen.join("\n")
        );
        let panics: Vec<&String> = self
            .seen
            .iter()
            .filter(|l| l.contains("panicked"))
            .collect();
        assert!(panics.is_empty(), "the broker panicked: {panics:?}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A failed test must not leave a broker behind; after stop() this is a no-op.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a read found.
#[derive(Debug)]
pub enum Reply {
    /// A whole response frame (size prefix removed).
    Frame(Bytes),
    /// The broker closed the connection (EOF or reset).
    Closed,
}

/// One client connection.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    next_correlation: i32,
}

/// A request frame, size prefix included; `Err` when kafka-protocol cannot
/// encode `body` at `version` (a field the version lacks, or a version its
/// message struct does not know).
pub fn try_request_frame(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("kascade-test")))
        .encode(&mut out, api.request_header_version(version))
        .expect("encode request header");
    body.encode(&mut out, version)
        .map_err(|e| format!("kafka-protocol cannot encode a {api:?} v{version} request: {e}"))?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.to_vec())
}

/// A request frame, size prefix included.
pub fn request_frame(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> Vec<u8> {
    try_request_frame(api, version, correlation_id, body).unwrap_or_else(|e| panic!("{e}"))
}

/// Just the request header (no size prefix) of a request at `version`.
pub fn header_bytes(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    header_version: i16,
) -> Vec<u8> {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("kascade-test")))
        .encode(&mut out, header_version)
        .expect("encode request header");
    out.to_vec()
}

/// Prefixes `body` with its size.
pub fn sized(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

impl Conn {
    /// A fresh correlation id.
    pub fn correlation(&mut self) -> i32 {
        self.next_correlation += 1;
        self.next_correlation
    }

    /// Writes raw bytes; the broker may already have closed, which is not an error here.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            assert!(
                matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                "write failed: {e}"
            );
        }
    }

    /// Reads one response frame, or notices that the broker closed the connection.
    pub fn read(&mut self) -> Reply {
        let mut size = [0u8; 4];
        match self.stream.read_exact(&mut size) {
            Ok(()) => {}
            Err(e) if closed(&e) => return Reply::Closed,
            Err(e) => panic!("reading a response size: {e}"),
        }
        let len = i32::from_be_bytes(size);
        assert!(len >= 4, "response frame of {len} bytes");
        let mut body = vec![0u8; len as usize];
        match self.stream.read_exact(&mut body) {
            Ok(()) => Reply::Frame(Bytes::from(body)),
            Err(e) => panic!("the broker sent a partial response frame: {e}"),
        }
    }

    /// Like [`Conn::read`], but `None` when nothing arrives within `wait`
    /// (a request the broker may legitimately hold, like a long-poll fetch).
    pub fn read_within(&mut self, wait: Duration) -> Option<Reply> {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut first = [0u8; 1];
        let got = self.stream.peek(&mut first);
        self.stream
            .set_read_timeout(Some(READ_GUARD))
            .expect("timeout");
        match got {
            Ok(_) => Some(self.read()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) if closed(&e) => Some(Reply::Closed),
            Err(e) => panic!("waiting for a response: {e}"),
        }
    }

    /// Sends `body` as `api` at `version` and decodes the answer at that version.
    /// `Err` says what went wrong: closed connection, bad header, or a body that
    /// does not decode (or has bytes left over) at `version`.
    pub fn call(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &RequestKind,
    ) -> Result<ResponseKind, String> {
        let correlation_id = self.correlation();
        self.send_raw(&try_request_frame(api, version, correlation_id, body)?);
        match self.read() {
            Reply::Closed => Err("the broker closed the connection instead of answering".into()),
            Reply::Frame(frame) => decode_response(frame, api, version, correlation_id),
        }
    }

    /// Waits until the broker closes the connection; `Err` with the frames it
    /// sent instead, if any.
    pub fn expect_closed(&mut self) -> Result<(), String> {
        match self.read() {
            Reply::Closed => Ok(()),
            Reply::Frame(f) => Err(format!("expected a close, got a {}-byte response", f.len())),
        }
    }

    /// ApiVersions v3 and Metadata v12 (all topics) both answer correctly.
    pub fn check_healthy(&mut self) -> Result<(), String> {
        let req = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("kascade-test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        match self.call(ApiKey::ApiVersions, 3, &req)? {
            ResponseKind::ApiVersions(r) if r.error_code == 0 && !r.api_keys.is_empty() => {}
            other => return Err(format!("bad ApiVersions answer: {other:?}")),
        }
        let req = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
        match self.call(ApiKey::Metadata, 12, &req)? {
            ResponseKind::Metadata(r) if r.brokers.len() == 1 => Ok(()),
            other => Err(format!("bad Metadata answer: {other:?}")),
        }
    }
}

/// Decodes a response frame for `api` at `version`, checking the correlation
/// id and that the body is consumed exactly.
pub fn decode_response(
    mut frame: Bytes,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<ResponseKind, String> {
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| format!("response header does not decode: {e}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "correlation id {} answers request {correlation_id}",
            header.correlation_id
        ));
    }
    let body = ResponseKind::decode(api, &mut frame, version)
        .map_err(|e| format!("response body does not decode at v{version}: {e}"))?;
    if !frame.is_empty() {
        return Err(format!(
            "{} bytes left over after the v{version} response body",
            frame.len()
        ));
    }
    Ok(body)
}

fn closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}
