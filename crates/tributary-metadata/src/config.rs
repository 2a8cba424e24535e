//! The topic configuration table: every key any part of Tributary reads, with its type, valid
//! range and Kafka's default. Topic configs are validated here on create and alter, so a broker
//! never receives a value it cannot apply.

use std::collections::BTreeMap;

use crate::error::ApiError;

/// The type and valid range of a config value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConfigType {
    /// A 64-bit integer in `[min, max]`.
    Long {
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
    },
    /// A 32-bit integer in `[min, max]`.
    Int {
        /// Smallest valid value.
        min: i32,
        /// Largest valid value.
        max: i32,
    },
    /// A floating-point number in `[min, max]`.
    Double {
        /// Smallest valid value.
        min: f64,
        /// Largest valid value.
        max: f64,
    },
    /// `true` or `false`.
    Boolean,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// A non-empty comma-separated list of distinct items from a fixed set.
    ListOf(&'static [&'static str]),
}

/// One topic config key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfigKey {
    /// Kafka's name for it.
    pub name: &'static str,
    /// Type and range.
    pub kind: ConfigType,
    /// Kafka's default, as text.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

const LONG_MAX: i64 = i64::MAX;

/// Every topic config key Tributary knows, sorted by name.
pub const TOPIC_CONFIGS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        kind: ConfigType::ListOf(&["compact", "delete"]),
        default: "delete",
        doc: "delete old segments (retention), compact by key, or both",
    },
    ConfigKey {
        name: "compression.type",
        kind: ConfigType::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        default: "producer",
        doc: "codec of stored batches; `producer` keeps the producer's",
    },
    ConfigKey {
        name: "delete.retention.ms",
        kind: ConfigType::Long {
            min: 0,
            max: LONG_MAX,
        },
        default: "86400000",
        doc: "how long tombstones stay in a compacted topic",
    },
    ConfigKey {
        name: "flush.messages",
        kind: ConfigType::Long {
            min: 1,
            max: LONG_MAX,
        },
        default: "9223372036854775807",
        doc: "fsync after this many records (the default leaves durability to replication)",
    },
    ConfigKey {
        name: "flush.ms",
        kind: ConfigType::Long {
            min: 0,
            max: LONG_MAX,
        },
        default: "9223372036854775807",
        doc: "fsync when the oldest unflushed record is this old",
    },
    ConfigKey {
        name: "max.compaction.lag.ms",
        kind: ConfigType::Long {
            min: 1,
            max: LONG_MAX,
        },
        default: "9223372036854775807",
        doc: "a record stays uncompacted at most this long (the cleaner then runs whatever the dirty ratio)",
    },
    ConfigKey {
        name: "max.message.bytes",
        kind: ConfigType::Int {
            min: 61,
            max: i32::MAX,
        },
        default: "1048588",
        doc: "largest record batch the leader accepts",
    },
    ConfigKey {
        name: "message.timestamp.type",
        kind: ConfigType::OneOf(&["CreateTime", "LogAppendTime"]),
        default: "CreateTime",
        doc: "keep the producer's timestamps or stamp the leader's clock",
    },
    ConfigKey {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::Double { min: 0.0, max: 1.0 },
        default: "0.5",
        doc: "share of a log not yet compacted before the cleaner runs",
    },
    ConfigKey {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long {
            min: 0,
            max: LONG_MAX,
        },
        default: "0",
        doc: "a record stays uncompacted at least this long",
    },
    ConfigKey {
        name: "min.insync.replicas",
        kind: ConfigType::Int {
            min: 1,
            max: i32::MAX,
        },
        default: "1",
        doc: "in-sync replicas needed for an acks=all write",
    },
    ConfigKey {
        name: "retention.bytes",
        kind: ConfigType::Long {
            min: -1,
            max: LONG_MAX,
        },
        default: "-1",
        doc: "size a partition's log is kept at (-1: no limit)",
    },
    ConfigKey {
        name: "retention.ms",
        kind: ConfigType::Long {
            min: -1,
            max: LONG_MAX,
        },
        default: "604800000",
        doc: "age after which sealed segments are deleted (-1: forever)",
    },
    // Kafka 3 accepts 14 bytes, Kafka 4 one MiB; our storage engine's floor is 1 KiB, which
    // keeps tests of rolling and retention cheap.
    ConfigKey {
        name: "segment.bytes",
        kind: ConfigType::Int {
            min: 1024,
            max: i32::MAX,
        },
        default: "1073741824",
        doc: "size at which the active segment rolls",
    },
    ConfigKey {
        name: "segment.ms",
        kind: ConfigType::Long {
            min: 1,
            max: LONG_MAX,
        },
        default: "604800000",
        doc: "age at which the active segment rolls",
    },
    ConfigKey {
        name: "unclean.leader.election.enable",
        kind: ConfigType::Boolean,
        default: "false",
        doc: "elect an out-of-sync replica when no in-sync one is alive (may lose records)",
    },
];

/// The table entry for `name`.
pub fn config_key(name: &str) -> Option<&'static ConfigKey> {
    TOPIC_CONFIGS
        .binary_search_by(|key| key.name.cmp(name))
        .ok()
        .map(|i| &TOPIC_CONFIGS[i])
}

/// Checks one value against its key, returning it in canonical form.
pub fn validate_value(name: &str, value: &str) -> Result<String, ApiError> {
    let key = config_key(name).ok_or_else(|| {
        ApiError::invalid_config(format!(
            "unknown topic config `{name}` (known: {})",
            TOPIC_CONFIGS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let bad = |why: String| {
        ApiError::invalid_config(format!("invalid value `{value}` for `{name}`: {why}"))
    };
    let trimmed = value.trim();
    match key.kind {
        ConfigType::Long { min, max } => {
            let v: i64 = trimmed.parse().map_err(|_| bad("not an integer".into()))?;
            if v < min || v > max {
                return Err(bad(format!("must be in [{min}, {max}]")));
            }
            Ok(v.to_string())
        }
        ConfigType::Int { min, max } => {
            let v: i32 = trimmed
                .parse()
                .map_err(|_| bad("not a 32-bit integer".into()))?;
            if v < min || v > max {
                return Err(bad(format!("must be in [{min}, {max}]")));
            }
            Ok(v.to_string())
        }
        ConfigType::Double { min, max } => {
            let v: f64 = trimmed.parse().map_err(|_| bad("not a number".into()))?;
            if !(min..=max).contains(&v) {
                return Err(bad(format!("must be in [{min}, {max}]")));
            }
            Ok(v.to_string())
        }
        ConfigType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok("true".into()),
            "false" => Ok("false".into()),
            _ => Err(bad("must be true or false".into())),
        },
        ConfigType::OneOf(choices) => choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(trimmed))
            .map(|c| (*c).to_owned())
            .ok_or_else(|| bad(format!("must be one of {}", choices.join(", ")))),
        ConfigType::ListOf(choices) => {
            let mut items = Vec::new();
            for item in trimmed.split(',').map(str::trim) {
                let canonical = choices
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(item))
                    .ok_or_else(|| bad(format!("items must be from {}", choices.join(", "))))?;
                if items.contains(canonical) {
                    return Err(bad(format!("`{canonical}` listed twice")));
                }
                items.push(*canonical);
            }
            Ok(items.join(","))
        }
    }
}

/// Validates a whole set of overrides (create topic, or the result of an alter): every key must
/// be known and every value in range; returns them in canonical form.
pub fn validate_configs(
    configs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    configs
        .iter()
        .map(|(name, value)| Ok((name.clone(), validate_value(name, value)?)))
        .collect()
}

/// One change to a topic's config overrides: Kafka's AlterConfigs (`replace` with `set`) and
/// IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// Every override not in `set` returns to its default (Kafka's legacy AlterConfigs).
    pub replace: bool,
    /// Keys to set.
    pub set: BTreeMap<String, String>,
    /// Keys to return to their defaults.
    pub delete: Vec<String>,
    /// Comma-separated items to add to list keys (unless already there).
    pub append: BTreeMap<String, String>,
    /// Comma-separated items to remove from list keys.
    pub subtract: BTreeMap<String, String>,
}

/// The overrides `current` becomes with `change`, validated and canonical. APPEND and
/// SUBTRACT work on the current value, the default when the key is not overridden, and only on
/// list keys (INVALID_CONFIG otherwise, as Kafka says it).
pub fn alter_configs(
    current: &BTreeMap<String, String>,
    change: &ConfigChange,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut configs = if change.replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for key in &change.delete {
        if config_key(key).is_none() {
            return Err(ApiError::invalid_config(format!(
                "unknown topic config `{key}`"
            )));
        }
        configs.remove(key);
    }
    configs.extend(change.set.clone());
    let lists = change
        .append
        .iter()
        .map(|(k, v)| (k, v, true))
        .chain(change.subtract.iter().map(|(k, v)| (k, v, false)));
    for (key, items, append) in lists {
        let op = if append { "append" } else { "subtract" };
        if !matches!(config_key(key).map(|k| k.kind), Some(ConfigType::ListOf(_))) {
            return Err(ApiError::invalid_config(format!(
                "config value {op} is not allowed for config key `{key}` (not a list)"
            )));
        }
        let items: Vec<&str> = items
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        let mut value: Vec<String> = effective(&configs, key)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .collect();
        if append {
            for item in items {
                if !value.iter().any(|v| v.eq_ignore_ascii_case(item)) {
                    value.push(item.to_owned());
                }
            }
        } else {
            value.retain(|v| !items.iter().any(|i| v.eq_ignore_ascii_case(i)));
        }
        configs.insert(key.clone(), value.join(","));
    }
    validate_configs(&configs)
}

/// The effective value of `name` for a topic with `overrides`: the override, else the default.
pub fn effective<'a>(overrides: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    overrides
        .get(name)
        .map(String::as_str)
        .or_else(|| config_key(name).map(|k| k.default))
}

#[cfg(test)]
mod tests {
    use tributary_proto::common::v1::ErrorCode;

    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn append_and_subtract_start_from_the_default_and_only_touch_lists() {
        let none = BTreeMap::new();
        let appended = alter_configs(
            &none,
            &ConfigChange {
                append: configs(&[("cleanup.policy", "compact")]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(appended, configs(&[("cleanup.policy", "delete,compact")]));
        // Appending what is there changes nothing; subtracting removes it.
        let again = alter_configs(
            &appended,
            &ConfigChange {
                append: configs(&[("cleanup.policy", "DELETE")]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(again, appended);
        let subtracted = alter_configs(
            &appended,
            &ConfigChange {
                subtract: configs(&[("cleanup.policy", "delete")]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(subtracted, configs(&[("cleanup.policy", "compact")]));
        // Subtracting every item leaves an invalid (empty) list.
        let emptied = alter_configs(
            &subtracted,
            &ConfigChange {
                subtract: configs(&[("cleanup.policy", "compact")]),
                ..Default::default()
            },
        );
        assert_eq!(emptied.unwrap_err().code(), ErrorCode::InvalidConfig);
        let not_a_list = alter_configs(
            &none,
            &ConfigChange {
                append: configs(&[("retention.ms", "5")]),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(not_a_list.code(), ErrorCode::InvalidConfig);
        assert!(not_a_list.message.contains("retention.ms"), "{not_a_list}");
    }

    #[test]
    fn replace_resets_every_override_not_set() {
        let current = configs(&[("retention.ms", "1000"), ("segment.bytes", "2048")]);
        let replaced = alter_configs(
            &current,
            &ConfigChange {
                replace: true,
                set: configs(&[("segment.bytes", "4096")]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(replaced, configs(&[("segment.bytes", "4096")]));
        let merged = alter_configs(
            &current,
            &ConfigChange {
                set: configs(&[("segment.bytes", "4096")]),
                delete: vec!["retention.ms".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(merged, configs(&[("segment.bytes", "4096")]));
        let unknown = alter_configs(
            &current,
            &ConfigChange {
                delete: vec!["retention.hours".into()],
                ..Default::default()
            },
        );
        assert_eq!(unknown.unwrap_err().code(), ErrorCode::InvalidConfig);
    }

    #[test]
    fn the_table_is_sorted_and_defaults_are_valid() {
        for pair in TOPIC_CONFIGS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for key in TOPIC_CONFIGS {
            assert_eq!(
                validate_value(key.name, key.default).unwrap(),
                key.default,
                "{}",
                key.name
            );
        }
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let err = validate_value("retention.hours", "1").unwrap_err();
        assert!(
            err.message
                .contains("unknown topic config `retention.hours`"),
            "{err}"
        );
        let err = validate_value("min.insync.replicas", "0").unwrap_err();
        assert!(err.message.contains("`min.insync.replicas`"), "{err}");
        assert!(err.message.contains("[1, 2147483647]"), "{err}");
        assert!(validate_value("segment.bytes", "3000000000").is_err());
        assert!(validate_value("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_value("unclean.leader.election.enable", "yes").is_err());
        assert!(validate_value("cleanup.policy", "compact,compact").is_err());
        assert_eq!(
            validate_value("cleanup.policy", "Delete, compact").unwrap(),
            "delete,compact"
        );
        assert_eq!(
            validate_value("message.timestamp.type", "logappendtime").unwrap(),
            "LogAppendTime"
        );
    }
}
