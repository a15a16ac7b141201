//! The drill on "real" clusters (`replicadr drill --dr-context …`), run against the local two-site
//! environment standing in for them: a verified backup at `primary`, Velero at `dr` synced, then
//! the live drill restores it into scratch namespaces at `dr`, checks it and deletes exactly what
//! its Restore created. A separate test binary from `drill.rs`: one Velero runs at a time.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::api::{DynamicObject, PostParams};
use replicadr_cli::render;
use replicadr_drill::{self as drill, DR_EXPORT};
use replicadr_e2e::lab_cli::{sites_with_workload, verified_backup};
use replicadr_scheduler::drill::{self as live, LiveOptions};
use replicadr_scheduler::policy::BackupPolicy;
use replicadr_scheduler::recovery::failover::{self, Operation};
use replicadr_scheduler::recovery::report::Outcome;
use replicadr_scheduler::recovery::site::BackupChoice;
use replicadr_scheduler::velero::LABEL_RESTORE_NAME;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_live_drill_restores_into_scratch_namespaces_checks_and_removes_only_what_it_restored()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("drill: {line}");
    let mut env = sites_with_workload(2, &mut log).await?;
    let backup = verified_backup(&env.primary.client, &mut log).await?;
    env.move_velero(false, &[&backup], &mut log).await?;

    let live_options = LiveOptions {
        backup: BackupChoice::LatestVerified,
        policy: Some(drill::POLICY.to_owned()),
        keep: false,
        restore_timeout: Duration::from_mins(5),
        poll: Duration::from_millis(500),
    };
    let dr = env.dr.client.clone();
    let report = Box::pin(live::run(
        Some(&env.primary.client),
        &dr,
        drill::VELERO_NAMESPACE,
        &live_options,
        &mut log,
    ))
    .await?;
    let text = render::live_drill(&report);
    assert!(report.passed(), "{text}");
    let restore = report.restore.clone().expect("a restore");
    assert_eq!(report.backup, backup);
    assert_eq!(report.site, "dr");
    assert!(
        report.plan.volumes.iter().all(|v| v
            .after
            .as_deref()
            .is_some_and(|a| a.starts_with(DR_EXPORT.server))),
        "{text}"
    );
    for (from, to) in &report.scratch_namespaces {
        assert!(
            to.starts_with("replicadr-drill-") && to.ends_with(from.as_str()),
            "{to}"
        );
    }

    // The cleanup deleted what the Restore made — PVs, claims, VMs, the scratch namespaces
    // (they stay Terminating here: no controller runs to finish a deletion) — and nothing else.
    let labelled = ListParams::default().labels(&format!("{LABEL_RESTORE_NAME}={restore}"));
    let pvs = Api::<PersistentVolume>::all(dr.clone())
        .list(&labelled)
        .await?
        .items;
    assert!(
        pvs.iter()
            .all(|pv| pv.metadata.deletion_timestamp.is_some()),
        "{:?}",
        pvs.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
    );
    let namespaces: Api<Namespace> = Api::all(dr.clone());
    for scratch in report.scratch_namespaces.values() {
        let namespace = namespaces.get_opt(scratch).await?;
        assert!(
            namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
            "{scratch} was not deleted"
        );
    }
    assert!(
        report
            .deleted
            .iter()
            .any(|d| d.starts_with("PersistentVolume "))
            && report
                .deleted
                .iter()
                .any(|d| d.starts_with("VirtualMachine "))
            && report.deleted.iter().any(|d| d.starts_with("Namespace ")),
        "{:?}",
        report.deleted
    );
    assert!(
        Api::<ConfigMap>::namespaced(dr.clone(), drill::VELERO_NAMESPACE)
            .get_opt("replicadr-plugins")
            .await?
            .is_some(),
        "the plugin ConfigMap is the site's, not the drill's"
    );
    assert!(
        namespaces.get_opt("drill-vms").await?.is_none(),
        "the backup's own namespaces were never created at dr"
    );

    // A second drill of the same backup restores it again under a new Restore.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = Box::pin(live::run(
        None,
        &dr,
        drill::VELERO_NAMESPACE,
        &live_options,
        &mut log,
    ))
    .await?;
    assert!(again.passed(), "{}", render::live_drill(&again));
    assert_ne!(again.restore, report.restore);

    // Now a real failover at dr, under a policy that says to leave the VMs halted.
    let policy: BackupPolicy = serde_json::from_value(json!({
        "apiVersion": "replicadr.io/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": drill::POLICY, "namespace": drill::VELERO_NAMESPACE},
        "spec": {"schedule": "0 2 * * *", "paused": true, "restoreVMsHalted": true},
    }))?;
    Api::<BackupPolicy>::namespaced(dr.clone(), drill::VELERO_NAMESPACE)
        .create(&PostParams::default(), &policy)
        .await?;
    let mut recovery = failover::Options::new(Operation::Failover, "dr");
    recovery.policy = Some(drill::POLICY.to_owned());
    recovery.replication_confirmed = true;
    recovery.poll = Duration::from_millis(500);
    recovery.bind_timeout = Duration::from_mins(2);
    let failed_over = Box::pin(failover::run(
        &dr,
        drill::VELERO_NAMESPACE,
        &recovery,
        &mut log,
    ))
    .await?;
    let summary = render::recovery(&failed_over);
    assert_eq!(failed_over.outcome, Outcome::Succeeded, "{summary}");
    assert!(failed_over.vm_starts.is_empty(), "{summary}");
    let vms =
        Api::<DynamicObject>::namespaced_with(dr.clone(), "drill-vms", &failover::vm_resource())
            .list(&ListParams::default())
            .await?
            .items;
    let mut names: Vec<String> = vms.iter().map(ResourceExt::name_any).collect();
    names.sort();
    assert_eq!(names, ["app", "db", "desktop", "tools", "web"], "{summary}");
    assert!(
        vms.iter().all(|vm| vm
            .data
            .pointer("/spec/runStrategy")
            .and_then(serde_json::Value::as_str)
            == Some("Halted")),
        "every VM stays halted: {summary}"
    );
    Ok(())
}
