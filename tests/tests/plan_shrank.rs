//! A shrunken backup is never chosen silently, in the two-site lab (real kube-apiservers with
//! etcd, s3s-fs, the real Velero server with the project's plugins): a verified backup of the
//! workload at `primary`, then the namespace emptied and a second verified backup of it. At `dr`,
//! `replicadr plan` and `failover` (the binary) refuse the newer one as `BackupShrank` and do not
//! fall back to the older one either: both are named, and each restores only when the operator
//! names it. A separate test binary from `drill.rs`: one Velero runs at a time. Build the
//! workspace binaries first (`cargo build --workspace --bins`).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use replicadr_drill as drill;
use replicadr_e2e::lab_cli::{replicadr, sites_with_workload, verified_backup};
use replicadr_scheduler::recovery::failover;
use replicadr_scheduler::velero;
use serde_json::Value;

const NAMESPACE: &str = "drill-vms";

/// Deletes every VM, `DataVolume`, `VolumeSnapshot` and PVC of the workload's namespace and waits
/// until they are gone (the lab's played PV controller lifts the claims' protection finalizer).
/// The `DataVolumes` go before the claims, or the played CDI would make their claims again.
async fn empty_namespace(client: &Client) -> anyhow::Result<()> {
    let snapshot = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
    ));
    for resource in [
        failover::vm_resource(),
        failover::data_volume_resource(),
        snapshot,
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NAMESPACE);
    claims
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let vms: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &failover::vm_resource());
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let left: Vec<String> = claims
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .chain(
                vms.list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .map(ResourceExt::name_any),
            )
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "still in {NAMESPACE} after a minute: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn problems<'a>(value: &'a Value, reason: &str) -> Vec<&'a Value> {
    value["problems"]
        .as_array()
        .map(|all| all.iter().filter(|p| p["reason"] == reason).collect())
        .unwrap_or_default()
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_backup_of_an_emptied_namespace_is_refused_and_the_older_one_is_not_chosen_silently()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let good = verified_backup(&env.primary.client, &mut log).await?;

    empty_namespace(&env.primary.client).await?;
    // Backup names carry the second they were made in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (empty, verification) = Box::pin(drill::verified_backup(
        &env.primary.client,
        drill::POLICY,
        &mut log,
    ))
    .await?;
    assert_ne!(empty, good);
    assert!(
        verification.verified,
        "a backup of an empty namespace breaks no invariant of its own: {verification:#?}"
    );

    env.move_velero(false, &[&good, &empty], &mut log).await?;
    let kubeconfig = env.dr.cluster.kubeconfig_path().to_owned();

    // The newest verified backup is chosen and refused; the plan names both.
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
    assert_eq!(code, 1, "plan exits 1 when incomplete:\n{out}\n{err}");
    let plan: Value = serde_json::from_str(&out)?;
    assert_eq!(plan["backup"], empty.as_str(), "{out}");
    assert_eq!(plan["comparedWith"], good.as_str(), "{out}");
    assert_eq!(plan["complete"], false);
    let shrank = problems(&plan, "BackupShrank");
    assert_eq!(shrank.len(), 1, "{out}");
    assert_eq!(shrank[0]["severity"], "Blocking");
    assert_eq!(shrank[0]["object"], format!("Backup {empty}"));
    let message = shrank[0]["message"].as_str().unwrap_or_default();
    for expected in [
        format!("backup {empty} holds none of the 5 VMs and 5 claims of backup {good}"),
        format!("VirtualMachine {NAMESPACE}/db"),
        format!("PersistentVolumeClaim {NAMESPACE}/app-data"),
        format!("restore {good} with `--backup {good}`"),
        format!("{empty} with `--backup {empty} --force`"),
    ] {
        assert!(message.contains(&expected), "{expected}:\n{message}");
    }
    let missing: Vec<&str> = problems(&plan, "VmMissingFromBackup")
        .iter()
        .filter_map(|p| p["object"].as_str())
        .collect();
    assert_eq!(
        missing,
        [
            "VirtualMachine drill-vms/app",
            "VirtualMachine drill-vms/db",
            "VirtualMachine drill-vms/desktop",
            "VirtualMachine drill-vms/tools",
            "VirtualMachine drill-vms/web"
        ],
        "{out}"
    );

    // The failover does not restore it, nor the older one in its place.
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
    assert_eq!(code, 3, "refused by a precondition:\n{out}\n{err}");
    let recovery: Value = serde_json::from_str(&out)?;
    let report = &recovery["reports"][0];
    assert_eq!(recovery["outcome"], "Refused");
    assert_eq!(report["outcome"], "Refused");
    assert_eq!(report["backup"], empty.as_str());
    assert!(report["restore"].is_null(), "{out}");
    let failures = report["failures"].to_string();
    assert!(
        failures.contains("BackupShrank") && failures.contains(&format!("--backup {good}")),
        "{failures}"
    );
    let restores: Api<DynamicObject> = Api::namespaced_with(
        env.dr.client.clone(),
        drill::VELERO_NAMESPACE,
        &velero::restore_resource(),
    );
    assert!(
        restores
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "nothing was restored"
    );

    // --force alone does not restore the shrunken backup the failover chose.
    let (code, out, err) = replicadr(
        &kubeconfig,
        &[
            "failover",
            "--site",
            "dr",
            "--policy",
            drill::POLICY,
            "--force",
            "--yes",
            "-o",
            "json",
        ],
    )
    .await?;
    assert_eq!(code, 3, "refused although forced:\n{out}\n{err}");
    let forced: Value = serde_json::from_str(&out)?;
    let failures = forced["reports"][0]["failures"].to_string();
    assert!(
        failures.contains("BackupNamed") && failures.contains("--force does not override"),
        "{failures}"
    );
    assert!(
        restores
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "nothing was restored"
    );

    // Named, the older backup plans complete: it is compared with nothing older.
    let (code, out, err) = replicadr(
        &kubeconfig,
        &["plan", "--site", "dr", "--backup", &good, "-o", "json"],
    )
    .await?;
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: Value = serde_json::from_str(&out)?;
    assert_eq!(plan["backup"], good.as_str());
    assert!(plan["comparedWith"].is_null(), "{out}");
    assert!(problems(&plan, "BackupShrank").is_empty(), "{out}");

    // Named with --force, the shrunken one is restored as the operator asks.
    let (code, out, err) = replicadr(
        &kubeconfig,
        &[
            "failover",
            "--site",
            "dr",
            "--backup",
            &empty,
            "--force",
            "--yes",
            "--restore-timeout",
            "5m",
            "-o",
            "json",
        ],
    )
    .await?;
    let recovery: Value = serde_json::from_str(&out)?;
    let report = &recovery["reports"][0];
    assert_eq!(report["outcome"], "Succeeded", "{out}\n{err}");
    assert_eq!(code, 0);
    assert_eq!(report["backup"], empty.as_str());
    assert_eq!(report["forced"], true);
    assert!(
        err.contains("BackupShrank") && err.contains(&format!("--backup {good}")),
        "the forced failover says what it goes on with:\n{err}"
    );
    Ok(())
}
