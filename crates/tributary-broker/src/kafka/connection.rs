//! One Kafka connection: size-prefixed frames in, size-prefixed answers out, in order.
//!
//! Requests are read, handled and answered one at a time, as Kafka's brokers do (the channel
//! is muted until the answer is sent): a client may pipeline, and the kernel's socket buffer
//! holds what it sent ahead. Produce with acks=0 is handled but not answered.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Close, MAX_REQUEST_BYTES, Session, versions};

/// Bytes read from the socket at a time while a frame is assembled (a frame's buffer grows as
/// its bytes arrive, so an announced size alone allocates nothing).
const READ_CHUNK: usize = 64 << 10;
/// The smallest request: API key, version, correlation id.
const MIN_REQUEST_BYTES: usize = 8;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The client closed the connection between requests.
    #[error("closed")]
    Closed,
    #[error("frame of {0} bytes is outside 8..={MAX_REQUEST_BYTES} (socket.request.max.bytes)")]
    Size(i64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one size-prefixed frame.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Bytes, FrameError> {
    let mut size = [0u8; 4];
    match reader.read(&mut size[..1]).await? {
        0 => return Err(FrameError::Closed),
        _ => reader.read_exact(&mut size[1..]).await?,
    };
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size).map_err(|_| FrameError::Size(size.into()))?;
    if !(MIN_REQUEST_BYTES..=MAX_REQUEST_BYTES).contains(&len) {
        return Err(FrameError::Size(size.into()));
    }
    let mut frame = BytesMut::with_capacity(len.min(READ_CHUNK));
    while frame.len() < len {
        if frame.len() == frame.capacity() {
            // Double, up to what is still missing.
            frame.reserve((len - frame.len()).min(frame.len().max(READ_CHUNK)));
        }
        let missing = (len - frame.len()) as u64;
        if (&mut *reader).take(missing).read_buf(&mut frame).await? == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(frame.freeze())
}

/// Serves one Kafka connection until the client closes it, a request is refused, or `stop`
/// resolves.
pub async fn serve<S>(stream: S, session: Session, stop: impl std::future::Future<Output = ()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // No read buffer: a frame's bytes go from the socket straight into the frame (record
    // batches are not copied again), at the cost of one more read call per request.
    let (mut reader, mut writer) = tokio::io::split(stream);
    let peer = session.peer;
    let serve = async {
        loop {
            let frame = match read_frame(&mut reader).await {
                Ok(frame) => frame,
                Err(FrameError::Closed) => return,
                Err(err) => {
                    tracing::info!(%peer, error = %err, "closing Kafka connection: unreadable frame");
                    return;
                }
            };
            match handle(&session, frame).await {
                Ok(Some(mut chunks)) => {
                    if let Err(err) = write_chunks(&mut writer, &mut chunks).await {
                        tracing::debug!(%peer, error = %err, "Kafka connection lost while answering");
                        return;
                    }
                }
                Ok(None) => {}
                Err(Close::NotReady(_)) => {
                    tracing::debug!(%peer, "closing Kafka connection: broker not ready yet");
                    return;
                }
                Err(err) => {
                    tracing::info!(%peer, error = %err, "closing Kafka connection");
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = stop => {}
    }
    let _ = writer.shutdown().await;
}

/// A frame, decoded.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Answered without being served (a version outside the range that Kafka answers).
    Answer(Bytes),
    /// A request to serve.
    Request {
        api: ApiKey,
        correlation_id: i32,
        header: RequestHeader,
        request: Box<RequestKind>,
    },
}

/// Decodes one frame (at least [`MIN_REQUEST_BYTES`] long, as `read_frame` ensures).
pub(crate) fn decode(frame: Bytes) -> Result<Decoded, Close> {
    if frame.len() < MIN_REQUEST_BYTES {
        return Err(Close::Refused(format!("a frame of {} bytes", frame.len())));
    }
    let key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let api =
        ApiKey::try_from(key).map_err(|()| Close::Refused(format!("unknown API key {key}")))?;
    if let Some(answer) = versions::out_of_range(api, &frame)? {
        return Ok(Decoded::Answer(answer));
    }
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api.request_header_version(version))
        .map_err(|e| Close::Refused(format!("undecodable {api:?} v{version} header: {e}")))?;
    let request = RequestKind::decode(api, &mut body, version)
        .map_err(|e| Close::Refused(format!("undecodable {api:?} v{version} request: {e}")))?;
    Ok(Decoded::Request {
        api,
        correlation_id,
        header,
        request: Box::new(request),
    })
}

/// Writes `chunks` in order, several per call.
async fn write_chunks<W: AsyncWrite + Unpin>(
    writer: &mut W,
    chunks: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    const AT_ONCE: usize = 64;
    // An empty chunk (a spliced answer ending in records) would make a write of nothing.
    chunks.retain(|c| !c.is_empty());
    while !chunks.is_empty() {
        let slices: Vec<IoSlice<'_>> = chunks
            .iter()
            .take(AT_ONCE)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    writer.flush().await
}

/// Decodes one request, has it served, and encodes the answer (with its size prefix) as
/// chunks to write in order; `None` for a request that gets no answer (Produce with acks=0).
async fn handle(session: &Session, frame: Bytes) -> Result<Option<VecDeque<Bytes>>, Close> {
    let (api, correlation_id, header, request) = match decode(frame)? {
        Decoded::Answer(answer) => return Ok(Some(VecDeque::from([answer]))),
        Decoded::Request {
            api,
            correlation_id,
            header,
            request,
        } => (api, correlation_id, header, request),
    };
    let version = header.request_api_version;
    let Some(answer) = super::dispatch(session, &header, *request).await? else {
        return Ok(None);
    };
    let encoded = encode_into(api, version, correlation_id, &answer.response)?;
    if answer.splices.is_empty() {
        return Ok(Some(VecDeque::from([encoded.freeze()])));
    }
    // Flexible versions (answered with header v1) write lengths as varints.
    let compact = api.response_header_version(version) >= 1;
    answer
        .splices
        .apply(encoded, compact)
        .map(|chunks| Some(chunks.into()))
        .ok_or_else(|| {
            Close::Refused(format!(
                "{api:?} v{version}: a spliced record set went missing"
            ))
        })
}

/// The size-prefixed answer to request `correlation_id` of `api` at `version`.
pub(crate) fn encode(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<Bytes, Close> {
    encode_into(api, version, correlation_id, response).map(BytesMut::freeze)
}

fn encode_into(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<BytesMut, Close> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, api.response_header_version(version))
        .and_then(|()| response.encode(&mut out, version))
        .map_err(|e| Close::Refused(format!("cannot encode the {api:?} v{version} answer: {e}")))?;
    let size = i32::try_from(out.len() - 4)
        .map_err(|_| Close::Refused(format!("{api:?} answer over 2 GiB")))?;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Frames that start like a served request (a served key and version in range) so the
    /// fuzzing reaches the body decoders, then random bytes.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        let served = versions::SUPPORTED
            .iter()
            .map(|&(key, min, max)| (Just(key as i16), min..=max).boxed())
            .collect::<Vec<_>>();
        (
            proptest::strategy::Union::new(served),
            proptest::collection::vec(any::<u8>(), 4..512),
        )
            .prop_map(|((key, version), rest)| {
                let mut frame = key.to_be_bytes().to_vec();
                frame.extend_from_slice(&version.to_be_bytes());
                frame.extend_from_slice(&rest);
                frame
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// The decoder entry point takes any bytes without panicking or aborting: a served
        /// key and version with a random body, then wholly random frames.
        #[test]
        fn decoding_random_requests_never_panics(frame in frames()) {
            let _ = decode(Bytes::from(frame));
        }

        #[test]
        fn decoding_random_frames_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Bytes::from(frame));
        }
    }

    #[test]
    fn huge_announced_counts_are_survived() {
        // Metadata v0 announcing 2^31 - 1 topics in ten bytes: the reservation must not abort.
        let mut frame = vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
        frame.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(decode(Bytes::from(frame)), Err(Close::Refused(_))));
    }

    #[tokio::test]
    async fn frames_are_bounded_before_allocation() {
        let mut oversized: &[u8] = &((MAX_REQUEST_BYTES as i32) + 1).to_be_bytes();
        assert!(matches!(
            read_frame(&mut oversized).await,
            Err(FrameError::Size(_))
        ));
        let mut negative: &[u8] = &(-5_i32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut negative).await,
            Err(FrameError::Size(-5))
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_frame(&mut empty).await,
            Err(FrameError::Closed)
        ));
        // A frame announced at 1 MiB that stops after 10 bytes.
        let mut half = (1_i32 << 20).to_be_bytes().to_vec();
        half.extend_from_slice(&[0; 10]);
        assert!(matches!(
            read_frame(&mut half.as_slice()).await,
            Err(FrameError::Io(_))
        ));
        let mut whole = 9_i32.to_be_bytes().to_vec();
        whole.extend_from_slice(b"123456789");
        assert_eq!(
            read_frame(&mut whole.as_slice()).await.unwrap(),
            &b"123456789"[..]
        );
    }
}
