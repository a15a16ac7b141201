//! The drill's sample workload at the primary site: VMs on NFS disks of every kind a failover
//! has to handle, plus any number of further VMs for scale runs.
//!
//! Namespace `drill-vms`:
//! - `db` (start-order 1): an in-tree NFS PV, Retain;
//! - `app` (start-order 2): an NFS CSI PV, Retain, and a disk provisioned from the drill's
//!   StorageClass (reclaim policy Delete), with a VolumeSnapshot of it;
//! - `web` (start-order 3): an in-tree NFS PV, Retain;
//! - `tools`: halted, stays halted.
//!
//! Namespace `drill-scale` (always there, empty unless `--vms N`): `vm-0001` … each with two in-tree NFS disks, start orders
//! 1–4 in turn.
//!
//! Namespace `drill-infra`, backed up by a second policy: `dns` (start-order 1), an in-tree NFS
//! PV, Retain.

use kube::Client;
use serde_json::{Value, json};

use crate::controllers::{NFS_CSI_DRIVER, STORAGE_CLASS};
use replicadr_core::wire::START_ORDER;

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
