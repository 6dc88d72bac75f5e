//! The native client: one connection, blocking, single-threaded (`&mut self`).
//!
//! Requests go into the request ring (or TCP stream) as frames; answers and
//! pushed records come back on the response ring. Answers are matched to
//! requests by id. Notifies (records pushed to a subscription) that arrive
//! while the client waits for an answer are copied aside for the next
//! [`Client::next_record`]; otherwise [`Delivery`] reads them in place, so
//! an uncompressed record's key and value are views into the ring until the
//! delivery is dropped.

mod delivery;
mod lambda;
mod types;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use delivery::{Bufs, Cursor, Source};
pub use delivery::{Delivery, DeliveryHeaders};
pub use lambda::{LambdaClient, LambdaDestination, Upcall};
use types::{written, Answer};
pub use types::{ClientOptions, KeyEntry, Object, Offset, Published, Subscription, Written};

use super::frame::{self, error_code, Body, Frame, GetAt, Headers, KeyValue, Seq};
use super::handshake::Parts;
use super::link::{closed_unless_data, Rx, Signal, Tx};
use super::wait::{wait_until, WaitStrategy, Waitable};
use super::{parse_url, shm, tcp, Endpoint, NativeError, Transport};

/// One native connection. Methods take `&mut self`; the client is `Send` but
/// not `Sync` (one thread at a time).
pub struct Client {
    rx: Rx,
    tx: Tx,
    signal: Signal,
    wait: WaitStrategy,
    timeout: Option<Duration>,
    capacity: u32,
    server_name: String,
    next_id: u64,
    /// Ids of `publish_nowait` calls not yet returned by `flush`, in order.
    outstanding: VecDeque<u64>,
    /// Their answers, as they arrive.
    done: HashMap<u64, Answer>,
    /// Notify frames copied aside while waiting for an answer.
    stash: VecDeque<Vec<u8>>,
    /// Upcall frames (to an attached lambda process) not yet taken.
    upcalls: VecDeque<Vec<u8>>,
    /// Subscription id -> topic.
    subs: HashMap<u64, String>,
    /// Subscriptions the broker ended with an error, for `next_record` to report.
    ended: VecDeque<NativeError>,
    /// (subscription, partition) -> next offset to deliver.
    positions: HashMap<(u64, i32), i64>,
    /// The batch being delivered.
    cursor: Option<Cursor>,
    /// The cursor's buffers between batches.
    spare: Bufs,
    _one_thread: PhantomData<Cell<()>>,
}

impl Client {
    /// Connects to `shm:///path`, `tcp://host:port` or `rdma://host:port` with default options.
    pub fn connect(url: &str) -> Result<Client, NativeError> {
        Client::connect_with(url, ClientOptions::default())
    }

    /// Connects with `options`.
    pub fn connect_with(url: &str, options: ClientOptions) -> Result<Client, NativeError> {
        let parts = match parse_url(url)? {
            Endpoint::Shm(path) => shm::connect(&path, &options)?,
            Endpoint::Tcp(addr) => tcp::connect(&addr, &options)?,
            #[cfg(feature = "rdma")]
            Endpoint::Rdma(addr) => super::rdma::connect(&addr, &options)?,
            #[cfg(not(feature = "rdma"))]
            Endpoint::Rdma(_) => return Err(NativeError::RdmaNotBuilt),
        };
        Ok(Client::from_parts(parts, options))
    }

    fn from_parts(parts: Parts, options: ClientOptions) -> Client {
        let wait = match parts.signal.transport {
            Transport::Rdma => WaitStrategy::BusyPoll,
            _ => options.wait,
        };
        Client {
            rx: parts.rx,
            tx: parts.tx,
            signal: parts.signal,
            wait,
            timeout: options.request_timeout,
            capacity: parts.capacity,
            server_name: parts.peer_name,
            next_id: 1,
            outstanding: VecDeque::new(),
            done: HashMap::new(),
            stash: VecDeque::new(),
            upcalls: VecDeque::new(),
            subs: HashMap::new(),
            ended: VecDeque::new(),
            positions: HashMap::new(),
            cursor: None,
            spare: Bufs::default(),
            _one_thread: PhantomData,
        }
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.signal.transport
    }

    /// The name the broker gave in Welcome.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Each ring's capacity.
    pub fn ring_capacity(&self) -> u32 {
        self.capacity
    }

    /// The largest frame this connection carries (a value must fit in it with its frame header).
    pub fn max_payload(&self) -> usize {
        self.tx.max_payload()
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Publishes one record and waits for its offset. `partition: None`
    /// lets the broker choose (by key hash, or round-robin without a key).
    pub fn publish(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Published, NativeError> {
        let id = self.send_publish(topic, partition, key, value, headers)?;
        self.answer(id)?.published()
    }

    /// Queues a publish without waiting for its answer; returns its request
    /// id. [`Client::flush`] returns the offsets, in order. With shm the frame
    /// is visible to the broker at once; with TCP it goes out when 64 KiB are
    /// queued or the next call waits.
    pub fn publish_nowait(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<u64, NativeError> {
        let id = self.send_publish(topic, partition, key, value, headers)?;
        self.outstanding.push_back(id);
        if self.tx.pending_bytes() >= 64 << 10 {
            self.tx.flush()?;
        }
        Ok(id)
    }

    fn send_publish(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<u64, NativeError> {
        let id = self.take_id();
        let frame = Frame::new(
            id,
            Body::Publish(frame::Publish {
                partition: partition.unwrap_or(-1),
                timestamp_ms: -1,
                topic,
                key,
                headers: Headers::Pairs(headers),
                value,
            }),
        );
        self.send(&frame)?;
        Ok(id)
    }

    /// Waits for the answer of every [`publish_nowait`](Self::publish_nowait)
    /// so far; returns where each was stored, in order. If any failed, all
    /// are still collected and the first failure is returned.
    pub fn flush(&mut self) -> Result<Vec<Published>, NativeError> {
        let mut out = Vec::with_capacity(self.outstanding.len());
        let mut first_err = None;
        while let Some(&id) = self.outstanding.front() {
            let answer = match self.done.remove(&id) {
                Some(a) => a,
                None => self.answer(id)?,
            };
            self.outstanding.pop_front();
            match answer.published() {
                Ok(p) => out.push(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Subscribes to `partitions` of `topic` (empty = all) from `from`.
    /// Records arrive through [`Client::next_record`].
    pub fn subscribe(
        &mut self,
        topic: &str,
        partitions: &[i32],
        from: Offset,
    ) -> Result<Subscription, NativeError> {
        let id = self.take_id();
        let frame = Frame::new(
            id,
            Body::Subscribe(frame::Subscribe {
                from: from.wire(),
                topic,
                partitions: Seq::Slice(partitions),
            }),
        );
        self.send(&frame)?;
        match self.answer(id)? {
            Answer::SubscribeOk(starts) => {
                self.subs.insert(id, topic.to_owned());
                for &(p, o) in &starts {
                    self.positions.insert((id, p), o);
                }
                Ok(Subscription { id, starts })
            }
            other => Err(other.into_error("subscribe")),
        }
    }

    /// Ends a subscription; records already received for it are dropped.
    pub fn unsubscribe(&mut self, id: u64) -> Result<(), NativeError> {
        if !self.subs.contains_key(&id) {
            return Err(NativeError::Protocol(format!("no subscription {id}")));
        }
        self.send(&Frame::new(id, Body::Unsubscribe))?;
        let answer = self.answer(id)?;
        self.subs.remove(&id);
        self.positions.retain(|(s, _), _| *s != id);
        self.stash
            .retain(|f| frame::peek_header(f).is_none_or(|(_, sub)| sub != id));
        if self.cursor.as_ref().is_some_and(|c| c.sub == id) {
            self.finish_cursor()?;
        }
        match answer {
            Answer::Ack(_) => Ok(()),
            other => Err(other.into_error("unsubscribe")),
        }
    }

    /// Puts `value` at `key`.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<Written, NativeError> {
        let id = self.take_id();
        self.send(&Frame::new(id, Body::Put(KeyValue { key, value })))?;
        written(self.answer(id)?, "put")
    }

    /// Triggers `key` with `value` (upcalls run; nothing is stored).
    pub fn trigger(&mut self, key: &str, value: &[u8]) -> Result<Written, NativeError> {
        let id = self.take_id();
        self.send(&Frame::new(id, Body::Trigger(KeyValue { key, value })))?;
        written(self.answer(id)?, "trigger")
    }

    /// Reads `key` at `at`; `None` when there is no such object.
    pub fn get(&mut self, key: &str, at: GetAt) -> Result<Option<Object>, NativeError> {
        let id = self.take_id();
        self.send(&Frame::new(id, Body::Get(frame::Get { at, key })))?;
        match self.answer(id)? {
            Answer::Object(o) => Ok(Some(o)),
            Answer::Error(error_code::NOT_FOUND, _) => Ok(None),
            other => Err(other.into_error("get")),
        }
    }

    /// Lists the keys under `prefix` with their log bounds.
    pub fn list(&mut self, prefix: &str) -> Result<Vec<KeyEntry>, NativeError> {
        let id = self.take_id();
        self.send(&Frame::new(id, Body::List(prefix)))?;
        match self.answer(id)? {
            Answer::Keys(keys) => Ok(keys),
            other => Err(other.into_error("list")),
        }
    }

    /// The next record pushed to any subscription, in offset order per
    /// partition; waits up to `timeout` (`None`: forever), `Ok(None)` when it
    /// passes. The delivery borrows the client: drop it before the next call.
    ///
    /// A subscription the broker ends (e.g. a stored batch too large for this
    /// connection's ring) is reported once as `Err(NativeError::Server)`; the
    /// other subscriptions go on.
    pub fn next_record(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Delivery<'_>>, NativeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.ended.pop_front() {
                return Err(e);
            }
            if let Some(c) = self.cursor.as_mut() {
                if c.advance(&mut self.positions) {
                    return Ok(Some(Delivery::new(self)));
                }
                self.finish_cursor()?;
            }
            if let Some(bytes) = self.stash.pop_front() {
                self.open_cursor(Source::Owned(bytes))?;
                continue;
            }
            self.tx.flush()?;
            let Some(bytes) = self.rx.peek()? else {
                let mut w = RecvWait { c: self };
                if !wait_until(w.c.wait, &mut w, deadline)? {
                    return Ok(None);
                }
                continue;
            };
            let f = frame::decode(bytes)?;
            if let Body::Upcall(_) = f.body {
                let copy = bytes.to_vec();
                self.rx.consume(&self.signal)?;
                self.upcalls.push_back(copy);
            } else if let Body::Notify(_) = f.body {
                self.open_cursor(Source::Ring)?;
                if !self.cursor.as_ref().is_some_and(Cursor::holds_ring) {
                    // Decoded into owned records (compressed), or for nobody.
                    self.rx.consume(&self.signal)?;
                }
            } else {
                let id = f.id;
                let answer = Answer::from_body(&f.body);
                self.rx.consume(&self.signal)?;
                self.file_answer(id, answer);
            }
        }
    }

    /// Opens a cursor on the Notify in `source` (none when it is for no
    /// live subscription).
    fn open_cursor(&mut self, source: Source) -> Result<(), NativeError> {
        let bufs = std::mem::take(&mut self.spare);
        match Cursor::open(source, &self.rx, &self.subs, bufs)? {
            Ok(c) => self.cursor = Some(c),
            Err(bufs) => self.spare = bufs,
        }
        Ok(())
    }

    /// Consumes the batch the cursor holds and drops the cursor.
    fn finish_cursor(&mut self) -> Result<(), NativeError> {
        if let Some(c) = self.cursor.take() {
            let in_ring = c.holds_ring();
            self.spare = c.into_bufs();
            if in_ring {
                self.rx.consume(&self.signal)?;
            }
        }
        Ok(())
    }

    /// Moves a batch being delivered out of the ring (copying it), so the
    /// ring can move on while the client waits for an answer.
    fn detach_cursor(&mut self) -> Result<(), NativeError> {
        if let Some(c) = self.cursor.as_mut() {
            if c.holds_ring() {
                c.source = Source::Owned(self.rx.current().unwrap_or_default().to_vec());
                self.rx.consume(&self.signal)?;
            }
        }
        Ok(())
    }

    /// Keeps an answer that is not the one being waited for.
    fn file_answer(&mut self, id: u64, answer: Option<Answer>) {
        match answer {
            // Ids grow, and `outstanding` holds them in order: a search, not a
            // scan, so a long pipeline of publishes stays linear.
            Some(a) if self.outstanding.binary_search(&id).is_ok() => {
                self.done.insert(id, a);
            }
            Some(Answer::Error(code, message)) if self.subs.contains_key(&id) => {
                // The broker ended this subscription.
                self.subs.remove(&id);
                self.positions.retain(|(s, _), _| *s != id);
                self.stash
                    .retain(|f| frame::peek_header(f).is_none_or(|(_, sub)| sub != id));
                self.ended.push_back(NativeError::Server { code, message });
            }
            _ => tracing::debug!(id, "native client: dropped an answer nobody waits for"),
        }
    }

    /// Sends one frame, waiting for room (while draining what arrives, so a
    /// broker blocked on a full response ring is never deadlocked with us).
    fn send(&mut self, frame: &Frame<'_>) -> Result<(), NativeError> {
        let len = frame.encoded_len()?;
        let deadline = self.deadline();
        loop {
            if self.tx.try_send(frame, &self.signal)? {
                return Ok(());
            }
            self.detach_cursor()?;
            self.drain_arrived()?;
            let mut w = RoomWait { c: self, len };
            if !wait_until(w.c.wait, &mut w, deadline)? {
                return Err(NativeError::Timeout);
            }
        }
    }

    /// Copies aside every frame that has arrived (Notifies to the stash, answers to `done`).
    fn drain_arrived(&mut self) -> Result<(), NativeError> {
        while let Some(bytes) = self.rx.peek()? {
            let f = frame::decode(bytes)?;
            let id = f.id;
            if matches!(f.body, Body::Upcall(_)) {
                let copy = bytes.to_vec();
                self.rx.consume(&self.signal)?;
                self.upcalls.push_back(copy);
            } else if matches!(f.body, Body::Notify(_)) {
                let copy = bytes.to_vec();
                self.rx.consume(&self.signal)?;
                if self.subs.contains_key(&id) {
                    self.stash.push_back(copy);
                }
            } else {
                let answer = Answer::from_body(&f.body);
                self.rx.consume(&self.signal)?;
                self.file_answer(id, answer);
            }
        }
        Ok(())
    }

    /// Waits for the answer to request `id` (Notifies, which carry a
    /// subscription id, are never taken for an answer).
    fn answer(&mut self, id: u64) -> Result<Answer, NativeError> {
        if let Some(a) = self.done.remove(&id) {
            return Ok(a);
        }
        self.detach_cursor()?;
        let deadline = self.deadline();
        loop {
            self.tx.flush()?;
            let Some(bytes) = self.rx.peek()? else {
                let mut w = RecvWait { c: self };
                if !wait_until(w.c.wait, &mut w, deadline)? {
                    return Err(NativeError::Timeout);
                }
                continue;
            };
            let f = frame::decode(bytes)?;
            let fid = f.id;
            if matches!(f.body, Body::Upcall(_)) {
                let copy = bytes.to_vec();
                self.rx.consume(&self.signal)?;
                self.upcalls.push_back(copy);
                continue;
            }
            if matches!(f.body, Body::Notify(_)) {
                let copy = bytes.to_vec();
                self.rx.consume(&self.signal)?;
                if self.subs.contains_key(&fid) {
                    self.stash.push_back(copy);
                }
                continue;
            }
            let answer = Answer::from_body(&f.body);
            self.rx.consume(&self.signal)?;
            if fid == id {
                return answer.ok_or_else(|| {
                    NativeError::Protocol(format!(
                        "request {id} was answered with a frame that is not an answer"
                    ))
                });
            }
            self.file_answer(fid, answer);
        }
    }
}

impl Drop for Client {
    /// Says Bye (best effort, never waiting) so the broker can tell a clean
    /// close from a crash; the socket closing ends the connection either way.
    fn drop(&mut self) {
        if let Ok(true) = self.tx.try_send(&Frame::new(0, Body::Bye), &self.signal) {
            let _ = self.tx.flush();
        }
    }
}

/// Waiting for a frame to arrive (flushing queued TCP bytes meanwhile).
struct RecvWait<'a> {
    c: &'a mut Client,
}

impl Waitable for RecvWait<'_> {
    fn ready(&mut self) -> Result<bool, NativeError> {
        if self.c.tx.pending() {
            self.c.tx.flush()?;
        }
        self.c.rx.has_data()
    }
    fn set_sleeping(&mut self, on: bool) {
        self.c.rx.set_sleeping(on);
    }
    fn park(&mut self, timeout: Option<Duration>) -> Result<(), NativeError> {
        let parked = self.c.signal.park(timeout, true, self.c.tx.pending());
        closed_unless_data(parked, &mut self.c.rx)
    }
    fn check_alive(&mut self) -> Result<(), NativeError> {
        closed_unless_data(self.c.signal.check_alive(), &mut self.c.rx)
    }
}

/// Waiting for room in the request ring, or for a frame to drain.
struct RoomWait<'a> {
    c: &'a mut Client,
    len: usize,
}

impl Waitable for RoomWait<'_> {
    fn ready(&mut self) -> Result<bool, NativeError> {
        Ok(self.c.tx.has_room(self.len)? || self.c.rx.has_data()?)
    }
    fn set_sleeping(&mut self, on: bool) {
        self.c.tx.set_sleeping(on);
        self.c.rx.set_sleeping(on);
    }
    fn park(&mut self, timeout: Option<Duration>) -> Result<(), NativeError> {
        self.c.signal.park(timeout, true, true)
    }
    fn check_alive(&mut self) -> Result<(), NativeError> {
        self.c.signal.check_alive()
    }
}
