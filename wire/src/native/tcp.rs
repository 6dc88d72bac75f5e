//! The same frames over a stream socket, framed exactly like ring records:
//! `len u32, kind u32 (= 1), payload, zero padding to a multiple of 8`.
//!
//! The receiving side reads whatever has arrived into one buffer and hands
//! out frames in place (zero-copy views, like a ring); the sending side queues
//! records and writes them with one `write` per batch. TCP's own flow control
//! stops a sender: a side whose queue holds a ring's worth of unsent bytes has
//! no "credits" until the socket drains. Sockets are non-blocking after the
//! handshake; waiting is done with `poll` by the wait protocol.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

use super::client::ClientOptions;
use super::frame::{Frame, Sink};
use super::handshake::{self, Parts, MAX_HANDSHAKE};
use super::link::{Rx, Signal, Socket, Tx};
use super::ring::{self, Corruption, RingError, KIND_FRAME, RECORD_HEADER};
use super::server::ServerOptions;
use super::sys::EventFd;
use super::{NativeError, Transport};

fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Appends one record (header, payload, padding) holding `frame` to `out`.
pub(crate) fn push_record(out: &mut Vec<u8>, frame: &Frame<'_>, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&KIND_FRAME.to_le_bytes());
    frame.write_checked(out, len);
    out.zeros(pad8(RECORD_HEADER + len) - RECORD_HEADER - len);
}

/// One frame as a record, for the blocking handshake.
pub(crate) fn record(frame: &Frame<'_>) -> Result<Vec<u8>, NativeError> {
    let len = frame.encoded_len()?;
    let mut out = Vec::with_capacity(pad8(RECORD_HEADER + len));
    push_record(&mut out, frame, len);
    Ok(out)
}

/// Checks a record header; returns the payload length and the whole record's size.
pub(crate) fn record_header(h: &[u8; 8], max: usize) -> Result<(usize, usize), NativeError> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let kind = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if kind != KIND_FRAME {
        return Err(RingError::Corrupt(Corruption::BadKind(kind)).into());
    }
    if len > max {
        return Err(NativeError::TooLarge { len, max });
    }
    Ok((len, pad8(RECORD_HEADER + len)))
}

/// Reads one whole record from a blocking reader (the handshake); returns its payload.
pub(crate) fn read_record(r: &mut impl Read, max: usize) -> Result<Vec<u8>, NativeError> {
    let mut h = [0u8; 8];
    read_exact(r, &mut h)?;
    let (len, rec) = record_header(&h, max)?;
    let mut body = vec![0u8; rec - RECORD_HEADER];
    read_exact(r, &mut body)?;
    body.truncate(len);
    Ok(body)
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), NativeError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => NativeError::Closed,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NativeError::Timeout,
        _ => NativeError::Io(e),
    })
}

/// The receiving half over a non-blocking stream.
pub(crate) struct StreamRx {
    sock: Arc<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_payload: usize,
    /// The frame under `start`: its payload length and record size.
    current: Option<(usize, usize)>,
}

impl StreamRx {
    pub(crate) fn new(sock: Arc<TcpStream>, max_payload: usize) -> StreamRx {
        StreamRx {
            sock,
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
            max_payload,
            current: None,
        }
    }

    /// Parses the record at `start` if all of it has arrived.
    fn parse(&mut self) -> Result<Option<(usize, usize)>, NativeError> {
        if let Some(cur) = self.current {
            return Ok(Some(cur));
        }
        let have = self.end - self.start;
        if have < RECORD_HEADER {
            return Ok(None);
        }
        let mut h = [0u8; 8];
        h.copy_from_slice(&self.buf[self.start..self.start + 8]);
        let (len, rec) = record_header(&h, self.max_payload)?;
        if have < rec {
            // Make room for the whole record behind `start`.
            if self.buf.len() - self.start < rec {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < rec {
                    self.buf.resize(rec, 0);
                }
            }
            return Ok(None);
        }
        self.current = Some((len, rec));
        Ok(self.current)
    }

    /// Reads what has arrived (non-blocking). EOF is `Closed`.
    fn fill(&mut self) -> Result<(), NativeError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() + (64 << 10), 0);
        }
        loop {
            match (&*self.sock).read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(NativeError::Closed),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if is_disconnect(&e) => return Err(NativeError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(crate) fn has_data(&mut self) -> Result<bool, NativeError> {
        if self.parse()?.is_some() {
            return Ok(true);
        }
        self.fill()?;
        Ok(self.parse()?.is_some())
    }

    pub(crate) fn peek(&mut self) -> Result<Option<&[u8]>, NativeError> {
        if !self.has_data()? {
            return Ok(None);
        }
        Ok(self.current())
    }

    pub(crate) fn current(&self) -> Option<&[u8]> {
        let (len, _) = self.current?;
        let at = self.start + RECORD_HEADER;
        Some(&self.buf[at..at + len])
    }

    pub(crate) fn consume(&mut self) {
        if let Some((_, rec)) = self.current.take() {
            self.start += rec;
        }
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

/// The sending half over a non-blocking stream.
pub(crate) struct StreamTx {
    sock: Arc<TcpStream>,
    out: Vec<u8>,
    sent: usize,
    /// Unsent bytes allowed before `try_push` says "no room".
    limit: usize,
    max_payload: usize,
}

impl StreamTx {
    pub(crate) fn new(sock: Arc<TcpStream>, limit: usize, max_payload: usize) -> StreamTx {
        StreamTx {
            sock,
            out: Vec::with_capacity(64 << 10),
            sent: 0,
            limit,
            max_payload,
        }
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    pub(crate) fn has_room(&mut self, len: usize) -> Result<bool, NativeError> {
        let rec = pad8(RECORD_HEADER + len);
        if self.pending() + rec <= self.limit || self.pending() == 0 {
            return Ok(true);
        }
        self.flush()?;
        Ok(self.pending() + rec <= self.limit || self.pending() == 0)
    }

    pub(crate) fn try_push(&mut self, frame: &Frame<'_>, len: usize) -> Result<bool, NativeError> {
        if !self.has_room(len)? {
            return Ok(false);
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        push_record(&mut self.out, frame, len);
        Ok(true)
    }

    /// Writes what the socket takes now.
    pub(crate) fn flush(&mut self) -> Result<(), NativeError> {
        while self.sent < self.out.len() {
            match (&*self.sock).write(&self.out[self.sent..]) {
                Ok(0) => return Err(NativeError::Closed),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_disconnect(&e) => return Err(NativeError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > (1 << 20) {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

/// The broker side of a TCP connection: Hello in, Welcome out, then non-blocking.
pub(crate) fn accept(stream: TcpStream, opts: &ServerOptions) -> Result<Parts, NativeError> {
    stream.set_read_timeout(Some(opts.handshake_timeout))?;
    stream.set_write_timeout(Some(opts.handshake_timeout))?;
    let hello = read_record(&mut &stream, MAX_HANDSHAKE)?;
    let (capacity, client_name) = match handshake::accept_hello(&hello, opts) {
        Ok(ok) => ok,
        Err(refusal) => {
            // The refusal is a courtesy; the error below is what matters.
            let _ = (&stream).write_all(&record(&refusal.frame())?);
            return Err(refusal.into_error());
        }
    };
    (&stream).write_all(&record(&handshake::welcome(capacity, &opts.server_name))?)?;
    finish(stream, capacity, client_name, EventFd::new(true)?)
}

/// The client side: connect, Hello, Welcome, then non-blocking.
pub(crate) fn connect(addr: &str, opts: &ClientOptions) -> Result<Parts, NativeError> {
    handshake::check_host()?;
    let stream = connect_any(addr, opts.connect_timeout)?;
    stream.set_read_timeout(Some(opts.connect_timeout))?;
    stream.set_write_timeout(Some(opts.connect_timeout))?;
    (&stream).write_all(&record(&handshake::hello(
        opts.ring_capacity,
        &opts.client_name,
    ))?)?;
    let welcome = read_record(&mut &stream, MAX_HANDSHAKE)?;
    let (capacity, server_name) = handshake::check_welcome(&welcome)?;
    finish(stream, capacity, server_name, EventFd::new(true)?)
}

/// Connects to the first address of `addr` that answers.
pub(crate) fn connect_any(
    addr: &str,
    timeout: std::time::Duration,
) -> Result<TcpStream, NativeError> {
    let mut last = None;
    for a in addr
        .to_socket_addrs()
        .map_err(|e| NativeError::Connect(format!("cannot resolve {addr}: {e}")))?
    {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(NativeError::Connect(match last {
        Some(e) => format!("cannot connect to {addr}: {e}"),
        None => format!("{addr} resolves to no address"),
    }))
}

fn finish(
    stream: TcpStream,
    capacity: u32,
    peer_name: String,
    own: EventFd,
) -> Result<Parts, NativeError> {
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let sock = Arc::new(stream.try_clone()?);
    let max = ring::max_payload(capacity);
    Ok(Parts {
        rx: Rx::Stream(StreamRx::new(sock.clone(), max)),
        tx: Tx::Stream(StreamTx::new(sock, capacity as usize, max)),
        signal: Signal::new(Transport::Tcp, own, None, Socket::Tcp(stream)),
        capacity,
        peer_name,
    })
}
