//! The native core thread: one thread serves every native connection.
//!
//! Each round it services every connection (answers waiting for room,
//! blocked subscriptions, queued requests). While rounds find work it keeps
//! going; idle, it spins for `--native-spin-us` (a round is a few atomic loads
//! per connection), then parks in epoll on every connection's doorbell and
//! socket, the listeners and its own wake-up eventfd, after setting each
//! ring's sleeping flag so clients ring it. `--native-wait busy` never parks,
//! `block` parks at once. Every millisecond, busy or not, it also looks at the
//! listeners and sockets without waiting, so new clients are accepted and
//! dead ones (a socket that hung up, even after SIGKILL) are closed.
//!
//! Handshakes run on short-lived threads (bounded in number), never here: a
//! client that connects and says nothing cannot hold the core up.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kascade_wire::native::server::Interest;
use kascade_wire::native::sys::EventFd;
use kascade_wire::native::{
    Incoming, Listener, NativeError, ServerConnection, ServerOptions, Transport, WaitStrategy,
};
use parking_lot::Mutex;

use super::connection::{Close, Conn};
use super::epoll::{self, Epoll};
use super::{NativeMetrics, NativeShared};

/// The core's own wake-up eventfd.
const WAKE_TOKEN: u64 = u64::MAX;
/// Listener `i` is `LISTENER_TOKEN - i`.
const LISTENER_TOKEN: u64 = u64::MAX - 1;
/// How often a busy core looks at listeners and sockets.
const LOOK_EVERY: Duration = Duration::from_millis(1);
/// The longest a parked core sleeps before looking around anyway.
const PARK_MS: i32 = 1000;
/// Handshakes in progress at most; more connections wait in the backlog.
const MAX_HANDSHAKES: usize = 64;

/// Connections whose handshake finished, on their way to the core.
struct Inbox {
    ready: Mutex<Vec<ServerConnection>>,
    pending: AtomicBool,
    /// The core is (about to be) parked: ring `wake`.
    parked: AtomicBool,
    handshakes: AtomicUsize,
    wake: Arc<EventFd>,
}

impl Inbox {
    fn push(&self, conn: ServerConnection) {
        self.ready.lock().push(conn);
        self.pending.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Err(e) = self.wake.signal() {
                tracing::warn!("waking the native core: {e}");
            }
        }
    }
}

/// The core thread's state.
pub(super) struct Poller {
    ns: Arc<NativeShared>,
    epoll: Epoll,
    listeners: Vec<Listener>,
    options: Arc<ServerOptions>,
    wait: WaitStrategy,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    inbox: Arc<Inbox>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_id: u64,
    event_buf: Vec<libc::epoll_event>,
    events: Vec<(u64, u32)>,
    /// Per slot: its flags are set for a park.
    armed: Vec<bool>,
    /// Per slot: its doorbell showed up in the last look.
    fired: Vec<bool>,
}

fn conn_token(slot: usize, socket: bool) -> u64 {
    ((slot as u64) << 1) | u64::from(socket)
}

impl Poller {
    /// Sets up the epoll set over `listeners` and the wake-up eventfd.
    pub(super) fn new(
        ns: Arc<NativeShared>,
        listeners: Vec<Listener>,
        options: ServerOptions,
        wait: WaitStrategy,
        stop: Arc<AtomicBool>,
        wake: Arc<EventFd>,
    ) -> std::io::Result<Poller> {
        let epoll = Epoll::new()?;
        epoll.add(wake.raw_fd(), epoll::IN, WAKE_TOKEN)?;
        for (i, l) in listeners.iter().enumerate() {
            match l {
                Listener::Shm(l, _) => l.set_nonblocking(true)?,
                Listener::Tcp(l) | Listener::Rdma(l) => l.set_nonblocking(true)?,
            }
            epoll.add(l.raw_fd(), epoll::IN, LISTENER_TOKEN - i as u64)?;
        }
        Ok(Poller {
            inbox: Arc::new(Inbox {
                ready: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
                parked: AtomicBool::new(false),
                handshakes: AtomicUsize::new(0),
                wake: wake.clone(),
            }),
            ns,
            epoll,
            listeners,
            options: Arc::new(options),
            wait,
            stop,
            wake,
            conns: Vec::new(),
            free: Vec::new(),
            next_id: 1,
            event_buf: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            events: Vec::with_capacity(256),
            armed: Vec::new(),
            fired: Vec::new(),
        })
    }

    /// Serves until stopped, then closes every connection.
    pub(super) fn run(mut self) {
        let spin = match self.wait {
            WaitStrategy::Block => Duration::ZERO,
            WaitStrategy::SpinThenPark { spin_us } => Duration::from_micros(u64::from(spin_us)),
            WaitStrategy::BusyPoll => Duration::MAX,
        };
        let mut idle_since: Option<Instant> = None;
        let mut next_look = Instant::now();
        let mut rounds = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            if self.inbox.pending.load(Ordering::Acquire) {
                self.take_new();
            }
            let worked = self.service_all();
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(64) {
                let now = Instant::now();
                if now >= next_look {
                    self.look(0);
                    next_look = now + LOOK_EVERY;
                }
            }
            if worked {
                idle_since = None;
                continue;
            }
            if spin.is_zero() {
                self.park();
                continue;
            }
            let now = match idle_since {
                None => {
                    idle_since = Some(Instant::now());
                    continue;
                }
                // The clock is read every 16 idle rounds.
                Some(_) if !rounds.is_multiple_of(16) => {
                    std::hint::spin_loop();
                    continue;
                }
                Some(since) => (since, Instant::now()),
            };
            if spin != Duration::MAX && now.1 - now.0 >= spin {
                self.park();
                idle_since = None;
                next_look = Instant::now() + LOOK_EVERY;
            }
        }
        for slot in 0..self.conns.len() {
            self.close(slot, Close::new("shutdown", None));
        }
    }

    fn service_all(&mut self) -> bool {
        let mut worked = false;
        for slot in 0..self.conns.len() {
            worked |= self.service(slot);
        }
        worked
    }

    fn service(&mut self, slot: usize) -> bool {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        match conn.service(&self.ns) {
            Ok(worked) => worked,
            Err(close) => {
                self.close(slot, close);
                true
            }
        }
    }

    fn take_new(&mut self) {
        self.inbox.pending.store(false, Ordering::SeqCst);
        let ready = std::mem::take(&mut *self.inbox.ready.lock());
        for conn in ready {
            self.add(conn);
        }
    }

    fn add(&mut self, conn: ServerConnection) {
        let id = self.next_id;
        self.next_id += 1;
        let mut c = Conn::new(id, conn, self.ns.metrics.clone());
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.fired.push(false);
                self.armed.push(false);
                self.conns.len() - 1
            }
        };
        let (doorbell, socket) = c.conn.poll_fds();
        let events = epoll::IN | epoll::RDHUP;
        let registered = self
            .epoll
            .add(doorbell, epoll::IN, conn_token(slot, false))
            .and_then(|()| self.epoll.add(socket, events, conn_token(slot, true)));
        if let Err(e) = registered {
            let _ = self.epoll.delete(doorbell);
            tracing::warn!(
                conn = id,
                "cannot watch a native connection, closing it: {e}"
            );
            NativeMetrics::closed("io");
            self.free.push(slot);
            return;
        }
        c.socket_events = events;
        tracing::info!(
            conn = id,
            client = %c.conn.client_name(),
            transport = ?c.conn.transport(),
            ring_bytes = c.conn.ring_capacity(),
            "native connection open"
        );
        self.ns.metrics.connections.increment(1.0);
        self.conns[slot] = Some(c);
    }

    fn close(&mut self, slot: usize, close: Close) {
        let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        let (doorbell, socket) = c.conn.poll_fds();
        let _ = self.epoll.delete(doorbell);
        let _ = self.epoll.delete(socket);
        c.release(&self.ns);
        let client = c.conn.client_name().to_string();
        match (&close.detail, close.reason) {
            (None, _) | (_, "hangup" | "bye" | "shutdown") => tracing::info!(
                conn = c.id,
                client = %client,
                reason = %close.reason,
                "native connection closed"
            ),
            (Some(detail), _) => tracing::warn!(
                conn = c.id,
                client = %client,
                reason = %close.reason,
                "native connection closed: {detail}"
            ),
        }
        NativeMetrics::closed(close.reason);
        self.ns.metrics.connections.decrement(1.0);
    }

    /// Accepts what waits on listener `i`, handing each to a handshake thread.
    fn accept(&mut self, i: usize) {
        let Some(listener) = self.listeners.get(i) else {
            return;
        };
        loop {
            let incoming = match listener.accept() {
                Ok(incoming) => incoming,
                Err(NativeError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of descriptors and the like: try again at the next look.
                    tracing::warn!("accepting a native connection failed: {e}");
                    return;
                }
            };
            if self.inbox.handshakes.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
                self.inbox.handshakes.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(
                    "refusing a native connection: {MAX_HANDSHAKES} handshakes are already in progress"
                );
                NativeMetrics::closed("handshake");
                continue;
            }
            let inbox = self.inbox.clone();
            let options = self.options.clone();
            let spawned = std::thread::Builder::new()
                .name("kascade-native-hs".into())
                .spawn(move || handshake(incoming, &options, &inbox));
            if let Err(e) = spawned {
                self.inbox.handshakes.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("cannot start a native handshake thread: {e}");
            }
        }
    }

    /// Looks at the epoll set for up to `timeout_ms` and acts on what it finds.
    fn look(&mut self, timeout_ms: i32) {
        if let Err(e) = self
            .epoll
            .wait(&mut self.event_buf, &mut self.events, timeout_ms)
        {
            tracing::error!("native core epoll_wait: {e}");
            std::thread::sleep(Duration::from_millis(10));
            return;
        }
        let events = std::mem::take(&mut self.events);
        for &(token, ev) in &events {
            if token == WAKE_TOKEN {
                self.wake.drain();
            } else if token >= LISTENER_TOKEN - 16 {
                self.accept((LISTENER_TOKEN - token) as usize);
            } else {
                let slot = (token >> 1) as usize;
                if token & 1 == 1 {
                    self.socket_event(slot, ev);
                } else if let Some(f) = self.fired.get_mut(slot) {
                    *f = true;
                }
            }
        }
        self.events = events;
        self.settle_doorbells();
    }

    /// Clears the flags of armed connections, and reads every doorbell that
    /// rang (a rung doorbell left unread would wake every later look).
    fn settle_doorbells(&mut self) {
        for slot in 0..self.conns.len() {
            let fired = std::mem::take(&mut self.fired[slot]);
            let armed = std::mem::take(&mut self.armed[slot]);
            if let Some(c) = self.conns[slot].as_mut() {
                if fired {
                    c.conn.disarm();
                } else if armed {
                    c.conn.disarm_quiet();
                }
            }
        }
    }

    /// A connection's socket has news: a hang-up, TCP data or room, or (shm)
    /// bytes on a control socket that must stay silent.
    fn socket_event(&mut self, slot: usize, ev: u32) {
        let Some(c) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let tcp = c.conn.transport() == Transport::Tcp;
        let hangup = ev & (epoll::RDHUP | epoll::HUP_OR_ERR) != 0;
        if tcp {
            // Read what arrived (or what the peer wrote before it closed).
            self.service(slot);
            let still = self.conns.get(slot).and_then(Option::as_ref);
            if hangup && still.is_some_and(|c| ev & epoll::HUP_OR_ERR != 0 || !c.reading()) {
                self.close(slot, Close::new("hangup", None));
            }
            return;
        }
        match c.conn.check_alive() {
            Err(NativeError::Closed) => {
                // Serve what the client queued before it went, then close.
                self.service(slot);
                self.close(slot, Close::new("hangup", None));
            }
            Err(e) => self.close(slot, e.into()),
            Ok(()) if hangup => self.close(slot, Close::new("hangup", None)),
            Ok(()) => self.close(
                slot,
                Close::new(
                    "protocol",
                    "the client wrote to the control socket after the handshake".to_string(),
                ),
            ),
        }
    }

    /// Parks until a client, a waker, a listener or a stop asks for attention.
    fn park(&mut self) {
        self.inbox.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let mut ready =
            self.inbox.pending.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst);
        let mut failed: Vec<(usize, NativeError)> = Vec::new();
        if !ready {
            for slot in 0..self.conns.len() {
                let Some(c) = self.conns[slot].as_mut() else {
                    continue;
                };
                let reading = c.reading();
                let interest = Interest {
                    recv: reading,
                    send_len: c.waiting_room(),
                };
                if c.conn.transport() == Transport::Tcp {
                    let mut want = epoll::RDHUP;
                    if reading {
                        want |= epoll::IN;
                    }
                    if c.shared.queued_bytes() > 0 {
                        want |= epoll::OUT;
                    }
                    if want != c.socket_events {
                        let (_, socket) = c.conn.poll_fds();
                        if let Err(e) = self.epoll.modify(socket, want, conn_token(slot, true)) {
                            failed.push((slot, e.into()));
                            continue;
                        }
                        c.socket_events = want;
                    }
                }
                match c.conn.arm(interest) {
                    Ok(true) => self.armed[slot] = true,
                    Ok(false) => {
                        ready = true;
                        break;
                    }
                    Err(e) => failed.push((slot, e)),
                }
            }
        }
        if !ready && failed.is_empty() {
            self.look(PARK_MS);
        } else {
            self.settle_doorbells();
        }
        self.inbox.parked.store(false, Ordering::SeqCst);
        for (slot, e) in failed {
            self.close(slot, e.into());
        }
    }
}

/// Runs one handshake (bounded by the options' timeout) and hands the
/// connection to the core.
fn handshake(incoming: Incoming, options: &ServerOptions, inbox: &Inbox) {
    let transport = incoming.transport();
    match incoming.handshake(options) {
        Ok(conn) => inbox.push(conn),
        Err(e) => {
            tracing::warn!(?transport, "native handshake failed: {e}");
            NativeMetrics::closed("handshake");
        }
    }
    inbox.handshakes.fetch_sub(1, Ordering::SeqCst);
}
