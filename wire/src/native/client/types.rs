//! The client's settings and the owned answers its calls return.

use std::time::Duration;

use crate::native::frame::{Ack, Body};
use crate::native::wait::WaitStrategy;
use crate::native::NativeError;

/// How a client connects and waits.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How to wait for answers, records and credits (default: spin 50 µs, then park).
    pub wait: WaitStrategy,
    /// Ring capacity to ask for; 0 takes the broker's default.
    pub ring_capacity: u32,
    /// Longest wait for an answer (a hang guard); `None` waits forever.
    pub request_timeout: Option<Duration>,
    /// Longest wait for the connection and handshake.
    pub connect_timeout: Duration,
    /// A name the broker logs.
    pub client_name: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            wait: WaitStrategy::default(),
            ring_capacity: 0,
            request_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            client_name: "kascade-native-client".into(),
        }
    }
}

/// Where a published record was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, ms.
    pub timestamp_ms: i64,
}

/// Where a put or trigger landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The engine's version number.
    pub version: u64,
    /// The key's position (seq).
    pub seq: i64,
    /// When, µs since the epoch.
    pub timestamp_us: i64,
}

/// Where a subscription starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// The oldest retained record.
    Earliest,
    /// Only records published from now on.
    Latest,
    /// This offset.
    At(i64),
}

impl Offset {
    pub(crate) fn wire(self) -> i64 {
        match self {
            Offset::Earliest => -2,
            Offset::Latest => -1,
            Offset::At(o) => o,
        }
    }
}

/// A started subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Its id (names it in [`Client::unsubscribe`] and in deliveries).
    pub id: u64,
    /// `(partition, first offset delivered)` for each subscribed partition.
    pub starts: Vec<(i32, i64)>,
}

/// A K/V object read with [`Client::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The key.
    pub key: String,
    /// The engine's version number.
    pub version: u64,
    /// The key's position.
    pub seq: u64,
    /// Positions it takes.
    pub count: u32,
    /// When it was written, µs.
    pub timestamp_us: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// A key listed by [`Client::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key.
    pub key: String,
    /// Its first retained position.
    pub start_seq: u64,
    /// The position its next put takes.
    pub next_seq: u64,
}

/// An answer, copied out of the ring.
pub(crate) enum Answer {
    Ack(Ack),
    Error(u16, String),
    Object(Object),
    Keys(Vec<KeyEntry>),
    SubscribeOk(Vec<(i32, i64)>),
}

impl Answer {
    pub(crate) fn from_body(body: &Body<'_>) -> Option<Answer> {
        Some(match body {
            Body::Ack(a) => Answer::Ack(*a),
            Body::Error(e) => Answer::Error(e.code, e.message.to_owned()),
            Body::Object(o) => Answer::Object(Object {
                key: o.key.to_owned(),
                version: o.version,
                seq: o.seq,
                count: o.count,
                timestamp_us: o.timestamp_us,
                value: o.value.to_vec(),
            }),
            Body::Keys(keys) => Answer::Keys(
                keys.iter()
                    .map(|k| KeyEntry {
                        key: k.key.to_owned(),
                        start_seq: k.start_seq,
                        next_seq: k.next_seq,
                    })
                    .collect(),
            ),
            Body::SubscribeOk(starts) => Answer::SubscribeOk(starts.iter().collect()),
            _ => return None,
        })
    }

    pub(crate) fn into_error(self, what: &str) -> NativeError {
        match self {
            Answer::Error(code, message) => NativeError::Server { code, message },
            _ => NativeError::Protocol(format!("unexpected answer to {what}")),
        }
    }

    pub(crate) fn published(self) -> Result<Published, NativeError> {
        match self {
            Answer::Ack(a) => Ok(Published {
                partition: a.partition,
                offset: a.offset,
                timestamp_ms: a.timestamp,
            }),
            other => Err(other.into_error("publish")),
        }
    }
}

pub(crate) fn written(answer: Answer, what: &str) -> Result<Written, NativeError> {
    match answer {
        Answer::Ack(a) => Ok(Written {
            version: a.version,
            seq: a.offset,
            timestamp_us: a.timestamp,
        }),
        other => Err(other.into_error(what)),
    }
}
