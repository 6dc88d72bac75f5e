//! The native frame codec (version 1): no I/O, no allocation while decoding.
//!
//! Every frame is a 16-byte header (`kind u8, flags u8, pad u16, body_len u32,
//! id u64`, little-endian) and a body. [`decode`] borrows every string and byte
//! string from the input, checks every length against the bytes present, and
//! never panics; [`encode`] writes into any [`Sink`] (a `Vec`, a `BytesMut`, or a
//! slot reserved in a ring, so a frame is built in place). A frame's largest
//! byte string (a value or a Notify's batch) comes last and starts on an 8-byte
//! boundary of the frame, so it stays 8-aligned in a ring.

mod body;
mod codec;
#[cfg(test)]
mod tests;

pub use body::{
    Ack, Attach, ErrorFrame, Get, GetAt, Hello, KeyValue, Notify, Object, Publish, Subscribe,
    UpcallDone, Welcome,
};
pub(crate) use codec::RawSink;
use codec::{aligned_len, check_bytes, check_count, check_str, put_aligned, put_nullable, put_str};
pub use codec::{Element, Header, Headers, KeyInfo, Reader, Seq, SeqIter, Sink};

/// Size of every frame's header.
pub const HEADER_LEN: usize = 16;
/// The protocol version this code speaks.
pub const VERSION: u16 = 1;
/// `byte_order` value for little-endian (the only one spoken).
pub const LITTLE_ENDIAN: u8 = 1;
/// Alignment the server guarantees for ring records and frame values.
pub const ALIGNMENT: u8 = 8;

/// Why bytes are not a frame (or a frame cannot be encoded); the connection is closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before a field does.
    #[error("frame truncated: {what} needs {need} bytes but {have} are left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// The kind byte names no frame.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The header's `body_len` disagrees with the bytes given.
    #[error("frame header says the body is {header} bytes but {actual} follow")]
    BodyLength {
        /// What the header says.
        header: u32,
        /// What follows it.
        actual: usize,
    },
    /// A string field is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Flags, padding or reserved bytes are not zero.
    #[error("reserved field {0} is not zero")]
    Reserved(&'static str),
    /// Bytes remain after the body's last field.
    #[error("{0} bytes follow the last field of the frame body")]
    Trailing(usize),
    /// A field holds a value it may not.
    #[error("invalid {what}: {value}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Its value.
        value: i64,
    },
    /// A field is too long for its length prefix (encoding only).
    #[error("{what} of {len} is too long for the frame format (at most {max})")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length or count.
        len: usize,
        /// The format's limit.
        max: usize,
    },
}

/// Frame kinds (the header's first byte).
pub mod kind {
    /// Client hello (first frame).
    pub const HELLO: u8 = 1;
    /// Publish one record.
    pub const PUBLISH: u8 = 2;
    /// Subscribe to a topic.
    pub const SUBSCRIBE: u8 = 3;
    /// Drop a subscription.
    pub const UNSUBSCRIBE: u8 = 4;
    /// Put a K/V object.
    pub const PUT: u8 = 5;
    /// Read a K/V object.
    pub const GET: u8 = 6;
    /// Trigger (upcall only, nothing stored).
    pub const TRIGGER: u8 = 7;
    /// List keys under a prefix.
    pub const LIST: u8 = 8;
    /// A credit note (optional).
    pub const RELEASE: u8 = 9;
    /// The client is leaving.
    pub const BYE: u8 = 10;
    /// A lambda process attaches to the binding that started it.
    pub const ATTACH: u8 = 11;
    /// A lambda process finished an upcall.
    pub const UPCALL_DONE: u8 = 12;
    /// Server welcome (answer to Hello).
    pub const WELCOME: u8 = 64;
    /// Success of a request.
    pub const ACK: u8 = 65;
    /// Records pushed to a subscription.
    pub const NOTIFY: u8 = 66;
    /// Failure of a request.
    pub const ERROR: u8 = 67;
    /// A K/V object (answer to Get).
    pub const OBJECT: u8 = 68;
    /// Keys (answer to List).
    pub const KEYS: u8 = 69;
    /// Subscription started.
    pub const SUBSCRIBE_OK: u8 = 70;
    /// A version for an attached lambda process to handle.
    pub const UPCALL: u8 = 71;
}

/// Error codes carried by [`ErrorFrame`].
pub mod error_code {
    /// The request frame was malformed.
    pub const BAD_FRAME: u16 = 1;
    /// No such topic or partition.
    pub const UNKNOWN_TOPIC_OR_PARTITION: u16 = 2;
    /// No such object.
    pub const NOT_FOUND: u16 = 3;
    /// Over a size limit.
    pub const TOO_LARGE: u16 = 4;
    /// The key is not a valid key.
    pub const INVALID_KEY: u16 = 5;
    /// The engine failed.
    pub const ENGINE: u16 = 6;
    /// Not supported.
    pub const UNSUPPORTED: u16 = 7;
    /// The broker is shutting down.
    pub const SHUTTING_DOWN: u16 = 8;
}

/// One frame: its correlation id and body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame<'a> {
    /// The client's request id (echoed in answers), or the subscription id of a Notify.
    pub id: u64,
    /// What the frame says.
    pub body: Body<'a>,
}

/// The body of a frame, by kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Body<'a> {
    /// Kind 1.
    Hello(Hello<'a>),
    /// Kind 2.
    Publish(Publish<'a>),
    /// Kind 3.
    Subscribe(Subscribe<'a>),
    /// Kind 4; the frame id is the subscription id.
    Unsubscribe,
    /// Kind 5.
    Put(KeyValue<'a>),
    /// Kind 6.
    Get(Get<'a>),
    /// Kind 7.
    Trigger(KeyValue<'a>),
    /// Kind 8: the key prefix.
    List(&'a str),
    /// Kind 9.
    Release,
    /// Kind 10.
    Bye,
    /// Kind 64.
    Welcome(Welcome<'a>),
    /// Kind 65.
    Ack(Ack),
    /// Kind 66.
    Notify(Notify<'a>),
    /// Kind 67.
    Error(ErrorFrame<'a>),
    /// Kind 68.
    Object(Object<'a>),
    /// Kind 69.
    Keys(Seq<'a, KeyInfo<'a>>),
    /// Kind 70: `(partition, start offset)` per subscribed partition.
    SubscribeOk(Seq<'a, (i32, i64)>),
    /// Kind 11.
    Attach(Attach<'a>),
    /// Kind 12; the frame id is the upcall's call id.
    UpcallDone(UpcallDone<'a>),
    /// Kind 71: the version to handle (laid out as an Object); the frame id is the call id.
    Upcall(Object<'a>),
}

impl Body<'_> {
    /// This body's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Body::Hello(_) => kind::HELLO,
            Body::Publish(_) => kind::PUBLISH,
            Body::Subscribe(_) => kind::SUBSCRIBE,
            Body::Unsubscribe => kind::UNSUBSCRIBE,
            Body::Put(_) => kind::PUT,
            Body::Get(_) => kind::GET,
            Body::Trigger(_) => kind::TRIGGER,
            Body::List(_) => kind::LIST,
            Body::Release => kind::RELEASE,
            Body::Bye => kind::BYE,
            Body::Welcome(_) => kind::WELCOME,
            Body::Ack(_) => kind::ACK,
            Body::Notify(_) => kind::NOTIFY,
            Body::Error(_) => kind::ERROR,
            Body::Object(_) => kind::OBJECT,
            Body::Keys(_) => kind::KEYS,
            Body::SubscribeOk(_) => kind::SUBSCRIBE_OK,
            Body::Attach(_) => kind::ATTACH,
            Body::UpcallDone(_) => kind::UPCALL_DONE,
            Body::Upcall(_) => kind::UPCALL,
        }
    }
}

impl<'a> Frame<'a> {
    /// A frame with this id and body.
    pub fn new(id: u64, body: Body<'a>) -> Frame<'a> {
        Frame { id, body }
    }

    /// Bytes [`encode`] writes, or why the frame cannot be encoded.
    pub fn encoded_len(&self) -> Result<usize, FrameError> {
        let h = HEADER_LEN;
        let body = match &self.body {
            Body::Hello(b) => 10 + check_str(b.client_name, "client name")?,
            Body::Welcome(b) => 12 + check_str(b.server_name, "server name")?,
            Body::Publish(b) => {
                let at = h + 12 + check_str(b.topic, "topic")?;
                let at = at + 4 + check_bytes(b.key.map_or(0, <[u8]>::len), "key")?;
                let at = at + b.headers.encoded_len()?;
                check_bytes(b.value.len(), "value")?;
                at + aligned_len(at, b.value.len()) - h
            }
            Body::Subscribe(b) => {
                check_count(b.partitions.len(), u16::MAX as usize, "partition count")?;
                8 + check_str(b.topic, "topic")? + 2 + b.partitions.encoded_len()?
            }
            Body::Unsubscribe | Body::Release | Body::Bye => 0,
            Body::Put(b) | Body::Trigger(b) => {
                let at = h + check_str(b.key, "key")?;
                check_bytes(b.value.len(), "value")?;
                at + aligned_len(at, b.value.len()) - h
            }
            Body::Get(b) => 16 + check_str(b.key, "key")?,
            Body::List(prefix) => check_str(prefix, "prefix")?,
            Body::Ack(_) => 28,
            Body::Notify(b) => {
                check_bytes(b.batch.len(), "batch")?;
                16 + aligned_len(h + 16, b.batch.len())
            }
            Body::Error(b) => 2 + check_str(b.message, "message")?,
            Body::Attach(b) => check_str(b.name, "lambda name")? + check_str(b.token, "token")?,
            Body::UpcallDone(b) => 4 + check_str(b.message, "message")?,
            Body::Object(b) | Body::Upcall(b) => {
                let at = h + 32 + check_str(b.key, "key")?;
                check_bytes(b.value.len(), "value")?;
                at + aligned_len(at, b.value.len()) - h
            }
            Body::Keys(keys) => {
                check_count(keys.len(), u32::MAX as usize, "key count")?;
                4 + keys.encoded_len()?
            }
            Body::SubscribeOk(starts) => {
                check_count(starts.len(), u16::MAX as usize, "partition count")?;
                2 + starts.encoded_len()?
            }
        };
        if body > u32::MAX as usize - h {
            return Err(FrameError::TooLong {
                what: "frame",
                len: body + h,
                max: u32::MAX as usize,
            });
        }
        Ok(h + body)
    }

    /// Writes the frame into `out`; returns its size.
    pub fn encode_to(&self, out: &mut impl Sink) -> Result<usize, FrameError> {
        let len = self.encoded_len()?;
        self.write_checked(out, len);
        Ok(len)
    }

    /// Writes a frame whose size `len` was computed by [`Frame::encoded_len`].
    pub(crate) fn write_checked(&self, out: &mut impl Sink, len: usize) {
        let h = HEADER_LEN;
        let s = &mut Counted { sink: out, n: 0 };
        s.put(&[self.body.kind(), 0, 0, 0]);
        s.put(&((len - h) as u32).to_le_bytes());
        s.put(&self.id.to_le_bytes());
        match &self.body {
            Body::Hello(b) => {
                s.put(&b.min_version.to_le_bytes());
                s.put(&b.max_version.to_le_bytes());
                s.put(&[b.byte_order, 0]);
                s.put(&b.ring_capacity.to_le_bytes());
                put_str(s, b.client_name);
            }
            Body::Welcome(b) => {
                s.put(&b.version.to_le_bytes());
                s.put(&[b.byte_order, b.alignment]);
                s.put(&b.ring_capacity.to_le_bytes());
                s.put(&b.max_payload.to_le_bytes());
                put_str(s, b.server_name);
            }
            Body::Publish(b) => {
                s.put(&b.partition.to_le_bytes());
                s.put(&b.timestamp_ms.to_le_bytes());
                put_str(s, b.topic);
                put_nullable(s, b.key);
                b.headers.write(s);
                let at = s.n;
                put_aligned(s, at, b.value);
            }
            Body::Subscribe(b) => {
                s.put(&b.from.to_le_bytes());
                put_str(s, b.topic);
                s.put(&(b.partitions.len() as u16).to_le_bytes());
                b.partitions.write(s);
            }
            Body::Unsubscribe | Body::Release | Body::Bye => {}
            Body::Put(b) | Body::Trigger(b) => {
                put_str(s, b.key);
                let at = s.n;
                put_aligned(s, at, b.value);
            }
            Body::Get(b) => {
                let (selector, arg) = match b.at {
                    GetAt::Latest => (0u8, 0u64),
                    GetAt::Version(v) => (1, v),
                    GetAt::Seq(v) => (2, v),
                    GetAt::TimeUs(v) => (3, v),
                };
                s.put(&[selector, 0, 0, 0, 0, 0, 0, 0]);
                s.put(&arg.to_le_bytes());
                put_str(s, b.key);
            }
            Body::List(prefix) => put_str(s, prefix),
            Body::Ack(b) => {
                s.put(&b.partition.to_le_bytes());
                s.put(&b.offset.to_le_bytes());
                s.put(&b.version.to_le_bytes());
                s.put(&b.timestamp.to_le_bytes());
            }
            Body::Notify(b) => {
                s.put(&b.partition.to_le_bytes());
                s.put(&b.record_count.to_le_bytes());
                s.put(&b.base_offset.to_le_bytes());
                let at = s.n;
                put_aligned(s, at, b.batch);
            }
            Body::Error(b) => {
                s.put(&b.code.to_le_bytes());
                put_str(s, b.message);
            }
            Body::Attach(b) => {
                put_str(s, b.name);
                put_str(s, b.token);
            }
            Body::UpcallDone(b) => {
                s.put(&b.status.to_le_bytes());
                put_str(s, b.message);
            }
            Body::Object(b) | Body::Upcall(b) => {
                s.put(&b.version.to_le_bytes());
                s.put(&b.seq.to_le_bytes());
                s.put(&b.count.to_le_bytes());
                s.put(&[0; 4]);
                s.put(&b.timestamp_us.to_le_bytes());
                put_str(s, b.key);
                let at = s.n;
                put_aligned(s, at, b.value);
            }
            Body::Keys(keys) => {
                s.put(&(keys.len() as u32).to_le_bytes());
                keys.write(s);
            }
            Body::SubscribeOk(starts) => {
                s.put(&(starts.len() as u16).to_le_bytes());
                starts.write(s);
            }
        }
    }
}

/// A sink that counts the bytes through it (the frame offset of the next field).
struct Counted<'s, S> {
    sink: &'s mut S,
    n: usize,
}

impl<S: Sink> Sink for Counted<'_, S> {
    fn put(&mut self, bytes: &[u8]) {
        self.n += bytes.len();
        self.sink.put(bytes);
    }
}

/// Encodes `frame` at the end of `out` (a `Vec<u8>` or `BytesMut`); returns its size.
pub fn encode(frame: &Frame<'_>, out: &mut impl Sink) -> Result<usize, FrameError> {
    frame.encode_to(out)
}

/// Decodes one whole frame; every field borrows from `bytes`.
///
/// Never panics and never allocates, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut r = Reader::new(bytes);
    let kind = r.u8("frame kind")?;
    r.zeros(1, "frame flags")?;
    r.zeros(2, "frame header padding")?;
    let body_len = r.u32("frame body length")?;
    let id = r.u64("frame id")?;
    if body_len as usize != r.left() {
        return Err(FrameError::BodyLength {
            header: body_len,
            actual: r.left(),
        });
    }
    let body = match kind {
        kind::HELLO => {
            let min_version = r.u16("min version")?;
            let max_version = r.u16("max version")?;
            let byte_order = r.u8("byte order")?;
            r.zeros(1, "hello padding")?;
            Body::Hello(Hello {
                min_version,
                max_version,
                byte_order,
                ring_capacity: r.u32("ring capacity")?,
                client_name: r.str("client name")?,
            })
        }
        kind::WELCOME => Body::Welcome(Welcome {
            version: r.u16("version")?,
            byte_order: r.u8("byte order")?,
            alignment: r.u8("alignment")?,
            ring_capacity: r.u32("ring capacity")?,
            max_payload: r.u32("max payload")?,
            server_name: r.str("server name")?,
        }),
        kind::PUBLISH => {
            let partition = r.i32("partition")?;
            let timestamp_ms = r.i64("timestamp")?;
            let topic = r.str("topic")?;
            let key = r.nullable_bytes("key")?;
            let count = r.u16("header count")? as usize;
            let headers = Headers::Encoded(Seq::read(&mut r, count)?);
            Body::Publish(Publish {
                partition,
                timestamp_ms,
                topic,
                key,
                headers,
                value: r.aligned_bytes("value")?,
            })
        }
        kind::SUBSCRIBE => {
            let from = r.i64("from")?;
            let topic = r.str("topic")?;
            let count = r.u16("partition count")? as usize;
            Body::Subscribe(Subscribe {
                from,
                topic,
                partitions: Seq::read(&mut r, count)?,
            })
        }
        kind::UNSUBSCRIBE => Body::Unsubscribe,
        kind::PUT | kind::TRIGGER => {
            let kv = KeyValue {
                key: r.str("key")?,
                value: r.aligned_bytes("value")?,
            };
            if kind == kind::PUT {
                Body::Put(kv)
            } else {
                Body::Trigger(kv)
            }
        }
        kind::GET => {
            let selector = r.u8("get selector")?;
            r.zeros(7, "get padding")?;
            let arg = r.u64("get argument")?;
            let at = match selector {
                0 if arg == 0 => GetAt::Latest,
                0 => return Err(FrameError::Reserved("get argument for latest")),
                1 => GetAt::Version(arg),
                2 => GetAt::Seq(arg),
                3 => GetAt::TimeUs(arg),
                other => {
                    return Err(FrameError::Invalid {
                        what: "get selector",
                        value: i64::from(other),
                    })
                }
            };
            Body::Get(Get {
                at,
                key: r.str("key")?,
            })
        }
        kind::LIST => Body::List(r.str("prefix")?),
        kind::RELEASE => Body::Release,
        kind::BYE => Body::Bye,
        kind::ACK => Body::Ack(Ack {
            partition: r.i32("partition")?,
            offset: r.i64("offset")?,
            version: r.u64("version")?,
            timestamp: r.i64("timestamp")?,
        }),
        kind::NOTIFY => Body::Notify(Notify {
            partition: r.i32("partition")?,
            record_count: r.u32("record count")?,
            base_offset: r.i64("base offset")?,
            batch: r.aligned_bytes("batch")?,
        }),
        kind::ERROR => Body::Error(ErrorFrame {
            code: r.u16("error code")?,
            message: r.str("error message")?,
        }),
        kind::OBJECT | kind::UPCALL => {
            let version = r.u64("version")?;
            let seq = r.u64("seq")?;
            let count = r.u32("count")?;
            r.zeros(4, "object padding")?;
            let o = Object {
                version,
                seq,
                count,
                timestamp_us: r.u64("timestamp")?,
                key: r.str("key")?,
                value: r.aligned_bytes("value")?,
            };
            if kind == kind::OBJECT {
                Body::Object(o)
            } else {
                Body::Upcall(o)
            }
        }
        kind::ATTACH => Body::Attach(Attach {
            name: r.str("lambda name")?,
            token: r.str("token")?,
        }),
        kind::UPCALL_DONE => Body::UpcallDone(UpcallDone {
            status: r.i32("status")?,
            message: r.str("message")?,
        }),
        kind::KEYS => {
            let count = r.u32("key count")? as usize;
            Body::Keys(Seq::read(&mut r, count)?)
        }
        kind::SUBSCRIBE_OK => {
            let count = r.u16("partition count")? as usize;
            Body::SubscribeOk(Seq::read(&mut r, count)?)
        }
        other => return Err(FrameError::UnknownKind(other)),
    };
    if r.left() != 0 {
        return Err(FrameError::Trailing(r.left()));
    }
    Ok(Frame { id, body })
}

/// Reads just the kind and id of an encoded frame (for logs and routing), if the header is whole.
pub fn peek_header(bytes: &[u8]) -> Option<(u8, u64)> {
    let h: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[8..16]);
    Some((h[0], u64::from_le_bytes(id)))
}
