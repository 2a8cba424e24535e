//! Configuration: defaults, then a TOML file, then `TRIBUTARY_*` environment variables, then
//! command-line flags, each layer overriding the one before. Keys are Kafka's broker settings
//! in snake_case (`auto.create.topics.enable` is `auto_create_topics_enable`).
//!
//! [`BrokerConfig`] is the one place a key is written: each serde field is a key, its
//! `Default` the defaults (`tributary-broker --print-config-keys` prints both). Fields marked
//! `serde(skip)` are resolved from the keys by [`BrokerConfig::load`], never read from a file.
//!
//! This module refers to no other module of the crate.

pub mod listeners;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use listeners::{DEFAULT_LISTENER, Listener, is_host_port};

/// Everything a broker needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `broker.id` (brokers use 1, 2, 3, ...; coordinators 101, ...).
    pub broker_id: i32,
    /// `log.dirs`: where partition directories live.
    pub data_dir: PathBuf,
    /// The `listen` key: where the single-listener shorthand's `PLAINTEXT` listener binds
    /// (empty: not given; resolved into [`BrokerConfig::listen`]).
    #[serde(rename = "listen")]
    listen_text: String,
    /// The `advertised_address` key: the shorthand's advertised `host:port` (empty: not given).
    #[serde(rename = "advertised_address")]
    advertised_address_text: String,
    /// The `listeners` key, Kafka style: `INTERNAL://0.0.0.0:19092,EXTERNAL://0.0.0.0:9092`.
    #[serde(rename = "listeners")]
    listeners_text: String,
    /// `advertised.listeners`: each listener's advertised `NAME://host:port`.
    pub advertised_listeners: String,
    /// `inter.broker.listener.name`: the listener followers fetch from their leaders over
    /// (empty in a file: `PLAINTEXT`, or the only listener; resolved by `load`).
    pub inter_broker_listener_name: String,
    /// The coordinators' addresses (any one answers; followers forward to the controller),
    /// written `host:9191,host:9192`.
    #[serde(deserialize_with = "coordinator_list", serialize_with = "comma_list")]
    pub coordinators: Vec<String>,
    /// `broker.rack` (empty: none).
    #[serde(deserialize_with = "non_empty")]
    pub rack: Option<String>,
    /// `auto.create.topics.enable`: produce, fetch or metadata for an unknown topic creates it.
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: i32,
    /// `default.replication.factor`: replication factor of an auto-created topic.
    pub default_replication_factor: i32,
    /// `broker.session.timeout.ms`: without a heartbeat acknowledged for this long the
    /// controller has fenced this broker, so it stops leading by itself.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// How long SIGTERM waits for leaderships to move away before stopping anyway.
    pub controlled_shutdown_timeout_ms: u64,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: u64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often recovery points are written.
    pub log_flush_offset_checkpoint_interval_ms: u64,
    /// Segment files kept open at once across all partitions.
    pub max_open_segments: usize,
    /// How far ahead of its writes an active segment's disk blocks are allocated (at most an
    /// eighth of the segment's size; 0: never). Speeds appends up on ext4 and XFS; set 0 on a
    /// copy-on-write file system (btrfs, ZFS), where preallocation gains nothing.
    pub log_preallocate_bytes: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits for new data.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.max.bytes`: per partition, per follower fetch.
    pub replica_fetch_max_bytes: u32,
    /// `replica.fetch.response.max.bytes`: per follower fetch.
    pub replica_fetch_response_max_bytes: u32,
    /// `producer.id.expiration.ms`: an idempotent producer idle this long is forgotten.
    pub producer_id_expiration_ms: u64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when created.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`: its replication factor (it is created only once
    /// this many brokers run).
    pub offsets_topic_replication_factor: i32,
    /// `offsets.commit.timeout.ms`: how long a commit waits for replication.
    pub offsets_commit_timeout_ms: u64,
    /// `offsets.retention.minutes`: an empty group's offsets are kept this long.
    pub offsets_retention_minutes: u64,
    /// `offsets.retention.ms`: the same in milliseconds; when set it wins over the minutes (as
    /// `log.retention.ms` wins over `log.retention.minutes` in Kafka). Kafka has only the minutes
    /// for offsets; the milliseconds exist so tests and small deployments can use short ones.
    pub offsets_retention_ms: Option<u64>,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `group.initial.rebalance.delay.ms`: an empty group's first rebalance waits this long
    /// for more members (Kafka's default is 3000; ours 500, see ARCHITECTURE.md).
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub group_max_size: i32,
    /// `log.cleaner.backoff.ms`: how often the cleaner looks for compacted logs to clean.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory for the cleaner's key map (bytes).
    pub log_cleaner_dedupe_buffer_size: u64,
    /// Where Prometheus scrapes `GET /metrics` (none or empty: no metrics endpoint).
    #[serde(deserialize_with = "tributary_node::settings::metrics_address")]
    pub metrics_listen: Option<SocketAddr>,
    /// `log_format`: `text` (default) or `json` lines (also the `--log-json` flag).
    pub log_format: tributary_node::LogFormat,

    /// Where the `PLAINTEXT` listener of the shorthand binds (resolved from `listen`).
    #[serde(skip)]
    pub listen: SocketAddr,
    /// The shorthand's advertised address (resolved from `advertised_address`).
    #[serde(skip)]
    pub advertised_address: String,
    /// Every listener the broker binds (Kafka's `listeners` + `advertised_listeners`, plus the
    /// shorthand's `PLAINTEXT` when it applies), each serving every service.
    #[serde(skip)]
    pub listeners: Vec<Listener>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            broker_id: 1,
            data_dir: PathBuf::from("data"),
            listen_text: String::new(),
            advertised_address_text: String::new(),
            listeners_text: String::new(),
            advertised_listeners: String::new(),
            inter_broker_listener_name: String::new(),
            coordinators: vec![
                "localhost:9191".into(),
                "localhost:9192".into(),
                "localhost:9193".into(),
            ],
            rack: None,
            auto_create_topics_enable: false,
            num_partitions: 1,
            default_replication_factor: 1,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            controlled_shutdown_timeout_ms: 30_000,
            log_retention_check_interval_ms: 300_000,
            log_flush_offset_checkpoint_interval_ms: 60_000,
            max_open_segments: 1024,
            log_preallocate_bytes: tributary_storage::DEFAULT_PREALLOCATE_BYTES,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_response_max_bytes: 10_485_760,
            producer_id_expiration_ms: 86_400_000,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_commit_timeout_ms: 5_000,
            offsets_retention_minutes: 10_080,
            offsets_retention_ms: None,
            offsets_retention_check_interval_ms: 600_000,
            group_initial_rebalance_delay_ms: 500,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: i32::MAX,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_size: 128 << 20,
            metrics_listen: None,
            log_format: tributary_node::LogFormat::Text,
            listen: "0.0.0.0:9092".parse().expect("valid address"),
            advertised_address: "localhost:9092".into(),
            listeners: vec![Listener {
                name: DEFAULT_LISTENER.into(),
                bind: "0.0.0.0:9092".parse().expect("valid address"),
                advertised: "localhost:9092".into(),
            }],
        }
    }
}

/// The flags that can override the file and the environment.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigFlags {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This broker's id.
    #[arg(long)]
    pub broker_id: Option<i32>,
    /// Data directory (partition logs).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address of the PLAINTEXT listener, e.g. 0.0.0.0:9092 (the single-listener
    /// shorthand; default 0.0.0.0:9092 unless --listeners is given).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address the PLAINTEXT listener is advertised as, e.g. broker-1:9092 (default: the listen
    /// address, localhost for 0.0.0.0).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_address: Option<String>,
    /// Named listeners to bind, Kafka style:
    /// INTERNAL://0.0.0.0:19092,EXTERNAL://0.0.0.0:9092.
    #[arg(long, value_name = "NAME://ADDR,...")]
    pub listeners: Option<String>,
    /// Each listener's advertised address: INTERNAL://broker-1:19092,EXTERNAL://localhost:9092.
    #[arg(long, value_name = "NAME://HOST:PORT,...")]
    pub advertised_listeners: Option<String>,
    /// The listener brokers replicate over (default: PLAINTEXT, or the only listener).
    #[arg(long, value_name = "NAME")]
    pub inter_broker_listener_name: Option<String>,
    /// Coordinator addresses: host:9191,host:9192,...
    #[arg(long, value_name = "HOST:PORT,...")]
    pub coordinators: Option<String>,
    /// Rack, for rack-aware replica placement.
    #[arg(long)]
    pub rack: Option<String>,
    /// Prometheus endpoint address, e.g. 0.0.0.0:10092 (default: none).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ConfigFlags {
    /// The flags given, as overrides of the keys they name.
    fn overrides(&self) -> Vec<(&'static str, config::Value)> {
        let text = |key, value: &Option<String>| value.clone().map(|v| (key, v.into()));
        let display = |key, value: Option<String>| value.map(|v| (key, v.into()));
        [
            self.broker_id.map(|v| ("broker_id", i64::from(v).into())),
            display(
                "data_dir",
                self.data_dir.as_ref().map(|d| d.display().to_string()),
            ),
            display("listen", self.listen.map(|a| a.to_string())),
            text("advertised_address", &self.advertised_address),
            text("listeners", &self.listeners),
            text("advertised_listeners", &self.advertised_listeners),
            text(
                "inter_broker_listener_name",
                &self.inter_broker_listener_name,
            ),
            text("coordinators", &self.coordinators),
            text("rack", &self.rack),
            display("metrics_listen", self.metrics_listen.map(|a| a.to_string())),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl BrokerConfig {
    /// Layers defaults, the file (if any), `TRIBUTARY_*` variables and the flags, resolves the
    /// listeners and validates.
    pub fn load(flags: &ConfigFlags) -> Result<Self> {
        let mut config: Self =
            tributary_node::settings::load(flags.config.as_deref(), flags.overrides())?;
        config.resolve_listeners()?;
        config.validate()?;
        Ok(config)
    }

    /// Resolves `listen`, `advertised_address`, `listeners`, `advertised_listeners` and
    /// `inter_broker_listener_name` into the listeners to bind. The shorthand (`listen`,
    /// `advertised_address`) applies when given or when `listeners` is empty.
    fn resolve_listeners(&mut self) -> Result<()> {
        let listen = match self.listen_text.as_str() {
            "" => None,
            text => Some(text.parse().map_err(|e| {
                anyhow::anyhow!(
                    "listen `{text}` must be an IP address and port, e.g. 0.0.0.0:9092: {e}"
                )
            })?),
        };
        let advertised = Some(self.advertised_address_text.clone()).filter(|a| !a.is_empty());
        let shorthand = listen.is_some() || advertised.is_some() || self.listeners_text.is_empty();
        self.listen = listen.unwrap_or_else(|| Self::default().listen);
        self.advertised_address = advertised.unwrap_or_else(|| default_advertised(self.listen));
        if shorthand && !is_host_port(&self.advertised_address) {
            bail!(
                "advertised_address `{}` is not HOST:PORT",
                self.advertised_address
            );
        }
        let inter_broker = std::mem::take(&mut self.inter_broker_listener_name);
        (self.listeners, self.inter_broker_listener_name) = listeners::resolve(
            shorthand.then(|| (self.listen, self.advertised_address.clone())),
            &self.listeners_text,
            &self.advertised_listeners,
            Some(inter_broker.as_str()).filter(|n| !n.is_empty()),
        )?;
        Ok(())
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        if self.broker_id < 0 {
            bail!("broker_id must be 0 or more, got {}", self.broker_id);
        }
        if self.coordinators.is_empty() {
            bail!("coordinators must list at least one HOST:PORT");
        }
        if self.listeners.is_empty() {
            bail!("the broker needs at least one listener");
        }
        if !self
            .listeners
            .iter()
            .any(|l| l.name == self.inter_broker_listener_name)
        {
            bail!(
                "inter_broker_listener_name {} is not one of the listeners",
                self.inter_broker_listener_name
            );
        }
        if self.num_partitions < 1 {
            bail!("num_partitions must be at least 1");
        }
        if self.default_replication_factor < 1 {
            bail!("default_replication_factor must be at least 1");
        }
        if self.offsets_topic_num_partitions < 1 {
            bail!("offsets_topic_num_partitions must be at least 1");
        }
        if self.offsets_topic_replication_factor < 1 {
            bail!("offsets_topic_replication_factor must be at least 1");
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            bail!(
                "group_min_session_timeout_ms ({}) must be at least 1 and at most group_max_session_timeout_ms ({})",
                self.group_min_session_timeout_ms,
                self.group_max_session_timeout_ms
            );
        }
        if self.group_max_size < 1 {
            bail!("group_max_size must be at least 1");
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_heartbeat_interval_ms * 2 > self.broker_session_timeout_ms
        {
            bail!(
                "broker_heartbeat_interval_ms ({}) must be above 0 and at most half of broker_session_timeout_ms ({})",
                self.broker_heartbeat_interval_ms,
                self.broker_session_timeout_ms
            );
        }
        if self.replica_fetch_wait_max_ms >= self.replica_lag_time_max_ms {
            bail!(
                "replica_fetch_wait_max_ms ({}) must be below replica_lag_time_max_ms ({}), or caught-up followers would leave the ISR",
                self.replica_fetch_wait_max_ms,
                self.replica_lag_time_max_ms
            );
        }
        if self.max_open_segments < 2 {
            bail!("max_open_segments must be at least 2");
        }
        Ok(())
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> tributary_group::GroupConfig {
        tributary_group::GroupConfig {
            offsets_topic_num_partitions: self.offsets_topic_num_partitions,
            offsets_topic_replication_factor: self.offsets_topic_replication_factor,
            offsets_commit_timeout: Duration::from_millis(self.offsets_commit_timeout_ms),
            offsets_retention: match self.offsets_retention_ms {
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_secs(self.offsets_retention_minutes.saturating_mul(60)),
            },
            offsets_retention_check_interval: Duration::from_millis(
                self.offsets_retention_check_interval_ms,
            ),
            group_initial_rebalance_delay: Duration::from_millis(
                self.group_initial_rebalance_delay_ms,
            ),
            group_min_session_timeout_ms: self.group_min_session_timeout_ms,
            group_max_session_timeout_ms: self.group_max_session_timeout_ms,
            group_max_size: usize::try_from(self.group_max_size).unwrap_or(usize::MAX),
        }
    }

    /// `broker.session.timeout.ms`.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.broker_session_timeout_ms)
    }

    /// `replica.lag.time.max.ms`.
    pub fn replica_lag(&self) -> Duration {
        Duration::from_millis(self.replica_lag_time_max_ms)
    }

    /// `broker.heartbeat.interval.ms`.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.broker_heartbeat_interval_ms)
    }
}

/// The shorthand's advertised address when none is given: the listen address, with
/// `localhost` for a wildcard IP.
fn default_advertised(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("localhost:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// Parses `host:9191,host:9192`.
pub fn parse_addresses(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !is_host_port(item) {
            bail!("coordinator address `{item}` is not HOST:PORT");
        }
        out.push(item.to_owned());
    }
    Ok(out)
}

fn coordinator_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    parse_addresses(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn comma_list<S: Serializer>(list: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&list.join(","))
}

/// An optional text where empty means none.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(String::deserialize(d)?).filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys are a contract (deploy/, operators' files): none may vanish or be renamed.
    #[test]
    fn the_keys_are_the_documented_ones() {
        assert_eq!(
            tributary_node::settings::keys::<BrokerConfig>(),
            [
                "broker_id",
                "data_dir",
                "listen",
                "advertised_address",
                "listeners",
                "advertised_listeners",
                "inter_broker_listener_name",
                "coordinators",
                "rack",
                "auto_create_topics_enable",
                "num_partitions",
                "default_replication_factor",
                "broker_session_timeout_ms",
                "broker_heartbeat_interval_ms",
                "controlled_shutdown_timeout_ms",
                "log_retention_check_interval_ms",
                "log_flush_offset_checkpoint_interval_ms",
                "max_open_segments",
                "log_preallocate_bytes",
                "replica_lag_time_max_ms",
                "replica_fetch_wait_max_ms",
                "replica_fetch_max_bytes",
                "replica_fetch_response_max_bytes",
                "producer_id_expiration_ms",
                "offsets_topic_num_partitions",
                "offsets_topic_replication_factor",
                "offsets_commit_timeout_ms",
                "offsets_retention_minutes",
                "offsets_retention_ms",
                "offsets_retention_check_interval_ms",
                "group_initial_rebalance_delay_ms",
                "group_min_session_timeout_ms",
                "group_max_session_timeout_ms",
                "group_max_size",
                "log_cleaner_backoff_ms",
                "log_cleaner_dedupe_buffer_size",
                "metrics_listen",
                "log_format",
            ]
        );
        let defaults = tributary_node::settings::describe::<BrokerConfig>().unwrap();
        assert!(
            defaults.contains("\"replica_fetch_max_bytes\": 1048576"),
            "{defaults}"
        );
        assert!(
            defaults.contains("\"coordinators\": \"localhost:9191,localhost:9192,localhost:9193\""),
            "{defaults}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.toml");
        let flags = ConfigFlags {
            config: Some(file.clone()),
            ..Default::default()
        };
        let load = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            format!("{:#}", BrokerConfig::load(&flags).unwrap_err())
        };
        assert!(
            load("metrics_listen = \"x\"\n")
                .contains("metrics_listen `x` is not an IP address and port")
        );
        assert!(load("listen = \"x\"\n").contains("listen `x` must be an IP address and port"));
        assert!(load("log_format = \"yaml\"\n").contains("`text` or `json`, not `yaml`"));
        assert!(load("broker_id = \"one\"\n").contains("broker_id"));
        assert!(load("num_partitions = 0\n").contains("num_partitions must be at least 1"));
    }

    #[test]
    fn layers_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "broker_id = 2\ncoordinators = \"a:1, b:2\"\nauto_create_topics_enable = true\n",
        )
        .unwrap();
        let flags = ConfigFlags {
            config: Some(file.clone()),
            broker_id: Some(3),
            ..Default::default()
        };
        let config = BrokerConfig::load(&flags).unwrap();
        assert_eq!(config.broker_id, 3);
        assert_eq!(config.coordinators, ["a:1", "b:2"]);
        assert!(config.auto_create_topics_enable);

        std::fs::write(&file, "brokerid = 2\n").unwrap();
        let err = BrokerConfig::load(&flags).unwrap_err().to_string();
        assert!(err.contains("`brokerid`"), "{err}");

        std::fs::write(&file, "coordinators = \"a\"\n").unwrap();
        let err = format!("{:#}", BrokerConfig::load(&flags).unwrap_err());
        assert!(err.contains("`a` is not HOST:PORT"), "{err}");

        std::fs::write(&file, "broker_heartbeat_interval_ms = 9000\n").unwrap();
        assert!(BrokerConfig::load(&flags).is_err());
    }

    #[test]
    fn listeners_and_the_single_listener_shorthand() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.toml");
        let load = |toml: &str, flags: ConfigFlags| {
            std::fs::write(&file, toml).unwrap();
            BrokerConfig::load(&ConfigFlags {
                config: Some(file.clone()),
                ..flags
            })
        };
        // Nothing set: PLAINTEXT on 0.0.0.0:9092, advertised as localhost:9092.
        let config = load("", ConfigFlags::default()).unwrap();
        assert_eq!(config.listeners, BrokerConfig::default().listeners);
        assert_eq!(config.inter_broker_listener_name, "PLAINTEXT");

        // The shorthand: advertised defaults to the listen address.
        let flags = ConfigFlags {
            listen: Some("127.0.0.1:9500".parse().unwrap()),
            ..Default::default()
        };
        let config = load("", flags).unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].advertised, "127.0.0.1:9500");

        // Kafka's listeners replace the shorthand.
        let toml = "listeners = \"INTERNAL://0.0.0.0:19092,EXTERNAL://0.0.0.0:9092\"\n\
                    advertised_listeners = \"INTERNAL://broker-1:19092,EXTERNAL://localhost:9092\"\n\
                    inter_broker_listener_name = \"INTERNAL\"\n";
        let config = load(toml, ConfigFlags::default()).unwrap();
        let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["INTERNAL", "EXTERNAL"]);
        assert_eq!(config.inter_broker_listener_name, "INTERNAL");
        assert_eq!(
            config.listener("INTERNAL").unwrap().advertised,
            "broker-1:19092"
        );

        // A flag overrides the file's list.
        let flags = ConfigFlags {
            inter_broker_listener_name: Some("EXTERNAL".into()),
            ..Default::default()
        };
        let config = load(toml, flags).unwrap();
        assert_eq!(config.inter_broker_listener_name, "EXTERNAL");

        // Both: the shorthand's PLAINTEXT plus the named listeners.
        let flags = ConfigFlags {
            listen: Some("127.0.0.1:9500".parse().unwrap()),
            ..Default::default()
        };
        let config = load(toml, flags).unwrap();
        assert_eq!(config.listeners.len(), 3);
        assert_eq!(config.listeners[0].name, "PLAINTEXT");

        // Several listeners, none PLAINTEXT, no inter-broker name.
        let err = format!(
            "{:#}",
            load(
                "listeners = \"A://127.0.0.1:1,B://127.0.0.1:2\"\n",
                ConfigFlags::default()
            )
            .unwrap_err()
        );
        assert!(err.contains("inter_broker_listener_name"), "{err}");
    }
}
