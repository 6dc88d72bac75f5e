//! The bodies of the frame kinds: borrowed views, built by the sender and
//! returned by [`decode`](super::decode).

use super::{Headers, Seq};

/// The client's first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Lowest protocol version the client speaks.
    pub min_version: u16,
    /// Highest protocol version the client speaks.
    pub max_version: u16,
    /// The client's byte order (1 = little).
    pub byte_order: u8,
    /// Ring capacity the client asks for (0 = the server's default).
    pub ring_capacity: u32,
    /// A name for logs.
    pub client_name: &'a str,
}

/// The server's answer to Hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome<'a> {
    /// The protocol version chosen.
    pub version: u16,
    /// The server's byte order (1 = little).
    pub byte_order: u8,
    /// Alignment of ring records and values.
    pub alignment: u8,
    /// Capacity of each ring, bytes.
    pub ring_capacity: u32,
    /// Largest frame either side may send.
    pub max_payload: u32,
    /// A name for logs.
    pub server_name: &'a str,
}

/// Publish one record to a topic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Publish<'a> {
    /// The partition, or -1 to choose by key hash (round-robin without a key).
    pub partition: i32,
    /// Record timestamp in ms, or -1 for now.
    pub timestamp_ms: i64,
    /// The topic.
    pub topic: &'a str,
    /// The record key.
    pub key: Option<&'a [u8]>,
    /// The record headers.
    pub headers: Headers<'a>,
    /// The record value.
    pub value: &'a [u8],
}

/// Subscribe to a topic's partitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Subscribe<'a> {
    /// Start offset: >= 0 an offset, -1 the end (latest), -2 the start (earliest).
    pub from: i64,
    /// The topic.
    pub topic: &'a str,
    /// The partitions; empty means all.
    pub partitions: Seq<'a, i32>,
}

/// A key and a value (Put, Trigger).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValue<'a> {
    /// The key.
    pub key: &'a str,
    /// The value.
    pub value: &'a [u8],
}

/// Which version of an object a Get reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetAt {
    /// The latest.
    Latest,
    /// The version with this shard version number.
    Version(u64),
    /// The one at this position (seq) of the key's log.
    Seq(u64),
    /// The latest at or before this time, microseconds since the epoch.
    TimeUs(u64),
}

/// Read an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Get<'a> {
    /// Which version.
    pub at: GetAt,
    /// The key.
    pub key: &'a str,
}

/// Success of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The partition written (publish), or -1.
    pub partition: i32,
    /// The offset (publish) or seq (put, trigger).
    pub offset: i64,
    /// The engine's version number.
    pub version: u64,
    /// Timestamp: ms for publish, us for put/trigger.
    pub timestamp: i64,
}

/// Records pushed to a subscription (frame id = subscription id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify<'a> {
    /// The partition.
    pub partition: i32,
    /// Records in `batch`.
    pub record_count: u32,
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// One Kafka v2 record batch, exactly as stored.
    pub batch: &'a [u8],
}

/// Failure of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    /// One of [`error_code`].
    pub code: u16,
    /// What went wrong, in words.
    pub message: &'a str,
}

/// A K/V object (answer to Get).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object<'a> {
    /// The shard version number.
    pub version: u64,
    /// The key's position.
    pub seq: u64,
    /// How many positions it takes.
    pub count: u32,
    /// When it was written, us.
    pub timestamp_us: u64,
    /// The key.
    pub key: &'a str,
    /// The value.
    pub value: &'a [u8],
}

/// A lambda process attaches to the binding that started it (answered Ack or Error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attach<'a> {
    /// The binding's name (`KASCADE_LAMBDA_NAME`).
    pub name: &'a str,
    /// The token the broker gave this start of the process (`KASCADE_LAMBDA_TOKEN`).
    pub token: &'a str,
}

/// A lambda process finished an upcall (frame id = the call id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpcallDone<'a> {
    /// 0 for success; anything else fails the call (counted as the lambda's error).
    pub status: i32,
    /// Why it failed, in words (empty on success).
    pub message: &'a str,
}
