//! What a metadata-only restore brings back of a real OpenShift Virtualization namespace, in the
//! two-site lab (real kube-apiservers with etcd, s3s-fs, the real Velero server running the
//! project's plugins). At `primary`, namespace `kv-shapes` holds:
//! - VM `imported`, running: its disk is `DataVolume` `imported-root`, Succeeded, whose claim CDI
//!   made (owned by the `DataVolume`, import annotations with pod phase Succeeded); its VMI (owned by
//!   the VM) and `virt-launcher` pod (owned by the VMI), which the played KubeVirt makes and labels
//!   as KubeVirt does;
//! - `DataVolume` `scratch`, still importing, with its claim (import annotations, pod phase Running);
//! - a container app: Deployment `web`, Service `web` and ConfigMap `web-config` owned by the
//!   Deployment.
//!
//! A Velero Backup of the namespace is restored at `dr` by a Velero Restore, as OADP users do.
//! At backup, `replicadr.io/kubevirt-backup` marks each claim for its `DataVolume` and the PV of the
//! unfinished one; `replicadr.io/kubevirt-restore` leaves out the VMI, the launcher pod, the
//! unfinished claim and its PV,
//! marks `imported-root` and its claim for adoption, which the played CDI does (Succeeded without
//! an import), and fails `DataVolume` `scratch` naming it; the app comes back. The test also
//! confirms what Velero does to restored objects: no `ownerReferences`, no `status`, skipped
//! items absent. Build the workspace binaries first.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use replicadr_drill::{self as drill, PRIMARY_EXPORT};
use replicadr_e2e::lab_cli::{NfsClaim, bound_nfs_claim, sites_with_workload, velero_run};
use replicadr_scheduler::recovery::failover::{data_volume_resource, vm_resource};
use replicadr_scheduler::velero::{self, BackupView};
use replicadr_scheduler::verify::Verifier;
use serde_json::{Value, json};

const NAMESPACE: &str = "kv-shapes";

fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
    ))
}

fn deployment_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
}

async fn create(
    client: &kube::Client,
    resource: &ApiResource,
    object: Value,
) -> anyhow::Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, resource);
    let status = object.get("status").cloned();
    let created = api
        .create(&PostParams::default(), &serde_json::from_value(object)?)
        .await?;
    if let Some(status) = status {
        return Ok(api
            .patch_status(
                &created.metadata.name.clone().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?);
    }
    Ok(created)
}

/// A claim CDI made for `DataVolume` `dv` (owned by it), bound to a new NFS PV on primary's export,
/// with its import annotations at `pod_phase`.
async fn cdi_claim(
    client: &kube::Client,
    dv: &DynamicObject,
    pod_phase: &str,
) -> anyhow::Result<()> {
    let name = dv.metadata.name.clone().unwrap_or_default();
    bound_nfs_claim(
        client,
        NfsClaim {
            namespace: NAMESPACE,
            name: &name,
            volume: &format!("kv-shapes-{name}"),
            server: PRIMARY_EXPORT.server,
            path: format!("{}/kv-shapes/{name}", PRIMARY_EXPORT.base),
            metadata: json!({
                "annotations": {
                    "cdi.kubevirt.io/storage.import.endpoint": "https://images.example.com/fedora.qcow2",
                    "cdi.kubevirt.io/storage.import.source": "http",
                    "cdi.kubevirt.io/storage.pod.phase": pod_phase,
                },
                "ownerReferences": [{
                    "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": name,
                    "uid": dv.metadata.uid, "controller": true, "blockOwnerDeletion": true,
                }],
            }),
        },
    )
    .await
}

fn data_volume(name: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"source": {"http": {"url": "https://images.example.com/fedora.qcow2"}},
                 "storage": {"resources": {"requests": {"storage": "10Gi"}}}},
        "status": {"phase": phase, "progress": if phase == "Succeeded" { "100.0%" } else { "42.0%" }},
    })
}

/// The shapes at primary, as KubeVirt and CDI leave them for a running VM.
async fn create_shapes(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let root = create(
        client,
        &data_volume_resource(),
        data_volume("imported-root", "Succeeded"),
    )
    .await?;
    cdi_claim(client, &root, "Succeeded").await?;
    let scratch = create(
        client,
        &data_volume_resource(),
        data_volume("scratch", "ImportInProgress"),
    )
    .await?;
    cdi_claim(client, &scratch, "Running").await?;
    create(
        client,
        &vm_resource(),
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "imported", "namespace": NAMESPACE},
            "spec": {"runStrategy": "Always", "template": {"spec": {
                "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
                "volumes": [{"name": "root", "dataVolume": {"name": "imported-root"}}],
            }}},
        }),
    )
    .await?;
    // The played KubeVirt makes the running VM's VMI (owned by the VM) and its launcher pod
    // (owned by the VMI), labelled as KubeVirt labels them.
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    while kubevirt_made(client).await?.len() < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no VMI and launcher pod for VM imported"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    create_app(client).await
}

/// The VMIs and launcher pods in the namespace, as `Kind name (restore label)`.
async fn kubevirt_made(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let describe = |kind: &str, meta: &kube::api::ObjectMeta| {
        format!(
            "{kind} {} ({:?})",
            meta.name.as_deref().unwrap_or_default(),
            meta.labels
                .as_ref()
                .and_then(|l| l.get("velero.io/restore-name"))
        )
    };
    let mut made: Vec<String> =
        Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &vmi_resource())
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|vmi| describe("VirtualMachineInstance", &vmi.metadata))
            .collect();
    made.extend(
        Api::<Pod>::namespaced(client.clone(), NAMESPACE)
            .list(&ListParams::default().labels("kubevirt.io=virt-launcher"))
            .await?
            .items
            .iter()
            .map(|pod| describe("Pod", &pod.metadata)),
    );
    Ok(made)
}

/// The container app beside the VMs: a Deployment, its Service, and a ConfigMap it owns.
async fn create_app(client: &kube::Client) -> anyhow::Result<()> {
    let web = create(
        client,
        &deployment_resource(),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1"}]}}},
            "status": {"replicas": 1, "readyReplicas": 1},
        }),
    )
    .await?;
    // Owned by the Deployment; nothing in the lab touches it, so the restored copy shows what
    // Velero does to ownerReferences.
    let config: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "web-config", "namespace": NAMESPACE, "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": web.metadata.uid}]},
        "data": {"listen": ":8080"},
    }))?;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &config)
        .await?;
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &service)
        .await?;
    Ok(())
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_kubevirt_namespace_restores_without_vmis_launchers_or_imports() -> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    create_shapes(&env.primary.client).await?;
    let backup = velero_run(
        &env.primary.client,
        &velero::backup_resource(),
        "kv-shapes",
        json!({"includedNamespaces": [NAMESPACE], "snapshotVolumes": false, "ttl": "24h0m0s"}),
    )
    .await?;
    assert_eq!(
        backup.data["status"]["phase"], "Completed",
        "{:#?}",
        backup.data["status"]
    );

    env.move_velero(false, &["kv-shapes"], &mut log).await?;
    let dr = env.dr.client.clone();
    let restore = velero_run(
        &dr,
        &velero::restore_resource(),
        "kv-shapes-at-dr",
        json!({"backupName": "kv-shapes", "includedNamespaces": [NAMESPACE]}),
    )
    .await?;
    let status = &restore.data["status"];
    assert_eq!(
        status["phase"], "PartiallyFailed",
        "DataVolume scratch fails: {status:#?}"
    );
    assert_eq!(status["errors"], 1, "one error, for scratch: {status:#?}");
    let synced = Api::<DynamicObject>::namespaced_with(
        dr.clone(),
        drill::VELERO_NAMESPACE,
        &velero::backup_resource(),
    )
    .get("kv-shapes")
    .await?;
    let results = Verifier::new(dr.clone(), drill::VELERO_NAMESPACE)
        .restore_results(&BackupView::from_object(&synced), "kv-shapes-at-dr")
        .await?;
    let errors = results["errors"].to_string();
    assert!(
        errors.contains("DataVolume kv-shapes/scratch is not restored")
            && errors.contains("ImportInProgress when backed up"),
        "{results:#}"
    );

    // Left out: the VMI, the launcher pod, the claim of the unfinished import, the DataVolume
    // that would import.
    // The restored VM runs (a plain Velero Restore keeps its run strategy), so the played KubeVirt
    // at dr makes its VMI and launcher pod anew: none of them carries Velero's restore label.
    let made = kubevirt_made(&dr).await?;
    assert!(
        made.iter().all(|m| m.ends_with("(None)")),
        "no VMI or launcher pod restored: {made:?}"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(dr.clone(), NAMESPACE);
    assert!(
        claims.get_opt("scratch").await?.is_none(),
        "the unfinished import's claim is left out"
    );
    // Velero restores a PV whose claim's namespace is restored at the PVs' turn, before the
    // claims, pre-bound to the claim's name: kubevirt-backup marked this one as the volume of a
    // claim the restore leaves out, so kubevirt-restore leaves it out too.
    assert!(
        Api::<PersistentVolume>::all(dr.clone())
            .get_opt("kv-shapes-scratch")
            .await?
            .is_none(),
        "the left-out claim's PV is left out too"
    );
    let data_volumes: Api<DynamicObject> =
        Api::namespaced_with(dr.clone(), NAMESPACE, &data_volume_resource());
    assert!(data_volumes.get_opt("scratch").await?.is_none());

    // Restored: the claim marked for its DataVolume, without the owner Velero strips; the
    // DataVolume marked pre-populated, without status; the VM; the app.
    let root = claims.get("imported-root").await?;
    let annotations = root.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("cdi.kubevirt.io/storage.populatedFor")
            .map(String::as_str),
        Some("imported-root"),
        "{annotations:?}"
    );
    assert_eq!(
        root.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        Some("kv-shapes-imported-root")
    );
    let dv = data_volumes.get("imported-root").await?;
    assert_eq!(
        dv.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("cdi.kubevirt.io/storage.prePopulated"))
            .map(String::as_str),
        Some("imported-root")
    );
    assert!(
        Api::<DynamicObject>::namespaced_with(dr.clone(), NAMESPACE, &vm_resource())
            .get_opt("imported")
            .await?
            .is_some(),
        "the VM is restored"
    );
    assert!(
        Api::<DynamicObject>::namespaced_with(dr.clone(), NAMESPACE, &deployment_resource())
            .get_opt("web")
            .await?
            .is_some()
            && Api::<Service>::namespaced(dr.clone(), NAMESPACE)
                .get_opt("web")
                .await?
                .is_some(),
        "the container app is restored"
    );

    // What Velero did, confirmed: ownerReferences and status are not restored (nothing in the
    // lab writes either on these two).
    let deployment =
        Api::<DynamicObject>::namespaced_with(dr.clone(), NAMESPACE, &deployment_resource())
            .get("web")
            .await?;
    assert!(
        deployment
            .data
            .get("status")
            .is_none_or(|s| s.get("readyReplicas").is_none()),
        "status is not restored: {:#?}",
        deployment.data.get("status")
    );
    let config = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(dr.clone(), NAMESPACE)
        .get("web-config")
        .await?;
    assert!(
        config
            .metadata
            .owner_references
            .is_none_or(|o| o.is_empty()),
        "ownerReferences are not restored"
    );

    // The played CDI adopts the claim: the DataVolume Succeeded without an import, the claim
    // owned by it again.
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    loop {
        let dv = data_volumes.get("imported-root").await?;
        let claim = claims.get("imported-root").await?;
        let owned = claim
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "DataVolume" && Some(&o.uid) == dv.metadata.uid.as_ref());
        if dv.data["status"]["phase"] == "Succeeded" && owned {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "DataVolume imported-root not adopted: {:#?}",
            dv.data["status"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
