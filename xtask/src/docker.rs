//! `cargo xtask docker-build` and `compose-test`: the container images and the Compose round
//! trip (`deploy-check`, the checks of `deploy/` that need no Docker, is in `deploy.rs`).
//!
//! Images are built `FROM scratch` (no registry can be reached, so nothing is pulled) around
//! statically linked binaries: `RUSTFLAGS="-C target-feature=+crt-static"` with an explicit
//! `--target`, so the static build lands in `target/x86_64-unknown-linux-gnu/release/` and
//! leaves `target/release/` alone. Each image gets its own small build context
//! (`target/docker/<image>/`): the binary, `/etc/passwd` and `/etc/group` lines for the
//! non-root user the nodes run as, and an empty data directory that the Dockerfile copies in
//! owned by that user.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The docker tasks' lines of `cargo xtask help`.
pub const HELP: &str = "  docker-build [--tag TAG] [--no-cargo]
                     build static binaries (glibc +crt-static, into
                     target/x86_64-unknown-linux-gnu/release) and the FROM-scratch images
                     tributary-coordinator:TAG, tributary-broker:TAG and tributary-cli:TAG
                     (default TAG: dev) from deploy/docker/ (--no-cargo: use the static
                     binaries already built)
  compose-test [--no-build]
                     docker-build, then bring deploy/docker-compose.yml up (project
                     tributary-compose-test, brokers published on free ports), wait until
                     every container is healthy, create a topic with 3 partitions and 3
                     replicas, produce and consume through the host's `tributary`, and tear
                     everything down (`down -v`), failure or not; skipped with a message
                     when no Docker engine answers
  deploy-check       check deploy/ without Docker or Kubernetes: the manifests and the
                     Compose file parse, and their flags, ports, config keys and metric
                     names agree with what the binaries print (--help,
                     --print-config-keys, --print-metric-names; --bin-dir DIR: the
                     binaries' directory, default the target directory's debug/)
";

/// The target triple of the static build.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The Compose project of `compose-test`: its containers, network and volumes have this prefix.
const COMPOSE_PROJECT: &str = "tributary-compose-test";
/// The default ports no test may publish (the local cluster's, `cargo xtask cluster-up`).
const DEFAULT_PORTS: std::ops::RangeInclusive<u16> = 9092..=9094;

/// One image: its name, the package and binary it holds, and its Dockerfile.
pub struct Image {
    pub name: &'static str,
    binary: &'static str,
    dockerfile: &'static str,
}

pub const IMAGES: [Image; 3] = [
    Image {
        name: "tributary-coordinator",
        binary: "tributary-coordinator",
        dockerfile: "coordinator.Dockerfile",
    },
    Image {
        name: "tributary-broker",
        binary: "tributary-broker",
        dockerfile: "broker.Dockerfile",
    },
    Image {
        name: "tributary-cli",
        binary: "tributary",
        dockerfile: "cli.Dockerfile",
    },
];

/// The workspace's target directory (`$CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d))
}

/// Where the static binaries are.
fn static_dir(root: &Path) -> PathBuf {
    target_dir(root).join(STATIC_TARGET).join("release")
}

/// `cargo xtask docker-build`.
pub fn docker_build(args: &[String], root: &Path) -> Result<()> {
    let mut tag = "dev".to_owned();
    let mut cargo = true;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--tag" => tag = rest.next().context("--tag needs a value")?.clone(),
            "--no-cargo" => cargo = false,
            other => bail!("unknown option `{other}` for `cargo xtask docker-build`"),
        }
    }
    if let Err(why) = docker_available() {
        bail!("docker-build needs a Docker engine: {why}");
    }
    build_images(root, &tag, cargo)
}

fn build_images(root: &Path, tag: &str, cargo: bool) -> Result<()> {
    if cargo {
        build_static(root)?;
    }
    let bin_dir = static_dir(root);
    let deploy = root.join("deploy").join("docker");
    // The classic builder where BuildKit's client (buildx) is missing: the Dockerfiles need
    // nothing BuildKit-only, and the docker CLI refuses BuildKit without buildx.
    let buildkit = quiet_success(Command::new("docker").args(["buildx", "version"]));
    for image in &IMAGES {
        let context = target_dir(root).join("docker").join(image.name);
        if context.exists() {
            std::fs::remove_dir_all(&context)
                .with_context(|| format!("removing {}", context.display()))?;
        }
        let etc = context.join("etc");
        std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
        // The data directory the Dockerfile copies in owned by the user (a named volume
        // mounted over it starts as a copy, ownership included).
        std::fs::create_dir_all(context.join("data"))?;
        for file in ["passwd", "group"] {
            std::fs::copy(deploy.join(file), etc.join(file))
                .with_context(|| format!("copying deploy/docker/{file}"))?;
        }
        let binary = bin_dir.join(image.binary);
        std::fs::copy(&binary, context.join(image.binary)).with_context(|| {
            format!(
                "copying {} (build it with `cargo xtask docker-build` without --no-cargo)",
                binary.display()
            )
        })?;
        let reference = format!("{}:{tag}", image.name);
        eprintln!("xtask: building image {reference}");
        let mut command = Command::new("docker");
        command
            .arg("build")
            .arg("--quiet")
            .arg("--file")
            .arg(deploy.join(image.dockerfile))
            .arg("--tag")
            .arg(&reference)
            .arg("--build-arg")
            .arg(format!("VERSION={}", env!("CARGO_PKG_VERSION")))
            .arg(&context);
        if !buildkit {
            command.env("DOCKER_BUILDKIT", "0");
        }
        let out = run_bounded(&mut command, None, Duration::from_secs(600))
            .with_context(|| format!("docker build of {reference}"))?;
        out.check(&format!("docker build of {reference}"))?;
    }
    let listed = run_bounded(
        Command::new("docker").args([
            "image",
            "ls",
            "--filter",
            "reference=tributary-*",
            "--format",
            "{{.Repository}}:{{.Tag}}  {{.Size}}",
        ]),
        None,
        Duration::from_secs(30),
    )?;
    eprint!("{}", listed.stdout);
    Ok(())
}

/// `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target
/// x86_64-unknown-linux-gnu -p tributary-coordinator -p tributary-broker -p tributary-cli`.
fn build_static(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = [
        "build",
        "--release",
        "--target",
        STATIC_TARGET,
        "-p",
        "tributary-coordinator",
        "-p",
        "tributary-broker",
        "-p",
        "tributary-cli",
    ];
    eprintln!(
        "xtask: running RUSTFLAGS=\"-C target-feature=+crt-static\" cargo {}",
        args.join(" ")
    );
    let started = Instant::now();
    let status = Command::new(&cargo)
        .args(args)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    if !status.success() {
        bail!("the static build failed ({status}); see cargo's output above");
    }
    eprintln!(
        "xtask: static binaries built in {}",
        secs(started.elapsed())
    );
    Ok(())
}

/// Whether the engine answers `docker info` (within 30 s), or why not.
fn docker_available() -> Result<(), String> {
    match run_bounded(
        Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
        None,
        Duration::from_secs(30),
    ) {
        Ok(out) if out.success => Ok(()),
        Ok(out) => Err(format!(
            "`docker info` failed: {}",
            out.stderr.trim().lines().last().unwrap_or("no message")
        )),
        Err(err) => Err(format!("`docker info` failed: {err:#}")),
    }
}

/// Whether Docker mode can run here (an engine and a Compose CLI), or why not.
pub fn docker_mode_available() -> Result<(), String> {
    docker_available()?;
    compose_program()
        .map(drop)
        .ok_or_else(|| "neither `docker compose` nor `docker-compose` runs".to_owned())
}

/// `docker compose` if the plugin is there, else `docker-compose` (Compose v1), else None.
fn compose_program() -> Option<Vec<&'static str>> {
    if quiet_success(Command::new("docker").args(["compose", "version"])) {
        Some(vec!["docker", "compose"])
    } else if quiet_success(Command::new("docker-compose").arg("version")) {
        Some(vec!["docker-compose"])
    } else {
        None
    }
}

fn quiet_success(command: &mut Command) -> bool {
    run_bounded(command, None, Duration::from_secs(30)).is_ok_and(|o| o.success)
}

/// `cargo xtask compose-test`, standalone.
pub fn compose_test(args: &[String], root: &Path) -> Result<()> {
    let mut build = true;
    for arg in args {
        match arg.as_str() {
            "--no-build" => build = false,
            other => bail!("unknown option `{other}` for `cargo xtask compose-test`"),
        }
    }
    compose_round_trip(root, build)
}

/// The step of `cargo xtask test`: the round trip, or a message saying why it was skipped.
pub fn test_step(root: &Path) -> Result<()> {
    compose_round_trip(root, true)
}

fn compose_round_trip(root: &Path, build: bool) -> Result<()> {
    if let Err(why) = docker_available() {
        eprintln!("xtask: compose-test SKIPPED: no Docker engine answers ({why})");
        return Ok(());
    }
    let Some(compose) = compose_program() else {
        eprintln!(
            "xtask: compose-test SKIPPED: the Docker engine answers but neither `docker compose` nor `docker-compose` runs"
        );
        return Ok(());
    };
    let started = Instant::now();
    if build {
        build_images(root, "dev", true)?;
        eprintln!(
            "xtask: compose-test: images built in {}",
            secs(started.elapsed())
        );
    }
    let cluster = ComposeCluster::new(root, compose)?;
    // Whatever an interrupted earlier run left behind.
    cluster.down()?;
    let result = cluster.up_and_round_trip();
    if result.is_err() {
        cluster.print_logs();
    }
    let down_started = Instant::now();
    let down = cluster.down();
    eprintln!(
        "xtask: compose-test: torn down (down -v) in {}",
        secs(down_started.elapsed())
    );
    result?;
    down?;
    eprintln!(
        "xtask: compose-test: passed in {} in all",
        secs(started.elapsed())
    );
    Ok(())
}

/// The Compose cluster of `compose-test`: its project, file, CLI and published ports.
struct ComposeCluster {
    compose: Vec<&'static str>,
    file: PathBuf,
    cli: PathBuf,
    /// (variable, port) for every port the Compose file publishes.
    ports: Vec<(String, u16)>,
}

impl ComposeCluster {
    fn new(root: &Path, compose: Vec<&'static str>) -> Result<Self> {
        let file = root.join("deploy").join("docker-compose.yml");
        let cli = static_dir(root).join("tributary");
        let mut variables = Vec::new();
        for i in 1..=3 {
            variables.push(format!("BROKER_{i}_PORT"));
            variables.push(format!("BROKER_{i}_METRICS_PORT"));
            variables.push(format!("COORDINATOR_{i}_METRICS_PORT"));
        }
        // Free ports for everything published: never the defaults of a local cluster
        // (`cargo xtask cluster-up`), which may be running, or start right after this.
        let free: Vec<u16> = tributary_tests::harness::free_ports(variables.len() + 3)
            .context("picking free ports")?
            .into_iter()
            .filter(|p| !DEFAULT_PORTS.contains(p) && !(9191..=9193).contains(p))
            .take(variables.len())
            .collect();
        if free.len() < variables.len() {
            bail!("could not pick {} free ports", variables.len());
        }
        Ok(Self {
            compose,
            file,
            cli,
            ports: variables.into_iter().zip(free).collect(),
        })
    }

    fn port(&self, variable: &str) -> u16 {
        self.ports
            .iter()
            .find(|(v, _)| v == variable)
            .map(|(_, p)| *p)
            .expect("a published port")
    }

    /// `docker compose -p tributary-compose-test -f deploy/docker-compose.yml ARGS`, with the
    /// published ports in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("--project-name")
            .arg(COMPOSE_PROJECT)
            .arg("--file")
            .arg(&self.file)
            .args(args);
        for (variable, port) in &self.ports {
            command.env(variable, port.to_string());
        }
        command
    }

    fn run(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let what = format!("`{} {}`", self.compose.join(" "), args.join(" "));
        let out = run_bounded(&mut self.command(args), None, timeout)
            .with_context(|| format!("running {what}"))?;
        out.check(&what)?;
        Ok(out)
    }

    fn down(&self) -> Result<()> {
        self.run(
            &["down", "--volumes", "--remove-orphans", "--timeout", "45"],
            Duration::from_secs(180),
        )
        .map(drop)
    }

    fn print_logs(&self) {
        match run_bounded(
            &mut self.command(&["logs", "--no-color", "--tail", "40"]),
            None,
            Duration::from_secs(60),
        ) {
            Ok(out) => eprintln!(
                "xtask: compose-test: the containers' last log lines:\n{}{}",
                out.stdout, out.stderr
            ),
            Err(err) => eprintln!("xtask: compose-test: no logs: {err:#}"),
        }
    }

    fn up_and_round_trip(&self) -> Result<()> {
        for (variable, port) in &self.ports {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            if !tributary_tests::harness::port_is_free(addr) {
                bail!(
                    "port {port} ({variable}) is taken on this host; the Compose test needs it free"
                );
            }
        }
        let started = Instant::now();
        self.run(&["up", "--detach"], Duration::from_secs(240))?;
        eprintln!(
            "xtask: compose-test: `up --detach` returned in {}",
            secs(started.elapsed())
        );
        self.wait_healthy(Duration::from_secs(120))?;
        eprintln!(
            "xtask: compose-test: 6 containers healthy {} after `up`",
            secs(started.elapsed())
        );
        let round_trip = Instant::now();
        self.round_trip()?;
        eprintln!(
            "xtask: compose-test: round trip through the host's CLI in {}",
            secs(round_trip.elapsed())
        );
        self.check_metrics()?;
        Ok(())
    }

    /// Every node's published Prometheus endpoint answers with its metrics.
    fn check_metrics(&self) -> Result<()> {
        for i in 1..=3 {
            for (kind, metric) in [
                ("BROKER", "tributary_requests_total"),
                ("COORDINATOR", "tributary_raft_term"),
            ] {
                let port = self.port(&format!("{kind}_{i}_METRICS_PORT"));
                let text = http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "/metrics")
                    .with_context(|| format!("GET /metrics of {kind} {i} on port {port}"))?;
                if !text.contains(metric) {
                    bail!("GET /metrics of {kind} {i} on port {port} has no {metric}:\n{text}");
                }
            }
        }
        eprintln!("xtask: compose-test: every node's published /metrics answers");
        Ok(())
    }

    /// Waits until all 6 containers report healthy (their images' `healthcheck`).
    fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not asked yet");
        loop {
            let ids = self.run(&["ps", "--quiet"], Duration::from_secs(60))?;
            let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec![
                    "inspect",
                    "--format",
                    "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}",
                ];
                args.extend(&ids);
                let out = run_bounded(
                    Command::new("docker").args(&args),
                    None,
                    Duration::from_secs(60),
                )?;
                out.check("docker inspect")?;
                let states: Vec<&str> = out.stdout.lines().collect();
                let waiting: Vec<&str> = states
                    .iter()
                    .copied()
                    .filter(|s| !s.ends_with(" running healthy"))
                    .collect();
                if let Some(dead) = states.iter().find(|s| {
                    s.contains(" exited ") || s.contains(" dead ") || s.ends_with(" unhealthy")
                }) {
                    let name = dead.split(' ').next().unwrap_or_default();
                    let health = run_bounded(
                        Command::new("docker").args([
                            "inspect",
                            "--format",
                            "{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}",
                            name.trim_start_matches('/'),
                        ]),
                        None,
                        Duration::from_secs(60),
                    )
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                    bail!("a container failed: {dead}; its last health checks said:\n{health}");
                }
                if states.len() == 6 && waiting.is_empty() {
                    return Ok(());
                }
                last = format!(
                    "{} of 6 up; waiting for: {}",
                    states.len(),
                    waiting.join(", ")
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {} waiting for every container to be healthy ({last})",
                    secs(timeout)
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The README's round trip, from the host: create a topic with 3 partitions and 3 replicas
    /// through broker 1, produce through broker 2, consume from the beginning through broker 3.
    fn round_trip(&self) -> Result<()> {
        let bootstrap = |i: u32| format!("localhost:{}", self.port(&format!("BROKER_{i}_PORT")));
        let topic = "compose-round-trip";
        let created = self.cli(
            &[
                "topics",
                "--bootstrap-server",
                &bootstrap(1),
                "--create",
                "--topic",
                topic,
                "--partitions",
                "3",
                "--replication-factor",
                "3",
            ],
            None,
        )?;
        if !created.contains(&format!("Created topic {topic}.")) {
            bail!("`tributary topics --create` printed no `Created topic {topic}.`: {created}");
        }
        let described = self.cli(
            &[
                "topics",
                "--bootstrap-server",
                &bootstrap(3),
                "--describe",
                "--topic",
                topic,
            ],
            None,
        )?;
        for expected in ["PartitionCount: 3", "ReplicationFactor: 3"] {
            if !described.contains(expected) {
                bail!("`tributary topics --describe` did not print `{expected}`: {described}");
            }
        }
        let lines: Vec<String> = (0..30).map(|i| format!("record {i} via compose")).collect();
        let input = lines.join("\n") + "\n";
        self.cli(
            &[
                "console-producer",
                "--bootstrap-server",
                &bootstrap(2),
                "--topic",
                topic,
            ],
            Some(&input),
        )?;
        let consumed = self.cli(
            &[
                "console-consumer",
                "--bootstrap-server",
                &bootstrap(3),
                "--topic",
                topic,
                "--from-beginning",
                "--max-messages",
                &lines.len().to_string(),
                "--timeout-ms",
                "30000",
            ],
            None,
        )?;
        let mut got: Vec<&str> = consumed
            .lines()
            .filter(|l| l.starts_with("record "))
            .collect();
        got.sort_unstable();
        let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
        want.sort_unstable();
        if got != want {
            bail!(
                "console-consumer read {} of the {} records produced; it printed:\n{consumed}",
                got.len(),
                want.len()
            );
        }
        Ok(())
    }

    /// Runs the host's `tributary` (the static build), bounded to 60 s; returns its stdout.
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let what = format!("`tributary {}`", args.join(" "));
        eprintln!("xtask: compose-test: {what}");
        let out = run_bounded(
            Command::new(&self.cli).args(args),
            stdin,
            Duration::from_secs(60),
        )
        .with_context(|| format!("running {what}"))?;
        out.check(&what)?;
        Ok(out.stdout)
    }
}

/// What a bounded command printed and whether it succeeded.
struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl Output {
    /// Fails naming `what` and its output unless the command succeeded.
    fn check(&self, what: &str) -> Result<()> {
        if self.success {
            return Ok(());
        }
        bail!(
            "{what} failed ({}):\n{}{}",
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` with `stdin` (else /dev/null), collecting its output, killing it after
/// `timeout` (an error naming the command and what it printed so far).
fn run_bounded(command: &mut Command, stdin: Option<&str>, timeout: Duration) -> Result<Output> {
    let line = format!("{command:?}");
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {line}"))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let text = text.to_owned();
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    // Readers on threads, collected with a bound: a grandchild that outlives the command
    // (killed or not) may keep a pipe open.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
        });
        rx
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let collect = |rx: std::sync::mpsc::Receiver<String>, wait: Duration| {
        rx.recv_timeout(wait)
            .unwrap_or_else(|_| "(output not collected: a child process still holds it)\n".into())
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = collect(stdout, Duration::from_secs(2));
            let err = collect(stderr, Duration::from_secs(2));
            bail!(
                "{line} did not finish within {}; it printed:\n{out}{err}",
                secs(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        success: status.success(),
        status: status.to_string(),
        stdout: collect(stdout, Duration::from_secs(10)),
        stderr: collect(stderr, Duration::from_secs(10)),
    })
}

/// `GET path` over HTTP/1.0, bounded to 10 s; the response, headers included.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let timeout = Duration::from_secs(10);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    if !text.starts_with("HTTP/1.") || !text.contains(" 200 ") {
        bail!("answered {}", text.lines().next().unwrap_or("nothing"));
    }
    Ok(text)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_command_is_killed_and_named() {
        let err = run_bounded(
            Command::new("sh").args(["-c", "echo started; sleep 30"]),
            None,
            Duration::from_millis(300),
        )
        .err()
        .expect("timed out");
        let text = format!("{err:#}");
        assert!(text.contains("did not finish within"), "{text}");
        assert!(text.contains("started"), "{text}");
    }

    #[test]
    fn a_bounded_command_gets_its_input() {
        let out = run_bounded(
            &mut Command::new("cat"),
            Some("a\nb\n"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.success);
        assert_eq!(out.stdout, "a\nb\n");
    }
}
