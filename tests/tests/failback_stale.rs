//! Failback onto a primary that comes back with its pre-disaster workload, in the two-site lab
//! (real kube-apiservers with etcd, s3s-fs, the real Velero server with the project's plugins):
//! after a failover to `dr`, one claim is re-created at `dr` on a new volume during the outage,
//! and `dr` backs up. At `primary`, whose VMs, claims and PVs from before the disaster are all
//! still there, `replicadr plan` blocks with `ObjectExists` for each of them (the re-created
//! claim named with both bindings) and `failback` is refused without restoring anything. Once the
//! stale workload is removed by `replicadr clean` (refused at the active site and while the old
//! VMs run; a `DataVolume` owning a stale claim removed with it, VMs, then `DataVolumes`, then
//! claims, then PVs), the failback restores `dr`'s state: the claim is bound to its new
//! volume, rewritten onto `primary`'s export. Build the workspace binaries first.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use replicadr_drill::{self as drill, DR_EXPORT, PRIMARY_EXPORT};
use replicadr_e2e::lab_cli::{
    NfsClaim, bound_nfs_claim, replicadr, sites_with_workload, verified_backup,
};
use replicadr_scheduler::recovery::failover::data_volume_resource;
use replicadr_scheduler::recovery::plan::location;
use replicadr_scheduler::velero;
use serde_json::{Value, json};

const NAMESPACE: &str = "drill-vms";

/// At `dr` during the outage: claim `web-root` is deleted and made again on a new volume.
async fn recreate_web_root(dr: &kube::Client) -> anyhow::Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(dr.clone(), NAMESPACE);
    claims.delete("web-root", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_mins(1);
    while claims.get_opt("web-root").await?.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "web-root is not deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    bound_nfs_claim(
        dr,
        NfsClaim {
            namespace: NAMESPACE,
            name: "web-root",
            volume: "drill-web-root-v2",
            server: DR_EXPORT.server,
            path: format!("{}/web-root-v2", DR_EXPORT.base),
            metadata: json!({}),
        },
    )
    .await
}

/// At `primary` before the failback: a Succeeded `DataVolume` `db-root` owns claim `db-root`, as
/// CDI leaves a claim it populated (controller ownerReference, `populatedFor`).
async fn own_db_root_by_a_data_volume(primary: &kube::Client) -> anyhow::Result<DynamicObject> {
    let data_volumes: Api<DynamicObject> =
        Api::namespaced_with(primary.clone(), NAMESPACE, &data_volume_resource());
    let dv: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "db-root", "namespace": NAMESPACE},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "10Gi"}}}},
    }))?;
    let dv = data_volumes.create(&PostParams::default(), &dv).await?;
    data_volumes
        .patch_status(
            "db-root",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await?;
    Api::<PersistentVolumeClaim>::namespaced(primary.clone(), NAMESPACE)
        .patch(
            "db-root",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "annotations": {"cdi.kubevirt.io/storage.populatedFor": "db-root"},
                "ownerReferences": [{
                    "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                    "name": "db-root", "uid": dv.metadata.uid,
                    "controller": true, "blockOwnerDeletion": true,
                }],
            }})),
        )
        .await?;
    Ok(dv)
}

fn objects_with(plan: &Value, reason: &str) -> Vec<String> {
    plan["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["reason"] == reason)
        .filter_map(|p| p["object"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn failback_onto_a_site_holding_its_old_workload_is_refused_until_it_is_cleared()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let backup = verified_backup(&env.primary.client, &mut log).await?;

    // The primary is lost: failover to dr.
    env.move_velero(false, &[&backup], &mut log).await?;
    let dr = env.dr.cluster.kubeconfig_path().to_owned();
    let (code, out, err) = replicadr(
        &dr,
        &[
            "failover",
            "--site",
            "dr",
            "--yes",
            "--restore-timeout",
            "5m",
            "-o",
            "json",
        ],
    )
    .await?;
    assert_eq!(code, 0, "failover:\n{out}\n{err}");

    // During the outage a claim is re-created at dr on a new volume; then dr backs up.
    recreate_web_root(&env.dr.client).await?;
    let dr_backup = verified_backup(&env.dr.client, &mut log).await?;

    // The primary comes back with everything it had.
    env.move_velero(true, &[&dr_backup], &mut log).await?;
    let primary = env.primary.cluster.kubeconfig_path().to_owned();
    let (code, out, err) =
        replicadr(&primary, &["plan", "--site", "primary", "-o", "json"]).await?;
    assert_eq!(code, 1, "the plan is incomplete:\n{out}\n{err}");
    let plan: Value = serde_json::from_str(&out)?;
    assert_eq!(plan["backup"], dr_backup.as_str(), "{out}");
    let stale = objects_with(&plan, "ObjectExists");
    for object in [
        "VirtualMachine drill-vms/db",
        "VirtualMachine drill-vms/web",
        "PersistentVolumeClaim drill-vms/web-root",
        "PersistentVolumeClaim drill-vms/db-root",
        "PersistentVolume drill-db-root",
    ] {
        assert!(
            stale.iter().any(|o| o == object),
            "{object} not blocked: {stale:?}\n{out}"
        );
    }
    let claim = plan["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["reason"] == "ObjectExists"
                && p["object"] == "PersistentVolumeClaim drill-vms/web-root"
        })
        .expect("the re-created claim");
    let message = claim["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("bound to drill-web-root here; the backup binds it to drill-web-root-v2")
            && message.contains(&format!("was not restored from backup {dr_backup}")),
        "{message}"
    );

    // The failback is refused and restores nothing.
    let (code, out, err) = replicadr(
        &primary,
        &["failback", "--site", "primary", "--yes", "-o", "json"],
    )
    .await?;
    assert_eq!(code, 3, "refused:\n{out}\n{err}");
    let recovery: Value = serde_json::from_str(&out)?;
    assert_eq!(recovery["outcome"], "Refused", "{out}");
    let restores: Api<DynamicObject> = Api::namespaced_with(
        env.primary.client.clone(),
        drill::VELERO_NAMESPACE,
        &velero::restore_resource(),
    );
    assert!(
        restores
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "nothing restored at primary"
    );

    // `clean` is refused at the active site, and at primary while the old VMs run.
    let (code, out, err) = replicadr(&dr, &["clean", "--site", "dr", "--apply"]).await?;
    assert_eq!(code, 3, "clean at the active site:\n{out}\n{err}");
    assert!(
        out.contains("names site dr, active since")
            && out.contains("only at a site that is not active"),
        "{out}"
    );
    let (code, out, err) =
        replicadr(&primary, &["clean", "--site", "primary", "-o", "json"]).await?;
    assert_eq!(code, 0, "clean's dry run:\n{out}\n{err}");
    let listed: Value = serde_json::from_str(&out)?;
    let stale: Vec<String> = listed["stale"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{} {}",
                t["kind"].as_str().unwrap_or_default(),
                t["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for object in [
        "VirtualMachine db",
        "PersistentVolumeClaim web-root",
        "PersistentVolume drill-web-root",
        "PersistentVolume drill-db-root",
    ] {
        assert!(
            stale.contains(&object.to_owned()),
            "{object} not listed: {stale:?}"
        );
    }
    assert_eq!(
        listed["removed"].as_array().map(Vec::len),
        Some(0),
        "a dry run removes nothing"
    );
    let (code, out, err) = replicadr(&primary, &["clean", "--site", "primary", "--apply"]).await?;
    assert_eq!(code, 3, "refused while the old VMs run:\n{out}\n{err}");
    assert!(
        out.contains("VirtualMachine drill-vms/db is running"),
        "{out}"
    );
    let vms: Api<DynamicObject> = Api::namespaced_with(
        env.primary.client.clone(),
        NAMESPACE,
        &replicadr_scheduler::recovery::failover::vm_resource(),
    );
    for vm in vms.list(&ListParams::default()).await?.items {
        vms.patch(
            &vm.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_mins(1);
    while vms
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|vm| replicadr_scheduler::recovery::failover::vm_running(&vm.data))
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the old VMs do not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // CDI made claim db-root for a DataVolume of its name, which owns it: the DataVolume is
    // stale with its claim (left, it would make the claim again, empty).
    let dv = own_db_root_by_a_data_volume(&env.primary.client).await?;
    let (code, out, err) =
        replicadr(&primary, &["clean", "--site", "primary", "-o", "json"]).await?;
    assert_eq!(code, 0, "clean's dry run:\n{out}\n{err}");
    let listed: Value = serde_json::from_str(&out)?;
    let data_volume = listed["stale"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["kind"] == "DataVolume")
        .unwrap_or_else(|| panic!("the DataVolume is listed stale: {out}"));
    assert_eq!(data_volume["name"], "db-root", "{out}");
    assert_eq!(
        data_volume["detail"], "Succeeded, keeps claim db-root",
        "{out}"
    );
    // Halted, they are removed, PVs set to Retain first; a report is left.
    let (code, out, err) = replicadr(
        &primary,
        &["clean", "--site", "primary", "--apply", "-o", "json"],
    )
    .await?;
    assert_eq!(code, 0, "clean --apply:\n{out}\n{err}");
    let cleaned: Value = serde_json::from_str(&out)?;
    let removed: Vec<&str> = cleaned["removed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        removed.contains(&"VirtualMachine drill-vms/db")
            && removed.contains(&"DataVolume drill-vms/db-root")
            && removed.contains(&"PersistentVolumeClaim drill-vms/db-root")
            && removed.contains(&"PersistentVolumeClaim drill-vms/web-root")
            && removed.contains(&"PersistentVolume drill-web-root"),
        "{removed:?}"
    );
    let kinds: Vec<&str> = removed
        .iter()
        .filter_map(|r| r.split_once(' ').map(|(kind, _)| kind))
        .collect();
    let mut ordered = kinds.clone();
    ordered.dedup();
    assert_eq!(
        ordered,
        [
            "VirtualMachine",
            "DataVolume",
            "PersistentVolumeClaim",
            "PersistentVolume"
        ],
        "VMs, then DataVolumes, then claims, then PVs: {removed:?}"
    );
    assert!(
        Api::<DynamicObject>::namespaced_with(
            env.primary.client.clone(),
            NAMESPACE,
            &data_volume_resource()
        )
        .get_opt("db-root")
        .await?
        .is_none_or(|d| d.metadata.uid != dv.metadata.uid),
        "the stale DataVolume is gone"
    );
    let configmap = cleaned["reportConfigmap"]
        .as_str()
        .expect("a report ConfigMap");
    let stored = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        env.primary.client.clone(),
        drill::VELERO_NAMESPACE,
    )
    .get(configmap)
    .await?;
    assert!(
        stored
            .data
            .unwrap_or_default()
            .get("report.json")
            .is_some_and(|r| r.contains("PersistentVolume drill-web-root")),
        "the report names what was removed"
    );
    // The infra namespace, not in the backup, is untouched.
    assert!(
        Api::<DynamicObject>::namespaced_with(
            env.primary.client.clone(),
            "drill-infra",
            &replicadr_scheduler::recovery::failover::vm_resource()
        )
        .get_opt("dns")
        .await?
        .is_some(),
        "clean touched a VM outside the backup's names"
    );

    // Cleared of its stale workload, the primary takes dr's state back.
    let (code, out, err) = replicadr(
        &primary,
        &[
            "failback",
            "--site",
            "primary",
            "--yes",
            "--restore-timeout",
            "5m",
            "-o",
            "json",
        ],
    )
    .await?;
    assert_eq!(code, 0, "failback:\n{out}\n{err}");
    let claim = Api::<PersistentVolumeClaim>::namespaced(env.primary.client.clone(), NAMESPACE)
        .get("web-root")
        .await?;
    assert_eq!(
        claim.spec.and_then(|s| s.volume_name).as_deref(),
        Some("drill-web-root-v2"),
        "the claim runs on the volume made at dr"
    );
    let pv = Api::<PersistentVolume>::all(env.primary.client.clone())
        .get("drill-web-root-v2")
        .await?;
    assert_eq!(
        location(&serde_json::to_value(pv)?).as_deref(),
        Some(
            format!(
                "{}:{}/web-root-v2",
                PRIMARY_EXPORT.server, PRIMARY_EXPORT.base
            )
            .as_str()
        ),
    );
    Ok(())
}
