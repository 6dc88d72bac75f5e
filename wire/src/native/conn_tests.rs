//! A hostile client against the server side: garbage in the shared request
//! ring (from its own mapping of the memfd), garbage on a TCP stream, garbage
//! handshakes. The server's connection fails with a typed error; other
//! connections carry on.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::client::ClientOptions;
use super::frame::{self, Body, Frame};
use super::handshake::Parts;
use super::link::Tx;
use super::ring::{Corruption, Ring, RingError, OFF_TAIL};
use super::server::Interest;
use super::*;

/// Serves every connection of `listener` until it fails; sends how each ended.
fn serve_all(listener: Listener) -> mpsc::Receiver<Result<(), NativeError>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(incoming) = listener.accept() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let outcome = incoming
                    .handshake(&ServerOptions {
                        handshake_timeout: Duration::from_millis(500),
                        ..ServerOptions::default()
                    })
                    .and_then(echo);
                let _ = tx.send(outcome);
            });
        }
    });
    rx
}

/// Answers each frame with an Ack carrying its id.
fn echo(mut conn: ServerConnection) -> Result<(), NativeError> {
    let mut buf = Vec::new();
    loop {
        while conn.try_recv(&mut buf)? {
            let f = frame::decode(&buf)?;
            let ack = frame::Ack {
                partition: 0,
                offset: f.id as i64,
                version: 0,
                timestamp: 0,
            };
            conn.send(
                &Frame::new(f.id, Body::Ack(ack)),
                Some(Instant::now() + Duration::from_secs(10)),
            )?;
        }
        conn.wait(Interest::RECV, None)?;
    }
}

fn request_ring(parts: &Parts) -> Ring {
    match &parts.tx {
        Tx::Ring(p, _) => p.ring().clone(),
        Tx::Stream(_) => panic!("not a ring"),
    }
}

fn outcome(rx: &mpsc::Receiver<Result<(), NativeError>>) -> NativeError {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap_err()
}

#[test]
fn garbage_in_the_request_ring_closes_that_client_only() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::bind(&format!("unix://{}/g.sock", dir.path().display())).unwrap();
    let url = listener.url().unwrap();
    let ended = serve_all(listener);
    let Endpoint::Shm(path) = parse_url(&url).unwrap() else {
        unreachable!()
    };
    let mut good = Client::connect(&url).unwrap();

    type Wreck = Box<dyn Fn(&Ring)>;
    let cases: Vec<(&str, Wreck, Corruption)> = vec![
        (
            "wild tail",
            Box::new(|r| r.u64_at(OFF_TAIL).store(u64::MAX - 7, Ordering::Release)),
            Corruption::TailTooFar,
        ),
        (
            "odd tail",
            Box::new(|r| r.u64_at(OFF_TAIL).store(12, Ordering::Release)),
            Corruption::UnalignedTail,
        ),
        (
            "wild length",
            Box::new(|r| {
                r.data_u32(0).store(0xffff_fff0, Ordering::Relaxed);
                r.data_u32(4).store(1, Ordering::Relaxed);
                r.u64_at(OFF_TAIL).store(64, Ordering::Release);
            }),
            Corruption::RecordTooLong,
        ),
        (
            "wild kind",
            Box::new(|r| {
                r.data_u32(0).store(8, Ordering::Relaxed);
                r.data_u32(4).store(0xdead, Ordering::Relaxed);
                r.u64_at(OFF_TAIL).store(16, Ordering::Release);
            }),
            Corruption::BadKind(0xdead),
        ),
    ];
    for (what, wreck, want) in cases {
        let parts = shm::connect(&path, &ClientOptions::default()).unwrap();
        let ring = request_ring(&parts);
        wreck(&ring);
        parts.signal.ring_peer().unwrap();
        let err = outcome(&ended);
        assert!(
            matches!(err, NativeError::Ring(RingError::Corrupt(c)) if c == want),
            "{what}: {err}"
        );
        // The well-behaved client is unaffected.
        assert!(good.put("/k", b"v").is_ok(), "{what}");
    }

    // Random bytes over the whole data area and a plausible tail: a typed
    // error (ring or frame), never a crash.
    for seed in 0..20u64 {
        let parts = shm::connect(&path, &ClientOptions::default()).unwrap();
        let ring = request_ring(&parts);
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for off in (0..u64::from(ring.capacity())).step_by(4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Small lengths now and then, so some records pass the ring's checks.
            let word = if x % 3 == 0 {
                (x >> 32) as u32 % 64
            } else {
                x as u32
            };
            ring.data_u32(off).store(word, Ordering::Relaxed);
        }
        ring.u64_at(OFF_TAIL)
            .store((x % 8192) & !7, Ordering::Release);
        parts.signal.ring_peer().unwrap();
        match outcome(&ended) {
            NativeError::Ring(RingError::Corrupt(_)) | NativeError::Frame(_) => {}
            other => panic!("seed {seed}: {other}"),
        }
        drop(parts);
    }
    assert!(good.put("/k", b"v").is_ok());
}

#[test]
fn garbage_on_a_tcp_stream_closes_that_client_only() {
    let listener = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let url = listener.url().unwrap();
    let addr = url.trim_start_matches("tcp://").to_string();
    let ended = serve_all(listener);
    let mut good = Client::connect(&url).unwrap();

    let hello = tcp::record(&handshake::hello(0, "raw")).unwrap();
    let welcome_then = |bytes: &[u8]| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&hello).unwrap();
        tcp::read_record(&mut s, 1 << 16).unwrap();
        s.write_all(bytes).unwrap();
        s
    };
    // A record of kind 9.
    let _s = welcome_then(&[8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        outcome(&ended),
        NativeError::Ring(RingError::Corrupt(Corruption::BadKind(9)))
    ));
    // A record announcing 4 GiB.
    let _s = welcome_then(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0]);
    assert!(matches!(outcome(&ended), NativeError::TooLarge { .. }));
    // A well-framed record that is not a frame.
    let _s = welcome_then(&[8, 0, 0, 0, 1, 0, 0, 0, 0xee, 1, 2, 3, 4, 5, 6, 7]);
    assert!(matches!(outcome(&ended), NativeError::Frame(_)));
    // Garbage instead of Hello.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&[
        16, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ])
    .unwrap();
    assert!(matches!(outcome(&ended), NativeError::Handshake(_)));
    // Silence instead of Hello: the handshake times out.
    let _silent = TcpStream::connect(&addr).unwrap();
    assert!(matches!(outcome(&ended), NativeError::Timeout));
    assert!(good.put("/k", b"v").is_ok());
}

#[test]
fn a_garbage_hello_on_the_unix_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::bind(&format!("unix://{}/h.sock", dir.path().display())).unwrap();
    let Endpoint::Shm(path) = parse_url(&listener.url().unwrap()).unwrap() else {
        unreachable!()
    };
    let ended = serve_all(listener);
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let bad = Frame::new(0, Body::List("not a hello"));
    s.write_all(&tcp::record(&bad).unwrap()).unwrap();
    assert!(matches!(outcome(&ended), NativeError::Handshake(_)));
    // The refusal came back as an Error frame.
    let answer = tcp::read_record(&mut s, 1 << 16).unwrap();
    assert!(matches!(
        frame::decode(&answer).unwrap().body,
        Body::Error(_)
    ));
}

#[test]
fn a_live_socket_path_is_not_stolen_but_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("unix://{}/l.sock", dir.path().display());
    let first = Listener::bind(&url).unwrap();
    let err = Listener::bind(&url).unwrap_err();
    assert!(
        matches!(&err, NativeError::Io(e) if e.kind() == std::io::ErrorKind::AddrInUse),
        "{err}"
    );
    // A socket file nobody listens on (a crashed broker's) is replaced.
    let path = dir.path().join("l.sock");
    std::mem::forget(first);
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap());
    assert!(path.exists());
    assert!(Listener::bind(&format!("unix://{}/stale.sock", dir.path().display())).is_ok());
}

#[test]
fn handles_cross_threads_as_the_broker_needs() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<ServerConnection>();
    send::<Client>();
    send_sync::<Waker>();
    send_sync::<ResponseSender>();
    send::<Incoming>();
    send_sync::<Listener>();
}
