//! Generated types and gRPC services for the Velero plugin API (packages `generated` and `v2`) and
//! go-plugin's internal services (package `plugin`). The proto package names are part of the wire
//! paths Velero calls (`/generated.PluginLister/ListPlugins`, `/v2.BackupItemAction/Execute`, …), so
//! the module names below mirror them.

#![allow(
    clippy::pedantic,
    clippy::all,
    missing_debug_implementations,
    unused_qualifications,
    reason = "generated code"
)]

/// Velero's shared messages and the v1 plugin kinds (proto package `generated`).
pub mod generated {
    tonic::include_proto!("generated");
}

/// Velero's v2 BackupItemAction and RestoreItemAction (proto package `v2`).
pub mod v2 {
    tonic::include_proto!("v2");
}

/// go-plugin's controller, stdio and broker services (proto package `plugin`).
pub mod goplugin {
    tonic::include_proto!("plugin");
}
