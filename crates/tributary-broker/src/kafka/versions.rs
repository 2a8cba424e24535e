//! What this broker speaks: the APIs and versions ApiVersions advertises, and the answers to
//! versions outside them.
//!
//! Only what is implemented end to end is advertised. The ranges are what librdkafka, the Java
//! client and kafka-python need to turn their features on (record batch v2 needs Produce 3 and
//! Fetch 4, zstd Produce 7 and Fetch 10). Produce is advertised from v0, as Kafka 4 does, because
//! librdkafka only compresses when the broker's range starts there; versions 0-2 are answered
//! UNSUPPORTED_VERSION per partition.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};
use tributary_kafka::ErrorCode;

use super::Close;

/// Every API served on the Kafka protocol: key, lowest and highest version.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
];

/// The lowest Produce version served (record batch v2 with its producer ids).
const PRODUCE_MIN_SERVED: i16 = 3;

/// The range advertised for `api`, if it is served.
pub fn range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, ..)| *key == api)
        .map(|&(_, min, max)| (min, max))
}

/// Kafka's ApiVersions answer: every supported API.
pub(super) fn api_versions() -> ResponseKind {
    ResponseKind::ApiVersions(full_list(ErrorCode::None))
}

fn full_list(error: ErrorCode) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(-1)
}

/// The answer to a request whose version is not served, when Kafka answers one rather than
/// closing: ApiVersions above the range gets KIP-511's v0 answer (UNSUPPORTED_VERSION with the
/// full list, so the client retries at a version it shares), Produce 0-2 gets
/// UNSUPPORTED_VERSION for every partition. `Ok(None)`: the version is served.
pub(super) fn out_of_range(api: ApiKey, frame: &Bytes) -> Result<Option<Bytes>, Close> {
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let Some((min, max)) = range(api) else {
        return Err(Close::Refused(format!("{api:?} is not served")));
    };
    if (min..=max).contains(&version) {
        if api == ApiKey::Produce && version < PRODUCE_MIN_SERVED {
            return old_produce(frame, version, correlation_id).map(Some);
        }
        return Ok(None);
    }
    if api == ApiKey::ApiVersions && version > max {
        let response = ResponseKind::ApiVersions(full_list(ErrorCode::UnsupportedVersion));
        return super::connection::encode(api, 0, correlation_id, &response).map(Some);
    }
    Err(Close::Refused(format!(
        "{api:?} v{version} is not served (versions {min}-{max})"
    )))
}

/// UNSUPPORTED_VERSION for every partition of a Produce v0-2 request (whose schema the codec
/// no longer has): read by hand, every length checked against what is left.
fn old_produce(frame: &Bytes, version: i16, correlation_id: i32) -> Result<Bytes, Close> {
    let bad = || Close::Refused(format!("undecodable Produce v{version} request"));
    let mut buf = &frame[8..];
    let string = |buf: &mut &[u8]| -> Option<Vec<u8>> {
        if buf.remaining() < 2 {
            return None;
        }
        let len = buf.get_i16();
        if len < 0 {
            return Some(Vec::new());
        }
        let len = len as usize;
        (buf.remaining() >= len).then(|| {
            let s = buf[..len].to_vec();
            buf.advance(len);
            s
        })
    };
    let count = |buf: &mut &[u8], least: usize| -> Option<usize> {
        if buf.remaining() < 4 {
            return None;
        }
        let n = usize::try_from(buf.get_i32()).ok()?;
        // Each element takes at least `least` bytes: a count beyond that is a lie.
        (n.checked_mul(least)? <= buf.remaining()).then_some(n)
    };
    string(&mut buf).ok_or_else(bad)?; // client id
    if buf.remaining() < 6 {
        return Err(bad());
    }
    buf.advance(6); // acks, timeout
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id);
    let topics = count(&mut buf, 6).ok_or_else(bad)?;
    out.put_i32(topics as i32);
    for _ in 0..topics {
        let name = string(&mut buf).ok_or_else(bad)?;
        out.put_i16(name.len() as i16);
        out.put_slice(&name);
        let partitions = count(&mut buf, 8).ok_or_else(bad)?;
        out.put_i32(partitions as i32);
        for _ in 0..partitions {
            if buf.remaining() < 8 {
                return Err(bad());
            }
            let index = buf.get_i32();
            let len = buf.get_i32();
            if len > 0 {
                let len = len as usize;
                if buf.remaining() < len {
                    return Err(bad());
                }
                buf.advance(len);
            }
            out.put_i32(index);
            out.put_i16(ErrorCode::UnsupportedVersion.code());
            out.put_i64(-1); // base offset
            if version >= 2 {
                out.put_i64(-1); // log append time
            }
        }
    }
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

/// Asserts that `answer(version)` encodes at every version advertised for `api` (the codec
/// refuses a field set at a version that lacks it).
#[cfg(test)]
pub(super) fn assert_encodes(api: ApiKey, answer: impl Fn(i16) -> ResponseKind) {
    let (min, max) = range(api).unwrap_or_else(|| panic!("{api:?} is not advertised"));
    for version in min..=max {
        let mut out = BytesMut::new();
        if let Err(err) = answer(version).encode(&mut out, version) {
            panic!("{api:?} v{version} does not encode: {err}");
        }
        assert!(!out.is_empty(), "{api:?} v{version} encoded nothing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_what_the_codec_can_decode() {
        for &(key, min, max) in SUPPORTED {
            let codec = key.valid_versions();
            assert!(
                max <= codec.max,
                "{key:?} v{max} beyond the codec's {codec}"
            );
            let served_min = if key == ApiKey::Produce {
                PRODUCE_MIN_SERVED
            } else {
                min
            };
            assert!(
                served_min >= codec.min,
                "{key:?} v{served_min} below the codec's {codec}"
            );
        }
    }

    #[test]
    fn produce_v2_is_answered_unsupported_per_partition() {
        let mut frame = BytesMut::new();
        frame.put_i16(0); // Produce
        frame.put_i16(2);
        frame.put_i32(77); // correlation id
        frame.put_i16(-1); // null client id
        frame.put_i16(1); // acks
        frame.put_i32(1000);
        frame.put_i32(1); // one topic
        frame.put_i16(1);
        frame.put_slice(b"t");
        frame.put_i32(1); // one partition
        frame.put_i32(3);
        frame.put_i32(2);
        frame.put_slice(b"xx");
        let answer = out_of_range(ApiKey::Produce, &frame.freeze())
            .unwrap()
            .unwrap();
        let mut a = &answer[..];
        assert_eq!(a.get_i32() as usize, answer.len() - 4);
        assert_eq!(a.get_i32(), 77);
        assert_eq!(a.get_i32(), 1);
        assert_eq!(a.get_i16(), 1);
        assert_eq!(a.get_u8(), b't');
        assert_eq!(a.get_i32(), 1);
        assert_eq!(a.get_i32(), 3);
        assert_eq!(a.get_i16(), 35);
    }

    #[test]
    fn lying_counts_are_refused_before_allocation() {
        let mut frame = BytesMut::new();
        frame.put_i16(0);
        frame.put_i16(1);
        frame.put_i32(1);
        frame.put_i16(-1);
        frame.put_i16(1);
        frame.put_i32(1000);
        frame.put_i32(i32::MAX); // topics
        assert!(out_of_range(ApiKey::Produce, &frame.freeze()).is_err());
    }

    #[test]
    fn api_versions_above_the_range_gets_the_v0_fallback() {
        let mut frame = BytesMut::new();
        frame.put_i16(18);
        frame.put_i16(127);
        frame.put_i32(5);
        let answer = out_of_range(ApiKey::ApiVersions, &frame.freeze())
            .unwrap()
            .unwrap();
        let mut a = &answer[4..];
        assert_eq!(a.get_i32(), 5);
        assert_eq!(a.get_i16(), 35);
        assert_eq!(a.get_i32() as usize, SUPPORTED.len());
    }
}
