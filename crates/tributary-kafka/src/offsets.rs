//! The records of `__consumer_offsets`, in Kafka's own binary schemas (so Kafka's tools could
//! read our topic, and a migration needs no conversion):
//!
//! - key version 1 `OffsetCommitKey` (group, topic, partition) with value version 3
//!   `OffsetCommitValue` (offset, leader epoch, metadata, commit timestamp);
//! - key version 2 `GroupMetadataKey` (group) with value version 3 `GroupMetadataValue`
//!   (protocol type, generation, protocol, leader, state timestamp, members).
//!
//! A null value (tombstone) deletes the key: compaction removes offsets and groups that way.
//! Non-flexible encoding: int16-length strings (-1: null), int32-length bytes and arrays.

use bytes::{BufMut, Bytes};

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A record key of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A committed offset.
    Offset {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A group's membership.
    Group {
        /// Group id.
        group: String,
    },
}

impl Key {
    /// The group this key belongs to.
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } => group,
        }
    }
}

/// A committed offset (`OffsetCommitValue` v3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record (-1: unknown).
    pub leader_epoch: i32,
    /// The application's metadata string.
    pub metadata: String,
    /// When it was committed (ms).
    pub commit_timestamp: i64,
}

/// A member as stored (`GroupMetadataValue` v3's member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout (ms).
    pub rebalance_timeout: i32,
    /// Session timeout (ms).
    pub session_timeout: i32,
    /// The member's metadata for the chosen protocol.
    pub subscription: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A group's membership (`GroupMetadataValue` v3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    /// "consumer" for consumer groups.
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// The chosen protocol (assignor).
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: Option<String>,
    /// When the group entered its current state (ms).
    pub current_state_timestamp: i64,
    /// Members.
    pub members: Vec<StoredMember>,
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A committed offset.
    Offset(OffsetValue),
    /// A group's membership.
    Group(GroupValue),
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct DecodeError(String);

fn put_string(buf: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.extend_from_slice(&s.as_bytes()[..len as usize]);
}

fn put_nullable_string(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.extend_from_slice(b);
}

/// Encodes a key.
pub fn encode_key(key: &Key) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => {
            buf.put_i16(1);
            put_string(&mut buf, group);
            put_string(&mut buf, topic);
            buf.put_i32(*partition);
        }
        Key::Group { group } => {
            buf.put_i16(2);
            put_string(&mut buf, group);
        }
    }
    buf
}

/// Encodes an offset value.
pub fn encode_offset(value: &OffsetValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32 + value.metadata.len());
    buf.put_i16(3);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata);
    buf.put_i64(value.commit_timestamp);
    buf
}

/// Encodes a group value.
pub fn encode_group(value: &GroupValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.put_i16(3);
    put_string(&mut buf, &value.protocol_type);
    buf.put_i32(value.generation);
    put_nullable_string(&mut buf, value.protocol.as_deref());
    put_nullable_string(&mut buf, value.leader.as_deref());
    buf.put_i64(value.current_state_timestamp);
    buf.put_i32(value.members.len() as i32);
    for m in &value.members {
        put_string(&mut buf, &m.member_id);
        put_nullable_string(&mut buf, m.group_instance_id.as_deref());
        put_string(&mut buf, &m.client_id);
        put_string(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout);
        buf.put_i32(m.session_timeout);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(format!(
                "{what}: needs {n} bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn nullable_string(&mut self, what: &str) -> Result<Option<String>, DecodeError> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| DecodeError(format!("{what}: not UTF-8")))
    }
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        self.nullable_string(what)?
            .ok_or_else(|| DecodeError(format!("{what}: null where a string is required")))
    }
    fn bytes(&mut self, what: &str) -> Result<Bytes, DecodeError> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize, what)?))
    }
}

/// Decodes a key.
pub fn decode_key(bytes: &[u8]) -> Result<Key, DecodeError> {
    let mut r = Reader { buf: bytes };
    match r.i16("key version")? {
        0 | 1 => Ok(Key::Offset {
            group: r.string("group")?,
            topic: r.string("topic")?,
            partition: r.i32("partition")?,
        }),
        2 => Ok(Key::Group {
            group: r.string("group")?,
        }),
        v => Err(DecodeError(format!("unknown key version {v}"))),
    }
}

/// Decodes the value of `key` (versions 0 to 3 of both schemas).
pub fn decode_value(key: &Key, bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader { buf: bytes };
    let version = r.i16("value version")?;
    if !(0..=4).contains(&version) {
        return Err(DecodeError(format!("unknown value version {version}")));
    }
    match key {
        Key::Offset { .. } => {
            let offset = r.i64("offset")?;
            let leader_epoch = if version >= 3 {
                r.i32("leader epoch")?
            } else {
                -1
            };
            let metadata = r.string("metadata")?;
            let commit_timestamp = r.i64("commit timestamp")?;
            if version == 1 {
                r.i64("expire timestamp")?;
            }
            Ok(Value::Offset(OffsetValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp,
            }))
        }
        Key::Group { .. } => {
            let protocol_type = r.string("protocol type")?;
            let generation = r.i32("generation")?;
            let protocol = r.nullable_string("protocol")?;
            let leader = r.nullable_string("leader")?;
            let current_state_timestamp = if version >= 2 {
                r.i64("current state timestamp")?
            } else {
                -1
            };
            let count = r.i32("member count")?;
            let mut members = Vec::with_capacity(count.clamp(0, 1024) as usize);
            for _ in 0..count.max(0) {
                let member_id = r.string("member id")?;
                let group_instance_id = if version >= 3 {
                    r.nullable_string("group instance id")?
                } else {
                    None
                };
                let client_id = r.string("client id")?;
                let client_host = r.string("client host")?;
                let rebalance_timeout = if version >= 1 {
                    r.i32("rebalance timeout")?
                } else {
                    0
                };
                let session_timeout = r.i32("session timeout")?;
                let subscription = r.bytes("subscription")?;
                let assignment = r.bytes("assignment")?;
                members.push(StoredMember {
                    member_id,
                    group_instance_id,
                    client_id,
                    client_host,
                    rebalance_timeout,
                    session_timeout,
                    subscription,
                    assignment,
                });
            }
            Ok(Value::Group(GroupValue {
                protocol_type,
                generation,
                protocol,
                leader,
                current_state_timestamp,
                members,
            }))
        }
    }
}

/// Kafka's `String.hashCode()` (UTF-16 code units, wrapping arithmetic).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group: `abs(hashCode(group)) % partitions`, with
/// Kafka's `Utils.abs` (which maps `i32::MIN` to 0).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = java_string_hash(group);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_kafka() {
        // Values of "x".hashCode() in Java.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("group"), 98_629_247);
        assert_eq!(java_string_hash("console-consumer-12345"), 158_455_506);
        assert_eq!(partition_for("\u{0}", 50), 0);
        assert_eq!(partition_for("group", 50), 98_629_247 % 50);
        assert_eq!(partition_for("console-consumer-12345", 50), 6);
    }

    #[test]
    fn keys_and_values_round_trip_in_kafkas_layout() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
        };
        let bytes = encode_key(&key);
        assert_eq!(bytes, [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        assert_eq!(decode_key(&bytes).unwrap(), key);
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 1000,
        };
        let encoded = encode_offset(&value);
        assert_eq!(&encoded[..2], &[0, 3]);
        assert_eq!(decode_value(&key, &encoded).unwrap(), Value::Offset(value));
        let gkey = Key::Group { group: "g".into() };
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp: 99,
            members: vec![StoredMember {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout: 300_000,
                session_timeout: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode_value(&gkey, &encode_group(&group)).unwrap(),
            Value::Group(group)
        );
    }

    /// The exact bytes the broker's hand encoder wrote before this crate existed: data already
    /// in `__consumer_offsets` must replay unchanged.
    #[test]
    fn values_are_byte_for_byte_what_earlier_builds_wrote() {
        let offset = OffsetValue {
            offset: 0x0102_0304_0506_0708,
            leader_epoch: 9,
            metadata: "md".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        let mut expected = vec![0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 0, 2, b'm', b'd'];
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(encode_offset(&offset), expected);

        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 2,
            protocol: None,
            leader: Some("l".into()),
            current_state_timestamp: 5,
            members: vec![StoredMember {
                member_id: "l".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/h".into(),
                rebalance_timeout: 7,
                session_timeout: 6,
                subscription: Bytes::from_static(b"s"),
                assignment: Bytes::new(),
            }],
        };
        let mut expected = vec![0, 3, 0, 8];
        expected.extend_from_slice(b"consumer");
        expected.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xff, 0, 1, b'l']);
        expected.extend_from_slice(&5i64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 1, b'l', 0xff, 0xff, 0, 1, b'c', 0, 2]);
        expected.extend_from_slice(b"/h");
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 6, 0, 0, 0, 1, b's', 0, 0, 0, 0]);
        assert_eq!(encode_group(&group), expected);
        let key = Key::Group { group: "g".into() };
        assert_eq!(encode_key(&key), [0, 2, 0, 1, b'g']);
        assert_eq!(decode_value(&key, &expected).unwrap(), Value::Group(group));
    }

    /// Kafka's older value versions (written by Kafka itself) still read.
    #[test]
    fn older_value_versions_read() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        };
        // OffsetCommitValue v1: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&42i64.to_be_bytes());
        v1.extend_from_slice(&[0, 0]);
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&8i64.to_be_bytes());
        assert_eq!(
            decode_value(&key, &v1).unwrap(),
            Value::Offset(OffsetValue {
                offset: 42,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 7,
            })
        );
        assert!(matches!(
            decode_key(&[0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 0]).unwrap(),
            Key::Offset { .. }
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &[][..],
            &[0],
            &[0, 9],
            &[0, 1, 0, 5, b'a'],
            &[0, 2, 0xff, 0xfe],
        ] {
            let _ = decode_key(bytes);
        }
        assert!(decode_key(&[0, 1, 0, 5, b'a']).is_err());
        let key = Key::Group { group: "g".into() };
        assert!(decode_value(&key, &[0, 3, 0, 1]).is_err());
        assert!(
            decode_value(
                &key,
                &[
                    0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f,
                    0xff, 0xff, 0xff
                ]
            )
            .is_err()
        );
    }
}
