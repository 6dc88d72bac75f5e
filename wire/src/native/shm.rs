//! The shared-memory transport: a Unix socket handshake passes a memfd with
//! the two rings and the two wake-up eventfds; both sides map it.
//!
//! The broker creates one memfd of `2 * (256 + capacity)` bytes: the request
//! ring (client -> broker) first, then the response ring (broker -> client),
//! and two eventfds: `to_broker` (the client rings it after publishing a
//! request or releasing response space) and `to_client`. It sends Welcome on
//! the socket with `[memfd, to_broker, to_client]` attached (SCM_RIGHTS). The
//! socket stays open for the life of the connection: its hang-up is how each
//! side learns the other died (even by SIGKILL).
//!
//! [`ShmPair`] is the same memory and doorbells without a socket or frames,
//! for the ping-pong floor a benchmark measures beside the real path.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::ClientOptions;
use super::handshake::{self, Parts, MAX_HANDSHAKE};
use super::link::{Rx, Signal, Socket, Tx};
use super::ring::{self, Consumer, Memory, Producer, Ring};
use super::server::ServerOptions;
use super::sys::{self, EventFd};
use super::tcp;
use super::wait::{wait_until, WaitStrategy, Waitable};
use super::{NativeError, Transport};

/// Bytes of the memfd holding two rings of `capacity`.
pub fn region_bytes(capacity: u32) -> usize {
    2 * ring::ring_bytes(capacity)
}

/// The broker side: reads Hello from a just-accepted socket, creates the
/// memfd and eventfds, sends Welcome with them attached.
pub(crate) fn accept(stream: UnixStream, opts: &ServerOptions) -> Result<Parts, NativeError> {
    stream.set_read_timeout(Some(opts.handshake_timeout))?;
    stream.set_write_timeout(Some(opts.handshake_timeout))?;
    let hello = tcp::read_record(&mut &stream, MAX_HANDSHAKE)?;
    let (capacity, client_name) = match handshake::accept_hello(&hello, opts) {
        Ok(ok) => ok,
        Err(refusal) => {
            let rec = tcp::record(&refusal.frame())?;
            // The refusal is a courtesy; the error below is what matters.
            let _ = sys::send_with_fds(stream.as_raw_fd(), &rec, &[]);
            return Err(refusal.into_error());
        }
    };
    let len = region_bytes(capacity);
    let memfd = sys::memfd(len, true)?;
    let mem = Arc::new(sys::mmap_shared(&memfd, len)?);
    let requests = Ring::create(mem.clone(), 0, capacity)?;
    let responses = Ring::create(mem, ring::ring_bytes(capacity), capacity)?;
    let to_broker = EventFd::new(true)?;
    let to_client = EventFd::new(true)?;
    let rec = tcp::record(&handshake::welcome(capacity, &opts.server_name))?;
    sys::send_with_fds(
        stream.as_raw_fd(),
        &rec,
        &[memfd.as_raw_fd(), to_broker.raw_fd(), to_client.raw_fd()],
    )?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(Parts {
        rx: Rx::Ring(requests.consumer(), None),
        tx: Tx::Ring(responses.producer(), None),
        signal: Signal::new(
            Transport::Shm,
            to_broker,
            Some(to_client),
            Socket::Unix(stream),
        ),
        capacity,
        peer_name: client_name,
    })
}

/// The client side: connects, says Hello, maps what Welcome brings.
pub(crate) fn connect(path: &Path, opts: &ClientOptions) -> Result<Parts, NativeError> {
    handshake::check_host()?;
    let stream = UnixStream::connect(path).map_err(|e| {
        NativeError::Connect(format!(
            "cannot connect to the broker's socket {}: {e}",
            path.display()
        ))
    })?;
    stream.set_read_timeout(Some(opts.connect_timeout))?;
    stream.set_write_timeout(Some(opts.connect_timeout))?;
    let hello = tcp::record(&handshake::hello(opts.ring_capacity, &opts.client_name))?;
    sys::send_with_fds(stream.as_raw_fd(), &hello, &[])?;
    let mut fds = Vec::new();
    let welcome = read_record_with_fds(&stream, &mut fds, Instant::now() + opts.connect_timeout)?;
    let (capacity, server_name) = handshake::check_welcome(&welcome)?;
    let [memfd, to_broker, to_client]: [OwnedFd; 3] =
        fds.try_into().map_err(|fds: Vec<OwnedFd>| {
            NativeError::Handshake(format!(
                "Welcome carried {} file descriptors; want 3 (memfd, two eventfds)",
                fds.len()
            ))
        })?;
    let len = region_bytes(capacity);
    let size = sys::fd_size(&memfd)?;
    if size < len as u64 {
        return Err(NativeError::Handshake(format!(
            "the broker's memfd has {size} bytes; two rings of {capacity} need {len}"
        )));
    }
    let mem = Arc::new(sys::mmap_shared(&memfd, len)?);
    let requests = Ring::attach(mem.clone(), 0, capacity)?;
    let responses = Ring::attach(mem, ring::ring_bytes(capacity), capacity)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(Parts {
        rx: Rx::Ring(responses.consumer(), None),
        tx: Tx::Ring(requests.producer(), None),
        signal: Signal::new(
            Transport::Shm,
            EventFd::from_fd(to_client),
            Some(EventFd::from_fd(to_broker)),
            Socket::Unix(stream),
        ),
        capacity,
        peer_name: server_name,
    })
}

/// Reads one record, collecting the descriptors that come with it.
fn read_record_with_fds(
    stream: &UnixStream,
    fds: &mut Vec<OwnedFd>,
    deadline: Instant,
) -> Result<Vec<u8>, NativeError> {
    let mut head = [0u8; 8];
    fill(stream, &mut head, fds, deadline)?;
    let (len, rec) = tcp::record_header(&head, MAX_HANDSHAKE)?;
    let mut body = vec![0u8; rec - ring::RECORD_HEADER];
    fill(stream, &mut body, fds, deadline)?;
    body.truncate(len);
    Ok(body)
}

fn fill(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Instant,
) -> Result<(), NativeError> {
    let mut at = 0;
    while at < buf.len() {
        if Instant::now() >= deadline {
            return Err(NativeError::Timeout);
        }
        match sys::recv_with_fds(stream.as_raw_fd(), &mut buf[at..], fds) {
            Ok(0) => return Err(NativeError::Closed),
            Ok(n) => at += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NativeError::Timeout)
            }
            Err(e) => return Err(e.into()),
        }
        if fds.len() > 3 {
            return Err(NativeError::Handshake(
                "the broker sent too many file descriptors".into(),
            ));
        }
    }
    Ok(())
}

/// Which end of a [`ShmPair`] a process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Writes ring A, reads ring B, waits on eventfd A.
    A,
    /// Writes ring B, reads ring A, waits on eventfd B.
    B,
}

/// Two rings and two eventfds in an anonymous memfd, usable across
/// fork/exec: the ping-pong floor a benchmark prints beside the native path.
///
/// ```no_run
/// # use kascade_wire::native::shm::{ShmPair, Side};
/// # use kascade_wire::native::WaitStrategy;
/// // Parent: create, let a child inherit the descriptors, tell it their numbers.
/// let pair = ShmPair::create(1 << 20).unwrap();
/// pair.make_inheritable().unwrap();
/// let [mem, efd_a, efd_b] = pair.raw_fds();
/// // ... spawn the child with `mem efd_a efd_b` on its command line, then:
/// let mut end = pair.end(Side::A).unwrap();
/// end.send(b"ping", WaitStrategy::default()).unwrap();
/// // Child: let pair = unsafe { ShmPair::from_raw_fds(mem, efd_a, efd_b, 1 << 20) }.unwrap();
/// //        let mut end = pair.end(Side::B).unwrap();
/// ```
pub struct ShmPair {
    memfd: OwnedFd,
    mem: Arc<Memory>,
    capacity: u32,
    efd_a: Arc<EventFd>,
    efd_b: Arc<EventFd>,
}

impl ShmPair {
    /// A fresh pair of empty rings of `capacity` bytes each.
    pub fn create(capacity: u32) -> Result<ShmPair, NativeError> {
        let capacity = ring::check_capacity(u64::from(capacity))?;
        let len = region_bytes(capacity);
        let memfd = sys::memfd(len, true)?;
        let mem = Arc::new(sys::mmap_shared(&memfd, len)?);
        Ring::create(mem.clone(), 0, capacity)?;
        Ring::create(mem.clone(), ring::ring_bytes(capacity), capacity)?;
        Ok(ShmPair {
            memfd,
            mem,
            capacity,
            efd_a: Arc::new(EventFd::new(true)?),
            efd_b: Arc::new(EventFd::new(true)?),
        })
    }

    /// Adopts the descriptors a parent created (see [`ShmPair::raw_fds`]).
    ///
    /// # Safety
    /// The three numbers must be open descriptors this process owns from now
    /// on: the memfd of a pair of this `capacity` and its two eventfds.
    pub unsafe fn from_raw_fds(
        memfd: RawFd,
        efd_a: RawFd,
        efd_b: RawFd,
        capacity: u32,
    ) -> Result<ShmPair, NativeError> {
        // SAFETY: the caller hands these descriptors over to us.
        let (memfd, a, b) = unsafe {
            (
                OwnedFd::from_raw_fd(memfd),
                OwnedFd::from_raw_fd(efd_a),
                OwnedFd::from_raw_fd(efd_b),
            )
        };
        let capacity = ring::check_capacity(u64::from(capacity))?;
        let len = region_bytes(capacity);
        if sys::fd_size(&memfd)? < len as u64 {
            return Err(NativeError::Handshake(
                "the memfd is smaller than two rings".into(),
            ));
        }
        let mem = Arc::new(sys::mmap_shared(&memfd, len)?);
        Ring::attach(mem.clone(), 0, capacity)?;
        Ring::attach(mem.clone(), ring::ring_bytes(capacity), capacity)?;
        Ok(ShmPair {
            memfd,
            mem,
            capacity,
            efd_a: Arc::new(EventFd::from_fd(a)),
            efd_b: Arc::new(EventFd::from_fd(b)),
        })
    }

    /// Clears close-on-exec on the three descriptors so a spawned child inherits them.
    pub fn make_inheritable(&self) -> Result<(), NativeError> {
        for fd in self.raw_fds() {
            sys::inheritable(fd)?;
        }
        Ok(())
    }

    /// `[memfd, eventfd A, eventfd B]`, to hand to a child process.
    pub fn raw_fds(&self) -> [RawFd; 3] {
        [
            self.memfd.as_raw_fd(),
            self.efd_a.raw_fd(),
            self.efd_b.raw_fd(),
        ]
    }

    /// Each ring's capacity.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// One end: its producer, consumer and doorbells. Take one end per process (or thread).
    pub fn end(&self, side: Side) -> Result<ShmEnd, NativeError> {
        let a = Ring::attach(self.mem.clone(), 0, self.capacity)?;
        let b = Ring::attach(
            self.mem.clone(),
            ring::ring_bytes(self.capacity),
            self.capacity,
        )?;
        let (out, inp, own, peer) = match side {
            Side::A => (a, b, self.efd_a.clone(), self.efd_b.clone()),
            Side::B => (b, a, self.efd_b.clone(), self.efd_a.clone()),
        };
        Ok(ShmEnd {
            tx: out.producer(),
            rx: inp.consumer(),
            own,
            peer,
        })
    }
}

/// One end of a [`ShmPair`]: send and receive raw payloads with the wait protocol.
pub struct ShmEnd {
    /// Writes the peer's inbound ring.
    pub tx: Producer,
    /// Reads our inbound ring.
    pub rx: Consumer,
    own: Arc<EventFd>,
    peer: Arc<EventFd>,
}

struct EndRecv<'a>(&'a mut ShmEnd);
struct EndSend<'a>(&'a mut ShmEnd, usize);

impl Waitable for EndRecv<'_> {
    fn ready(&mut self) -> Result<bool, NativeError> {
        Ok(self.0.rx.has_data()?)
    }
    fn set_sleeping(&mut self, on: bool) {
        self.0
            .rx
            .ring()
            .consumer_sleeping()
            .store(u32::from(on), std::sync::atomic::Ordering::Relaxed);
    }
    fn park(&mut self, timeout: Option<Duration>) -> Result<(), NativeError> {
        park_on(&self.0.own, timeout)
    }
}

impl Waitable for EndSend<'_> {
    fn ready(&mut self) -> Result<bool, NativeError> {
        Ok(self.0.tx.has_room(self.1)?)
    }
    fn set_sleeping(&mut self, on: bool) {
        self.0
            .tx
            .ring()
            .producer_sleeping()
            .store(u32::from(on), std::sync::atomic::Ordering::Relaxed);
    }
    fn park(&mut self, timeout: Option<Duration>) -> Result<(), NativeError> {
        park_on(&self.0.own, timeout)
    }
}

fn park_on(efd: &EventFd, timeout: Option<Duration>) -> Result<(), NativeError> {
    let r = sys::poll2(efd.raw_fd(), libc::POLLIN, -1, 0, timeout)?;
    if r.first & libc::POLLIN != 0 {
        efd.drain();
    }
    Ok(())
}

impl ShmEnd {
    /// Sends one payload, waiting per `wait` for room.
    pub fn send(&mut self, payload: &[u8], wait: WaitStrategy) -> Result<(), NativeError> {
        loop {
            if self.tx.try_push(payload)? {
                if self.tx.publish() {
                    self.peer.signal()?;
                }
                return Ok(());
            }
            wait_until(wait, &mut EndSend(self, payload.len()), None)?;
        }
    }

    /// Receives one payload into `buf`, waiting per `wait` up to `deadline`;
    /// false on timeout.
    pub fn recv(
        &mut self,
        buf: &mut Vec<u8>,
        wait: WaitStrategy,
        deadline: Option<Instant>,
    ) -> Result<bool, NativeError> {
        loop {
            if self.rx.copy_next(buf)? {
                if self.rx.release() {
                    self.peer.signal()?;
                }
                return Ok(true);
            }
            if !wait_until(wait, &mut EndRecv(self), deadline)? {
                return Ok(false);
            }
        }
    }
}
