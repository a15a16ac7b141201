//! Unit tests over an in-memory [`Cluster`]. It stands in for the API server only to make every
//! branch quick to reach; `tests/tests/backup_actions.rs` runs the same flows against a real
//! kube-apiserver through the real plugin binary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::actions::ResourceId;

const UID: &str = "6f1c0b8e-2d4a-4c3b-9f1e-0a1b2c3d4e5f";
const CREATED: &str = "2025-01-02T03:04:05Z";

/// Objects by (plural, namespace, name).
#[derive(Default)]
struct MemoryCluster {
    objects: Mutex<BTreeMap<(String, String, String), Value>>,
    unavailable: AtomicBool,
    /// Lists are refused as without the permission.
    lists_forbidden: AtomicBool,
    creates: AtomicUsize,
    /// Reads of a pending claim, which is how the action polls its replica.
    pending_reads: AtomicUsize,
    /// Plays a provisioner: a pending claim is bound (to `pv-<claim>`) when read this many
    /// times; 0 never binds.
    binds_at_read: AtomicUsize,
}

impl MemoryCluster {
    fn key(kind: &ResourceType, namespace: Option<&str>, name: &str) -> (String, String, String) {
        (
            kind.plural.to_owned(),
            namespace
                .filter(|_| kind.namespaced)
                .unwrap_or_default()
                .to_owned(),
            name.to_owned(),
        )
    }

    fn put(&self, kind: &ResourceType, object: Value) {
        let key = Self::key(
            kind,
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str),
            object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .expect("name"),
        );
        self.objects.lock().expect("lock").insert(key, object);
    }

    fn object(&self, kind: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        self.objects
            .lock()
            .expect("lock")
            .get(&Self::key(kind, Some(namespace), name))
            .cloned()
    }

    fn count(&self, kind: &ResourceType) -> usize {
        self.objects
            .lock()
            .expect("lock")
            .keys()
            .filter(|(plural, _, _)| plural == kind.plural)
            .count()
    }

    fn check(&self) -> Result<(), ClusterError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(ClusterError::Api("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Cluster for MemoryCluster {
    async fn get(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        self.check()?;
        let mut objects = self.objects.lock().expect("lock");
        let Some(object) = objects.get_mut(&Self::key(kind, namespace, name)) else {
            return Ok(None);
        };
        if kind.plural == PERSISTENT_VOLUME_CLAIMS.plural
            && object.pointer("/status/phase") == Some(&json!("Pending"))
        {
            let reads = self.pending_reads.fetch_add(1, Ordering::SeqCst) + 1;
            if reads == self.binds_at_read.load(Ordering::SeqCst) {
                object["spec"]["volumeName"] = json!(format!("pv-{name}"));
                object["status"]["phase"] = json!("Bound");
            }
        }
        Ok(Some(object.clone()))
    }

    async fn create(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, ClusterError> {
        self.check()?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .expect("name");
        let key = Self::key(kind, namespace, name);
        let mut objects = self.objects.lock().expect("lock");
        if objects.contains_key(&key) {
            return Err(ClusterError::AlreadyExists(format!("{} {name}", kind.kind)));
        }
        let mut stored = object.clone();
        stored["metadata"]["creationTimestamp"] = json!("2025-02-03T04:05:06Z");
        stored["metadata"]["uid"] = json!(format!("uid-of-{name}"));
        stored["status"] = json!({"phase": "Pending"});
        objects.insert(key, stored.clone());
        self.creates.fetch_add(1, Ordering::SeqCst);
        Ok(stored)
    }

    async fn list(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        self.check()?;
        assert_eq!(label_selector, "", "the action lists without labels");
        if self.lists_forbidden.load(Ordering::SeqCst) {
            return Err(ClusterError::Rejected(format!(
                "cannot list {} with labels \"\": forbidden (Forbidden); grant that permission to Velero's service account",
                kind.plural
            )));
        }
        let namespace = namespace.filter(|_| kind.namespaced).unwrap_or_default();
        Ok(self
            .objects
            .lock()
            .expect("lock")
            .iter()
            .filter(|((plural, ns, _), _)| {
                plural == kind.plural && (namespace.is_empty() || ns == namespace)
            })
            .map(|(_, object)| object.clone())
            .collect())
    }
}

fn snapshot(name: &str, uid: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name, "namespace": "vms", "uid": uid, "creationTimestamp": CREATED,
            "labels": {"snapshot.kubevirt.io/source-vm-name": "vm-1", "snapshot.kubevirt.io/source-vm-namespace": "vms"},
            "ownerReferences": [{"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent", "name": "vmsnapshot-content-x", "uid": "c1", "controller": true}],
            "someFutureMetadata": "kept"
        },
        "spec": {"source": {"persistentVolumeClaimName": "disk-1"}, "volumeSnapshotClassName": "nfs-snap", "futureSpec": 1},
        "status": {"readyToUse": ready, "restoreSize": "5Gi", "boundVolumeSnapshotContentName": "snapcontent-1"}
    })
}

fn source_pvc(class: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "disk-1", "namespace": "vms", "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "dv-disk-1", "uid": "d1"}]},
        "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem", "storageClassName": class, "resources": {"requests": {"storage": "4Gi"}}, "volumeName": "pv-src"},
        "status": {"phase": "Bound"}
    })
}

fn storage_class(name: &str, mode: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name}, "provisioner": "nfs.csi.k8s.io", "volumeBindingMode": mode})
}

fn cluster() -> Arc<MemoryCluster> {
    let cluster = Arc::new(MemoryCluster::default());
    cluster.put(&PERSISTENT_VOLUME_CLAIMS, source_pvc("fast"));
    cluster.put(&STORAGE_CLASSES, storage_class("fast", "Immediate"));
    cluster.put(
        &STORAGE_CLASSES,
        storage_class("replicated-nfs", "Immediate"),
    );
    cluster.put(
        &STORAGE_CLASSES,
        storage_class("wffc", "WaitForFirstConsumer"),
    );
    cluster
}

fn config(data: &[(&str, &str)]) -> PluginConfig {
    PluginConfig {
        origin: "velero/replicadr-plugins".into(),
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// The action configured with `data`; without a bind wait unless `data` sets one, as nothing
/// binds a replica here unless a test plays the provisioner.
fn action(cluster: &Arc<MemoryCluster>, data: &[(&str, &str)]) -> SnapshotToPvc {
    let mut config = config(data);
    config
        .data
        .entry(CONFIG_REPLICA_BIND_WAIT_SECONDS.to_owned())
        .or_insert_with(|| "0".to_owned());
    let config = SnapshotToPvcConfig::from_config(Some(&config)).expect("valid config");
    SnapshotToPvc::new(Arc::clone(cluster) as Arc<dyn Cluster>, config)
}

fn input(item: Value) -> BackupInput {
    BackupInput {
        item,
        backup: json!({"metadata": {"name": "b1"}, "status": {"phase": "InProgress"}}),
    }
}

fn replica_name() -> String {
    replica_pvc_name("snap-1", UID)
}

fn bind(cluster: &MemoryCluster, pv: &str) {
    let mut pvc = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &replica_name())
        .expect("replica");
    pvc["spec"]["volumeName"] = json!(pv);
    pvc["status"]["phase"] = json!("Bound");
    cluster.put(&PERSISTENT_VOLUME_CLAIMS, pvc);
}

fn pvc_id(name: &str) -> ResourceId {
    pvc_resource_id("vms", name)
}

#[test]
fn applies_to_volume_snapshots_and_their_source_claims() {
    let selector = SnapshotToPvcFactory.applies_to();
    assert_eq!(
        selector.included_resources,
        vec![
            "volumesnapshots.snapshot.storage.k8s.io",
            "persistentvolumeclaims"
        ]
    );
    assert!(selector.included_namespaces.is_empty());
}

#[tokio::test]
async fn ready_snapshot_gets_a_replica_at_execute_and_an_operation_until_bound() {
    let cluster = cluster();
    let action = action(
        &cluster,
        &[(CONFIG_STORAGE_CLASS_MAP, "fast: replicated-nfs\n")],
    );
    let item = snapshot("snap-1", UID, true);
    let out = action.execute(input(item.clone())).await.expect("executed");
    assert_eq!(out.item, item, "the snapshot is backed up unchanged");
    let name = replica_name();
    assert_eq!(out.additional_items, vec![pvc_id(&name)]);
    assert!(out.post_operation_items.is_empty());
    assert_eq!(
        out.operation_id.as_deref(),
        Some(format!("vms/snap-1/{UID}").as_str())
    );

    let pvc = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &name)
        .expect("created");
    assert_eq!(
        pvc["spec"],
        json!({
            "accessModes": ["ReadWriteMany"],
            "volumeMode": "Filesystem",
            "storageClassName": "replicated-nfs",
            "resources": {"requests": {"storage": "5Gi"}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap-1"}
        })
    );
    assert_eq!(
        pvc["metadata"]["labels"],
        json!({LABEL_MANAGED_BY: "replicadr", LABEL_SNAPSHOT_UID: UID, LABEL_VM: "vm-1"})
    );
    assert_eq!(
        pvc["metadata"]["annotations"],
        json!({
            ANNOTATION_SNAPSHOT: "snap-1",
            LABEL_SNAPSHOT_UID: UID,
            ANNOTATION_SOURCE_PVC: "disk-1",
            ANNOTATION_SOURCE_STORAGE_CLASS: "fast",
            LABEL_VM: "vm-1",
            ANNOTATION_VM_SNAPSHOT_CONTENT: "vmsnapshot-content-x",
            ANNOTATION_SOURCE_DATA_VOLUME: "dv-disk-1",
        })
    );
    assert!(pvc["metadata"].get("ownerReferences").is_none());

    let progress = action
        .progress(&out.operation_id.clone().expect("op"), &json!({}))
        .await
        .expect("progress");
    assert!(
        !progress.completed && progress.error.is_none(),
        "{progress:?}"
    );
    assert_eq!((progress.n_completed, progress.n_total), (2, 3));
    assert!(
        progress.description.contains("waiting for it to bind"),
        "{progress:?}"
    );
    assert_eq!(
        progress.started_unix, progress.updated_unix,
        "without the backup's start time, the poll's time"
    );

    bind(&cluster, "pv-replica");
    let progress = action
        .progress(&out.operation_id.expect("op"), &json!({}))
        .await
        .expect("progress");
    assert!(
        progress.completed && progress.error.is_none(),
        "{progress:?}"
    );
    assert_eq!(progress.n_completed, 3);
    assert!(
        progress
            .description
            .contains("bound to PersistentVolume pv-replica")
    );
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn later_backups_reuse_the_replica_and_bring_its_volume() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("first backup");
    bind(&cluster, "pv-replica");
    let out = action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("second backup");
    assert_eq!(out.operation_id, None, "already bound: nothing to wait for");
    assert_eq!(
        out.additional_items,
        vec![pvc_id(&replica_name()), pv_id("pv-replica")]
    );
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);
    assert_eq!(
        cluster.count(&PERSISTENT_VOLUME_CLAIMS),
        2,
        "source and one replica"
    );
}

fn pv_id(name: &str) -> ResourceId {
    ResourceId {
        group: String::new(),
        resource: "persistentvolumes".into(),
        namespace: String::new(),
        name: name.into(),
    }
}

#[tokio::test]
async fn a_replica_bound_during_the_wait_comes_with_its_volume_and_no_operation() {
    let cluster = cluster();
    // Bound at the third poll, about 750 ms into the wait.
    cluster.binds_at_read.store(3, Ordering::SeqCst);
    let action = action(&cluster, &[(CONFIG_REPLICA_BIND_WAIT_SECONDS, "5")]);
    let started = std::time::Instant::now();
    let out = action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("executed");
    let waited = started.elapsed();
    let name = replica_name();
    assert_eq!(
        out.additional_items,
        vec![pvc_id(&name), pv_id(&format!("pv-{name}"))]
    );
    assert_eq!(out.operation_id, None, "bound: nothing to follow");
    assert!(out.post_operation_items.is_empty());
    assert_eq!(cluster.pending_reads.load(Ordering::SeqCst), 3);
    assert!(
        waited < Duration::from_secs(3),
        "returns once bound: {waited:?}"
    );
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_replica_still_unbound_after_the_wait_is_followed_by_an_operation() {
    let cluster = cluster();
    let action = action(&cluster, &[(CONFIG_REPLICA_BIND_WAIT_SECONDS, "1")]);
    let started = std::time::Instant::now();
    let out = action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("executed");
    let waited = started.elapsed();
    assert_eq!(out.additional_items, vec![pvc_id(&replica_name())]);
    assert_eq!(out.operation_id, Some(snapshot_operation_id()));
    assert!(
        out.post_operation_items.is_empty(),
        "Velero 1.18's finalizer panics on a PVC or PV"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let polls = cluster.pending_reads.load(Ordering::SeqCst);
    assert!((2..=4).contains(&polls), "polled every 250 ms: {polls}");

    // No wait: the replica is not read again after it is created.
    let cluster = self::cluster();
    let out = self::action(&cluster, &[(CONFIG_REPLICA_BIND_WAIT_SECONDS, "0")])
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("executed");
    assert_eq!(out.additional_items, vec![pvc_id(&replica_name())]);
    assert_eq!(out.operation_id, Some(snapshot_operation_id()));
    assert_eq!(cluster.pending_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn snapshot_ready_late_is_followed_by_progress() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    let out = action
        .execute(input(snapshot("snap-1", UID, false)))
        .await
        .expect("executed");
    assert!(out.additional_items.is_empty());
    assert!(out.post_operation_items.is_empty());
    let id = out.operation_id.expect("op");
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 0);

    let mut not_ready = snapshot("snap-1", UID, false);
    not_ready["status"]["error"] = json!({"message": "driver busy"});
    cluster.put(&VOLUME_SNAPSHOTS, not_ready);
    let progress = action.progress(&id, &json!({})).await.expect("progress");
    assert!(!progress.completed, "{progress:?}");
    assert_eq!(progress.n_completed, 0);
    assert_eq!(
        progress.started_unix, progress.updated_unix,
        "without the backup's start time, the poll's time"
    );
    assert!(
        progress
            .description
            .contains("waiting for VolumeSnapshot vms/snap-1")
            && progress.description.contains("driver busy"),
        "{progress:?}"
    );

    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let progress = action.progress(&id, &json!({})).await.expect("progress");
    assert_eq!(progress.n_completed, 2, "{progress:?}");
    assert!(
        cluster
            .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &replica_name())
            .is_some()
    );
    // Polling again neither fails nor creates a second claim.
    action.progress(&id, &json!({})).await.expect("progress");
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn foreign_pvc_in_the_way_fails_the_operation_and_is_untouched() {
    let cluster = cluster();
    let foreign = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": replica_name(), "namespace": "vms", "labels": {"app": "mine"}}, "spec": {"storageClassName": "fast"}, "status": {"phase": "Bound"}});
    cluster.put(&PERSISTENT_VOLUME_CLAIMS, foreign.clone());
    let action = action(&cluster, &[]);
    let out = action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("the snapshot is still backed up");
    assert!(out.additional_items.is_empty() && out.post_operation_items.is_empty());
    let progress = action
        .progress(&out.operation_id.expect("op"), &json!({}))
        .await
        .expect("progress");
    let error = progress.error.expect("failed");
    assert!(progress.completed);
    for expected in [
        format!("PersistentVolumeClaim vms/{}", replica_name()),
        "VolumeSnapshot vms/snap-1".to_owned(),
        "no label app.kubernetes.io/managed-by=replicadr".to_owned(),
        "left untouched".to_owned(),
    ] {
        assert!(
            error.contains(&expected),
            "{expected:?} missing from {error}"
        );
    }
    assert_eq!(
        cluster.object(&PERSISTENT_VOLUME_CLAIMS, "vms", &replica_name()),
        Some(foreign)
    );

    // Ours, but for another snapshot UID (same name only by a hash collision or a hand edit).
    let mut other = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &replica_name())
        .expect("pvc");
    other["metadata"]["labels"] =
        json!({LABEL_MANAGED_BY: "replicadr", LABEL_SNAPSHOT_UID: "someone-else"});
    cluster.put(&PERSISTENT_VOLUME_CLAIMS, other);
    let id = snapshot_operation_id();
    let error = action
        .progress(&id, &json!({}))
        .await
        .expect("progress")
        .error;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("uid someone-else")),
        "{error:?}"
    );
}

fn snapshot_operation_id() -> String {
    format!("vms/snap-1/{UID}")
}

#[tokio::test]
async fn missing_source_pvc_is_named() {
    let cluster = Arc::new(MemoryCluster::default());
    let action = action(&cluster, &[]);
    let out = action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("executed");
    assert!(
        out.post_operation_items.is_empty(),
        "nothing to back up later"
    );
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let progress = action
        .progress(&out.operation_id.expect("op"), &json!({}))
        .await
        .expect("progress");
    let error = progress.error.expect("failed");
    assert!(
        error.contains("VolumeSnapshot vms/snap-1")
            && error.contains("source PersistentVolumeClaim vms/disk-1 does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn wait_for_first_consumer_classes_fail_clearly_or_count_as_done() {
    let cluster = cluster();
    let strict = action(&cluster, &[(CONFIG_STORAGE_CLASS_MAP, "fast: wffc")]);
    let out = strict
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("executed");
    assert_eq!(
        cluster.creates.load(Ordering::SeqCst),
        0,
        "no claim that would never bind"
    );
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let id = out.operation_id.expect("op");
    let error = strict
        .progress(&id, &json!({}))
        .await
        .expect("progress")
        .error
        .expect("failed");
    for expected in [
        "StorageClass wffc",
        "WaitForFirstConsumer",
        "createdNotBoundIsDone",
        &replica_name(),
    ] {
        assert!(
            error.contains(expected),
            "{expected:?} missing from {error}"
        );
    }

    let lenient = action(
        &cluster,
        &[
            (CONFIG_STORAGE_CLASS_MAP, "fast: wffc"),
            (CONFIG_CREATED_NOT_BOUND_IS_DONE, "true"),
            (CONFIG_REPLICA_BIND_WAIT_SECONDS, "5"),
        ],
    );
    let out = lenient
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("executed");
    assert_eq!(out.additional_items, vec![pvc_id(&replica_name())]);
    assert_eq!(
        cluster.pending_reads.load(Ordering::SeqCst),
        0,
        "a claim that binds only for a pod is not waited for"
    );
    let progress = lenient
        .progress(&out.operation_id.expect("op"), &json!({}))
        .await
        .expect("progress");
    assert!(
        progress.completed && progress.error.is_none(),
        "{progress:?}"
    );
    assert_eq!(progress.n_completed, 2);
    assert!(
        progress.description.contains("not waiting for it to bind")
            && progress
                .description
                .contains("binds only when a pod uses the claim"),
        "{progress:?}"
    );
    // Without the option again, the existing unbound claim is reported, not waited on for hours.
    let error = strict
        .progress(&id, &json!({}))
        .await
        .expect("progress")
        .error;
    assert!(error.is_some_and(|e| e.contains("WaitForFirstConsumer")));
}

#[tokio::test]
async fn an_unreachable_api_server_is_retried_not_failed() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    cluster.unavailable.store(true, Ordering::SeqCst);
    let out = action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("the snapshot is still backed up");
    assert!(out.post_operation_items.is_empty());
    let id = out.operation_id.expect("op");
    let progress = action.progress(&id, &json!({})).await.expect("progress");
    assert!(
        !progress.completed && progress.error.is_none(),
        "{progress:?}"
    );
    assert!(
        progress.description.contains("connection refused"),
        "{progress:?}"
    );

    cluster.unavailable.store(false, Ordering::SeqCst);
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let progress = action.progress(&id, &json!({})).await.expect("progress");
    assert_eq!(progress.n_completed, 2, "{progress:?}");
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn deleted_or_recreated_snapshots_fail_the_operation() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    let id = snapshot_operation_id();
    let error = action
        .progress(&id, &json!({}))
        .await
        .expect("progress")
        .error;
    assert!(error.is_some_and(|e| e.contains("no longer exists") && e.contains(UID)));
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", "another-uid", true));
    let error = action
        .progress(&id, &json!({}))
        .await
        .expect("progress")
        .error;
    assert!(
        error.is_some_and(|e| e.contains("deleted and recreated") && e.contains("another-uid"))
    );
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn missing_target_storage_class_fails() {
    let cluster = cluster();
    let action = action(&cluster, &[(CONFIG_STORAGE_CLASS_MAP, "fast: nowhere")]);
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let error = action
        .progress(&snapshot_operation_id(), &json!({}))
        .await
        .expect("progress")
        .error
        .expect("failed");
    assert!(
        error.contains("StorageClass nowhere") && error.contains("does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn size_falls_back_to_the_source_request() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    let mut item = snapshot("snap-1", UID, true);
    item["status"]
        .as_object_mut()
        .expect("status")
        .remove("restoreSize");
    action.execute(input(item)).await.expect("executed");
    let pvc = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &replica_name())
        .expect("created");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "4Gi");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert!(
        pvc["metadata"]["annotations"]
            .get(ANNOTATION_SOURCE_STORAGE_CLASS)
            .is_none(),
        "class unchanged: nothing to record"
    );
}

#[tokio::test]
async fn huge_snapshot_names_still_get_valid_replicas() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    let long = format!("{}.daily", "a".repeat(240));
    let out = action
        .execute(input(snapshot(&long, UID, true)))
        .await
        .expect("executed");
    let name = &out.additional_items[0].name;
    assert!(name.len() <= 63 && naming::is_dns_label(name), "{name}");
    let pvc = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", name)
        .expect("created");
    assert_eq!(pvc["spec"]["dataSource"]["name"], long.as_str());
    assert_eq!(
        pvc["metadata"]["annotations"][ANNOTATION_SNAPSHOT],
        long.as_str()
    );
}

#[tokio::test]
async fn passes_through_what_it_does_not_replicate() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    // Pre-provisioned: no source PVC to take class, access modes and volume mode from.
    let mut pre = snapshot("imported", UID, true);
    pre["spec"]["source"] = json!({"volumeSnapshotContentName": "snapcontent-imported"});
    // Velero's own CSI snapshot of a PVC, deleted when the backup finalizes.
    let mut velero = snapshot("velero-disk-1-abcde", UID, true);
    velero["metadata"]["labels"] = json!({"velero.io/backup-name": "b1"});
    for item in [pre, velero] {
        let out = action.execute(input(item.clone())).await.expect("passed");
        assert_eq!(out.item, item);
        assert!(out.operation_id.is_none() && out.additional_items.is_empty());
    }
    // A VolumeSnapshot Velero restored carries the restore's name too: it is a user snapshot.
    let mut restored = snapshot("snap-1", UID, true);
    restored["metadata"]["labels"] =
        json!({"velero.io/backup-name": "b0", "velero.io/restore-name": "r0"});
    let out = action.execute(input(restored)).await.expect("executed");
    assert!(out.operation_id.is_some());
    // At finalize Velero refuses new operations.
    let cluster = self::cluster();
    let action = self::action(&cluster, &[]);
    let out = action
        .execute(BackupInput {
            item: snapshot("snap-1", UID, true),
            backup: json!({"status": {"phase": "Finalizing"}}),
        })
        .await
        .expect("finalize");
    assert!(out.operation_id.is_none() && out.additional_items.is_empty());
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_snapshots_are_rejected_naming_what_is_missing() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    let mut no_source = snapshot("snap-1", UID, true);
    no_source["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("source");
    let mut no_namespace = snapshot("snap-1", UID, true);
    no_namespace["metadata"]
        .as_object_mut()
        .expect("meta")
        .remove("namespace");
    let mut both = snapshot("snap-1", UID, true);
    both["spec"]["source"]["volumeSnapshotContentName"] = json!("c");
    let mut bad_type = snapshot("snap-1", UID, true);
    bad_type["status"]["readyToUse"] = json!("yes");
    let wrong_kind =
        json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "vms", "uid": "u"}});
    for (item, expected) in [
        (
            no_source,
            "VolumeSnapshot vms/snap-1: spec.source must name exactly one of persistentVolumeClaimName and volumeSnapshotContentName, found neither",
        ),
        (
            no_namespace,
            "VolumeSnapshot snap-1 has no metadata.namespace",
        ),
        (both, "found both (\"disk-1\" and \"c\")"),
        (
            bad_type,
            "VolumeSnapshot vms/snap-1 is not a valid VolumeSnapshot: invalid type",
        ),
        (
            wrong_kind,
            "Secret vms/s: replicadr.io/snapshot-to-pvc only handles VolumeSnapshots and PersistentVolumeClaims, got kind \"Secret\"",
        ),
    ] {
        let error = action.execute(input(item)).await.expect_err(expected);
        assert!(
            error.0.contains(expected),
            "{expected:?} missing from {error}"
        );
    }
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn foreign_operation_ids_are_errors() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    for bad in ["vms/snap-1", "vms/snap-1/2024-01-01T00:00:00Z/x"] {
        let error = action.progress(bad, &json!({})).await.expect_err(bad);
        assert!(error.0.contains("is not one this action issues"), "{error}");
        action.cancel(bad, &json!({})).await.expect_err(bad);
    }
    action
        .cancel(&snapshot_operation_id(), &json!({}))
        .await
        .expect("cancel leaves things in place");
}

#[test]
fn config_is_optional_and_validated() {
    assert_eq!(
        SnapshotToPvcConfig::from_config(None).expect("defaults"),
        SnapshotToPvcConfig::default()
    );
    let parsed = SnapshotToPvcConfig::from_config(Some(&config(&[
        (
            CONFIG_STORAGE_CLASS_MAP,
            "fast: replicated-nfs\ngold.example: replicated-gold\n",
        ),
        (CONFIG_CREATED_NOT_BOUND_IS_DONE, "True"),
        ("siteMap", "not read here"),
        ("localSite", "dr"),
    ])))
    .expect("valid");
    assert_eq!(
        parsed,
        SnapshotToPvcConfig {
            storage_class_map: BTreeMap::from([
                ("fast".into(), "replicated-nfs".into()),
                ("gold.example".into(), "replicated-gold".into())
            ]),
            created_not_bound_is_done: true,
            replica_bind_wait: Duration::from_secs(5),
        }
    );
    for (key, value, expected) in [
        (
            CONFIG_STORAGE_CLASS_MAP,
            "- fast\n- slow",
            "expected a YAML mapping",
        ),
        (CONFIG_STORAGE_CLASS_MAP, "fast: [a, b]", "`from: to`"),
        (
            CONFIG_STORAGE_CLASS_MAP,
            "fast: Not_A_Class",
            "\"Not_A_Class\", which is not a StorageClass name",
        ),
        (
            CONFIG_CREATED_NOT_BOUND_IS_DONE,
            "maybe",
            "\"true\" or \"false\"",
        ),
    ] {
        let text = SnapshotToPvcConfig::from_config(Some(&config(&[(key, value)])))
            .expect_err(value)
            .to_string();
        assert!(
            text.contains("velero/replicadr-plugins")
                && text.contains(key)
                && text.contains(expected),
            "{text}"
        );
    }
}

#[test]
fn the_bind_wait_is_whole_seconds_up_to_a_minute() {
    let wait = |value: &str| {
        SnapshotToPvcConfig::from_config(Some(&config(&[(
            CONFIG_REPLICA_BIND_WAIT_SECONDS,
            value,
        )])))
        .map(|c| c.replica_bind_wait)
    };
    assert_eq!(
        SnapshotToPvcConfig::default().replica_bind_wait,
        Duration::from_secs(5)
    );
    for (value, seconds) in [("0", 0), (" 12 ", 12), ("60", 60)] {
        assert_eq!(wait(value), Ok(Duration::from_secs(seconds)), "{value:?}");
    }
    for value in ["61", "3600", "-1", "2.5", "5s", "", "five"] {
        let text = wait(value).expect_err(value).to_string();
        for expected in [
            "velero/replicadr-plugins",
            CONFIG_REPLICA_BIND_WAIT_SECONDS,
            &format!("{value:?}"),
            "whole number of seconds from 0 to 60",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
    }
}

#[test]
fn reports_always_carry_timestamps() {
    let cluster = cluster();
    let action = action(&cluster, &[]);
    for outcome in [
        Err(Problem::Unavailable("x".into())),
        Err(Problem::failed("y".into())),
    ] {
        let progress = action.report(&outcome, Some(7), 42);
        assert_eq!((progress.started_unix, progress.updated_unix), (7, 42));
        assert_eq!(progress.n_total, 3);
        assert_eq!(action.report(&outcome, None, 42).started_unix, 42);
    }
}

#[tokio::test]
async fn the_start_time_is_the_backups_in_every_poll() {
    let cluster = cluster();
    cluster.put(&PERSISTENT_VOLUME_CLAIMS, source_pvc("replicated-nfs"));
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, false));
    let backup = json!({"status": {"phase": "WaitingForPluginOperations", "startTimestamp": "2026-11-22T10:00:00Z"}});
    let expected = "2026-11-22T10:00:00Z"
        .parse::<k8s_openapi::jiff::Timestamp>()
        .expect("time")
        .as_second();
    let action = action(&cluster, &[]);
    let waiting = action
        .progress(&snapshot_operation_id(), &backup)
        .await
        .expect("progress");
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let created = action
        .progress(&snapshot_operation_id(), &backup)
        .await
        .expect("progress");
    assert!(
        created.n_completed > waiting.n_completed,
        "{waiting:?} then {created:?}"
    );
    assert_eq!(
        (waiting.started_unix, created.started_unix),
        (expected, expected)
    );
}

#[tokio::test]
async fn statically_bound_sources_need_a_mapped_class() {
    let cluster = cluster();
    cluster.put(&PERSISTENT_VOLUME_CLAIMS, source_pvc(""));
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let error = action(&cluster, &[])
        .progress(&snapshot_operation_id(), &json!({}))
        .await
        .expect("progress")
        .error
        .expect("failed");
    assert!(
        error.contains("storageClassName \"\"") && error.contains(CONFIG_STORAGE_CLASS_MAP),
        "{error}"
    );
    let progress = action(
        &cluster,
        &[(CONFIG_STORAGE_CLASS_MAP, "\"\": replicated-nfs")],
    )
    .progress(&snapshot_operation_id(), &json!({}))
    .await
    .expect("progress");
    assert_eq!(progress.n_completed, 2, "{progress:?}");
    let pvc = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &replica_name())
        .expect("created");
    assert_eq!(pvc["spec"]["storageClassName"], "replicated-nfs");
}

// The PVC path: Velero 1.17+ hands the snapshots' source claims, never the snapshots.

fn snapshot_at(name: &str, uid: &str, ready: bool, created: &str) -> Value {
    let mut snapshot = snapshot(name, uid, ready);
    snapshot["metadata"]["creationTimestamp"] = json!(created);
    snapshot
}

#[tokio::test]
async fn a_source_pvc_gets_the_replica_the_snapshot_path_would_make() {
    let cluster = cluster();
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let action = action(
        &cluster,
        &[(CONFIG_STORAGE_CLASS_MAP, "fast: replicated-nfs\n")],
    );
    let claim = source_pvc("fast");
    let out = action
        .execute(input(claim.clone()))
        .await
        .expect("executed");
    assert_eq!(out.item, claim, "the claim is backed up unchanged");
    let name = replica_name();
    assert_eq!(out.additional_items, vec![pvc_id(&name)]);
    assert!(out.post_operation_items.is_empty());
    assert_eq!(out.operation_id, Some(snapshot_operation_id()));
    let from_pvc = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &name)
        .expect("created");

    // The snapshot path on a fresh cluster makes the very same object.
    let other = self::cluster();
    self::action(
        &other,
        &[(CONFIG_STORAGE_CLASS_MAP, "fast: replicated-nfs\n")],
    )
    .execute(input(snapshot("snap-1", UID, true)))
    .await
    .expect("snapshot path");
    assert_eq!(
        other.object(&PERSISTENT_VOLUME_CLAIMS, "vms", &name),
        Some(from_pvc)
    );

    // Velero 1.16 and earlier also hand the snapshot in the same backup: same answer, no second
    // claim.
    let again = action
        .execute(input(snapshot("snap-1", UID, true)))
        .await
        .expect("snapshot path");
    assert_eq!(again.additional_items, out.additional_items);
    assert_eq!(again.operation_id, out.operation_id);
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);

    // The operation is the snapshot path's: progress follows it to bound.
    bind(&cluster, "pv-replica");
    let progress = action
        .progress(&snapshot_operation_id(), &json!({}))
        .await
        .expect("progress");
    assert!(
        progress.completed && progress.error.is_none(),
        "{progress:?}"
    );
    // The next backup: bound, so the claim and its volume, and nothing to wait for.
    let next = action.execute(input(claim)).await.expect("next backup");
    assert_eq!(next.operation_id, None);
    assert_eq!(
        next.additional_items,
        vec![pvc_id(&name), pv_id("pv-replica")]
    );
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pvc_without_snapshots_of_its_own_is_passed_through() {
    let cluster = cluster();
    // Snapshots that are not this claim's to replicate: another claim's, Velero's temporary one,
    // one being deleted, and a pre-provisioned one.
    let mut other_claim = snapshot("snap-other", "uid-other", true);
    other_claim["spec"]["source"] = json!({"persistentVolumeClaimName": "disk-2"});
    let mut velero = snapshot("velero-disk-1-abcde", "uid-velero", true);
    velero["metadata"]["labels"] = json!({"velero.io/backup-name": "b1"});
    let mut deleting = snapshot("snap-deleting", "uid-deleting", true);
    deleting["metadata"]["deletionTimestamp"] = json!("2025-03-01T00:00:00Z");
    let mut pre = snapshot("imported", "uid-imported", true);
    pre["spec"]["source"] = json!({"volumeSnapshotContentName": "snapcontent-imported"});
    let mut elsewhere = snapshot("snap-1", UID, true);
    elsewhere["metadata"]["namespace"] = json!("other");
    for object in [other_claim, velero, deleting, pre, elsewhere] {
        cluster.put(&VOLUME_SNAPSHOTS, object);
    }
    let action = action(&cluster, &[]);
    let claim = source_pvc("fast");
    let out = action
        .execute(input(claim.clone()))
        .await
        .expect("executed");
    assert_eq!(out.item, claim);
    assert!(out.additional_items.is_empty() && out.post_operation_items.is_empty());
    assert_eq!(out.operation_id, None);
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn replica_pvcs_and_finalize_are_skipped() {
    let cluster = cluster();
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let action = action(&cluster, &[]);
    // At finalize Velero refuses new operations.
    let out = action
        .execute(BackupInput {
            item: source_pvc("fast"),
            backup: json!({"status": {"phase": "FinalizingPartiallyFailed"}}),
        })
        .await
        .expect("finalize");
    assert!(out.operation_id.is_none() && out.additional_items.is_empty());
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 0);

    action
        .execute(input(source_pvc("fast")))
        .await
        .expect("executed");
    let replica = cluster
        .object(&PERSISTENT_VOLUME_CLAIMS, "vms", &replica_name())
        .expect("created");
    // The replica comes back as an additional item of its source; a snapshot taken of it (at the
    // DR site, say) must not make a replica of the replica.
    let mut of_replica = snapshot_at("snap-of-replica", "uid-r", true, "2025-06-01T00:00:00Z");
    of_replica["spec"]["source"] = json!({"persistentVolumeClaimName": replica_name()});
    cluster.put(&VOLUME_SNAPSHOTS, of_replica);
    let mut only_uid_label = replica.clone();
    only_uid_label["metadata"]["labels"] = json!({LABEL_SNAPSHOT_UID: UID});
    for item in [replica, only_uid_label] {
        let out = action.execute(input(item.clone())).await.expect("skipped");
        assert_eq!(out.item, item);
        assert!(out.additional_items.is_empty() && out.operation_id.is_none());
    }
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_pending_snapshots_give_two_replicas_and_one_operation() {
    let cluster = cluster();
    cluster.put(
        &VOLUME_SNAPSHOTS,
        snapshot_at("snap-old", "uid-old", true, "2025-01-01T00:00:00Z"),
    );
    cluster.put(
        &VOLUME_SNAPSHOTS,
        snapshot_at("snap-new", "uid-new", true, "2025-01-02T00:00:00Z"),
    );
    let action = action(&cluster, &[]);
    let out = action
        .execute(input(source_pvc("fast")))
        .await
        .expect("executed");
    let new = replica_pvc_name("snap-new", "uid-new");
    let old = replica_pvc_name("snap-old", "uid-old");
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 2, "both replicas");
    assert_eq!(out.additional_items, vec![pvc_id(&new), pvc_id(&old)]);
    assert_eq!(
        out.operation_id.as_deref(),
        Some("vms/snap-new/uid-new"),
        "the newest snapshot is followed"
    );
    assert!(out.post_operation_items.is_empty());
}

#[tokio::test]
async fn a_pending_snapshot_is_followed_before_a_failed_one() {
    let cluster = cluster();
    // The newest snapshot's replica name is taken by someone else's claim: it fails.
    cluster.put(
        &VOLUME_SNAPSHOTS,
        snapshot_at("snap-new", "uid-new", true, "2025-01-02T00:00:00Z"),
    );
    let foreign = replica_pvc_name("snap-new", "uid-new");
    cluster.put(
        &PERSISTENT_VOLUME_CLAIMS,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": foreign, "namespace": "vms"}, "status": {"phase": "Bound"}}),
    );
    cluster.put(
        &VOLUME_SNAPSHOTS,
        snapshot_at("snap-old", "uid-old", false, "2025-01-01T00:00:00Z"),
    );
    let action = action(&cluster, &[]);
    let out = action
        .execute(input(source_pvc("fast")))
        .await
        .expect("executed");
    assert_eq!(out.operation_id.as_deref(), Some("vms/snap-old/uid-old"));
    assert!(out.post_operation_items.is_empty());
    assert!(
        out.additional_items.is_empty(),
        "{:?}",
        out.additional_items
    );

    // Only the failure left: it is followed, so the operation reports it.
    cluster
        .objects
        .lock()
        .expect("lock")
        .remove(&MemoryCluster::key(
            &VOLUME_SNAPSHOTS,
            Some("vms"),
            "snap-old",
        ));
    let out = action
        .execute(input(source_pvc("fast")))
        .await
        .expect("executed");
    assert_eq!(out.operation_id.as_deref(), Some("vms/snap-new/uid-new"));
    assert!(out.post_operation_items.is_empty());
}

#[tokio::test]
async fn a_refused_or_failed_snapshot_list_leaves_the_pvc_in_the_backup() {
    let cluster = cluster();
    cluster.put(&VOLUME_SNAPSHOTS, snapshot("snap-1", UID, true));
    let action = action(&cluster, &[]);
    let claim = source_pvc("fast");
    cluster.lists_forbidden.store(true, Ordering::SeqCst);
    let out = action
        .execute(input(claim.clone()))
        .await
        .expect("never an item error: Velero would drop the claim");
    assert_eq!(out.item, claim);
    assert!(out.operation_id.is_none() && out.additional_items.is_empty());
    cluster.lists_forbidden.store(false, Ordering::SeqCst);
    cluster.unavailable.store(true, Ordering::SeqCst);
    let out = action.execute(input(claim.clone())).await.expect("passed");
    assert_eq!(out.item, claim);
    assert!(out.operation_id.is_none());
    assert_eq!(cluster.creates.load(Ordering::SeqCst), 0);
}
