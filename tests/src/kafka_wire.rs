//! A minimal Kafka wire client for raw-socket tests: requests framed by hand, size-prefixed
//! responses read back, and whether the broker closed the connection.
//!
//! Written from Kafka's protocol guide, not from the broker's codec, so it checks the broker
//! rather than agreeing with it by construction. Only what the tests need: request header v1
//! (and v2, the flexible one), response header v0, the classic (non-compact) types, and the
//! ApiVersions v0 answer.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Kafka's API keys the tests use.
pub mod api {
    /// Produce.
    pub const PRODUCE: i16 = 0;
    /// Fetch.
    pub const FETCH: i16 = 1;
    /// ListOffsets.
    pub const LIST_OFFSETS: i16 = 2;
    /// Metadata.
    pub const METADATA: i16 = 3;
    /// FindCoordinator.
    pub const FIND_COORDINATOR: i16 = 10;
    /// JoinGroup.
    pub const JOIN_GROUP: i16 = 11;
    /// ApiVersions.
    pub const API_VERSIONS: i16 = 18;
    /// InitProducerId.
    pub const INIT_PRODUCER_ID: i16 = 22;
}

/// Kafka's `UNSUPPORTED_VERSION`.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// The largest response this client reads (the broker's frame cap is 100 MiB).
const RESPONSE_BYTES_MAX: usize = 100 << 20;

/// Big-endian encoder of Kafka's classic types.
#[derive(Debug, Default, Clone)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// INT8 / BOOLEAN.
    pub fn i8(mut self, v: i8) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// INT16.
    pub fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// INT32.
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// INT64.
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// STRING (INT16 length).
    pub fn string(self, s: &str) -> Self {
        let len = i16::try_from(s.len()).expect("a short test string");
        self.i16(len).raw(s.as_bytes())
    }

    /// NULLABLE_STRING: `None` is length -1.
    pub fn nullable_string(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }

    /// BYTES / RECORDS (INT32 length).
    pub fn bytes(self, b: &[u8]) -> Self {
        let len = i32::try_from(b.len()).expect("test bytes under 2 GiB");
        self.i32(len).raw(b)
    }

    /// An ARRAY's INT32 length (-1: null).
    pub fn array_len(self, n: i32) -> Self {
        self.i32(n)
    }

    /// An empty tagged-field section (flexible versions).
    pub fn no_tagged_fields(self) -> Self {
        self.raw(&[0])
    }

    /// Bytes as they are.
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The bytes.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Big-endian decoder of Kafka's classic types; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).context("length overflow")?;
        let slice = self.buf.get(self.pos..end).with_context(|| {
            format!(
                "response truncated: {n} bytes wanted at {} of {}",
                self.pos,
                self.buf.len()
            )
        })?;
        self.pos = end;
        Ok(slice)
    }

    /// INT8 / BOOLEAN.
    pub fn i8(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.take(1)?.try_into()?))
    }

    /// INT16.
    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }

    /// INT32.
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }

    /// INT64.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
    }

    /// STRING or NULLABLE_STRING (`None` for -1).
    pub fn nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        Ok(Some(
            String::from_utf8(bytes.to_vec()).context("a non-UTF-8 string")?,
        ))
    }

    /// STRING (null is an error).
    pub fn string(&mut self) -> Result<String> {
        self.nullable_string()?.context("a null STRING")
    }

    /// BYTES / RECORDS (`None` for -1).
    pub fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize)?))
    }

    /// An ARRAY's length, checked against what is left (each element is at least `min` bytes).
    pub fn array_len(&mut self, min_element_bytes: usize) -> Result<usize> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(0);
        }
        let len = len as usize;
        if len.saturating_mul(min_element_bytes.max(1)) > self.remaining() {
            bail!("an array of {len} elements in {} bytes", self.remaining());
        }
        Ok(len)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// A request frame: INT32 size, then request header v1 (api key, version, correlation id,
/// client id) or, with `flexible_header`, v2 (the same plus an empty tagged-field section),
/// then `body`.
pub fn frame(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    flexible_header: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut header = Writer::new()
        .i16(api_key)
        .i16(api_version)
        .i32(correlation_id)
        .nullable_string(Some("tributary-wire-test"));
    if flexible_header {
        header = header.no_tagged_fields();
    }
    let header = header.finish();
    let size = i32::try_from(header.len() + body.len()).expect("a small test request");
    Writer::new().i32(size).raw(&header).raw(body).finish()
}

/// A response: its correlation id (response header v0) and the rest.
#[derive(Debug, Clone)]
pub struct Response {
    /// The correlation id.
    pub correlation_id: i32,
    /// Everything after the correlation id (for flexible responses, header v1's tagged fields
    /// come first).
    pub body: Vec<u8>,
}

/// One TCP connection to a broker's listener.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    addr: SocketAddr,
}

impl Connection {
    /// Connects to `addr` (at most `timeout`), with TCP_NODELAY.
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug, timeout: Duration) -> Result<Self> {
        let addr = addr
            .to_socket_addrs()
            .with_context(|| format!("resolving {addr:?}"))?
            .next()
            .with_context(|| format!("{addr:?} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, addr })
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .with_context(|| format!("writing {} bytes to {}", bytes.len(), self.addr))
    }

    /// Sends a request with header v1 (v2 when `flexible_header`).
    pub fn send(
        &mut self,
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
        flexible_header: bool,
        body: &[u8],
    ) -> Result<()> {
        self.send_raw(&frame(
            api_key,
            api_version,
            correlation_id,
            flexible_header,
            body,
        ))
    }

    /// Reads one response, at most `timeout`.
    pub fn receive(&mut self, timeout: Duration) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        let mut size = [0u8; 4];
        self.read_exact_by(&mut size, deadline)
            .with_context(|| format!("reading a response size from {}", self.addr))?;
        // An HTTP/2 server's first frame is SETTINGS: a 3-byte length, then type 4.
        let http2 = if size[0] == 0 && size[3] == 4 {
            " (these bytes start an HTTP/2 SETTINGS frame: the listener answered as gRPC)"
        } else {
            ""
        };
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > RESPONSE_BYTES_MAX {
            bail!("{} answered a frame of {size} bytes{http2}", self.addr);
        }
        let mut frame = vec![0u8; size as usize];
        self.read_exact_by(&mut frame, deadline)
            .with_context(|| format!("reading a {size}-byte response from {}{http2}", self.addr))?;
        let correlation_id = i32::from_be_bytes(frame[..4].try_into()?);
        Ok(Response {
            correlation_id,
            body: frame[4..].to_vec(),
        })
    }

    /// Whether the broker closes the connection within `timeout` (EOF or reset); fails if it
    /// sends bytes instead.
    pub fn closed_within(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => bail!(
                    "{} sent {n} bytes ({:02x?}) instead of closing",
                    self.addr,
                    &buf[..n.min(32)]
                ),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(true),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context(format!("reading from {}", self.addr)),
            }
        }
    }

    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out ({filled} of {} bytes read)", buf.len());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => bail!(
                    "the connection closed ({filled} of {} bytes read)",
                    buf.len()
                ),
                Ok(n) => filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// An ApiVersions answer (v0 layout): the error code and `(api key, min, max)` per API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersions {
    /// The top-level error code.
    pub error_code: i16,
    /// Every API advertised: key, lowest and highest version.
    pub apis: Vec<(i16, i16, i16)>,
}

impl ApiVersions {
    /// Parses an ApiVersions v0 response body (after the correlation id).
    pub fn parse_v0(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let error_code = r.i16()?;
        let n = r.array_len(6)?;
        let mut apis = Vec::with_capacity(n);
        for _ in 0..n {
            apis.push((r.i16()?, r.i16()?, r.i16()?));
        }
        Ok(Self { error_code, apis })
    }

    /// The `(min, max)` advertised for `api_key`.
    pub fn range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.apis
            .iter()
            .find(|(key, _, _)| *key == api_key)
            .map(|(_, min, max)| (*min, *max))
    }
}

/// ApiVersions v0 on a new connection to `addr`: whether the listener speaks Kafka at all.
pub fn api_versions(addr: &str, timeout: Duration) -> Result<ApiVersions> {
    let mut connection = Connection::connect(addr, timeout)?;
    connection.send(api::API_VERSIONS, 0, 1, false, &[])?;
    let response = connection.receive(timeout)?;
    if response.correlation_id != 1 {
        bail!(
            "{addr} answered ApiVersions with correlation id {}, not 1",
            response.correlation_id
        );
    }
    ApiVersions::parse_v0(&response.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_size_header_body() {
        let f = frame(18, 3, 7, true, &[0xAA]);
        let size = i32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(size, f.len() - 4);
        assert_eq!(&f[4..8], &[0, 18, 0, 3]);
        assert_eq!(&f[8..12], &7i32.to_be_bytes());
        let client = "tributary-wire-test";
        assert_eq!(&f[12..14], &(client.len() as i16).to_be_bytes());
        assert_eq!(f[14 + client.len()], 0, "empty tagged fields of header v2");
        assert_eq!(*f.last().unwrap(), 0xAA);
        assert_eq!(frame(18, 0, 7, false, &[]).len(), 4 + 8 + 2 + client.len());
    }

    #[test]
    fn reads_are_bounds_checked() {
        let body = Writer::new()
            .i16(35)
            .array_len(2)
            .i16(18)
            .i16(0)
            .i16(4)
            .i16(3)
            .i16(0)
            .i16(12)
            .finish();
        let parsed = ApiVersions::parse_v0(&body).unwrap();
        assert_eq!(parsed.error_code, 35);
        assert_eq!(parsed.range(3), Some((0, 12)));
        assert_eq!(parsed.range(1), None);
        assert!(ApiVersions::parse_v0(&body[..body.len() - 1]).is_err());
        let lying = Writer::new().i16(0).array_len(1_000_000).finish();
        let err = ApiVersions::parse_v0(&lying).unwrap_err().to_string();
        assert!(err.contains("1000000 elements"), "{err}");
        let mut r = Reader::new(&[0, 5, b'a']);
        assert!(r.nullable_string().is_err());
    }
}
