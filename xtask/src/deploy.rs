//! `cargo xtask deploy-check`: checks deploy/ against the binaries, with no Docker, Kubernetes
//! or Python.
//!
//! What it checks, for every file under deploy/:
//! - everything parses (YAML, TOML, JSON, the systemd units' and Dockerfiles' lines);
//! - every flag a manifest, unit or Compose file passes exists in the binary's `--help`, every
//!   config key (TOML files, `TRIBUTARY_*` variables) is one the binary prints with
//!   `--print-config-keys`, and the `healthcheck` subcommand exists;
//! - names, ports and addresses agree: advertised addresses are the pods' / services' DNS names
//!   on the ports they listen on, probes and health checks ask the gRPC port, Services and
//!   PodDisruptionBudgets select the StatefulSets' pods, metrics ports match, data directories
//!   are the mounted volumes, the uid is the images' user;
//! - every metric the Grafana dashboard queries is one a server prints with
//!   `--print-metric-names`.
//!
//! YAML is read with `yaml-rust2` (pure Rust, default features off): the Compose file uses
//! anchors, merge keys (`<<: *broker`) and flow collections, and the manifests block scalars
//! (`|`) holding TOML; a line-based reader would have to re-implement all of that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use yaml_rust2::Yaml;
#[cfg(test)]
use yaml_rust2::YamlLoader;

mod compose;
mod kubernetes;

/// The uid and gid the images and pods run as.
const UID: i64 = 10001;
/// The servers, each with its Dockerfile, default gRPC port, systemd unit and example config.
const SERVERS: [(&str, &str, u16, &str); 2] = [
    (
        "tributary-coordinator",
        "coordinator.Dockerfile",
        9191,
        "coordinator.toml",
    ),
    ("tributary-broker", "broker.Dockerfile", 9092, "broker.toml"),
];

/// `cargo xtask deploy-check [--bin-dir DIR]`.
pub fn deploy_check(args: &[String], root: &Path, default_bin_dir: PathBuf) -> Result<()> {
    let mut bin_dir = default_bin_dir;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--bin-dir" => bin_dir = root.join(rest.next().context("--bin-dir needs a value")?),
            other => bail!("unknown option `{other}` for `cargo xtask deploy-check`"),
        }
    }
    eprintln!(
        "xtask: deploy-check with the binaries of {}",
        bin_dir.display()
    );
    let binaries = SERVERS
        .iter()
        .map(|(name, ..)| Ok((*name, Binary::probe(&bin_dir, name)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let mut checker = Checker::new(root, &binaries);
    checker.check_all();
    checker.verify_units();
    checker.finish()
}

/// What a server binary accepts and exposes, as it prints it.
#[derive(Debug, Default)]
pub struct Binary {
    path: PathBuf,
    flags: BTreeSet<String>,
    subcommands: BTreeSet<String>,
    keys: BTreeSet<String>,
    metrics: BTreeSet<String>,
}

impl Binary {
    /// Asks `bin_dir/name` for its `--help`, config keys and metric names.
    fn probe(bin_dir: &Path, name: &str) -> Result<Self> {
        let path = bin_dir.join(name);
        if !path.is_file() {
            bail!("no {}; build it first (cargo build --bins)", path.display());
        }
        let run = |arg: &str| -> Result<String> {
            let out = Command::new(&path)
                .arg(arg)
                .output()
                .with_context(|| format!("running {} {arg}", path.display()))?;
            if !out.status.success() {
                bail!(
                    "{name} {arg} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let help = run("--help")?;
        let keys: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&run("--print-config-keys")?)
                .with_context(|| format!("{name} --print-config-keys"))?;
        let metrics: Vec<String> = serde_json::from_str(&run("--print-metric-names")?)
            .with_context(|| format!("{name} --print-metric-names"))?;
        Ok(Self {
            path,
            flags: help_flags(&help),
            subcommands: help_subcommands(&help),
            keys: keys.into_iter().map(|(k, _)| k).collect(),
            metrics: metrics.into_iter().collect(),
        })
    }
}

/// Every `--flag` a `--help` text names.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.len() > 2 && w.starts_with("--"))
        .filter(|w| w.as_bytes()[2].is_ascii_lowercase())
        .map(str::to_owned)
        .collect()
}

/// The subcommands of a `--help` text's `Commands:` section.
fn help_subcommands(help: &str) -> BTreeSet<String> {
    let Some((_, commands)) = help.split_once("Commands:") else {
        return BTreeSet::new();
    };
    let commands = commands.split("Options:").next().unwrap_or("");
    commands
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_owned)
        .collect()
}

/// The port of `host:port` / `NAME://host:port` (0 when there is none).
fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0)
}

/// The host of `host:port` / `NAME://host:port`.
fn host_of(address: &str) -> &str {
    let address = address.rsplit("://").next().unwrap_or(address);
    address.rsplit_once(':').map_or(address, |(h, _)| h)
}

/// `A://h:1,B://h:2` as {A: h:1, B: h:2}.
fn listener_list(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once("://") {
            Some((name, address)) => (name.to_owned(), address.to_owned()),
            None => (item.to_owned(), String::new()),
        })
        .collect()
}

/// A Compose port mapping `[IP:]HOST:CONTAINER`, HOST maybe `${VAR:-default}`: the host
/// port as written and the container port.
fn port_mapping(spec: &str) -> Option<(String, u16)> {
    let (rest, container) = spec.rsplit_once(':')?;
    let container = container.parse().ok()?;
    let is_ip = |ip: &str| ip.chars().all(|c| c.is_ascii_digit() || c == '.');
    let host = if let Some(start) = rest.find("${") {
        let variable = &rest[start..];
        let ip = &rest[..start];
        let closed = variable.ends_with('}') && !variable[..variable.len() - 1].contains('}');
        let ip_ok = ip.is_empty() || ip.strip_suffix(':').is_some_and(is_ip);
        if !closed || !ip_ok {
            return None;
        }
        variable
    } else {
        let (ip, port) = rest.rsplit_once(':').unwrap_or(("", rest));
        if !is_ip(ip) || port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        port
    };
    Some((host.to_owned(), container))
}

/// Compose's `${VAR:-default}` replaced by the default.
fn substitute(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + end];
        out.push_str(inner.split_once(":-").map_or("", |(_, d)| d));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// A YAML scalar as text (Compose writes numbers unquoted at times).
fn text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The strings of a YAML sequence.
fn texts(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().filter_map(text).collect())
        .unwrap_or_default()
}

/// A YAML mapping as text keys and values.
fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Resolves YAML 1.1 merge keys (`<<: *anchor`), which yaml-rust2 (YAML 1.2) leaves as keys.
fn merge_keys(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(hash) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut merged = Vec::new();
            for (k, v) in hash {
                if k.as_str() == Some("<<") {
                    match merge_keys(v) {
                        Yaml::Array(items) => merged.extend(items),
                        other => merged.push(other),
                    }
                } else {
                    out.insert(k, merge_keys(v));
                }
            }
            for source in merged {
                if let Yaml::Hash(source) = source {
                    for (k, v) in source {
                        out.entry(k).or_insert(v);
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

/// A Dockerfile's instructions that matter here.
#[derive(Debug, Default)]
struct Dockerfile {
    path: String,
    entrypoint: Vec<String>,
    healthcheck: Vec<String>,
    user: String,
    env: BTreeMap<String, String>,
    expose: BTreeSet<u16>,
    /// Destination → sources of each COPY.
    copies: BTreeMap<String, Vec<String>>,
}

/// Collects what disagrees.
pub struct Checker<'a> {
    root: &'a Path,
    binaries: &'a BTreeMap<&'static str, Binary>,
    errors: Vec<String>,
    checked: Vec<String>,
}

impl<'a> Checker<'a> {
    pub fn new(root: &'a Path, binaries: &'a BTreeMap<&'static str, Binary>) -> Self {
        Self {
            root,
            binaries,
            errors: Vec::new(),
            checked: Vec::new(),
        }
    }

    fn fail(&mut self, place: impl Display, message: impl Display) {
        self.errors.push(format!("{place}: {message}"));
    }

    fn read(&mut self, relative: &str) -> Option<String> {
        match std::fs::read_to_string(self.root.join(relative)) {
            Ok(text) => Some(text),
            Err(err) => {
                self.fail(relative, format!("cannot read it: {err}"));
                None
            }
        }
    }

    fn binary(&self, name: &str) -> Option<&'a Binary> {
        self.binaries.get(name)
    }

    fn check_flags(&mut self, binary: &str, place: &str, args: &[String]) {
        let Some(b) = self.binary(binary) else { return };
        for arg in args.iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap_or(arg);
            if !b.flags.contains(flag) {
                self.fail(
                    place,
                    format!("{binary} has no flag {arg} (`{binary} --help`)"),
                );
            }
        }
    }

    /// Parses `text` (a server's config file at `place`) and checks its keys against
    /// `binary`'s; `None` (after failing) when it is not TOML.
    pub fn check_config_file(
        &mut self,
        binary: &str,
        place: &str,
        text: &str,
    ) -> Option<toml::Table> {
        match toml::from_str::<toml::Table>(text) {
            Ok(config) => {
                self.check_keys(binary, place, config.keys().cloned());
                Some(config)
            }
            Err(e) => {
                self.fail(place, format!("not TOML: {e}"));
                None
            }
        }
    }

    /// Fails for every key of `keys` the binary does not accept.
    pub fn check_keys(
        &mut self,
        binary: &str,
        place: &str,
        keys: impl IntoIterator<Item = String>,
    ) {
        let Some(b) = self.binary(binary) else { return };
        for key in keys {
            if !b.keys.contains(&key) {
                let known: Vec<&str> = b.keys.iter().map(String::as_str).collect();
                self.fail(
                    place,
                    format!(
                        "{binary} has no config key `{key}` (known: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    /// The keys of `TRIBUTARY_*` variables.
    fn check_variables<'k>(
        &mut self,
        binary: &str,
        place: &str,
        names: impl IntoIterator<Item = &'k String>,
    ) {
        let keys = names
            .into_iter()
            .filter_map(|n| n.strip_prefix("TRIBUTARY_"))
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>();
        self.check_keys(binary, place, keys);
    }

    /// `[binary-path, "healthcheck", addr]`.
    fn check_healthcheck(&mut self, binary: &str, place: &str, args: &[String]) {
        let runs_it = args.len() >= 2
            && Path::new(&args[0]).file_name().and_then(|n| n.to_str()) == Some(binary)
            && args[1] == "healthcheck";
        if !runs_it {
            self.fail(
                place,
                format!("the health check should run `{binary} healthcheck ADDR`, not {args:?}"),
            );
        } else if self
            .binary(binary)
            .is_some_and(|b| !b.subcommands.contains("healthcheck"))
        {
            self.fail(place, format!("{binary} has no healthcheck subcommand"));
        }
    }

    /// Every check but `systemd-analyze verify`.
    pub fn check_all(&mut self) {
        let images = self.check_dockerfiles();
        self.check_compose(&images);
        self.check_kubernetes();
        self.check_systemd();
        self.check_grafana();
    }

    /// Ok with what was checked, or every disagreement.
    pub fn finish(self) -> Result<()> {
        if !self.errors.is_empty() {
            bail!(
                "deploy/ disagrees with the binaries:\n  {}",
                self.errors.join("\n  ")
            );
        }
        eprintln!("xtask: deploy-check OK: {}", self.checked.join("; "));
        Ok(())
    }

    // --- Dockerfiles ----------------------------------------------------------------------

    fn dockerfile(&mut self, name: &str) -> Dockerfile {
        let path = format!("deploy/docker/{name}");
        let mut out = Dockerfile {
            path: path.clone(),
            ..Default::default()
        };
        let Some(text) = self.read(&path) else {
            return out;
        };
        for line in text.replace("\\\n", " ").lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let json = |text: &str| serde_json::from_str::<Vec<String>>(text.trim());
            match word.to_ascii_uppercase().as_str() {
                "FROM" if rest.trim() != "scratch" => self.fail(
                    &path,
                    format!("images are built FROM scratch (no registry to pull from), not {rest}"),
                ),
                "ENTRYPOINT" => match json(rest) {
                    Ok(v) => out.entrypoint = v,
                    Err(e) => self.fail(&path, format!("ENTRYPOINT is not a JSON array: {e}")),
                },
                "HEALTHCHECK" => match rest.split_once(" CMD ").map(|(_, cmd)| json(cmd)) {
                    Some(Ok(v)) => out.healthcheck = v,
                    _ => self.fail(&path, "HEALTHCHECK has no JSON-array CMD"),
                },
                "USER" => out.user = rest.trim().to_owned(),
                "ENV" => {
                    let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                    out.env.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                "EXPOSE" => {
                    for port in rest.split_whitespace() {
                        match port.parse() {
                            Ok(p) => {
                                out.expose.insert(p);
                            }
                            Err(_) => self.fail(&path, format!("EXPOSE {port} is not a port")),
                        }
                    }
                }
                "COPY" => {
                    let mut parts: Vec<String> = rest
                        .split_whitespace()
                        .filter(|p| !p.starts_with("--"))
                        .map(str::to_owned)
                        .collect();
                    if let Some(dest) = parts.pop() {
                        out.copies.insert(dest, parts);
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn check_dockerfiles(&mut self) -> BTreeMap<&'static str, Dockerfile> {
        if let Some(passwd) = self.read("deploy/docker/passwd")
            && !passwd.contains(&format!(":{UID}:{UID}:"))
        {
            self.fail(
                "deploy/docker/passwd",
                format!("no user with uid and gid {UID}"),
            );
        }
        let mut images = BTreeMap::new();
        for (binary, file, default_port, _) in SERVERS {
            let d = self.dockerfile(file);
            let path = d.path.clone();
            let entry = d.entrypoint.first().cloned().unwrap_or_default();
            if !d.copies.contains_key(&entry)
                || Path::new(&entry).file_name().and_then(|n| n.to_str()) != Some(binary)
            {
                self.fail(
                    &path,
                    format!("ENTRYPOINT {entry} is not the copied {binary}"),
                );
            }
            self.check_healthcheck(binary, &path, &d.healthcheck);
            if d.user != format!("{UID}:{UID}") {
                self.fail(&path, format!("USER should be {UID}:{UID}, is {}", d.user));
            }
            let data_dir = d.env.get("TRIBUTARY_DATA_DIR").cloned().unwrap_or_default();
            if !d.copies.contains_key(&data_dir) {
                self.fail(
                    &path,
                    format!("TRIBUTARY_DATA_DIR {data_dir} is not a directory the image creates"),
                );
            }
            self.check_variables(binary, &path, d.env.keys());
            if !d.expose.contains(&default_port) {
                self.fail(
                    &path,
                    format!("does not EXPOSE {binary}'s default port {default_port}"),
                );
            }
            if d.healthcheck.last().map(|a| port_of(a)) != Some(default_port) {
                self.fail(&path, "the HEALTHCHECK does not ask the default port");
            }
            images.insert(binary, d);
        }
        for image in ["tributary-coordinator", "tributary-broker", "tributary-cli"] {
            if !crate::docker::IMAGES.iter().any(|i| i.name == image) {
                self.fail(
                    "xtask/src/docker.rs",
                    format!("docker-build does not build {image}"),
                );
            }
        }
        self.checked.push("Dockerfiles".into());
        images
    }

    // --- systemd --------------------------------------------------------------------------

    fn check_systemd(&mut self) {
        let directory = "deploy/systemd";
        for (binary, _, _, example) in SERVERS {
            let path = format!("{directory}/{binary}.service");
            let Some(source) = self.read(&path) else {
                continue;
            };
            let mut unit: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            let mut section = String::new();
            for line in source.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if line.starts_with('[') {
                    section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
                    continue;
                }
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                unit.entry((section.clone(), key.to_owned()))
                    .or_default()
                    .push(value.to_owned());
            }
            let service = |key: &str| unit.get(&("Service".to_owned(), key.to_owned()));
            for required in [
                "Restart",
                "LimitNOFILE",
                "User",
                "NoNewPrivileges",
                "ProtectSystem",
                "StateDirectory",
            ] {
                if service(required).is_none() {
                    self.fail(&path, format!("no {required}="));
                }
            }
            if service("Restart").map(Vec::as_slice) != Some(&["on-failure".to_owned()][..]) {
                self.fail(&path, "Restart should be on-failure");
            }
            let exec_start = match service("ExecStart").map(Vec::as_slice) {
                Some([one]) => one.clone(),
                _ => {
                    self.fail(&path, "there should be exactly one ExecStart=");
                    continue;
                }
            };
            let args: Vec<String> = exec_start.split_whitespace().map(str::to_owned).collect();
            if Path::new(&args[0]).file_name().and_then(|n| n.to_str()) != Some(binary) {
                self.fail(&path, format!("ExecStart runs {}, not {binary}", args[0]));
            }
            self.check_flags(binary, &path, &args[1..]);
            let config_path = args
                .iter()
                .position(|a| a == "--config")
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default();
            if config_path != format!("/etc/tributary/{example}") {
                self.fail(
                    &path,
                    format!("--config {config_path} is not /etc/tributary/{example}"),
                );
            }
            let example_path = format!("{directory}/{example}");
            let Some(example_text) = self.read(&example_path) else {
                continue;
            };
            let Some(config) = self.check_config_file(binary, &example_path, &example_text) else {
                continue;
            };
            let get = |k: &str| config.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let state = service("StateDirectory")
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default();
            if get("data_dir") != format!("/var/lib/{state}") {
                self.fail(
                    &example_path,
                    format!("data_dir should be /var/lib/{state} (the unit's StateDirectory)"),
                );
            }
            if binary == "tributary-broker" {
                let listeners = listener_list(get("listeners"));
                let advertised = listener_list(get("advertised_listeners"));
                if listeners.keys().ne(advertised.keys())
                    || !listeners.contains_key(get("inter_broker_listener_name"))
                {
                    self.fail(
                        &example_path,
                        "listeners, advertised_listeners and inter_broker_listener_name disagree",
                    );
                }
            }
        }
        self.checked
            .push("systemd units and example configs".into());
    }

    /// `systemd-analyze verify`, where there is one, on copies of the units that run the
    /// binaries under test: any complaint about a unit's own lines fails the check.
    pub fn verify_units(&mut self) {
        let directory = self.root.join("deploy/systemd");
        let scratch =
            std::env::temp_dir().join(format!("tributary-deploy-check-{}", std::process::id()));
        let verified = (|| -> Result<Option<String>> {
            std::fs::create_dir_all(&scratch)?;
            let mut units = Vec::new();
            for (binary, ..) in SERVERS {
                let mut unit =
                    std::fs::read_to_string(directory.join(format!("{binary}.service")))?;
                if let Some(b) = self.binary(binary) {
                    unit = unit.replace(
                        &format!("/usr/local/bin/{binary} "),
                        &format!("{} ", b.path.display()),
                    );
                }
                let copy = scratch.join(format!("{binary}.service"));
                std::fs::write(&copy, unit)?;
                units.push(copy);
            }
            let out = match Command::new("systemd-analyze")
                .arg("verify")
                .args(&units)
                .output()
            {
                Ok(out) => out,
                // No systemd here: nothing to verify.
                Err(_) => return Ok(None),
            };
            Ok(Some(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        })();
        let _ = std::fs::remove_dir_all(&scratch);
        match verified {
            Ok(Some(output)) => {
                for line in output.lines().filter(|l| l.contains(".service:")) {
                    let file = line.split(':').next().unwrap_or("");
                    let name = Path::new(file)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(file);
                    self.fail(format!("deploy/systemd/{name}"), line);
                }
                self.checked.push("systemd-analyze verify".into());
            }
            Ok(None) => {}
            Err(e) => self.fail("deploy/systemd", format!("cannot verify the units: {e:#}")),
        }
    }

    // --- Grafana --------------------------------------------------------------------------

    fn check_grafana(&mut self) {
        let directory = "deploy/grafana";
        let exposed: BTreeSet<String> = self
            .binaries
            .values()
            .flat_map(|b| b.metrics.iter().cloned())
            .collect();
        let mut files: Vec<String> = std::fs::read_dir(self.root.join(directory))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for name in files {
            let path = format!("{directory}/{name}");
            let Some(source) = self.read(&path) else {
                continue;
            };
            let dashboard: serde_json::Value = match serde_json::from_str(&source) {
                Ok(d) => d,
                Err(e) => {
                    self.fail(&path, format!("not JSON: {e}"));
                    continue;
                }
            };
            let variables: BTreeSet<&str> = dashboard["templating"]["list"]
                .as_array()
                .map(|l| l.iter().filter_map(|v| v["name"].as_str()).collect())
                .unwrap_or_default();
            let mut panels: Vec<&serde_json::Value> = Vec::new();
            let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
                .as_array()
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            // Rows hold their panels when collapsed.
            while let Some(panel) = stack.pop() {
                panels.push(panel);
                if let Some(inner) = panel["panels"].as_array() {
                    stack.extend(inner);
                }
            }
            let mut count = 0;
            for panel in panels {
                let title = panel["title"].as_str().unwrap_or("");
                for target in panel["targets"].as_array().into_iter().flatten() {
                    count += 1;
                    for metric in metric_names(target["expr"].as_str().unwrap_or("")) {
                        if !exposed.contains(metric) {
                            self.fail(
                                &path,
                                format!(
                                    "panel `{title}` queries {metric}, which no server exposes"
                                ),
                            );
                        }
                    }
                }
                let uid = panel["datasource"]["uid"].as_str().unwrap_or("");
                if let Some(variable) = uid.strip_prefix("${").and_then(|u| u.strip_suffix('}'))
                    && !variables.contains(variable)
                {
                    self.fail(
                        &path,
                        format!("panel `{title}` uses the undefined variable {uid}"),
                    );
                }
            }
            self.checked
                .push(format!("Grafana {name} ({count} queries)"));
        }
    }
}

/// The `tributary_*` and `process_*` metric names a PromQL expression names.
fn metric_names(expr: &str) -> Vec<&str> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !word(bytes[i - 1]))
            && (expr[i..].starts_with("tributary_") || expr[i..].starts_with("process_"));
        if !starts {
            i += 1;
            continue;
        }
        let end = i + expr[i..]
            .bytes()
            .position(|c| !(c.is_ascii_lowercase() || c == b'_'))
            .unwrap_or(expr.len() - i);
        if end == bytes.len() || !word(bytes[end]) {
            out.push(&expr[i..end]);
        }
        i = end.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binaries() -> BTreeMap<&'static str, Binary> {
        let broker = Binary {
            keys: ["broker_id", "data_dir", "listeners"]
                .map(String::from)
                .into(),
            metrics: ["tributary_requests_total", "process_open_fds"]
                .map(String::from)
                .into(),
            ..Default::default()
        };
        BTreeMap::from([("tributary-broker", broker)])
    }

    #[test]
    fn unknown_config_keys_and_metrics_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let grafana = dir.path().join("deploy/grafana");
        std::fs::create_dir_all(&grafana).unwrap();
        std::fs::write(
            grafana.join("d.json"),
            r#"{"templating": {"list": [{"name": "ds"}]}, "panels": [
                {"title": "Requests", "datasource": {"uid": "${ds}"},
                 "targets": [{"expr": "rate(tributary_requests_total[1m]) + process_open_fds"}]},
                {"title": "Row", "panels": [{"title": "Lag", "datasource": {"uid": "${nope}"},
                 "targets": [{"expr": "sum(tributary_consumer_lag{group=\"g\"})"}]}]}
            ]}"#,
        )
        .unwrap();
        let binaries = binaries();
        let mut checker = Checker::new(dir.path(), &binaries);
        checker.check_grafana();
        let config: toml::Table = toml::from_str("broker_id = 1\nbroker_idd = 2\n").unwrap();
        checker.check_keys("tributary-broker", "deploy/b.toml", config.keys().cloned());
        let err = format!("{:#}", checker.finish().unwrap_err());
        assert!(
            err.contains("deploy/grafana/d.json: panel `Lag` queries tributary_consumer_lag, which no server exposes"),
            "{err}"
        );
        assert!(err.contains("undefined variable ${nope}"), "{err}");
        assert!(
            err.contains("deploy/b.toml: tributary-broker has no config key `broker_idd` (known: broker_id, data_dir, listeners)"),
            "{err}"
        );
        assert!(!err.contains("tributary_requests_total"), "{err}");
        assert!(!err.contains("`broker_id`"), "{err}");
    }

    #[test]
    fn compose_helpers_read_what_compose_writes() {
        assert_eq!(
            port_mapping("127.0.0.1:${BROKER_1_PORT:-9092}:9092"),
            Some(("${BROKER_1_PORT:-9092}".into(), 9092))
        );
        assert_eq!(
            port_mapping("127.0.0.1:10092:10092"),
            Some(("10092".into(), 10092))
        );
        assert_eq!(port_mapping("9092:9092"), Some(("9092".into(), 9092)));
        assert_eq!(port_mapping("x:9092"), None);
        assert_eq!(
            substitute("localhost:${BROKER_1_PORT:-9092}"),
            "localhost:9092"
        );
        assert_eq!(host_of("INTERNAL://broker-1:19092"), "broker-1");
        assert_eq!(port_of("INTERNAL://broker-1:19092"), 19092);
        let yaml = YamlLoader::load_from_str("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  y: 3\n")
            .unwrap()
            .remove(0);
        let yaml = merge_keys(yaml);
        assert_eq!(yaml["b"]["x"].as_i64(), Some(1));
        assert_eq!(yaml["b"]["y"].as_i64(), Some(3));
        assert_eq!(
            metric_names("sum(rate(tributary_a_total[1m])) / process_b + tributary_c2"),
            ["tributary_a_total", "process_b"]
        );
    }

    #[test]
    fn help_text_flags_and_subcommands() {
        let help = "Usage: x [OPTIONS] [COMMAND]\n\nCommands:\n  healthcheck  Exit 0\n  help         Print\n\nOptions:\n      --config <FILE>\n      --broker-id <BROKER_ID>\n  -h, --help\n";
        let flags = help_flags(help);
        assert!(
            flags.contains("--config") && flags.contains("--broker-id"),
            "{flags:?}"
        );
        let subcommands = help_subcommands(help);
        assert_eq!(
            subcommands,
            BTreeSet::from(["healthcheck".into(), "help".into()])
        );
    }
}
