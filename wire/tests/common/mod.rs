//! A small in-process native server for the wire crate's tests: it speaks
//! the frame protocol over the real transports (through `ServerConnection`)
//! and keeps topics and K/V objects in memory. The real broker (with the
//! engine) lives in the broker crate and has its own tests; this one only
//! has to answer frames correctly so the client and transports can be
//! exercised end to end.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kascade_wire::native::frame::{
    self, error_code, Ack, Body, ErrorFrame, Frame, GetAt, KeyInfo, Notify, Seq,
};
use kascade_wire::native::server::Interest;
use kascade_wire::native::{Listener, NativeError, ServerConnection, ServerOptions, Waker};

/// A record to store: key, value, headers.
pub type TestRecord<'a> = (Option<&'a [u8]>, &'a [u8], Vec<(&'a str, Option<&'a [u8]>)>);

/// One stored K/V version: (version, seq, timestamp_us, value).
type Version = (u64, u64, u64, Vec<u8>);

/// One stored batch.
#[derive(Clone)]
struct Stored {
    base: i64,
    count: u32,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct State {
    logs: HashMap<(String, i32), Vec<Stored>>,
    kv: BTreeMap<String, Vec<Version>>,
    version: u64,
    wakers: Vec<Waker>,
    /// Connections served so far that have ended, with how they ended.
    ended: Vec<String>,
}

/// Partitions every topic has.
pub const PARTITIONS: i32 = 2;

fn log_end(log: &[Stored]) -> i64 {
    log.last().map_or(0, |s| s.base + i64::from(s.count))
}

/// Encodes records `(key, value, headers)` as one v2 batch at `base`.
pub fn encode_batch(base: i64, records: &[TestRecord<'_>], compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v, hs))| {
            let mut headers = IndexMap::new();
            for (n, hv) in hs {
                headers.insert(
                    StrBytes::from_string(n.to_string()),
                    hv.map(Bytes::copy_from_slice),
                );
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + base + i as i64,
                key: k.map(Bytes::copy_from_slice),
                value: Some(Bytes::copy_from_slice(v)),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

/// A running toy server.
pub struct ToyServer {
    pub url: String,
    state: Arc<Mutex<State>>,
    _accept: JoinHandle<()>,
}

impl ToyServer {
    /// Binds `url` and serves every connection on its own thread.
    pub fn start(url: &str, opts: ServerOptions) -> ToyServer {
        let listener = Listener::bind(url).unwrap();
        let url = listener.url().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let accept = std::thread::spawn(move || loop {
            let Ok(incoming) = listener.accept() else {
                return;
            };
            let st = st.clone();
            let opts = opts.clone();
            std::thread::spawn(move || {
                let outcome = match incoming.handshake(&opts) {
                    Ok(conn) => serve(conn, &st),
                    Err(e) => Err(e),
                };
                let what = match outcome {
                    Ok(()) => "bye".to_string(),
                    Err(e) => e.to_string(),
                };
                st.lock().unwrap().ended.push(what);
            });
        });
        ToyServer {
            url,
            state,
            _accept: accept,
        }
    }

    /// How each finished connection ended, waiting up to 30 s for `n` of them.
    pub fn ended(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ended = self.state.lock().unwrap().ended.clone();
            if ended.len() >= n || Instant::now() > deadline {
                return ended;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Appends one batch of `records` (as a Kafka producer would) and wakes subscribers.
    pub fn append(
        &self,
        topic: &str,
        partition: i32,
        records: &[TestRecord<'_>],
        compression: Compression,
    ) -> i64 {
        let mut st = self.state.lock().unwrap();
        let base = append(&mut st, topic, partition, records, compression);
        wake_all(&mut st);
        base
    }
}

fn append(
    st: &mut State,
    topic: &str,
    partition: i32,
    records: &[TestRecord<'_>],
    compression: Compression,
) -> i64 {
    let log = st.logs.entry((topic.to_string(), partition)).or_default();
    let base = log_end(log);
    log.push(Stored {
        base,
        count: records.len() as u32,
        bytes: encode_batch(base, records, compression),
    });
    base
}

fn wake_all(st: &mut State) {
    st.wakers.retain(|w| w.wake().is_ok());
}

struct Sub {
    topic: String,
    /// partition -> next offset to push
    next: Vec<(i32, i64)>,
}

fn serve(mut conn: ServerConnection, st: &Mutex<State>) -> Result<(), NativeError> {
    st.lock().unwrap().wakers.push(conn.waker());
    let mut buf = Vec::new();
    let mut subs: HashMap<u64, Sub> = HashMap::new();
    let deadline = || Some(Instant::now() + Duration::from_secs(20));
    loop {
        while conn.try_recv(&mut buf)? {
            let f = frame::decode(&buf)?;
            let id = f.id;
            fn error(id: u64, code: u16, message: &str) -> Frame<'_> {
                Frame::new(id, Body::Error(ErrorFrame { code, message }))
            }
            let reply = |code, msg| error(id, code, msg);
            match f.body {
                Body::Publish(p) => {
                    let partition = if p.partition < 0 { 0 } else { p.partition };
                    if partition >= PARTITIONS || p.topic.starts_with("missing") {
                        conn.send(
                            &reply(
                                error_code::UNKNOWN_TOPIC_OR_PARTITION,
                                "no such topic or partition",
                            ),
                            deadline(),
                        )?;
                        continue;
                    }
                    let headers: Vec<(&str, Option<&[u8]>)> =
                        p.headers.iter().map(|h| (h.name, h.value)).collect();
                    let compression = if p.topic.starts_with("lz4") {
                        Compression::Lz4
                    } else {
                        Compression::None
                    };
                    let base = {
                        let mut s = st.lock().unwrap();
                        let base = append(
                            &mut s,
                            p.topic,
                            partition,
                            &[(p.key, p.value, headers)],
                            compression,
                        );
                        wake_all(&mut s);
                        base
                    };
                    let ack = Ack {
                        partition,
                        offset: base,
                        version: base as u64,
                        timestamp: 1_700_000_000_000 + base,
                    };
                    conn.send(&Frame::new(id, Body::Ack(ack)), deadline())?;
                }
                Body::Subscribe(s) => {
                    let parts: Vec<i32> = if s.partitions.is_empty() {
                        (0..PARTITIONS).collect()
                    } else {
                        s.partitions.iter().collect()
                    };
                    let mut next = Vec::new();
                    {
                        let st = st.lock().unwrap();
                        for p in parts {
                            let log = st
                                .logs
                                .get(&(s.topic.to_string(), p))
                                .map(Vec::as_slice)
                                .unwrap_or_default();
                            let start = match s.from {
                                -2 => log.first().map_or(0, |b| b.base),
                                -1 => log_end(log),
                                o => o,
                            };
                            next.push((p, start));
                        }
                    }
                    conn.send(
                        &Frame::new(id, Body::SubscribeOk(Seq::Slice(&next))),
                        deadline(),
                    )?;
                    subs.insert(
                        id,
                        Sub {
                            topic: s.topic.to_string(),
                            next,
                        },
                    );
                }
                Body::Unsubscribe => {
                    subs.remove(&id);
                    conn.send(
                        &Frame::new(
                            id,
                            Body::Ack(Ack {
                                partition: -1,
                                offset: 0,
                                version: 0,
                                timestamp: 0,
                            }),
                        ),
                        deadline(),
                    )?;
                }
                Body::Put(kv) | Body::Trigger(kv) => {
                    let mut s = st.lock().unwrap();
                    s.version += 1;
                    let version = s.version;
                    let entry = s.kv.entry(kv.key.to_string()).or_default();
                    let seq = entry.len() as u64;
                    if matches!(f.body, Body::Put(_)) {
                        entry.push((
                            version,
                            seq,
                            1_700_000_000_000_000 + version,
                            kv.value.to_vec(),
                        ));
                    }
                    drop(s);
                    let ack = Ack {
                        partition: -1,
                        offset: seq as i64,
                        version,
                        timestamp: 1_700_000_000_000_000 + version as i64,
                    };
                    conn.send(&Frame::new(id, Body::Ack(ack)), deadline())?;
                }
                Body::Get(g) => {
                    let s = st.lock().unwrap();
                    let found = s.kv.get(g.key).and_then(|vs| match g.at {
                        GetAt::Latest => vs.last(),
                        GetAt::Version(v) => vs.iter().find(|o| o.0 == v),
                        GetAt::Seq(q) => vs.get(q as usize),
                        GetAt::TimeUs(t) => vs.iter().rev().find(|o| o.2 <= t),
                    });
                    let frame = match found {
                        Some((version, seq, ts, value)) => Frame::new(
                            id,
                            Body::Object(frame::Object {
                                version: *version,
                                seq: *seq,
                                count: 1,
                                timestamp_us: *ts,
                                key: g.key,
                                value,
                            }),
                        ),
                        None => reply(error_code::NOT_FOUND, "no such object"),
                    };
                    conn.send(&frame, deadline())?;
                }
                Body::List(prefix) => {
                    let s = st.lock().unwrap();
                    let keys: Vec<KeyInfo<'_>> =
                        s.kv.range(prefix.to_string()..)
                            .take_while(|(k, _)| k.starts_with(prefix))
                            .map(|(k, vs)| KeyInfo {
                                key: k,
                                start_seq: 0,
                                next_seq: vs.len() as u64,
                            })
                            .collect();
                    conn.send(&Frame::new(id, Body::Keys(Seq::Slice(&keys))), deadline())?;
                }
                Body::Bye => return Ok(()),
                other => {
                    let msg = format!("unexpected frame kind {}", other.kind());
                    conn.send(&reply(error_code::BAD_FRAME, &msg), deadline())?;
                }
            }
        }
        // Push what subscribers have not seen yet.
        let mut pushes: Vec<(u64, i32, Stored)> = Vec::new();
        {
            let s = st.lock().unwrap();
            for (&sid, sub) in &subs {
                for &(p, next) in &sub.next {
                    if let Some(log) = s.logs.get(&(sub.topic.clone(), p)) {
                        for b in log.iter().filter(|b| b.base + i64::from(b.count) > next) {
                            pushes.push((sid, p, b.clone()));
                        }
                    }
                }
            }
        }
        for (sid, p, b) in pushes {
            let notify = Notify {
                partition: p,
                record_count: b.count,
                base_offset: b.base,
                batch: &b.bytes,
            };
            conn.send(&Frame::new(sid, Body::Notify(notify)), deadline())?;
            if let Some(sub) = subs.get_mut(&sid) {
                for n in &mut sub.next {
                    if n.0 == p {
                        n.1 = b.base + i64::from(b.count);
                    }
                }
            }
        }
        conn.flush()?;
        conn.wait(Interest::RECV, None)?;
    }
}
