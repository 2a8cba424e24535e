//! Tributary's task runner. Run `cargo xtask help`.
//!
//! Everything a fresh machine needs is done from here (and from `.ci/run`, which calls it), so
//! nothing has to be installed by hand.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <task> [options]

tasks:
  test [--no-lint]   every check and test of the workspace: rustfmt, clippy (-D warnings),
                     then all unit, property, crash and integration tests
  cluster-up         bring a local cluster up (coordinators and brokers; arrives with the
                     coordinator and broker services)
  help               this text
";

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
        "cluster-up" => bail!(
            "cluster-up is not built yet: it arrives with the coordinator and broker services \
             (issues 3 and 4); today the workspace holds the storage engine only"
        ),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{HELP}"),
    }
}

fn test(args: &[String]) -> Result<()> {
    let mut lint = true;
    for arg in args {
        match arg.as_str() {
            "--no-lint" => lint = false,
            other => bail!("unknown option `{other}` for `cargo xtask test`"),
        }
    }
    if lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // Benchmarks are compiled (so they cannot rot) but only run by `cargo bench`.
    cargo(&["test", "--workspace", "--all-targets"])?;
    cargo(&["test", "--workspace", "--doc"])?;
    Ok(())
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

fn workspace_root() -> std::path::PathBuf {
    // xtask lives one directory below the workspace root.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
        .to_path_buf()
}
