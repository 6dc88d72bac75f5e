//! One native connection: its requests, its answers, and what other threads
//! share of it ([`ConnShared`]).
//!
//! The core thread reads a connection's request frames (copied out of the
//! ring before they are decoded) and answers each. An answer that finds the
//! client's response ring full waits in the connection's outbox, and the core
//! reads no further request from that client until the outbox has drained:
//! a client that does not read its answers stops only itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kascade_core::{Ack as EngineAck, FsyncPolicy, Get, Key, Prefix, Put, Storage, Waiter};
use kascade_wire::native::frame::{
    self, error_code, Ack, Body, ErrorFrame, Frame, GetAt, KeyInfo, KeyValue, Object, Seq,
    Subscribe,
};
use kascade_wire::native::{NativeError, ResponseSender, ServerConnection, Waker};
use parking_lot::Mutex;

use super::publish::PendingBatch;
use super::subscriptions::PartitionSub;
use super::{NativeMetrics, NativeShared};
use crate::lambdas::process::registry::UpcallSink;

/// Requests read from one connection per round, so every client gets its turn.
const BUDGET: usize = 4096;
/// How long an ack may wait for its write to become durable.
pub(super) const DURABLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection is being closed: a metric label and, for trouble, the details.
#[derive(Debug)]
pub(super) struct Close {
    /// The `reason` label of `kascade_native_closed_total`.
    pub(super) reason: &'static str,
    /// What went wrong, for the log.
    pub(super) detail: Option<String>,
}

impl Close {
    pub(super) fn new(reason: &'static str, detail: impl Into<Option<String>>) -> Close {
        Close {
            reason,
            detail: detail.into(),
        }
    }
}

impl From<NativeError> for Close {
    fn from(e: NativeError) -> Close {
        let reason = match &e {
            NativeError::Closed => return Close::new("hangup", None),
            NativeError::Ring(_) => "ring_corrupt",
            NativeError::Frame(_) => "bad_frame",
            NativeError::Protocol(_) => "protocol",
            NativeError::TooLarge { .. } => "too_large",
            NativeError::Io(_) => "io",
            _ => "error",
        };
        Close::new(reason, e.to_string())
    }
}

/// Something waiting in a connection's outbox.
enum Outgoing {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// Subscriptions whose SubscribeOk just went out: start them.
    Activate(Vec<Arc<PartitionSub>>),
}

/// What other threads (subscription pumps, ack tasks) share of a connection.
pub(crate) struct ConnShared {
    /// The connection's number, for logs.
    pub(crate) id: u64,
    sender: ResponseSender,
    waker: Waker,
    metrics: Arc<NativeMetrics>,
    outbox: Mutex<VecDeque<Outgoing>>,
    outbox_len: AtomicUsize,
    blocked: Mutex<Vec<Arc<PartitionSub>>>,
    has_blocked: AtomicBool,
    /// The largest frame waiting for room.
    need_room: AtomicUsize,
    /// Another thread asks the core to look at this connection.
    attention: AtomicBool,
    closed: AtomicBool,
    /// The largest frame the connection carries.
    max_payload: usize,
}

impl ConnShared {
    /// The metric handles.
    pub(crate) fn metrics(&self) -> &NativeMetrics {
        &self.metrics
    }

    /// Writes `frame` into the response ring now if it has room (never waits).
    pub(crate) fn try_send(&self, frame: &Frame<'_>) -> Result<bool, NativeError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(NativeError::Closed);
        }
        self.sender.try_send(frame)
    }

    fn wake_core(&self) {
        self.attention.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::debug!(conn = self.id, "waking the native core: {e}");
        }
    }

    /// From any thread: sends `frame` now when nothing waits before it and
    /// there is room, else queues it for the core thread to send.
    pub(crate) fn send_or_queue(&self, frame: &Frame<'_>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut outbox = self.outbox.lock();
        if outbox.is_empty() {
            match self.sender.try_send(frame) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(conn = self.id, "native answer not sent: {e}");
                    return;
                }
            }
        }
        self.push(&mut outbox, frame);
        drop(outbox);
        self.wake_core();
    }

    fn push(&self, outbox: &mut VecDeque<Outgoing>, frame: &Frame<'_>) {
        let mut bytes = Vec::new();
        match frame::encode(frame, &mut bytes) {
            Ok(len) => {
                self.need_room.fetch_max(len, Ordering::Relaxed);
                outbox.push_back(Outgoing::Frame(bytes));
                self.outbox_len.fetch_add(1, Ordering::Release);
            }
            Err(e) => tracing::error!(conn = self.id, "encoding a native answer: {e}"),
        }
    }

    /// A subscription found no room for a Notify of `len` bytes: the core
    /// resumes it when the client makes room.
    pub(crate) fn block(&self, sub: Arc<PartitionSub>, len: usize) {
        self.need_room.fetch_max(len, Ordering::Relaxed);
        self.blocked.lock().push(sub);
        self.has_blocked.store(true, Ordering::Release);
        self.wake_core();
    }

    /// TCP bytes queued but not yet written (0 for rings).
    pub(super) fn queued_bytes(&self) -> usize {
        self.sender.queued_bytes()
    }

    fn outbox_len(&self) -> usize {
        self.outbox_len.load(Ordering::Acquire)
    }
}

/// One connection, owned by the core thread.
pub(super) struct Conn {
    /// The connection's number, for logs.
    pub(super) id: u64,
    /// The wire's connection.
    pub(super) conn: ServerConnection,
    /// What other threads share.
    pub(super) shared: Arc<ConnShared>,
    /// The request being handled (copied out of the ring).
    buf: Vec<u8>,
    /// Publishes being coalesced.
    pub(super) batch: PendingBatch,
    /// Subscription id -> its partitions.
    subs: HashMap<u64, Vec<Arc<PartitionSub>>>,
    /// What the socket is registered for in the core's epoll.
    pub(super) socket_events: u32,
    /// The `process` lambda binding this connection attached to.
    attached: Option<String>,
}

impl Conn {
    /// Wraps a connection that finished its handshake.
    pub(super) fn new(id: u64, conn: ServerConnection, metrics: Arc<NativeMetrics>) -> Conn {
        let shared = Arc::new(ConnShared {
            id,
            sender: conn.sender(),
            waker: conn.waker(),
            metrics,
            outbox: Mutex::new(VecDeque::new()),
            outbox_len: AtomicUsize::new(0),
            blocked: Mutex::new(Vec::new()),
            has_blocked: AtomicBool::new(false),
            need_room: AtomicUsize::new(0),
            attention: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            max_payload: conn.max_payload(),
        });
        Conn {
            id,
            conn,
            shared,
            buf: Vec::with_capacity(4096),
            batch: PendingBatch::default(),
            subs: HashMap::new(),
            socket_events: 0,
            attached: None,
        }
    }

    /// Whether the core reads requests (no answer waits in the outbox).
    pub(super) fn reading(&self) -> bool {
        self.shared.outbox_len() == 0
    }

    /// The room the core waits for before it parks: the largest frame
    /// waiting, when anything waits.
    pub(super) fn waiting_room(&self) -> Option<usize> {
        (self.shared.outbox_len() > 0 || self.shared.has_blocked.load(Ordering::Acquire))
            .then(|| self.shared.need_room.load(Ordering::Relaxed).max(1))
    }

    /// One round: send what waits, resume blocked subscriptions, handle the
    /// requests that are queued (up to a budget). True when anything happened.
    pub(super) fn service(&mut self, ns: &NativeShared) -> Result<bool, Close> {
        let mut worked = false;
        let attention = self.shared.attention.load(Ordering::Relaxed)
            && self.shared.attention.swap(false, Ordering::AcqRel);
        if attention
            || self.shared.outbox_len() > 0
            || self.shared.has_blocked.load(Ordering::Acquire)
        {
            worked |= self.drain_outbox(ns)?;
            worked |= self.resume_blocked(ns)?;
        }
        if self.reading() {
            let mut n = 0;
            while n < BUDGET && self.conn.try_recv(&mut self.buf)? {
                n += 1;
                let buf = std::mem::take(&mut self.buf);
                let handled = self.handle(ns, &buf);
                self.buf = buf;
                handled?;
                if !self.reading() {
                    break;
                }
            }
            if n > 0 {
                worked = true;
                self.flush_publish(ns)?;
            }
        }
        self.conn.flush()?;
        Ok(worked)
    }

    fn drain_outbox(&mut self, ns: &NativeShared) -> Result<bool, Close> {
        let mut worked = false;
        loop {
            let mut outbox = self.shared.outbox.lock();
            let sent = match outbox.front() {
                None => break,
                Some(Outgoing::Frame(bytes)) => {
                    let f = frame::decode(bytes).map_err(|e| {
                        Close::new("internal", format!("a queued answer does not decode: {e}"))
                    })?;
                    self.conn.try_send(&f)?
                }
                Some(Outgoing::Activate(_)) => true,
            };
            if !sent {
                break;
            }
            let item = outbox.pop_front();
            drop(outbox);
            self.shared.outbox_len.fetch_sub(1, Ordering::Release);
            worked = true;
            if let Some(Outgoing::Activate(subs)) = item {
                for s in &subs {
                    s.activate(&ns.kafka.engine);
                }
            }
        }
        self.reset_room();
        Ok(worked)
    }

    fn resume_blocked(&mut self, ns: &NativeShared) -> Result<bool, Close> {
        if !self.shared.has_blocked.load(Ordering::Acquire) {
            return Ok(false);
        }
        let need = self.shared.need_room.load(Ordering::Relaxed).max(1);
        if !self.conn.has_room(need)? {
            return Ok(false);
        }
        let subs = {
            let mut blocked = self.shared.blocked.lock();
            self.shared.has_blocked.store(false, Ordering::Release);
            std::mem::take(&mut *blocked)
        };
        self.reset_room();
        for s in &subs {
            s.unblock(&ns.kafka.engine);
        }
        Ok(!subs.is_empty())
    }

    fn reset_room(&self) {
        if self.shared.outbox_len() == 0 && !self.shared.has_blocked.load(Ordering::Acquire) {
            self.shared.need_room.store(0, Ordering::Relaxed);
        }
    }

    /// Sends an answer, or queues it when the response ring is full (the
    /// core then stops reading this client's requests until it drains).
    pub(super) fn respond(&mut self, frame: &Frame<'_>) -> Result<(), Close> {
        if self.reading() {
            match self.conn.try_send(frame) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(NativeError::TooLarge { len, max }) => {
                    let message = format!(
                        "the answer takes {len} bytes, more than the {max} this connection's ring carries; \
                         reconnect with a larger ring or ask for less"
                    );
                    return self.respond_error(frame.id, error_code::TOO_LARGE, &message);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut outbox = self.shared.outbox.lock();
        self.shared.push(&mut outbox, frame);
        Ok(())
    }

    /// Answers request `id` with an error.
    pub(super) fn respond_error(&mut self, id: u64, code: u16, message: &str) -> Result<(), Close> {
        self.respond(&Frame::new(id, Body::Error(ErrorFrame { code, message })))
    }

    /// Answers request `id` once `waiter` fires (a write becoming durable),
    /// from a tokio task: the core never waits for an fsync.
    pub(super) fn respond_when(&self, ns: &NativeShared, waiter: Waiter, answers: Vec<(u64, Ack)>) {
        let shared = self.shared.clone();
        ns.runtime.spawn(async move {
            let durable = tokio::time::timeout(DURABLE_TIMEOUT, waiter).await.is_ok();
            for (id, ack) in answers {
                if durable {
                    shared.send_or_queue(&Frame::new(id, Body::Ack(ack)));
                } else {
                    let message = format!(
                        "written (seq or offset {}) but not durable within {} s; the write may be lost if the broker crashes",
                        ack.offset,
                        DURABLE_TIMEOUT.as_secs()
                    );
                    shared.send_or_queue(&Frame::new(
                        id,
                        Body::Error(ErrorFrame {
                            code: error_code::ENGINE,
                            message: &message,
                        }),
                    ));
                }
            }
        });
    }

    fn handle(&mut self, ns: &NativeShared, bytes: &[u8]) -> Result<(), Close> {
        let f = match frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.flush_publish(ns)?;
                let id = frame::peek_header(bytes).map_or(0, |(_, id)| id);
                let message = format!("bad frame, closing the connection: {e}");
                self.respond_error(id, error_code::BAD_FRAME, &message)?;
                return Err(Close::new("bad_frame", e.to_string()));
            }
        };
        if let Body::Publish(p) = &f.body {
            return self.publish(ns, f.id, p);
        }
        self.flush_publish(ns)?;
        match f.body {
            Body::Subscribe(s) => self.subscribe(ns, f.id, &s),
            Body::Unsubscribe => self.unsubscribe(ns, f.id),
            Body::Put(kv) => self.put(ns, f.id, kv),
            Body::Trigger(kv) => self.trigger(ns, f.id, kv),
            Body::Get(g) => self.get(ns, f.id, g.key, g.at),
            Body::List(prefix) => self.list(ns, f.id, prefix),
            Body::Release => Ok(()),
            Body::Bye => Err(Close::new("bye", None)),
            Body::Attach(a) => self.attach(ns, f.id, a.name, a.token),
            Body::UpcallDone(d) => self.upcall_done(ns, f.id, d.status, d.message),
            other => {
                let message = format!(
                    "a client may not send a frame of kind {}; closing the connection",
                    other.kind()
                );
                self.respond_error(f.id, error_code::BAD_FRAME, &message)?;
                Err(Close::new("protocol", message))
            }
        }
    }

    fn subscribe(&mut self, ns: &NativeShared, id: u64, s: &Subscribe<'_>) -> Result<(), Close> {
        let Some(topic) = ns.kafka.topics.get(s.topic) else {
            let message = format!(
                "topic {:?} does not exist; create it first (kascade topic create {})",
                s.topic, s.topic
            );
            return self.respond_error(id, error_code::UNKNOWN_TOPIC_OR_PARTITION, &message);
        };
        if self.subs.contains_key(&id) {
            let message = format!("subscription id {id} is already in use on this connection");
            return self.respond_error(id, error_code::BAD_FRAME, &message);
        }
        if s.from < -2 {
            let message = format!(
                "cannot subscribe from {}: give an offset >= 0, -1 (latest) or -2 (earliest)",
                s.from
            );
            return self.respond_error(id, error_code::BAD_FRAME, &message);
        }
        let mut partitions: Vec<i32> = if s.partitions.is_empty() {
            (0..topic.partitions).collect()
        } else {
            s.partitions.iter().collect()
        };
        partitions.sort_unstable();
        partitions.dedup();
        if let Some(bad) = partitions.iter().find(|p| topic.key(**p).is_none()) {
            let message = format!(
                "topic {} has partitions 0 to {}; there is no partition {bad}",
                topic.name,
                topic.partitions - 1
            );
            return self.respond_error(id, error_code::UNKNOWN_TOPIC_OR_PARTITION, &message);
        }
        let engine = &ns.kafka.engine;
        let mut subs = Vec::with_capacity(partitions.len());
        let mut starts = Vec::with_capacity(partitions.len());
        for p in partitions {
            let Some(key) = topic.key(p) else { continue };
            let bounds = match engine.bounds(key) {
                Ok(b) => b,
                Err(e) => {
                    return self.respond_error(id, error_code::ENGINE, &e.to_string());
                }
            };
            let start = match s.from {
                -1 => bounds.next_seq,
                -2 => bounds.start_seq,
                o => (o as u64).max(bounds.start_seq),
            };
            starts.push((p, start as i64));
            subs.push(Arc::new(PartitionSub::new(
                id,
                &topic.name,
                p,
                key.clone(),
                start,
                self.shared.clone(),
            )));
        }
        if let Err(message) = ns.registry.add(&topic, &subs) {
            return self.respond_error(id, error_code::ENGINE, &message);
        }
        ns.metrics.subscriptions.increment(subs.len() as f64);
        self.subs.insert(id, subs.clone());
        tracing::debug!(conn = self.id, id, topic = %topic.name, ?starts, "native subscription");
        // The client learns of a subscription from SubscribeOk, so no Notify
        // of it may leave before: it starts once SubscribeOk is in the ring.
        let ok = Frame::new(id, Body::SubscribeOk(Seq::Slice(&starts)));
        if self.reading() && self.conn.try_send(&ok)? {
            for s in &subs {
                s.activate(engine);
            }
            return Ok(());
        }
        let mut outbox = self.shared.outbox.lock();
        self.shared.push(&mut outbox, &ok);
        outbox.push_back(Outgoing::Activate(subs));
        self.shared.outbox_len.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn unsubscribe(&mut self, ns: &NativeShared, id: u64) -> Result<(), Close> {
        let Some(subs) = self.subs.remove(&id) else {
            let message = format!("no subscription {id} on this connection");
            return self.respond_error(id, error_code::NOT_FOUND, &message);
        };
        self.end_subscription(ns, &subs);
        self.respond(&Frame::new(
            id,
            Body::Ack(Ack {
                partition: -1,
                offset: -1,
                version: 0,
                timestamp: 0,
            }),
        ))
    }

    fn end_subscription(&self, ns: &NativeShared, subs: &[Arc<PartitionSub>]) {
        if let Some(first) = subs.first() {
            ns.registry.remove(&first.topic, subs);
            ns.metrics.subscriptions.decrement(subs.len() as f64);
        }
    }

    /// Frees what the connection holds elsewhere (subscriptions, queued
    /// answers); called as it closes.
    pub(super) fn release(&mut self, ns: &NativeShared) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(name) = self.attached.take() {
            ns.processes.detach(&name, self.id);
        }
        for (_, subs) in std::mem::take(&mut self.subs) {
            self.end_subscription(ns, &subs);
        }
        self.shared.blocked.lock().clear();
        self.shared.outbox.lock().clear();
        self.batch.clear();
    }

    fn key(&mut self, id: u64, key: &str, writing: bool) -> Result<Option<Key>, Close> {
        let key = match Key::new(key) {
            Ok(k) => k,
            Err(e) => {
                self.respond_error(id, error_code::INVALID_KEY, &e.to_string())?;
                return Ok(None);
            }
        };
        if writing {
            if let Some(why) = reserved(&key) {
                let message = format!("{key} cannot be written here: {why}");
                self.respond_error(id, error_code::INVALID_KEY, &message)?;
                return Ok(None);
            }
        }
        Ok(Some(key))
    }

    fn engine_error(&mut self, id: u64, e: kascade_core::Error) -> Result<(), Close> {
        use kascade_core::Error as E;
        let code = match &e {
            E::InvalidKey { .. } => error_code::INVALID_KEY,
            E::ValueTooLarge { .. } => error_code::TOO_LARGE,
            E::NotFound { .. } | E::SeqOutOfRange { .. } => error_code::NOT_FOUND,
            E::ShuttingDown => error_code::SHUTTING_DOWN,
            _ => error_code::ENGINE,
        };
        self.respond_error(id, code, &e.to_string())
    }

    fn put(&mut self, ns: &NativeShared, id: u64, kv: KeyValue<'_>) -> Result<(), Close> {
        let Some(key) = self.key(id, kv.key, true)? else {
            return Ok(());
        };
        let engine = &ns.kafka.engine;
        let durable_later = match engine.pool_of(&key) {
            Ok(pool) => pool.storage == Storage::Persistent && pool.fsync == FsyncPolicy::Always,
            Err(e) => return self.engine_error(id, e),
        };
        let put = Put::new(key.clone(), Bytes::copy_from_slice(kv.value));
        // Applied, not Durable: the core thread never waits for an fsync.
        let written = match engine.put_with(put, EngineAck::Applied) {
            Ok(w) => w,
            Err(e) => return self.engine_error(id, e),
        };
        let ack = Ack {
            partition: -1,
            offset: written.seq as i64,
            version: written.version,
            timestamp: written.timestamp_us as i64,
        };
        if durable_later {
            match engine.wait_for_seq(&key, written.seq) {
                Ok(w) if !w.is_ready() => {
                    self.respond_when(ns, w, vec![(id, ack)]);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return self.engine_error(id, e),
            }
        }
        self.respond(&Frame::new(id, Body::Ack(ack)))
    }

    fn trigger(&mut self, ns: &NativeShared, id: u64, kv: KeyValue<'_>) -> Result<(), Close> {
        let Some(key) = self.key(id, kv.key, true)? else {
            return Ok(());
        };
        match ns
            .kafka
            .engine
            .trigger(&key, Bytes::copy_from_slice(kv.value))
        {
            Ok(w) => self.respond(&Frame::new(
                id,
                Body::Ack(Ack {
                    partition: -1,
                    offset: w.seq as i64,
                    version: w.version,
                    timestamp: w.timestamp_us as i64,
                }),
            )),
            Err(e) => self.engine_error(id, e),
        }
    }

    fn get(&mut self, ns: &NativeShared, id: u64, key: &str, at: GetAt) -> Result<(), Close> {
        let Some(key) = self.key(id, key, false)? else {
            return Ok(());
        };
        let query = match at {
            GetAt::Latest => Get::Latest,
            GetAt::Version(v) => Get::Version(v),
            GetAt::Seq(s) => Get::Seq(s),
            GetAt::TimeUs(t) => Get::AtTime(t),
        };
        match ns.kafka.engine.get(&key, query) {
            Ok(Some(o)) => self.respond(&Frame::new(
                id,
                Body::Object(Object {
                    version: o.version,
                    seq: o.seq,
                    count: o.count,
                    timestamp_us: o.timestamp_us,
                    key: o.key.as_str(),
                    value: &o.value,
                }),
            )),
            Ok(None) => {
                let message = format!("{key} has no version {}", describe(at));
                self.respond_error(id, error_code::NOT_FOUND, &message)
            }
            Err(e) => self.engine_error(id, e),
        }
    }

    fn list(&mut self, ns: &NativeShared, id: u64, prefix: &str) -> Result<(), Close> {
        let prefix = match Prefix::new(prefix) {
            Ok(p) => p,
            Err(e) => return self.respond_error(id, error_code::INVALID_KEY, &e.to_string()),
        };
        let listed = match ns.kafka.engine.list(&prefix) {
            Ok(l) => l,
            Err(e) => return self.engine_error(id, e),
        };
        let keys: Vec<KeyInfo<'_>> = listed
            .iter()
            .map(|k| KeyInfo {
                key: k.key.as_str(),
                start_seq: k.start_seq,
                next_seq: k.next_seq,
            })
            .collect();
        self.respond(&Frame::new(id, Body::Keys(Seq::Slice(&keys))))
    }
}

impl Conn {
    fn attach(&mut self, ns: &NativeShared, id: u64, name: &str, token: &str) -> Result<(), Close> {
        if let Some(old) = self.attached.take() {
            ns.processes.detach(&old, self.id);
        }
        let sink: Arc<dyn UpcallSink> = self.shared.clone();
        match ns.processes.attach(name, token, sink) {
            Ok(()) => {
                self.attached = Some(name.to_owned());
                self.respond(&Frame::new(
                    id,
                    Body::Ack(Ack {
                        partition: -1,
                        offset: 0,
                        version: 0,
                        timestamp: 0,
                    }),
                ))
            }
            Err(message) => self.respond_error(id, error_code::UNSUPPORTED, &message),
        }
    }

    fn upcall_done(
        &mut self,
        ns: &NativeShared,
        call: u64,
        status: i32,
        message: &str,
    ) -> Result<(), Close> {
        let Some(name) = self.attached.as_deref() else {
            let message = "UpcallDone from a connection that is not attached to a lambda";
            self.respond_error(call, error_code::BAD_FRAME, message)?;
            return Err(Close::new("protocol", message.to_owned()));
        };
        let outcome = if status == 0 {
            Ok(())
        } else if message.is_empty() {
            Err(format!(
                "the lambda process failed the call (status {status})"
            ))
        } else {
            Err(message.to_owned())
        };
        ns.processes.done(name, self.id, call, outcome);
        Ok(())
    }
}

impl UpcallSink for ConnShared {
    fn conn_id(&self) -> u64 {
        self.id
    }
    fn send(&self, frame: &Frame<'_>) -> Result<(), String> {
        if self.closed.load(Ordering::Relaxed) {
            return Err("the lambda process's connection closed".into());
        }
        let len = frame.encoded_len().map_err(|e| e.to_string())?;
        if len > self.max_payload {
            return Err(format!(
                "an upcall of {len} bytes is larger than the lambda process's connection carries ({} bytes)",
                self.max_payload
            ));
        }
        self.send_or_queue(frame);
        Ok(())
    }
}

fn describe(at: GetAt) -> String {
    match at {
        GetAt::Latest => "(it does not exist, or it was removed)".into(),
        GetAt::Version(v) => format!("with version number {v}"),
        GetAt::Seq(s) => format!("holding seq {s}"),
        GetAt::TimeUs(t) => format!("at or before {t} µs since the epoch"),
    }
}

/// Why a key may not be written through the native K/V calls, if it may not.
fn reserved(key: &Key) -> Option<&'static str> {
    let owned = [
        (
            "/kascade",
            "/kascade holds the engine's own metadata (use the admin API for pools, lambdas and pipelines)",
        ),
        (
            "/cms",
            "/cms belongs to the Kafka face (publish to topics, manage them with `kascade topic`)",
        ),
    ];
    owned
        .into_iter()
        .find(|(prefix, _)| Prefix::new(prefix).is_ok_and(|p| p.covers(key.as_str())))
        .map(|(_, why)| why)
}
