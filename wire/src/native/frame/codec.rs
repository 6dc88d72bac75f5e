//! The little pieces every frame body is made of: a bounds-checked reader, a
//! byte sink the encoder writes through (a `Vec`, a `BytesMut` or a ring
//! slot), and borrowed views of repeated fields that decode lazily.
//!
//! A repeated field is checked whole when its frame is decoded, so iterating a
//! decoded view never fails; nothing is allocated in proportion to a count the
//! bytes have not yet backed.

use std::fmt;

use super::FrameError;

/// Where the encoder writes a frame's bytes.
pub trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Appends `n` zero bytes.
    fn zeros(&mut self, n: usize) {
        const Z: [u8; 8] = [0; 8];
        let mut left = n;
        while left > 0 {
            let k = left.min(8);
            self.put(&Z[..k]);
            left -= k;
        }
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for bytes::BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink over raw memory of a known size (a slot reserved in a ring).
///
/// Writes go through `ptr::copy_nonoverlapping`, so no Rust reference is made
/// to memory a peer process can also write. A write past the end is dropped
/// and remembered in `overflow` (the encoder computed the size first, so this
/// only guards against a bug).
pub(crate) struct RawSink {
    ptr: *mut u8,
    len: usize,
    at: usize,
    pub(crate) overflow: bool,
}

impl RawSink {
    /// A sink over `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid for writes for the sink's whole life.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> RawSink {
        RawSink {
            ptr,
            len,
            at: 0,
            overflow: false,
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> usize {
        self.at
    }
}

impl Sink for RawSink {
    fn put(&mut self, bytes: &[u8]) {
        if bytes.len() > self.len - self.at {
            self.overflow = true;
            return;
        }
        // SAFETY: `at + bytes.len() <= len` (checked above) and the caller of
        // `new` promised `ptr..ptr+len` is writable; `bytes` is our own memory,
        // so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.at), bytes.len())
        };
        self.at += bytes.len();
    }
}

/// Reads a frame's fields front to back, each read checked against the bytes left.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    pub(crate) fn at(&self) -> usize {
        self.at
    }

    pub(crate) fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if n > self.left() {
            return Err(FrameError::Truncated {
                what,
                need: n,
                have: self.left(),
            });
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, FrameError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, FrameError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// Reserved bytes, which must be zero.
    pub(crate) fn zeros(&mut self, n: usize, what: &'static str) -> Result<(), FrameError> {
        if self.take(n, what)?.iter().any(|&b| b != 0) {
            return Err(FrameError::Reserved(what));
        }
        Ok(())
    }

    /// `u16 len` + UTF-8.
    pub(crate) fn str(&mut self, what: &'static str) -> Result<&'a str, FrameError> {
        let len = self.u16(what)? as usize;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| FrameError::Utf8(what))
    }

    /// `i32 len` (-1 = null) + bytes.
    pub(crate) fn nullable_bytes(
        &mut self,
        what: &'static str,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        let len = self.i32(what)?;
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(FrameError::Invalid {
                what,
                value: i64::from(n),
            }),
            n => Ok(Some(self.take(n as usize, what)?)),
        }
    }

    /// `u32 len`, zero padding up to the next 8-aligned frame offset, bytes.
    /// The frame's last field, so a value lands 8-aligned in a ring.
    pub(crate) fn aligned_bytes(&mut self, what: &'static str) -> Result<&'a [u8], FrameError> {
        let len = self.u32(what)? as usize;
        self.zeros(align_pad(self.at), what)?;
        self.take(len, what)
    }
}

/// Zero bytes needed after frame offset `at` to reach an 8-aligned offset.
pub(crate) fn align_pad(at: usize) -> usize {
    (8 - at % 8) % 8
}

pub(crate) fn put_str(s: &mut impl Sink, v: &str) {
    s.put(&(v.len() as u16).to_le_bytes());
    s.put(v.as_bytes());
}

pub(crate) fn put_nullable(s: &mut impl Sink, v: Option<&[u8]>) {
    match v {
        None => s.put(&(-1i32).to_le_bytes()),
        Some(b) => {
            s.put(&(b.len() as i32).to_le_bytes());
            s.put(b);
        }
    }
}

/// Writes `u32 len`, padding, bytes; `at` is the frame offset of the length.
pub(crate) fn put_aligned(s: &mut impl Sink, at: usize, v: &[u8]) {
    s.put(&(v.len() as u32).to_le_bytes());
    s.zeros(align_pad(at + 4));
    s.put(v);
}

/// Encoded size of [`put_aligned`] starting at frame offset `at`.
pub(crate) fn aligned_len(at: usize, len: usize) -> usize {
    4 + align_pad(at + 4) + len
}

/// Checks a string fits its `u16` length prefix.
pub(crate) fn check_str(v: &str, what: &'static str) -> Result<usize, FrameError> {
    if v.len() > u16::MAX as usize {
        return Err(FrameError::TooLong {
            what,
            len: v.len(),
            max: u16::MAX as usize,
        });
    }
    Ok(2 + v.len())
}

/// Checks a byte string fits its `i32`/`u32` length prefix (both capped at `i32::MAX`).
pub(crate) fn check_bytes(len: usize, what: &'static str) -> Result<usize, FrameError> {
    if len > i32::MAX as usize {
        return Err(FrameError::TooLong {
            what,
            len,
            max: i32::MAX as usize,
        });
    }
    Ok(len)
}

/// One element of a repeated field.
pub trait Element<'a>: Copy + fmt::Debug + PartialEq + Sized {
    /// Decodes one element.
    #[doc(hidden)]
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError>;
    /// Encodes one element.
    #[doc(hidden)]
    fn write(&self, s: &mut impl Sink);
    /// Its encoded size, or why it cannot be encoded.
    #[doc(hidden)]
    fn encoded_len(&self) -> Result<usize, FrameError>;
}

impl<'a> Element<'a> for i32 {
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        r.i32("partition")
    }
    fn write(&self, s: &mut impl Sink) {
        s.put(&self.to_le_bytes());
    }
    fn encoded_len(&self) -> Result<usize, FrameError> {
        Ok(4)
    }
}

impl<'a> Element<'a> for (i32, i64) {
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        Ok((r.i32("partition")?, r.i64("start offset")?))
    }
    fn write(&self, s: &mut impl Sink) {
        s.put(&self.0.to_le_bytes());
        s.put(&self.1.to_le_bytes());
    }
    fn encoded_len(&self) -> Result<usize, FrameError> {
        Ok(12)
    }
}

/// A record header: a name and a nullable value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header's name.
    pub name: &'a str,
    /// Its value; `None` is Kafka's null header value.
    pub value: Option<&'a [u8]>,
}

impl<'a> Element<'a> for Header<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        Ok(Header {
            name: r.str("header name")?,
            value: r.nullable_bytes("header value")?,
        })
    }
    fn write(&self, s: &mut impl Sink) {
        put_str(s, self.name);
        put_nullable(s, self.value);
    }
    fn encoded_len(&self) -> Result<usize, FrameError> {
        Ok(check_str(self.name, "header name")?
            + 4
            + check_bytes(self.value.map_or(0, <[u8]>::len), "header value")?)
    }
}

impl<'a> Element<'a> for (&'a str, &'a [u8]) {
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let h = Header::read(r)?;
        Ok((h.name, h.value.unwrap_or_default()))
    }
    fn write(&self, s: &mut impl Sink) {
        Header::from(*self).write(s)
    }
    fn encoded_len(&self) -> Result<usize, FrameError> {
        Header::from(*self).encoded_len()
    }
}

impl<'a> From<(&'a str, &'a [u8])> for Header<'a> {
    fn from((name, value): (&'a str, &'a [u8])) -> Self {
        Header {
            name,
            value: Some(value),
        }
    }
}

/// One key of a `Keys` answer: its name and its log bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo<'a> {
    /// The key.
    pub key: &'a str,
    /// Its first retained position.
    pub start_seq: u64,
    /// The position its next put will take.
    pub next_seq: u64,
}

impl<'a> Element<'a> for KeyInfo<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        Ok(KeyInfo {
            key: r.str("key")?,
            start_seq: r.u64("start seq")?,
            next_seq: r.u64("next seq")?,
        })
    }
    fn write(&self, s: &mut impl Sink) {
        put_str(s, self.key);
        s.put(&self.start_seq.to_le_bytes());
        s.put(&self.next_seq.to_le_bytes());
    }
    fn encoded_len(&self) -> Result<usize, FrameError> {
        Ok(check_str(self.key, "key")? + 16)
    }
}

/// A repeated field: decoded bytes (checked whole) or a slice to encode.
#[derive(Clone, Copy)]
pub enum Seq<'a, T> {
    /// `count` elements, already checked, in `bytes`.
    Encoded {
        /// How many elements.
        count: usize,
        /// Their bytes, exactly.
        bytes: &'a [u8],
    },
    /// Elements to encode.
    Slice(&'a [T]),
}

impl<'a, T: Element<'a>> Seq<'a, T> {
    /// How many elements.
    pub fn len(&self) -> usize {
        match self {
            Seq::Encoded { count, .. } => *count,
            Seq::Slice(s) => s.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in order.
    pub fn iter(&self) -> SeqIter<'a, T> {
        match *self {
            Seq::Encoded { count, bytes } => SeqIter(IterInner::Encoded {
                left: count,
                reader: Reader::new(bytes),
            }),
            Seq::Slice(s) => SeqIter(IterInner::Slice(s.iter())),
        }
    }

    /// Reads `count` elements, checking each, and keeps them as a view.
    pub(crate) fn read(r: &mut Reader<'a>, count: usize) -> Result<Self, FrameError> {
        let start = r.at();
        let whole = r.take(r.left(), "repeated field")?;
        let mut inner = Reader::new(whole);
        for _ in 0..count {
            T::read(&mut inner)?;
        }
        let used = inner.at();
        // Give the unread tail back to the outer reader.
        *r = Reader {
            buf: r.buf,
            at: start + used,
        };
        Ok(Seq::Encoded {
            count,
            bytes: &whole[..used],
        })
    }

    pub(crate) fn write(&self, s: &mut impl Sink) {
        match self {
            Seq::Encoded { bytes, .. } => s.put(bytes),
            Seq::Slice(items) => items.iter().for_each(|e| e.write(s)),
        }
    }

    pub(crate) fn encoded_len(&self) -> Result<usize, FrameError> {
        match self {
            Seq::Encoded { bytes, .. } => Ok(bytes.len()),
            Seq::Slice(items) => items
                .iter()
                .try_fold(0usize, |n, e| Ok(n + e.encoded_len()?)),
        }
    }
}

impl<'a, T: Element<'a>> PartialEq for Seq<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: Element<'a>> fmt::Debug for Seq<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over a [`Seq`].
#[derive(Clone)]
pub struct SeqIter<'a, T>(IterInner<'a, T>);

#[derive(Clone)]
enum IterInner<'a, T> {
    Encoded { left: usize, reader: Reader<'a> },
    Slice(std::slice::Iter<'a, T>),
}

impl<'a, T: Element<'a>> Iterator for SeqIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        use IterInner as SeqIter;
        match &mut self.0 {
            SeqIter::Encoded { left, reader } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // The bytes were checked when the frame was decoded.
                T::read(reader).ok()
            }
            SeqIter::Slice(it) => it.next().copied(),
        }
    }
}

/// A publish's headers: decoded (checked) bytes, or pairs / headers to encode.
#[derive(Clone, Copy)]
pub enum Headers<'a> {
    /// Decoded from a frame.
    Encoded(Seq<'a, Header<'a>>),
    /// `(name, value)` pairs, as the client API takes them.
    Pairs(&'a [(&'a str, &'a [u8])]),
    /// Headers that may have null values.
    List(&'a [Header<'a>]),
}

impl<'a> Headers<'a> {
    /// No headers.
    pub const NONE: Headers<'static> = Headers::List(&[]);

    /// How many headers.
    pub fn len(&self) -> usize {
        match self {
            Headers::Encoded(s) => s.len(),
            Headers::Pairs(p) => p.len(),
            Headers::List(l) => l.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The headers in order (the iterator is `Clone`, so a writer can size them first).
    pub fn iter(&self) -> impl Iterator<Item = Header<'a>> + Clone + 'a {
        let (a, b, c) = match *self {
            Headers::Encoded(s) => (Some(s.iter()), None, None),
            Headers::Pairs(p) => (None, Some(p.iter().map(|&pair| Header::from(pair))), None),
            Headers::List(l) => (None, None, Some(l.iter().copied())),
        };
        a.into_iter()
            .flatten()
            .chain(b.into_iter().flatten())
            .chain(c.into_iter().flatten())
    }

    pub(crate) fn write(&self, s: &mut impl Sink) {
        s.put(&(self.len() as u16).to_le_bytes());
        match self {
            Headers::Encoded(seq) => seq.write(s),
            Headers::Pairs(p) => Seq::Slice(p).write(s),
            Headers::List(l) => Seq::Slice(l).write(s),
        }
    }

    pub(crate) fn encoded_len(&self) -> Result<usize, FrameError> {
        check_count(self.len(), u16::MAX as usize, "header count")?;
        Ok(2 + match self {
            Headers::Encoded(seq) => seq.encoded_len()?,
            Headers::Pairs(p) => Seq::Slice(p).encoded_len()?,
            Headers::List(l) => Seq::Slice(l).encoded_len()?,
        })
    }
}

impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

pub(crate) fn check_count(n: usize, max: usize, what: &'static str) -> Result<(), FrameError> {
    if n > max {
        return Err(FrameError::TooLong { what, len: n, max });
    }
    Ok(())
}
