//! One connection's moving parts, whatever the transport: the receiving side
//! ([`Rx`]: a ring consumer, or a stream buffer for TCP), the sending side
//! ([`Tx`]: a ring producer, or a stream writer), and the [`Signal`] (the
//! doorbells and the socket that tells when the peer is gone). The client and
//! the broker's [`ServerConnection`](super::ServerConnection) are both built on
//! these, so the wait protocol and the ring checks exist once.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::time::Duration;

use super::frame::{Frame, RawSink};
use super::ring::{Consumer, Producer, Ring};
use super::sys::{self, EventFd};
use super::tcp::{StreamRx, StreamTx};
use super::wait::Waitable;
use super::{NativeError, Transport};

/// The connection's socket: the handshake ran over it; afterwards it carries
/// the data (TCP) or only tells that the peer is alive (shm, RDMA).
#[derive(Debug)]
pub(crate) enum Socket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Socket {
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            Socket::Unix(s) => s.as_raw_fd(),
            Socket::Tcp(s) => s.as_raw_fd(),
        }
    }
}

/// Doorbells and liveness for one side of a connection.
pub(crate) struct Signal {
    pub(crate) transport: Transport,
    /// What we park on: the peer (shm) and our own wakers ring it.
    own: EventFd,
    /// The peer's doorbell (shm only).
    peer: Option<EventFd>,
    pub(crate) socket: Socket,
    /// A local waker asked for attention.
    notified: AtomicBool,
    /// The owning thread is (about to be) parked.
    parked: AtomicBool,
}

impl Signal {
    pub(crate) fn new(
        transport: Transport,
        own: EventFd,
        peer: Option<EventFd>,
        socket: Socket,
    ) -> Signal {
        Signal {
            transport,
            own,
            peer,
            socket,
            notified: AtomicBool::new(false),
            parked: AtomicBool::new(false),
        }
    }

    /// Wakes the peer (shm: its eventfd). TCP peers wake on the data itself;
    /// RDMA peers poll.
    pub(crate) fn ring_peer(&self) -> Result<(), NativeError> {
        if let Some(peer) = &self.peer {
            peer.signal()?;
        }
        Ok(())
    }

    /// Fails with `Closed` when the socket has hung up (shm, RDMA).
    pub(crate) fn check_alive(&self) -> Result<(), NativeError> {
        if self.transport != Transport::Tcp && sys::hung_up(self.socket.raw_fd())? {
            return Err(NativeError::Closed);
        }
        Ok(())
    }

    /// Parks until our doorbell rings, the socket has news, or `timeout`.
    /// `read`/`write`: wait for TCP data / TCP send space too.
    pub(crate) fn park(
        &self,
        timeout: Option<Duration>,
        read: bool,
        write: bool,
    ) -> Result<(), NativeError> {
        let mut sock_events = libc::POLLRDHUP;
        if self.transport != Transport::Tcp || read {
            sock_events |= libc::POLLIN;
        }
        if write {
            sock_events |= libc::POLLOUT;
        }
        let r = sys::poll2(
            self.own.raw_fd(),
            libc::POLLIN,
            self.socket.raw_fd(),
            sock_events,
            timeout,
        )?;
        if r.first & libc::POLLIN != 0 {
            self.own.drain();
        }
        if self.transport != Transport::Tcp && r.second != 0 {
            // Nothing but EOF may arrive on an shm/RDMA control socket.
            if r.second & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP | libc::POLLNVAL) != 0
                || sys::peer_closed(self.socket.raw_fd())?
            {
                return Err(NativeError::Closed);
            }
            if r.second & libc::POLLIN != 0 {
                return Err(NativeError::Protocol(
                    "the peer wrote to the control socket after the handshake".into(),
                ));
            }
        }
        Ok(())
    }

    /// Asks the owning thread to look (from any thread).
    pub(crate) fn wake(&self) -> io::Result<()> {
        self.notified.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) {
            self.own.signal()?;
        }
        Ok(())
    }

    pub(crate) fn take_notified(&self) -> bool {
        self.notified.load(Ordering::Relaxed) && self.notified.swap(false, Ordering::Acquire)
    }

    pub(crate) fn set_parked(&self, on: bool) {
        self.parked.store(on, Ordering::Relaxed);
    }

    pub(crate) fn own_fd(&self) -> RawFd {
        self.own.raw_fd()
    }

    pub(crate) fn drain_own(&self) {
        self.own.drain();
    }
}

/// A peer that closed after writing still has its frames read: `Closed`
/// counts only once nothing is left to receive.
pub(crate) fn closed_unless_data(
    r: Result<(), NativeError>,
    rx: &mut Rx,
) -> Result<(), NativeError> {
    match r {
        Err(NativeError::Closed) if rx.has_data().unwrap_or(false) => Ok(()),
        other => other,
    }
}

/// Called after the consumer releases space (RDMA mirrors the head to the peer).
pub(crate) trait ReleaseHook: Send {
    fn released(&mut self, head: u64) -> Result<(), NativeError>;
}

/// Called after the producer publishes (RDMA writes the new bytes and tail to the peer).
pub(crate) trait PublishHook: Send {
    fn published(&mut self, ring: &Ring, from: u64, to: u64) -> Result<(), NativeError>;
}

/// The receiving side.
pub(crate) enum Rx {
    Ring(Consumer, Option<Box<dyn ReleaseHook>>),
    Stream(StreamRx),
}

impl Rx {
    pub(crate) fn has_data(&mut self) -> Result<bool, NativeError> {
        match self {
            Rx::Ring(c, _) => Ok(c.has_data()?),
            Rx::Stream(s) => s.has_data(),
        }
    }

    /// Hands consumed space back to the producer, ringing it when parked.
    fn release(&mut self, signal: &Signal) -> Result<(), NativeError> {
        if let Rx::Ring(c, hook) = self {
            let ring = c.release();
            if let Some(h) = hook {
                h.released(c.released())?;
            }
            if ring {
                signal.ring_peer()?;
            }
        }
        Ok(())
    }

    /// Copies the next frame into `buf` and consumes it; false when none waits.
    pub(crate) fn copy_next(
        &mut self,
        buf: &mut Vec<u8>,
        signal: &Signal,
    ) -> Result<bool, NativeError> {
        let got = match self {
            Rx::Ring(c, _) => c.copy_next(buf)?,
            Rx::Stream(s) => match s.peek()? {
                Some(b) => {
                    buf.clear();
                    buf.extend_from_slice(b);
                    s.consume();
                    true
                }
                None => false,
            },
        };
        if got {
            self.release(signal)?;
        }
        Ok(got)
    }

    /// The next frame in place, not consumed.
    pub(crate) fn peek(&mut self) -> Result<Option<&[u8]>, NativeError> {
        match self {
            Rx::Ring(c, _) => Ok(c.peek_view()?),
            Rx::Stream(s) => s.peek(),
        }
    }

    /// The frame `peek` last returned.
    pub(crate) fn current(&self) -> Option<&[u8]> {
        match self {
            Rx::Ring(c, _) => c.current_view(),
            Rx::Stream(s) => s.current(),
        }
    }

    /// Consumes the frame `peek` returned and releases its space.
    pub(crate) fn consume(&mut self, signal: &Signal) -> Result<(), NativeError> {
        match self {
            Rx::Ring(c, _) => c.consume(),
            Rx::Stream(s) => s.consume(),
        }
        self.release(signal)
    }

    pub(crate) fn set_sleeping(&self, on: bool) {
        if let Rx::Ring(c, _) = self {
            c.ring()
                .consumer_sleeping()
                .store(u32::from(on), Ordering::Relaxed);
        }
    }
}

/// The sending side.
pub(crate) enum Tx {
    Ring(Producer, Option<Box<dyn PublishHook>>),
    Stream(StreamTx),
}

impl Tx {
    pub(crate) fn max_payload(&self) -> usize {
        match self {
            Tx::Ring(p, _) => p.max_payload(),
            Tx::Stream(s) => s.max_payload(),
        }
    }

    /// Room for a frame of `len` bytes now.
    pub(crate) fn has_room(&mut self, len: usize) -> Result<bool, NativeError> {
        match self {
            Tx::Ring(p, _) => Ok(p.has_room(len)?),
            Tx::Stream(s) => s.has_room(len),
        }
    }

    /// Queues `frame` if there is room (false when not); ring frames are
    /// published at once (and the peer rung if parked), stream frames go out
    /// on the next [`Tx::flush`].
    pub(crate) fn try_send(
        &mut self,
        frame: &Frame<'_>,
        signal: &Signal,
    ) -> Result<bool, NativeError> {
        let len = frame.encoded_len()?;
        let max = self.max_payload();
        if len > max {
            return Err(NativeError::TooLarge { len, max });
        }
        match self {
            Tx::Ring(p, hook) => {
                let mut overflow = false;
                let from = p.tail();
                let wrote = p.try_write_with(len, |dst| {
                    // SAFETY: `dst` is `len` writable bytes inside the ring.
                    let mut sink = unsafe { RawSink::new(dst, len) };
                    frame.write_checked(&mut sink, len);
                    overflow = sink.overflow || sink.written() != len;
                })?;
                if overflow {
                    return Err(NativeError::Protocol(
                        "frame encoder wrote a wrong size".into(),
                    ));
                }
                if wrote {
                    let ring = p.publish();
                    if let Some(h) = hook {
                        h.published(p.ring(), from, p.tail())?;
                    }
                    if ring {
                        signal.ring_peer()?;
                    }
                }
                Ok(wrote)
            }
            Tx::Stream(s) => s.try_push(frame, len),
        }
    }

    /// Writes queued stream bytes without blocking.
    pub(crate) fn flush(&mut self) -> Result<(), NativeError> {
        match self {
            Tx::Ring(..) => Ok(()),
            Tx::Stream(s) => s.flush(),
        }
    }

    /// True while stream bytes wait to be written.
    pub(crate) fn pending(&self) -> bool {
        match self {
            Tx::Ring(..) => false,
            Tx::Stream(s) => s.pending() > 0,
        }
    }

    /// Bytes queued but not yet written (streams).
    pub(crate) fn pending_bytes(&self) -> usize {
        match self {
            Tx::Ring(..) => 0,
            Tx::Stream(s) => s.pending(),
        }
    }

    pub(crate) fn set_sleeping(&self, on: bool) {
        if let Tx::Ring(p, _) = self {
            p.ring()
                .producer_sleeping()
                .store(u32::from(on), Ordering::Relaxed);
        }
    }
}

/// Waiting for room to send a frame of `len` bytes.
pub(crate) struct SendWait<'a> {
    pub(crate) tx: &'a mut Tx,
    pub(crate) signal: &'a Signal,
    pub(crate) len: usize,
}

impl Waitable for SendWait<'_> {
    fn ready(&mut self) -> Result<bool, NativeError> {
        self.tx.has_room(self.len)
    }
    fn set_sleeping(&mut self, on: bool) {
        self.tx.set_sleeping(on);
    }
    fn park(&mut self, timeout: Option<Duration>) -> Result<(), NativeError> {
        self.signal.park(timeout, false, true)
    }
    fn check_alive(&mut self) -> Result<(), NativeError> {
        self.signal.check_alive()
    }
}
