#!/usr/bin/env python3
"""Checks deploy/ against the binaries, with no Docker or Kubernetes: `cargo xtask deploy-check`.

What it checks, for every file under deploy/:
- everything parses (YAML, TOML, JSON, the systemd units' and Dockerfiles' lines);
- every flag a manifest, unit or Compose file passes exists in the binary's `--help`, every
  config key (TOML files, TRIBUTARY_* variables) is one the binary accepts (asked from the
  binary itself: it names its known keys when refusing an unknown one), and the `healthcheck`
  subcommand exists;
- names, ports and addresses agree: advertised addresses are the pods' / services' DNS names
  on the ports they listen on, probes and health checks ask the gRPC port, Services and
  PodDisruptionBudgets select the StatefulSets' pods, metrics ports match, data directories are
  the mounted volumes, the uid is the images' user;
- every metric the Grafana dashboard queries is one the servers expose.

Usage: python3 deploy/check.py --bin-dir target/debug
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
UID = 10001
ERRORS = []
CHECKED = []


def fail(where, message):
    ERRORS.append(f"{os.path.relpath(where, ROOT) if os.path.isabs(where) else where}: {message}")


def port_of(address):
    """The port of `host:port` / `NAME://host:port`."""
    return int(address.rsplit(":", 1)[1])


def host_of(address):
    return address.split("://")[-1].rsplit(":", 1)[0]


def listener_list(text):
    """`A://h:1,B://h:2` -> {"A": "h:1", "B": "h:2"}."""
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        name, _, address = item.partition("://")
        out[name] = address
    return out


class Binary:
    """What a server binary accepts: flags, subcommands, config keys."""

    def __init__(self, bin_dir, name):
        self.name = name
        self.path = os.path.join(bin_dir, name)
        if not os.access(self.path, os.X_OK):
            sys.exit(f"deploy/check.py: no {self.path}; build it first (cargo build --bins)")
        help_text = self.run(["--help"]).stdout
        self.flags = set(re.findall(r"--[a-z][a-z0-9-]*", help_text))
        commands = help_text.split("Commands:", 1)[1].split("Options:", 1)[0] if "Commands:" in help_text else ""
        self.subcommands = set(re.findall(r"^\s{2}([a-z][a-z-]*)\s", commands, re.M))
        self.keys = self.known_keys()

    def run(self, args, timeout=20):
        return subprocess.run(
            [self.path, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def known_keys(self):
        """The binary's config keys: it names them when it refuses an unknown one (before
        binding anything; the flags keep it off the default ports regardless)."""
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "probe.toml")
            with open(config, "w", encoding="utf-8") as f:
                f.write("zz_not_a_setting = 1\n")
            out = self.run(
                ["--config", config, "--data-dir", os.path.join(tmp, "data"), "--listen", "127.0.0.1:0"],
                timeout=10,
            )
        match = re.search(r"\(known: ([a-z0-9_, ]+)\)", out.stderr)
        if out.returncode == 0 or not match:
            sys.exit(f"deploy/check.py: {self.name} did not name its known keys: {out.stderr}")
        return {k.strip() for k in match.group(1).split(",")}

    def check_flags(self, where, args):
        for arg in args:
            if arg.startswith("--") and arg.split("=", 1)[0] not in self.flags:
                fail(where, f"{self.name} has no flag {arg} (`{self.name} --help`)")

    def check_keys(self, where, keys):
        for key in keys:
            if key not in self.keys:
                fail(where, f"{self.name} has no config key `{key}` (known: {', '.join(sorted(self.keys))})")

    def check_healthcheck(self, where, args):
        """`[binary-path, "healthcheck", addr]`."""
        if len(args) < 2 or os.path.basename(args[0]) != self.name or args[1] != "healthcheck":
            fail(where, f"the health check should run `{self.name} healthcheck ADDR`, not {args}")
        elif "healthcheck" not in self.subcommands:
            fail(where, f"{self.name} has no healthcheck subcommand")


# --- Dockerfiles ------------------------------------------------------------------------------


def dockerfile(name):
    """ENTRYPOINT, HEALTHCHECK CMD, USER, ENV, EXPOSE of deploy/docker/<name>."""
    path = os.path.join(DEPLOY, "docker", name)
    text = open(path, encoding="utf-8").read().replace("\\\n", " ")
    out = {"path": path, "env": {}, "expose": set(), "copies": {}}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM" and rest.strip() != "scratch":
            fail(path, f"images are built FROM scratch (no registry to pull from), not {rest}")
        elif word == "ENTRYPOINT":
            out["entrypoint"] = json.loads(rest)
        elif word == "HEALTHCHECK":
            out["healthcheck"] = json.loads(rest.split(" CMD ", 1)[1])
        elif word == "USER":
            out["user"] = rest.strip()
        elif word == "ENV":
            key, _, value = rest.partition("=")
            out["env"][key.strip()] = value.strip()
        elif word == "EXPOSE":
            out["expose"] |= {int(p) for p in rest.split()}
        elif word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            out["copies"][parts[-1]] = parts[:-1]
    return out


def check_dockerfiles(binaries):
    passwd = open(os.path.join(DEPLOY, "docker", "passwd"), encoding="utf-8").read()
    if f":{UID}:{UID}:" not in passwd:
        fail("deploy/docker/passwd", f"no user with uid and gid {UID}")
    images = {}
    for name, binary in [("coordinator.Dockerfile", "tributary-coordinator"), ("broker.Dockerfile", "tributary-broker")]:
        d = dockerfile(name)
        entry = d.get("entrypoint", [""])[0]
        if entry not in d["copies"] or os.path.basename(entry) != binary:
            fail(d["path"], f"ENTRYPOINT {entry} is not the copied {binary}")
        binaries[binary].check_healthcheck(d["path"], d.get("healthcheck", []))
        if d.get("user") != f"{UID}:{UID}":
            fail(d["path"], f"USER should be {UID}:{UID}, is {d.get('user')}")
        data_dir = d["env"].get("TRIBUTARY_DATA_DIR")
        if data_dir not in d["copies"]:
            fail(d["path"], f"TRIBUTARY_DATA_DIR {data_dir} is not a directory the image creates")
        binaries[binary].check_keys(d["path"], [k[len("TRIBUTARY_"):].lower() for k in d["env"]])
        images[binary] = d
    default_ports = {"tributary-coordinator": 9191, "tributary-broker": 9092}
    for binary, d in images.items():
        if default_ports[binary] not in d["expose"]:
            fail(d["path"], f"does not EXPOSE {binary}'s default port {default_ports[binary]}")
        if port_of(d["healthcheck"][-1]) != default_ports[binary]:
            fail(d["path"], "the HEALTHCHECK does not ask the default port")
    xtask = open(os.path.join(ROOT, "xtask", "src", "docker.rs"), encoding="utf-8").read()
    for image in ("tributary-coordinator", "tributary-broker", "tributary-cli"):
        if f'name: "{image}"' not in xtask:
            fail("xtask/src/docker.rs", f"docker-build does not build {image}")
    CHECKED.append("Dockerfiles")
    return images


# --- Compose ----------------------------------------------------------------------------------


def substitute(text):
    """Compose's ${VAR:-default} with the defaults."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(text))


def check_compose(binaries, images):
    path = os.path.join(DEPLOY, "docker-compose.yml")
    compose = yaml.safe_load(open(path, encoding="utf-8"))
    services = compose["services"]
    coordinators = {n: s for n, s in services.items() if s["image"].startswith("tributary-coordinator:")}
    brokers = {n: s for n, s in services.items() if s["image"].startswith("tributary-broker:")}
    if len(coordinators) != 3 or len(brokers) != 3:
        fail(path, f"expected 3 coordinators and 3 brokers, found {sorted(coordinators)} and {sorted(brokers)}")
    members = set()
    published = {}
    for name, service in services.items():
        binary = "tributary-coordinator" if name in coordinators else "tributary-broker"
        where = f"{path} ({name})"
        env = service.get("environment", {})
        binaries[binary].check_keys(where, [k[len("TRIBUTARY_"):].lower() for k in env if k.startswith("TRIBUTARY_")])
        binaries[binary].check_flags(where, service.get("command", []) or [])
        test = service.get("healthcheck", {}).get("test", [])
        binaries[binary].check_healthcheck(where, test[1:])
        if test[1:2] != [images[binary]["entrypoint"][0]]:
            fail(where, f"the health check runs {test[1:2]}, the image's binary is {images[binary]['entrypoint']}")
        data_dir = images[binary]["env"]["TRIBUTARY_DATA_DIR"]
        if not any(v.split(":")[1] == data_dir for v in service.get("volumes", [])):
            fail(where, f"no named volume on the data directory {data_dir}")
        for volume in service.get("volumes", []):
            if volume.split(":")[0] not in (compose.get("volumes") or {}):
                fail(where, f"volume {volume} is not a named volume")
        ports = {}  # container port -> the host port as written (maybe a ${VAR:-default})
        for spec in service.get("ports", []):
            match = re.fullmatch(r"(?:[0-9.]+:)?(\$\{[^}]*\}|[0-9]+):([0-9]+)", str(spec))
            if not match:
                fail(where, f"cannot read the port mapping {spec}")
                continue
            ports[int(match.group(2))] = match.group(1)
            published.setdefault(substitute(match.group(1)), []).append(name)
        metrics = env.get("TRIBUTARY_METRICS_LISTEN")
        if metrics and port_of(metrics) not in ports:
            fail(where, f"metrics port {port_of(metrics)} is not published")
        if name in coordinators:
            advertised = env.get("TRIBUTARY_ADVERTISED_ADDRESS", "")
            if host_of(advertised) != service.get("hostname", name) or host_of(advertised) != name:
                fail(where, f"advertised address {advertised} is not the service's name")
            listen_port = port_of(env.get("TRIBUTARY_LISTEN", "0.0.0.0:9191"))
            if port_of(advertised) != listen_port or port_of(test[-1]) != listen_port:
                fail(where, "the advertised address, listen port and health check disagree")
            members.add(env.get("TRIBUTARY_INITIAL_MEMBERS"))
            if f"={advertised}" not in env.get("TRIBUTARY_INITIAL_MEMBERS", ""):
                fail(where, "initial_members does not list this node's advertised address")
        else:
            listeners = listener_list(env.get("TRIBUTARY_LISTENERS"))
            advertised = listener_list(substitute(env.get("TRIBUTARY_ADVERTISED_LISTENERS")))
            inter = env.get("TRIBUTARY_INTER_BROKER_LISTENER_NAME")
            if set(listeners) != {"INTERNAL", "EXTERNAL"} or set(advertised) != set(listeners):
                fail(where, f"brokers need INTERNAL and EXTERNAL listeners, advertised: {listeners}, {advertised}")
                continue
            if inter != "INTERNAL":
                fail(where, "brokers replicate over INTERNAL")
            if host_of(advertised["INTERNAL"]) != name or port_of(advertised["INTERNAL"]) != port_of(listeners["INTERNAL"]):
                fail(where, f"INTERNAL is advertised as {advertised['INTERNAL']}, not {name}:{port_of(listeners['INTERNAL'])}")
            if port_of(test[-1]) not in {port_of(a) for a in listeners.values()}:
                fail(where, f"the health check asks {test[-1]}, which no listener binds")
            external = port_of(listeners["EXTERNAL"])
            raw_advertised = listener_list(env.get("TRIBUTARY_ADVERTISED_LISTENERS"))["EXTERNAL"]
            # The host port is published under the same variable and default as advertised.
            if raw_advertised != f"localhost:{ports.get(external)}":
                fail(where, f"EXTERNAL is advertised as {raw_advertised} but published as {ports.get(external)}")
            expected = ",".join(f"{c}:9191" for c in sorted(coordinators))
            if env.get("TRIBUTARY_COORDINATORS") != expected:
                fail(where, f"coordinators should be {expected}")
    if len(members) != 1:
        fail(path, f"the coordinators disagree on initial_members: {members}")
    for port, users in published.items():
        if len(users) > 1:
            fail(path, f"host port {port} is published by {users}")
    external = sorted(int(p) for p, users in published.items() if set(users) <= set(brokers) and int(p) < 10000)
    if external != [9092, 9093, 9094]:
        fail(path, f"brokers should be published on the host as 9092-9094, are {external}")
    CHECKED.append("docker-compose.yml")


# --- Kubernetes -------------------------------------------------------------------------------


def check_kubernetes(binaries):
    directory = os.path.join(DEPLOY, "kubernetes")
    objects = []
    files = sorted(f for f in os.listdir(directory) if f.endswith(".yaml"))
    for name in files:
        for doc in yaml.safe_load_all(open(os.path.join(directory, name), encoding="utf-8")):
            if doc:
                objects.append((name, doc))
    kustomization = next((d for n, d in objects if d.get("kind") == "Kustomization"), None)
    resources = set(kustomization["resources"]) if kustomization else set()
    for name in files:
        if name != "kustomization.yaml" and name not in resources:
            fail(os.path.join(directory, name), "not listed in kustomization.yaml")
    by_kind = {}
    for name, doc in objects:
        if doc.get("kind") == "Kustomization":
            continue
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                fail(os.path.join(directory, name), f"an object without {field}")
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = (name, doc)
    namespaces = set(by_kind.get("Namespace", {}))
    for kind, items in by_kind.items():
        for obj_name, (name, doc) in items.items():
            if kind not in ("Namespace", "Kustomization") and doc["metadata"].get("namespace") not in namespaces:
                fail(os.path.join(directory, name), f"{kind} {obj_name} is not in the namespace {namespaces}")
    namespace = next(iter(namespaces))
    statefulsets = by_kind.get("StatefulSet", {})
    pods = {}
    coordinator_addresses = []
    broker_coordinators = []
    for sts_name, (name, sts) in sorted(statefulsets.items()):
        where = f"deploy/kubernetes/{name} (StatefulSet {sts_name})"
        spec = sts["spec"]
        template = spec["template"]
        labels = template["metadata"]["labels"]
        pods[sts_name] = labels
        if not set(spec["selector"]["matchLabels"].items()) <= set(labels.items()):
            fail(where, "the selector does not match the pod labels")
        service = by_kind.get("Service", {}).get(spec["serviceName"])
        if not service or service[1]["spec"].get("clusterIP") != "None":
            fail(where, f"serviceName {spec['serviceName']} is not a headless Service")
        if spec.get("podManagementPolicy") != "Parallel":
            fail(where, "podManagementPolicy should be Parallel (coordinators need each other to become ready)")
        security = template["spec"].get("securityContext", {})
        if security.get("runAsUser") != UID or security.get("fsGroup") != UID or not security.get("runAsNonRoot"):
            fail(where, f"pods should run as uid {UID} with fsGroup {UID} (the images' user)")
        (container,) = template["spec"]["containers"]
        image = container["image"].split(":")[0]
        binary = binaries.get(image)
        if not binary:
            fail(where, f"image {container['image']} is not one docker-build makes")
            continue
        args = container.get("args", [])
        binary.check_flags(where, args)
        env = {e["name"] for e in container.get("env", [])}
        for ref in re.findall(r"\$\(([A-Z_]+)\)", " ".join(args)):
            if ref not in env:
                fail(where, f"args use $({ref}), which is not in env")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        config_path = args[args.index("--config") + 1] if "--config" in args else None
        if not config_path or "$(POD_NAME)" not in config_path:
            fail(where, "each pod should read /etc/tributary/$(POD_NAME).toml")
            continue
        config_dir = os.path.dirname(config_path)
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        config_map_name = volumes.get(mounts.get(config_dir), {}).get("configMap", {}).get("name")
        config_map = by_kind.get("ConfigMap", {}).get(config_map_name)
        if not config_map:
            fail(where, f"{config_dir} is not a mounted ConfigMap")
            continue
        data = config_map[1]["data"]
        expected_files = {f"{sts_name}-{i}.toml" for i in range(spec["replicas"])}
        if set(data) != expected_files:
            fail(where, f"ConfigMap {config_map_name} should hold exactly {sorted(expected_files)}, holds {sorted(data)}")
        ids = set()
        for i in range(spec["replicas"]):
            file = f"{sts_name}-{i}.toml"
            if file not in data:
                continue
            fwhere = f"deploy/kubernetes/{name} (ConfigMap {config_map_name}, {file})"
            config = tomllib.loads(data[file])
            binary.check_keys(fwhere, config)
            pod_host = f"{sts_name}-{i}.{spec['serviceName']}.{namespace}.svc"
            if mounts.get(config.get("data_dir")) not in claims:
                fail(fwhere, f"data_dir {config.get('data_dir')} is not the pod's volume claim")
            metrics = config.get("metrics_listen")
            annotations = template["metadata"].get("annotations", {})
            if not metrics or port_of(metrics) != ports.get("metrics") or str(ports.get("metrics")) != annotations.get("prometheus.io/port"):
                fail(fwhere, "metrics_listen, the metrics containerPort and the prometheus.io/port annotation disagree")
            if image == "tributary-coordinator":
                ids.add(config["node_id"])
                advertised = config["advertised_address"]
                grpc_port = port_of(config["listen"])
                if advertised != f"{pod_host}:{grpc_port}":
                    fail(fwhere, f"advertised_address should be {pod_host}:{grpc_port}")
                if f"{config['node_id']}={advertised}" not in config["initial_members"].split(","):
                    fail(fwhere, "initial_members does not list this node")
                coordinator_addresses.append(advertised)
            else:
                ids.add(config["broker_id"])
                listeners = listener_list(config.get("listeners"))
                advertised = listener_list(config.get("advertised_listeners"))
                inter = config.get("inter_broker_listener_name")
                if inter not in listeners or set(advertised) != set(listeners):
                    fail(fwhere, "every listener needs an advertised address, and the inter-broker listener must be one")
                    continue
                grpc_port = port_of(listeners[inter])
                if advertised[inter] != f"{pod_host}:{grpc_port}":
                    fail(fwhere, f"{inter} should be advertised as {pod_host}:{grpc_port}")
                broker_coordinators.append((fwhere, config["coordinators"]))
            if grpc_port != ports.get("grpc"):
                fail(fwhere, f"the gRPC port {grpc_port} is not the grpc containerPort {ports.get('grpc')}")
        if len(ids) != spec["replicas"]:
            fail(where, f"node ids are not unique: {sorted(ids)}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = container.get(probe, {}).get("grpc", {}).get("port")
            if port != ports.get("grpc"):
                fail(where, f"{probe} should be a grpc probe on {ports.get('grpc')}, is {container.get(probe)}")
    for where, value in broker_coordinators:
        if sorted(value.split(",")) != sorted(coordinator_addresses):
            fail(where, f"coordinators are {value}, the coordinator pods are {coordinator_addresses}")
    for svc_name, (name, svc) in by_kind.get("Service", {}).items():
        selector = set(svc["spec"]["selector"].items())
        matched = [s for s, labels in pods.items() if selector <= set(labels.items())]
        if len(matched) != 1:
            fail(f"deploy/kubernetes/{name}", f"Service {svc_name} selects {matched}, not one StatefulSet's pods")
            continue
        container = statefulsets[matched[0]][1]["spec"]["template"]["spec"]["containers"][0]
        port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in svc["spec"]["ports"]:
            if port["targetPort"] not in port_names or port_names[port["targetPort"]] != port["port"]:
                fail(f"deploy/kubernetes/{name}", f"Service {svc_name} port {port} does not match {port_names}")
    for pdb_name, (name, pdb) in by_kind.get("PodDisruptionBudget", {}).items():
        selector = set(pdb["spec"]["selector"]["matchLabels"].items())
        if not any(selector <= set(l.items()) for l in pods.values()):
            fail(f"deploy/kubernetes/{name}", f"PodDisruptionBudget {pdb_name} selects no StatefulSet's pods")
    for sts_name in statefulsets:
        if not any(
            set(pdb["spec"]["selector"]["matchLabels"].items()) <= set(pods[sts_name].items())
            for _, pdb in by_kind.get("PodDisruptionBudget", {}).values()
        ):
            fail("deploy/kubernetes", f"StatefulSet {sts_name} has no PodDisruptionBudget")
    CHECKED.append(f"Kubernetes ({len(objects)} objects)")


# --- systemd ----------------------------------------------------------------------------------


def check_systemd(binaries):
    directory = os.path.join(DEPLOY, "systemd")
    for binary_name, unit_name, example in [
        ("tributary-coordinator", "tributary-coordinator.service", "coordinator.toml"),
        ("tributary-broker", "tributary-broker.service", "broker.toml"),
    ]:
        binary = binaries[binary_name]
        path = os.path.join(directory, unit_name)
        unit = {}
        section = None
        for line in open(path, encoding="utf-8"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            unit.setdefault((section, key), []).append(value)
        for required in ["Restart", "LimitNOFILE", "User", "NoNewPrivileges", "ProtectSystem", "StateDirectory"]:
            if ("Service", required) not in unit:
                fail(path, f"no {required}=")
        if unit.get(("Service", "Restart")) != ["on-failure"]:
            fail(path, "Restart should be on-failure")
        (exec_start,) = unit[("Service", "ExecStart")]
        args = exec_start.split()
        if os.path.basename(args[0]) != binary_name:
            fail(path, f"ExecStart runs {args[0]}, not {binary_name}")
        binary.check_flags(path, args[1:])
        config_path = args[args.index("--config") + 1]
        if os.path.basename(config_path) != example or not config_path.startswith("/etc/tributary/"):
            fail(path, f"--config {config_path} is not /etc/tributary/{example}")
        example_path = os.path.join(directory, example)
        config = tomllib.load(open(example_path, "rb"))
        binary.check_keys(example_path, config)
        state = unit[("Service", "StateDirectory")][0]
        if config.get("data_dir") != f"/var/lib/{state}":
            fail(example_path, f"data_dir should be /var/lib/{state} (the unit's StateDirectory)")
        if binary_name == "tributary-broker":
            listeners = listener_list(config.get("listeners"))
            advertised = listener_list(config.get("advertised_listeners"))
            if set(listeners) != set(advertised) or config.get("inter_broker_listener_name") not in listeners:
                fail(example_path, "listeners, advertised_listeners and inter_broker_listener_name disagree")
    CHECKED.append("systemd units and example configs")
    verify_units(binaries, directory)


def verify_units(binaries, directory):
    """`systemd-analyze verify`, where there is one, on copies of the units that run the binaries
    under test: any complaint about a unit's own lines fails the check."""
    if not shutil.which("systemd-analyze"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        units = []
        for name in sorted(os.listdir(directory)):
            if name.endswith(".service"):
                text = open(os.path.join(directory, name), encoding="utf-8").read()
                for binary in binaries.values():
                    text = text.replace(f"/usr/local/bin/{binary.name} ", f"{binary.path} ")
                units.append(os.path.join(tmp, name))
                with open(units[-1], "w", encoding="utf-8") as f:
                    f.write(text)
        try:
            out = subprocess.run(
                ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired:
            return
        for line in (out.stdout + out.stderr).splitlines():
            if ".service:" in line:
                fail(os.path.join(directory, os.path.basename(line.split(":", 1)[0])), line)
    CHECKED.append("systemd-analyze verify")


# --- Grafana ----------------------------------------------------------------------------------


def exposed_metrics():
    """Every metric name the servers render (string literals in their metrics code)."""
    names = set()
    for path in [
        "crates/tributary-broker/src/metrics.rs",
        "crates/tributary-coordinator/src/metrics.rs",
        "crates/tributary-node/src/metrics.rs",
    ]:
        text = open(os.path.join(ROOT, path), encoding="utf-8").read()
        names |= set(re.findall(r'"((?:tributary|process)_[a-z_]+)"', text))
        if "_bucket" in text:  # histograms render _bucket, _sum and _count series
            names |= {f"{n}{s}" for n in list(names) for s in ("_bucket", "_sum", "_count")}
    return names


def check_grafana():
    directory = os.path.join(DEPLOY, "grafana")
    exposed = exposed_metrics()
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        dashboard = json.load(open(path, encoding="utf-8"))
        variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
        count = 0
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                count += 1
                for metric in re.findall(r"\b((?:tributary|process)_[a-z_]+)\b", target["expr"]):
                    if metric not in exposed:
                        fail(path, f"panel `{panel['title']}` queries {metric}, which no server exposes")
            uid = panel.get("datasource", {}).get("uid", "")
            if uid.startswith("${") and uid[2:-1] not in variables:
                fail(path, f"panel `{panel['title']}` uses the undefined variable {uid}")
        CHECKED.append(f"Grafana {name} ({count} queries)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, help="where tributary-coordinator and tributary-broker are")
    args = parser.parse_args()
    binaries = {name: Binary(args.bin_dir, name) for name in ("tributary-coordinator", "tributary-broker")}
    images = check_dockerfiles(binaries)
    check_compose(binaries, images)
    check_kubernetes(binaries)
    check_systemd(binaries)
    check_grafana()
    if ERRORS:
        print("deploy/check.py: deploy/ disagrees with the binaries:", file=sys.stderr)
        for error in ERRORS:
            print(f"  {error}", file=sys.stderr)
        sys.exit(1)
    print(f"deploy/check.py: OK: {'; '.join(CHECKED)}")


if __name__ == "__main__":
    main()
