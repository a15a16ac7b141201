//! The proof that the drill's KubeVirt checks can fail, in the two-site lab (real kube-apiservers
//! with etcd, s3s-fs, the real Velero server, here without ReplicaDR's plugins).

use replicadr_drill as drill;
use replicadr_e2e::lab_cli::{sites_with_workload, velero_run};
use replicadr_scheduler::velero;
use serde_json::json;

/// The proof that the drill's KubeVirt checks can fail: the drill's own workload (VM `desktop`
/// from `dataVolumeTemplates`, running, with its VMI and launcher pod) backed up at `primary` and
/// restored at `dr` by a Velero that runs without ReplicaDR's plugins at either site, as on a
/// plain Velero without any KubeVirt plugin. The checks the drill runs after every failover and
/// failback name the restored VMI and launcher pod and the `DataVolume` CDI does not adopt; what
/// a plain restore does bring back (the VM's Secret, instance type, preference, revisions,
/// network and the container app) passes.
#[tokio::test]
async fn without_replicadr_plugins_the_drill_checks_name_restored_vmis_and_unadopted_disks()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let plain = [replicadr_lab::velero::plugin_for_aws_binary()?];
    env.kill_velero(true);
    env.start_velero_with_plugins(true, &plain).await?;
    let backup = velero_run(
        &env.primary.client,
        &velero::backup_resource(),
        "plain",
        json!({"includedNamespaces": [drill::workload::NAMESPACE], "snapshotVolumes": false, "ttl": "24h0m0s"}),
    )
    .await?;
    assert_eq!(
        backup.data["status"]["phase"], "Completed",
        "{:#}",
        backup.data["status"]
    );
    env.kill_velero(true);
    env.start_velero_with_plugins(false, &plain).await?;
    drill::wait_synced(&env.dr, "plain", &mut log).await?;
    let restore = velero_run(
        &env.dr.client,
        &velero::restore_resource(),
        "plain-at-dr",
        json!({"backupName": "plain", "includedNamespaces": [drill::workload::NAMESPACE]}),
    )
    .await?;
    log(format!("restore: {:#}", restore.data["status"]));
    let checks = drill::check_kubevirt(&env.dr.client, "dr").await?;
    let check = |start: &str| {
        checks
            .iter()
            .find(|c| c.name.starts_with(start))
            .unwrap_or_else(|| panic!("no check {start:?} in {checks:#?}"))
    };
    let launched = check("dr: no VMI or launcher pod restored");
    assert!(
        !launched.passed
            && launched
                .detail
                .contains("VirtualMachineInstance drill-vms/desktop was restored by plain-at-dr")
            && launched
                .detail
                .contains("virt-launcher pod drill-vms/virt-launcher-desktop-"),
        "{launched:#?}"
    );
    let adopted = check("dr: DataVolume drill-vms/desktop-root adopted");
    assert!(
        !adopted.passed
            && adopted.detail.contains("\"Pending\"")
            && adopted.detail.contains("not owned"),
        "{adopted:#?}"
    );
    let companions = check("dr: desktop's Secret");
    assert!(companions.passed, "{companions:#?}");
    Ok(())
}
