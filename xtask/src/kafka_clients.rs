//! `cargo xtask kafka-clients`: installs the third-party Kafka clients that the Kafka-protocol
//! integration tests (`tests/tests/kafka_clients.rs`) drive, so a fresh machine needs nothing by
//! hand. Idempotent, and quick when everything is in place (no network, no Python started):
//!
//! - `kcat` from apt (Debian's build, linked with Debian's librdkafka), installed only when no
//!   `kcat` is on `PATH`;
//! - a virtual environment at `<target>/kafka-clients/venv` with the PyPI clients pinned in
//!   `tests/kafka/requirements.txt` (`confluent-kafka`, which bundles a current librdkafka, and
//!   `kafka-python`), pip-installed only when the stamp file in the venv does not hold the
//!   requirements' hash;
//! - `<target>/kafka-clients/librdkafka/librdkafka.so.1`, a link to the librdkafka inside the
//!   confluent-kafka wheel. The wheel renames it (`librdkafka-<hash>.so.1`), so kcat, which asks
//!   the loader for `librdkafka.so.1`, finds it only through this link: the tests run kcat with
//!   `LD_LIBRARY_PATH` set to the directory named in `<target>/kafka-clients/librdkafka-dir`.
//!
//! `<target>` is `$CARGO_TARGET_DIR` or the workspace's `target/`; the tests' helpers
//! (`tributary_tests::kafka_clients`) look in the same place.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

pub const HELP: &str =
    "  kafka-clients      install the third-party Kafka clients the integration tests drive
                     (also the first step of `test`): apt's kcat when none is on PATH, and
                     a Python venv in <target>/kafka-clients/venv with the versions pinned in
                     tests/kafka/requirements.txt (confluent-kafka, kafka-python); links the
                     librdkafka bundled in confluent-kafka as
                     <target>/kafka-clients/librdkafka/librdkafka.so.1 for kcat's
                     LD_LIBRARY_PATH; quick when all is in place
";

/// The requirements file, relative to the workspace root.
pub const REQUIREMENTS: &str = "tests/kafka/requirements.txt";

/// Where the installed clients are.
#[derive(Debug)]
pub struct Installed {
    /// The `kcat` found on `PATH`.
    pub kcat: PathBuf,
    /// The virtual environment's interpreter.
    pub python: PathBuf,
    /// The directory holding `librdkafka.so.1` (the wheel's librdkafka).
    pub librdkafka_dir: PathBuf,
    /// The library that link points at.
    pub librdkafka: PathBuf,
}

/// `cargo xtask kafka-clients`.
pub fn run(args: &[String], root: &Path) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("unknown option `{arg}` for `cargo xtask kafka-clients` (it takes none)");
    }
    let installed = ensure(root)?;
    let versions = |ld: Option<&Path>| kcat_version(&installed.kcat, ld);
    println!("kcat:              {}", installed.kcat.display());
    println!("  with Debian's librdkafka:  {}", versions(None)?);
    println!(
        "  with LD_LIBRARY_PATH={}:  {}",
        installed.librdkafka_dir.display(),
        versions(Some(&installed.librdkafka_dir))?
    );
    println!("python (venv):     {}", installed.python.display());
    println!("bundled librdkafka: {}", installed.librdkafka.display());
    Ok(())
}

/// Installs what is missing; returns where everything is.
pub fn ensure(root: &Path) -> Result<Installed> {
    let dir = clients_dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kcat = ensure_kcat()?;
    let python = ensure_venv(root, &dir.join("venv"))?;
    let librdkafka = bundled_librdkafka(&dir.join("venv"))?;
    let librdkafka_dir = dir.join("librdkafka");
    link_librdkafka(&librdkafka, &librdkafka_dir)?;
    // The directory for LD_LIBRARY_PATH, for the tests (rewritten only when it changes).
    let record = dir.join("librdkafka-dir");
    let text = format!("{}\n", librdkafka_dir.display());
    if std::fs::read_to_string(&record).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&record, &text).with_context(|| format!("writing {}", record.display()))?;
    }
    Ok(Installed {
        kcat,
        python,
        librdkafka_dir,
        librdkafka,
    })
}

/// `<target>/kafka-clients`.
pub fn clients_dir(root: &Path) -> PathBuf {
    crate::docker::target_dir(root).join("kafka-clients")
}

fn ensure_kcat() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(kcat) = find_on_path("kcat", &path) {
        return Ok(kcat);
    }
    eprintln!("xtask: kcat is not on PATH: installing it with apt-get");
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("could not start apt-get (is this Debian or Ubuntu?)")?;
        if !status.success() {
            bail!(
                "`apt-get {}` failed ({status}); it needs root. Install kcat by hand \
                 (`sudo apt-get install kcat`) and run `cargo xtask kafka-clients` again",
                args.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "kcat"])?;
    find_on_path("kcat", &path)
        .or_else(|| Some(PathBuf::from("/usr/bin/kcat")).filter(|p| p.is_file()))
        .context("apt-get installed kcat, but no kcat is on PATH")
}

/// The first executable file named `name` in the directories of `path` (a `PATH` value).
fn find_on_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The venv at `venv` with the requirements installed; returns its interpreter.
fn ensure_venv(root: &Path, venv: &Path) -> Result<PathBuf> {
    let requirements = root.join(REQUIREMENTS);
    let wanted = std::fs::read(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        if venv.exists() {
            // A venv without its interpreter is broken: make it again.
            std::fs::remove_dir_all(venv)
                .with_context(|| format!("removing the broken venv {}", venv.display()))?;
        }
        eprintln!("xtask: creating the Python venv {}", venv.display());
        checked(
            Command::new("python3").arg("-m").arg("venv").arg(venv),
            "python3 -m venv (Debian: apt-get install python3-venv)",
        )?;
    }
    let stamp = venv.join("tributary-requirements.stamp");
    let hash = format!("{:016x}\n", fnv1a(&wanted));
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        return Ok(python);
    }
    eprintln!(
        "xtask: pip-installing {} into {}",
        requirements.display(),
        venv.display()
    );
    checked(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
            ])
            .arg(&requirements),
        "pip install",
    )?;
    let out = checked(
        Command::new(&python).args([
            "-c",
            "import confluent_kafka, kafka; \
             print('confluent-kafka', confluent_kafka.__version__, \
             '(librdkafka', confluent_kafka.libversion()[0] + '),', \
             'kafka-python', kafka.__version__)",
        ]),
        "importing the installed clients",
    )?;
    eprintln!(
        "xtask: installed {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    std::fs::write(&stamp, hash).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// The librdkafka shared library inside the confluent-kafka wheel
/// (`lib/python3.X/site-packages/confluent_kafka.libs/librdkafka-<hash>.so.1`).
fn bundled_librdkafka(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    let mut found = Vec::new();
    for python_dir in read_dir(&lib)? {
        let libs = python_dir
            .join("site-packages")
            .join("confluent_kafka.libs");
        if !libs.is_dir() {
            continue;
        }
        for file in read_dir(&libs)? {
            let name = file.file_name().and_then(OsStr::to_str).unwrap_or_default();
            if name.starts_with("librdkafka") && name.contains(".so") {
                found.push(file);
            }
        }
    }
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no librdkafka*.so* in {}/python3.*/site-packages/confluent_kafka.libs: did the \
             confluent-kafka wheel change its layout?",
            lib.display()
        ),
        many => bail!("more than one bundled librdkafka: {many:?}"),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))
}

/// `dir/librdkafka.so.1` -> `library`, replacing a link to anything else.
fn link_librdkafka(library: &Path, dir: &Path) -> Result<()> {
    let link = dir.join("librdkafka.so.1");
    if std::fs::read_link(&link).is_ok_and(|target| target == library) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if std::fs::symlink_metadata(&link).is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(library, &link)
        .with_context(|| format!("linking {} to {}", link.display(), library.display()))
}

/// `kcat -V`'s version line, run with `LD_LIBRARY_PATH=ld` when given.
pub fn kcat_version(kcat: &Path, ld: Option<&Path>) -> Result<String> {
    let mut command = Command::new(kcat);
    command.arg("-V");
    if let Some(dir) = ld {
        command.env("LD_LIBRARY_PATH", dir);
    }
    let out = checked(&mut command, "kcat -V")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("Version"))
        .map(str::to_owned)
        .with_context(|| format!("`kcat -V` printed no version line: {text}"))
}

/// Runs `command`, failing with `what`, its status and its stderr.
fn checked(command: &mut Command, what: &str) -> Result<Output> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {what} ({command:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions (std's does not promise to).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            fnv1a(b"kafka-python==3.0.12\n"),
            fnv1a(b"kafka-python==3.0.13\n")
        );
    }

    #[test]
    fn find_on_path_takes_the_first_executable_file() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir()?;
        let b = tempfile::tempdir()?;
        std::fs::write(a.path().join("tool"), "not executable")?;
        std::fs::create_dir(b.path().join("dir-not-file"))?;
        let path = std::env::join_paths([a.path(), b.path()])?;
        assert_eq!(find_on_path("tool", &path), None);
        assert_eq!(find_on_path("dir-not-file", &path), None);
        let exe = b.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n")?;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
        assert_eq!(find_on_path("tool", &path), Some(exe));
        Ok(())
    }

    #[test]
    fn the_bundled_librdkafka_is_found_and_linked_once() -> Result<()> {
        let venv = tempfile::tempdir()?;
        let err = bundled_librdkafka(venv.path()).unwrap_err().to_string();
        assert!(err.contains("listing"), "{err}");
        let libs = venv
            .path()
            .join("lib/python3.11/site-packages/confluent_kafka.libs");
        std::fs::create_dir_all(&libs)?;
        let err = bundled_librdkafka(venv.path()).unwrap_err().to_string();
        assert!(err.contains("no librdkafka"), "{err}");
        let library = libs.join("librdkafka-0cb94173.so.1");
        std::fs::write(&library, "elf")?;
        assert_eq!(bundled_librdkafka(venv.path())?, library);

        let dir = venv.path().join("ld");
        link_librdkafka(&library, &dir)?;
        link_librdkafka(&library, &dir)?; // again: nothing to do
        assert_eq!(std::fs::read_link(dir.join("librdkafka.so.1"))?, library);
        let newer = libs.join("librdkafka-11111111.so.1");
        std::fs::write(&newer, "elf")?;
        link_librdkafka(&newer, &dir)?;
        assert_eq!(std::fs::read_link(dir.join("librdkafka.so.1"))?, newer);
        let err = bundled_librdkafka(venv.path()).unwrap_err().to_string();
        assert!(err.contains("more than one"), "{err}");
        Ok(())
    }
}
