//! Configuration: defaults, then a TOML file, then `TRIBUTARY_*` environment variables, then
//! command-line flags, each layer overriding the one before.
//!
//! [`CoordinatorConfig`] is the one place a key is written: each serde field is a key, its
//! `Default` the defaults (`tributary-coordinator --print-config-keys` prints both).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything a coordinator node needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// This node's id (coordinators use 101, 102, 103, ...).
    pub node_id: u64,
    /// Where the Raft log, vote and snapshots live.
    pub data_dir: PathBuf,
    /// The gRPC listen address.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// The address other nodes and brokers use to reach this one (`host:port`).
    pub advertised_address: String,
    /// The voters a new cluster starts with (node id → `host:port`); must include this node.
    /// Empty: a single-node cluster of this node. Written `101=host:9191,102=host:9192`.
    #[serde(deserialize_with = "members", serialize_with = "members_text")]
    pub initial_members: BTreeMap<u64, String>,
    /// A broker that sends no heartbeat for this long is fenced (`broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How often the controller moves leadership back to preferred replicas.
    pub leader_rebalance_interval_ms: u64,
    /// Wait to be added to an existing cluster rather than bootstrap one.
    pub join: bool,
    /// Where Prometheus scrapes `GET /metrics` (none or empty: no metrics endpoint).
    #[serde(deserialize_with = "tributary_node::settings::metrics_address")]
    pub metrics_listen: Option<SocketAddr>,
    /// `log_format`: `text` (default) or `json` lines (also the `--log-json` flag).
    pub log_format: tributary_node::LogFormat,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            node_id: 101,
            data_dir: PathBuf::from("data"),
            listen: "0.0.0.0:9191".parse().expect("valid address"),
            advertised_address: "localhost:9191".into(),
            initial_members: BTreeMap::new(),
            broker_session_timeout_ms: 9_000,
            leader_rebalance_interval_ms: 30_000,
            join: false,
            metrics_listen: None,
            log_format: tributary_node::LogFormat::Text,
        }
    }
}

/// The flags that can override the file and the environment.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigFlags {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address, e.g. 0.0.0.0:9191.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address advertised to other nodes and brokers, e.g. coordinator-1:9191.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_address: Option<String>,
    /// Voters of a new cluster: 101=host:9191,102=host:9192,...
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub initial_members: Option<String>,
    /// broker.session.timeout.ms.
    #[arg(long, value_name = "MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// Join an existing cluster (through the Admin AddCoordinator call) instead of bootstrapping
    /// a new one.
    #[arg(long)]
    pub join: bool,
    /// Prometheus endpoint address, e.g. 0.0.0.0:10191 (default: none).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ConfigFlags {
    /// The flags given, as overrides of the keys they name.
    fn overrides(&self) -> Vec<(&'static str, config::Value)> {
        let text = |key, value: Option<String>| value.map(|v| (key, v.into()));
        [
            self.node_id.map(|v| ("node_id", v.into())),
            text(
                "data_dir",
                self.data_dir.as_ref().map(|d| d.display().to_string()),
            ),
            text("listen", self.listen.map(|a| a.to_string())),
            text("advertised_address", self.advertised_address.clone()),
            text("initial_members", self.initial_members.clone()),
            self.broker_session_timeout_ms
                .map(|v| ("broker_session_timeout_ms", v.into())),
            self.join.then(|| ("join", true.into())),
            text("metrics_listen", self.metrics_listen.map(|a| a.to_string())),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl CoordinatorConfig {
    /// Layers defaults, the file (if any), `TRIBUTARY_*` variables and the flags, and
    /// validates.
    pub fn load(flags: &ConfigFlags) -> Result<Self> {
        let config: Self =
            tributary_node::settings::load(flags.config.as_deref(), flags.overrides())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        if self.node_id == 0 {
            bail!("node_id must be at least 1");
        }
        if !self.initial_members.is_empty() && !self.initial_members.contains_key(&self.node_id) {
            bail!(
                "initial_members ({}) must include this node ({})",
                format_members(&self.initial_members),
                self.node_id
            );
        }
        if self.broker_session_timeout_ms < 100 {
            bail!("broker_session_timeout_ms must be at least 100");
        }
        Ok(())
    }

    /// The voters a new cluster starts with.
    pub fn bootstrap_members(&self) -> BTreeMap<u64, String> {
        if self.initial_members.is_empty() {
            BTreeMap::from([(self.node_id, self.advertised_address.clone())])
        } else {
            self.initial_members.clone()
        }
    }

    /// broker.session.timeout.ms as a duration.
    pub fn broker_session_timeout(&self) -> Duration {
        Duration::from_millis(self.broker_session_timeout_ms)
    }
}

/// Parses `101=host:9191,102=host:9192`.
pub fn parse_members(text: &str) -> Result<BTreeMap<u64, String>> {
    let mut members = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            bail!("initial member `{item}` is not ID=HOST:PORT");
        };
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("initial member `{item}`: `{id}` is not a node id"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            bail!("initial member `{item}`: `{addr}` is not HOST:PORT");
        }
        if members.insert(id, addr.to_owned()).is_some() {
            bail!("initial member {id} is listed twice");
        }
    }
    Ok(members)
}

fn members<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, String>, D::Error> {
    parse_members(&String::deserialize(d)?).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
}

fn members_text<S: Serializer>(members: &BTreeMap<u64, String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_members(members))
}

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "listen must be an IP address and port, e.g. 0.0.0.0:9191: {e}"
        ))
    })
}

fn format_members(members: &BTreeMap<u64, String>) -> String {
    members
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys are a contract (deploy/, operators' files): none may vanish or be renamed.
    #[test]
    fn the_keys_are_the_documented_ones() {
        assert_eq!(
            tributary_node::settings::keys::<CoordinatorConfig>(),
            [
                "node_id",
                "data_dir",
                "listen",
                "advertised_address",
                "initial_members",
                "broker_session_timeout_ms",
                "leader_rebalance_interval_ms",
                "join",
                "metrics_listen",
                "log_format",
            ]
        );
    }

    #[test]
    fn members_parse_and_bad_ones_are_named() {
        let m = parse_members("101=a:9191, 102=b:9192").unwrap();
        assert_eq!(m[&102], "b:9192");
        assert!(
            parse_members("101")
                .unwrap_err()
                .to_string()
                .contains("`101`")
        );
        assert!(parse_members("x=a:1").is_err());
        assert!(parse_members("1=a").is_err());
        assert!(
            parse_members("1=a:1,1=b:2")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "node_id = 102\nlisten = \"127.0.0.1:9999\"\ninitial_members = \"101=a:1,102=b:2\"\n",
        )
        .unwrap();
        let flags = ConfigFlags {
            config: Some(file.clone()),
            node_id: Some(101),
            ..Default::default()
        };
        let config = CoordinatorConfig::load(&flags).unwrap();
        assert_eq!(config.node_id, 101);
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.initial_members.len(), 2);
        std::fs::write(&file, "node_idd = 1\n").unwrap();
        let flags = ConfigFlags {
            config: Some(file),
            ..Default::default()
        };
        assert!(
            CoordinatorConfig::load(&flags).is_err(),
            "unknown keys are refused"
        );
    }
}
