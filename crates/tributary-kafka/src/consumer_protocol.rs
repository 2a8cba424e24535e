//! Kafka's ConsumerProtocol: the bytes a consumer puts in JoinGroup's protocol metadata
//! ([`Subscription`]) and the group leader puts in SyncGroup's member assignments
//! ([`Assignment`]), byte for byte as Kafka's Java client writes them.
//!
//! Both messages are Kafka's `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`
//! (versions 0 to 3, never flexible): an int16 version, then the fields in schema order with
//! int16-length strings, int32-length arrays and bytes, and length -1 for null. Encoding goes
//! through the `kafka-protocol` crate's generated messages (after our own length checks, which
//! name the field); decoding is ours, for Kafka's forward-compatibility rule and errors that
//! say which field at which byte is wrong.
//!
//! Subscription fields by version: `Topics` and `UserData` (v0+), `OwnedPartitions` (v1+),
//! `GenerationId` (v2+), `RackId` (v3+). The assignment has the same fields in every version:
//! `AssignedPartitions` and `UserData`.
//!
//! Forward compatibility follows Kafka's rule: a version above [`VERSION_MAX`] is read as
//! [`VERSION_MAX`] (new versions may only append fields), and bytes after the known fields are
//! ignored, as Kafka's reader does.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    consumer_protocol_assignment, consumer_protocol_subscription,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::TopicPartition;

/// The protocol type of consumer groups in JoinGroup (`ProtocolType`).
pub const PROTOCOL_TYPE: &str = "consumer";

/// The highest version of both messages that this module writes and understands (Kafka 3.5+).
pub const VERSION_MAX: i16 = 3;

/// The longest string Kafka's non-flexible encoding can carry (an int16 length).
const STRING_BYTES_MAX: usize = i16::MAX as usize;

/// The longest array or bytes field the encoding can carry (an int32 length).
const ARRAY_LEN_MAX: usize = i32::MAX as usize;

/// What can go wrong encoding or decoding the consumer protocol. Field names are Kafka's schema
/// names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerProtocolError {
    /// The buffer ends before `field` does.
    #[error("consumer protocol: {field} at byte {offset} needs {needed} bytes, {remaining} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where the field starts in the buffer.
        offset: usize,
        /// Bytes the field needs (for arrays, at least one minimal element per entry).
        needed: usize,
        /// Bytes left in the buffer.
        remaining: usize,
    },
    /// A negative version (on decode) or one outside `0..=VERSION_MAX` (on encode).
    #[error("consumer protocol: unsupported {message} version {version}")]
    UnsupportedVersion {
        /// `subscription` or `assignment`.
        message: &'static str,
        /// The version.
        version: i16,
    },
    /// A field that is not nullable has a negative length.
    #[error("consumer protocol: non-nullable {field} at byte {offset} has length {length}")]
    NullField {
        /// The field.
        field: &'static str,
        /// Where its length starts.
        offset: usize,
        /// The negative length read.
        length: i32,
    },
    /// A string is not UTF-8.
    #[error("consumer protocol: {field} at byte {offset} is not UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
        /// Where the string's bytes start.
        offset: usize,
    },
    /// A value is too long for its length prefix (strings: 32767 bytes; arrays and bytes:
    /// 2^31 - 1 entries).
    #[error("consumer protocol: {field} has length {length}, the most is {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length (bytes for strings and bytes, entries for arrays).
        length: usize,
        /// The most its prefix can say.
        max: usize,
    },
    /// The `kafka-protocol` encoder refused the message (after our own checks passed).
    #[error("consumer protocol: encoding the {message}: {reason}")]
    Encode {
        /// `subscription` or `assignment`.
        message: &'static str,
        /// The encoder's reason.
        reason: String,
    },
}

/// A member's subscription, sent as its protocol metadata in JoinGroup (Kafka's
/// `ConsumerPartitionAssignor.Subscription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Subscribed topics. Encoding writes them sorted, as Kafka does.
    pub topics: Vec<String>,
    /// The assignor's data (`None`: null).
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (v1+; cooperative rebalancing). Encoding writes them
    /// sorted by topic then partition, grouped by topic.
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which the member got `owned_partitions` (v2+; -1: none).
    pub generation_id: i32,
    /// The member's `client.rack` (v3+). An empty rack id decodes as `None`, as in Kafka.
    pub rack_id: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: -1,
            rack_id: None,
        }
    }
}

impl Subscription {
    /// A subscription to `topics` with no user data, no owned partitions, generation -1 and no
    /// rack.
    pub fn new<T: Into<String>>(topics: impl IntoIterator<Item = T>) -> Self {
        Self {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The bytes at [`VERSION_MAX`], as Kafka's client sends them.
    pub fn encode(&self) -> Result<Bytes, ConsumerProtocolError> {
        self.encode_version(VERSION_MAX)
    }

    /// The bytes at `version` (0 to [`VERSION_MAX`]). Fields the version lacks are left out, as
    /// Kafka does for these ignorable fields.
    pub fn encode_version(&self, version: i16) -> Result<Bytes, ConsumerProtocolError> {
        check_encode_version("subscription", version)?;
        let mut topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        topics.sort_unstable();
        let mut owned: Vec<&TopicPartition> = self.owned_partitions.iter().collect();
        owned.sort_unstable();

        let owned = group_by_topic(owned.into_iter());
        check_array_len("Topics", topics.len())?;
        for topic in &topics {
            check_string("Topics", topic)?;
        }
        check_bytes("UserData", self.user_data.as_deref())?;
        if version >= 1 {
            check_topic_partitions("OwnedPartitions", &owned)?;
        }
        if version >= 3 {
            check_string("RackId", self.rack_id.as_deref().unwrap_or_default())?;
        }
        let message = ConsumerProtocolSubscription::default()
            .with_topics(topics.into_iter().map(str_bytes).collect())
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(
                owned
                    .into_iter()
                    .map(|(topic, partitions)| {
                        consumer_protocol_subscription::TopicPartition::default()
                            .with_topic(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_generation_id(self.generation_id)
            .with_rack_id(self.rack_id.as_deref().map(str_bytes));
        encode_message("subscription", version, &message)
    }

    /// Reads a subscription of any version >= 0 (versions above [`VERSION_MAX`] as
    /// [`VERSION_MAX`]; trailing bytes are ignored). Fields the version lacks get their
    /// defaults.
    pub fn decode(buf: &[u8]) -> Result<Self, ConsumerProtocolError> {
        let mut r = Reader::new(buf);
        let version = r.version("subscription")?;
        let topics_len = r.array_len("Topics", 2)?;
        let mut topics = Vec::with_capacity(topics_len);
        for _ in 0..topics_len {
            topics.push(r.string("Topics")?);
        }
        let user_data = r.nullable_bytes("UserData")?;
        let owned_partitions = if version >= 1 {
            r.topic_partitions("OwnedPartitions")?
        } else {
            Vec::new()
        };
        let generation_id = if version >= 2 {
            r.i32("GenerationId")?
        } else {
            -1
        };
        let rack_id = if version >= 3 {
            r.nullable_string("RackId")?.filter(|rack| !rack.is_empty())
        } else {
            None
        };
        Ok(Self {
            topics,
            user_data,
            owned_partitions,
            generation_id,
            rack_id,
        })
    }
}

/// A member's assignment, sent by the group leader in SyncGroup (Kafka's
/// `ConsumerPartitionAssignor.Assignment`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Assigned partitions. Encoding groups them by topic in order of each topic's first
    /// appearance, keeping partition order within a topic, as Kafka does.
    pub partitions: Vec<TopicPartition>,
    /// The assignor's data (`None`: null).
    pub user_data: Option<Bytes>,
}

impl Assignment {
    /// An assignment of `partitions` with no user data.
    pub fn new(partitions: Vec<TopicPartition>) -> Self {
        Self {
            partitions,
            user_data: None,
        }
    }

    /// The bytes at [`VERSION_MAX`], as Kafka's client sends them.
    pub fn encode(&self) -> Result<Bytes, ConsumerProtocolError> {
        self.encode_version(VERSION_MAX)
    }

    /// The bytes at `version` (0 to [`VERSION_MAX`]; all versions have the same fields).
    pub fn encode_version(&self, version: i16) -> Result<Bytes, ConsumerProtocolError> {
        check_encode_version("assignment", version)?;
        let groups = group_by_topic(self.partitions.iter());
        check_topic_partitions("AssignedPartitions", &groups)?;
        check_bytes("UserData", self.user_data.as_deref())?;
        let message = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                groups
                    .into_iter()
                    .map(|(topic, partitions)| {
                        consumer_protocol_assignment::TopicPartition::default()
                            .with_topic(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_user_data(self.user_data.clone());
        encode_message("assignment", version, &message)
    }

    /// Reads an assignment of any version >= 0 (versions above [`VERSION_MAX`] as
    /// [`VERSION_MAX`]; trailing bytes are ignored).
    pub fn decode(buf: &[u8]) -> Result<Self, ConsumerProtocolError> {
        let mut r = Reader::new(buf);
        r.version("assignment")?;
        let partitions = r.topic_partitions("AssignedPartitions")?;
        let user_data = r.nullable_bytes("UserData")?;
        Ok(Self {
            partitions,
            user_data,
        })
    }
}

/// The version header of either message (Kafka's `ConsumerProtocol.deserializeVersion`), as
/// written: it may be above [`VERSION_MAX`] or negative.
pub fn decode_version(buf: &[u8]) -> Result<i16, ConsumerProtocolError> {
    Reader::new(buf).i16("Version")
}

fn check_encode_version(message: &'static str, version: i16) -> Result<(), ConsumerProtocolError> {
    if (0..=VERSION_MAX).contains(&version) {
        Ok(())
    } else {
        Err(ConsumerProtocolError::UnsupportedVersion { message, version })
    }
}

/// Groups partitions by topic: topics in order of first appearance, partitions in input order.
fn group_by_topic<'a>(
    partitions: impl Iterator<Item = &'a TopicPartition>,
) -> Vec<(&'a str, Vec<i32>)> {
    let mut groups: Vec<(&str, Vec<i32>)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for tp in partitions {
        let i = *index.entry(tp.topic.as_str()).or_insert_with(|| {
            groups.push((tp.topic.as_str(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(tp.partition);
    }
    groups
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// The version header, then `message` at `version` by `kafka-protocol`.
fn encode_message(
    message_name: &'static str,
    version: i16,
    message: &impl Encodable,
) -> Result<Bytes, ConsumerProtocolError> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| ConsumerProtocolError::Encode {
            message: message_name,
            reason: e.to_string(),
        })?;
    Ok(buf.freeze())
}

fn check_array_len(field: &'static str, len: usize) -> Result<(), ConsumerProtocolError> {
    if len > ARRAY_LEN_MAX {
        return Err(ConsumerProtocolError::TooLong {
            field,
            length: len,
            max: ARRAY_LEN_MAX,
        });
    }
    Ok(())
}

fn check_string(field: &'static str, s: &str) -> Result<(), ConsumerProtocolError> {
    if s.len() > STRING_BYTES_MAX {
        return Err(ConsumerProtocolError::TooLong {
            field,
            length: s.len(),
            max: STRING_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_bytes(field: &'static str, b: Option<&[u8]>) -> Result<(), ConsumerProtocolError> {
    check_array_len(field, b.map_or(0, <[u8]>::len))
}

/// `[]TopicPartition` with `Topic: string` and `Partitions: []int32`.
fn check_topic_partitions(
    field: &'static str,
    groups: &[(&str, Vec<i32>)],
) -> Result<(), ConsumerProtocolError> {
    check_array_len(field, groups.len())?;
    for (topic, partitions) in groups {
        check_string(field, topic)?;
        check_array_len(field, partitions.len())?;
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], ConsumerProtocolError> {
        if n > self.remaining() {
            return Err(ConsumerProtocolError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, ConsumerProtocolError> {
        let b = self.take(field, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, ConsumerProtocolError> {
        let b = self.take(field, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The version header, capped at [`VERSION_MAX`] (Kafka's forward-compatibility rule).
    fn version(&mut self, message: &'static str) -> Result<i16, ConsumerProtocolError> {
        let version = self.i16("Version")?;
        if version < 0 {
            return Err(ConsumerProtocolError::UnsupportedVersion { message, version });
        }
        Ok(version.min(VERSION_MAX))
    }

    /// A non-nullable array's length, checked against the bytes left (each element takes at
    /// least `element_bytes_min`) so garbage cannot make us allocate.
    fn array_len(
        &mut self,
        field: &'static str,
        element_bytes_min: usize,
    ) -> Result<usize, ConsumerProtocolError> {
        let offset = self.pos;
        let length = self.i32(field)?;
        let len = usize::try_from(length).map_err(|_| ConsumerProtocolError::NullField {
            field,
            offset,
            length,
        })?;
        let needed = len.saturating_mul(element_bytes_min);
        if needed > self.remaining() {
            return Err(ConsumerProtocolError::Truncated {
                field,
                offset: self.pos,
                needed,
                remaining: self.remaining(),
            });
        }
        Ok(len)
    }

    fn utf8(&mut self, field: &'static str, len: usize) -> Result<String, ConsumerProtocolError> {
        let offset = self.pos;
        let bytes = self.take(field, len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ConsumerProtocolError::InvalidUtf8 { field, offset })
    }

    fn string(&mut self, field: &'static str) -> Result<String, ConsumerProtocolError> {
        let offset = self.pos;
        let length = self.i16(field)?;
        let len = usize::try_from(length).map_err(|_| ConsumerProtocolError::NullField {
            field,
            offset,
            length: length.into(),
        })?;
        self.utf8(field, len)
    }

    /// Any negative length is null, as in Kafka's generated readers.
    fn nullable_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, ConsumerProtocolError> {
        let length = self.i16(field)?;
        match usize::try_from(length) {
            Ok(len) => self.utf8(field, len).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Any negative length is null, as in Kafka's generated readers.
    fn nullable_bytes(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Bytes>, ConsumerProtocolError> {
        let length = self.i32(field)?;
        match usize::try_from(length) {
            Ok(len) => Ok(Some(Bytes::copy_from_slice(self.take(field, len)?))),
            Err(_) => Ok(None),
        }
    }

    /// `[]TopicPartition` with `Topic: string` and `Partitions: []int32`, flattened in wire
    /// order.
    fn topic_partitions(
        &mut self,
        field: &'static str,
    ) -> Result<Vec<TopicPartition>, ConsumerProtocolError> {
        // An entry is at least a 2-byte topic length and a 4-byte array length.
        let topics_len = self.array_len(field, 6)?;
        let mut out = Vec::new();
        for _ in 0..topics_len {
            let topic = self.string(field)?;
            let partitions_len = self.array_len(field, 4)?;
            out.reserve(partitions_len);
            for _ in 0..partitions_len {
                out.push(TopicPartition::new(topic.clone(), self.i32(field)?));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    /// Kafka's layout built by hand: int16 string, int32 array/bytes, big-endian.
    #[derive(Default)]
    struct Wire(Vec<u8>);

    impl Wire {
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn str(self, s: &str) -> Self {
            let mut b = self.i16(s.len() as i16);
            b.0.extend_from_slice(s.as_bytes());
            b
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
    }

    fn sample_subscription() -> Subscription {
        Subscription {
            topics: vec!["orders".into(), "clicks".into()],
            user_data: Some(Bytes::from_static(&[0xca, 0xfe])),
            owned_partitions: vec![tp("orders", 2), tp("clicks", 1), tp("orders", 0)],
            generation_id: 7,
            rack_id: Some("rack-a".into()),
        }
    }

    #[test]
    fn subscription_v3_matches_kafka_layout() {
        let expected = Wire::default()
            .i16(3)
            .i32(2)
            .str("clicks")
            .str("orders")
            .i32(2)
            .raw(&[0xca, 0xfe])
            .i32(2)
            .str("clicks")
            .i32(1)
            .i32(1)
            .str("orders")
            .i32(2)
            .i32(0)
            .i32(2)
            .i32(7)
            .str("rack-a")
            .0;
        let encoded = sample_subscription().encode().unwrap();
        assert_eq!(&encoded[..], &expected[..]);

        let decoded = Subscription::decode(&expected).unwrap();
        assert_eq!(decoded.topics, ["clicks", "orders"]);
        assert_eq!(decoded.user_data.as_deref(), Some(&[0xca, 0xfe][..]));
        assert_eq!(
            decoded.owned_partitions,
            [tp("clicks", 1), tp("orders", 0), tp("orders", 2)]
        );
        assert_eq!(decoded.generation_id, 7);
        assert_eq!(decoded.rack_id.as_deref(), Some("rack-a"));
    }

    #[test]
    fn subscription_each_version_writes_only_its_fields() {
        let s = sample_subscription();
        let head = Wire::default()
            .i32(2)
            .str("clicks")
            .str("orders")
            .i32(2)
            .raw(&[0xca, 0xfe])
            .0;
        let owned = Wire::default()
            .i32(2)
            .str("clicks")
            .i32(1)
            .i32(1)
            .str("orders")
            .i32(2)
            .i32(0)
            .i32(2)
            .0;
        let v0 = Wire::default().i16(0).raw(&head).0;
        let v1 = Wire::default().i16(1).raw(&head).raw(&owned).0;
        let v2 = Wire::default().i16(2).raw(&head).raw(&owned).i32(7).0;
        assert_eq!(&s.encode_version(0).unwrap()[..], &v0[..]);
        assert_eq!(&s.encode_version(1).unwrap()[..], &v1[..]);
        assert_eq!(&s.encode_version(2).unwrap()[..], &v2[..]);

        let d0 = Subscription::decode(&v0).unwrap();
        assert!(d0.owned_partitions.is_empty());
        assert_eq!(d0.generation_id, -1);
        assert_eq!(d0.rack_id, None);
        let d1 = Subscription::decode(&v1).unwrap();
        assert_eq!(d1.owned_partitions.len(), 3);
        assert_eq!(d1.generation_id, -1);
        let d2 = Subscription::decode(&v2).unwrap();
        assert_eq!(d2.generation_id, 7);
        assert_eq!(d2.rack_id, None);
    }

    #[test]
    fn subscription_nulls_and_empties() {
        // A fresh member: one topic, null user data, nothing owned, generation -1, no rack.
        let s = Subscription::new(["t"]);
        let expected = Wire::default()
            .i16(3)
            .i32(1)
            .str("t")
            .i32(-1)
            .i32(0)
            .i32(-1)
            .i16(-1)
            .0;
        assert_eq!(&s.encode().unwrap()[..], &expected[..]);
        assert_eq!(Subscription::decode(&expected).unwrap(), s);

        // Empty user data is not null; an empty rack id reads as none (Kafka does the same).
        let s = Subscription {
            user_data: Some(Bytes::new()),
            rack_id: Some(String::new()),
            ..Subscription::new(["t"])
        };
        let bytes = s.encode().unwrap();
        assert_eq!(&bytes[9..13], &0i32.to_be_bytes());
        let decoded = Subscription::decode(&bytes).unwrap();
        assert_eq!(decoded.user_data, Some(Bytes::new()));
        assert_eq!(decoded.rack_id, None);

        // Any negative length of a nullable field is null, as in Kafka's readers.
        let odd_nulls = Wire::default()
            .i16(3)
            .i32(0)
            .i32(-7)
            .i32(0)
            .i32(5)
            .i16(-2)
            .0;
        let decoded = Subscription::decode(&odd_nulls).unwrap();
        assert_eq!(decoded.user_data, None);
        assert_eq!(decoded.rack_id, None);
        assert_eq!(decoded.generation_id, 5);
    }

    #[test]
    fn subscription_from_newer_version_reads_known_fields() {
        let v3 = sample_subscription().encode().unwrap();
        let mut v9 = v3.to_vec();
        v9[..2].copy_from_slice(&9i16.to_be_bytes());
        v9.extend_from_slice(b"fields from the future");
        assert_eq!(
            Subscription::decode(&v9).unwrap(),
            Subscription::decode(&v3).unwrap()
        );
        assert_eq!(decode_version(&v9).unwrap(), 9);
    }

    #[test]
    fn assignment_matches_kafka_layout() {
        let a = Assignment {
            partitions: vec![tp("t1", 0), tp("t0", 1), tp("t1", 2)],
            user_data: None,
        };
        // Grouped by topic in order of first appearance, partition order kept.
        let expected = Wire::default()
            .i16(3)
            .i32(2)
            .str("t1")
            .i32(2)
            .i32(0)
            .i32(2)
            .str("t0")
            .i32(1)
            .i32(1)
            .i32(-1)
            .0;
        assert_eq!(&a.encode().unwrap()[..], &expected[..]);
        assert_eq!(
            Assignment::decode(&expected).unwrap().partitions,
            [tp("t1", 0), tp("t1", 2), tp("t0", 1)]
        );

        let v0 = Assignment {
            partitions: vec![],
            user_data: Some(Bytes::from_static(b"x")),
        }
        .encode_version(0)
        .unwrap();
        assert_eq!(&v0[..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'x']);
    }

    #[test]
    fn assignment_from_newer_version_reads_known_fields() {
        let a = Assignment::new(vec![tp("t", 3)]);
        let mut bytes = a.encode().unwrap().to_vec();
        bytes[..2].copy_from_slice(&i16::MAX.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Assignment::decode(&bytes).unwrap(), a);
    }

    #[test]
    fn precise_errors() {
        use ConsumerProtocolError as E;
        assert_eq!(
            Subscription::decode(&[]),
            Err(E::Truncated {
                field: "Version",
                offset: 0,
                needed: 2,
                remaining: 0
            })
        );
        assert_eq!(
            Subscription::decode(&[0xff, 0xff]),
            Err(E::UnsupportedVersion {
                message: "subscription",
                version: -1
            })
        );
        assert_eq!(
            Assignment::decode(&Wire::default().i16(0).i32(-1).0),
            Err(E::NullField {
                field: "AssignedPartitions",
                offset: 2,
                length: -1
            })
        );
        // An array claiming more entries than the bytes left cannot hold.
        assert_eq!(
            Subscription::decode(&Wire::default().i16(0).i32(i32::MAX).0),
            Err(E::Truncated {
                field: "Topics",
                offset: 6,
                needed: 2 * i32::MAX as usize,
                remaining: 0
            })
        );
        assert_eq!(
            Subscription::decode(&Wire::default().i16(0).i32(1).str("t").0),
            Err(E::Truncated {
                field: "UserData",
                offset: 9,
                needed: 4,
                remaining: 0
            })
        );
        assert_eq!(
            Subscription::decode(&Wire::default().i16(0).i32(1).i16(-1).0),
            Err(E::NullField {
                field: "Topics",
                offset: 6,
                length: -1
            })
        );
        assert_eq!(
            Subscription::decode(&Wire::default().i16(0).i32(1).i16(1).raw(&[0xff]).0),
            Err(E::InvalidUtf8 {
                field: "Topics",
                offset: 8
            })
        );
        assert!(matches!(
            Subscription::new(["x".repeat(40_000)]).encode(),
            Err(E::TooLong {
                field: "Topics",
                length: 40_000,
                max: 32_767
            })
        ));
        assert!(matches!(
            Subscription::default().encode_version(4),
            Err(E::UnsupportedVersion { version: 4, .. })
        ));
        assert!(matches!(
            Assignment::default().encode_version(-1),
            Err(E::UnsupportedVersion { version: -1, .. })
        ));
    }

    fn topic() -> impl Strategy<Value = String> {
        // Short names collide often (duplicates and grouping), plus the odd non-ASCII one.
        prop_oneof![4 => "[a-c]{1,2}", 1 => "\\PC{0,6}"]
    }

    fn topic_partition() -> impl Strategy<Value = TopicPartition> {
        (topic(), any::<i32>()).prop_map(|(t, p)| TopicPartition::new(t, p))
    }

    fn user_data() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from))
    }

    fn subscription() -> impl Strategy<Value = Subscription> {
        (
            proptest::collection::vec(topic(), 0..5),
            user_data(),
            proptest::collection::vec(topic_partition(), 0..8),
            any::<i32>(),
            proptest::option::of("\\PC{0,8}"),
        )
            .prop_map(
                |(topics, user_data, owned_partitions, generation_id, rack_id)| Subscription {
                    topics,
                    user_data,
                    owned_partitions,
                    generation_id,
                    rack_id,
                },
            )
    }

    fn assignment() -> impl Strategy<Value = Assignment> {
        (
            proptest::collection::vec(topic_partition(), 0..10),
            user_data(),
        )
            .prop_map(|(partitions, user_data)| Assignment {
                partitions,
                user_data,
            })
    }

    /// What a subscription reads back as after encoding at `version`.
    fn expected_subscription(s: &Subscription, version: i16) -> Subscription {
        let mut topics = s.topics.clone();
        topics.sort();
        let mut owned = s.owned_partitions.clone();
        owned.sort();
        Subscription {
            topics,
            user_data: s.user_data.clone(),
            owned_partitions: if version >= 1 { owned } else { Vec::new() },
            generation_id: if version >= 2 { s.generation_id } else { -1 },
            rack_id: if version >= 3 {
                s.rack_id.clone().filter(|r| !r.is_empty())
            } else {
                None
            },
        }
    }

    /// The assignment's partitions grouped by topic in order of first appearance.
    fn grouped(partitions: &[TopicPartition]) -> Vec<TopicPartition> {
        group_by_topic(partitions.iter())
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| TopicPartition::new(t, p)))
            .collect()
    }

    proptest! {
        #[test]
        fn subscription_round_trips(s in subscription(), version in 0i16..=VERSION_MAX) {
            let bytes = s.encode_version(version).unwrap();
            prop_assert_eq!(decode_version(&bytes).unwrap(), version);
            prop_assert_eq!(Subscription::decode(&bytes).unwrap(), expected_subscription(&s, version));
        }

        #[test]
        fn assignment_round_trips(a in assignment(), version in 0i16..=VERSION_MAX) {
            let bytes = a.encode_version(version).unwrap();
            let decoded = Assignment::decode(&bytes).unwrap();
            prop_assert_eq!(decoded.partitions, grouped(&a.partitions));
            prop_assert_eq!(decoded.user_data, a.user_data);
        }

        #[test]
        fn newer_versions_read_as_the_newest_known(
            s in subscription(),
            a in assignment(),
            version in (VERSION_MAX + 1)..=i16::MAX,
            tail in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut sb = s.encode().unwrap().to_vec();
            sb[..2].copy_from_slice(&version.to_be_bytes());
            sb.extend_from_slice(&tail);
            prop_assert_eq!(Subscription::decode(&sb).unwrap(), expected_subscription(&s, VERSION_MAX));
            let mut ab = a.encode().unwrap().to_vec();
            ab[..2].copy_from_slice(&version.to_be_bytes());
            ab.extend_from_slice(&tail);
            prop_assert_eq!(Assignment::decode(&ab).unwrap().partitions, grouped(&a.partitions));
        }

        /// Every field is required up to the last byte, so every strict prefix is truncated.
        #[test]
        fn every_strict_prefix_is_truncated(
            s in subscription(),
            a in assignment(),
            version in 0i16..=VERSION_MAX,
        ) {
            let sb = s.encode_version(version).unwrap();
            for end in 0..sb.len() {
                let err = Subscription::decode(&sb[..end]).unwrap_err();
                prop_assert!(matches!(err, ConsumerProtocolError::Truncated { .. }), "{err}");
            }
            let ab = a.encode_version(version).unwrap();
            for end in 0..ab.len() {
                let err = Assignment::decode(&ab[..end]).unwrap_err();
                prop_assert!(matches!(err, ConsumerProtocolError::Truncated { .. }), "{err}");
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Subscription::decode(&bytes);
            let _ = Assignment::decode(&bytes);
            let _ = decode_version(&bytes);
        }

        /// Garbage behind a plausible header reaches the deeper fields.
        #[test]
        fn random_bodies_never_panic(
            version in -1i16..6,
            body in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(0xff), Just(1), Just(2), any::<u8>()],
                0..96,
            ),
        ) {
            let mut bytes = version.to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            let _ = Subscription::decode(&bytes);
            let _ = Assignment::decode(&bytes);
        }

        #[test]
        fn mutated_encodings_never_panic(
            s in subscription(),
            a in assignment(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            for valid in [s.encode().unwrap(), a.encode().unwrap()] {
                let mut bytes = valid.to_vec();
                for (at, value) in &flips {
                    let i = at.index(bytes.len());
                    bytes[i] = *value;
                }
                let _ = Subscription::decode(&bytes);
                let _ = Assignment::decode(&bytes);
            }
        }
    }
}
