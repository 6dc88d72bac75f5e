//! Committed offsets as engine objects, and the escaping that turns any group
//! id into a valid key segment.
//!
//! A committed offset lives at `/cms/groups/<group>/offsets/<topic>/<partition>`.
//! Its value is a small binary record: format byte, offset, leader epoch,
//! commit time, the topic's id (so an offset outlives neither its topic nor a
//! topic re-created under the same name) and the client's metadata string.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kascade_core::key::MAX_KEY_LEN;
use uuid::Uuid;

use crate::kafka::topics::GROUPS_PREFIX;

/// The largest metadata string a commit may carry (Kafka's `offset.metadata.max.bytes`).
pub const MAX_METADATA_BYTES: usize = 4096;

/// Room a key needs beyond the escaped group id: prefix, `/offsets/`, a
/// topic name (at most 249 bytes) and a partition number.
const KEY_OVERHEAD: usize = GROUPS_PREFIX.len() + "/".len() + "/offsets/".len() + 249 + 1 + 11;

/// The format byte of the stored record.
const FORMAT: u8 = 1;

/// One committed offset, as OffsetFetch returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group consumes.
    pub offset: i64,
    /// The leader epoch of the last consumed record, -1 when unknown.
    pub leader_epoch: i32,
    /// The client's string, returned as given.
    pub metadata: String,
    /// When it was committed, ms since the Unix epoch.
    pub commit_timestamp_ms: i64,
    /// The id of the topic it was committed for.
    pub topic_id: Uuid,
}

impl CommittedOffset {
    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(1 + 8 + 4 + 8 + 16 + 4 + self.metadata.len());
        b.put_u8(FORMAT);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        b.put_i64(self.commit_timestamp_ms);
        b.put_slice(self.topic_id.as_bytes());
        b.put_u32(self.metadata.len() as u32);
        b.put_slice(self.metadata.as_bytes());
        b.freeze()
    }

    /// Reads the stored form; `None` when it is not one.
    pub fn decode(mut value: &[u8]) -> Option<CommittedOffset> {
        if value.len() < 1 + 8 + 4 + 8 + 16 + 4 || value.get_u8() != FORMAT {
            return None;
        }
        let offset = value.get_i64();
        let leader_epoch = value.get_i32();
        let commit_timestamp_ms = value.get_i64();
        let mut id = [0u8; 16];
        value.copy_to_slice(&mut id);
        let len = value.get_u32() as usize;
        if value.len() != len {
            return None;
        }
        let metadata = String::from_utf8(value.to_vec()).ok()?;
        Some(CommittedOffset {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
            topic_id: Uuid::from_bytes(id),
        })
    }
}

/// Escapes a name into one key segment: bytes outside `[A-Za-z0-9_.-]` become
/// `%XX`, and a name of dots only has its dots escaped too (`.` and `..` are
/// not segments). The empty name becomes a lone `%`, which escaping never
/// produces otherwise.
pub fn escape(name: &str) -> String {
    if name.is_empty() {
        return "%".to_string();
    }
    let only_dots = name.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        let plain =
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !only_dots);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`escape`]; `None` for a segment escaping did not produce.
pub fn unescape(segment: &str) -> Option<String> {
    if segment == "%" {
        return Some(String::new());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The escaped group id if every key of the group fits the engine's limit.
pub fn group_segment(group_id: &str) -> Option<String> {
    let escaped = escape(group_id);
    (escaped.len() + KEY_OVERHEAD <= MAX_KEY_LEN).then_some(escaped)
}

/// The key prefix of a group: `/cms/groups/<escaped group>`.
pub fn group_prefix(segment: &str) -> String {
    format!("{GROUPS_PREFIX}/{segment}")
}

/// The key of one committed offset.
pub fn offset_key(group_prefix: &str, topic: &str, partition: i32) -> String {
    format!("{group_prefix}/offsets/{}/{partition}", escape(topic))
}

/// Splits an offset key into `(group id, topic, partition)`.
pub fn parse_offset_key(key: &str) -> Option<(String, String, i32)> {
    let rest = key.strip_prefix(GROUPS_PREFIX)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let group = unescape(parts.next()?)?;
    if parts.next()? != "offsets" {
        return None;
    }
    let topic = unescape(parts.next()?)?;
    let partition = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((group, topic, partition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kascade_core::Key;

    #[test]
    fn any_group_id_escapes_into_a_valid_key_and_back() {
        for id in [
            "orders", "", ".", "..", "a/b", "50% off", "é ü\n", "a..b", "%", "x%2Fy",
        ] {
            let seg = group_segment(id).unwrap();
            let key = offset_key(&group_prefix(&seg), "t.1", 3);
            Key::new(&key).unwrap_or_else(|e| panic!("{id:?}: {e}"));
            assert_eq!(
                parse_offset_key(&key),
                Some((id.to_string(), "t.1".to_string(), 3))
            );
        }
        assert!(group_segment(&"x".repeat(2000)).is_none());
    }

    #[test]
    fn committed_offsets_round_trip_and_garbage_is_refused() {
        let c = CommittedOffset {
            offset: 42,
            leader_epoch: 7,
            metadata: "meta é".into(),
            commit_timestamp_ms: 1_700_000_000_000,
            topic_id: Uuid::new_v4(),
        };
        assert_eq!(CommittedOffset::decode(&c.encode()), Some(c.clone()));
        let enc = c.encode();
        assert_eq!(CommittedOffset::decode(&enc[..enc.len() - 1]), None);
        assert_eq!(CommittedOffset::decode(b"junk"), None);
    }

    proptest::proptest! {
        #[test]
        fn every_name_escapes_to_one_valid_segment_and_back(name in "\\PC{0,40}|[./%]{0,4}") {
            let seg = escape(&name);
            proptest::prop_assert!(!seg.contains('/'));
            let key = offset_key(&group_prefix(&seg), &name, 0);
            proptest::prop_assert!(Key::new(&key).is_ok(), "{:?} -> {}", name, key);
            proptest::prop_assert_eq!(parse_offset_key(&key), Some((name.clone(), name, 0)));
        }

        #[test]
        fn any_stored_bytes_decode_or_are_refused(bytes in proptest::collection::vec(0u8..=255, 0..80)) {
            let _ = CommittedOffset::decode(&bytes);
        }
    }
}
