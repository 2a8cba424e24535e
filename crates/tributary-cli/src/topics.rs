//! `tributary topics` and `tributary configs`: Kafka's `kafka-topics` and `kafka-configs`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use tributary_client::admin::NewTopic;
use tributary_client::cluster::TopicInfo;
use tributary_client::{Admin, ClientError};

use crate::admin_properties;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["create", "list", "describe", "delete", "alter"])))]
pub struct TopicsArgs {
    /// Brokers to bootstrap from: HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// Create a topic.
    #[arg(long)]
    create: bool,
    /// List topic names.
    #[arg(long)]
    list: bool,
    /// Describe topics (all, or --topic).
    #[arg(long)]
    describe: bool,
    /// Delete a topic.
    #[arg(long)]
    delete: bool,
    /// Add partitions to a topic (--partitions).
    #[arg(long)]
    alter: bool,
    /// The topic.
    #[arg(long)]
    topic: Option<String>,
    /// Partition count (create, alter).
    #[arg(long)]
    partitions: Option<i32>,
    /// Replication factor (create).
    #[arg(long)]
    replication_factor: Option<i32>,
    /// A topic config for create: key=value (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
    /// Leave internal topics (names starting with `__`) out of --list.
    #[arg(long)]
    exclude_internal: bool,
    /// Describe only partitions whose ISR is smaller than their replica set.
    #[arg(long)]
    under_replicated_partitions: bool,
    /// Describe only partitions without a leader.
    #[arg(long)]
    unavailable_partitions: bool,
    /// Succeed if the topic already exists (create) or does not (delete, alter).
    #[arg(long)]
    if_not_exists: bool,
}

fn need<T: Clone>(value: &Option<T>, flag: &str, action: &str) -> Result<T, ClientError> {
    value
        .clone()
        .ok_or_else(|| ClientError::Config(format!("{action} needs {flag}")))
}

/// Kafka prints topic ids as URL-safe base64 without padding (22 characters).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

pub async fn topics(args: TopicsArgs) -> Result<ExitCode, ClientError> {
    let admin = Admin::new(&admin_properties(&args.bootstrap_server))?;
    if args.create {
        let topic = need(&args.topic, "--topic", "--create")?;
        let mut configs = BTreeMap::new();
        for pair in &args.configs {
            let (k, v) = tributary_client::Properties::parse_pair(pair)?;
            configs.insert(k, v);
        }
        let created = admin
            .create_topic(NewTopic {
                name: topic.clone(),
                partitions: args.partitions.unwrap_or(1),
                replication_factor: args.replication_factor.unwrap_or(1),
                configs,
            })
            .await;
        match created {
            Ok(()) => println!("Created topic {topic}."),
            Err(err)
                if args.if_not_exists
                    && err.code() == Some(tributary_client::ErrorCode::TopicAlreadyExists) => {}
            Err(err) => return Err(err),
        }
    } else if args.list {
        for name in admin.list_topics().await? {
            if !(args.exclude_internal && name.starts_with("__")) {
                println!("{name}");
            }
        }
    } else if args.describe {
        let names: Vec<String> = args.topic.iter().cloned().collect();
        let topics = admin.describe_topics(&names).await?;
        for topic in topics {
            describe(&admin, &topic, &args).await?;
        }
    } else if args.delete {
        let topic = need(&args.topic, "--topic", "--delete")?;
        admin.delete_topic(&topic).await?;
    } else if args.alter {
        let topic = need(&args.topic, "--topic", "--alter")?;
        let partitions = need(&args.partitions, "--partitions", "--alter")?;
        admin.create_partitions(&topic, partitions).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe(admin: &Admin, topic: &TopicInfo, args: &TopicsArgs) -> Result<(), ClientError> {
    let filtered = args.under_replicated_partitions || args.unavailable_partitions;
    let selected: Vec<_> = topic
        .partitions
        .iter()
        .filter(|p| {
            !filtered
                || (args.under_replicated_partitions && p.isr.len() < p.replicas.len())
                || (args.unavailable_partitions && p.leader.is_none())
        })
        .collect();
    if !filtered {
        let configs = admin
            .describe_configs(&topic.name)
            .await?
            .into_iter()
            .filter(|c| c.is_override)
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {configs}",
            topic.name,
            base64url(topic.id.as_bytes()),
            topic.partitions.len(),
            topic.partitions.first().map_or(0, |p| p.replicas.len())
        );
    }
    for p in selected {
        println!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            topic.name,
            p.partition,
            p.leader.map_or("none".to_owned(), |l| l.to_string()),
            join(&p.replicas),
            join(&p.isr)
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["describe", "alter"])))]
pub struct ConfigsArgs {
    /// Brokers to bootstrap from: HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// Only `topics` is supported.
    #[arg(long, value_parser = ["topics"])]
    entity_type: String,
    /// The topic.
    #[arg(long)]
    entity_name: String,
    /// Show the topic's configs.
    #[arg(long)]
    describe: bool,
    /// Change the topic's configs (--add-config, --delete-config).
    #[arg(long)]
    alter: bool,
    /// Configs to set: k=v[,k=v...].
    #[arg(long, value_name = "K=V,...")]
    add_config: Option<String>,
    /// Configs to return to their defaults (repeatable or comma-separated).
    #[arg(long, value_name = "KEY")]
    delete_config: Vec<String>,
    /// With --describe: every config, defaults included.
    #[arg(long)]
    all: bool,
}

pub async fn configs(args: ConfigsArgs) -> Result<ExitCode, ClientError> {
    let admin = Admin::new(&admin_properties(&args.bootstrap_server))?;
    if args.describe {
        let entries = admin.describe_configs(&args.entity_name).await?;
        println!("Dynamic configs for topic {} are:", args.entity_name);
        for e in entries.iter().filter(|e| args.all || e.is_override) {
            println!("  {}={}", e.name, e.value);
        }
    } else {
        let mut set = BTreeMap::new();
        if let Some(list) = &args.add_config {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = tributary_client::Properties::parse_pair(pair)?;
                set.insert(k, v);
            }
        }
        let delete: Vec<String> = args
            .delete_config
            .iter()
            .flat_map(|d| d.split(','))
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty())
            .collect();
        if set.is_empty() && delete.is_empty() {
            return Err(ClientError::Config(
                "--alter needs --add-config or --delete-config".into(),
            ));
        }
        admin.alter_configs(&args.entity_name, set, delete).await?;
        println!("Completed updating config for topic {}.", args.entity_name);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn topic_ids_print_as_kafka_does() {
        assert_eq!(super::base64url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(super::base64url(&[0xffu8; 16]).len(), 22);
        assert_eq!(super::base64url(b"\xfb\xff"), "-_8");
    }
}
