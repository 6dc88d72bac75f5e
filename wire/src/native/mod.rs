//! The native fast path: one frame format, one ring, three transports.
//!
//! - [`frame`]: the versioned frame codec (publish, subscribe, put, get,
//!   trigger, list, ack, notify, error, ...), no I/O.
//! - [`ring`]: THE single-producer single-consumer ring every transport shares
//!   (credits, wrap-around, padding records, untrusted-peer checks), and
//!   [`wait`]: how a side waits (block, spin then park, busy poll).
//! - transports: [`shm`] (memfd rings + eventfds passed over a Unix socket),
//!   [`tcp`] (the same records over a stream), `rdma` (feature `rdma`: the same
//!   ring layout in registered memory, written with RDMA WRITE).
//! - [`Client`]: the blocking native client; [`ServerConnection`]: what the
//!   broker's per-connection service loop drives, whatever the transport.
//!
//! URLs: `shm:///path/to/native.sock` (or `unix:///...`), `tcp://host:port`,
//! `rdma://host:port`.
//!
//! ```no_run
//! use kascade_wire::native::Client;
//! let mut client = Client::connect("shm:///var/lib/kascade/native.sock")?;
//! let at = client.publish("orders", None, Some(b"k"), b"hello", &[])?;
//! println!("stored at partition {} offset {}", at.partition, at.offset);
//! # Ok::<(), kascade_wire::native::NativeError>(())
//! ```

use std::path::PathBuf;

pub mod client;
#[cfg(test)]
mod conn_tests;
pub mod frame;
mod handshake;
mod link;
mod memory;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod ring;
pub mod server;
pub mod shm;
pub mod sys;
pub mod tcp;
pub mod wait;

pub use client::{
    Client, ClientOptions, Delivery, KeyEntry, LambdaClient, LambdaDestination, Object, Offset,
    Published, Subscription, Upcall, Written,
};
pub use frame::{FrameError, GetAt};
pub use ring::RingError;
pub use server::{Incoming, Listener, ResponseSender, ServerConnection, ServerOptions, Waker};
pub use wait::{Doorbell, WaitStrategy};

/// What went wrong on a native connection; each says what a user can do.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The URL is not `shm://`, `unix://`, `tcp://` or `rdma://` with a path or host:port.
    #[error("bad native URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No RDMA device on this host.
    #[error("{0}")]
    NoRdmaDevice(String),
    /// An `rdma://` URL in a build without RDMA support.
    #[error("rdma:// is not available: kascade-wire was built without the `rdma` feature; use shm:// on this host or tcp://")]
    RdmaNotBuilt,
    /// An RDMA verb failed.
    #[error("RDMA: {0}")]
    Rdma(String),
    /// Could not reach the broker.
    #[error("{0}")]
    Connect(String),
    /// The handshake failed (versions, byte order, sizes, descriptors).
    #[error("native handshake failed: {0}")]
    Handshake(String),
    /// The broker answered a request with an error.
    #[error("the broker answered with error {code}: {message}")]
    Server {
        /// One of [`frame::error_code`].
        code: u16,
        /// The broker's words.
        message: String,
    },
    /// The peer closed the connection (or died).
    #[error("the native connection is closed")]
    Closed,
    /// A wait passed its deadline.
    #[error("timed out waiting for the native peer")]
    Timeout,
    /// A frame is larger than the connection allows.
    #[error("a frame of {len} bytes exceeds the connection's largest frame of {max} bytes")]
    TooLarge {
        /// The frame's size.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The peer broke the protocol (an unexpected frame or answer).
    #[error("native protocol violation: {0}")]
    Protocol(String),
    /// A frame did not decode.
    #[error("bad native frame: {0}")]
    Frame(#[from] FrameError),
    /// A ring broke its rules.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// An operating-system call failed.
    #[error("I/O error on the native connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Which transport a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Shared memory on this host.
    Shm,
    /// A TCP stream.
    Tcp,
    /// RDMA (feature `rdma`).
    Rdma,
}

/// Where a native URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `shm:///path` or `unix:///path`: the broker's Unix socket.
    Shm(PathBuf),
    /// `tcp://host:port`.
    Tcp(String),
    /// `rdma://host:port` (the TCP address of the connection setup).
    Rdma(String),
}

/// Parses a native URL.
pub fn parse_url(url: &str) -> Result<Endpoint, NativeError> {
    let bad = |reason| NativeError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad("expected scheme://, e.g. shm:///path/native.sock or tcp://host:port")
    })?;
    match scheme {
        "shm" | "unix" => {
            if !rest.starts_with('/') || rest.len() < 2 {
                return Err(bad(
                    "shm:// needs an absolute socket path, e.g. shm:///var/lib/kascade/native.sock",
                ));
            }
            Ok(Endpoint::Shm(PathBuf::from(rest)))
        }
        "tcp" | "rdma" => {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected host:port after the scheme"))?;
            if host.is_empty() || host.contains('/') {
                return Err(bad("expected host:port after the scheme"));
            }
            port.parse::<u16>()
                .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
            if scheme == "tcp" {
                Ok(Endpoint::Tcp(rest.to_owned()))
            } else {
                Ok(Endpoint::Rdma(rest.to_owned()))
            }
        }
        _ => Err(bad(
            "unknown scheme; use shm://, unix://, tcp:// or rdma://",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        assert_eq!(
            parse_url("shm:///tmp/k.sock").unwrap(),
            Endpoint::Shm("/tmp/k.sock".into())
        );
        assert_eq!(
            parse_url("unix:///tmp/k.sock").unwrap(),
            Endpoint::Shm("/tmp/k.sock".into())
        );
        assert_eq!(
            parse_url("tcp://127.0.0.1:9093").unwrap(),
            Endpoint::Tcp("127.0.0.1:9093".into())
        );
        assert_eq!(
            parse_url("tcp://[::1]:9093").unwrap(),
            Endpoint::Tcp("[::1]:9093".into())
        );
        assert_eq!(
            parse_url("rdma://host:1").unwrap(),
            Endpoint::Rdma("host:1".into())
        );
        for bad in [
            "",
            "shm://relative",
            "tcp://host",
            "tcp://:1",
            "tcp://h:99999",
            "http://x:1",
            "/tmp/x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(NativeError::BadUrl { .. })),
                "{bad}"
            );
        }
    }
}
