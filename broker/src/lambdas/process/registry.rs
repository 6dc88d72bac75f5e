//! Who is attached to which `process` binding, and the calls waiting for
//! their answers. The native listener attaches connections and hands in
//! `UpcallDone` frames; the lambda sends upcalls and waits here.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use kascade_wire::native::frame::Frame;
use parking_lot::{Condvar, Mutex};

/// A connection an upcall can be written to (the native listener's connection).
pub trait UpcallSink: Send + Sync {
    /// The connection's number (unique for the life of the broker).
    fn conn_id(&self) -> u64;
    /// Writes `frame` to the connection now, or queues it (never waits); why not.
    fn send(&self, frame: &Frame<'_>) -> Result<(), String>;
}

/// What a call gets back: success, or the process's message.
pub(crate) type Outcome = Result<(), String>;

/// A call sent to an attached process: its connection, its id, where its outcome arrives.
pub(crate) type PendingCall = (Arc<dyn UpcallSink>, u64, std::sync::mpsc::Receiver<Outcome>);

/// One binding's attachment state.
pub(crate) struct Slot {
    /// Which lambda instance owns the slot (a replaced binding has a new one).
    pub(crate) instance: u64,
    pub(crate) state: Mutex<SlotState>,
    pub(crate) attached: Condvar,
}

/// What a [`Slot`]'s lock guards.
#[derive(Default)]
pub(crate) struct SlotState {
    /// The token of the process started last.
    pub(crate) token: Option<String>,
    /// The attached connection.
    pub(crate) conn: Option<Arc<dyn UpcallSink>>,
    /// Calls waiting for their UpcallDone, by call id.
    pub(crate) pending: HashMap<u64, SyncSender<Outcome>>,
    pub(crate) next_call: u64,
    /// The binding was removed.
    pub(crate) stopped: bool,
}

/// Every `process` binding's slot, by binding name (two while a binding is
/// being replaced: the old one's until it is removed).
#[derive(Default)]
pub struct Registry {
    slots: Mutex<HashMap<String, Vec<Arc<Slot>>>>,
}

impl Registry {
    /// A registry with no bindings.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Makes the slot of binding `name` for lambda `instance`.
    pub(crate) fn register(&self, name: &str, instance: u64) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            instance,
            state: Mutex::new(SlotState::default()),
            attached: Condvar::new(),
        });
        self.slots
            .lock()
            .entry(name.to_owned())
            .or_default()
            .push(slot.clone());
        slot
    }

    /// Drops the slot of `name` for `instance`; its calls fail.
    pub(crate) fn remove(&self, name: &str, instance: u64) {
        let mut slots = self.slots.lock();
        let Some(list) = slots.get_mut(name) else {
            return;
        };
        list.retain(|s| {
            if s.instance == instance {
                stop_slot(s);
            }
            s.instance != instance
        });
        if list.is_empty() {
            slots.remove(name);
        }
    }

    /// The slot of `name` that `pick` chooses.
    fn find(&self, name: &str, pick: impl Fn(&SlotState) -> bool) -> Option<Arc<Slot>> {
        let slots = self.slots.lock();
        slots
            .get(name)?
            .iter()
            .find(|s| pick(&s.state.lock()))
            .cloned()
    }

    /// A connection asks to attach to `name` with `token`.
    pub fn attach(&self, name: &str, token: &str, sink: Arc<dyn UpcallSink>) -> Result<(), String> {
        if !self.slots.lock().contains_key(name) {
            return Err(format!("no process lambda named {name:?}"));
        }
        let slot = self
            .find(name, |st| !st.stopped && st.token.as_deref() == Some(token))
            .ok_or_else(|| {
                format!(
                    "the token is not the one of the process the broker started last for {name:?}"
                )
            })?;
        let mut st = slot.state.lock();
        if st.stopped || st.token.as_deref() != Some(token) {
            return Err(format!(
                "the token is not the one of the process the broker started last for {name:?}"
            ));
        }
        if st.conn.is_some() {
            fail_pending(&mut st, "the lambda process attached again");
        }
        st.conn = Some(sink);
        drop(st);
        slot.attached.notify_all();
        tracing::info!(lambda = name, "process lambda attached");
        Ok(())
    }

    /// Upcall `call` of `name` is done (from connection `conn_id`).
    pub fn done(&self, name: &str, conn_id: u64, call: u64, outcome: Outcome) {
        let Some(slot) = self.find(name, |st| attached_to(st, conn_id)) else {
            return;
        };
        let mut st = slot.state.lock();
        if st.conn.as_ref().is_some_and(|c| c.conn_id() == conn_id) {
            if let Some(tx) = st.pending.remove(&call) {
                let _ = tx.try_send(outcome);
            }
        }
    }

    /// Connection `conn_id` closed: if it was attached to `name`, its calls fail.
    pub fn detach(&self, name: &str, conn_id: u64) {
        let Some(slot) = self.find(name, |st| attached_to(st, conn_id)) else {
            return;
        };
        let mut st = slot.state.lock();
        if st.conn.as_ref().is_some_and(|c| c.conn_id() == conn_id) {
            st.conn = None;
            fail_pending(&mut st, "the lambda process's connection closed");
            tracing::info!(lambda = name, "process lambda detached");
        }
    }

    /// Names of the bindings with a slot.
    pub fn names(&self) -> Vec<String> {
        self.slots.lock().keys().cloned().collect()
    }
}

impl Slot {
    /// A new process was started with `token`: the old attachment (if any) is gone.
    pub(crate) fn expect(&self, token: String) {
        let mut st = self.state.lock();
        st.token = Some(token);
        if st.conn.take().is_some() {
            fail_pending(&mut st, "the lambda process was restarted");
        }
    }

    /// Waits until a process is attached or `deadline` passes; the connection and a call id.
    pub(crate) fn wait_attached(&self, deadline: Instant) -> Result<PendingCall, String> {
        let mut st = self.state.lock();
        loop {
            if st.stopped {
                return Err("the process lambda was removed".into());
            }
            if let Some(conn) = st.conn.clone() {
                let id = st.next_call;
                st.next_call += 1;
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                st.pending.insert(id, tx);
                return Ok((conn, id, rx));
            }
            if self.attached.wait_until(&mut st, deadline).timed_out() {
                return Err("no lambda process is attached (starting or restarting)".into());
            }
        }
    }

    /// Forgets a call that timed out.
    pub(crate) fn forget(&self, call: u64) {
        self.state.lock().pending.remove(&call);
    }
}

fn attached_to(st: &SlotState, conn_id: u64) -> bool {
    st.conn.as_ref().is_some_and(|c| c.conn_id() == conn_id)
}

fn fail_pending(st: &mut SlotState, why: &str) {
    for (_, tx) in st.pending.drain() {
        let _ = tx.try_send(Err(why.to_owned()));
    }
}

fn stop_slot(slot: &Slot) {
    let mut st = slot.state.lock();
    st.stopped = true;
    st.conn = None;
    st.token = None;
    fail_pending(&mut st, "the process lambda was removed");
    drop(st);
    slot.attached.notify_all();
}
