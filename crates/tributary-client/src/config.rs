//! Configuration by Kafka's property names (`bootstrap.servers`, `acks`, `linger.ms`, ...), with
//! Kafka's defaults. An unknown property is an error naming it: a typo would otherwise silently
//! keep a default. The Java-only serializer settings are accepted and ignored.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use tributary_record::Compression;

use crate::error::{ClientError, Result};

/// Kafka properties as given (`key=value` pairs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Sets `key` to `value` in place.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// Parses `key=value` (as command-line tools take them).
    pub fn parse_pair(text: &str) -> Result<(String, String)> {
        match text.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(ClientError::Config(format!(
                "`{text}` is not a property of the form key=value"
            ))),
        }
    }

    fn check_known(&self, known: &[&str]) -> Result<()> {
        for key in self.0.keys() {
            let ignored = key.ends_with(".serializer") || key.ends_with(".deserializer");
            if !ignored && !known.contains(&key.as_str()) {
                return Err(ClientError::Config(format!(
                    "unknown property `{key}` (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ClientError::Config(format!("`{key}` = `{v}` is not a valid value"))),
        }
    }

    fn millis(&self, key: &str, default: u64) -> Result<Duration> {
        Ok(Duration::from_millis(self.get(key, default)?))
    }
}

const CLIENT_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "metadata.max.age.ms",
    "request.timeout.ms",
    "retry.backoff.ms",
];

const PRODUCER_KEYS: &[&str] = &[
    "acks",
    "linger.ms",
    "batch.size",
    "compression.type",
    "enable.idempotence",
    "retries",
    "delivery.timeout.ms",
    "buffer.memory",
    "max.in.flight.requests.per.connection",
    "max.request.size",
];

const CONSUMER_KEYS: &[&str] = &[
    "fetch.min.bytes",
    "fetch.max.wait.ms",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "auto.offset.reset",
    "max.poll.records",
    "isolation.level",
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
];

/// What every client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `bootstrap.servers`: brokers to learn the cluster from (tried in order).
    pub bootstrap_servers: Vec<String>,
    /// `client.id`.
    pub client_id: String,
    /// `metadata.max.age.ms`: refresh metadata at least this often.
    pub metadata_max_age: Duration,
    /// `request.timeout.ms`.
    pub request_timeout: Duration,
    /// `retry.backoff.ms`.
    pub retry_backoff: Duration,
}

impl ClientConfig {
    fn from(props: &Properties) -> Result<Self> {
        let servers: String = props.get("bootstrap.servers", String::new())?;
        let bootstrap_servers: Vec<String> = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if bootstrap_servers.is_empty() {
            return Err(ClientError::Config(
                "bootstrap.servers is required (host:port[,host:port...])".into(),
            ));
        }
        for server in &bootstrap_servers {
            if server
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(ClientError::Config(format!(
                    "bootstrap server `{server}` is not HOST:PORT"
                )));
            }
        }
        Ok(Self {
            bootstrap_servers,
            client_id: props.get("client.id", "tributary".to_owned())?,
            metadata_max_age: props.millis("metadata.max.age.ms", 300_000)?,
            request_timeout: props.millis("request.timeout.ms", 30_000)?,
            retry_backoff: props.millis("retry.backoff.ms", 100)?,
        })
    }

    /// A client config from properties (admin clients).
    pub fn from_properties(props: &Properties) -> Result<Self> {
        props.check_known(CLIENT_KEYS)?;
        Self::from(props)
    }
}

/// Producer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Shared settings.
    pub client: ClientConfig,
    /// `acks`: 0, 1 or -1 (`all`).
    pub acks: i32,
    /// `linger.ms`.
    pub linger: Duration,
    /// `batch.size`: bytes per batch.
    pub batch_size: usize,
    /// `compression.type`.
    pub compression: Compression,
    /// `enable.idempotence`.
    pub enable_idempotence: bool,
    /// `retries`.
    pub retries: u32,
    /// `delivery.timeout.ms`: from `send` to acknowledged or failed.
    pub delivery_timeout: Duration,
    /// `buffer.memory`: bytes of records waiting to be sent; `send` waits when it is full.
    pub buffer_memory: usize,
    /// `max.in.flight.requests.per.connection`: concurrent Produce requests per broker.
    pub max_in_flight: usize,
    /// `max.request.size`: the largest record the producer accepts.
    pub max_request_size: usize,
}

impl ProducerConfig {
    /// Producer settings from properties, Kafka's defaults for the rest.
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let known: Vec<&str> = CLIENT_KEYS.iter().chain(PRODUCER_KEYS).copied().collect();
        props.check_known(&known)?;
        let acks = match props.get("acks", "all".to_owned())?.as_str() {
            "all" | "-1" => -1,
            "1" => 1,
            "0" => 0,
            other => {
                return Err(ClientError::Config(format!(
                    "acks = `{other}` is not 0, 1, -1 or all"
                )));
            }
        };
        let compression = match props.get("compression.type", "none".to_owned())?.as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => {
                return Err(ClientError::Config(format!(
                    "compression.type = `{other}` is not none, gzip, snappy, lz4 or zstd"
                )));
            }
        };
        let enable_idempotence = props.get("enable.idempotence", true)?;
        if enable_idempotence && acks != -1 {
            return Err(ClientError::Config(
                "enable.idempotence=true requires acks=all (set enable.idempotence=false for acks 0 or 1)"
                    .into(),
            ));
        }
        let max_in_flight = props.get("max.in.flight.requests.per.connection", 5usize)?;
        if max_in_flight == 0 || (enable_idempotence && max_in_flight > 5) {
            return Err(ClientError::Config(format!(
                "max.in.flight.requests.per.connection = {max_in_flight} must be 1..=5 with idempotence"
            )));
        }
        let config = Self {
            client: ClientConfig::from(props)?,
            acks,
            linger: props.millis("linger.ms", 5)?,
            batch_size: props.get("batch.size", 16_384usize)?.max(1),
            compression,
            enable_idempotence,
            retries: props.get("retries", i32::MAX as u32)?,
            delivery_timeout: props.millis("delivery.timeout.ms", 120_000)?,
            buffer_memory: props.get("buffer.memory", 33_554_432usize)?,
            max_in_flight,
            max_request_size: props.get("max.request.size", 1_048_576usize)?,
        };
        if config.buffer_memory < config.max_request_size {
            return Err(ClientError::Config(format!(
                "buffer.memory ({}) must be at least max.request.size ({})",
                config.buffer_memory, config.max_request_size
            )));
        }
        Ok(config)
    }
}

/// Where a consumer starts when it has no valid position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
    /// Fail.
    None,
}

/// Consumer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Shared settings.
    pub client: ClientConfig,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: u32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: u32,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: u32,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// `isolation.level`: 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i32,
    /// `group.id`: the consumer group `subscribe` joins.
    pub group_id: Option<String>,
    /// `group.instance.id`: static membership (a restart within the session timeout keeps
    /// the member's partitions without a rebalance).
    pub group_instance_id: Option<String>,
    /// `enable.auto.commit`: commit the positions returned by `poll` every
    /// `auto.commit.interval.ms`, before partitions are revoked, and on close.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `session.timeout.ms`: without a heartbeat for this long the member is removed.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`: a member that does not poll for this long leaves the group (and
    /// the rebalance timeout it gives the coordinator).
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`: assignor names in order of preference.
    pub partition_assignment_strategy: Vec<String>,
}

impl ConsumerConfig {
    /// Consumer settings from properties, Kafka's defaults for the rest.
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let known: Vec<&str> = CLIENT_KEYS.iter().chain(CONSUMER_KEYS).copied().collect();
        props.check_known(&known)?;
        let auto_offset_reset = match props
            .get("auto.offset.reset", "latest".to_owned())?
            .as_str()
        {
            "earliest" => OffsetReset::Earliest,
            "latest" => OffsetReset::Latest,
            "none" => OffsetReset::None,
            other => {
                return Err(ClientError::Config(format!(
                    "auto.offset.reset = `{other}` is not earliest, latest or none"
                )));
            }
        };
        let isolation_level = match props
            .get("isolation.level", "read_uncommitted".to_owned())?
            .as_str()
        {
            "read_uncommitted" => 0,
            "read_committed" => 1,
            other => {
                return Err(ClientError::Config(format!(
                    "isolation.level = `{other}` is not read_uncommitted or read_committed"
                )));
            }
        };
        Ok(Self {
            client: ClientConfig::from(props)?,
            fetch_min_bytes: props.get("fetch.min.bytes", 1u32)?,
            fetch_max_wait: props.millis("fetch.max.wait.ms", 500)?,
            max_partition_fetch_bytes: props.get("max.partition.fetch.bytes", 1_048_576u32)?,
            fetch_max_bytes: props.get("fetch.max.bytes", 52_428_800u32)?,
            auto_offset_reset,
            max_poll_records: props.get("max.poll.records", 500usize)?.max(1),
            isolation_level,
            group_id: props.0.get("group.id").cloned().filter(|g| !g.is_empty()),
            group_instance_id: props
                .0
                .get("group.instance.id")
                .cloned()
                .filter(|g| !g.is_empty()),
            enable_auto_commit: props.get("enable.auto.commit", true)?,
            auto_commit_interval: props.millis("auto.commit.interval.ms", 5_000)?,
            session_timeout: props.millis("session.timeout.ms", 45_000)?,
            heartbeat_interval: props.millis("heartbeat.interval.ms", 3_000)?,
            max_poll_interval: props.millis("max.poll.interval.ms", 300_000)?,
            partition_assignment_strategy: strategies(&props.get(
                "partition.assignment.strategy",
                "range,cooperative-sticky".to_owned(),
            )?)?,
        })
    }
}

/// Parses `partition.assignment.strategy`: assignor names (Kafka's Java class names are
/// accepted too, e.g. `org.apache.kafka.clients.consumer.RangeAssignor`).
fn strategies(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for raw in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let name = match raw.rsplit('.').next().unwrap_or(raw) {
            "RangeAssignor" => "range",
            "RoundRobinAssignor" => "roundrobin",
            "CooperativeStickyAssignor" => "cooperative-sticky",
            other => other,
        };
        if crate::assignor::by_name(name).is_none() {
            return Err(ClientError::Config(format!(
                "partition.assignment.strategy: unknown assignor `{raw}` (range, roundrobin, cooperative-sticky)"
            )));
        }
        out.push(name.to_owned());
    }
    if out.is_empty() {
        return Err(ClientError::Config(
            "partition.assignment.strategy is empty".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_defaults_and_typos() {
        let props = Properties::new().set("bootstrap.servers", "a:1, b:2");
        let p = ProducerConfig::from_properties(&props).unwrap();
        assert_eq!(p.acks, -1);
        assert!(p.enable_idempotence);
        assert_eq!(p.client.bootstrap_servers, ["a:1", "b:2"]);
        assert_eq!(p.delivery_timeout, Duration::from_secs(120));
        let err = ProducerConfig::from_properties(&props.clone().set("linger.msec", "1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`linger.msec`"), "{err}");
        assert!(
            ProducerConfig::from_properties(&props.clone().set("acks", "1")).is_err(),
            "idempotence needs acks=all"
        );
        let p = ProducerConfig::from_properties(
            &props
                .clone()
                .set("acks", "1")
                .set("enable.idempotence", "false"),
        )
        .unwrap();
        assert_eq!(p.acks, 1);
        assert!(ProducerConfig::from_properties(&Properties::new()).is_err());
        assert!(
            ConsumerConfig::from_properties(&props.clone().set("auto.offset.reset", "first"))
                .is_err()
        );
        assert_eq!(
            Properties::parse_pair("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert!(Properties::parse_pair("nokey").is_err());
    }
}
