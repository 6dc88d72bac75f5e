//! The broker's side of a native connection, the same for every transport.
//!
//! A broker binds a [`Listener`] (`unix:///path` for shm, `tcp://host:port`,
//! `rdma://host:port`), accepts [`Incoming`] connections on one thread and
//! hands each to the thread that will serve it, which runs the handshake
//! ([`Incoming::handshake`]) and then drives the [`ServerConnection`]:
//!
//! ```no_run
//! use kascade_wire::native::{frame, Listener, ServerOptions};
//! use kascade_wire::native::server::Interest;
//! let listener = Listener::bind("unix:///tmp/kascade-native.sock")?;
//! let conn = listener.accept()?;
//! let mut conn = conn.handshake(&ServerOptions::default())?;
//! let mut buf = Vec::new();
//! loop {
//!     while conn.try_recv(&mut buf)? {
//!         let request = frame::decode(&buf)?; // bytes are ours: copied out of the ring
//!         // ... handle it, then conn.send(&answer, deadline)?
//!     }
//!     conn.flush()?;
//!     conn.wait(Interest::RECV, None)?; // spin, then park; a dead client is an error
//! }
//! # Ok::<(), kascade_wire::native::NativeError>(())
//! ```
//!
//! Other threads reach the connection through a [`Waker`] (wake its service
//! thread) and a [`ResponseSender`] (write a frame straight into the response
//! ring when there is room, e.g. a Notify from an upcall worker).

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::frame::Frame;
use super::link::{closed_unless_data, Rx, Signal, Tx};
use super::wait::{wait_until, WaitStrategy, Waitable};
use super::{parse_url, shm, tcp, Endpoint, NativeError, Transport};

/// The broker's settings for native connections.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How the service thread waits for requests and credits.
    pub wait: WaitStrategy,
    /// Ring capacity when the client asks for none (4 MiB).
    pub ring_capacity: u32,
    /// Smallest capacity granted (64 KiB).
    pub min_ring_capacity: u32,
    /// Largest capacity granted (64 MiB).
    pub max_ring_capacity: u32,
    /// The name sent in Welcome.
    pub server_name: String,
    /// How long a client may take to say Hello.
    pub handshake_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            wait: WaitStrategy::default(),
            ring_capacity: 4 << 20,
            min_ring_capacity: 64 << 10,
            max_ring_capacity: 64 << 20,
            server_name: "kascade".into(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A bound native listener.
#[derive(Debug)]
pub enum Listener {
    /// Shared memory: a Unix socket (removed when the listener is dropped).
    Shm(UnixListener, PathBuf),
    /// TCP.
    Tcp(TcpListener),
    /// RDMA: connection setup over TCP.
    Rdma(TcpListener),
}

impl Listener {
    /// Binds `unix:///path` / `shm:///path`, `tcp://host:port` or `rdma://host:port`.
    ///
    /// A Unix socket path left by a dead broker is replaced; one a live broker
    /// answers on is an `AddrInUse` error.
    pub fn bind(url: &str) -> Result<Listener, NativeError> {
        match parse_url(url)? {
            Endpoint::Shm(path) => {
                if path.exists() {
                    if UnixStream::connect(&path).is_ok() {
                        return Err(NativeError::Io(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!("{} is in use by a running broker", path.display()),
                        )));
                    }
                    std::fs::remove_file(&path)?;
                }
                Ok(Listener::Shm(UnixListener::bind(&path)?, path))
            }
            Endpoint::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr)?)),
            Endpoint::Rdma(addr) => {
                if cfg!(feature = "rdma") {
                    Ok(Listener::Rdma(TcpListener::bind(addr)?))
                } else {
                    Err(NativeError::RdmaNotBuilt)
                }
            }
        }
    }

    /// The URL a client connects to (with the real port after binding port 0).
    pub fn url(&self) -> Result<String, NativeError> {
        Ok(match self {
            Listener::Shm(_, path) => format!("shm://{}", path.display()),
            Listener::Tcp(l) => format!("tcp://{}", l.local_addr()?),
            Listener::Rdma(l) => format!("rdma://{}", l.local_addr()?),
        })
    }

    /// The listening descriptor (for a broker's own poll loop).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Shm(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) | Listener::Rdma(l) => l.as_raw_fd(),
        }
    }

    /// Waits for the next connection. The handshake is left to
    /// [`Incoming::handshake`], on the thread that will serve it, so a slow
    /// client never holds up the accept loop.
    pub fn accept(&self) -> Result<Incoming, NativeError> {
        Ok(match self {
            Listener::Shm(l, _) => Incoming::Shm(l.accept()?.0),
            Listener::Tcp(l) => Incoming::Tcp(l.accept()?.0),
            Listener::Rdma(l) => Incoming::Rdma(l.accept()?.0),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Shm(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An accepted socket whose handshake has not run yet.
#[derive(Debug)]
pub enum Incoming {
    /// From a Unix socket (shm).
    Shm(UnixStream),
    /// From TCP.
    Tcp(std::net::TcpStream),
    /// From the RDMA setup listener.
    Rdma(std::net::TcpStream),
}

impl Incoming {
    /// The transport this connection will use.
    pub fn transport(&self) -> Transport {
        match self {
            Incoming::Shm(_) => Transport::Shm,
            Incoming::Tcp(_) => Transport::Tcp,
            Incoming::Rdma(_) => Transport::Rdma,
        }
    }

    /// Runs the handshake (bounded by `opts.handshake_timeout`): reads Hello,
    /// sets up the rings (shm: memfd + eventfds sent to the client), sends Welcome.
    pub fn handshake(self, opts: &ServerOptions) -> Result<ServerConnection, NativeError> {
        let parts = match self {
            Incoming::Shm(s) => shm::accept(s, opts)?,
            Incoming::Tcp(s) => tcp::accept(s, opts)?,
            #[cfg(feature = "rdma")]
            Incoming::Rdma(s) => super::rdma::accept(s, opts)?,
            #[cfg(not(feature = "rdma"))]
            Incoming::Rdma(_) => return Err(NativeError::RdmaNotBuilt),
        };
        let wait = match parts.signal.transport {
            // An RDMA peer cannot ring a doorbell without a round trip: poll.
            Transport::Rdma => WaitStrategy::BusyPoll,
            _ => opts.wait,
        };
        Ok(ServerConnection {
            max_payload: parts.tx.max_payload(),
            rx: parts.rx,
            tx: Arc::new(Mutex::new(parts.tx)),
            signal: Arc::new(parts.signal),
            wait,
            capacity: parts.capacity,
            client_name: parts.peer_name,
        })
    }
}

/// What [`ServerConnection::wait`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// A request frame to read.
    pub recv: bool,
    /// Room in the response ring for a frame of this many bytes.
    pub send_len: Option<usize>,
}

impl Interest {
    /// Wait for a request (or a wake-up).
    pub const RECV: Interest = Interest {
        recv: true,
        send_len: None,
    };

    /// Wait for a request, or room for a frame of `len` bytes.
    pub fn recv_or_room(len: usize) -> Interest {
        Interest {
            recv: true,
            send_len: Some(len),
        }
    }
}

/// What [`ServerConnection::wait`] found (all false: the deadline passed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// A request waits.
    pub recv: bool,
    /// The response ring has the room asked for.
    pub send: bool,
    /// A [`Waker`] was used.
    pub woken: bool,
}

/// One accepted, handshaken native connection, driven by one service thread.
pub struct ServerConnection {
    rx: Rx,
    tx: Arc<Mutex<Tx>>,
    signal: Arc<Signal>,
    wait: WaitStrategy,
    capacity: u32,
    max_payload: usize,
    client_name: String,
}

fn lock(tx: &Mutex<Tx>) -> MutexGuard<'_, Tx> {
    // A panic elsewhere while holding the lock leaves the Tx usable (its state
    // is only positions, validated on every use).
    tx.lock().unwrap_or_else(|p| p.into_inner())
}

impl ServerConnection {
    /// The transport.
    pub fn transport(&self) -> Transport {
        self.signal.transport
    }

    /// The name the client gave in Hello.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// Each ring's capacity.
    pub fn ring_capacity(&self) -> u32 {
        self.capacity
    }

    /// The largest frame either side may send.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The wait strategy in use (RDMA always busy-polls).
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Copies the next request frame's bytes into `buf` (replacing them) and
    /// frees its ring space; false when none waits. Decode `buf` with
    /// [`frame::decode`](super::frame::decode). Never blocks.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<bool, NativeError> {
        self.rx.copy_next(buf, &self.signal)
    }

    /// Like [`try_recv`](Self::try_recv), waiting per the strategy up to
    /// `deadline`; false when the deadline passed.
    pub fn recv(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<bool, NativeError> {
        loop {
            if self.try_recv(buf)? {
                return Ok(true);
            }
            let ready = self.wait(Interest::RECV, deadline)?;
            if !ready.recv && !ready.woken {
                return Ok(false);
            }
        }
    }

    /// Queues a response/notify frame if the response ring has room (false
    /// when not). Ring frames are visible to the client at once; TCP frames
    /// go out on [`flush`](Self::flush) (or the next wait).
    pub fn try_send(&mut self, frame: &Frame<'_>) -> Result<bool, NativeError> {
        lock(&self.tx).try_send(frame, &self.signal)
    }

    /// Sends a frame, waiting per the strategy for credits up to `deadline`:
    /// `Timeout` when the client does not make room in time, `Closed` when it
    /// dies, so a dead or stuck client never hangs the broker thread.
    pub fn send(
        &mut self,
        frame: &Frame<'_>,
        deadline: Option<Instant>,
    ) -> Result<(), NativeError> {
        let len = frame.encoded_len()?;
        loop {
            if self.try_send(frame)? {
                return Ok(());
            }
            let ready = self.wait_send(len, deadline)?;
            if !ready {
                return Err(NativeError::Timeout);
            }
        }
    }

    fn wait_send(&mut self, len: usize, deadline: Option<Instant>) -> Result<bool, NativeError> {
        let mut tx = lock(&self.tx);
        let mut w = super::link::SendWait {
            tx: &mut tx,
            signal: &self.signal,
            len,
        };
        wait_until(self.wait, &mut w, deadline)
    }

    /// Writes queued TCP bytes without blocking (no-op for rings).
    pub fn flush(&mut self) -> Result<(), NativeError> {
        lock(&self.tx).flush()
    }

    /// Waits per the strategy for what `interest` names, a [`Waker`], or
    /// `deadline`. Flushes queued TCP bytes first. `Closed` when the client
    /// has gone (its socket hung up, even if it was SIGKILLed).
    pub fn wait(
        &mut self,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> Result<Ready, NativeError> {
        lock(&self.tx).flush()?;
        let mut w = AnyWait {
            rx: &mut self.rx,
            tx: &self.tx,
            signal: &self.signal,
            interest,
            found: Ready::default(),
        };
        wait_until(self.wait, &mut w, deadline)?;
        Ok(w.found)
    }

    /// For a broker that polls many connections itself (epoll): sets this
    /// side's sleeping flags and returns false if something is already ready
    /// (then do not park). Park on [`poll_fds`](Self::poll_fds) (`POLLIN` on
    /// both; `POLLOUT` on the socket too for TCP with queued output), then
    /// call [`disarm`](Self::disarm).
    pub fn arm(&mut self, interest: Interest) -> Result<bool, NativeError> {
        let mut w = AnyWait {
            rx: &mut self.rx,
            tx: &self.tx,
            signal: &self.signal,
            interest,
            found: Ready::default(),
        };
        w.set_sleeping(true);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if w.ready()? {
            w.set_sleeping(false);
            return Ok(false);
        }
        Ok(true)
    }

    /// Clears the sleeping flags set by [`arm`](Self::arm) and the doorbell.
    pub fn disarm(&mut self) {
        self.disarm_quiet();
        self.signal.drain_own();
    }

    /// Clears the sleeping flags set by [`arm`](Self::arm) but leaves the
    /// doorbell as it is: for a connection whose eventfd the broker's own poll
    /// saw quiet, it saves a `read` per idle connection per wake-up (a ring
    /// that comes later leaves the eventfd readable, so the next poll returns
    /// at once and [`disarm`](Self::disarm) drains it then).
    pub fn disarm_quiet(&mut self) {
        self.rx.set_sleeping(false);
        lock(&self.tx).set_sleeping(false);
        self.signal.set_parked(false);
    }

    /// True when the response ring (or, for TCP, the send queue) has room for
    /// a frame of `len` bytes now. Never waits and sets no flag.
    pub fn has_room(&self, len: usize) -> Result<bool, NativeError> {
        lock(&self.tx).has_room(len)
    }

    /// `(doorbell eventfd, socket)`: readable when the client (or a
    /// [`Waker`]) rings, and when the client hangs up (or sends TCP data).
    pub fn poll_fds(&self) -> (RawFd, RawFd) {
        (self.signal.own_fd(), self.signal.socket.raw_fd())
    }

    /// Fails with `Closed` when the client's socket has hung up.
    pub fn check_alive(&self) -> Result<(), NativeError> {
        self.signal.check_alive()
    }

    /// A handle other threads use to wake this connection's service thread.
    pub fn waker(&self) -> Waker {
        Waker {
            signal: self.signal.clone(),
        }
    }

    /// A handle other threads use to write frames straight into the response
    /// ring (non-blocking; the service thread still owns waiting).
    pub fn sender(&self) -> ResponseSender {
        ResponseSender {
            tx: self.tx.clone(),
            signal: self.signal.clone(),
        }
    }
}

struct AnyWait<'a> {
    rx: &'a mut Rx,
    tx: &'a Mutex<Tx>,
    signal: &'a Signal,
    interest: Interest,
    found: Ready,
}

impl Waitable for AnyWait<'_> {
    fn ready(&mut self) -> Result<bool, NativeError> {
        let mut found = Ready {
            woken: self.signal.take_notified(),
            ..Ready::default()
        };
        if self.interest.recv {
            found.recv = self.rx.has_data()?;
        }
        if let Some(len) = self.interest.send_len {
            found.send = lock(self.tx).has_room(len)?;
        }
        self.found = found;
        Ok(found.recv || found.send || found.woken)
    }

    fn set_sleeping(&mut self, on: bool) {
        self.signal.set_parked(on);
        if self.interest.recv {
            self.rx.set_sleeping(on);
        }
        if self.interest.send_len.is_some() {
            lock(self.tx).set_sleeping(on);
        }
    }

    fn park(&mut self, timeout: Option<Duration>) -> Result<(), NativeError> {
        let write = {
            let mut tx = lock(self.tx);
            tx.flush()?;
            tx.pending()
        };
        let parked = self.signal.park(timeout, self.interest.recv, write);
        closed_unless_data(parked, self.rx)
    }

    fn check_alive(&mut self) -> Result<(), NativeError> {
        closed_unless_data(self.signal.check_alive(), self.rx)
    }
}

/// Wakes a connection's service thread from any thread (cheap when it is
/// not parked: one atomic store and a fence).
#[derive(Clone)]
pub struct Waker {
    signal: Arc<Signal>,
}

impl Waker {
    /// Makes the service thread's current or next `wait` return `woken`.
    pub fn wake(&self) -> Result<(), NativeError> {
        Ok(self.signal.wake()?)
    }
}

/// Writes frames into a connection's response ring from another thread.
#[derive(Clone)]
pub struct ResponseSender {
    tx: Arc<Mutex<Tx>>,
    signal: Arc<Signal>,
}

impl ResponseSender {
    /// Sends `frame` now if there is room (TCP: queued and written at once,
    /// as far as the socket takes it); false when the client has not made
    /// room. Never waits.
    pub fn try_send(&self, frame: &Frame<'_>) -> Result<bool, NativeError> {
        let mut tx = lock(&self.tx);
        let sent = tx.try_send(frame, &self.signal)?;
        if sent {
            tx.flush()?;
            if tx.pending() {
                // The socket is full: the service thread flushes the rest
                // when it can (it parks with POLLOUT while bytes are queued).
                self.signal.wake()?;
            }
        }
        Ok(sent)
    }

    /// The unsent TCP bytes queued (0 for rings).
    pub fn queued_bytes(&self) -> usize {
        lock(&self.tx).pending_bytes()
    }
}
