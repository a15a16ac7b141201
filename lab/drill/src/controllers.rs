//! The controllers a local site does not run, played by the drill: no pods run there, so nothing
//! binds volumes, takes snapshots or boots VMs. Like the real ones, the played controllers watch
//! the objects (reflector caches) and, on each change, do what those controllers would, by
//! writing objects and status:
//! - the PV controller: a claim naming a PV whose claimRef is empty or names it is bound to it;
//! - the NFS CSI provisioner: a claim of the drill's StorageClass gets a new PV on this site's
//!   export (reclaim policy Delete, as provisioned volumes have);
//! - the snapshot controller: a VolumeSnapshot gets a VolumeSnapshotContent and becomes ready;
//! - KubeVirt: a VM whose run strategy runs is reported Running, any other Stopped; one whose
//!   template's `nodeSelector` asks for a label the played node lacks ([`PLAYED_NODE_LABELS`])
//!   is reported `ErrorUnschedulable`, as KubeVirt reports a VM whose launcher pod no node takes;
//! - the PV/PVC protection and namespace controllers: a deleted claim or volume loses its
//!   protection finalizer (no pod uses anything here), and a deleted namespace is finalized once
//!   it holds no claim or VM;
//! - CDI's `DataVolume` controller, for a `DataVolume` a restore made (labelled
//!   `velero.io/restore-name`) that has no phase yet (Velero strips status; the tests set up the
//!   other `DataVolumes`' state themselves): a claim of its name that says it holds this `DataVolume`'s data
//!   (`cdi.kubevirt.io/storage.populatedFor`, or this `DataVolume` as its controller) is adopted —
//!   the `DataVolume` becomes its controller owner and the `DataVolume` `Succeeded`, with no importer
//!   (`pkg/controller/datavolume`, claim adoption); a claim of its name that does not is left, and
//!   the `DataVolume` stays `Pending` with the controller's `ErrResourceExists` (CDI's admission
//!   webhook, which would refuse to create such a `DataVolume` at all, is not played); with no
//!   claim, CDI would provision one and import into it: the `DataVolume` is `ImportScheduled`, and
//!   nothing imports here;
//! - the garbage collector: a VM deleted with orphan propagation loses its `orphan` finalizer (the
//!   played VMs own nothing); a `DataVolume` deleted so first has its claims' ownerReferences to it
//!   removed, as kube-controller-manager's garbage collector orphans dependents
//!   (`pkg/controller/garbagecollector`, `orphanDependents`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use replicadr_core::contents::{run_strategy, strategy_runs};
use replicadr_scheduler::recovery::failover::{data_volume_resource, vm_resource};

/// The StorageClass the played provisioner serves.
pub const STORAGE_CLASS: &str = "drill-nfs-csi";
pub use replicadr_core::wire::NFS_CSI_DRIVER;
/// A pass also runs this long after the last one without any change: a failed write is retried.
const RETRY: Duration = Duration::from_secs(2);

/// Where the played provisioner creates volumes.
#[derive(Debug, Clone)]
pub struct Export {
    pub server: String,
    pub share: String,
}

/// The played controllers of one site, stopped on drop.
#[derive(Debug)]
pub struct Played {
    stop: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the played controllers watch.
struct Caches {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    namespaces: Store<Namespace>,
    snapshots: Store<DynamicObject>,
    vms: Store<DynamicObject>,
    data_volumes: Store<DynamicObject>,
}

impl Caches {
    async fn ready(&self) -> bool {
        self.claims.wait_until_ready().await.is_ok()
            && self.volumes.wait_until_ready().await.is_ok()
            && self.namespaces.wait_until_ready().await.is_ok()
            && self.snapshots.wait_until_ready().await.is_ok()
            && self.vms.wait_until_ready().await.is_ok()
            && self.data_volumes.wait_until_ready().await.is_ok()
    }
}

/// A reflector cache of `api`, kept by a task pushed onto `tasks` that signals `changed` on every
/// event.
fn watch<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let changed = Arc::clone(changed);
    let events =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tasks.push(tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::debug!(%error, "played controllers: watch failed, retrying"),
            }
        }
    }));
    store
}

impl Played {
    /// Starts playing the controllers against `client`.
    pub fn start(client: Client, export: Export) -> Self {
        let stop = Arc::new(Notify::new());
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let dynamic = |resource: ApiResource| {
            (
                Api::<DynamicObject>::all_with(client.clone(), &resource),
                resource,
            )
        };
        let (snapshot_api, snapshot_resource) =
            dynamic(resource("snapshot.storage.k8s.io", "VolumeSnapshot"));
        let (vm_api, vm_type) = dynamic(vm_resource());
        let (dv_api, dv_type) = dynamic(data_volume_resource());
        let caches = Caches {
            claims: watch(Api::all(client.clone()), (), &changed, &mut tasks),
            volumes: watch(Api::all(client.clone()), (), &changed, &mut tasks),
            namespaces: watch(Api::all(client.clone()), (), &changed, &mut tasks),
            snapshots: watch(snapshot_api, snapshot_resource, &changed, &mut tasks),
            vms: watch(vm_api, vm_type, &changed, &mut tasks),
            data_volumes: watch(dv_api, dv_type, &changed, &mut tasks),
        };
        let controller = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                if !caches.ready().await {
                    return;
                }
                loop {
                    if let Err(error) = pass(&client, &export, &caches).await {
                        tracing::debug!(%error, "played controllers: pass failed, retrying");
                    }
                    tokio::select! {
                        () = stop.notified() => return,
                        () = changed.notified() => {}
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            })
        };
        tasks.push(controller);
        Self { stop, tasks }
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        self.stop.notify_one();
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn pass(client: &Client, export: &Export, caches: &Caches) -> Result<(), kube::Error> {
    finish_deletions(client, caches).await?;
    bind_claims(client, export, caches).await?;
    snapshots(client, caches).await?;
    data_volumes(client, caches).await?;
    vms(client, caches).await
}

/// CDI's `DataVolume` controller, for `DataVolumes` a restore made (no phase yet).
async fn data_volumes(client: &Client, caches: &Caches) -> Result<(), kube::Error> {
    let unset = |dv: &DynamicObject| {
        dv.metadata.deletion_timestamp.is_none()
            && dv
                .labels()
                .contains_key(replicadr_core::wire::LABEL_VELERO_RESTORE_NAME)
            && dv
                .data
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
    };
    for dv in caches.data_volumes.state_filter(unset) {
        let namespace = dv.namespace().unwrap_or_default();
        let name = dv.name_any();
        let dv_uid = dv.metadata.uid.clone().unwrap_or_default();
        let claim =
            caches.claims.state().into_iter().find(|c| {
                c.namespace().as_deref() == Some(namespace.as_str()) && c.name_any() == name
            });
        let status = match claim {
            Some(claim) => {
                let populated_for = claim
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(replicadr_core::wire::ANNOTATION_CDI_POPULATED_FOR))
                    .is_some_and(|v| *v == name);
                let controlled = claim
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid == dv_uid);
                if populated_for || controlled {
                    if !controlled {
                        let owner = json!([{
                            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                            "name": name, "uid": dv_uid,
                            "controller": true, "blockOwnerDeletion": true,
                        }]);
                        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
                            .patch(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"ownerReferences": owner}})),
                            )
                            .await?;
                    }
                    json!({"phase": "Succeeded", "progress": "100.0%", "claimName": name})
                } else {
                    json!({"phase": "Pending", "conditions": [{
                        "type": "Ready", "status": "False", "reason": "ErrResourceExists",
                        "message": format!("Resource \"{name}\" already exists and is not managed by DataVolume"),
                    }]})
                }
            }
            None => json!({"phase": "ImportScheduled", "claimName": name}),
        };
        Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &data_volume_resource())
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    Ok(())
}

/// `Ok` for a create that found the object already there: the caches lag behind the writes.
fn created(result: Result<impl Sized, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

fn is_bound<T: serde::Serialize>(object: &T) -> bool {
    serde_json::to_value(object)
        .ok()
        .and_then(|v| {
            v.pointer("/status/phase")
                .and_then(Value::as_str)
                .map(|p| p == "Bound")
        })
        .unwrap_or(false)
}

#[expect(
    clippy::too_many_lines,
    reason = "bind, or provision then bind, one claim after the other"
)]
async fn bind_claims(client: &Client, export: &Export, caches: &Caches) -> Result<(), kube::Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims = caches
        .claims
        .state_filter(|pvc| pvc.metadata.deletion_timestamp.is_none() && !is_bound(pvc));
    if claims.is_empty() {
        return Ok(());
    }
    let pvs: HashMap<String, Arc<PersistentVolume>> = caches
        .volumes
        .state()
        .into_iter()
        .map(|pv| (pv.name_any(), pv))
        .collect();
    for pvc in claims {
        let namespace = pvc.namespace().unwrap_or_default();
        let name = pvc.name_any();
        let uid = pvc.uid().unwrap_or_default();
        let spec = pvc.spec.clone().unwrap_or_default();
        let volume = match spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            Some(volume) => {
                let Some(pv) = pvs.get(volume) else { continue };
                let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                let names_other = claim_ref.is_some_and(|r| {
                    r.namespace.as_deref() != Some(namespace.as_str())
                        || r.name.as_deref() != Some(name.as_str())
                });
                if names_other {
                    continue;
                }
                volume.to_owned()
            }
            None if spec.storage_class_name.as_deref() == Some(STORAGE_CLASS) => {
                let volume = format!("pvc-{uid}");
                let size = spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .map_or_else(|| "1Gi".to_owned(), |q| q.0.clone());
                let share = export.share.trim_matches('/');
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": volume, "annotations": {"pv.kubernetes.io/provisioned-by": NFS_CSI_DRIVER}},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteMany".to_owned()]),
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": STORAGE_CLASS,
                        "csi": {
                            "driver": NFS_CSI_DRIVER,
                            "volumeHandle": format!("{}#{share}#{volume}#{volume}", export.server),
                            "volumeAttributes": {"server": export.server, "share": export.share, "subdir": volume},
                        },
                    },
                }))
                .expect("a valid PV");
                created(volumes.create(&PostParams::default(), &pv).await)?;
                Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"volumeName": volume}})),
                    )
                    .await?;
                volume
            }
            None => continue,
        };
        volumes
            .patch(
                &volume,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": namespace, "name": name, "uid": uid,
                }}})),
            )
            .await?;
        volumes
            .patch_status(
                &volume,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await?;
        let pv = volumes.get(&volume).await?;
        let pv_spec = pv.spec.unwrap_or_default();
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Bound",
                    "accessModes": pv_spec.access_modes,
                    "capacity": pv_spec.capacity,
                }})),
            )
            .await?;
    }
    Ok(())
}

/// Lets deletions finish as the controllers would.
async fn finish_deletions(client: &Client, caches: &Caches) -> Result<(), kube::Error> {
    let unprotect = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let params = PatchParams::default();
    let deleting = |meta: &kube::api::ObjectMeta| {
        meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_some_and(|f| !f.is_empty())
    };
    for claim in caches.claims.state_filter(|c| deleting(&c.metadata)) {
        Api::<PersistentVolumeClaim>::namespaced(
            client.clone(),
            &claim.namespace().unwrap_or_default(),
        )
        .patch(&claim.name_any(), &params, &unprotect)
        .await?;
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for volume in caches.volumes.state_filter(|v| deleting(&v.metadata)) {
        volumes
            .patch(&volume.name_any(), &params, &unprotect)
            .await?;
    }
    // A VM deleted with orphan propagation carries the `orphan` finalizer until the garbage
    // collector has removed the VM from its dependents' ownerReferences; the played VMs have no
    // dependents, so it is removed at once, as kube-controller-manager's garbage collector would.
    for vm in caches.vms.state_filter(|v| deleting(&v.metadata)) {
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &vm.namespace().unwrap_or_default(),
            &vm_resource(),
        )
        .patch(&vm.name_any(), &params, &unprotect)
        .await?;
    }
    for dv in caches.data_volumes.state_filter(|d| deleting(&d.metadata)) {
        let namespace = dv.namespace().unwrap_or_default();
        let owned_by_dv = |claim: &PersistentVolumeClaim| {
            claim
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == dv.metadata.uid.as_ref())
        };
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
        for claim in caches.claims.state_filter(|c| {
            c.namespace().as_deref() == Some(namespace.as_str()) && owned_by_dv(c)
        }) {
            let kept: Vec<_> = claim
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| Some(&o.uid) != dv.metadata.uid.as_ref())
                .cloned()
                .collect();
            claims
                .patch(
                    &claim.name_any(),
                    &params,
                    &Patch::Merge(json!({"metadata": {"ownerReferences": kept}})),
                )
                .await?;
        }
        Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &data_volume_resource())
            .patch(&dv.name_any(), &params, &unprotect)
            .await?;
    }
    // A namespace is finalized once no claim or VM is left in it.
    let occupied: HashSet<String> = caches
        .claims
        .state()
        .iter()
        .filter_map(|c| c.namespace())
        .chain(caches.vms.state().iter().filter_map(|v| v.namespace()))
        .collect();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in caches.namespaces.state() {
        let name = namespace.name_any();
        let finalizers = namespace.spec.as_ref().and_then(|s| s.finalizers.as_ref());
        if namespace.metadata.deletion_timestamp.is_none()
            || finalizers.is_none_or(Vec::is_empty)
            || occupied.contains(&name)
        {
            continue;
        }
        let mut finalized = Namespace::clone(&namespace);
        if let Some(spec) = finalized.spec.as_mut() {
            spec.finalizers = Some(Vec::new());
        }
        namespaces
            .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
            .await?;
    }
    Ok(())
}

fn resource(group: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind))
}

async fn snapshots(client: &Client, caches: &Caches) -> Result<(), kube::Error> {
    let snapshot_resource = resource("snapshot.storage.k8s.io", "VolumeSnapshot");
    let content_resource = resource("snapshot.storage.k8s.io", "VolumeSnapshotContent");
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &content_resource);
    let pending = caches.snapshots.state_filter(|s| {
        s.data
            .pointer("/status/readyToUse")
            .and_then(Value::as_bool)
            != Some(true)
    });
    for snapshot in pending {
        let namespace = snapshot.namespace().unwrap_or_default();
        let name = snapshot.name_any();
        let uid = snapshot.uid().unwrap_or_default();
        let content_name = format!("snapcontent-{uid}");
        let handle = format!("drill-snapshot-{uid}");
        let source = snapshot
            .data
            .pointer("/spec/source/persistentVolumeClaimName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if contents.get_opt(&content_name).await?.is_none() {
            let mut content = DynamicObject::new(&content_name, &content_resource);
            content.data = json!({"spec": {
                "deletionPolicy": "Delete",
                "driver": NFS_CSI_DRIVER,
                "source": {"volumeHandle": format!("{namespace}/{source}")},
                "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "namespace": namespace, "name": name, "uid": uid},
            }});
            contents.create(&PostParams::default(), &content).await?;
        }
        contents
            .patch_status(
                &content_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"readyToUse": true, "snapshotHandle": handle, "restoreSize": 1_073_741_824_i64}})),
            )
            .await?;
        Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &snapshot_resource)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "readyToUse": true,
                    "boundVolumeSnapshotContentName": content_name,
                    "restoreSize": "1Gi",
                    "creationTime": jiff::Timestamp::now().to_string(),
                }})),
            )
            .await?;
    }
    Ok(())
}

/// The labels of the one node a played site has, as the kubelet sets them.
pub const PLAYED_NODE_LABELS: [(&str, &str); 3] = [
    ("kubernetes.io/arch", "amd64"),
    ("kubernetes.io/os", "linux"),
    ("kubernetes.io/hostname", "lab-node"),
];

/// Whether the played node satisfies the VM template's `nodeSelector`.
fn schedulable(vm: &Value) -> bool {
    vm.pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|selector| {
            selector.iter().all(|(key, value)| {
                PLAYED_NODE_LABELS
                    .iter()
                    .any(|(k, v)| k == key && value.as_str() == Some(v))
            })
        })
}

async fn vms(client: &Client, caches: &Caches) -> Result<(), kube::Error> {
    for vm in caches.vms.state() {
        let wanted = strategy_runs(&run_strategy(&vm.data));
        let runs = wanted && schedulable(&vm.data);
        let status = match (wanted, runs) {
            (true, true) => "Running",
            (true, false) => "ErrorUnschedulable",
            _ => "Stopped",
        };
        if vm
            .data
            .pointer("/status/printableStatus")
            .and_then(Value::as_str)
            == Some(status)
        {
            continue;
        }
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &vm.namespace().unwrap_or_default(),
            &vm_resource(),
        )
        .patch_status(
            &vm.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"printableStatus": status, "ready": runs, "created": runs}}),
            ),
        )
        .await?;
    }
    Ok(())
}
