//! A live drill's leftovers in the two-site lab (real kube-apiservers with etcd, s3s-fs, the real
//! Velero server with the project's plugins): a drill kept with `--keep` leaves, at `dr`, PVs
//! under the production names bound to claims in its scratch namespaces. The failover that follows
//! must not take them for its own: `replicadr plan` blocks with `ObjectExists` for each such PV,
//! naming the scratch claim it is bound to, and `replicadr failover` is refused without
//! restoring anything. Build the workspace binaries first.

use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams};
use replicadr_drill as drill;
use replicadr_e2e::lab_cli::{replicadr, sites_with_workload, verified_backup};
use replicadr_scheduler::drill::{self as live, LiveOptions};
use replicadr_scheduler::recovery::site::BackupChoice;
use replicadr_scheduler::velero::{self, LABEL_RESTORE_NAME};
use serde_json::Value;

#[tokio::test]
async fn a_kept_drill_leaves_pvs_that_block_the_failover_naming_their_scratch_claims()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let backup = verified_backup(&env.primary.client, &mut log).await?;
    env.move_velero(false, &[&backup], &mut log).await?;
    let dr = env.dr.client.clone();

    // The drill, kept: its Restore's objects stay at dr.
    let report = Box::pin(live::run(
        Some(&env.primary.client),
        &dr,
        drill::VELERO_NAMESPACE,
        &LiveOptions {
            backup: BackupChoice::LatestVerified,
            policy: Some(drill::POLICY.to_owned()),
            keep: true,
            restore_timeout: Duration::from_mins(5),
            poll: Duration::from_millis(500),
        },
        &mut log,
    ))
    .await?;
    assert!(report.passed(), "{report:#?}");
    let drill_restore = report.restore.clone().expect("the drill's Restore");
    let scratch = report
        .scratch_namespaces
        .get("drill-vms")
        .cloned()
        .expect("the scratch namespace of drill-vms");

    // The plan of the failover blocks on each of the drill's PVs, naming its scratch claim.
    let kubeconfig = env.dr.cluster.kubeconfig_path().to_owned();
    let (code, out, err) = replicadr(
        &kubeconfig,
        &[
            "plan",
            "--site",
            "dr",
            "--policy",
            drill::POLICY,
            "-o",
            "json",
        ],
    )
    .await?;
    assert_eq!(code, 1, "the plan is incomplete:\n{out}\n{err}");
    let plan: Value = serde_json::from_str(&out)?;
    let leftover = plan["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["reason"] == "ObjectExists" && p["object"] == "PersistentVolume drill-db-root")
        .unwrap_or_else(|| panic!("drill-db-root is not blocked: {out}"));
    let message = leftover["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("claimed by {scratch}/db-root"))
            && message.contains("the backup's is claimed by drill-vms/db-root"),
        "{message}"
    );

    // The failover is refused and restores nothing beside the drill's own Restore.
    let (code, out, err) = replicadr(
        &kubeconfig,
        &[
            "failover",
            "--site",
            "dr",
            "--policy",
            drill::POLICY,
            "--yes",
            "-o",
            "json",
        ],
    )
    .await?;
    assert_eq!(code, 3, "refused:\n{out}\n{err}");
    let restores: Vec<String> = Api::<DynamicObject>::namespaced_with(
        dr.clone(),
        drill::VELERO_NAMESPACE,
        &velero::restore_resource(),
    )
    .list(&ListParams::default())
    .await?
    .items
    .into_iter()
    .filter_map(|r| r.metadata.name)
    .collect();
    assert_eq!(
        restores,
        std::slice::from_ref(&drill_restore),
        "no failover Restore"
    );
    // The drill's PV is still as the drill left it.
    let pv = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(dr.clone())
        .get("drill-db-root")
        .await?;
    assert_eq!(
        pv.metadata
            .labels
            .unwrap_or_default()
            .get(LABEL_RESTORE_NAME)
            .map(String::as_str),
        Some(drill_restore.as_str())
    );
    Ok(())
}
