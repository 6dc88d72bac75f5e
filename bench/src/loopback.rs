//! The loopback TCP round-trip floor between two processes: this binary
//! re-executed as an echo child (`--echo-child ADDR`), so the figure carries
//! the same cross-process wake-ups a broker's clients pay.
//!
//! A binary that measures it calls [`run_echo_child_if_asked`] first thing in
//! `main`, before it parses its own flags.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::floors::{tcp_echo, tcp_round_trip};
use crate::Latency;

/// The hidden flag that makes a benchmark binary the echo child.
const ECHO_CHILD: &str = "--echo-child";

/// When this process was started as the echo child (`--echo-child ADDR`), connects to
/// `ADDR`, echoes until the parent closes and exits; otherwise returns at once.
pub fn run_echo_child_if_asked() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(ECHO_CHILD) {
        return;
    }
    let Some(addr) = args.next() else {
        eprintln!("echo child: {ECHO_CHILD} needs an address");
        std::process::exit(2);
    };
    let code = match TcpStream::connect(&addr).and_then(tcp_echo) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("echo child: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// Loopback TCP round trips of `size`-byte messages to an echo child process, for about
/// `duration` each: back to back, and with `gap` of sleep before each (a paced stream's gap).
pub fn loopback_floor(
    size: usize,
    gap: Duration,
    duration: Duration,
) -> Result<(Latency, Latency), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(me)
        .arg(ECHO_CHILD)
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning the echo child: {e}"))?;
    let (mut stream, _) = listener
        .accept()
        .map_err(|e| format!("accepting the echo child: {e}"))?;
    let result = (|| {
        let back_to_back = tcp_round_trip(&mut stream, size, Duration::ZERO, duration)?;
        let paced = tcp_round_trip(&mut stream, size, gap, duration)?;
        Ok::<_, std::io::Error>((Latency::of(&back_to_back), Latency::of(&paced)))
    })()
    .map_err(|e| format!("loopback round trips: {e}"));
    drop(stream);
    let _ = child.wait();
    result
}
