//! Compiles the .proto files with protox (pure Rust), so building needs no protoc.

const VELERO_FILES: &[&str] = &[
    "Shared.proto",
    "PluginLister.proto",
    "BackupItemAction.proto",
    "RestoreItemAction.proto",
    "backupitemaction/v2/BackupItemAction.proto",
    "restoreitemaction/v2/RestoreItemAction.proto",
];
const GOPLUGIN_FILES: &[&str] = &[
    "grpc_controller.proto",
    "grpc_stdio.proto",
    "grpc_broker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=velero");
    println!("cargo:rerun-if-changed=goplugin");
    // Velero's own include root is its proto directory, which is why `import "Shared.proto"` resolves.
    let files = VELERO_FILES.iter().chain(GOPLUGIN_FILES);
    let descriptors = protox::compile(files, ["velero", "goplugin"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
