//! Generates the Rust code for every `.proto` file under `tributary/`.
//!
//! `protoc` comes from `protoc-bin-vendored` so a fresh machine needs nothing installed; set
//! `PROTOC` to use another one.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut protos = Vec::new();
    collect_protos(&root.join("tributary"), &mut protos)?;
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    // Directories too, so a newly added .proto file triggers a rebuild.
    println!("cargo:rerun-if-changed=tributary");
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    // Record batches travel as `bytes::Bytes`: decoded without a copy out of tonic's buffer
    // and kept as they are by the broker (zero-copy from socket to segment file).
    config.bytes(["."]);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &protos, &[root.to_path_buf()])?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
