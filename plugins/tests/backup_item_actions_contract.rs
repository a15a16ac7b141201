//! The backup actions over the real binary's socket, without a cluster: what they apply to, and
//! how the v2 service answers a progress poll when the API server cannot be reached. The flows
//! that need a cluster run against a real kube-apiserver in `tests/tests/backup_actions.rs`.

mod support;

use std::path::{Path, PathBuf};

use replicadr_proto::generated::{
    BackupItemActionAppliesToRequest, ExecuteRequest,
    backup_item_action_client::BackupItemActionClient,
};
use replicadr_proto::v2::{
    self, backup_item_action_client::BackupItemActionClient as BackupItemActionV2Client,
};
use support::Plugin;

const PV_RETAIN: &str = "replicadr.io/pv-retain";
const SNAPSHOT_TO_PVC: &str = "replicadr.io/snapshot-to-pvc";

/// A kubeconfig whose server is a closed port on loopback: the client builds, every call fails.
fn dead_server_kubeconfig(dir: &Path) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

#[tokio::test]
async fn backup_actions_apply_to_their_resources_only() {
    let plugin = Plugin::start();
    let channel = plugin.channel().await;
    let retain = BackupItemActionClient::new(channel.clone())
        .applies_to(BackupItemActionAppliesToRequest {
            plugin: PV_RETAIN.into(),
        })
        .await
        .expect("AppliesTo")
        .into_inner()
        .resource_selector
        .expect("selector");
    assert_eq!(retain.included_resources, vec!["persistentvolumes"]);
    assert!(retain.included_namespaces.is_empty() && retain.excluded_namespaces.is_empty());
    let snapshots = BackupItemActionV2Client::new(channel)
        .applies_to(v2::BackupItemActionAppliesToRequest {
            plugin: SNAPSHOT_TO_PVC.into(),
        })
        .await
        .expect("AppliesTo")
        .into_inner()
        .resource_selector
        .expect("selector");
    // Claims too: Velero 1.17+ never hands VolumeSnapshots to an action.
    assert_eq!(
        snapshots.included_resources,
        vec![
            "volumesnapshots.snapshot.storage.k8s.io",
            "persistentvolumeclaims"
        ]
    );
    assert!(snapshots.included_namespaces.is_empty() && snapshots.selector.is_empty());
}

#[tokio::test]
async fn without_a_kubeconfig_execute_and_progress_fail_clearly() {
    let plugin = Plugin::start();
    let channel = plugin.channel().await;
    let status = BackupItemActionClient::new(channel.clone())
        .execute(ExecuteRequest {
            plugin: PV_RETAIN.into(),
            item: br#"{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"pv-1"},"spec":{}}"#.to_vec(),
            backup: b"{}".to_vec(),
        })
        .await
        .expect_err("no cluster");
    assert!(
        status.message().contains("Kubernetes"),
        "{}",
        status.message()
    );
    let status = BackupItemActionV2Client::new(channel)
        .progress(v2::BackupItemActionProgressRequest {
            plugin: SNAPSHOT_TO_PVC.into(),
            operation_id: "vms/snap-1/uid".into(),
            backup: b"{}".to_vec(),
        })
        .await
        .expect_err("a missing kubeconfig is a configuration error, not a blip");
    assert!(
        status.message().contains("Kubernetes"),
        "{}",
        status.message()
    );
}

/// Velero marks an operation Failed for good when Progress errors; an unreachable API server must
/// not do that.
#[tokio::test]
async fn progress_with_an_unreachable_api_server_reports_still_running() {
    let plugin = Plugin::start_with_kubeconfig(dead_server_kubeconfig);
    let progress = BackupItemActionV2Client::new(plugin.channel().await)
        .progress(v2::BackupItemActionProgressRequest {
            plugin: SNAPSHOT_TO_PVC.into(),
            operation_id: "vms/snap-1/uid".into(),
            backup: b"{}".to_vec(),
        })
        .await
        .expect("progress answers")
        .into_inner()
        .progress
        .expect("progress is always set");
    assert!(
        !progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert!(
        progress
            .description
            .contains("cannot read the plugin configuration"),
        "{progress:?}"
    );
    let started = progress.started.expect("started").seconds;
    assert!(started > 1_700_000_000, "{started}");
    assert!(progress.updated.expect("updated").seconds >= started);
}
