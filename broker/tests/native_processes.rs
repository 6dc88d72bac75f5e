//! `kascade pub` and `kascade sub` as processes, the way a user runs them, and
//! native clients that die: a SIGKILLed publisher and subscriber are noticed,
//! their state is freed (the connection and subscription gauges go back
//! down), and the other clients keep working.

mod http;
mod native_support;
mod spawn;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

use kascade_wire::native::Offset;
use native_support::{receive, Native};

fn kascade(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kascade"));
    cmd.args(args)
        .env_remove("KASCADE_NATIVE_URL")
        .env_remove("KASCADE_DATA_DIR")
        .env("KASCADE_LOG", "warn");
    cmd
}

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kascade");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

#[test]
fn kascade_pub_and_sub_publish_lines_and_print_records_like_kcat() {
    let b = Native::start(&[]);
    b.create_topic("t", 2, &[]);
    // Lines to partition 1 over shm; the offsets come back in order.
    let out = run_with_stdin(
        kascade(&["pub", "t", "-p", "1", "--print-offsets", "--url", &b.shm]),
        b"a\nb\r\nc\n",
    );
    assert_eq!(ok(&out), "1 0\n1 1\n1 2\n");
    // Keys split at a delimiter, a header on every record, over TCP.
    let out = run_with_stdin(
        kascade(&[
            "pub", "t", "-p", "0", "-K", ":", "-H", "src=cli", "--url", &b.tcp,
        ]),
        b"k1:v1\nk2:v:2\nnokey\n",
    );
    assert_eq!(ok(&out), "");
    let out = kascade(&[
        "sub",
        "t",
        "-p",
        "0,1",
        "-c",
        "6",
        "--format",
        "%t %p %o [%k] %s %h\\n",
        "--url",
        &b.tcp,
    ])
    .output()
    .unwrap();
    let mut lines: Vec<String> = ok(&out).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "t 0 0 [k1] v1 src=cli",
            "t 0 1 [k2] v:2 src=cli",
            "t 0 2 [] nokey src=cli",
            "t 1 0 [] a ",
            "t 1 1 [] b ",
            "t 1 2 [] c ",
        ]
    );
    // Without --url: the socket in KASCADE_DATA_DIR. From an offset, one partition.
    let out = kascade(&["sub", "t", "-p", "1", "-o", "1", "-c", "2"])
        .env("KASCADE_DATA_DIR", b.dir.path())
        .output()
        .unwrap();
    assert_eq!(ok(&out), "b\nc\n");
    // A live subscriber from the end sees what is published after it started.
    let live = kascade(&[
        "sub",
        "t",
        "-o",
        "end",
        "-c",
        "2",
        "--format",
        "%p:%o:%s\\n",
        "--url",
        &b.shm,
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    b.wait_metric("kascade_native_subscriptions", 2.0);
    let out = run_with_stdin(
        kascade(&["pub", "t", "-p", "1", "--url", &b.shm]),
        b"late1\nlate2\n",
    );
    ok(&out);
    let out = live.wait_with_output().unwrap();
    assert_eq!(ok(&out), "1:3:late1\n1:4:late2\n");
    // Errors are one line and exit 1.
    let out = run_with_stdin(kascade(&["pub", "nope", "--url", &b.shm]), b"x\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    let out = kascade(&["sub", "t", "--url", "shm:///nonexistent/native.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `kascade serve` running?"));
}

fn sigkill(child: &mut Child) {
    // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let _ = child.wait();
}

#[test]
fn sigkilled_clients_are_closed_and_freed_and_the_others_keep_working() {
    let b = Native::start(&[]);
    b.create_topic("t", 1, &[("kascade.storage", "volatile")]);
    // A bystander subscribed throughout.
    let mut bystander = b.client(&b.shm, "bystander");
    bystander.subscribe("t", &[], Offset::Earliest).unwrap();
    for url in b.urls() {
        let mut sub = kascade(&["sub", "t", "--url", &url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut publisher = kascade(&["pub", "t", "--url", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = publisher.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            // Mid-stream: it writes until the publisher dies.
            for i in 0.. {
                if writeln!(stdin, "line-{i}").is_err() {
                    break;
                }
            }
        });
        // Both are working: the subscriber has printed records.
        let mut printed = BufReader::new(sub.stdout.take().unwrap());
        let mut line = String::new();
        for _ in 0..100 {
            line.clear();
            printed.read_line(&mut line).unwrap();
            assert!(line.starts_with("line-"), "{line:?}");
        }
        b.wait_metric("kascade_native_connections", 3.0);
        b.wait_metric("kascade_native_subscriptions", 2.0);
        sigkill(&mut sub);
        sigkill(&mut publisher);
        writer.join().unwrap();
        b.wait_log("native connection closed");
        b.wait_log("native connection closed");
        b.wait_metric("kascade_native_connections", 1.0);
        b.wait_metric("kascade_native_subscriptions", 1.0);
    }
    assert!(b.metric("kascade_native_closed_total{reason=\"hangup\"}") >= 4.0);
    // The others never noticed: the bystander has every record in order, and
    // a new client publishes and reads.
    let mut p = b.client(&b.tcp, "after");
    let last = p.publish("t", Some(0), None, b"after", &[]).unwrap().offset;
    let got = receive(&mut bystander, last as usize + 1);
    assert!(got.iter().enumerate().all(|(i, r)| r.offset == i as i64));
    assert_eq!(got.last().unwrap().value, b"after");
}
