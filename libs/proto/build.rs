//! Compiles every contract under `proto/` with protox (no system protoc) and writes the
//! descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto_root = proto_root.canonicalize()?;
    let mut files = Vec::new();
    collect_proto_files(&proto_root, &mut files)?;
    files.sort();

    let descriptors = protox::compile(&files, [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("leadflow_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // Ordered maps encode the same message to the same bytes, which idempotency keys
        // compare requests by.
        .btree_map(".")
        .build_server(true)
        .build_client(true)
        // Every message knows its full name, so a console can print it as the contract's
        // JSON through the descriptor set.
        .compile_fds_with_config(descriptors, {
            let mut config = prost_build::Config::new();
            config.enable_type_names();
            config
        })?;

    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}

fn collect_proto_files(dir: &PathBuf, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_proto_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
