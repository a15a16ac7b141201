//! The drill's sample workload at the primary site: VMs on NFS disks of every kind a failover
//! has to handle, plus any number of further VMs for scale runs.
//!
//! Namespace `drill-vms`:
//! - `db` (start-order 1): an in-tree NFS PV, Retain;
//! - `app` (start-order 2): an NFS CSI PV, Retain, and a disk provisioned from the drill's
//!   StorageClass (reclaim policy Delete), with a VolumeSnapshot of it;
//! - `web` (start-order 3): an in-tree NFS PV, Retain;
//! - `desktop` (start-order 3), made as OpenShift Virtualization makes a VM from a template: its
//!   disk comes from `spec.dataVolumeTemplates`, so `DataVolume` `desktop-root` (Succeeded, owned
//!   by the VM) and the claim CDI made for it (import annotations of a finished import, owned by
//!   the `DataVolume`, on an in-tree NFS PV, Retain); a cloud-init Secret; a namespaced instance
//!   type and preference, with the `ControllerRevisions` KubeVirt keeps of them (owned by the VM,
//!   named in `revisionName`); a second network through `NetworkAttachmentDefinition`
//!   `drill-net`;
//! - `tools`: halted, stays halted;
//! - a container app beside the VMs: Deployment and Service `frontend`.
//!
//! While a VM runs, the played KubeVirt keeps its `VirtualMachineInstance` and `virt-launcher`
//! pod ([`crate::controllers`]), so backups hold both, as they do on a real cluster.
//!
//! Namespace `drill-scale` (always there, empty unless `--vms N`): `vm-0001` … each with two in-tree NFS disks, start orders
//! 1–4 in turn.
//!
//! Namespace `drill-infra`, backed up by a second policy: `dns` (start-order 1), an in-tree NFS
//! PV, Retain.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use crate::controllers::{NFS_CSI_DRIVER, STORAGE_CLASS};
use replicadr_core::wire::START_ORDER;
use replicadr_scheduler::recovery::failover::{data_volume_resource, vm_resource};

/// The namespace of the fixed workload.
pub const NAMESPACE: &str = "drill-vms";
/// The namespace of the scale VMs.
pub const SCALE_NAMESPACE: &str = "drill-scale";
/// The namespace of the second policy's VM.
pub const INFRA_NAMESPACE: &str = "drill-infra";
/// Every namespace of the workload.
pub const NAMESPACES: [&str; 3] = [NAMESPACE, SCALE_NAMESPACE, INFRA_NAMESPACE];
/// Marks everything the drill creates.
pub const LABEL_DRILL: &str = "replicadr.io/drill";

/// An NFS export at a site.
#[derive(Debug, Clone)]
pub struct SiteExport<'a> {
    pub server: &'a str,
    pub base: &'a str,
}

/// The sample workload stands for the user's VMs, so it carries only the drill's label: ReplicaDR's
/// managed-by label marks objects its plugins made (replica PVCs), which the workload is not.
fn labels() -> Value {
    json!({LABEL_DRILL: "true"})
}

/// A Retain PV with `source` (`{"nfs": …}` or `{"csi": …}`) merged into its spec.
fn pv(name: &str, source: Value) -> Value {
    let mut spec = json!({
        "capacity": {"storage": "10Gi"},
        "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
    });
    if let (Some(spec), Value::Object(source)) = (spec.as_object_mut(), source) {
        spec.extend(source);
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": labels()},
        "spec": spec,
    })
}

fn in_tree_pv(name: &str, export: &SiteExport<'_>, dir: &str) -> Value {
    pv(
        name,
        json!({"nfs": {"server": export.server, "path": format!("{}/{dir}", export.base)}}),
    )
}

fn csi_pv(name: &str, export: &SiteExport<'_>, dir: &str) -> Value {
    pv(
        name,
        json!({"csi": {
            "driver": NFS_CSI_DRIVER,
            "volumeHandle": format!("{}#{}#{dir}#{name}", export.server, export.base.trim_matches('/')),
            "volumeAttributes": {"server": export.server, "share": export.base, "subdir": dir},
        }}),
    )
}

fn claim(namespace: &str, name: &str, volume: Option<&str>) -> Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "10Gi"}},
    });
    match volume {
        Some(volume) => {
            spec["volumeName"] = json!(volume);
            spec["storageClassName"] = json!("");
        }
        None => spec["storageClassName"] = json!(STORAGE_CLASS),
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": labels()},
        "spec": spec,
    })
}

fn vm(
    namespace: &str,
    name: &str,
    order: Option<i64>,
    run_strategy: &str,
    disks: &[&str],
) -> Value {
    let volumes: Vec<Value> = disks
        .iter()
        .enumerate()
        .map(|(i, claim)| json!({"name": format!("disk{i}"), "persistentVolumeClaim": {"claimName": claim}}))
        .collect();
    let mut annotations = json!({});
    if let Some(order) = order {
        annotations[START_ORDER] = json!(order.to_string());
    }
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(), "annotations": annotations},
        "spec": {
            "runStrategy": run_strategy,
            "template": {"spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "1Gi"}}}, "volumes": volumes}},
        },
    })
}

/// The VM made from a template, in [`NAMESPACE`].
pub const DESKTOP_VM: &str = "desktop";
/// Its `DataVolume`, and the claim CDI made for it, of the same name.
pub const DESKTOP_DISK: &str = "desktop-root";
/// The PV of [`DESKTOP_DISK`].
pub const DESKTOP_PV: &str = "drill-desktop-root";
/// The Deployment and Service of the container app.
pub const APP: &str = "frontend";
const DESKTOP_CLOUD_INIT: &str = "desktop-cloudinit";
const INSTANCE_TYPE: &str = "small";
const PREFERENCE: &str = "linux";
const NETWORK: &str = "drill-net";
const INSTANCE_TYPE_API: &str = "instancetype.kubevirt.io/v1beta1";
const IMAGE_URL: &str = "https://images.example.com/fedora-43.qcow2";

/// The `ControllerRevision` KubeVirt keeps of what the VM was started with: `name`, holding `object`.
fn revision_name(of: &str) -> String {
    format!("{DESKTOP_VM}-{of}-v1")
}

fn controller_revision(of: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": revision_name(of), "namespace": NAMESPACE, "labels": labels()},
        "data": object,
        "revision": 1,
    })
}

/// `desktop` and what it brings: see the module's documentation. Ownership is set afterwards
/// ([`own_desktop`]), once the owners have UIDs.
fn desktop(primary: &SiteExport<'_>) -> Vec<Value> {
    let ns = NAMESPACE;
    let instance_type = json!({
        "apiVersion": INSTANCE_TYPE_API, "kind": "VirtualMachineInstancetype",
        "metadata": {"name": INSTANCE_TYPE, "namespace": ns, "labels": labels()},
        "spec": {"cpu": {"guest": 2}, "memory": {"guest": "4Gi"}},
    });
    let preference = json!({
        "apiVersion": INSTANCE_TYPE_API, "kind": "VirtualMachinePreference",
        "metadata": {"name": PREFERENCE, "namespace": ns, "labels": labels()},
        "spec": {"devices": {"preferredDiskBus": "virtio"}},
    });
    let storage = json!({"resources": {"requests": {"storage": "10Gi"}}, "storageClassName": ""});
    let disk_claim = {
        let mut claim = claim(ns, DESKTOP_DISK, Some(DESKTOP_PV));
        claim["metadata"]["annotations"] = json!({
            "cdi.kubevirt.io/storage.import.endpoint": IMAGE_URL,
            "cdi.kubevirt.io/storage.import.source": "http",
            "cdi.kubevirt.io/storage.pod.phase": "Succeeded",
        });
        claim
    };
    let mut objects = vec![
        controller_revision(INSTANCE_TYPE, &instance_type),
        controller_revision(PREFERENCE, &preference),
        instance_type,
        preference,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": DESKTOP_CLOUD_INIT, "namespace": ns, "labels": labels()},
            "stringData": {"userdata": "#cloud-config\nhostname: desktop\n"},
        }),
        json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": NETWORK, "namespace": ns, "labels": labels()},
            "spec": {"config": r#"{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br1"}"#},
        }),
        in_tree_pv(DESKTOP_PV, primary, DESKTOP_DISK),
        disk_claim,
        json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": DESKTOP_DISK, "namespace": ns, "labels": labels()},
            "spec": {"source": {"http": {"url": IMAGE_URL}}, "storage": storage},
        }),
    ];
    objects.push(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {
            "name": DESKTOP_VM, "namespace": ns, "labels": labels(),
            "annotations": {START_ORDER: "3"},
        },
        "spec": {
            "runStrategy": "Always",
            "instancetype": {"kind": "VirtualMachineInstancetype", "name": INSTANCE_TYPE, "revisionName": revision_name(INSTANCE_TYPE)},
            "preference": {"kind": "VirtualMachinePreference", "name": PREFERENCE, "revisionName": revision_name(PREFERENCE)},
            "dataVolumeTemplates": [{
                "metadata": {"name": DESKTOP_DISK},
                "spec": {"source": {"http": {"url": IMAGE_URL}}, "storage": storage},
            }],
            "template": {"spec": {
                "domain": {"devices": {
                    "disks": [{"name": "root", "disk": {}}, {"name": "cloudinit", "disk": {}}],
                    "interfaces": [{"name": "default", "masquerade": {}}, {"name": "net1", "bridge": {}}],
                }},
                "networks": [{"name": "default", "pod": {}}, {"name": "net1", "multus": {"networkName": NETWORK}}],
                "volumes": [
                    {"name": "root", "dataVolume": {"name": DESKTOP_DISK}},
                    {"name": "cloudinit", "cloudInitNoCloud": {"secretRef": {"name": DESKTOP_CLOUD_INIT}}},
                ],
            }},
        },
    }));
    objects.extend([
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": APP, "namespace": ns, "labels": labels()},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": APP}},
                     "template": {"metadata": {"labels": {"app": APP}},
                                  "spec": {"containers": [{"name": APP, "image": "registry.example.com/frontend:1.4"}]}}},
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": APP, "namespace": ns, "labels": labels()},
            "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    ]);
    objects
}

fn owner(api_version: &str, kind: &str, object: &DynamicObject) -> Value {
    json!([{
        "apiVersion": api_version, "kind": kind, "name": object.name_any(),
        "uid": object.uid().unwrap_or_default(), "controller": true, "blockOwnerDeletion": true,
    }])
}

/// What KubeVirt and CDI did once `desktop` was created: the VM owns its `DataVolume` and the
/// `ControllerRevisions`, the `DataVolume` owns its claim and has Succeeded.
pub async fn own_desktop(client: &Client) -> anyhow::Result<()> {
    let params = PatchParams::default();
    let owned_by = |owner: Value| Patch::Merge(json!({"metadata": {"ownerReferences": owner}}));
    let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &vm_resource());
    let data_volumes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &data_volume_resource());
    let vm = vms.get(DESKTOP_VM).await?;
    let by_vm = owner("kubevirt.io/v1", "VirtualMachine", &vm);
    let dv = data_volumes
        .patch(DESKTOP_DISK, &params, &owned_by(by_vm.clone()))
        .await?;
    data_volumes
        .patch_status(
            DESKTOP_DISK,
            &params,
            &Patch::Merge(json!({"status": {"phase": "Succeeded", "progress": "100.0%", "claimName": DESKTOP_DISK}})),
        )
        .await?;
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), NAMESPACE)
        .patch(
            DESKTOP_DISK,
            &params,
            &owned_by(owner("cdi.kubevirt.io/v1beta1", "DataVolume", &dv)),
        )
        .await?;
    let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::namespaced(client.clone(), NAMESPACE);
    for of in [INSTANCE_TYPE, PREFERENCE] {
        revisions
            .patch(&revision_name(of), &params, &owned_by(by_vm.clone()))
            .await?;
    }
    Ok(())
}

/// What a restore of [`NAMESPACE`] has to bring back for `desktop` and the container app,
/// besides the VM and its disk: (kind, API resource, name).
pub fn desktop_companions() -> Vec<(&'static str, kube::api::ApiResource, String)> {
    use kube::api::{ApiResource, GroupVersionKind};
    let gvk = |group: &str, version: &str, kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
    };
    let network = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    );
    vec![
        (
            "Secret",
            gvk("", "v1", "Secret"),
            DESKTOP_CLOUD_INIT.to_owned(),
        ),
        (
            "VirtualMachineInstancetype",
            gvk(
                "instancetype.kubevirt.io",
                "v1beta1",
                "VirtualMachineInstancetype",
            ),
            INSTANCE_TYPE.to_owned(),
        ),
        (
            "VirtualMachinePreference",
            gvk(
                "instancetype.kubevirt.io",
                "v1beta1",
                "VirtualMachinePreference",
            ),
            PREFERENCE.to_owned(),
        ),
        (
            "ControllerRevision",
            gvk("apps", "v1", "ControllerRevision"),
            revision_name(INSTANCE_TYPE),
        ),
        (
            "ControllerRevision",
            gvk("apps", "v1", "ControllerRevision"),
            revision_name(PREFERENCE),
        ),
        ("NetworkAttachmentDefinition", network, NETWORK.to_owned()),
        (
            "Deployment",
            gvk("apps", "v1", "Deployment"),
            APP.to_owned(),
        ),
        ("Service", gvk("", "v1", "Service"), APP.to_owned()),
    ]
}

/// Every object of the workload, in creation order.
pub fn objects(primary: &SiteExport<'_>, scale_vms: usize) -> Vec<Value> {
    let ns = NAMESPACE;
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels()}}),
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "labels": labels()},
            "provisioner": NFS_CSI_DRIVER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "parameters": {"server": primary.server, "share": primary.base},
        }),
        in_tree_pv("drill-db-root", primary, "db-root"),
        claim(ns, "db-root", Some("drill-db-root")),
        csi_pv("drill-app-root", primary, "app-root"),
        claim(ns, "app-root", Some("drill-app-root")),
        claim(ns, "app-data", None),
        in_tree_pv("drill-web-root", primary, "web-root"),
        claim(ns, "web-root", Some("drill-web-root")),
        vm(ns, "db", Some(1), "Always", &["db-root"]),
        vm(ns, "app", Some(2), "Always", &["app-root", "app-data"]),
        vm(ns, "web", Some(3), "RerunOnFailure", &["web-root"]),
        vm(ns, "tools", None, "Halted", &[]),
    ];
    objects.extend(desktop(primary));
    let ns = INFRA_NAMESPACE;
    objects.extend([
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels()}}),
        in_tree_pv("drill-dns-root", primary, "dns-root"),
        claim(ns, "dns-root", Some("drill-dns-root")),
        vm(ns, "dns", Some(1), "Always", &["dns-root"]),
    ]);
    let ns = SCALE_NAMESPACE;
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels()}}));
    {
        for i in 1..=scale_vms {
            let name = format!("vm-{i:04}");
            let mut disks = Vec::new();
            for disk in ["root", "data"] {
                let claim_name = format!("{name}-{disk}");
                let volume = format!("drill-{claim_name}");
                objects.push(in_tree_pv(&volume, primary, &format!("scale/{claim_name}")));
                objects.push(claim(ns, &claim_name, Some(&volume)));
                disks.push(claim_name);
            }
            let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
            let order = i64::try_from(i % 4).unwrap_or_default() + 1;
            objects.push(vm(ns, &name, Some(order), "Always", &disks));
        }
    }
    objects
}

/// The VolumeSnapshot of `app-data`, created once its claim is bound.
pub fn snapshot() -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "app-data-snap", "namespace": NAMESPACE, "labels": labels()},
        "spec": {"source": {"persistentVolumeClaimName": "app-data"}},
    })
}

/// Creates `objects` with server-side apply.
pub async fn apply(client: &Client, objects: &[Value]) -> anyhow::Result<()> {
    let text = objects
        .iter()
        .map(|o| serde_json::to_string(o).expect("JSON"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    replicadr_lab::apply::apply_yaml(client, &text).await?;
    Ok(())
}
