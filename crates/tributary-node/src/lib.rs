//! The scaffold every Tributary server (`tributary-coordinator`, `tributary-broker`) is built
//! from: the generic `main` ([`cli`]), layered configuration over one serde struct
//! ([`settings`]), logging, signals, the `healthcheck` subcommand, the gRPC serve helper
//! ([`serve`]) and the Prometheus exposition ([`metrics`]).
//!
//! Invariants:
//! - Nothing here knows about Raft, metadata or partitions; a server's behaviour lives in its
//!   own crate, which hands this one a [`cli::Node`].
//! - A config key is a field of the server's settings struct and nothing else: the key list,
//!   the defaults and `--print-config-keys` derive from it.
//! - Unknown keys in a file are refused; `TRIBUTARY_*` variables that name no key are ignored
//!   (tools and tests use that prefix too).
//! - Every accepted connection has TCP_NODELAY; health is NOT_SERVING until the server says.

pub mod cli;
pub mod metrics;
pub mod serve;
pub mod settings;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};

/// The `log_format` key: how a server writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, spans as `broker{id=1}:partition{topic=t partition=0 epoch=3}`.
    #[default]
    Text,
    /// One JSON object per line, with `fields` and the `spans` enclosing the event.
    Json,
}

impl serde::Serialize for LogFormat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

impl<'de> serde::Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => bail!("log_format must be `text` or `json`, not `{other}`"),
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default_filter`), as text or JSON lines.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let json = format == LogFormat::Json;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A multi-threaded tokio runtime, or the reason there is none (printed by the caller).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The `healthcheck [ADDR]` subcommand: asks `grpc.health.v1` at `addr` about service "" and
/// exits 0 iff it is SERVING, printing why not otherwise. Bounded to 5 s.
pub async fn healthcheck(addr: &str) -> ExitCode {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|e| format!("health check failed: {}", e.message()))?
            .into_inner()
            .status;
        Ok::<i32, String>(status)
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(1)) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            eprintln!("{addr} is not serving (status {status})");
            ExitCode::FAILURE
        }
        Ok(Err(why)) => {
            eprintln!("{why}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("no answer from {addr} within 5 s");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let err = "JSON".parse::<LogFormat>().unwrap_err().to_string();
        assert!(err.contains("`text` or `json`, not `JSON`"), "{err}");
    }
}
