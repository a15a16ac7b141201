//! The Kubernetes objects this action reads and writes, as typed values: the VolumeSnapshot and its
//! source PVC (parsed leniently: only the fields used, everything else ignored), and the replica
//! PVC it creates, with the labels and annotations that make it recognisably ours.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::naming::{OperationId, is_label_value};
pub use crate::actions::PERSISTENT_VOLUME_CLAIMS;
use crate::actions::{ItemError, ResourceId, ResourceType};

/// `snapshot.storage.k8s.io/v1` VolumeSnapshots.
pub const VOLUME_SNAPSHOTS: ResourceType = ResourceType {
    group: "snapshot.storage.k8s.io",
    version: "v1",
    kind: "VolumeSnapshot",
    plural: "volumesnapshots",
    namespaced: true,
};
/// `storage.k8s.io/v1` StorageClasses.
pub const STORAGE_CLASSES: ResourceType = ResourceType {
    group: "storage.k8s.io",
    version: "v1",
    kind: "StorageClass",
    plural: "storageclasses",
    namespaced: false,
};

pub use replicadr_core::wire::{
    ANNOTATION_REPLICA_OF_SNAPSHOT as ANNOTATION_SNAPSHOT, ANNOTATION_SOURCE_DATA_VOLUME,
    ANNOTATION_SOURCE_PVC, ANNOTATION_SOURCE_STORAGE_CLASS, ANNOTATION_VM_SNAPSHOT_CONTENT,
    LABEL_MANAGED_BY, LABEL_REPLICA_OF_SNAPSHOT_UID as LABEL_SNAPSHOT_UID, LABEL_VM, MANAGED_BY,
};
// KubeVirt labels the VolumeSnapshots of a `VirtualMachineSnapshot` with its VM.
use replicadr_core::wire::{
    LABEL_KUBEVIRT_SOURCE_VM_NAME as KUBEVIRT_SOURCE_VM_NAME,
    LABEL_KUBEVIRT_SOURCE_VM_NAMESPACE as KUBEVIRT_SOURCE_VM_NAMESPACE,
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    creation_timestamp: Option<String>,
    labels: BTreeMap<String, String>,
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OwnerReference {
    kind: String,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawSnapshot {
    kind: Option<String>,
    metadata: Meta,
    spec: Option<RawSnapshotSpec>,
    status: Option<RawSnapshotStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawSnapshotSpec {
    source: Option<RawSnapshotSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawSnapshotSource {
    persistent_volume_claim_name: Option<String>,
    volume_snapshot_content_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawSnapshotStatus {
    ready_to_use: Option<bool>,
    restore_size: Option<Value>,
    error: Option<RawSnapshotError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSnapshotError {
    message: Option<String>,
}

/// Where a VolumeSnapshot's data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSource {
    /// Dynamically taken from this PVC in the snapshot's namespace.
    Pvc(String),
    /// Pre-provisioned: bound to this existing VolumeSnapshotContent, no source PVC.
    PreProvisioned(String),
}

/// The VolumeSnapshot fields this action uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub source: SnapshotSource,
    pub ready: bool,
    /// `status.error.message`, while the snapshot controller retries.
    pub error: Option<String>,
    /// `status.restoreSize`, the minimum size of a volume restored from it.
    pub restore_size: Option<String>,
    /// `metadata.creationTimestamp`, seconds since the epoch.
    pub created: Option<i64>,
    /// The KubeVirt VirtualMachine it belongs to, from KubeVirt's labels.
    pub vm: Option<String>,
    /// The KubeVirt `VirtualMachineSnapshotContent` owning it.
    pub vm_snapshot_content: Option<String>,
    /// Created by Velero's own CSI plugin for this backup (temporary; deleted at finalize).
    pub velero_temporary: bool,
}

impl Snapshot {
    /// Reads a VolumeSnapshot item; the error says what is missing or malformed.
    pub fn from_item(item: &Value) -> Result<Self, ItemError> {
        let what = crate::actions::describe(item);
        let raw: RawSnapshot = serde_json::from_value(item.clone())
            .map_err(|e| ItemError(format!("{what} is not a valid VolumeSnapshot: {e}")))?;
        if let Some(kind) = raw.kind.as_deref().filter(|k| *k != "VolumeSnapshot") {
            return Err(ItemError(format!(
                "{what}: {} only handles VolumeSnapshots, got kind {kind:?}",
                super::NAME
            )));
        }
        let required = |value: Option<String>, field: &str| {
            value.filter(|v| !v.is_empty()).ok_or_else(|| {
                ItemError(format!(
                    "{what} has no {field}; a VolumeSnapshot read from the API always has one"
                ))
            })
        };
        let namespace = required(raw.metadata.namespace, "metadata.namespace")?;
        let name = required(raw.metadata.name, "metadata.name")?;
        let uid = required(raw.metadata.uid, "metadata.uid")?;
        let source = raw.spec.and_then(|s| s.source).unwrap_or_default();
        let source = match (
            source
                .persistent_volume_claim_name
                .filter(|s| !s.is_empty()),
            source
                .volume_snapshot_content_name
                .filter(|s| !s.is_empty()),
        ) {
            (Some(pvc), None) => SnapshotSource::Pvc(pvc),
            (None, Some(content)) => SnapshotSource::PreProvisioned(content),
            (pvc, content) => {
                return Err(ItemError(format!(
                    "{what}: spec.source must name exactly one of persistentVolumeClaimName and volumeSnapshotContentName, found {}",
                    match (pvc, content) {
                        (Some(p), Some(c)) => format!("both ({p:?} and {c:?})"),
                        _ => "neither".to_owned(),
                    }
                )));
            }
        };
        let status = raw.status.unwrap_or_default();
        let labels = &raw.metadata.labels;
        let vm = labels
            .get(KUBEVIRT_SOURCE_VM_NAME)
            .filter(|_| {
                labels
                    .get(KUBEVIRT_SOURCE_VM_NAMESPACE)
                    .is_none_or(|ns| *ns == namespace)
            })
            .cloned();
        let vm_snapshot_content = raw
            .metadata
            .owner_references
            .iter()
            .find(|o| o.kind == "VirtualMachineSnapshotContent")
            .map(|o| o.name.clone());
        Ok(Self {
            velero_temporary: replicadr_core::invariants::is_velero_temporary(item),
            namespace,
            name,
            uid,
            source,
            ready: status.ready_to_use == Some(true),
            error: status.error.and_then(|e| e.message),
            restore_size: status.restore_size.as_ref().and_then(quantity),
            created: raw
                .metadata
                .creation_timestamp
                .as_deref()
                .and_then(unix_seconds),
            vm,
            vm_snapshot_content,
        })
    }

    /// The operation tracking this snapshot's replica.
    pub fn operation_id(&self) -> OperationId {
        OperationId {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// `VolumeSnapshot <ns>/<name>`, for messages.
    pub fn describe(&self) -> String {
        format!("VolumeSnapshot {}/{}", self.namespace, self.name)
    }
}

/// A Kubernetes quantity as JSON carries it: a string, or (leniently) a number.
fn quantity(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() && s != "0" => Some(s.clone()),
        Value::Number(n) if n.as_f64().is_some_and(|n| n > 0.0) => Some(n.to_string()),
        _ => None,
    }
}

/// An RFC 3339 timestamp as seconds since the epoch.
pub fn unix_seconds(timestamp: &str) -> Option<i64> {
    timestamp
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(k8s_openapi::jiff::Timestamp::as_second)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawPvc {
    metadata: Meta,
    spec: RawPvcSpec,
    status: RawPvcStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawPvcSpec {
    access_modes: Vec<String>,
    volume_mode: Option<String>,
    storage_class_name: Option<String>,
    volume_name: Option<String>,
    resources: RawResources,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawResources {
    requests: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPvcStatus {
    phase: Option<String>,
}

fn read_pvc(object: &Value) -> Result<RawPvc, String> {
    serde_json::from_value(object.clone()).map_err(|e| {
        format!(
            "{} is not a valid PersistentVolumeClaim: {e}",
            crate::actions::describe(object)
        )
    })
}

/// The snapshot's source PVC: what the replica copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePvc {
    pub name: String,
    pub access_modes: Vec<String>,
    pub volume_mode: Option<String>,
    /// `None`: the cluster's default class; `Some("")`: explicitly no class.
    pub storage_class: Option<String>,
    pub requested_storage: Option<String>,
    /// The KubeVirt VirtualMachine owning it directly.
    pub vm_owner: Option<String>,
    /// The CDI `DataVolume` owning it.
    pub data_volume_owner: Option<String>,
}

impl SourcePvc {
    /// Reads a PVC object from the API.
    pub fn read(object: &Value) -> Result<Self, String> {
        let raw = read_pvc(object)?;
        let owner = |kind: &str| {
            raw.metadata
                .owner_references
                .iter()
                .find(|o| o.kind == kind)
                .map(|o| o.name.clone())
        };
        Ok(Self {
            vm_owner: owner("VirtualMachine"),
            data_volume_owner: owner("DataVolume"),
            name: raw.metadata.name.unwrap_or_default(),
            access_modes: raw.spec.access_modes,
            volume_mode: raw.spec.volume_mode,
            storage_class: raw.spec.storage_class_name,
            requested_storage: raw
                .spec
                .resources
                .requests
                .get("storage")
                .and_then(quantity),
        })
    }
}

/// A PVC found under the replica's name, ours or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPvc {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub volume_name: Option<String>,
    pub storage_class: Option<String>,
    pub created: Option<i64>,
    managed_by: Option<String>,
    snapshot_uid: Option<String>,
}

impl ReplicaPvc {
    /// Reads a PVC object from the API.
    pub fn read(object: &Value) -> Result<Self, String> {
        let raw = read_pvc(object)?;
        let labels = raw.metadata.labels;
        Ok(Self {
            namespace: raw.metadata.namespace.unwrap_or_default(),
            name: raw.metadata.name.unwrap_or_default(),
            phase: raw.status.phase.unwrap_or_else(|| "Pending".to_owned()),
            volume_name: raw.spec.volume_name.filter(|v| !v.is_empty()),
            storage_class: raw.spec.storage_class_name,
            created: raw
                .metadata
                .creation_timestamp
                .as_deref()
                .and_then(unix_seconds),
            managed_by: labels.get(LABEL_MANAGED_BY).cloned(),
            snapshot_uid: labels.get(LABEL_SNAPSHOT_UID).cloned(),
        })
    }

    /// Why this PVC is not the replica of `id`'s snapshot, if it is not.
    pub fn not_ours(&self, id: &OperationId) -> Option<String> {
        if self.managed_by.as_deref() != Some(MANAGED_BY) {
            return Some(format!("it has no label {LABEL_MANAGED_BY}={MANAGED_BY}"));
        }
        match self.snapshot_uid.as_deref() {
            Some(uid) if uid == id.uid => None,
            Some(uid) => Some(format!(
                "it is the replica of another VolumeSnapshot (uid {uid})"
            )),
            None => Some(format!("it has no label {LABEL_SNAPSHOT_UID}")),
        }
    }

    /// Whether the claim is bound to a volume.
    pub fn is_bound(&self) -> bool {
        self.phase == replicadr_core::wire::PHASE_BOUND
    }

    /// `PersistentVolumeClaim <ns>/<name>`, for messages.
    pub fn describe(&self) -> String {
        format!("PersistentVolumeClaim {}/{}", self.namespace, self.name)
    }

    /// The claim as a Velero resource identifier.
    pub fn resource_id(&self) -> ResourceId {
        pvc_resource_id(&self.namespace, &self.name)
    }

    /// The bound volume as a Velero resource identifier.
    pub fn volume_resource_id(&self) -> Option<ResourceId> {
        self.volume_name.as_ref().map(|name| ResourceId {
            group: String::new(),
            resource: "persistentvolumes".into(),
            namespace: String::new(),
            name: name.clone(),
        })
    }
}

/// A PVC as a Velero resource identifier.
pub fn pvc_resource_id(namespace: &str, name: &str) -> ResourceId {
    ResourceId {
        group: String::new(),
        resource: "persistentvolumeclaims".into(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The replica PVC to create for `snapshot`, copying `source` with `storage_class`.
pub fn replica_object(
    snapshot: &Snapshot,
    source: &SourcePvc,
    storage_class: Option<&str>,
    name: &str,
) -> Value {
    let mut labels = Map::new();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_SNAPSHOT_UID.into(), snapshot.uid.clone().into());
    let mut annotations = Map::new();
    annotations.insert(ANNOTATION_SNAPSHOT.into(), snapshot.name.clone().into());
    annotations.insert(LABEL_SNAPSHOT_UID.into(), snapshot.uid.clone().into());
    annotations.insert(ANNOTATION_SOURCE_PVC.into(), source.name.clone().into());
    if let Some(class) = &source.storage_class
        && Some(class.as_str()) != storage_class
    {
        annotations.insert(ANNOTATION_SOURCE_STORAGE_CLASS.into(), class.clone().into());
    }
    if let Some(vm) = snapshot.vm.as_ref().or(source.vm_owner.as_ref()) {
        annotations.insert(LABEL_VM.into(), vm.clone().into());
        if is_label_value(vm) {
            labels.insert(LABEL_VM.into(), vm.clone().into());
        }
    }
    if let Some(content) = &snapshot.vm_snapshot_content {
        annotations.insert(
            ANNOTATION_VM_SNAPSHOT_CONTENT.into(),
            content.clone().into(),
        );
    }
    if let Some(data_volume) = &source.data_volume_owner {
        annotations.insert(
            ANNOTATION_SOURCE_DATA_VOLUME.into(),
            data_volume.clone().into(),
        );
    }
    let size = snapshot
        .restore_size
        .as_ref()
        .or(source.requested_storage.as_ref());
    let mut spec = Map::new();
    spec.insert("accessModes".into(), json!(source.access_modes));
    if let Some(mode) = &source.volume_mode {
        spec.insert("volumeMode".into(), mode.clone().into());
    }
    if let Some(class) = storage_class {
        spec.insert("storageClassName".into(), class.into());
    }
    spec.insert("resources".into(), json!({"requests": {"storage": size}}));
    spec.insert(
        "dataSource".into(),
        json!({"apiGroup": VOLUME_SNAPSHOTS.group, "kind": VOLUME_SNAPSHOTS.kind, "name": snapshot.name}),
    );
    // Deliberately no ownerReference to the snapshot: deleting a VM snapshot must not garbage
    // collect its replica, which is the DR copy.
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": snapshot.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    })
}
