//! `tributary consumer-groups` (kafka-consumer-groups): list, describe (offsets, members,
//! state), reset offsets and delete groups, with Kafka's flags and column layout.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use clap::Args;
use tributary_client::admin::{GroupDescription, MemberDescription};
use tributary_client::{Admin, ClientError, Properties, TopicPartition};

#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// Brokers to bootstrap from: HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// List every consumer group.
    #[arg(long, conflicts_with_all = ["describe", "reset_offsets", "delete"])]
    list: bool,
    /// Describe a group: offsets and lag (default), --members or --state.
    #[arg(long, requires = "group", conflicts_with_all = ["reset_offsets", "delete"])]
    describe: bool,
    /// Reset a group's committed offsets (the group must have no active members).
    #[arg(long, requires = "group", conflicts_with = "delete")]
    reset_offsets: bool,
    /// Delete a group and its offsets (the group must have no active members).
    #[arg(long, requires = "group")]
    delete: bool,
    /// The group.
    #[arg(long)]
    group: Option<String>,
    /// With --describe: one line per member.
    #[arg(long, requires = "describe", conflicts_with = "state")]
    members: bool,
    /// With --describe: the group's coordinator, assignor, state and size.
    #[arg(long, requires = "describe")]
    state: bool,
    /// With --reset-offsets: the topic (`T` or `T:0,1,2`); repeatable.
    #[arg(long)]
    topic: Vec<String>,
    /// With --reset-offsets: every topic the group has offsets for.
    #[arg(long, conflicts_with = "topic")]
    all_topics: bool,
    /// Reset to the log start.
    #[arg(long, requires = "reset_offsets")]
    to_earliest: bool,
    /// Reset to the log end (high watermark).
    #[arg(long, requires = "reset_offsets")]
    to_latest: bool,
    /// Reset to this offset.
    #[arg(long, requires = "reset_offsets", allow_hyphen_values = true)]
    to_offset: Option<i64>,
    /// Move the committed offset by N (negative: back).
    #[arg(long, requires = "reset_offsets", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Reset to the first offset at or after a time: YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm].
    #[arg(long, requires = "reset_offsets")]
    to_datetime: Option<String>,
    /// Show the new offsets without changing them.
    #[arg(long, requires = "reset_offsets", conflicts_with = "execute")]
    dry_run: bool,
    /// Change the offsets.
    #[arg(long, requires = "reset_offsets")]
    execute: bool,
}

pub async fn consumer_groups(args: GroupsArgs) -> Result<ExitCode, ClientError> {
    let props = Properties::new()
        .set("bootstrap.servers", &args.bootstrap_server)
        .set("request.timeout.ms", crate::TOOL_TIMEOUT_MS);
    let admin = Admin::new(&props)?;
    if args.list {
        for g in admin.list_groups().await? {
            println!("{}", g.group_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(group) = args.group.clone() else {
        return Err(ClientError::Config(
            "exactly one of --list, --describe, --reset-offsets or --delete is required (the last three with --group)".into(),
        ));
    };
    if args.describe {
        return describe(&admin, &group, &args).await;
    }
    if args.reset_offsets {
        return reset(&admin, &group, &args).await;
    }
    if args.delete {
        return match admin.delete_group(&group).await {
            Ok(()) => {
                println!("Deletion of requested consumer groups ('{group}') was successful.");
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!(
                    "Error: Deletion of some consumer groups failed:\n* Group '{group}' could not be deleted due to: {err}"
                );
                Ok(ExitCode::FAILURE)
            }
        };
    }
    Err(ClientError::Config(
        "exactly one of --list, --describe, --reset-offsets or --delete is required".into(),
    ))
}

/// Prints rows as Kafka does: left-aligned columns as wide as their widest cell, one space
/// apart, the last column unpadded.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$} ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    println!();
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

async fn describe(admin: &Admin, group: &str, args: &GroupsArgs) -> Result<ExitCode, ClientError> {
    let description = admin.describe_group(group).await?;
    let offsets = admin.list_group_offsets(group).await?;
    if description.state == "Dead" && offsets.is_empty() {
        eprintln!("Error: Consumer group '{group}' does not exist.");
        return Ok(ExitCode::FAILURE);
    }
    if args.state {
        let assignor = if description.assignor.is_empty() {
            "".to_owned()
        } else {
            description.assignor.clone()
        };
        print_table(
            &[
                "GROUP",
                "COORDINATOR (ID)",
                "ASSIGNMENT-STRATEGY",
                "STATE",
                "#MEMBERS",
            ],
            &[vec![
                group.to_owned(),
                format!(
                    "{} ({})",
                    description.coordinator.1, description.coordinator.0
                ),
                assignor,
                description.state.clone(),
                description.members.len().to_string(),
            ]],
        );
        return Ok(ExitCode::SUCCESS);
    }
    if description.members.is_empty() {
        println!("\nConsumer group '{group}' has no active members.");
    }
    if args.members {
        let rows: Vec<Vec<String>> = description
            .members
            .iter()
            .map(|m| {
                vec![
                    group.to_owned(),
                    m.member_id.clone(),
                    m.host.clone(),
                    m.client_id.clone(),
                    m.assignment.len().to_string(),
                ]
            })
            .collect();
        print_table(
            &["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"],
            &rows,
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows = offset_rows(admin, group, &description, &offsets).await?;
    print_table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// One row per partition with a committed offset or an owner.
async fn offset_rows(
    admin: &Admin,
    group: &str,
    description: &GroupDescription,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<Vec<Vec<String>>, ClientError> {
    let mut owners: BTreeMap<TopicPartition, &MemberDescription> = BTreeMap::new();
    for m in &description.members {
        for tp in &m.assignment {
            owners.insert(tp.clone(), m);
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        offsets.keys().chain(owners.keys()).cloned().collect();
    let mut rows = Vec::new();
    for tp in partitions {
        let end = admin.list_offset(&tp, -1).await.ok();
        let current = offsets.get(&tp).copied();
        let lag = match (current, end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        };
        let owner = owners.get(&tp);
        rows.push(vec![
            group.to_owned(),
            tp.topic.clone(),
            tp.partition.to_string(),
            dash(current),
            dash(end),
            dash(lag),
            dash(owner.map(|m| m.member_id.clone())),
            dash(owner.map(|m| m.host.clone())),
            dash(owner.map(|m| m.client_id.clone())),
        ]);
    }
    Ok(rows)
}

async fn reset(admin: &Admin, group: &str, args: &GroupsArgs) -> Result<ExitCode, ClientError> {
    let specs = [
        args.to_earliest,
        args.to_latest,
        args.to_offset.is_some(),
        args.shift_by.is_some(),
        args.to_datetime.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if specs != 1 {
        return Err(ClientError::Config(
            "--reset-offsets needs exactly one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime".into(),
        ));
    }
    if args.topic.is_empty() && !args.all_topics {
        return Err(ClientError::Config(
            "--reset-offsets needs --topic or --all-topics".into(),
        ));
    }
    let datetime = args
        .to_datetime
        .as_deref()
        .map(parse_datetime)
        .transpose()?;
    let description = admin.describe_group(group).await?;
    if !description.members.is_empty() || !matches!(description.state.as_str(), "Empty" | "Dead") {
        eprintln!(
            "Error: Assignments can only be reset if the group '{group}' is inactive, but the current state is {}.",
            description.state
        );
        return Ok(ExitCode::FAILURE);
    }
    let committed = admin.list_group_offsets(group).await?;
    let mut partitions: BTreeSet<TopicPartition> = BTreeSet::new();
    if args.all_topics {
        partitions.extend(committed.keys().cloned());
    }
    for spec in &args.topic {
        let (topic, list) = match spec.split_once(':') {
            Some((t, ps)) => (t, Some(ps)),
            None => (spec.as_str(), None),
        };
        match list {
            Some(ps) => {
                for p in ps.split(',') {
                    let p: i32 = p.trim().parse().map_err(|_| {
                        ClientError::Config(format!("--topic {spec}: `{p}` is not a partition"))
                    })?;
                    partitions.insert(TopicPartition::new(topic, p));
                }
            }
            None => {
                let count = admin.cluster().partition_count(topic).await?;
                partitions.extend((0..count as i32).map(|p| TopicPartition::new(topic, p)));
            }
        }
    }
    let mut new = BTreeMap::new();
    for tp in &partitions {
        let earliest = admin.list_offset(tp, -2).await?;
        let latest = admin.list_offset(tp, -1).await?;
        let target = if args.to_earliest {
            earliest
        } else if args.to_latest {
            latest
        } else if let Some(o) = args.to_offset {
            o
        } else if let Some(n) = args.shift_by {
            committed
                .get(tp)
                .copied()
                .unwrap_or(latest)
                .saturating_add(n)
        } else if let Some(ts) = datetime {
            match admin.list_offset(tp, ts).await? {
                -1 => latest,
                o => o,
            }
        } else {
            unreachable!("one reset spec is set")
        };
        new.insert(tp.clone(), target.clamp(earliest, latest));
    }
    let rows: Vec<Vec<String>> = new
        .iter()
        .map(|(tp, o)| {
            vec![
                group.to_owned(),
                tp.topic.clone(),
                tp.partition.to_string(),
                o.to_string(),
            ]
        })
        .collect();
    if args.execute {
        admin.alter_group_offsets(group, &new).await?;
    } else if !args.dry_run {
        eprintln!(
            "WARN: No action will be performed as the --execute option is missing. In a future major release, the default behavior of this command will be to prompt the user before executing the reset rather than doing a dry run. You should add the --dry-run option explicitly if you are scripting this command and want to keep the current default behavior without prompting."
        );
    }
    print_table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// `YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm|-hh:mm]` (local time is taken as UTC) to epoch ms.
fn parse_datetime(text: &str) -> Result<i64, ClientError> {
    let bad = || {
        ClientError::Config(format!(
            "--to-datetime `{text}` is not YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm]"
        ))
    };
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = z[1..]
            .split_once(':')
            .unwrap_or((&z[1..3.min(z.len())], "0"));
        let h: i64 = hh.parse().map_err(|_| bad())?;
        let mi: i64 = mm.parse().map_err(|_| bad())?;
        (t, sign * (h * 60 + mi))
    } else {
        (rest, 0)
    };
    let (hms, millis) = match time.split_once('.') {
        Some((hms, ms)) => (hms, ms.parse::<i64>().map_err(|_| bad())?),
        None => (time, 0),
    };
    let mut t = hms.split(':');
    let (hh, mi, ss): (i64, i64, i64) = (
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        t.next().and_then(|v| v.parse().ok()).unwrap_or(0),
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mi > 59 || ss > 60 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + hh * 3600 + mi * 60 + ss) - offset_min * 60) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_as_kafka_writes_them() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00.000").unwrap(), 0);
        assert_eq!(
            parse_datetime("2026-11-26T10:00:00Z").unwrap(),
            1_795_687_200_000
        );
        assert_eq!(
            parse_datetime("2026-11-26T12:00:00.500+02:00").unwrap(),
            1_795_687_200_500
        );
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2026-13-01T00:00:00").is_err());
    }
}
