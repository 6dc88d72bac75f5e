//! Hello / Welcome: what both transports agree on before any ring is used.

use super::frame::{self, error_code, Body, ErrorFrame, Frame, Hello, Welcome};
use super::link::{Rx, Signal, Tx};
use super::ring::{self, check_capacity};
use super::server::ServerOptions;
use super::NativeError;

/// Largest handshake record (a Hello or Welcome is tiny; this bounds a hostile one).
pub(crate) const MAX_HANDSHAKE: usize = 64 << 10;

/// A connection's parts once the handshake is done.
pub(crate) struct Parts {
    pub(crate) rx: Rx,
    pub(crate) tx: Tx,
    pub(crate) signal: Signal,
    pub(crate) capacity: u32,
    pub(crate) peer_name: String,
}

/// The client's Hello.
pub(crate) fn hello(ring_capacity: u32, client_name: &str) -> Frame<'_> {
    Frame::new(
        0,
        Body::Hello(Hello {
            min_version: frame::VERSION,
            max_version: frame::VERSION,
            byte_order: frame::LITTLE_ENDIAN,
            ring_capacity,
            client_name,
        }),
    )
}

/// Refuses a big-endian host up front: the protocol is little-endian only.
pub(crate) fn check_host() -> Result<(), NativeError> {
    if cfg!(target_endian = "big") {
        return Err(NativeError::Handshake(
            "this host is big-endian; the native protocol is little-endian only".into(),
        ));
    }
    Ok(())
}

/// Reads a client's Hello; on a Hello the server cannot serve, returns the
/// Error frame to send back (code, message) as `Err(Ok(..))`.
pub(crate) fn accept_hello(payload: &[u8], opts: &ServerOptions) -> Result<(u32, String), Refusal> {
    let frame =
        frame::decode(payload).map_err(|e| Refusal::bad(error_code::BAD_FRAME, e.to_string()))?;
    let Body::Hello(h) = frame.body else {
        return Err(Refusal::bad(
            error_code::BAD_FRAME,
            format!(
                "the first frame must be Hello, not kind {}",
                frame.body.kind()
            ),
        ));
    };
    if h.byte_order != frame::LITTLE_ENDIAN {
        return Err(Refusal::bad(
            error_code::UNSUPPORTED,
            "the server is little-endian and speaks only little-endian frames".into(),
        ));
    }
    if h.min_version > frame::VERSION || h.max_version < frame::VERSION {
        return Err(Refusal::bad(
            error_code::UNSUPPORTED,
            format!(
                "the server speaks protocol version {}; the client asked for {}..={}",
                frame::VERSION,
                h.min_version,
                h.max_version
            ),
        ));
    }
    Ok((
        negotiate_capacity(h.ring_capacity, opts),
        h.client_name.to_owned(),
    ))
}

/// The ring capacity for a request: the default for 0, else the next power of
/// two clamped to the server's range.
pub(crate) fn negotiate_capacity(asked: u32, opts: &ServerOptions) -> u32 {
    let min = opts.min_ring_capacity.max(ring::MIN_CAPACITY);
    let max = opts.max_ring_capacity.clamp(min, ring::MAX_CAPACITY);
    let want = if asked == 0 {
        opts.ring_capacity
    } else {
        asked
    };
    want.checked_next_power_of_two()
        .unwrap_or(max)
        .clamp(min, max)
}

/// A refused handshake: the Error frame to send, then the error to return.
pub(crate) struct Refusal {
    pub(crate) code: u16,
    pub(crate) message: String,
}

impl Refusal {
    fn bad(code: u16, message: String) -> Refusal {
        Refusal { code, message }
    }

    pub(crate) fn frame(&self) -> Frame<'_> {
        Frame::new(
            0,
            Body::Error(ErrorFrame {
                code: self.code,
                message: &self.message,
            }),
        )
    }

    pub(crate) fn into_error(self) -> NativeError {
        NativeError::Handshake(format!("refused the client: {}", self.message))
    }
}

/// The server's Welcome.
pub(crate) fn welcome(capacity: u32, server_name: &str) -> Frame<'_> {
    Frame::new(
        0,
        Body::Welcome(Welcome {
            version: frame::VERSION,
            byte_order: frame::LITTLE_ENDIAN,
            alignment: frame::ALIGNMENT,
            ring_capacity: capacity,
            max_payload: ring::max_payload(capacity) as u32,
            server_name,
        }),
    )
}

/// Checks the server's answer; returns (capacity, server name).
pub(crate) fn check_welcome(payload: &[u8]) -> Result<(u32, String), NativeError> {
    let frame = frame::decode(payload)?;
    let w = match frame.body {
        Body::Welcome(w) => w,
        Body::Error(e) => {
            return Err(NativeError::Server {
                code: e.code,
                message: e.message.to_owned(),
            })
        }
        other => {
            return Err(NativeError::Handshake(format!(
                "expected Welcome, got frame kind {}",
                other.kind()
            )))
        }
    };
    if w.version != frame::VERSION {
        return Err(NativeError::Handshake(format!(
            "the server chose protocol version {}; this client speaks {}",
            w.version,
            frame::VERSION
        )));
    }
    if w.byte_order != frame::LITTLE_ENDIAN {
        return Err(NativeError::Handshake(
            "the server is not little-endian; this client speaks only little-endian frames".into(),
        ));
    }
    if w.alignment < frame::ALIGNMENT || !w.alignment.is_power_of_two() {
        return Err(NativeError::Handshake(format!(
            "the server's alignment {} is not a power of two of at least {}",
            w.alignment,
            frame::ALIGNMENT
        )));
    }
    let capacity = check_capacity(u64::from(w.ring_capacity))?;
    if w.max_payload as usize != ring::max_payload(capacity) {
        return Err(NativeError::Handshake(format!(
            "the server's largest frame {} does not match its ring capacity {}",
            w.max_payload, capacity
        )));
    }
    Ok((capacity, w.server_name.to_owned()))
}
