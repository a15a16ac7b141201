//! The drill end to end, in process: two real control planes, the real S3 server, the real Velero
//! server with the project's plugins at each site. Failover to `dr` with Velero killed while it
//! restores and the failover run again, then failback to `primary` with the same site map.
//! Needs `hack/build-{kube,velero,s3}-peer(s).sh` and the workspace binaries.

use replicadr_drill::{self as drill, DR_EXPORT, DrillOptions, PRIMARY_EXPORT};
use replicadr_e2e::workspace::workspace_binary;
use replicadr_scheduler::recovery::plan::VolumeAction;
use replicadr_scheduler::recovery::report::Outcome;

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn failover_survives_velero_killed_mid_restore_and_failback_restores_primary_exports()
-> anyhow::Result<()> {
    let options = DrillOptions {
        plugin_binary: workspace_binary("replicadr-velero-plugins")?,
        // Enough VMs that the restore is still running when the fault hits.
        scale_vms: 40,
        failback: true,
        kill_velero_mid_restore: true,
        velero_log_level: "info".to_owned(),
        velero_client: drill::SHIPPED_VELERO_CLIENT,
        standby: false,
    };
    let mut lines = Vec::new();
    // Printed as they come: the harness shows them when the test fails.
    let (environment, report) = Box::pin(drill::run(options, &mut |line| {
        eprintln!("drill: {line}");
        lines.push(line);
    }))
    .await?;
    let text = drill::render(&report);
    let context = format!("{text}\n--- progress ---\n{}", lines.join("\n"));
    assert!(report.passed(), "{context}");
    assert!(report.interrupted_failover.is_some(), "{context}");
    // The old primary is readied by `replicadr clean`, not by the drill's own deletes.
    let cleaned = report
        .checks
        .iter()
        .find(|c| c.name == "primary: replicadr clean removed the stale workload")
        .expect("the clean before the failback");
    assert!(
        cleaned.passed
            && cleaned
                .detail
                .contains("removed (report replicadr-clean-primary-"),
        "{cleaned:?}"
    );

    // Both policies restored, each by a Restore of its own.
    let infra = report
        .failover_of(drill::POLICY_INFRA)
        .expect("drill-infra restored");
    assert_eq!(infra.outcome, Outcome::Succeeded, "{context}");
    assert_eq!(infra.vm_starts.len(), 1, "{context}");
    assert_eq!(infra.rewritten.len(), 1, "{context}");
    let failover = report.failover_of(drill::POLICY).expect("a failover");
    assert_eq!(failover.outcome, Outcome::Succeeded, "{context}");
    assert_ne!(failover.restore, infra.restore);
    assert_eq!(failover.site, "dr");
    // 5 fixed VMs (one halted) + 40 scale VMs; 5 fixed PVs (desktop's DataVolume's included), the
    // replica's PV and 80 scale PVs.
    assert_eq!(failover.vm_starts.len(), 44, "{context}");
    assert_eq!(failover.rewritten.len(), 86, "{context}");
    let dr_prefix = format!("{}:{}", DR_EXPORT.server, DR_EXPORT.base);
    for volume in &failover.rewritten {
        assert_eq!(volume.action, VolumeAction::Rewrite);
        assert!(
            volume
                .after
                .as_deref()
                .is_some_and(|a| a.starts_with(&dr_prefix)),
            "{volume:?}"
        );
    }
    // Start order: groups ascending, the fixed `db` (order 1) before `app` (2) before `web` (3).
    let position = |name: &str| {
        failover
            .vm_starts
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} not started:\n{context}"))
    };
    assert!(position("db") < position("app") && position("app") < position("web"));
    let groups: Vec<usize> = failover.vm_starts.iter().map(|s| s.group).collect();
    assert!(groups.windows(2).all(|w| w[0] <= w[1]), "{groups:?}");
    // One start sequence across both policies: `dns` (order 1) starts with `db`, before `app`.
    assert_eq!(
        infra.vm_starts[0].group,
        failover.vm_starts[position("db")].group,
        "{context}"
    );
    assert!(
        failover
            .restore
            .as_deref()
            .is_some_and(|r| r.ends_with("-2")),
        "the re-run made attempt 2: {context}"
    );

    let failback = report.failback_of(drill::POLICY).expect("a failback");
    assert_eq!(failback.outcome, Outcome::Succeeded, "{context}");
    assert_eq!(
        report.failback_of(drill::POLICY_INFRA).map(|r| r.outcome),
        Some(Outcome::Succeeded),
        "{context}"
    );
    let primary_prefix = format!("{}:{}", PRIMARY_EXPORT.server, PRIMARY_EXPORT.base);
    assert!(
        failback.rewritten.iter().all(|v| v
            .after
            .as_deref()
            .is_some_and(|a| a.starts_with(&primary_prefix))),
        "{context}"
    );
    for check in [
        "dr: PVs on dr's exports",
        "dr: Delete-policy PV restored, not re-provisioned",
        "dr: replica PVC of the VolumeSnapshot restored",
        "dr: VMs started in start order",
        "dr: re-run after Velero was killed mid-restore",
        "dr: every BackupPolicy restored",
        "dr: the active-site record names dr",
        "primary: makes no backup while dr is active",
        "primary: every BackupPolicy restored",
        "primary: the active-site record names primary",
        "primary: PVs on primary's exports",
        "primary: every primary PV restored under its name",
        "dr: no VMI or launcher pod restored, none for a halted VM",
        "dr: DataVolume drill-vms/desktop-root adopted its restored claim, no import",
        "primary: no VMI or launcher pod restored, none for a halted VM",
        "primary: DataVolume drill-vms/desktop-root adopted its restored claim, no import",
    ] {
        assert!(
            report.checks.iter().any(|c| c.name == check && c.passed),
            "{check} did not pass:\n{context}"
        );
    }

    // `replicadr gc --apply` at dr after the failover: the restored replica claims (their
    // VolumeSnapshots are never restored) are replicas of another site's snapshots, kept with
    // their PVs, not deleted as orphans.
    let kubeconfig = environment.dr.cluster.kubeconfig_path();
    let (code, stdout, stderr) =
        replicadr_e2e::lab_cli::replicadr(kubeconfig, &["gc", "--apply", "-o", "json"]).await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let orphans: Vec<serde_json::Value> = serde_json::from_str(&stdout)?;
    assert!(
        !orphans.is_empty(),
        "the restored replica is listed: {stdout}"
    );
    assert!(
        orphans.iter().all(|o| o["action"] == "skippedRestored"),
        "nothing deleted: {stdout}"
    );
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(environment.dr.client.clone(), "drill-vms");
    let volumes: kube::Api<k8s_openapi::api::core::v1::PersistentVolume> =
        kube::Api::all(environment.dr.client.clone());
    for orphan in &orphans {
        let name = orphan["name"].as_str().unwrap_or_default();
        assert!(claims.get_opt(name).await?.is_some(), "{name} kept");
        if let Some(volume) = orphan["volume"].as_str() {
            assert!(volumes.get_opt(volume).await?.is_some(), "{volume} kept");
        }
    }
    Ok(())
}
