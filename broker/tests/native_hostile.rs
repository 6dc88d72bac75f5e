//! Clients that break the rules, against a real broker: one that scribbles
//! on its shared-memory rings (wild tails, heads, lengths and kinds, random
//! bytes), one that sends garbage frames, one that writes garbage on a TCP
//! stream or stops mid-frame. Each is closed alone, with its reason logged and
//! counted; the broker never crashes and keeps serving everyone else.
//!
//! The scribbler does the handshake by hand with the wire crate's public
//! pieces (records on the Unix socket, the descriptors it passes, the
//! mapping), so it holds the very memory the broker reads.

mod http;
mod native_support;
mod spawn;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use kascade_wire::native::frame::{self, Body, Frame, Headers, Hello, Publish};
use kascade_wire::native::ring::{self, Memory};
use kascade_wire::native::{shm, sys, Offset};
use native_support::Native;

const CAPACITY: u32 = 64 << 10;

/// A client that did the handshake itself and holds the broker's memfd.
struct Scribbler {
    socket: UnixStream,
    mem: Arc<Memory>,
    to_broker: sys::EventFd,
    _fds: Vec<OwnedFd>,
}

fn record(f: &Frame<'_>) -> Vec<u8> {
    let mut payload = Vec::new();
    frame::encode(f, &mut payload).unwrap();
    let mut rec = Vec::new();
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&ring::KIND_FRAME.to_le_bytes());
    rec.extend_from_slice(&payload);
    while rec.len() % 8 != 0 {
        rec.push(0);
    }
    rec
}

impl Scribbler {
    fn connect(path: &str) -> Scribbler {
        let socket = UnixStream::connect(path.trim_start_matches("shm://")).unwrap();
        let hello = record(&Frame::new(
            0,
            Body::Hello(Hello {
                min_version: 1,
                max_version: 1,
                byte_order: frame::LITTLE_ENDIAN,
                ring_capacity: CAPACITY,
                client_name: "scribbler",
            }),
        ));
        sys::send_with_fds(socket.as_raw_fd(), &hello, &[]).unwrap();
        let mut fds = Vec::new();
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        while got < 8 {
            let n = sys::recv_with_fds(socket.as_raw_fd(), &mut buf[got..], &mut fds).unwrap();
            assert!(n > 0, "the broker closed during the handshake");
            got += n;
        }
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        while got < 8 + len {
            let n = sys::recv_with_fds(socket.as_raw_fd(), &mut buf[got..], &mut fds).unwrap();
            assert!(n > 0);
            got += n;
        }
        let welcome = frame::decode(&buf[8..8 + len]).unwrap();
        let Body::Welcome(w) = welcome.body else {
            panic!("not a Welcome: {welcome:?}")
        };
        assert_eq!(w.ring_capacity, CAPACITY);
        assert_eq!(fds.len(), 3, "memfd and two eventfds");
        let mem = Arc::new(sys::mmap_shared(&fds[0], shm::region_bytes(CAPACITY)).unwrap());
        let to_broker = sys::EventFd::from_fd(fds.remove(1));
        Scribbler {
            socket,
            mem,
            to_broker,
            _fds: fds,
        }
    }

    /// Writes a little-endian word at `offset` of the whole region.
    fn poke_u64(&self, offset: usize, v: u64) {
        assert!(offset + 8 <= self.mem.len());
        // SAFETY: in bounds of our own live mapping (checked above); the
        // broker reads this memory only through atomics and raw copies.
        unsafe {
            self.mem
                .as_ptr()
                .add(offset)
                .cast::<u64>()
                .write_volatile(v)
        }
    }

    fn poke_u32(&self, offset: usize, v: u32) {
        assert!(offset + 4 <= self.mem.len());
        // SAFETY: as in `poke_u64`.
        unsafe {
            self.mem
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(v)
        }
    }

    fn fill(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.mem.len());
        // SAFETY: as in `poke_u64`; `bytes` is our own memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.mem.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    fn ring(&self) {
        self.to_broker.signal().unwrap();
    }

    /// Waits until the broker has closed our socket.
    fn closed_by_broker(&mut self, what: &str) {
        self.socket
            .set_read_timeout(Some(native_support::GUARD))
            .unwrap();
        let mut b = [0u8; 16];
        match self.socket.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the broker did not close the scribbler after {what}: {other:?}"),
        }
    }
}

/// Request ring: header at 0, data at 256. Response ring after it.
const TAIL: usize = 64;
const HEAD: usize = 128;
const DATA: usize = ring::HEADER_BYTES;
fn response_ring() -> usize {
    ring::ring_bytes(CAPACITY)
}

/// A xorshift generator: random garbage that a failure can reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The broker still serves a well-behaved client.
fn still_serves(b: &Native, n: usize) {
    let mut c = b.client(&b.shm, "well-behaved");
    let p = c.publish("t", Some(0), None, format!("ok-{n}").as_bytes(), &[]);
    assert!(p.is_ok(), "{p:?}");
}

#[test]
fn a_client_scribbling_on_its_rings_is_closed_alone() {
    let mut b = Native::start(&[]);
    b.create_topic("t", 1, &[("kascade.storage", "volatile")]);
    let mut bystander = b.client(&b.tcp, "bystander");
    bystander.subscribe("t", &[0], Offset::Earliest).unwrap();
    let cap = u64::from(CAPACITY);
    // An object whose answers fill the scribbler's response ring in three Gets:
    // the broker re-reads the client's head only when it runs out of room.
    b.create_pool("/kv", "volatile");
    b.client(&b.shm, "setup")
        .put("/kv/big", &vec![7u8; 30 << 10])
        .unwrap();
    b.wait_log("native connection closed");
    let gets: Vec<u8> = (1..=3)
        .flat_map(|id| {
            record(&Frame::new(
                id,
                Body::Get(frame::Get {
                    at: frame::GetAt::Latest,
                    key: "/kv/big",
                }),
            ))
        })
        .collect();
    type Scribble = Box<dyn Fn(&Scribbler, &mut Rng)>;
    let cases: Vec<(&str, Scribble)> = vec![
        (
            "a tail past the capacity",
            Box::new(move |s, _| s.poke_u64(TAIL, cap * 3)),
        ),
        ("an unaligned tail", Box::new(|s, _| s.poke_u64(TAIL, 13))),
        (
            "a record longer than the ring",
            Box::new(|s, _| {
                s.poke_u32(DATA, 0xffff_fff0);
                s.poke_u32(DATA + 4, ring::KIND_FRAME);
                s.poke_u64(TAIL, 64);
            }),
        ),
        (
            "a record past the tail",
            Box::new(|s, _| {
                s.poke_u32(DATA, 4000);
                s.poke_u32(DATA + 4, ring::KIND_FRAME);
                s.poke_u64(TAIL, 64);
            }),
        ),
        (
            "an unknown record kind",
            Box::new(|s, _| {
                s.poke_u32(DATA, 8);
                s.poke_u32(DATA + 4, 77);
                s.poke_u64(TAIL, 16);
            }),
        ),
        (
            "padding that does not reach the end",
            Box::new(|s, _| {
                s.poke_u32(DATA, 8);
                s.poke_u32(DATA + 4, ring::KIND_PADDING);
                s.poke_u64(TAIL, 16);
            }),
        ),
        (
            "a frame of random bytes",
            Box::new(|s, rng| {
                let junk = rng.bytes(200);
                s.poke_u32(DATA, 200);
                s.poke_u32(DATA + 4, ring::KIND_FRAME);
                s.fill(DATA + 8, &junk);
                s.poke_u64(TAIL, 208);
            }),
        ),
        (
            "random bytes everywhere and a random tail",
            Box::new(|s, rng| {
                let junk = rng.bytes(s.mem.len());
                s.fill(0, &junk);
                s.poke_u64(TAIL, rng.next() & !7);
            }),
        ),
        (
            "a wild head in the response ring, then requests whose answers fill it",
            Box::new(move |s, _| {
                s.poke_u64(response_ring() + HEAD, 1 << 40);
                s.fill(DATA, &gets);
                s.poke_u64(TAIL, gets.len() as u64);
            }),
        ),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (n, (what, scribble)) in cases.iter().enumerate() {
        let mut s = Scribbler::connect(&b.shm);
        b.wait_metric("kascade_native_connections", 2.0);
        scribble(&s, &mut rng);
        s.ring();
        s.closed_by_broker(what);
        let line = b.wait_log("native connection closed");
        assert!(
            line.contains("client=scribbler")
                && (line.contains("reason=ring_corrupt") || line.contains("reason=bad_frame")),
            "{what}: {line}"
        );
        b.wait_metric("kascade_native_connections", 1.0);
        assert!(b.alive(), "the broker died on {what}");
        still_serves(&b, n);
        b.wait_log("native connection closed"); // the well-behaved client's Bye
    }
    // Many rounds of random scribbles, rung or not: the broker stays up.
    for round in 0..20 {
        let s = Scribbler::connect(&b.shm);
        let junk = rng.bytes(512);
        let at = (rng.next() as usize) % (s.mem.len() - 512);
        s.fill(at, &junk);
        s.poke_u64(TAIL, rng.next());
        s.poke_u64(response_ring() + HEAD, rng.next());
        if round % 2 == 0 {
            s.ring();
        }
        drop(s);
    }
    b.wait_metric("kascade_native_connections", 1.0);
    assert!(b.alive());
    assert!(b.metric("kascade_native_closed_total{reason=\"ring_corrupt\"}") >= 7.0);
    // The bystander saw every well-behaved record and nothing else.
    let got = native_support::receive(&mut bystander, cases.len());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.value, format!("ok-{i}").into_bytes());
    }
}

#[test]
fn garbage_on_a_tcp_stream_or_a_frame_cut_short_closes_that_client_only() {
    let mut b = Native::start(&[]);
    b.create_topic("t", 1, &[]);
    let addr = b.tcp.trim_start_matches("tcp://").to_string();
    let hello = record(&Frame::new(
        0,
        Body::Hello(Hello {
            min_version: 1,
            max_version: 1,
            byte_order: frame::LITTLE_ENDIAN,
            ring_capacity: 0,
            client_name: "tcp garbage",
        }),
    ));
    let mut rng = Rng(7);
    // A record header announcing too much, a bad kind, a garbage frame, then a cut.
    let payloads: Vec<Vec<u8>> = vec![
        [u32::MAX.to_le_bytes(), 1u32.to_le_bytes()].concat(),
        [8u32.to_le_bytes(), 9u32.to_le_bytes()].concat(),
        {
            let junk = rng.bytes(64);
            [&64u32.to_le_bytes()[..], &1u32.to_le_bytes(), &junk].concat()
        },
    ];
    for p in &payloads {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(&hello).unwrap();
        s.write_all(p).unwrap();
        s.set_read_timeout(Some(native_support::GUARD)).unwrap();
        let mut sink = Vec::new();
        // The Welcome, maybe an Error frame, then EOF.
        let _ = s.read_to_end(&mut sink);
        let line = b.wait_log("native connection closed");
        assert!(line.contains("client=tcp garbage"), "{line}");
        assert!(!line.contains("reason=hangup"), "{line}");
    }
    // A publish cut off mid-frame, then the client vanishes.
    let publish = record(&Frame::new(
        1,
        Body::Publish(Publish {
            partition: 0,
            timestamp_ms: -1,
            topic: "t",
            key: None,
            headers: Headers::NONE,
            value: &[1; 100],
        }),
    ));
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&hello).unwrap();
    s.write_all(&publish[..publish.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(s);
    let line = b.wait_log("native connection closed");
    assert!(line.contains("reason=hangup"), "{line}");
    b.wait_metric("kascade_native_connections", 0.0);
    assert!(b.alive());
    let mut c = b.client(&b.tcp, "after");
    // Nothing of the cut publish was stored.
    assert_eq!(c.publish("t", Some(0), None, b"x", &[]).unwrap().offset, 0);
}
