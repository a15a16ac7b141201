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
//!   is reported `ErrorUnschedulable`, as KubeVirt reports a VM whose launcher pod no node takes.
//!   A running VM gets a `VirtualMachineInstance` of its name, owned by it, and a stopped VM's
//!   instance is deleted (virt-controller's VM controller, `pkg/virt-controller/watch/vm`);
//!   every instance not being deleted gets a `virt-launcher` pod, owned by it and labelled as
//!   KubeVirt labels it, whoever made the instance: an ownerless one a restore brought back
//!   boots too (the VMI controller, `pkg/virt-controller/watch/vmi`). Not played: KubeVirt's VM
//!   controller adopting an ownerless instance of its VM's name;
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
//! - the garbage collector: a VM or `DataVolume` deleted with orphan propagation first has the
//!   ownerReferences to it removed from its dependents the played controllers watch (a VM's
//!   `DataVolumes` and instances, a `DataVolume`'s claims), then loses its `orphan` finalizer, as
//!   kube-controller-manager's garbage collector orphans dependents
//!   (`pkg/controller/garbagecollector`, `orphanDependents`); an instance or launcher pod whose
//!   controller owner is gone is deleted (background propagation). Dependents the played
//!   controllers do not watch (`ControllerRevisions`) keep a dangling ownerReference.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
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
use replicadr_core::wire::LABEL_KUBEVIRT;
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
    instances: Store<DynamicObject>,
    /// `virt-launcher` pods only.
    launchers: Store<Pod>,
}

impl Caches {
    async fn ready(&self) -> bool {
        self.claims.wait_until_ready().await.is_ok()
            && self.volumes.wait_until_ready().await.is_ok()
            && self.namespaces.wait_until_ready().await.is_ok()
            && self.snapshots.wait_until_ready().await.is_ok()
            && self.vms.wait_until_ready().await.is_ok()
            && self.data_volumes.wait_until_ready().await.is_ok()
            && self.instances.wait_until_ready().await.is_ok()
            && self.launchers.wait_until_ready().await.is_ok()
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
    watch_with(api, dyntype, watcher::Config::default(), changed, tasks)
}

/// [`watch`] with a watcher configuration (a label selector).
fn watch_with<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    config: watcher::Config,
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
    let events = reflector::reflector(writer, watcher(api, config)).default_backoff();
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
        let (instance_api, instance_type) = dynamic(instance_resource());
        let launcher_pods =
            watcher::Config::default().labels(&format!("{LABEL_KUBEVIRT}={LAUNCHER}"));
        let caches = Caches {
            claims: watch(Api::all(client.clone()), (), &changed, &mut tasks),
            volumes: watch(Api::all(client.clone()), (), &changed, &mut tasks),
            namespaces: watch(Api::all(client.clone()), (), &changed, &mut tasks),
            snapshots: watch(snapshot_api, snapshot_resource, &changed, &mut tasks),
            vms: watch(vm_api, vm_type, &changed, &mut tasks),
            data_volumes: watch(dv_api, dv_type, &changed, &mut tasks),
            instances: watch(instance_api, instance_type, &changed, &mut tasks),
            launchers: watch_with(
                Api::all(client.clone()),
                (),
                launcher_pods,
                &changed,
                &mut tasks,
            ),
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
    vms(client, caches).await?;
    instances(client, caches).await?;
    launchers(client, caches).await
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

/// `Ok` for a delete that found the object gone already.
fn deleted(result: Result<impl Sized, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
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
    // collector has removed the VM from its dependents' ownerReferences.
    for vm in caches.vms.state_filter(|v| deleting(&v.metadata)) {
        let namespace = vm.namespace().unwrap_or_default();
        for (store, resource) in [
            (&caches.data_volumes, data_volume_resource()),
            (&caches.instances, instance_resource()),
        ] {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
            for dependent in store.state_filter(|d| {
                d.namespace().as_deref() == Some(namespace.as_str())
                    && owned_by(&d.metadata, vm.metadata.uid.as_deref())
            }) {
                api.patch(
                    &dependent.name_any(),
                    &params,
                    &without_owner(&dependent.metadata, vm.metadata.uid.as_deref()),
                )
                .await?;
            }
        }
        Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &vm_resource())
            .patch(&vm.name_any(), &params, &unprotect)
            .await?;
    }
    for dv in caches.data_volumes.state_filter(|d| deleting(&d.metadata)) {
        let namespace = dv.namespace().unwrap_or_default();
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
        for claim in caches.claims.state_filter(|c| {
            c.namespace().as_deref() == Some(namespace.as_str())
                && owned_by(&c.metadata, dv.metadata.uid.as_deref())
        }) {
            claims
                .patch(
                    &claim.name_any(),
                    &params,
                    &without_owner(&claim.metadata, dv.metadata.uid.as_deref()),
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

/// Whether `uid` is among the owners in `meta`.
fn owned_by(meta: &kube::api::ObjectMeta, uid: Option<&str>) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid)
}

/// The patch that removes the owner `uid` from `meta`'s ownerReferences.
fn without_owner(meta: &kube::api::ObjectMeta, uid: Option<&str>) -> Patch<Value> {
    let kept: Vec<_> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| Some(o.uid.as_str()) != uid)
        .cloned()
        .collect();
    Patch::Merge(json!({"metadata": {"ownerReferences": kept}}))
}

/// The UID of `meta`'s controller owner, when it is of `kind`.
fn controller_of_kind<'a>(meta: &'a kube::api::ObjectMeta, kind: &str) -> Option<&'a str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.uid.as_str())
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

/// KubeVirt's `VirtualMachineInstance` (kubevirt.io/v1).
pub fn instance_resource() -> ApiResource {
    resource("kubevirt.io", "VirtualMachineInstance")
}

/// The value of KubeVirt's `kubevirt.io` label on a launcher pod.
pub const LAUNCHER: &str = "virt-launcher";
/// KubeVirt's label on an instance and its launcher pod: the VM's name.
const LABEL_VM_NAME: &str = "vm.kubevirt.io/name";
/// KubeVirt's label on a launcher pod: the UID of its instance.
const LABEL_CREATED_BY: &str = "kubevirt.io/created-by";

/// The VM controller's part: a running VM's instance is created, a stopped VM's is deleted, an
/// instance whose VM is gone is collected.
async fn instances(client: &Client, caches: &Caches) -> Result<(), kube::Error> {
    let vms = caches.vms.state();
    for vm in &vms {
        let namespace = vm.namespace().unwrap_or_default();
        let name = vm.name_any();
        let runs = vm.metadata.deletion_timestamp.is_none()
            && strategy_runs(&run_strategy(&vm.data))
            && schedulable(&vm.data);
        let instance =
            caches.instances.state().into_iter().find(|i| {
                i.namespace().as_deref() == Some(namespace.as_str()) && i.name_any() == name
            });
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &instance_resource());
        match instance {
            None if runs => {
                let template = vm
                    .data
                    .pointer("/spec/template/spec")
                    .cloned()
                    .unwrap_or_default();
                let mut object = DynamicObject::new(&name, &instance_resource()).within(&namespace);
                object.metadata.labels = Some(
                    [
                        (LABEL_VM_NAME.to_owned(), name.clone()),
                        ("kubevirt.io/domain".to_owned(), name.clone()),
                    ]
                    .into(),
                );
                object.metadata.owner_references = Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "kubevirt.io/v1".to_owned(),
                        kind: "VirtualMachine".to_owned(),
                        name: name.clone(),
                        uid: vm.uid().unwrap_or_default(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    },
                ]);
                object.data = json!({"spec": template});
                created(api.create(&PostParams::default(), &object).await)?;
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Running"}})),
                )
                .await?;
            }
            Some(instance)
                if !runs
                    && instance.metadata.deletion_timestamp.is_none()
                    && controller_of_kind(&instance.metadata, "VirtualMachine")
                        == vm.uid().as_deref() =>
            {
                deleted(api.delete(&name, &kube::api::DeleteParams::default()).await)?;
            }
            _ => {}
        }
    }
    let vm_uids: HashSet<String> = vms.iter().filter_map(|vm| vm.uid()).collect();
    for orphaned in caches.instances.state_filter(|i| {
        i.metadata.deletion_timestamp.is_none()
            && controller_of_kind(&i.metadata, "VirtualMachine")
                .is_some_and(|uid| !vm_uids.contains(uid))
    }) {
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &orphaned.namespace().unwrap_or_default(),
            &instance_resource(),
        )
        .delete(&orphaned.name_any(), &kube::api::DeleteParams::default())
        .await
        .map_or_else(|e| deleted(Err::<(), _>(e)), |_| Ok(()))?;
    }
    Ok(())
}

/// The claims an instance's volumes use, as the launcher pod mounts them.
fn launcher_volumes(instance: &Value) -> Vec<Value> {
    instance
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let claim = volume
                .pointer("/persistentVolumeClaim/claimName")
                .or_else(|| volume.pointer("/dataVolume/name"))?;
            Some(
                json!({"name": volume.get("name")?, "persistentVolumeClaim": {"claimName": claim}}),
            )
        })
        .collect()
}

/// The VMI controller's part: every instance not being deleted has a launcher pod; a launcher pod
/// whose instance is gone is collected.
async fn launchers(client: &Client, caches: &Caches) -> Result<(), kube::Error> {
    let instances = caches.instances.state();
    let launched: HashSet<String> = caches
        .launchers
        .state()
        .iter()
        .filter_map(|pod| pod.labels().get(LABEL_CREATED_BY).cloned())
        .collect();
    for instance in instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
    {
        let uid = instance.uid().unwrap_or_default();
        if launched.contains(&uid) {
            continue;
        }
        let namespace = instance.namespace().unwrap_or_default();
        let name = instance.name_any();
        let vm_name = instance
            .labels()
            .get(LABEL_VM_NAME)
            .cloned()
            .unwrap_or_else(|| name.clone());
        let suffix: String = uid
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(5)
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{LAUNCHER}-{name}-{suffix}"), "namespace": namespace,
                "labels": {LABEL_KUBEVIRT: LAUNCHER, LABEL_VM_NAME: vm_name, LABEL_CREATED_BY: uid},
                "ownerReferences": [{
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": name,
                    "uid": uid, "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "containers": [{"name": "compute", "image": "quay.io/kubevirt/virt-launcher:v1.6.0"}],
                "volumes": launcher_volumes(&instance.data),
            },
        }))
        .expect("a valid pod");
        let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
        created(pods.create(&PostParams::default(), &pod).await)?;
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await?;
    }
    let instance_uids: HashSet<String> = instances.iter().filter_map(|i| i.uid()).collect();
    for pod in caches.launchers.state_filter(|pod| {
        pod.metadata.deletion_timestamp.is_none()
            && controller_of_kind(&pod.metadata, "VirtualMachineInstance")
                .is_some_and(|uid| !instance_uids.contains(uid))
    }) {
        deleted(
            Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
                .delete(&pod.name_any(), &kube::api::DeleteParams::default())
                .await,
        )?;
    }
    Ok(())
}
