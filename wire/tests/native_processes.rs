//! Native transports between real processes: this test binary re-runs
//! itself as the other side (the `#[ignore]`d `child_*` entry points, run
//! only by the tests here), exchanges frames over shm and tcp with each wait
//! strategy, and SIGKILLs a peer to check the other side notices.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::ToyServer;
use kascade_wire::native::{
    Client, ClientOptions, GetAt, NativeError, Offset, ServerOptions, WaitStrategy,
};

const WAIT: Option<Duration> = Some(Duration::from_secs(30));

/// Starts this test binary running the ignored test `role` with `env`.
fn spawn_child(role: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        role,
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's stdout up to its `READY <text>` line; returns the text.
fn wait_ready(child: &mut Child) -> String {
    let out = child.stdout.take().unwrap();
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            BufReader::new(err)
                .lines()
                .for_each(|l| eprintln!("child stderr: {}", l.unwrap_or_default()))
        });
    }
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        eprintln!("child: {line}");
        // The harness prints `test <name> ... ` on the same line first.
        if let Some((_, rest)) = line.split_once("READY ") {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                lines.for_each(|l| eprintln!("child: {}", l.unwrap_or_default()))
            });
            return rest.to_string();
        }
    }
    panic!("the child exited before it was ready");
}

fn sigkill(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed");
}

fn wait_of(name: &str) -> WaitStrategy {
    name.parse().unwrap()
}

fn options(wait: WaitStrategy) -> ClientOptions {
    ClientOptions {
        wait,
        ..ClientOptions::default()
    }
}

/// Child: a client that publishes, reads its records back, and uses the K/V calls.
#[test]
#[ignore = "run as a child process by the tests in this file"]
fn child_client_round_trip() {
    let url = std::env::var("KASCADE_CHILD_URL").unwrap();
    let wait = wait_of(&std::env::var("KASCADE_CHILD_WAIT").unwrap());
    let mut c = Client::connect_with(&url, options(wait)).unwrap();
    c.subscribe("x", &[0], Offset::Earliest).unwrap();
    for i in 0..200u32 {
        let at = c
            .publish(
                "x",
                Some(0),
                Some(&i.to_le_bytes()),
                &vec![i as u8; i as usize * 10],
                &[],
            )
            .unwrap();
        assert_eq!(at.offset, i64::from(i));
    }
    for i in 0..200u32 {
        let d = c.next_record(WAIT).unwrap().unwrap();
        assert_eq!(d.offset(), i64::from(i));
        assert_eq!(d.key(), Some(&i.to_le_bytes()[..]));
        assert_eq!(d.value(), &vec![i as u8; i as usize * 10][..]);
    }
    c.put("/child/done", b"yes").unwrap();
    assert_eq!(
        c.get("/child/done", GetAt::Latest).unwrap().unwrap().value,
        b"yes"
    );
    println!("READY done");
}

/// Child: a client that connects and publishes until it is killed.
#[test]
#[ignore = "run as a child process by the tests in this file"]
fn child_client_publishes_forever() {
    let url = std::env::var("KASCADE_CHILD_URL").unwrap();
    let mut c = Client::connect(&url).unwrap();
    c.publish("doomed", Some(0), None, b"first", &[]).unwrap();
    println!("READY connected");
    let value = vec![1u8; 3000];
    loop {
        c.publish_nowait("doomed", Some(0), None, &value, &[])
            .unwrap();
        if c.publish("doomed", Some(0), None, &value, &[]).is_err() {
            break;
        }
    }
}

/// Child: a server that runs until it is killed; prints its URL.
#[test]
#[ignore = "run as a child process by the tests in this file"]
fn child_server() {
    let url = std::env::var("KASCADE_CHILD_URL").unwrap();
    let server = ToyServer::start(&url, ServerOptions::default());
    println!("READY {}", server.url);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn cross_process_round_trip(wait: &str) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        wait: wait_of(wait),
        ..ServerOptions::default()
    };
    let shm = ToyServer::start(
        &format!("unix://{}/n.sock", dir.path().display()),
        opts.clone(),
    );
    let tcp = ToyServer::start("tcp://127.0.0.1:0", opts);
    for server in [&shm, &tcp] {
        let mut child = spawn_child(
            "child_client_round_trip",
            &[
                ("KASCADE_CHILD_URL", server.url.clone()),
                ("KASCADE_CHILD_WAIT", wait.into()),
            ],
        );
        assert_eq!(wait_ready(&mut child), "done");
        assert!(child.wait().unwrap().success());
        // The child said Bye as its client was dropped.
        assert_eq!(server.ended(1), vec!["bye"]);
    }
}

#[test]
fn a_client_process_exchanges_frames_both_ways_spin_then_park() {
    cross_process_round_trip("spin:50");
}

#[test]
fn a_client_process_exchanges_frames_both_ways_blocking() {
    cross_process_round_trip("block");
}

#[test]
fn a_client_process_exchanges_frames_both_ways_busy_polling() {
    cross_process_round_trip("busy");
}

#[test]
fn a_sigkilled_client_is_noticed_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    for wait in ["spin:50", "block", "busy"] {
        let opts = ServerOptions {
            wait: wait_of(wait),
            ..ServerOptions::default()
        };
        let shm = ToyServer::start(
            &format!("unix://{}/{wait}.sock", dir.path().display()),
            opts.clone(),
        );
        let tcp = ToyServer::start("tcp://127.0.0.1:0", opts);
        for server in [&shm, &tcp] {
            let mut bystander = Client::connect(&server.url).unwrap();
            let mut child = spawn_child(
                "child_client_publishes_forever",
                &[("KASCADE_CHILD_URL", server.url.clone())],
            );
            assert_eq!(wait_ready(&mut child), "connected");
            std::thread::sleep(Duration::from_millis(20));
            sigkill(&mut child);
            // The server's service thread for the child ends with a closed connection.
            assert_eq!(
                server.ended(1),
                vec!["the native connection is closed"],
                "{wait} {}",
                server.url
            );
            // The other client still works.
            bystander.put("/still", b"here").unwrap();
            assert_eq!(
                bystander
                    .get("/still", GetAt::Latest)
                    .unwrap()
                    .unwrap()
                    .value,
                b"here"
            );
        }
    }
}

#[test]
fn a_sigkilled_server_is_noticed_by_a_waiting_client() {
    let dir = tempfile::tempdir().unwrap();
    for (url, wait) in [
        (
            format!("unix://{}/s1.sock", dir.path().display()),
            "spin:50",
        ),
        (format!("unix://{}/s2.sock", dir.path().display()), "block"),
        (format!("unix://{}/s3.sock", dir.path().display()), "busy"),
        ("tcp://127.0.0.1:0".to_string(), "spin:50"),
        ("tcp://127.0.0.1:0".to_string(), "block"),
    ] {
        let mut child = spawn_child("child_server", &[("KASCADE_CHILD_URL", url)]);
        let url = wait_ready(&mut child);
        let mut c = Client::connect_with(&url, options(wait_of(wait))).unwrap();
        c.subscribe("quiet", &[], Offset::Latest).unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sigkill(&mut child);
        });
        // Parked (or spinning) on an empty ring when the server dies.
        let err = c.next_record(Some(Duration::from_secs(60))).err();
        killer.join().unwrap();
        assert!(
            matches!(err, Some(NativeError::Closed)),
            "{wait} {url}: {err:?}"
        );
        assert!(matches!(
            c.put("/k", b"v"),
            Err(NativeError::Closed | NativeError::Io(_))
        ));
    }
}
