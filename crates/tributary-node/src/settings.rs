//! Layered configuration over one serde struct per server.
//!
//! A server's settings are a `#[serde(deny_unknown_fields, default)]` struct: its fields are
//! the keys, its `Default` the defaults. [`keys`] reads the key list from serde's derive, so no
//! key is written anywhere else; [`load`] layers defaults, the TOML file, the `TRIBUTARY_*`
//! variables naming a key, and the flags' overrides.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::{self, DeserializeOwned, Visitor};

/// The keys of the settings struct `T`, in declaration order (serde's field names).
pub fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    // The probe refuses every value, so this always errs once it has seen the field list.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the field list a derived struct asks for.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("settings must be a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Refuses a config file holding a key outside `known`: a typo would silently keep a default.
pub fn check_file_keys(file: &Path, known: &[&str]) -> Result<()> {
    let only_file = config::Config::builder()
        .add_source(config::File::from(file).required(true))
        .build()
        .with_context(|| format!("reading {}", file.display()))?;
    let keys: HashMap<String, config::Value> = only_file.try_deserialize()?;
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

/// The `TRIBUTARY_*` variables of `vars` that name a key of `known`, keyed as the config
/// crate's environment source expects. Others (`TRIBUTARY_BIN_DIR`, `TRIBUTARY_SIM_SEED`, ...)
/// belong to tools and tests and are ignored.
fn key_variables(
    vars: impl Iterator<Item = (String, String)>,
    known: &[&str],
) -> HashMap<String, String> {
    vars.filter(|(name, _)| {
        name.strip_prefix("TRIBUTARY_")
            .is_some_and(|key| known.contains(&key.to_ascii_lowercase().as_str()))
    })
    .collect()
}

/// Layers `T`'s defaults, `file` (refusing unknown keys), the `TRIBUTARY_*` variables naming
/// a key, and `overrides` (the flags given), then deserializes `T`.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    overrides: Vec<(&'static str, config::Value)>,
) -> Result<T> {
    load_from(file, std::env::vars(), overrides)
}

fn load_from<T: DeserializeOwned>(
    file: Option<&Path>,
    vars: impl Iterator<Item = (String, String)>,
    overrides: Vec<(&'static str, config::Value)>,
) -> Result<T> {
    let known = keys::<T>();
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        check_file_keys(file, known)?;
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("TRIBUTARY")
            .prefix_separator("_")
            .try_parsing(true)
            .source(Some(key_variables(vars, known))),
    );
    for (key, value) in overrides {
        builder = builder.set_override(key, value)?;
    }
    builder
        .build()
        .context("reading the configuration")?
        .try_deserialize()
        // The value's own message (config adds "for key `...`") says it all.
        .map_err(Into::into)
}

/// Each key of `T` with its default, as a JSON object (`--print-config-keys`).
pub fn describe<T: serde::Serialize + Default>() -> Result<String> {
    Ok(serde_json::to_string_pretty(&T::default())?)
}

/// Deserializes a `metrics_listen` address, where empty means none (both servers' key).
pub fn metrics_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    use serde::Deserialize;
    match String::deserialize(d)?.as_str() {
        "" => Ok(None),
        text => text.parse().map(Some).map_err(|_| {
            de::Error::custom(format!(
                "metrics_listen `{text}` is not an IP address and port"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Probe {
        listen: String,
        port_count: u32,
        verbose: bool,
    }

    #[test]
    fn keys_come_from_the_struct() {
        assert_eq!(keys::<Probe>(), ["listen", "port_count", "verbose"]);
    }

    #[test]
    fn layers_override_in_order_and_foreign_variables_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "listen = \"file\"\nport_count = 2\n").unwrap();
        let vars = [
            ("TRIBUTARY_PORT_COUNT", "3"),
            ("TRIBUTARY_BIN_DIR", "/bin"),
            ("TRIBUTARY_SIM_SEED", "4"),
            ("OTHER_VERBOSE", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let probe: Probe = load_from(
            Some(&file),
            vars.clone().into_iter(),
            vec![("listen", "flag".into())],
        )
        .unwrap();
        assert_eq!(probe.listen, "flag");
        assert_eq!(probe.port_count, 3);
        assert!(!probe.verbose);
        let probe: Probe = load_from(None, vars.into_iter(), vec![]).unwrap();
        assert_eq!(probe.listen, "");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:1\"\nlisten_adress = \"x\"\n").unwrap();
        let err = check_file_keys(&file, &["listen"]).unwrap_err().to_string();
        assert!(err.contains("`listen_adress`"), "{err}");
        let err = load_from::<Probe>(Some(&file), std::iter::empty(), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting `listen_adress`"), "{err}");
        std::fs::write(&file, "listen = \"0.0.0.0:1\"\n").unwrap();
        check_file_keys(&file, &["listen"]).unwrap();
    }
}
