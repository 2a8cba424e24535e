//! The Kafka protocol on a broker's listener, byte by byte (requests framed by hand with
//! `tributary_tests::kafka_wire`, not with the broker's codec): KIP-511's ApiVersions fallback,
//! what closes a connection (an unknown API key, an oversized frame, a request cut short) and
//! what is refused without closing (Produce v2), acks=0 answered with nothing while pipelined
//! requests keep their order, and gRPC and Kafka clients on one port with a silent connection
//! blocking neither. After every case the broker still serves a connection opened before it.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tributary_tests::harness::{Cluster, NodeKind};
use tributary_tests::kafka_wire::{
    ApiVersions, Connection, Reader, UNSUPPORTED_VERSION, Writer, api,
};

/// How long one answer may take.
const ANSWER: Duration = Duration::from_secs(10);

/// A broker's cap on a request frame (`0x06` in the high byte, as the listener expects).
const FRAME_BYTES_MAX: i32 = 100 << 20;

fn start() -> Result<(Cluster, String)> {
    let mut cluster = Cluster::builder()
        .coordinators(1)
        .brokers(1)
        .config(
            NodeKind::Broker,
            "offsets_topic_replication_factor = 1\noffsets_topic_num_partitions = 1\n",
        )
        .start()?;
    let addr = common::first_broker(&mut cluster)?;
    Ok((cluster, addr))
}

/// ApiVersions v0 on `connection` with `correlation_id`: answered, without error.
fn api_versions_ok(connection: &mut Connection, correlation_id: i32) -> Result<ApiVersions> {
    connection.send(api::API_VERSIONS, 0, correlation_id, false, &[])?;
    let response = connection
        .receive(ANSWER)
        .with_context(|| format!("ApiVersions v0 (correlation id {correlation_id})"))?;
    ensure!(
        response.correlation_id == correlation_id,
        "answered correlation id {} for {correlation_id}",
        response.correlation_id
    );
    let versions = ApiVersions::parse_v0(&response.body)?;
    ensure!(
        versions.error_code == 0,
        "ApiVersions v0 error {}",
        versions.error_code
    );
    Ok(versions)
}

/// A Produce body for `topic`-0 holding `records`: v3 and later start with the transactional
/// id (null), v2 does not.
fn produce_body(version: i16, acks: i16, topic: &str, records: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    if version >= 3 {
        w = w.nullable_string(None);
    }
    w.i16(acks)
        .i32(5_000)
        .array_len(1)
        .string(topic)
        .array_len(1)
        .i32(0)
        .bytes(records)
        .finish()
}

/// A Produce response (v2 to v4 layout) of one partition: (error code, base offset).
fn produce_answer(body: &[u8]) -> Result<(i16, i64)> {
    let mut r = Reader::new(body);
    ensure!(r.array_len(4)? == 1, "one topic answered");
    r.string()?;
    ensure!(r.array_len(14)? == 1, "one partition answered");
    r.i32()?;
    let error = r.i16()?;
    let base_offset = r.i64()?;
    Ok((error, base_offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_unsupported_kafka_requests_are_refused_and_others_keep_being_served()
-> Result<()> {
    let (_cluster, addr) = start()?;
    let created = common::create_topic(&addr, "raw", 1, 1, &[]).await?;
    common::sync_brokers(std::slice::from_ref(&addr), created.metadata_offset).await?;
    common::topic_metadata(&addr, "raw", ANSWER).await?;
    let mut bystander = Connection::connect(addr.as_str(), ANSWER)?;
    let full = api_versions_ok(&mut bystander, 1).context("the first ApiVersions")?;
    let mut correlation = 1;
    let mut still_serves = |case: &str| -> Result<()> {
        correlation += 1;
        api_versions_ok(&mut bystander, correlation)
            .with_context(|| format!("a connection opened earlier, after {case}"))?;
        Ok(())
    };

    // KIP-511: an ApiVersions version the broker does not know gets a v0 answer (response
    // header v0), UNSUPPORTED_VERSION and the full list; the connection stays usable.
    let mut c = Connection::connect(addr.as_str(), ANSWER)?;
    let v3_style_body = Writer::new()
        .raw(&[5])
        .raw(b"test")
        .raw(&[4])
        .raw(b"1.0")
        .no_tagged_fields()
        .finish();
    c.send(api::API_VERSIONS, 127, 7, true, &v3_style_body)?;
    let response = c.receive(ANSWER).context("ApiVersions v127")?;
    assert_eq!(response.correlation_id, 7);
    let fallback = ApiVersions::parse_v0(&response.body).context("a v0 answer to v127")?;
    assert_eq!(fallback.error_code, UNSUPPORTED_VERSION);
    assert_eq!(fallback.apis, full.apis, "the full list, as v0 gives it");
    let (min, max) = fallback
        .range(api::API_VERSIONS)
        .context("ApiVersions advertised")?;
    assert!(
        min == 0 && (3..=4).contains(&max),
        "ApiVersions {min}-{max}"
    );
    for key in [api::PRODUCE, api::FETCH, api::LIST_OFFSETS, api::METADATA] {
        assert!(fallback.range(key).is_some(), "API {key} advertised");
    }
    assert_eq!(
        fallback.range(api::PRODUCE).map(|r| r.0),
        Some(0),
        "Produce advertised from v0, as Kafka 4 does (librdkafka compresses only then)"
    );
    api_versions_ok(&mut c, 8).context("the same connection after the v127 answer")?;
    still_serves("ApiVersions v127")?;

    // An unknown API key closes the connection.
    let mut c = Connection::connect(addr.as_str(), ANSWER)?;
    c.send(9_999, 0, 1, false, &[])?;
    assert!(
        c.closed_within(ANSWER)?,
        "an unknown API key closes the connection"
    );
    still_serves("an unknown API key")?;

    // A frame over the cap closes the connection without the broker reading (or allocating)
    // it; so does a size no Kafka frame has.
    for size in [FRAME_BYTES_MAX + 1, i32::MAX, -1] {
        let mut c = Connection::connect(addr.as_str(), ANSWER)?;
        c.send_raw(&size.to_be_bytes())?;
        // The broker may already have closed on seeing the size: this write may fail.
        let _ = c.send_raw(&[0u8; 64]);
        assert!(
            c.closed_within(ANSWER)?,
            "a frame of {size} bytes closes the connection"
        );
        still_serves(&format!("a frame of {size} bytes"))?;
    }

    // Produce below v3 is refused with UNSUPPORTED_VERSION (advertised from v0 nonetheless);
    // nothing is stored and the connection stays.
    let mut c = Connection::connect(addr.as_str(), ANSWER)?;
    let batch = common::batch(1_000, &["v2"]);
    c.send(
        api::PRODUCE,
        2,
        3,
        false,
        &produce_body(2, 1, "raw", &batch),
    )?;
    let response = c.receive(ANSWER).context("Produce v2")?;
    assert_eq!(response.correlation_id, 3);
    let (error, _) = produce_answer(&response.body)?;
    assert_eq!(error, UNSUPPORTED_VERSION, "Produce v2");
    api_versions_ok(&mut c, 4).context("the same connection after Produce v2")?;
    let mut grpc = common::broker(&addr)?;
    let stored = common::fetch(&mut grpc, common::fetch_request("raw", 0, 0, 0)).await?;
    assert_eq!(stored.high_watermark, 0, "Produce v2 stored nothing");
    still_serves("Produce v2")?;

    // A request cut short, then the connection closed.
    let mut c = Connection::connect(addr.as_str(), ANSWER)?;
    let frame = tributary_tests::kafka_wire::frame(api::METADATA, 1, 1, false, &[0, 0, 0, 0]);
    c.send_raw(&frame[..frame.len() / 2])?;
    drop(c);
    still_serves("a half-sent request")?;

    // Pipelined on one connection: acks=0 gets no answer, the others are answered in order.
    let mut c = Connection::connect(addr.as_str(), ANSWER)?;
    let zero = common::batch(2_000, &["acks=0"]);
    let one = common::batch(2_001, &["acks=1"]);
    c.send(
        api::PRODUCE,
        3,
        100,
        false,
        &produce_body(3, 0, "raw", &zero),
    )?;
    c.send(
        api::PRODUCE,
        3,
        101,
        false,
        &produce_body(3, 1, "raw", &one),
    )?;
    c.send(
        api::METADATA,
        1,
        102,
        false,
        &Writer::new().array_len(-1).finish(),
    )?;
    let first = c.receive(ANSWER).context("the first pipelined answer")?;
    assert_eq!(first.correlation_id, 101, "acks=0 is not answered");
    assert_eq!(
        produce_answer(&first.body)?,
        (0, 1),
        "acks=1 appended after the acks=0 batch"
    );
    let second = c.receive(ANSWER).context("the Metadata answer")?;
    assert_eq!(second.correlation_id, 102);
    let mut r = Reader::new(&second.body);
    assert_eq!(r.array_len(14)?, 1, "one broker");
    let node_id = r.i32()?;
    let host = r.string()?;
    let port = r.i32()?;
    r.nullable_string()?;
    assert_eq!(format!("{host}:{port}"), addr, "the listener's address");
    assert_eq!(r.i32()?, node_id, "the controller id is a broker's id");
    let stored = common::fetch(&mut grpc, common::fetch_request("raw", 0, 0, 0)).await?;
    let values = common::values(&stored.records)?;
    assert_eq!(
        values,
        [(0, "acks=0".to_owned()), (1, "acks=1".to_owned())],
        "both stored, in order"
    );
    still_serves("pipelined requests")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_kafka_share_one_port_and_a_silent_connection_blocks_neither() -> Result<()> {
    let (_cluster, addr) = start()?;
    let created = common::create_topic(&addr, "shared", 1, 1, &[]).await?;
    common::sync_brokers(std::slice::from_ref(&addr), created.metadata_offset).await?;
    common::topic_metadata(&addr, "shared", ANSWER).await?;

    // Connections that never finish their first bytes: silent, and one byte of a Kafka size.
    let _silent = Connection::connect(addr.as_str(), ANSWER)?;
    let mut one_byte = Connection::connect(addr.as_str(), ANSWER)?;
    one_byte.send_raw(&[0])?;
    let quick = Duration::from_secs(3);
    let started = Instant::now();
    let mut kafka = Connection::connect(addr.as_str(), ANSWER)?;
    kafka.send(api::API_VERSIONS, 0, 1, false, &[])?;
    let answer = kafka
        .receive(quick)
        .context("Kafka while a silent connection waits")?;
    assert_eq!(answer.correlation_id, 1);
    let mut grpc = common::broker(&addr)?;
    tokio::time::timeout(
        quick,
        common::produce(&mut grpc, "shared", 0, -1, common::batch(1, &["first"])),
    )
    .await
    .context("gRPC while a silent connection waits")??;
    assert!(started.elapsed() < 2 * quick, "{:?}", started.elapsed());

    // Both protocols at once, many requests each.
    const ROUNDS: i32 = 200;
    let kafka_side = std::thread::spawn(move || -> Result<()> {
        for i in 0..ROUNDS {
            let correlation = 10 + i;
            if i % 2 == 0 {
                api_versions_ok(&mut kafka, correlation)?;
            } else {
                kafka.send(
                    api::METADATA,
                    1,
                    correlation,
                    false,
                    &Writer::new().array_len(-1).finish(),
                )?;
                let answer = kafka.receive(ANSWER)?;
                ensure!(answer.correlation_id == correlation, "answers in order");
            }
        }
        Ok(())
    });
    for i in 0..ROUNDS {
        let answer = common::produce(
            &mut grpc,
            "shared",
            0,
            -1,
            common::batch(10 + i64::from(i), &[&format!("grpc-{i}")]),
        )
        .await?;
        assert_eq!(
            common::code(&answer.error),
            tributary_proto::common::v1::ErrorCode::None
        );
    }
    kafka_side
        .join()
        .map_err(|_| anyhow::anyhow!("the Kafka side panicked"))?
        .context("the Kafka side")?;
    let stored = common::fetch(&mut grpc, common::fetch_request("shared", 0, 0, 0)).await?;
    assert_eq!(stored.high_watermark, 1 + i64::from(ROUNDS));
    Ok(())
}
