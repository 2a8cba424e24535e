//! `tributary`: Kafka's command-line tools with Kafka's flags and output (`kafka-topics` is
//! `tributary topics`, `kafka-console-producer` is `tributary console-producer`, ...).
//!
//! Errors are one line on stderr and a non-zero exit; argument errors are clap's usage (exit 2).

mod console;
mod dump;
mod groups;
mod perf;
mod records;
mod topics;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tributary_client::{ClientError, Properties};

#[derive(Debug, Parser)]
#[command(
    name = "tributary",
    version,
    about = "Tributary's command-line tools (Kafka's, by the same names and flags)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics (kafka-topics).
    Topics(topics::TopicsArgs),
    /// Describe and alter topic configs (kafka-configs).
    Configs(topics::ConfigsArgs),
    /// Records from stdin, one per line (kafka-console-producer).
    ConsoleProducer(console::ProducerArgs),
    /// Records to stdout, one per line (kafka-console-consumer).
    ConsoleConsumer(console::ConsumerArgs),
    /// List, describe, reset offsets of and delete consumer groups (kafka-consumer-groups).
    ConsumerGroups(groups::GroupsArgs),
    /// The cluster: id, controller, brokers.
    Cluster(ClusterArgs),
    /// Producer throughput and latency (kafka-producer-perf-test).
    ProducerPerfTest(perf::ProducerPerfArgs),
    /// Consumer throughput (kafka-consumer-perf-test).
    ConsumerPerfTest(perf::ConsumerPerfArgs),
    /// The record batches of segment files, read offline (kafka-dump-log).
    DumpLog(dump::DumpLogArgs),
    /// Delete the records below given offsets, on every replica (kafka-delete-records).
    DeleteRecords(records::DeleteRecordsArgs),
}

#[derive(Debug, Args)]
struct ClusterArgs {
    #[command(subcommand)]
    action: ClusterAction,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Cluster id, controller, and every broker with its address, rack and state.
    Describe {
        /// Brokers to bootstrap from: HOST:PORT[,HOST:PORT...].
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap_server: String,
    },
}

/// How long tools wait for an unreachable cluster before giving up.
pub const TOOL_TIMEOUT_MS: &str = "10000";

/// Admin-client properties for `bootstrap`.
pub fn admin_properties(bootstrap: &str) -> Properties {
    Properties::new()
        .set("bootstrap.servers", bootstrap)
        .set("request.timeout.ms", TOOL_TIMEOUT_MS)
}

/// Adds `key=value` pairs to `props`.
pub fn add_pairs(props: &mut Properties, pairs: &[String]) -> Result<(), ClientError> {
    for pair in pairs {
        let (k, v) = Properties::parse_pair(pair)?;
        props.insert(k, v);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(err) => {
            eprintln!("tributary: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Topics(args) => topics::topics(args).await,
            Command::Configs(args) => topics::configs(args).await,
            Command::ConsoleProducer(args) => console::produce(args).await,
            Command::ConsoleConsumer(args) => console::consume(args).await,
            Command::ConsumerGroups(args) => groups::consumer_groups(args).await,
            Command::Cluster(ClusterArgs {
                action: ClusterAction::Describe { bootstrap_server },
            }) => describe_cluster(&bootstrap_server).await,
            Command::ProducerPerfTest(args) => perf::producer(args).await,
            Command::ConsumerPerfTest(args) => perf::consumer(args).await,
            Command::DeleteRecords(args) => records::delete_records(args).await,
            Command::DumpLog(args) => Ok(match dump::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("Error: {err}");
                    ExitCode::FAILURE
                }
            }),
        }
    });
    // Do not wait for background tasks (in-flight fetches) at exit.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn describe_cluster(bootstrap: &str) -> Result<ExitCode, ClientError> {
    let admin = tributary_client::Admin::new(&admin_properties(bootstrap))?;
    let metadata = admin.metadata().await?;
    println!("Cluster ID: {}", metadata.cluster_id);
    let coordinators = admin.coordinators().await.unwrap_or_default();
    match coordinators.iter().find(|c| c.2) {
        Some((id, address, _)) => println!("Controller: {id} ({address})"),
        None => match metadata.controller_id {
            Some(id) => println!("Controller: {id}"),
            None => println!("Controller: none"),
        },
    }
    for b in metadata.brokers.values() {
        let state = match b.state.as_str() {
            "RUNNING" => "running",
            "FENCED" => "fenced",
            _ => "shutting-down",
        };
        println!(
            "Broker {} at {} rack={} state={state}",
            b.id,
            b.address,
            b.rack.as_deref().unwrap_or("none")
        );
    }
    Ok(ExitCode::SUCCESS)
}
