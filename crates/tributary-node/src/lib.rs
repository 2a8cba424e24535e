//! What every Tributary server process (`tributary-coordinator`, `tributary-broker`) shares:
//! logging to stderr, graceful-shutdown signals, the `healthcheck` subcommand and the layering
//! of configuration (defaults, TOML file, `TRIBUTARY_*` environment, flags).
//!
//! Architecture invariant: nothing here knows about Raft, metadata or partitions; a node's
//! behaviour lives in its own crate.

pub mod metrics;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The `log_format` key: how a server writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, spans as `broker{id=1}:partition{topic=t partition=0 epoch=3}`.
    #[default]
    Text,
    /// One JSON object per line, with `fields` and the `spans` enclosing the event.
    Json,
}

impl LogFormat {
    /// Reads the `log_format` key of a layered configuration (`text` when absent).
    pub fn from_config(raw: &config::Config) -> Result<Self> {
        match raw.get::<String>("log_format") {
            Err(config::ConfigError::NotFound(_)) => Ok(Self::Text),
            Err(e) => Err(e).context("log_format"),
            Ok(text) => text.parse(),
        }
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

/// Refuses a config file holding a key outside `known`: a typo would silently keep a default.
pub fn check_file_keys(file: &Path, known: &[&str]) -> Result<()> {
    let only_file = config::Config::builder()
        .add_source(config::File::from(file).required(true))
        .build()
        .with_context(|| format!("reading {}", file.display()))?;
    let keys: std::collections::HashMap<String, config::Value> = only_file.try_deserialize()?;
    let mut unknown: Vec<&String> = keys
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        bail!(
            "unknown setting `{key}` in {} (known: {})",
            file.display(),
            known.join(", ")
        );
    }
    Ok(())
}

/// Adds the file (after [`check_file_keys`]) and the `TRIBUTARY_*` environment on top of
/// `builder`'s defaults, and builds the layered configuration.
pub fn layer(
    mut builder: config::ConfigBuilder<config::builder::DefaultState>,
    file: Option<&Path>,
    known: &[&str],
) -> Result<config::Config> {
    if let Some(file) = file {
        check_file_keys(file, known)?;
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder
        .add_source(
            config::Environment::with_prefix("TRIBUTARY")
                .prefix_separator("_")
                .try_parsing(true),
        )
        .build()
        .context("reading the configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_file_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:1\"\nlisten_adress = \"x\"\n").unwrap();
        let err = check_file_keys(&file, &["listen"]).unwrap_err().to_string();
        assert!(err.contains("`listen_adress`"), "{err}");
        std::fs::write(&file, "listen = \"0.0.0.0:1\"\n").unwrap();
        check_file_keys(&file, &["listen"]).unwrap();
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let err = "JSON".parse::<LogFormat>().unwrap_err().to_string();
        assert!(err.contains("`text` or `json`, not `JSON`"), "{err}");
        let empty = config::Config::builder().build().unwrap();
        assert_eq!(LogFormat::from_config(&empty).unwrap(), LogFormat::Text);
        let set = config::Config::builder()
            .set_override("log_format", "yaml")
            .unwrap()
            .build()
            .unwrap();
        assert!(LogFormat::from_config(&set).is_err());
    }
}
