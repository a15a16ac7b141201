//! `replicadr-velero-plugins`: one binary serving every ReplicaDR Velero plugin. Velero finds it
//! in its plugin directory, asks it which plugins it serves, and starts it again per backup,
//! restore or operation poll. This file is the table of what it serves.

// stdout carries the go-plugin handshake and nothing else.
#![deny(clippy::print_stdout)]

use std::process::ExitCode;

use replicadr_plugins::actions::{
    kubevirt_backup, kubevirt_restore, pv_retain, pv_site_remap, snapshot_to_pvc,
};
use replicadr_plugins::framework::PluginServer;

/// musl's allocator is slow under many small allocations (about a quarter of the plugin's
/// throughput, measured by `hack/bench/plugin-bench.sh`); the static image builds use mimalloc.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    PluginServer::new()
        // RestoreItemAction v1, not v2: the rewrite is synchronous and needs neither async
        // operations nor waiting for additional items, which are all v2 adds. Velero adapts v1
        // actions into its v2 pipeline identically in every release from 1.12 to 1.18, and v1 is
        // what Velero's closest built-in (`velero.io/change-storage-class`) uses.
        .restore_item_action(pv_site_remap::NAME, pv_site_remap::PvSiteRemapFactory)
        // v1 too: one cluster read per DataVolume, done before it returns.
        .restore_item_action(
            kubevirt_restore::NAME,
            kubevirt_restore::KubevirtRestoreFactory,
        )
        // v1: the copy is rewritten synchronously, with no API call.
        .backup_item_action(pv_retain::NAME, pv_retain::PvRetainFactory)
        // v2: snapshots become ready and claims bind in their own time; Velero polls Progress.
        .async_backup_item_action(snapshot_to_pvc::NAME, snapshot_to_pvc::SnapshotToPvcFactory)
        // v2 for its cluster reads; it starts no operation.
        .async_backup_item_action(
            kubevirt_backup::NAME,
            kubevirt_backup::KubevirtBackupFactory,
        )
        .run()
}
