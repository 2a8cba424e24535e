//! Helpers shared by the integration tests: channels, bounded waits, error codes, and a small
//! client for the brokers' gRPC API built on the generated stubs.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tonic::transport::Channel;
use tributary_proto::broker::v1 as bpb;
use tributary_proto::broker::v1::broker_client::BrokerClient;
use tributary_proto::common::v1::{Error as WireError, ErrorCode};
use tributary_proto::coordinator::v1 as cpb;
use tributary_proto::coordinator::v1::admin_client::AdminClient;

/// The address of the cluster's first broker (a single-broker test's bootstrap server).
pub fn first_broker(cluster: &mut tributary_tests::harness::Cluster) -> Result<String> {
    Ok(cluster
        .of_kind(tributary_tests::harness::NodeKind::Broker)
        .next()
        .context("the cluster has no broker")?
        .addr()
        .to_string())
}

/// A lazily connecting channel to `addr` with a 10 s request timeout (long-polls set their own).
pub fn channel(addr: &str) -> Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .connect_lazy(),
    )
}

/// Polls `check` until it returns `Some`, at most `timeout`; the error says what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Retries `check` until it passes, at most `timeout`; on timeout the error says what was
/// awaited and why the last check failed.
#[allow(dead_code)] // not every test binary uses it
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(err) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {what}: {err:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The code of a wire error (UNKNOWN_SERVER_ERROR when absent).
pub fn code(error: &Option<WireError>) -> ErrorCode {
    error
        .as_ref()
        .and_then(|e| ErrorCode::try_from(e.code).ok())
        .unwrap_or(ErrorCode::UnknownServerError)
}

/// A broker client.
pub fn broker(addr: &str) -> Result<BrokerClient<Channel>> {
    Ok(BrokerClient::new(channel(addr)?)
        .max_decoding_message_size(100 << 20)
        .max_encoding_message_size(100 << 20))
}

/// An admin client (brokers and coordinators both serve it).
pub fn admin(addr: &str) -> Result<AdminClient<Channel>> {
    Ok(AdminClient::new(channel(addr)?))
}

/// Creates one topic through `addr`, asserting success.
pub async fn create_topic(
    addr: &str,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) -> Result<cpb::CreateTopicsResponse> {
    let response = admin(addr)?
        .create_topics(cpb::CreateTopicsRequest {
            topics: vec![cpb::create_topics_request::NewTopic {
                name: name.into(),
                partitions,
                replication_factor,
                configs: configs
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            }],
            validate_only: false,
        })
        .await?
        .into_inner();
    let result = &response.results[0];
    if code(&result.error) != ErrorCode::None {
        bail!("creating {name} failed: {:?}", result.error);
    }
    Ok(response)
}

/// One uncompressed batch of `values` with timestamps from `ts`.
pub fn batch(ts: i64, values: &[&str]) -> Bytes {
    let mut builder = tributary_record::BatchBuilder::new(ts);
    for (i, value) in values.iter().enumerate() {
        builder.push(ts + i as i64, None, Some(value.as_bytes()), &[]);
    }
    builder.build()
}

/// Produces `records` to one partition; returns the partition's response.
pub async fn produce(
    client: &mut BrokerClient<Channel>,
    topic: &str,
    partition: i32,
    acks: i32,
    records: Bytes,
) -> Result<bpb::produce_response::PartitionResponse> {
    let response = client
        .produce(bpb::ProduceRequest {
            acks,
            timeout_ms: 10_000,
            topics: vec![bpb::produce_request::TopicData {
                name: topic.into(),
                partitions: vec![bpb::produce_request::PartitionData { partition, records }],
            }],
        })
        .await?
        .into_inner();
    response
        .topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("produce response without a partition")
}

/// A fetch of one partition.
pub fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: u32,
) -> bpb::FetchRequest {
    bpb::FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 0,
        isolation_level: 0,
        topics: vec![bpb::fetch_request::TopicFetch {
            name: topic.into(),
            partitions: vec![bpb::fetch_request::PartitionFetch {
                partition,
                fetch_offset: offset,
                partition_max_bytes: 0,
                current_leader_epoch: -1,
            }],
        }],
    }
}

/// Fetches one partition; returns its data.
pub async fn fetch(
    client: &mut BrokerClient<Channel>,
    request: bpb::FetchRequest,
) -> Result<bpb::fetch_response::PartitionData> {
    let response = client.fetch(request).await?.into_inner();
    response
        .topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("fetch response without a partition")
}

/// The metadata of `topic` from `addr`, once it exists and every partition has a leader.
pub async fn topic_metadata(
    addr: &str,
    topic: &str,
    timeout: Duration,
) -> Result<bpb::metadata_response::TopicMetadata> {
    eventually(
        &format!("every partition of {topic} to have a leader (asking {addr})"),
        timeout,
        || async {
            let response = broker(addr)
                .ok()?
                .metadata(bpb::MetadataRequest {
                    topics: vec![topic.into()],
                    allow_auto_topic_creation: false,
                    min_metadata_offset: 0,
                })
                .await
                .ok()?
                .into_inner();
            let t = response.topics.into_iter().next()?;
            (code(&t.error) == ErrorCode::None
                && !t.partitions.is_empty()
                && t.partitions.iter().all(|p| p.leader_id >= 0))
            .then_some(t)
        },
    )
    .await
}

/// Every record value in `records` (whole v2 batches), with its offset.
pub fn values(records: &[u8]) -> Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for item in tributary_record::Batches::new(records) {
        let (_, _, batch) = item?;
        for record in tributary_record::decode_records(&Bytes::copy_from_slice(batch))? {
            out.push((
                record.offset,
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned(),
            ));
        }
    }
    Ok(out)
}

/// Waits until every broker in `addrs` has applied (and acted on) metadata offset `offset`.
pub async fn sync_brokers<'a>(
    addrs: impl IntoIterator<Item = &'a String>,
    offset: u64,
) -> Result<()> {
    for addr in addrs {
        let response = broker(addr)?
            .metadata(bpb::MetadataRequest {
                topics: vec![],
                allow_auto_topic_creation: false,
                min_metadata_offset: offset,
            })
            .await?
            .into_inner();
        if response.metadata_offset < offset {
            bail!(
                "broker {addr} is at metadata offset {}, not {offset}",
                response.metadata_offset
            );
        }
    }
    Ok(())
}

/// `GET /metrics` from a node's Prometheus endpoint.
pub async fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .context("connecting to the metrics endpoint timed out")??;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .context("reading the metrics timed out")??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("metrics endpoint answered {head}");
    }
    Ok(body.to_owned())
}

/// The sum of the samples of `name` whose labels contain every `filter` (`key="value"`).
pub fn metric(text: &str, name: &str, filter: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name && filter.iter().all(|f| labels.contains(f)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}
