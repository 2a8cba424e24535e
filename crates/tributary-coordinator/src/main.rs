//! `tributary-coordinator`: runs a coordinator node, or checks one's health.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tributary_coordinator::{ConfigFlags, CoordinatorConfig};

#[derive(Debug, Parser)]
#[command(
    name = "tributary-coordinator",
    version,
    about = "Tributary's Raft-replicated metadata service and controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: ConfigFlags,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 if the node at ADDR reports SERVING, non-zero otherwise.
    Healthcheck {
        /// host:port of the node.
        #[arg(default_value = "127.0.0.1:9191")]
        addr: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tributary-coordinator: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Healthcheck { addr }) => runtime.block_on(healthcheck(&addr)),
        None => {
            init_logging(cli.log_json);
            let config = match CoordinatorConfig::load(&cli.flags) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("tributary-coordinator: invalid configuration: {err:#}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(tributary_coordinator::run(config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("tributary-coordinator: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn"));
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

async fn shutdown_signal() {
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

async fn healthcheck(addr: &str) -> ExitCode {
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
