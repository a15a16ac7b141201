//! Writes backups in Velero's object-store layout: the tarball (every item at its unversioned path
//! and again under `<version>-preferredversion/`, after `metadata/version`, as Velero 1.18 writes
//! them) and the gzipped resource list. Used by the unit and end-to-end tests, which play Velero,
//! and by the verification benchmark; streams to any writer, so 100,000 items need no memory.

use std::collections::BTreeMap;
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

/// Streams a backup tarball into `W`.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<GzEncoder<W>>,
    resource_list: BTreeMap<String, Vec<String>>,
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter").finish_non_exhaustive()
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts a tarball with Velero's `metadata/version` (format 1.1.0).
    pub fn new(out: W) -> io::Result<Self> {
        let mut writer = Self {
            tar: tar::Builder::new(GzEncoder::new(out, Compression::fast())),
            resource_list: BTreeMap::new(),
        };
        writer.append("metadata/version", b"1.1.0\n")?;
        Ok(writer)
    }

    fn append(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut header, path, bytes)
    }

    /// Adds an object under `group_resource` (`persistentvolumes`, `virtualmachines.kubevirt.io`):
    /// its name, namespace, apiVersion and kind are read from the object.
    pub fn add(&mut self, group_resource: &str, object: &Value) -> io::Result<()> {
        let str_at = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let name = str_at("/metadata/name");
        let namespace = str_at("/metadata/namespace");
        let api_version = str_at("/apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or(api_version);
        let scope = if namespace.is_empty() {
            "cluster".to_owned()
        } else {
            format!("namespaces/{namespace}")
        };
        let bytes = serde_json::to_vec(object).map_err(io::Error::other)?;
        self.append(
            &format!("resources/{group_resource}/{scope}/{name}.json"),
            &bytes,
        )?;
        self.append(
            &format!("resources/{group_resource}/{version}-preferredversion/{scope}/{name}.json"),
            &bytes,
        )?;
        let entry = if namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{namespace}/{name}")
        };
        self.resource_list
            .entry(format!("{api_version}/{}", str_at("/kind")))
            .or_default()
            .push(entry);
        Ok(())
    }

    /// Adds a raw tar entry (for tampering in tests).
    pub fn add_raw(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        self.append(path, bytes)
    }

    /// Finishes the tarball; returns the writer and the gzipped resource list.
    pub fn finish(self) -> io::Result<(W, Vec<u8>)> {
        let out = self.tar.into_inner()?.finish()?;
        let mut list = GzEncoder::new(Vec::new(), Compression::fast());
        serde_json::to_writer(&mut list, &self.resource_list).map_err(io::Error::other)?;
        Ok((out, list.finish()?))
    }
}

/// Gzips `bytes` (Velero's logs and JSON files are gzipped).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder
        .write_all(bytes)
        .expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

/// Builders of the objects a KubeVirt-on-NFS backup holds.
pub mod objects {
    use super::{Value, json};

    /// An in-tree NFS PV.
    pub fn nfs_pv(name: &str, server: &str, path: &str, reclaim: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": reclaim,
                "nfs": {"server": server, "path": path},
            },
        })
    }

    /// A PVC bound to `volume`.
    pub fn pvc(namespace: &str, name: &str, volume: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeName": volume,
                     "resources": {"requests": {"storage": "10Gi"}}},
            "status": {"phase": "Bound"},
        })
    }

    /// A replica PVC the backup plugin made from a VolumeSnapshot.
    pub fn replica_pvc(namespace: &str, name: &str, volume: &str, snapshot_uid: &str) -> Value {
        let mut pvc = pvc(namespace, name, volume);
        pvc["metadata"]["labels"] = json!({
            replicadr_core::wire::LABEL_MANAGED_BY: replicadr_core::wire::MANAGED_BY,
            replicadr_core::wire::LABEL_REPLICA_OF_SNAPSHOT_UID: snapshot_uid,
        });
        pvc
    }

    /// A VolumeSnapshot.
    pub fn volume_snapshot(namespace: &str, name: &str, uid: &str, source_pvc: &str) -> Value {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"source": {"persistentVolumeClaimName": source_pvc}},
        })
    }

    /// A VM whose disks are the given PVCs.
    pub fn vm(namespace: &str, name: &str, claims: &[&str]) -> Value {
        let volumes: Vec<Value> = claims
            .iter()
            .enumerate()
            .map(|(i, claim)| {
                json!({"name": format!("disk{i}"), "persistentVolumeClaim": {"claimName": claim}})
            })
            .collect();
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}, "volumes": volumes}}},
        })
    }

    /// A CDI `DataVolume` in `phase`, importing from an HTTP URL; CDI names its claim after it.
    pub fn data_volume(namespace: &str, name: &str, phase: &str) -> Value {
        json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-dv-{name}")},
            "spec": {"source": {"http": {"url": "https://images.example.com/disk.qcow2"}},
                     "storage": {"resources": {"requests": {"storage": "10Gi"}}}},
            "status": {"phase": phase},
        })
    }

    /// A ConfigMap with `size` bytes of data: filler for large backups.
    pub fn config_map(namespace: &str, name: &str, size: usize) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app": "filler"}, "uid": format!("uid-{name}")},
            "data": {"payload": "x".repeat(size)},
        })
    }
}

/// [`healthy_vm_objects`] with CDI's shapes added: `db-root` made by a `Succeeded` `DataVolume`
/// (its claim owned by it, import complete, which CDI adopts), and `DataVolume` `scratch`, still
/// importing, with its claim (import annotations, pod phase `Running`) on its own PV.
pub fn data_volume_objects() -> Vec<(&'static str, Value)> {
    use objects::{data_volume, nfs_pv, pvc};
    let cdi_claim = |name: &str, volume: &str, pod_phase: &str| {
        let mut claim = pvc("vms", name, volume);
        claim["metadata"]["annotations"] = json!({
            "cdi.kubevirt.io/storage.import.endpoint": "https://images.example.com/disk.qcow2",
            "cdi.kubevirt.io/storage.pod.phase": pod_phase,
        });
        claim["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": name,
            "uid": format!("uid-dv-{name}"), "controller": true}]);
        claim
    };
    let mut objects: Vec<(&'static str, Value)> = healthy_vm_objects()
        .into_iter()
        .filter(|(_, o)| o["metadata"]["name"] != "db-root")
        .collect();
    objects.extend([
        (
            "persistentvolumeclaims",
            cdi_claim("db-root", "pv-root", "Succeeded"),
        ),
        (
            "datavolumes.cdi.kubevirt.io",
            data_volume("vms", "db-root", "Succeeded"),
        ),
        (
            "persistentvolumeclaims",
            cdi_claim("scratch", "pv-scratch", "Running"),
        ),
        (
            "persistentvolumes",
            nfs_pv(
                "pv-scratch",
                "nfs-a.example.com",
                "/exports/vms/scratch",
                "Retain",
            ),
        ),
        (
            "datavolumes.cdi.kubevirt.io",
            data_volume("vms", "scratch", "ImportInProgress"),
        ),
    ]);
    objects
}

/// A consistent small backup of one VM on NFS with a snapshot replica, in the `vms` namespace,
/// whose exports the [`SITE_MAP`] covers.
pub fn healthy_vm_backup() -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut writer = ArchiveWriter::new(Vec::new())?;
    for (group_resource, object) in healthy_vm_objects() {
        writer.add(group_resource, &object)?;
    }
    writer.finish()
}

/// The objects of [`healthy_vm_backup`], by group-resource, for tests to drop or change one.
pub fn healthy_vm_objects() -> Vec<(&'static str, Value)> {
    use objects::{nfs_pv, pvc, replica_pvc, vm, volume_snapshot};
    vec![
        (
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vms"}}),
        ),
        (
            "virtualmachines.kubevirt.io",
            vm("vms", "db", &["db-root", "db-data"]),
        ),
        ("persistentvolumeclaims", pvc("vms", "db-root", "pv-root")),
        ("persistentvolumeclaims", pvc("vms", "db-data", "pv-data")),
        (
            "persistentvolumes",
            nfs_pv(
                "pv-root",
                "nfs-a.example.com",
                "/exports/vms/root",
                "Retain",
            ),
        ),
        (
            "persistentvolumes",
            nfs_pv(
                "pv-data",
                "nfs-a.example.com",
                "/exports/vms/data",
                "Retain",
            ),
        ),
        (
            "volumesnapshots.snapshot.storage.k8s.io",
            volume_snapshot("vms", "db-data-snap", "snap-uid-1", "db-data"),
        ),
        (
            "persistentvolumeclaims",
            replica_pvc("vms", "db-data-snap-replica", "pv-replica", "snap-uid-1"),
        ),
        (
            "persistentvolumes",
            nfs_pv(
                "pv-replica",
                "nfs-a.example.com",
                "/exports/vms/replica",
                "Retain",
            ),
        ),
    ]
}

/// A two-site map covering the exports of [`healthy_vm_backup`].
pub const SITE_MAP: &str = "sites: [primary, dr]
exports:
  - name: vm-disks
    primary: {server: nfs-a.example.com, path: /exports/vms}
    dr: {server: nfs-b.example.com, path: /replica/vms}
";
