//! `tributary delete-records`: Kafka's `kafka-delete-records`, with its JSON file, its output
//! and its exit status (0 once the call is made, with each partition's error on its line).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tributary_client::{Admin, ClientError, TopicPartition};

use crate::admin_properties;

#[derive(Debug, Args)]
pub struct DeleteRecordsArgs {
    /// Brokers to bootstrap from: HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// The partitions and the offsets to delete the records below (-1: the high watermark),
    /// as Kafka's JSON: {"partitions": [{"topic": "t", "partition": 0, "offset": 5}],
    /// "version": 1}.
    #[arg(long, value_name = "FILE")]
    offset_json_file: PathBuf,
}

/// Kafka's `kafka-delete-records`.
pub async fn delete_records(args: DeleteRecordsArgs) -> Result<ExitCode, ClientError> {
    let text = std::fs::read_to_string(&args.offset_json_file).map_err(|e| {
        ClientError::Config(format!(
            "cannot read {}: {e}",
            args.offset_json_file.display()
        ))
    })?;
    let offsets = parse_offsets(&text).map_err(ClientError::Config)?;
    let admin = Admin::new(&admin_properties(&args.bootstrap_server))?;
    println!("Executing records delete operation");
    let results = admin.delete_records(&offsets).await?;
    println!("Records delete operation completed:");
    for (tp, result) in results {
        match result {
            Ok(low_watermark) => println!("partition: {tp}\tlow_watermark: {low_watermark}"),
            Err(err) => println!("partition: {tp}\terror: {err}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Kafka's offset JSON (version 1, the only one; a missing version is 1), with its messages
/// for a file that is not JSON, has no `partitions`, another version, or a partition twice.
fn parse_offsets(text: &str) -> Result<BTreeMap<TopicPartition, i64>, String> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| "The input string is not a valid JSON".to_owned())?;
    let object = json
        .as_object()
        .ok_or("The offset JSON must be an object with a `partitions` field")?;
    match object.get("version") {
        None => {}
        Some(v) if v.as_i64() == Some(1) => {}
        Some(v) => return Err(format!("Not supported version field value {v}")),
    }
    let partitions = object
        .get("partitions")
        .ok_or("Missing partitions field")?
        .as_array()
        .ok_or("The partitions field must be an array")?;
    let mut offsets = BTreeMap::new();
    let mut duplicates = Vec::new();
    for (i, entry) in partitions.iter().enumerate() {
        let field = |name: &str| {
            entry
                .get(name)
                .ok_or_else(|| format!("partitions[{i}] has no `{name}` field"))
        };
        let topic = field("topic")?
            .as_str()
            .ok_or_else(|| format!("partitions[{i}].topic must be a string"))?;
        let partition = field("partition")?
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| format!("partitions[{i}].partition must be a 32-bit integer"))?;
        let offset = field("offset")?
            .as_i64()
            .ok_or_else(|| format!("partitions[{i}].offset must be a 64-bit integer"))?;
        let tp = TopicPartition::new(topic, partition);
        if offsets.insert(tp.clone(), offset).is_some() && !duplicates.contains(&tp) {
            duplicates.push(tp);
        }
    }
    if !duplicates.is_empty() {
        let names: Vec<String> = duplicates.iter().map(ToString::to_string).collect();
        return Err(format!(
            "Offset json file contains duplicate topic partitions: {}",
            names.join(",")
        ));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kafkas_offset_json() {
        let offsets = parse_offsets(
            r#"{"partitions": [{"topic": "t", "partition": 0, "offset": 5},
                {"topic": "u", "partition": 2, "offset": -1}], "version": 1}"#,
        )
        .unwrap();
        assert_eq!(
            offsets,
            BTreeMap::from([
                (TopicPartition::new("t", 0), 5),
                (TopicPartition::new("u", 2), -1)
            ])
        );
        let no_version = parse_offsets(r#"{"partitions": []}"#).unwrap();
        assert!(no_version.is_empty());
    }

    #[test]
    fn refuses_what_kafka_refuses_with_its_messages() {
        let cases = [
            ("{", "The input string is not a valid JSON"),
            (r#"{"version": 1}"#, "Missing partitions field"),
            (
                r#"{"partitions": [], "version": 2}"#,
                "Not supported version field value 2",
            ),
            (
                r#"{"partitions": [{"topic": "t", "partition": 0, "offset": 1},
                    {"topic": "t", "partition": 0, "offset": 2}]}"#,
                "Offset json file contains duplicate topic partitions: t-0",
            ),
            (
                r#"{"partitions": [{"topic": "t", "offset": 1}]}"#,
                "partitions[0] has no `partition` field",
            ),
            (
                r#"{"partitions": [{"topic": "t", "partition": 4294967296, "offset": 1}]}"#,
                "partitions[0].partition must be a 32-bit integer",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(parse_offsets(text).unwrap_err(), message, "{text}");
        }
    }
}
