//! The Velero objects the scheduler reads and writes, as JSON: the metadata-only `Backup` it
//! creates for a policy, the phases it watches, and the `BackupStorageLocation` verification reads
//! from. Pure: no cluster access.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::policy::ValidPolicy;

// The wire names of Backups, defined once in `replicadr_core::wire`.
pub use replicadr_core::wire::{
    ANNOTATION_ATTEMPT, ANNOTATION_SLOT, ANNOTATION_VERIFICATION_ATTEMPTS,
    ANNOTATION_VERIFICATION_REASON, ANNOTATION_VERIFIED, ANNOTATION_VERIFIED_AT,
    LABEL_KUBEVIRT_METADATA_BACKUP as LABEL_METADATA_BACKUP, LABEL_MANAGED_BY, LABEL_POLICY,
    LABEL_SITE, LABEL_VELERO_BACKUP_NAME as LABEL_BACKUP_NAME,
    LABEL_VELERO_RESTORE_NAME as LABEL_RESTORE_NAME,
    LABEL_VELERO_SCHEDULE_NAME as LABEL_SCHEDULE_NAME, MANAGED_BY, VELERO_API_VERSION,
};
use replicadr_core::wire::{
    PHASE_COMPLETED, PHASE_DELETING, PHASE_FAILED, PHASE_FAILED_VALIDATION, PHASE_PARTIALLY_FAILED,
    POINTER_STATUS_PHASE,
};

/// `Backup` as a dynamic resource.
pub fn backup_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("velero.io", "v1", "Backup"))
}

/// `Restore` as a dynamic resource.
pub fn restore_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("velero.io", "v1", "Restore"))
}

/// `BackupStorageLocation` as a dynamic resource.
pub fn storage_location_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "velero.io",
        "v1",
        "BackupStorageLocation",
    ))
}

/// `Schedule` as a dynamic resource: a user's Velero Schedule a policy follows.
pub fn schedule_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("velero.io", "v1", "Schedule"))
}

/// The Backup spec fields that keep a backup metadata-only, each set to `false`: no volume
/// snapshots, no file-system backup, no data movement. Unset is not enough: Velero then takes the
/// server's defaults, which an OADP `DataProtectionApplication` may turn on.
pub const METADATA_ONLY: [&str; 3] = [
    "snapshotVolumes",
    "defaultVolumesToFsBackup",
    "snapshotMoveData",
];

/// `PodVolumeBackup` as a dynamic resource.
pub fn pod_volume_backup_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("velero.io", "v1", "PodVolumeBackup"))
}

/// `DataUpload` as a dynamic resource (`velero.io/v2alpha1`).
pub fn data_upload_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "velero.io",
        "v2alpha1",
        "DataUpload",
    ))
}

/// Where a backup is in Velero's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseClass {
    /// Not finished (New, Queued, `ReadyToStart`, `InProgress`, `WaitingForPluginOperations`*,
    /// Finalizing*, or no phase yet).
    Running,
    /// Completed.
    Succeeded,
    /// `PartiallyFailed`, Failed, `FailedValidation`.
    Failed,
    /// Deleting: going away.
    Deleting,
}

/// Classifies a `status.phase`.
pub fn classify_phase(phase: Option<&str>) -> PhaseClass {
    match phase.unwrap_or_default() {
        PHASE_COMPLETED => PhaseClass::Succeeded,
        PHASE_PARTIALLY_FAILED | PHASE_FAILED | PHASE_FAILED_VALIDATION => PhaseClass::Failed,
        PHASE_DELETING => PhaseClass::Deleting,
        _ => PhaseClass::Running,
    }
}

/// What a policy's backup is for: a schedule slot (with retry number) or a manual run.
#[derive(Debug, Clone)]
pub struct BackupRequest<'a> {
    pub policy: &'a ValidPolicy,
    /// The site creating the backup (its `localSite`): the value of [`LABEL_SITE`].
    pub site: &'a str,
    pub name: String,
    /// The slot, RFC 3339; absent for manual backups.
    pub slot: Option<String>,
    pub attempt: u32,
}

/// The metadata-only Velero Backup for a policy: no snapshots, no file-system backup, no data
/// movement. `includeClusterResources` stays unset: Velero then takes the cluster-scoped objects
/// the namespaced ones need (each PVC's PV), and not every CRD and `ClusterRole` of the cluster,
/// which a restore at the other site would only trip over.
pub fn build_backup(request: &BackupRequest<'_>) -> DynamicObject {
    let policy = request.policy;
    let template = &policy.template;
    let mut spec = json!({});
    let fields = spec.as_object_mut().expect("built as an object");
    for field in METADATA_ONLY {
        fields.insert(field.into(), json!(false));
    }
    if !template.included_namespaces.is_empty() {
        fields.insert(
            "includedNamespaces".into(),
            json!(template.included_namespaces),
        );
    }
    if let Some(selector) = &template.label_selector {
        fields.insert(
            "labelSelector".into(),
            serde_json::to_value(selector).expect("a selector serialises"),
        );
    }
    if let Some(ttl) = policy.ttl {
        fields.insert("ttl".into(), json!(ttl.to_string()));
    }
    if let Some(location) = &template.storage_location {
        fields.insert("storageLocation".into(), json!(location));
    }
    let mut labels = BTreeMap::from([
        (LABEL_SCHEDULE_NAME.to_owned(), policy.name.clone()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    labels.extend(
        policy_backup_labels(&policy.name, request.site)
            .map(|(key, value)| (key.to_owned(), value)),
    );
    let mut annotations =
        BTreeMap::from([(ANNOTATION_ATTEMPT.to_owned(), request.attempt.to_string())]);
    if let Some(slot) = &request.slot {
        annotations.insert(ANNOTATION_SLOT.to_owned(), slot.clone());
    }
    let mut backup = DynamicObject::new(&request.name, &backup_resource())
        .within(&policy.namespace)
        .data(json!({ "spec": spec }));
    backup.metadata.labels = Some(labels);
    backup.metadata.annotations = Some(annotations);
    backup
}

/// The labels every backup of a policy carries, whoever makes it (the scheduler, or a Velero
/// Schedule the policy follows): its policy and site, which failover chooses backups by, and the
/// label that lets kubevirt-velero-plugin take a running VM without its disks' data.
pub fn policy_backup_labels(policy: &str, site: &str) -> [(&'static str, String); 3] {
    [
        (LABEL_METADATA_BACKUP, "true".to_owned()),
        (
            LABEL_POLICY,
            replicadr_core::names::label_value(policy).into_owned(),
        ),
        (LABEL_SITE, site.to_owned()),
    ]
}

/// Whether a Backup with `labels` is one of `policy`'s: labelled with it, and made by the
/// scheduler (`app.kubernetes.io/managed-by`) or, for a policy that follows the Velero Schedule
/// `follows`, by that Schedule (`velero.io/schedule-name`). The scheduler follows only these, and
/// a restore chooses only these where the policy exists.
pub fn is_policy_backup(
    labels: &BTreeMap<String, String>,
    policy: &str,
    follows: Option<&str>,
) -> bool {
    let label = |key: &str| labels.get(key).map(String::as_str);
    if label(LABEL_POLICY) != Some(replicadr_core::names::label_value(policy).as_ref()) {
        return false;
    }
    match follows {
        None => label(LABEL_MANAGED_BY) == Some(MANAGED_BY),
        Some(schedule) => {
            label(LABEL_SCHEDULE_NAME) == Some(schedule)
                && label(LABEL_MANAGED_BY) != Some(MANAGED_BY)
        }
    }
}

/// The fields of a Backup the scheduler and verifier read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupView {
    pub name: String,
    pub namespace: String,
    pub phase: Option<String>,
    pub class: PhaseClass,
    pub policy: Option<String>,
    /// The [`LABEL_SITE`] label: the site whose scheduler created the backup.
    pub site: Option<String>,
    pub slot: Option<String>,
    pub attempt: u32,
    pub created: Option<jiff::Timestamp>,
    pub started: Option<jiff::Timestamp>,
    pub completed: Option<jiff::Timestamp>,
    pub storage_location: Option<String>,
    pub included_namespaces: Vec<String>,
    pub label_selector: Option<Value>,
    /// `Some(true|false)` once verified.
    pub verified: Option<bool>,
    pub verification_reason: Option<String>,
    /// When the newest verification result was written.
    pub verified_at: Option<jiff::Timestamp>,
    pub verification_attempts: u32,
    pub failure_reason: Option<String>,
}

impl BackupView {
    /// Reads a Backup object.
    pub fn from_object(backup: &DynamicObject) -> Self {
        let data = &backup.data;
        let str_at = |pointer: &str| data.pointer(pointer).and_then(Value::as_str);
        let time_at = |pointer: &str| str_at(pointer).and_then(|t| t.parse().ok());
        let labels = backup.metadata.labels.as_ref();
        let annotations = backup.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        let phase = str_at(POINTER_STATUS_PHASE).map(str::to_owned);
        Self {
            name: backup.metadata.name.clone().unwrap_or_default(),
            namespace: backup.metadata.namespace.clone().unwrap_or_default(),
            class: classify_phase(phase.as_deref()),
            phase,
            policy: labels.and_then(|l| l.get(LABEL_POLICY)).cloned(),
            site: labels.and_then(|l| l.get(LABEL_SITE)).cloned(),
            slot: annotation(ANNOTATION_SLOT),
            attempt: annotation(ANNOTATION_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or_default(),
            created: backup.metadata.creation_timestamp.as_ref().map(|t| t.0),
            started: time_at("/status/startTimestamp"),
            completed: time_at("/status/completionTimestamp"),
            storage_location: str_at("/spec/storageLocation")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            included_namespaces: data
                .pointer("/spec/includedNamespaces")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter(|n| *n != "*")
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            label_selector: data.pointer("/spec/labelSelector").cloned(),
            verified: annotation(ANNOTATION_VERIFIED).map(|v| v == "true"),
            verification_reason: annotation(ANNOTATION_VERIFICATION_REASON),
            verified_at: annotation(ANNOTATION_VERIFIED_AT).and_then(|t| t.parse().ok()),
            verification_attempts: annotation(ANNOTATION_VERIFICATION_ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or_default(),
            failure_reason: str_at("/status/failureReason").map(str::to_owned),
        }
    }

    /// The recovery point a backup offers: when Velero started reading the cluster.
    pub fn recovery_point(&self) -> Option<jiff::Timestamp> {
        self.started.or(self.created)
    }

    /// The label selector in query syntax, if any.
    pub fn label_query(&self) -> Result<String, String> {
        match &self.label_selector {
            None | Some(Value::Null) => Ok(String::new()),
            Some(value) => serde_json::from_value::<crate::policy::LabelSelector>(value.clone())
                .map_err(|e| format!("spec.labelSelector: {e}"))?
                .to_query(),
        }
    }
}

/// The parts of a BackupStorageLocation that say how to reach its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageLocation {
    pub name: String,
    pub provider: String,
    pub bucket: String,
    /// Without leading or trailing slashes; empty for the bucket root.
    pub prefix: String,
    pub config: BTreeMap<String, String>,
    /// `spec.credential`: a Secret key in the Velero namespace.
    pub credential: Option<SecretKeyRef>,
    /// The CA bundle that object storage's TLS certificate must chain to, besides the system's.
    pub ca_cert: Option<CaCert>,
}

/// Where a BackupStorageLocation keeps the CA bundle of its object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaCert {
    /// `spec.objectStorage.caCert`: PEM, inline (base64 in the object).
    Inline(Vec<u8>),
    /// `spec.objectStorage.caCertRef`: a Secret key in the Velero namespace (Velero >= 1.17).
    Secret(SecretKeyRef),
}

/// A key of a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

impl StorageLocation {
    /// Reads a BackupStorageLocation object.
    pub fn from_object(location: &DynamicObject) -> Result<Self, String> {
        let data = &location.data;
        let str_at = |pointer: &str| {
            data.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let name = location.metadata.name.clone().unwrap_or_default();
        let bucket = str_at("/spec/objectStorage/bucket");
        if bucket.is_empty() {
            return Err(format!(
                "BackupStorageLocation {name} has no spec.objectStorage.bucket"
            ));
        }
        let config = data
            .pointer("/spec/config")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let credential = data
            .pointer("/spec/credential")
            .and_then(|c| {
                Some(SecretKeyRef {
                    name: c.get("name")?.as_str()?.to_owned(),
                    key: c.get("key")?.as_str()?.to_owned(),
                })
            })
            .filter(|c| !c.name.is_empty());
        let inline_ca = match data.pointer("/spec/objectStorage/caCert") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value::<k8s_openapi::ByteString>(value.clone())
                    .map_err(|e| {
                        format!(
                            "BackupStorageLocation {name} spec.objectStorage.caCert is not base64-encoded PEM: {e}"
                        )
                    })?
                    .0,
            ),
        };
        let ca_ref = data
            .pointer("/spec/objectStorage/caCertRef")
            .filter(|r| !r.is_null())
            .map(|r| SecretKeyRef {
                name: r["name"].as_str().unwrap_or_default().to_owned(),
                key: r["key"].as_str().unwrap_or_default().to_owned(),
            });
        let ca_cert = match (inline_ca, ca_ref) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "BackupStorageLocation {name} sets both spec.objectStorage.caCert and caCertRef: set one (Velero refuses both too)"
                ));
            }
            (None, Some(reference)) if reference.name.is_empty() || reference.key.is_empty() => {
                return Err(format!(
                    "BackupStorageLocation {name} spec.objectStorage.caCertRef needs both name and key, got name {:?} key {:?}",
                    reference.name, reference.key
                ));
            }
            (Some(pem), None) => Some(CaCert::Inline(pem)),
            (None, Some(reference)) => Some(CaCert::Secret(reference)),
            (None, None) => None,
        };
        Ok(Self {
            provider: str_at("/spec/provider"),
            prefix: str_at("/spec/objectStorage/prefix")
                .trim_matches('/')
                .to_owned(),
            name,
            bucket,
            config,
            credential,
            ca_cert,
        })
    }

    /// The object key of `file` in a backup's directory.
    pub fn backup_key(&self, backup: &str, file: &str) -> String {
        self.key("backups", backup, file)
    }

    /// The object key of `file` in a restore's directory.
    pub fn restore_key(&self, restore: &str, file: &str) -> String {
        self.key("restores", restore, file)
    }

    /// The object key of `file` in the location's `metadata/` directory, the one top-level
    /// directory besides Velero's data directories that its store validation accepts and that
    /// holds no backup: files kept anywhere else under the prefix make the location
    /// `Unavailable` ("Backup store contains invalid top-level directories").
    pub fn metadata_key(&self, file: &str) -> String {
        if self.prefix.is_empty() {
            format!("metadata/{file}")
        } else {
            format!("{}/metadata/{file}", self.prefix)
        }
    }

    fn key(&self, kind: &str, name: &str, file: &str) -> String {
        if self.prefix.is_empty() {
            format!("{kind}/{name}/{file}")
        } else {
            format!("{}/{kind}/{name}/{file}", self.prefix)
        }
    }

    /// Whether the BSL is Velero's default (`spec.default`).
    pub fn is_default(location: &DynamicObject) -> bool {
        location
            .data
            .pointer("/spec/default")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{BackupPolicy, ValidPolicy};

    fn valid_policy() -> ValidPolicy {
        let policy: BackupPolicy = serde_json::from_value(json!({
            "apiVersion": "replicadr.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "vms", "namespace": "velero", "uid": "u1"},
            "spec": {
                "schedule": "@hourly",
                "template": {
                    "includedNamespaces": ["prod"],
                    "labelSelector": {"matchLabels": {"dr": "yes"}},
                    "ttl": "72h",
                    "storageLocation": "primary",
                },
            },
        }))
        .expect("policy");
        ValidPolicy::from_policy(&policy).expect("valid")
    }

    #[test]
    fn backups_are_metadata_only_and_labelled_for_velero_and_kubevirt() {
        let policy = valid_policy();
        let backup = build_backup(&BackupRequest {
            policy: &policy,
            site: "primary",
            name: "vms-202601010200".into(),
            slot: Some("2026-01-01T02:00:00Z".into()),
            attempt: 0,
        });
        let value = serde_json::to_value(&backup).expect("json");
        assert_eq!(value["apiVersion"], "velero.io/v1");
        assert_eq!(value["kind"], "Backup");
        assert_eq!(value["metadata"]["namespace"], "velero");
        let spec = &value["spec"];
        assert_eq!(spec["snapshotVolumes"], false);
        assert_eq!(spec["defaultVolumesToFsBackup"], false);
        assert_eq!(spec["snapshotMoveData"], false);
        assert!(spec.get("includeClusterResources").is_none(), "{spec}");
        assert_eq!(spec["includedNamespaces"], json!(["prod"]));
        assert_eq!(spec["labelSelector"], json!({"matchLabels": {"dr": "yes"}}));
        assert_eq!(spec["ttl"], "72h0m0s");
        assert_eq!(spec["storageLocation"], "primary");
        let labels = &value["metadata"]["labels"];
        assert_eq!(labels[LABEL_SCHEDULE_NAME], "vms");
        assert_eq!(labels[LABEL_METADATA_BACKUP], "true");
        assert_eq!(labels[LABEL_MANAGED_BY], "replicadr");
        assert_eq!(labels[LABEL_POLICY], "vms");
        assert_eq!(labels[LABEL_SITE], "primary");
        assert_eq!(
            BackupView::from_object(&backup).site.as_deref(),
            Some("primary")
        );
        assert_eq!(
            value["metadata"]["annotations"][ANNOTATION_SLOT],
            "2026-01-01T02:00:00Z"
        );
    }

    #[test]
    fn phases_classify_as_velero_documents_them() {
        for running in [
            None,
            Some("New"),
            Some("Queued"),
            Some("ReadyToStart"),
            Some("InProgress"),
            Some("WaitingForPluginOperations"),
            Some("WaitingForPluginOperationsPartiallyFailed"),
            Some("Finalizing"),
            Some("FinalizingPartiallyFailed"),
        ] {
            assert_eq!(classify_phase(running), PhaseClass::Running, "{running:?}");
        }
        assert_eq!(classify_phase(Some("Completed")), PhaseClass::Succeeded);
        for failed in ["PartiallyFailed", "Failed", "FailedValidation"] {
            assert_eq!(classify_phase(Some(failed)), PhaseClass::Failed);
        }
    }

    #[test]
    fn storage_locations_read_bucket_prefix_config_and_credential() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "velero"},
            "spec": {
                "provider": "aws",
                "objectStorage": {"bucket": "dr", "prefix": "/site-a/"},
                "config": {"region": "us-east-1", "s3Url": "http://127.0.0.1:9000", "s3ForcePathStyle": "true"},
                "credential": {"name": "s3-creds", "key": "cloud"},
            },
        }))
        .expect("bsl");
        let location = StorageLocation::from_object(&object).expect("valid");
        assert_eq!(location.prefix, "site-a");
        assert_eq!(
            location.backup_key("b1", "b1.tar.gz"),
            "site-a/backups/b1/b1.tar.gz"
        );
        assert_eq!(location.config["s3Url"], "http://127.0.0.1:9000");
        assert_eq!(
            location.credential,
            Some(SecretKeyRef {
                name: "s3-creds".into(),
                key: "cloud".into()
            })
        );
        assert_eq!(location.ca_cert, None);
    }

    fn location_with(object_storage: &Value) -> Result<StorageLocation, String> {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "velero"},
            "spec": {"provider": "aws", "objectStorage": object_storage},
        }))
        .expect("bsl");
        StorageLocation::from_object(&object)
    }

    #[test]
    fn storage_locations_read_the_ca_inline_or_by_reference_but_not_both() {
        let inline = location_with(&json!({"bucket": "dr", "caCert": "UEVN"})).expect("inline");
        assert_eq!(inline.ca_cert, Some(CaCert::Inline(b"PEM".to_vec())));
        let by_ref = location_with(
            &json!({"bucket": "dr", "caCertRef": {"name": "s3-ca", "key": "ca.crt"}}),
        )
        .expect("reference");
        assert_eq!(
            by_ref.ca_cert,
            Some(CaCert::Secret(SecretKeyRef {
                name: "s3-ca".into(),
                key: "ca.crt".into()
            }))
        );
        let both = location_with(&json!({
            "bucket": "dr", "caCert": "UEVN", "caCertRef": {"name": "s3-ca", "key": "ca.crt"}
        }))
        .expect_err("both");
        assert!(
            both.contains("both spec.objectStorage.caCert and caCertRef"),
            "{both}"
        );
        let keyless = location_with(&json!({"bucket": "dr", "caCertRef": {"name": "s3-ca"}}))
            .expect_err("no key");
        assert!(
            keyless.contains("caCertRef needs both name and key"),
            "{keyless}"
        );
        let garbled =
            location_with(&json!({"bucket": "dr", "caCert": "not base64!"})).expect_err("garbled");
        assert!(
            garbled.contains("caCert is not base64-encoded PEM"),
            "{garbled}"
        );
    }
}
