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

    /// Whether `key` was given (Kafka's `originals().containsKey`): some defaults give way to
    /// other settings where an explicit value is an error.
    fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
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
        let retries: i32 = props.get("retries", i32::MAX)?;
        if retries < 0 {
            return Err(ClientError::Config(format!(
                "retries = {retries} must be at least 0"
            )));
        }
        let max_in_flight = props.get("max.in.flight.requests.per.connection", 5usize)?;
        if max_in_flight == 0 {
            return Err(ClientError::Config(
                "max.in.flight.requests.per.connection = 0 must be at least 1".into(),
            ));
        }
        let enable_idempotence = idempotence(props, acks, retries, max_in_flight)?;
        let linger = props.millis("linger.ms", 5)?;
        let client = ClientConfig::from(props)?;
        let delivery_timeout = delivery_timeout(props, linger, client.request_timeout)?;
        Ok(Self {
            client,
            acks,
            linger,
            // Kafka allows 0 (no batching): one record per batch is the same here.
            batch_size: props.get("batch.size", 16_384usize)?.max(1),
            compression,
            enable_idempotence,
            retries: retries.unsigned_abs(),
            delivery_timeout,
            buffer_memory: props.get("buffer.memory", 33_554_432usize)?,
            max_in_flight,
            max_request_size: props.get("max.request.size", 1_048_576usize)?,
        })
    }
}

/// `enable.idempotence` by Kafka's rule (`ProducerConfig.postProcessAndValidateIdempotenceConfigs`
/// in Kafka 3.x and 4.x): on by default, but a default gives way to `acks` other than `all` and
/// to `retries=0` (idempotence is then off, with a log line); only the explicit contradiction,
/// `enable.idempotence=true` with such a setting, is an error. More than 5 requests in flight
/// cannot keep an idempotent producer's order: an error whenever idempotence stays on (Kafka 4.0
/// made it one; 3.x turned idempotence off instead).
fn idempotence(props: &Properties, acks: i32, retries: i32, max_in_flight: usize) -> Result<bool> {
    if !props.get("enable.idempotence", true)? {
        return Ok(false);
    }
    let explicit = props.contains("enable.idempotence");
    let mut conflicts = Vec::new();
    if acks != -1 {
        conflicts.push(format!("acks={acks} (it needs acks=all)"));
    }
    if retries == 0 {
        conflicts.push("retries=0 (it needs retries above 0)".to_owned());
    }
    if !conflicts.is_empty() {
        let conflicts = conflicts.join(" and ");
        if explicit {
            return Err(ClientError::Config(format!(
                "enable.idempotence=true contradicts {conflicts}: set acks=all and retries above 0, \
                 or leave enable.idempotence unset (or false)"
            )));
        }
        tracing::info!(%conflicts, "idempotence disabled: enable.idempotence is not set and {conflicts}");
        return Ok(false);
    }
    if max_in_flight > 5 {
        return Err(ClientError::Config(format!(
            "max.in.flight.requests.per.connection = {max_in_flight}: the idempotent producer needs \
             at most 5 (set enable.idempotence=false for more)"
        )));
    }
    Ok(true)
}

/// `delivery.timeout.ms` by Kafka's rule (`KafkaProducer.configureDeliveryTimeout`): it must cover
/// `linger.ms` + `request.timeout.ms`; an explicit smaller value is an error, the default is raised
/// to that sum.
fn delivery_timeout(
    props: &Properties,
    linger: Duration,
    request_timeout: Duration,
) -> Result<Duration> {
    let delivery_timeout = props.millis("delivery.timeout.ms", 120_000)?;
    let floor = linger.saturating_add(request_timeout);
    if delivery_timeout >= floor {
        return Ok(delivery_timeout);
    }
    if props.contains("delivery.timeout.ms") {
        return Err(ClientError::Config(format!(
            "delivery.timeout.ms = {} must be at least linger.ms + request.timeout.ms ({} ms)",
            delivery_timeout.as_millis(),
            floor.as_millis()
        )));
    }
    Ok(floor)
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
        let max_poll_records = props.get("max.poll.records", 500usize)?;
        if max_poll_records == 0 {
            return Err(ClientError::Config(
                "max.poll.records = 0 must be at least 1".into(),
            ));
        }
        let group_id = props.0.get("group.id").cloned().filter(|g| !g.is_empty());
        let group_instance_id = match props.0.get("group.instance.id") {
            Some(id) if id.is_empty() => {
                return Err(ClientError::Config(
                    "group.instance.id is empty (leave it unset for a dynamic member)".into(),
                ));
            }
            id => id.cloned(),
        };
        // Kafka's `ConsumerConfig.maybeOverrideEnableAutoCommit`: without a group there is
        // nothing to commit to, so the default turns off and an explicit `true` is an error.
        let enable_auto_commit = props.get("enable.auto.commit", true)?;
        if group_id.is_none() && enable_auto_commit && props.contains("enable.auto.commit") {
            return Err(ClientError::Config(
                "enable.auto.commit cannot be true without a group.id".into(),
            ));
        }
        let session_timeout = props.millis("session.timeout.ms", 45_000)?;
        let heartbeat_interval = props.millis("heartbeat.interval.ms", 3_000)?;
        // Kafka's `Heartbeat` refuses the same when a group member is built.
        if group_id.is_some() && heartbeat_interval >= session_timeout {
            return Err(ClientError::Config(format!(
                "heartbeat.interval.ms = {} must be lower than session.timeout.ms = {}",
                heartbeat_interval.as_millis(),
                session_timeout.as_millis()
            )));
        }
        Ok(Self {
            client: ClientConfig::from(props)?,
            fetch_min_bytes: props.get("fetch.min.bytes", 1u32)?,
            fetch_max_wait: props.millis("fetch.max.wait.ms", 500)?,
            max_partition_fetch_bytes: props.get("max.partition.fetch.bytes", 1_048_576u32)?,
            fetch_max_bytes: props.get("fetch.max.bytes", 52_428_800u32)?,
            auto_offset_reset,
            max_poll_records,
            isolation_level,
            enable_auto_commit: enable_auto_commit && group_id.is_some(),
            group_id,
            group_instance_id,
            auto_commit_interval: props.millis("auto.commit.interval.ms", 5_000)?,
            session_timeout,
            heartbeat_interval,
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

    fn producer(pairs: &[(&str, &str)]) -> Result<ProducerConfig> {
        let mut props = Properties::new().set("bootstrap.servers", "a:1");
        for (k, v) in pairs {
            props.insert(*k, *v);
        }
        ProducerConfig::from_properties(&props)
    }

    fn consumer(pairs: &[(&str, &str)]) -> Result<ConsumerConfig> {
        let mut props = Properties::new().set("bootstrap.servers", "a:1");
        for (k, v) in pairs {
            props.insert(*k, *v);
        }
        ConsumerConfig::from_properties(&props)
    }

    #[test]
    fn producer_defaults_are_kafka_4s() {
        let p = producer(&[]).unwrap();
        assert_eq!(p.acks, -1, "acks=all");
        assert!(p.enable_idempotence);
        assert_eq!(
            p.linger,
            Duration::from_millis(5),
            "linger.ms 5 since Kafka 4.0"
        );
        assert_eq!(p.batch_size, 16_384);
        assert_eq!(p.retries, i32::MAX as u32);
        assert_eq!(p.delivery_timeout, Duration::from_millis(120_000));
        assert_eq!(p.max_in_flight, 5);
        assert_eq!(p.buffer_memory, 32 * 1024 * 1024);
        assert_eq!(p.max_request_size, 1024 * 1024);
        assert_eq!(p.compression, Compression::None);
        assert_eq!(p.client.request_timeout, Duration::from_millis(30_000));
        assert_eq!(p.client.retry_backoff, Duration::from_millis(100));
        assert_eq!(p.client.metadata_max_age, Duration::from_millis(300_000));
    }

    #[test]
    fn default_idempotence_gives_way_to_acks_and_retries() {
        for acks in ["0", "1"] {
            let p = producer(&[("acks", acks)]).unwrap();
            assert!(
                !p.enable_idempotence,
                "acks={acks} turns default idempotence off"
            );
            assert_eq!(p.acks, acks.parse::<i32>().unwrap());
        }
        let p = producer(&[("retries", "0")]).unwrap();
        assert!(
            !p.enable_idempotence,
            "retries=0 turns default idempotence off"
        );
        assert_eq!(p.retries, 0);
        for acks in ["all", "-1"] {
            assert!(producer(&[("acks", acks)]).unwrap().enable_idempotence);
        }
        // With idempotence off by acks, more than 5 in flight is allowed.
        let p = producer(&[
            ("acks", "1"),
            ("max.in.flight.requests.per.connection", "10"),
        ])
        .unwrap();
        assert_eq!((p.enable_idempotence, p.max_in_flight), (false, 10));
    }

    #[test]
    fn explicit_idempotence_refuses_the_contradiction() {
        let err = producer(&[("acks", "1"), ("enable.idempotence", "true")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("enable.idempotence=true contradicts acks=1"),
            "{err}"
        );
        let err = producer(&[("retries", "0"), ("enable.idempotence", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("retries=0"), "{err}");
        let err = producer(&[
            ("acks", "0"),
            ("retries", "0"),
            ("enable.idempotence", "true"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("acks=0") && err.contains("retries=0"), "{err}");
        let p = producer(&[("acks", "1"), ("enable.idempotence", "false")]).unwrap();
        assert_eq!((p.acks, p.enable_idempotence), (1, false));
        let p = producer(&[("acks", "all"), ("enable.idempotence", "true")]).unwrap();
        assert!(p.enable_idempotence);
    }

    #[test]
    fn idempotence_allows_at_most_five_in_flight() {
        for explicit in [false, true] {
            let mut pairs = vec![("max.in.flight.requests.per.connection", "6")];
            if explicit {
                pairs.push(("enable.idempotence", "true"));
            }
            let err = producer(&pairs).unwrap_err().to_string();
            assert!(err.contains("at most 5"), "{err}");
        }
        let p = producer(&[
            ("max.in.flight.requests.per.connection", "6"),
            ("enable.idempotence", "false"),
        ])
        .unwrap();
        assert_eq!(p.max_in_flight, 6);
        assert!(producer(&[("max.in.flight.requests.per.connection", "0")]).is_err());
        assert!(producer(&[("retries", "-1")]).is_err());
    }

    #[test]
    fn delivery_timeout_covers_linger_and_request_timeout() {
        let p = producer(&[("request.timeout.ms", "200000")]).unwrap();
        assert_eq!(
            p.delivery_timeout,
            Duration::from_millis(200_005),
            "the default is raised to linger.ms + request.timeout.ms"
        );
        let err = producer(&[
            ("delivery.timeout.ms", "1000"),
            ("request.timeout.ms", "1000"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("linger.ms + request.timeout.ms (1005 ms)"),
            "{err}"
        );
        let p = producer(&[
            ("delivery.timeout.ms", "1005"),
            ("request.timeout.ms", "1000"),
        ])
        .unwrap();
        assert_eq!(p.delivery_timeout, Duration::from_millis(1005));
    }

    #[test]
    fn buffer_memory_below_max_request_size_is_accepted() {
        let p = producer(&[("buffer.memory", "1000")]).unwrap();
        assert_eq!(p.buffer_memory, 1000);
    }

    #[test]
    fn consumer_defaults_are_kafka_4s() {
        let c = consumer(&[("group.id", "g")]).unwrap();
        assert_eq!(c.auto_offset_reset, OffsetReset::Latest);
        assert!(c.enable_auto_commit);
        assert_eq!(c.auto_commit_interval, Duration::from_millis(5_000));
        assert_eq!(c.session_timeout, Duration::from_millis(45_000));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(3_000));
        assert_eq!(c.max_poll_interval, Duration::from_millis(300_000));
        assert_eq!(c.max_poll_records, 500);
        assert_eq!(c.fetch_min_bytes, 1);
        assert_eq!(c.fetch_max_wait, Duration::from_millis(500));
        assert_eq!(c.max_partition_fetch_bytes, 1024 * 1024);
        assert_eq!(c.fetch_max_bytes, 50 * 1024 * 1024);
        assert_eq!(c.isolation_level, 0, "read_uncommitted");
        assert_eq!(
            c.partition_assignment_strategy,
            ["range", "cooperative-sticky"]
        );
        assert_eq!(c.client.request_timeout, Duration::from_millis(30_000));
        assert_eq!(c.group_instance_id, None);
    }

    #[test]
    fn auto_commit_needs_a_group() {
        assert!(
            !consumer(&[]).unwrap().enable_auto_commit,
            "off by default without group.id"
        );
        let err = consumer(&[("enable.auto.commit", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a group.id"), "{err}");
        assert!(
            !consumer(&[("enable.auto.commit", "false")])
                .unwrap()
                .enable_auto_commit
        );
        let c = consumer(&[("group.id", "g"), ("enable.auto.commit", "false")]).unwrap();
        assert!(!c.enable_auto_commit);
    }

    #[test]
    fn consumer_bounds_are_kafka_s() {
        let err = consumer(&[
            ("group.id", "g"),
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "3000"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("must be lower than session.timeout.ms"),
            "{err}"
        );
        // Without a group there is no heartbeat to check.
        assert!(
            consumer(&[
                ("session.timeout.ms", "3000"),
                ("heartbeat.interval.ms", "3000")
            ])
            .is_ok()
        );
        assert!(consumer(&[("max.poll.records", "0")]).is_err());
        let err = consumer(&[("group.id", "g"), ("group.instance.id", "")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("group.instance.id is empty"), "{err}");
        let c = consumer(&[("group.id", "g"), ("group.instance.id", "i-1")]).unwrap();
        assert_eq!(c.group_instance_id.as_deref(), Some("i-1"));
    }
}
