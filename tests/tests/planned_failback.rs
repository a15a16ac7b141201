//! The planned failback in the two-site lab (real kube-apiservers with etcd, s3s-fs, the real
//! Velero server with the project's plugins): after a failover to `dr`, `dr` changes a VM's spec
//! and gains a claim on a new volume. `replicadr failback --site primary --from-kubeconfig <dr>`
//! halts the VMs at `dr`, takes and verifies their final backups there, and must see them in
//! `primary`'s Velero before it goes on. The lab runs one Velero at a time (its controller
//! manager always binds port 8080), so the first run stops there and names the step; Velero
//! moves to `primary` and the same command continues from its step record: it refuses to clean
//! while `primary`'s old VMs run, then, once they are halted, cleans, restores the final backups
//! and starts the VMs — with `dr`'s changes, an RPO of zero and the VMs' run strategies back.
//! Build the workspace binaries first.

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use replicadr_drill::{self as drill, DR_EXPORT, PRIMARY_EXPORT};
use replicadr_e2e::lab_cli::{
    NfsClaim, bound_nfs_claim, failover_at_dr, replicadr, sites_with_workload,
};
use replicadr_scheduler::recovery::failover::vm_resource;
use replicadr_scheduler::recovery::plan::location;
use replicadr_scheduler::recovery::planned::{RECORD, StepRecord};
use serde_json::{Value, json};

const NAMESPACE: &str = "drill-vms";

/// At `dr` after the failover: VM `web` gets a label in its template, and claim `logs` is made
/// on a new volume of dr's export.
async fn write_at_dr(dr: &kube::Client) -> anyhow::Result<()> {
    Api::<DynamicObject>::namespaced_with(dr.clone(), NAMESPACE, &vm_resource())
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"labels": {"changed-at": "dr"}}}}}),
            ),
        )
        .await?;
    bound_nfs_claim(
        dr,
        NfsClaim {
            namespace: NAMESPACE,
            name: "logs",
            volume: "drill-logs",
            server: DR_EXPORT.server,
            path: format!("{}/logs", DR_EXPORT.base),
            metadata: json!({}),
        },
    )
    .await
}

async fn record(client: &kube::Client) -> anyhow::Result<StepRecord> {
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), drill::VELERO_NAMESPACE)
        .get(RECORD)
        .await?;
    let text = configmap
        .data
        .unwrap_or_default()
        .remove("record.json")
        .unwrap_or_default();
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_planned_failback_brings_back_what_dr_wrote_and_continues_where_it_stopped()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let backups: Vec<String> = drill::every_policy_backed_up(&env.primary.client, &mut log)
        .await?
        .into_iter()
        .map(|(backup, verification)| {
            assert!(verification.verified, "{backup}: {verification:#?}");
            backup
        })
        .collect();

    // The primary is lost: failover to dr; dr runs and changes things.
    env.move_velero(false, &backups, &mut log).await?;
    let dr = env.dr.cluster.kubeconfig_path().to_owned();
    let (code, out, err) = failover_at_dr(&dr, &["--restore-timeout", "5m"], &[]).await?;
    assert_eq!(code, 0, "failover:\n{out}\n{err}");
    write_at_dr(&env.dr.client).await?;
    for policy in [drill::POLICY, drill::POLICY_INFRA] {
        drill::ensure_policy(&env.dr.client, policy).await?;
    }

    // The planned failback, run at primary with dr reachable. With Velero still at dr only,
    // it halts dr's VMs, takes the final backups there, and stops where primary's Velero must
    // list them, saying so.
    let dr_vms: Api<DynamicObject> =
        Api::namespaced_with(env.dr.client.clone(), NAMESPACE, &vm_resource());
    let strategy = dr_vms.get("web").await?.data["spec"]["runStrategy"].clone();
    assert!(
        strategy.as_str().is_some_and(|s| s != "Halted"),
        "web runs at dr: {strategy}"
    );
    let primary = env.primary.cluster.kubeconfig_path().to_owned();
    let dr_path = dr.to_string_lossy().into_owned();
    let failback = [
        "failback",
        "--site",
        "primary",
        "--from-kubeconfig",
        dr_path.as_str(),
        "--yes",
        "--sync-timeout",
        "5s",
        "--restore-timeout",
        "5m",
        "-o",
        "json",
    ];
    let (code, out, err) = replicadr(&primary, &failback).await?;
    assert_eq!(code, 1, "stops at the sync:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert!(
        report["failures"][0]
            .as_str()
            .is_some_and(|f| f.contains("are not in site primary's Velero")
                && f.contains("run the same command again")),
        "{out}"
    );
    let halted = report["halted"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default();
    assert!(halted >= 3, "dr's VMs halted: {out}");
    let web = dr_vms.get("web").await?;
    assert_eq!(web.data["spec"]["runStrategy"], "Halted");
    assert_eq!(
        web.annotations()
            .get("replicadr.io/halted-for-failback")
            .map(String::as_str),
        strategy.as_str(),
        "the strategy it had is kept on it"
    );
    let first = record(&env.primary.client).await?;
    assert_eq!(first.from_site, "dr");
    assert_eq!(first.final_backups.len(), 2, "{first:?}");
    assert!(first.halted_at.is_some() && !first.cleaned && first.finished.is_none());
    let finals: Vec<String> = first.final_backups.values().cloned().collect();

    // Velero moves to primary and lists the final backups. The same command continues from the
    // record (no new backup: the VMs at dr are still halted) and refuses to clean while the
    // old VMs at primary run, naming one.
    env.move_velero(true, &finals, &mut log).await?;
    let (code, out, err) = replicadr(&primary, &failback).await?;
    assert_eq!(code, 3, "clean refused:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["resumed"], true, "{out}");
    assert!(
        report["failures"][0]
            .as_str()
            .is_some_and(|f| f.contains("VirtualMachine drill-vms/") && f.contains("is running")),
        "{out}"
    );
    assert_eq!(
        record(&env.primary.client).await?.final_backups,
        first.final_backups
    );

    // Halted, primary is cleaned, and the final backups restored and started.
    drill::halt_all(&env.primary.client).await?;
    let (code, out, err) = replicadr(&primary, &failback).await?;
    assert_eq!(code, 0, "planned failback:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["outcome"], "Succeeded", "{out}");
    assert_eq!(
        report["rpoSeconds"], 0,
        "final backups after the halt: {out}"
    );
    assert!(
        report["rtoSeconds"].as_f64().is_some_and(|s| s > 0.0),
        "{out}"
    );
    let restored: Vec<&str> = report["recovery"]["reports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["backup"].as_str())
        .collect();
    for backup in &finals {
        assert!(
            restored.contains(&backup.as_str()),
            "{backup} restored: {out}"
        );
    }
    let done = record(&env.primary.client).await?;
    assert!(done.cleaned && done.finished.is_some(), "{done:?}");

    // dr's changes are at primary: the VM spec, and the new claim on primary's export.
    let vms: Api<DynamicObject> =
        Api::namespaced_with(env.primary.client.clone(), NAMESPACE, &vm_resource());
    let web = vms.get("web").await?;
    assert_eq!(
        web.data["spec"]["template"]["metadata"]["labels"]["changed-at"], "dr",
        "the spec changed at dr"
    );
    assert_eq!(
        web.data["spec"]["runStrategy"], strategy,
        "started again with the strategy it had at dr"
    );
    assert!(
        !web.annotations()
            .contains_key("replicadr.io/halted-for-failback"),
        "the halt's note is gone once started"
    );
    let claim = Api::<PersistentVolumeClaim>::namespaced(env.primary.client.clone(), NAMESPACE)
        .get("logs")
        .await?;
    assert_eq!(
        claim.spec.and_then(|s| s.volume_name).as_deref(),
        Some("drill-logs")
    );
    let pv = Api::<PersistentVolume>::all(env.primary.client.clone())
        .get("drill-logs")
        .await?;
    assert_eq!(
        location(&serde_json::to_value(pv)?).as_deref(),
        Some(format!("{}:{}/logs", PRIMARY_EXPORT.server, PRIMARY_EXPORT.base).as_str()),
    );
    Ok(())
}
