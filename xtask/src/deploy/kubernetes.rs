//! The Kubernetes manifests: StatefulSets, their ConfigMaps, Services and budgets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use super::{Checker, UID, listener_list, merge_keys, port_of, string_map, text, texts};

impl Checker<'_> {
    // --- Kubernetes -----------------------------------------------------------------------

    pub(super) fn check_kubernetes(&mut self) {
        let directory = "deploy/kubernetes";
        let mut files: Vec<String> = match std::fs::read_dir(self.root.join(directory)) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".yaml"))
                .collect(),
            Err(e) => return self.fail(directory, format!("cannot list it: {e}")),
        };
        files.sort();
        let mut objects: Vec<(String, Yaml)> = Vec::new();
        for name in &files {
            let path = format!("{directory}/{name}");
            let Some(source) = self.read(&path) else {
                continue;
            };
            match YamlLoader::load_from_str(&source) {
                Ok(docs) => objects.extend(
                    docs.into_iter()
                        .filter(|d| !d.is_null() && !d.is_badvalue())
                        .map(|d| (name.clone(), merge_keys(d))),
                ),
                Err(e) => self.fail(&path, format!("not YAML: {e}")),
            }
        }
        let resources: BTreeSet<String> = objects
            .iter()
            .find(|(_, d)| d["kind"].as_str() == Some("Kustomization"))
            .map(|(_, d)| texts(&d["resources"]).into_iter().collect())
            .unwrap_or_default();
        for name in &files {
            if name != "kustomization.yaml" && !resources.contains(name) {
                self.fail(
                    format!("{directory}/{name}"),
                    "not listed in kustomization.yaml",
                );
            }
        }
        // kind → name → (file, object)
        let mut by_kind: BTreeMap<String, BTreeMap<String, (String, Yaml)>> = BTreeMap::new();
        for (file, doc) in &objects {
            let kind = doc["kind"].as_str().unwrap_or("");
            if kind == "Kustomization" {
                continue;
            }
            for field in ["apiVersion", "kind", "metadata"] {
                if doc[field].is_badvalue() {
                    self.fail(
                        format!("{directory}/{file}"),
                        format!("an object without {field}"),
                    );
                }
            }
            let name = doc["metadata"]["name"].as_str().unwrap_or("").to_owned();
            by_kind
                .entry(kind.to_owned())
                .or_default()
                .insert(name, (file.clone(), doc.clone()));
        }
        let empty = BTreeMap::new();
        let kind = |k: &str| by_kind.get(k).unwrap_or(&empty);
        let namespaces: BTreeSet<String> = kind("Namespace").keys().cloned().collect();
        for (k, items) in &by_kind {
            for (obj_name, (file, doc)) in items {
                let ns = doc["metadata"]["namespace"].as_str().unwrap_or("");
                if k != "Namespace" && !namespaces.contains(ns) {
                    self.fail(
                        format!("{directory}/{file}"),
                        format!("{k} {obj_name} is not in the namespace {namespaces:?}"),
                    );
                }
            }
        }
        let namespace = namespaces.iter().next().cloned().unwrap_or_default();
        let statefulsets = kind("StatefulSet");
        let mut pods: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut coordinator_addresses: Vec<String> = Vec::new();
        let mut broker_coordinators: Vec<(String, String)> = Vec::new();
        for (sts_name, (file, sts)) in statefulsets {
            let place = format!("{directory}/{file} (StatefulSet {sts_name})");
            let spec = &sts["spec"];
            let template = &spec["template"];
            let labels = string_map(&template["metadata"]["labels"]);
            pods.insert(sts_name.clone(), labels.clone());
            let selector = string_map(&spec["selector"]["matchLabels"]);
            if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                self.fail(&place, "the selector does not match the pod labels");
            }
            let service_name = spec["serviceName"].as_str().unwrap_or("");
            let headless = kind("Service")
                .get(service_name)
                .is_some_and(|(_, svc)| svc["spec"]["clusterIP"].as_str() == Some("None"));
            if !headless {
                self.fail(
                    &place,
                    format!("serviceName {service_name} is not a headless Service"),
                );
            }
            if spec["podManagementPolicy"].as_str() != Some("Parallel") {
                self.fail(
                    &place,
                    "podManagementPolicy should be Parallel (coordinators need each other to become ready)",
                );
            }
            let security = &template["spec"]["securityContext"];
            if security["runAsUser"].as_i64() != Some(UID)
                || security["fsGroup"].as_i64() != Some(UID)
                || security["runAsNonRoot"].as_bool() != Some(true)
            {
                self.fail(
                    &place,
                    format!("pods should run as uid {UID} with fsGroup {UID} (the images' user)"),
                );
            }
            let containers = template["spec"]["containers"]
                .as_vec()
                .cloned()
                .unwrap_or_default();
            let [container] = containers.as_slice() else {
                self.fail(&place, "pods should have exactly one container");
                continue;
            };
            let image_ref = container["image"].as_str().unwrap_or("");
            let image = image_ref.split(':').next().unwrap_or("");
            if self.binary(image).is_none() {
                self.fail(
                    &place,
                    format!("image {image_ref} is not one docker-build makes"),
                );
                continue;
            }
            let args = texts(&container["args"]);
            self.check_flags(image, &place, &args);
            let env: BTreeSet<String> = container["env"]
                .as_vec()
                .map(|v| v.iter().filter_map(|e| text(&e["name"])).collect())
                .unwrap_or_default();
            for reference in args.join(" ").split("$(").skip(1) {
                let reference = reference.split(')').next().unwrap_or("");
                if !env.contains(reference) {
                    self.fail(
                        &place,
                        format!("args use $({reference}), which is not in env"),
                    );
                }
            }
            let ports: BTreeMap<String, i64> = container["ports"]
                .as_vec()
                .map(|v| {
                    v.iter()
                        .filter_map(|p| Some((text(&p["name"])?, p["containerPort"].as_i64()?)))
                        .collect()
                })
                .unwrap_or_default();
            let mounts: BTreeMap<String, String> = container["volumeMounts"]
                .as_vec()
                .map(|v| {
                    v.iter()
                        .filter_map(|m| Some((text(&m["mountPath"])?, text(&m["name"])?)))
                        .collect()
                })
                .unwrap_or_default();
            let claims: BTreeSet<String> = spec["volumeClaimTemplates"]
                .as_vec()
                .map(|v| {
                    v.iter()
                        .filter_map(|c| text(&c["metadata"]["name"]))
                        .collect()
                })
                .unwrap_or_default();
            let config_path = args
                .iter()
                .position(|a| a == "--config")
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default();
            if !config_path.contains("$(POD_NAME)") {
                self.fail(
                    &place,
                    "each pod should read /etc/tributary/$(POD_NAME).toml",
                );
                continue;
            }
            let config_dir = Path::new(&config_path)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let volume = template["spec"]["volumes"]
                .as_vec()
                .and_then(|v| {
                    v.iter()
                        .find(|v| text(&v["name"]).as_ref() == mounts.get(&config_dir))
                })
                .cloned()
                .unwrap_or(Yaml::BadValue);
            let config_map_name = volume["configMap"]["name"].as_str().unwrap_or("");
            let Some((_, config_map)) = kind("ConfigMap").get(config_map_name) else {
                self.fail(&place, format!("{config_dir} is not a mounted ConfigMap"));
                continue;
            };
            let data = string_map(&config_map["data"]);
            let replicas = spec["replicas"].as_i64().unwrap_or(0);
            let expected: BTreeSet<String> = (0..replicas)
                .map(|i| format!("{sts_name}-{i}.toml"))
                .collect();
            if data.keys().cloned().collect::<BTreeSet<_>>() != expected {
                self.fail(
                    &place,
                    format!(
                        "ConfigMap {config_map_name} should hold exactly {expected:?}, holds {:?}",
                        data.keys().collect::<Vec<_>>()
                    ),
                );
            }
            let annotations = string_map(&template["metadata"]["annotations"]);
            let mut ids = BTreeSet::new();
            for i in 0..replicas {
                let file_name = format!("{sts_name}-{i}.toml");
                let Some(toml_text) = data.get(&file_name) else {
                    continue;
                };
                let fplace =
                    format!("{directory}/{file} (ConfigMap {config_map_name}, {file_name})");
                let Some(config) = self.check_config_file(image, &fplace, toml_text) else {
                    continue;
                };
                let get = |k: &str| config.get(k).and_then(|v| v.as_str()).unwrap_or("");
                let pod_host = format!("{sts_name}-{i}.{service_name}.{namespace}.svc");
                if !mounts
                    .get(get("data_dir"))
                    .is_some_and(|m| claims.contains(m))
                {
                    self.fail(
                        &fplace,
                        format!("data_dir {} is not the pod's volume claim", get("data_dir")),
                    );
                }
                let metrics_port = ports.get("metrics").copied();
                let metrics = get("metrics_listen");
                if metrics.is_empty()
                    || Some(i64::from(port_of(metrics))) != metrics_port
                    || metrics_port.map(|p| p.to_string()).as_ref()
                        != annotations.get("prometheus.io/port")
                {
                    self.fail(
                        &fplace,
                        "metrics_listen, the metrics containerPort and the prometheus.io/port annotation disagree",
                    );
                }
                let grpc_port;
                if image == "tributary-coordinator" {
                    let node_id = config.get("node_id").and_then(|v| v.as_integer());
                    ids.insert(node_id);
                    let advertised = get("advertised_address").to_owned();
                    grpc_port = port_of(get("listen"));
                    if advertised != format!("{pod_host}:{grpc_port}") {
                        self.fail(
                            &fplace,
                            format!("advertised_address should be {pod_host}:{grpc_port}"),
                        );
                    }
                    let me = format!("{}={advertised}", node_id.unwrap_or(-1));
                    if !get("initial_members").split(',').any(|m| m == me) {
                        self.fail(&fplace, "initial_members does not list this node");
                    }
                    coordinator_addresses.push(advertised);
                } else {
                    ids.insert(config.get("broker_id").and_then(|v| v.as_integer()));
                    let listeners = listener_list(get("listeners"));
                    let advertised = listener_list(get("advertised_listeners"));
                    let inter = get("inter_broker_listener_name");
                    if !listeners.contains_key(inter) || advertised.keys().ne(listeners.keys()) {
                        self.fail(
                            &fplace,
                            "every listener needs an advertised address, and the inter-broker listener must be one",
                        );
                        continue;
                    }
                    grpc_port = port_of(&listeners[inter]);
                    if advertised[inter] != format!("{pod_host}:{grpc_port}") {
                        self.fail(
                            &fplace,
                            format!("{inter} should be advertised as {pod_host}:{grpc_port}"),
                        );
                    }
                    broker_coordinators.push((fplace.clone(), get("coordinators").to_owned()));
                }
                if Some(i64::from(grpc_port)) != ports.get("grpc").copied() {
                    self.fail(
                        &fplace,
                        format!(
                            "the gRPC port {grpc_port} is not the grpc containerPort {:?}",
                            ports.get("grpc")
                        ),
                    );
                }
            }
            if ids.len() as i64 != replicas {
                self.fail(&place, format!("node ids are not unique: {ids:?}"));
            }
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let port = container[probe]["grpc"]["port"].as_i64();
                if port.is_none() || port != ports.get("grpc").copied() {
                    self.fail(
                        &place,
                        format!("{probe} should be a grpc probe on {:?}", ports.get("grpc")),
                    );
                }
            }
        }
        coordinator_addresses.sort();
        for (place, value) in &broker_coordinators {
            let mut listed: Vec<String> = value.split(',').map(str::to_owned).collect();
            listed.sort();
            if listed != coordinator_addresses {
                self.fail(
                    place,
                    format!("coordinators are {value}, the coordinator pods are {coordinator_addresses:?}"),
                );
            }
        }
        let selects = |selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        for (svc_name, (file, svc)) in kind("Service") {
            let place = format!("{directory}/{file}");
            let selector = string_map(&svc["spec"]["selector"]);
            let matched: Vec<&String> = pods
                .iter()
                .filter(|(_, labels)| selects(&selector, labels))
                .map(|(n, _)| n)
                .collect();
            let [sts] = matched.as_slice() else {
                self.fail(
                    &place,
                    format!("Service {svc_name} selects {matched:?}, not one StatefulSet's pods"),
                );
                continue;
            };
            let container = &statefulsets[*sts].1["spec"]["template"]["spec"]["containers"][0];
            let port_names: BTreeMap<String, i64> = container["ports"]
                .as_vec()
                .map(|v| {
                    v.iter()
                        .filter_map(|p| Some((text(&p["name"])?, p["containerPort"].as_i64()?)))
                        .collect()
                })
                .unwrap_or_default();
            for port in svc["spec"]["ports"].as_vec().cloned().unwrap_or_default() {
                let target = text(&port["targetPort"]).unwrap_or_default();
                if port_names.get(&target).copied() != port["port"].as_i64() {
                    self.fail(
                        &place,
                        format!(
                            "Service {svc_name} port {} does not match {port_names:?}",
                            text(&port["name"]).unwrap_or_default()
                        ),
                    );
                }
            }
        }
        let budgets: Vec<(String, String, BTreeMap<String, String>)> = kind("PodDisruptionBudget")
            .iter()
            .map(|(n, (f, pdb))| {
                (
                    n.clone(),
                    f.clone(),
                    string_map(&pdb["spec"]["selector"]["matchLabels"]),
                )
            })
            .collect();
        for (pdb_name, file, selector) in &budgets {
            if !pods.values().any(|labels| selects(selector, labels)) {
                self.fail(
                    format!("{directory}/{file}"),
                    format!("PodDisruptionBudget {pdb_name} selects no StatefulSet's pods"),
                );
            }
        }
        for (sts_name, labels) in &pods {
            if !budgets.iter().any(|(_, _, s)| selects(s, labels)) {
                self.fail(
                    directory,
                    format!("StatefulSet {sts_name} has no PodDisruptionBudget"),
                );
            }
        }
        self.checked
            .push(format!("Kubernetes ({} objects)", objects.len()));
    }
}
