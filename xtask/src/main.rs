//! Tributary's task runner. Run `cargo xtask help`.
//!
//! Everything a fresh machine needs is done from here (and from `.ci/run`, which calls it), so
//! nothing has to be installed by hand.

mod cluster;
mod deploy;
mod docker;
mod kafka_clients;
mod layering;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <task> [options]

tasks:
  test [--no-lint] [--no-docker]
                     every check and test of the workspace: rustfmt, clippy (-D warnings),
                     then builds every binary, installs the Kafka clients (kafka-clients)
                     and runs all unit, property, crash, integration and doc tests,
                     deploy-check and compose-test (--no-lint: skip rustfmt
                     and clippy; --no-docker: skip compose-test), a 150-second chaos run and,
                     where Docker runs, a 120-second one against Compose (--no-chaos: skip
                     both)
  chaos [--seed N] [--duration SECS] [--out DIR] [--docker] [--faults kill,leader,pause,
        raft-leader,rolling-restart,torn-write,isolate-leader,one-way,split,bridge,
        group-coordinator,last-replica]
                     the fault suite: a workload against a real 3+3 cluster (processes, or
                     with --docker the Compose cluster with iptables partitions) while a
                     seeded nemesis injects faults, then the checker (lost, duplicated,
                     reordered, inconsistent, skipped, diverged replicas, metadata, group
                     ownership, time to heal); summary and history in target/chaos/<seed>/
  layering           the house rules (also part of `test`'s lint step): no two top-level
                     modules of a crate refer to each other, directly or in a circle; no .rs
                     file has more than 1,000 lines before its first #[cfg(test)]
";

/// The help text: the tasks above, the cluster tasks, `help`.
fn help() -> String {
    format!(
        "{HELP}{}{}{}  help               this text\n",
        cluster::HELP,
        docker::HELP,
        kafka_clients::HELP
    )
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    match task {
        "test" => test(rest),
        "chaos" => chaos(rest),
        "cluster-up" => cluster::up(rest, &workspace_root()),
        "cluster-down" => cluster::down(rest, &workspace_root()),
        "cluster-status" => cluster::status(rest, &workspace_root()),
        "docker-build" => docker::docker_build(rest, &workspace_root()),
        "compose-test" => docker::compose_test(rest, &workspace_root()),
        "deploy-check" => deploy_check(rest),
        "layering" => layering::check(&workspace_root()),
        "kafka-clients" => kafka_clients::run(rest, &workspace_root()),
        "help" | "--help" | "-h" => {
            print!("{}", help());
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{}", help()),
    }
}

/// `cargo xtask test`: rustfmt, the layering rules and clippy (unless `--no-lint`), `cargo build --workspace
/// --bins`, `kafka-clients`, `cargo test --workspace --all-targets`, the doctests, then `deploy-check` and
/// `compose-test` (unless `--no-docker`; skipped with a message where no Docker engine runs).
///
/// The build step is what puts `target/debug/tributary-coordinator` (and every other service
/// binary) in place before the integration tests start it through the harness: cargo itself
/// builds a package's binaries before running tests only for that package's own integration
/// tests, so it would build them for `tributary-coordinator`'s tests but not for
/// `tributary-tests`'.
fn test(args: &[String]) -> Result<()> {
    let mut lint = true;
    let mut docker = true;
    let mut chaos_run = true;
    for arg in args {
        match arg.as_str() {
            "--no-lint" => lint = false,
            "--no-docker" => docker = false,
            "--no-chaos" => chaos_run = false,
            other => bail!("unknown option `{other}` for `cargo xtask test`"),
        }
    }
    if lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        layering::check(&workspace_root())?;
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // Every binary first, for the harness (see above), and the third-party Kafka clients the
    // Kafka-protocol tests drive.
    cargo(&["build", "--workspace", "--bins"])?;
    kafka_clients::ensure(&workspace_root())?;
    // Benchmarks are compiled (so they cannot rot) but only run by `cargo bench`.
    cargo(&["test", "--workspace", "--all-targets"])?;
    cargo(&["test", "--workspace", "--doc"])?;
    // The fault suite, short, with a fixed seed (the same fault schedule every run).
    if chaos_run {
        chaos(&[
            "--seed".into(),
            "1".into(),
            "--duration".into(),
            "150".into(),
        ])?;
    }
    // deploy/ against the binaries just built, then the Compose round trip (torn down before
    // returning, so the default ports are free again).
    deploy_check(&[])?;
    if docker {
        docker::test_step(&workspace_root())?;
        // The fault suite against the Compose cluster (images built by the step above).
        if chaos_run {
            match docker::docker_mode_available() {
                Ok(()) => chaos(&[
                    "--docker".into(),
                    "--seed".into(),
                    "1".into(),
                    "--duration".into(),
                    "120".into(),
                ])?,
                Err(why) => eprintln!("xtask: chaos --docker SKIPPED: {why}"),
            }
        }
    }
    Ok(())
}

/// `cargo xtask chaos`: builds the binaries (and with `--docker` the images) and runs the fault
/// suite (`tests/examples/chaos/`).
fn chaos(args: &[String]) -> Result<()> {
    cargo(&["build", "--workspace", "--bins"])?;
    if args.iter().any(|a| a == "--docker") {
        docker::docker_build(&[], &workspace_root())?;
    }
    let mut run = vec![
        "run",
        "-q",
        "-p",
        "tributary-tests",
        "--example",
        "chaos",
        "--",
    ];
    run.extend(args.iter().map(String::as_str));
    cargo(&run)
}

/// Runs `cargo <args>` in the workspace root, failing with the command line if it fails.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = workspace_root();
    eprintln!("xtask: running cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `cargo xtask deploy-check`, with the debug binaries of the target directory by default.
fn deploy_check(args: &[String]) -> Result<()> {
    let root = workspace_root();
    let bin_dir = docker::target_dir(&root).join("debug");
    deploy::deploy_check(args, &root, bin_dir)
}

fn workspace_root() -> std::path::PathBuf {
    // xtask lives one directory below the workspace root.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
        .to_path_buf()
}
