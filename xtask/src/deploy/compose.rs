//! The Compose file: services, environment, ports, volumes, health checks.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::{Yaml, YamlLoader};

use super::{
    Checker, Dockerfile, host_of, listener_list, merge_keys, port_mapping, port_of, string_map,
    substitute, text, texts,
};

impl Checker<'_> {
    // --- Compose --------------------------------------------------------------------------

    pub(super) fn check_compose(&mut self, images: &BTreeMap<&'static str, Dockerfile>) {
        let path = "deploy/docker-compose.yml";
        let Some(source) = self.read(path) else {
            return;
        };
        let compose = match YamlLoader::load_from_str(&source) {
            Ok(mut docs) if !docs.is_empty() => merge_keys(docs.swap_remove(0)),
            Ok(_) => return self.fail(path, "empty"),
            Err(e) => return self.fail(path, format!("not YAML: {e}")),
        };
        let Some(services) = compose["services"].as_hash() else {
            return self.fail(path, "no services");
        };
        let image_of = |s: &Yaml| s["image"].as_str().unwrap_or("").to_owned();
        let named = |prefix: &str| -> BTreeSet<String> {
            services
                .iter()
                .filter(|(_, s)| image_of(s).starts_with(prefix))
                .filter_map(|(n, _)| text(n))
                .collect()
        };
        let coordinators = named("tributary-coordinator:");
        let brokers = named("tributary-broker:");
        if coordinators.len() != 3 || brokers.len() != 3 {
            self.fail(
                path,
                format!(
                    "expected 3 coordinators and 3 brokers, found {coordinators:?} and {brokers:?}"
                ),
            );
        }
        let volumes = compose["volumes"].as_hash().cloned().unwrap_or_default();
        let mut members = BTreeSet::new();
        let mut published: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, service) in services {
            let name = text(name).unwrap_or_default();
            let is_coordinator = coordinators.contains(&name);
            let binary = if is_coordinator {
                "tributary-coordinator"
            } else {
                "tributary-broker"
            };
            let place = format!("{path} ({name})");
            let env = string_map(&service["environment"]);
            self.check_variables(binary, &place, env.keys());
            self.check_flags(binary, &place, &texts(&service["command"]));
            let test = texts(&service["healthcheck"]["test"]);
            self.check_healthcheck(binary, &place, test.get(1..).unwrap_or(&[]));
            let Some(image) = images.get(binary) else {
                continue;
            };
            if test.get(1) != image.entrypoint.first() {
                self.fail(
                    &place,
                    format!(
                        "the health check runs {:?}, the image's binary is {:?}",
                        test.get(1),
                        image.entrypoint
                    ),
                );
            }
            let data_dir = image
                .env
                .get("TRIBUTARY_DATA_DIR")
                .cloned()
                .unwrap_or_default();
            let mounts = texts(&service["volumes"]);
            if !mounts
                .iter()
                .any(|v| v.split(':').nth(1) == Some(data_dir.as_str()))
            {
                self.fail(
                    &place,
                    format!("no named volume on the data directory {data_dir}"),
                );
            }
            for volume in &mounts {
                let source = volume.split(':').next().unwrap_or("");
                if !volumes.contains_key(&Yaml::String(source.to_owned())) {
                    self.fail(&place, format!("volume {volume} is not a named volume"));
                }
            }
            // Container port → the host port as written (maybe a ${VAR:-default}).
            let mut ports: BTreeMap<u16, String> = BTreeMap::new();
            for spec in texts(&service["ports"]) {
                let Some((host, container)) = port_mapping(&spec) else {
                    self.fail(&place, format!("cannot read the port mapping {spec}"));
                    continue;
                };
                published
                    .entry(substitute(&host))
                    .or_default()
                    .push(name.clone());
                ports.insert(container, host);
            }
            if let Some(metrics) = env.get("TRIBUTARY_METRICS_LISTEN")
                && !ports.contains_key(&port_of(metrics))
            {
                self.fail(
                    &place,
                    format!("metrics port {} is not published", port_of(metrics)),
                );
            }
            let hostname = service["hostname"].as_str().unwrap_or(&name).to_owned();
            let health_port = test.last().map_or(0, |a| port_of(a));
            if is_coordinator {
                let advertised = env
                    .get("TRIBUTARY_ADVERTISED_ADDRESS")
                    .cloned()
                    .unwrap_or_default();
                if host_of(&advertised) != hostname || host_of(&advertised) != name {
                    self.fail(
                        &place,
                        format!("advertised address {advertised} is not the service's name"),
                    );
                }
                let listen = env
                    .get("TRIBUTARY_LISTEN")
                    .map_or("0.0.0.0:9191", String::as_str);
                let listen_port = port_of(listen);
                if port_of(&advertised) != listen_port || health_port != listen_port {
                    self.fail(
                        &place,
                        "the advertised address, listen port and health check disagree",
                    );
                }
                let initial = env
                    .get("TRIBUTARY_INITIAL_MEMBERS")
                    .cloned()
                    .unwrap_or_default();
                if !initial.contains(&format!("={advertised}")) {
                    self.fail(
                        &place,
                        "initial_members does not list this node's advertised address",
                    );
                }
                members.insert(initial);
            } else {
                let get = |k: &str| env.get(k).cloned().unwrap_or_default();
                let listeners = listener_list(&get("TRIBUTARY_LISTENERS"));
                let raw_advertised = listener_list(&get("TRIBUTARY_ADVERTISED_LISTENERS"));
                let advertised = listener_list(&substitute(&get("TRIBUTARY_ADVERTISED_LISTENERS")));
                let names: BTreeSet<&str> = listeners.keys().map(String::as_str).collect();
                if names != BTreeSet::from(["INTERNAL", "EXTERNAL"])
                    || advertised.keys().ne(listeners.keys())
                {
                    self.fail(
                        &place,
                        format!(
                            "brokers need INTERNAL and EXTERNAL listeners, advertised: {listeners:?}, {advertised:?}"
                        ),
                    );
                    continue;
                }
                if get("TRIBUTARY_INTER_BROKER_LISTENER_NAME") != "INTERNAL" {
                    self.fail(&place, "brokers replicate over INTERNAL");
                }
                let internal_port = port_of(&listeners["INTERNAL"]);
                if host_of(&advertised["INTERNAL"]) != name
                    || port_of(&advertised["INTERNAL"]) != internal_port
                {
                    self.fail(
                        &place,
                        format!(
                            "INTERNAL is advertised as {}, not {name}:{internal_port}",
                            advertised["INTERNAL"]
                        ),
                    );
                }
                if !listeners.values().any(|a| port_of(a) == health_port) {
                    self.fail(
                        &place,
                        format!(
                            "the health check asks {}, which no listener binds",
                            test.last().cloned().unwrap_or_default()
                        ),
                    );
                }
                // The host port is published under the same variable and default as advertised.
                let external = ports
                    .get(&port_of(&listeners["EXTERNAL"]))
                    .cloned()
                    .unwrap_or_default();
                if raw_advertised["EXTERNAL"] != format!("localhost:{external}") {
                    self.fail(
                        &place,
                        format!(
                            "EXTERNAL is advertised as {} but published as {external}",
                            raw_advertised["EXTERNAL"]
                        ),
                    );
                }
                let expected = coordinators
                    .iter()
                    .map(|c| format!("{c}:9191"))
                    .collect::<Vec<_>>()
                    .join(",");
                if get("TRIBUTARY_COORDINATORS") != expected {
                    self.fail(&place, format!("coordinators should be {expected}"));
                }
            }
        }
        if members.len() != 1 {
            self.fail(
                path,
                format!("the coordinators disagree on initial_members: {members:?}"),
            );
        }
        for (port, users) in &published {
            if users.len() > 1 {
                self.fail(path, format!("host port {port} is published by {users:?}"));
            }
        }
        let external: Vec<u16> = published
            .iter()
            .filter(|(_, users)| users.iter().all(|u| brokers.contains(u)))
            .filter_map(|(p, _)| p.parse::<u16>().ok())
            .filter(|p| *p < 10000)
            .collect();
        if external != [9092, 9093, 9094] {
            self.fail(
                path,
                format!("brokers should be published on the host as 9092-9094, are {external:?}"),
            );
        }
        self.checked.push("docker-compose.yml".into());
    }
}
