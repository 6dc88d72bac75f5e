//! Subscriptions: the registry of who reads which partition, and the pump that
//! pushes stored batches into subscribers' response rings.
//!
//! A subscription reads the log; nothing is copied aside for it and nothing is
//! dropped. Each partition of a subscription ([`PartitionSub`]) keeps the next
//! offset it owes its client, and [`PartitionSub::pump`] writes a Notify (the
//! stored batch, byte for byte) for every visible version from there on, while
//! the client's response ring has room. Out of room, it marks itself blocked
//! and asks the connection's core thread to resume it when the client hands
//! credits back; the log is the buffer, so a slow subscriber only slows itself.
//!
//! Pumps are started
//! - for a volatile topic, by the thread that appended, right after its put,
//!   with the new version in hand (visible at once: no range read, no upcall,
//!   no thread hop). Every append to a topic passes the Kafka produce path's
//!   `append_batches`, whose hook ([`crate::kafka::AppendHook`]) calls
//!   [`Registry::appended`]: native publishes (on the core thread), Kafka
//!   produces and lambdas writing to topics alike;
//! - for a persistent topic, by the messaging lambda bound (per key, in order)
//!   on the topic's prefix while it has subscribers: it is upcalled with each
//!   version once it is durable, hence visible;
//! - by the core thread, when a blocked subscription's client makes room, or
//!   when a new subscription starts (catching up from an old offset).
//!
//! Pumps of one subscription never run at once: a pump that finds another
//! running leaves it a note (`wanted`), and the running one goes round again,
//! so a version is never missed and never sent twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use kascade_core::{
    Engine, Get, Key, Lambda, LambdaContext, LambdaError, ObjectVersion, WriteResult,
};
use kascade_wire::native::frame::{error_code, Body, ErrorFrame, Frame, Notify};
use kascade_wire::native::NativeError;
use parking_lot::{Mutex, RwLock};

use super::connection::ConnShared;
use crate::kafka::topics::{Topic, TOPICS_PREFIX};

/// True for a topic whose appends are visible at once (volatile): its
/// appending thread pumps; other topics' versions are pumped by the
/// messaging lambda once durable.
pub(crate) fn visible_at_once(topic: &Topic) -> bool {
    topic
        .configs
        .get("kascade.storage")
        .is_some_and(|s| s == "volatile")
}

/// Where one partition of a subscription stands.
struct SubState {
    /// The next offset the client is owed.
    next: u64,
    /// The client was told the subscription started (SubscribeOk went out).
    active: bool,
    /// Waiting for room in the client's response ring.
    blocked: bool,
    /// Ended: unsubscribed, or its connection closed.
    closed: bool,
}

/// One partition of one subscription of one connection.
pub(crate) struct PartitionSub {
    /// The subscription id (the Subscribe request's id).
    pub(crate) id: u64,
    /// The topic.
    pub(crate) topic: String,
    /// The partition.
    pub(crate) partition: i32,
    /// The partition's key.
    pub(crate) key: Key,
    conn: Arc<ConnShared>,
    state: Mutex<SubState>,
    /// Another pump came while one ran: go round again.
    wanted: AtomicBool,
}

impl PartitionSub {
    /// A subscription of `conn` to `key` from offset `next`, not yet active.
    pub(crate) fn new(
        id: u64,
        topic: &str,
        partition: i32,
        key: Key,
        next: u64,
        conn: Arc<ConnShared>,
    ) -> PartitionSub {
        PartitionSub {
            id,
            topic: topic.to_string(),
            partition,
            key,
            conn,
            state: Mutex::new(SubState {
                next,
                active: false,
                blocked: false,
                closed: false,
            }),
            wanted: AtomicBool::new(false),
        }
    }

    /// Starts delivering (SubscribeOk has gone out) and catches up.
    pub(crate) fn activate(self: &Arc<Self>, engine: &Engine) {
        self.state.lock().active = true;
        self.pump(engine, None);
    }

    /// Ends the subscription: no Notify leaves after this returns.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
    }

    /// Resumes a blocked subscription (its client made room) and catches up.
    pub(crate) fn unblock(self: &Arc<Self>, engine: &Engine) {
        self.state.lock().blocked = false;
        self.pump(engine, None);
    }

    /// Pushes every visible version from the next owed offset on, while the
    /// client has room. `hint`: a version just made visible, sent without a
    /// read when it is the next one owed; with a hint, the pump stops after
    /// it (a later version starts a pump of its own).
    pub(crate) fn pump(self: &Arc<Self>, engine: &Engine, mut hint: Option<&Arc<ObjectVersion>>) {
        self.wanted.store(true, Ordering::SeqCst);
        loop {
            let Some(mut st) = self.state.try_lock() else {
                // The pump running now will see `wanted` and go round again.
                return;
            };
            self.wanted.store(false, Ordering::SeqCst);
            if st.active && !st.blocked && !st.closed {
                self.deliver(&mut st, engine, hint);
            }
            drop(st);
            if !self.wanted.load(Ordering::SeqCst) {
                return;
            }
            hint = None;
        }
    }

    fn deliver(
        self: &Arc<Self>,
        st: &mut SubState,
        engine: &Engine,
        hint: Option<&Arc<ObjectVersion>>,
    ) {
        loop {
            if let Some(h) = hint {
                if st.next >= h.next_seq() {
                    return; // Nothing owed up to the hint; later versions pump for themselves.
                }
            }
            let held;
            let object = match hint {
                Some(h) if h.seq <= st.next => h,
                _ => match engine.get(&self.key, Get::Seq(st.next)) {
                    Ok(Some(o)) => {
                        held = o;
                        &held
                    }
                    Ok(None) => {
                        // Caught up, or the owed records were trimmed away:
                        // then go on from the log's start.
                        match engine.bounds(&self.key) {
                            Ok(b) if st.next < b.start_seq => {
                                st.next = b.start_seq;
                                continue;
                            }
                            _ => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key = %self.key, "native subscription cannot read its partition: {e}");
                        return;
                    }
                },
            };
            if object.value.is_empty() {
                // Not a record batch (a tombstone): nothing to deliver.
                st.next = object.next_seq();
                continue;
            }
            let frame = Frame::new(
                self.id,
                Body::Notify(Notify {
                    partition: self.partition,
                    record_count: object.count,
                    base_offset: object.seq as i64,
                    batch: &object.value,
                }),
            );
            match self.conn.try_send(&frame) {
                Ok(true) => {
                    st.next = object.next_seq();
                    self.conn.metrics().notifies.increment(1);
                }
                Ok(false) => {
                    st.blocked = true;
                    let len = frame.encoded_len().unwrap_or(0);
                    self.conn.block(self.clone(), len);
                    return;
                }
                Err(NativeError::TooLarge { len, max }) => {
                    st.closed = true;
                    let message = format!(
                        "subscription {} ended: the batch at offset {} of {} partition {} takes a frame of {len} bytes, \
                         more than the {max} this connection's ring carries; reconnect with a larger ring \
                         (ClientOptions::ring_capacity of at least {} bytes)",
                        self.id,
                        object.seq,
                        self.topic,
                        self.partition,
                        (len + 64).next_power_of_two() * 2
                    );
                    tracing::warn!(conn = self.conn.id, "{message}");
                    self.conn.send_or_queue(&Frame::new(
                        self.id,
                        Body::Error(ErrorFrame {
                            code: error_code::TOO_LARGE,
                            message: &message,
                        }),
                    ));
                    return;
                }
                Err(e) => {
                    // The connection is going; its core thread closes it.
                    tracing::debug!(conn = self.conn.id, "native notify failed: {e}");
                    st.closed = true;
                    return;
                }
            }
        }
    }
}

/// Every live subscription, by partition key, and the messaging lambdas
/// bound for the topics that have any.
pub(crate) struct Registry {
    engine: Engine,
    by_key: RwLock<HashMap<Key, Vec<Arc<PartitionSub>>>>,
    /// Topic -> (partition subscriptions, name of its messaging lambda
    /// binding, for a topic that needs one).
    topics: Mutex<HashMap<String, (usize, Option<String>)>>,
    next_binding: Mutex<u64>,
    me: Weak<Registry>,
}

impl Registry {
    /// An empty registry over `engine`.
    pub(crate) fn new(engine: Engine) -> Arc<Registry> {
        Arc::new_cyclic(|me| Registry {
            engine,
            by_key: RwLock::new(HashMap::new()),
            topics: Mutex::new(HashMap::new()),
            next_binding: Mutex::new(0),
            me: me.clone(),
        })
    }

    /// Registers `subs` (all of `topic`), binding the topic's messaging
    /// lambda if it had no subscriber and its versions become visible only
    /// once durable.
    pub(crate) fn add(&self, topic: &Topic, subs: &[Arc<PartitionSub>]) -> Result<(), String> {
        {
            let mut map = self.by_key.write();
            for s in subs {
                map.entry(s.key.clone()).or_default().push(s.clone());
            }
        }
        let mut topics = self.topics.lock();
        if let Some((count, _)) = topics.get_mut(&topic.name) {
            *count += subs.len();
            return Ok(());
        }
        if visible_at_once(topic) {
            topics.insert(topic.name.clone(), (subs.len(), None));
            return Ok(());
        }
        let name = {
            let mut n = self.next_binding.lock();
            *n += 1;
            format!("kascade.native.{}", *n)
        };
        let bound = self.engine.bind_local(
            &name,
            &format!("{TOPICS_PREFIX}/{}", topic.name),
            Arc::new(Messenger(self.me.clone())),
        );
        match bound {
            Ok(()) => {
                topics.insert(topic.name.clone(), (subs.len(), Some(name)));
                Ok(())
            }
            Err(e) => {
                drop(topics);
                self.unregister(subs);
                Err(format!(
                    "cannot watch topic {} for new records: {e}",
                    topic.name
                ))
            }
        }
    }

    fn unregister(&self, subs: &[Arc<PartitionSub>]) {
        let mut map = self.by_key.write();
        for s in subs {
            if let Some(list) = map.get_mut(&s.key) {
                list.retain(|x| !Arc::ptr_eq(x, s));
                if list.is_empty() {
                    map.remove(&s.key);
                }
            }
        }
    }

    /// Removes and closes `subs` (all of one topic); unbinds the topic's
    /// messaging lambda when it has no subscriber left.
    pub(crate) fn remove(&self, topic: &str, subs: &[Arc<PartitionSub>]) {
        self.unregister(subs);
        for s in subs {
            s.close();
        }
        let mut topics = self.topics.lock();
        let last = match topics.get_mut(topic) {
            Some((count, _)) => {
                *count = count.saturating_sub(subs.len());
                *count == 0
            }
            None => false,
        };
        if last {
            if let Some((_, Some(name))) = topics.remove(topic) {
                if let Err(e) = self.engine.unbind(&name) {
                    tracing::debug!("unbinding {name}: {e}");
                }
            }
        }
    }

    /// Unbinds every messaging lambda and forgets every subscription (shutdown).
    pub(crate) fn clear(&self) {
        let subs: Vec<Arc<PartitionSub>> =
            self.by_key.write().drain().flat_map(|(_, v)| v).collect();
        for s in subs {
            s.close();
        }
        for (_, (_, name)) in self.topics.lock().drain() {
            if let Some(name) = name {
                let _ = self.engine.unbind(&name);
            }
        }
    }

    /// Told by the append path of every batch appended to `key` (on the
    /// appending thread): pushes a volatile topic's new versions to its
    /// subscribers. A lone batch is sent as the version in hand.
    pub(crate) fn appended(&self, topic: &Topic, key: &Key, written: &[WriteResult]) {
        if !visible_at_once(topic) {
            return;
        }
        let map = self.by_key.read();
        let Some(list) = map.get(key) else {
            return;
        };
        let hint = match written {
            [one] => self.engine.get(key, Get::Seq(one.seq)).ok().flatten(),
            _ => None,
        };
        for s in list {
            s.pump(&self.engine, hint.as_ref());
        }
    }

    /// Pumps every subscription of `key`; `hint` is the version just made visible.
    pub(crate) fn pump_key(&self, key: &Key, hint: Option<&Arc<ObjectVersion>>) {
        let map = self.by_key.read();
        if let Some(list) = map.get(key) {
            for s in list {
                s.pump(&self.engine, hint);
            }
        }
    }
}

/// The messaging lambda: upcalled (per key, in order) with each version of a
/// subscribed topic once it is visible, it pumps that partition's subscribers.
struct Messenger(Weak<Registry>);

impl Lambda for Messenger {
    fn call(
        &self,
        _ctx: &LambdaContext<'_>,
        object: &Arc<ObjectVersion>,
    ) -> Result<(), LambdaError> {
        if let Some(registry) = self.0.upgrade() {
            registry.pump_key(&object.key, Some(object));
        }
        Ok(())
    }
}
