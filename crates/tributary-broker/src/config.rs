//! Configuration: defaults, then a TOML file, then `TRIBUTARY_*` environment variables, then
//! command-line flags, each layer overriding the one before. Keys are Kafka's broker settings
//! in snake_case (`auto.create.topics.enable` is `auto_create_topics_enable`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

const KNOWN_KEYS: &[&str] = &[
    "broker_id",
    "data_dir",
    "listen",
    "advertised_address",
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
    "replica_lag_time_max_ms",
    "replica_fetch_wait_max_ms",
    "replica_fetch_max_bytes",
    "replica_fetch_response_max_bytes",
    "producer_id_expiration_ms",
    "metrics_listen",
];

/// Everything a broker needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// `broker.id` (brokers use 1, 2, 3, ...; coordinators 101, ...).
    pub broker_id: i32,
    /// `log.dirs`: where partition directories live.
    pub data_dir: PathBuf,
    /// The client and replication gRPC listen address.
    pub listen: SocketAddr,
    /// The address clients and other brokers use to reach this one (`host:port`).
    pub advertised_address: String,
    /// The coordinators' addresses (any one answers; followers forward to the controller).
    pub coordinators: Vec<String>,
    /// `broker.rack`.
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
    /// Where Prometheus scrapes `GET /metrics` (none: no metrics endpoint).
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            broker_id: 1,
            data_dir: PathBuf::from("data"),
            listen: "0.0.0.0:9092".parse().expect("valid address"),
            advertised_address: "localhost:9092".into(),
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
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_response_max_bytes: 10_485_760,
            producer_id_expiration_ms: 86_400_000,
            metrics_listen: None,
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
    /// gRPC listen address, e.g. 0.0.0.0:9092.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address advertised to clients and other brokers, e.g. broker-1:9092.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_address: Option<String>,
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

impl BrokerConfig {
    /// Layers defaults, the file (if any), `TRIBUTARY_*` variables and the flags.
    pub fn load(flags: &ConfigFlags) -> Result<Self> {
        let d = Self::default();
        let builder = config::Config::builder()
            .set_default("broker_id", d.broker_id)?
            .set_default("data_dir", d.data_dir.display().to_string())?
            .set_default("listen", d.listen.to_string())?
            .set_default("advertised_address", d.advertised_address.clone())?
            .set_default("coordinators", d.coordinators.join(","))?
            .set_default("auto_create_topics_enable", d.auto_create_topics_enable)?
            .set_default("num_partitions", d.num_partitions)?
            .set_default("default_replication_factor", d.default_replication_factor)?
            .set_default("broker_session_timeout_ms", d.broker_session_timeout_ms)?
            .set_default(
                "broker_heartbeat_interval_ms",
                d.broker_heartbeat_interval_ms,
            )?
            .set_default(
                "controlled_shutdown_timeout_ms",
                d.controlled_shutdown_timeout_ms,
            )?
            .set_default(
                "log_retention_check_interval_ms",
                d.log_retention_check_interval_ms,
            )?
            .set_default(
                "log_flush_offset_checkpoint_interval_ms",
                d.log_flush_offset_checkpoint_interval_ms,
            )?
            .set_default("max_open_segments", d.max_open_segments as u64)?
            .set_default("replica_lag_time_max_ms", d.replica_lag_time_max_ms)?
            .set_default("replica_fetch_wait_max_ms", d.replica_fetch_wait_max_ms)?
            .set_default("replica_fetch_max_bytes", d.replica_fetch_max_bytes)?
            .set_default(
                "replica_fetch_response_max_bytes",
                d.replica_fetch_response_max_bytes,
            )?
            .set_default("producer_id_expiration_ms", d.producer_id_expiration_ms)?;
        let raw = tributary_node::layer(builder, flags.config.as_deref(), KNOWN_KEYS)?;
        let get_u64 = |key: &str| raw.get::<u64>(key).with_context(|| key.to_owned());
        let mut config = Self {
            broker_id: raw.get("broker_id").context("broker_id")?,
            data_dir: raw.get::<String>("data_dir").context("data_dir")?.into(),
            listen: raw
                .get::<String>("listen")
                .context("listen")?
                .parse()
                .context("listen must be an IP address and port, e.g. 0.0.0.0:9092")?,
            advertised_address: raw
                .get("advertised_address")
                .context("advertised_address")?,
            coordinators: parse_addresses(&raw.get::<String>("coordinators")?)?,
            rack: raw.get::<String>("rack").ok().filter(|r| !r.is_empty()),
            auto_create_topics_enable: raw
                .get("auto_create_topics_enable")
                .context("auto_create_topics_enable")?,
            num_partitions: raw.get("num_partitions").context("num_partitions")?,
            default_replication_factor: raw
                .get("default_replication_factor")
                .context("default_replication_factor")?,
            broker_session_timeout_ms: get_u64("broker_session_timeout_ms")?,
            broker_heartbeat_interval_ms: get_u64("broker_heartbeat_interval_ms")?,
            controlled_shutdown_timeout_ms: get_u64("controlled_shutdown_timeout_ms")?,
            log_retention_check_interval_ms: get_u64("log_retention_check_interval_ms")?,
            log_flush_offset_checkpoint_interval_ms: get_u64(
                "log_flush_offset_checkpoint_interval_ms",
            )?,
            max_open_segments: usize::try_from(get_u64("max_open_segments")?)
                .context("max_open_segments")?,
            replica_lag_time_max_ms: get_u64("replica_lag_time_max_ms")?,
            replica_fetch_wait_max_ms: get_u64("replica_fetch_wait_max_ms")?,
            replica_fetch_max_bytes: u32::try_from(get_u64("replica_fetch_max_bytes")?)
                .context("replica_fetch_max_bytes")?,
            replica_fetch_response_max_bytes: u32::try_from(get_u64(
                "replica_fetch_response_max_bytes",
            )?)
            .context("replica_fetch_response_max_bytes")?,
            producer_id_expiration_ms: get_u64("producer_id_expiration_ms")?,
            metrics_listen: match raw.get::<String>("metrics_listen") {
                Ok(text) if !text.is_empty() => Some(text.parse().with_context(|| {
                    format!("metrics_listen `{text}` is not an IP address and port")
                })?),
                _ => None,
            },
        };
        if let Some(v) = flags.broker_id {
            config.broker_id = v;
        }
        if let Some(v) = &flags.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = flags.listen {
            config.listen = v;
        }
        if let Some(v) = &flags.advertised_address {
            config.advertised_address = v.clone();
        }
        if let Some(v) = &flags.coordinators {
            config.coordinators = parse_addresses(v)?;
        }
        if let Some(v) = flags.metrics_listen {
            config.metrics_listen = Some(v);
        }
        if let Some(v) = &flags.rack {
            config.rack = Some(v.clone()).filter(|r| !r.is_empty());
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        if self.broker_id < 0 {
            bail!("broker_id must be 0 or more, got {}", self.broker_id);
        }
        if self.coordinators.is_empty() {
            bail!("coordinators must list at least one HOST:PORT");
        }
        if !is_host_port(&self.advertised_address) {
            bail!(
                "advertised_address `{}` is not HOST:PORT",
                self.advertised_address
            );
        }
        if self.num_partitions < 1 {
            bail!("num_partitions must be at least 1");
        }
        if self.default_replication_factor < 1 {
            bail!("default_replication_factor must be at least 1");
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

fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
