//! `replicadr clean --site <site>`: before a failback onto a site that comes back, the stale
//! workload there — the VMs, `DataVolumes`, PVCs and PVs under the names the backup to be restored
//! holds, which no failover or failback of that backup restored here — is listed, and with
//! `--apply` removed safely: never while one of those VMs runs or a pod mounts one of those claims
//! (unless `--force`), every PV set to `Retain` before its claim goes (so no provisioner deletes
//! data on the exports), VMs first, then `DataVolumes`, then claims, then PVs, each kind gone
//! before the next is deleted, nothing outside that set, and a report ConfigMap and Event of
//! exactly what was removed. The objects in the backup's namespaces that
//! the backup does not hold (deleted at the other site during the outage) are listed apart and
//! removed only with `--include-absent`. Refused at the active site: there, the workload is the
//! one in use.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource as _, ResourceExt as _};
use serde::Serialize;
use serde_json::{Value, json};

use replicadr_core::kubevirt::ReferencedKind;
use replicadr_core::wire::{LABEL_MANAGED_BY, MANAGED_BY};

use super::failover::FIELD_MANAGER;
use super::site::{self, BackupChoice, Planned, RecoveryError};
use super::vm_start::{data_volume_resource, vm_resource, vm_running};
use crate::active_site::Record;

/// What to clean.
#[derive(Debug, Clone)]
pub struct CleanOptions {
    /// The site this runs at: its plugin ConfigMap must name it, and it must not be active.
    pub site: String,
    pub backup: BackupChoice,
    pub policy: Option<String>,
    /// Remove; without it, only list.
    pub apply: bool,
    /// Remove although a VM of the set runs or a pod mounts one of its claims.
    pub force: bool,
    /// Also remove what the backup's namespaces hold here but the backup does not.
    pub include_absent: bool,
    /// How long the removals may take to finish.
    pub timeout: Duration,
    pub poll: Duration,
}

/// The kinds `clean` removes, in removal order: each depends on none after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    VirtualMachine,
    DataVolume,
    PersistentVolumeClaim,
    PersistentVolume,
    /// An object a VM names (a cloud-init Secret, an instance type): removed only from what a
    /// warm standby made ([`super::standby`]).
    Referenced(ReferencedKind),
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Kind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualMachine => "VirtualMachine",
            Kind::DataVolume => "DataVolume",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::Referenced(kind) => kind.kind(),
        }
    }

    /// Every kind, in removal order.
    pub fn every() -> impl Iterator<Item = Kind> {
        [
            Kind::VirtualMachine,
            Kind::DataVolume,
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
        ]
        .into_iter()
        .chain(ReferencedKind::ALL.into_iter().map(Kind::Referenced))
    }

    pub(crate) fn resource(self) -> ApiResource {
        match self {
            Kind::VirtualMachine => vm_resource(),
            Kind::DataVolume => data_volume_resource(),
            Kind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            Kind::PersistentVolume => ApiResource::erase::<PersistentVolume>(&()),
            Kind::Referenced(kind) => ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(kind.group(), kind.version(), kind.kind()),
                kind.plural(),
            ),
        }
    }

    /// Its dependents stay when it is deleted: a VM's launcher pod and VMI, a `DataVolume`'s
    /// claim (removed on its own, under its UID, if it is stale too).
    fn orphans(self) -> bool {
        matches!(self, Kind::VirtualMachine | Kind::DataVolume)
    }
}

/// One object of the stale workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Sorted by kind first: the removal order.
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
    /// What it is bound to here.
    pub detail: String,
    /// Its UID when listed: only that object is deleted, never one made since under its name.
    #[serde(skip)]
    uid: Option<String>,
}

impl Target {
    /// `Kind namespace/name`.
    pub fn describe(&self) -> String {
        let kind = self.kind.as_str();
        match &self.namespace {
            Some(namespace) => format!("{kind} {namespace}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }

    /// `kind` `namespace/name`, deleted only while it has `uid`.
    pub(crate) fn new(
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        detail: String,
        uid: String,
    ) -> Self {
        target(kind, namespace, name, detail, Some(uid))
    }

    /// Its API: namespaced, or cluster-wide for a PV.
    fn api(&self, client: &Client) -> Api<DynamicObject> {
        let resource = self.kind.resource();
        match &self.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        }
    }
}

/// What `clean` found and did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanReport {
    pub site: String,
    /// The backups whose names were compared.
    pub backups: Vec<String>,
    /// Under the backups' names, not restored by them here.
    pub stale: Vec<Target>,
    /// In the backups' namespaces, not in the backups.
    pub absent: Vec<Target>,
    pub applied: bool,
    /// What was removed, `Kind namespace/name`, in order.
    pub removed: Vec<String>,
    /// Why nothing was removed, when refused.
    pub refused: Option<String>,
    pub failures: Vec<String>,
    /// The report ConfigMap, when something was removed.
    pub report_configmap: Option<String>,
}

/// Lists the stale workload at the site and, with `apply`, removes it.
pub async fn clean(
    client: &Client,
    namespace: &str,
    options: &CleanOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<CleanReport, RecoveryError> {
    let config = site::site_config(client, namespace).await?;
    if config.local_site.as_str() != options.site {
        return Err(RecoveryError::Config(format!(
            "--site is {:?} but ConfigMap {namespace}/{} names localSite {:?}: run clean against the cluster of site {}",
            options.site,
            config.configmap,
            config.local_site.as_str(),
            options.site
        )));
    }
    let mut report = CleanReport {
        site: options.site.clone(),
        ..CleanReport::default()
    };
    if let Some(refusal) = active_here(client, namespace, &config.site_map, &options.site).await {
        report.refused = Some(refusal);
        return Ok(report);
    }
    for planned in planned(client, namespace, options, progress).await? {
        report.backups.push(planned.backup.name.clone());
        stale_and_absent(&planned, &mut report);
    }
    report.stale.sort();
    report.stale.dedup();
    report.absent.sort();
    report.absent.dedup();
    report.absent.retain(|t| !report.stale.contains(t));
    if !options.apply {
        return Ok(report);
    }
    let mut targets = report.stale.clone();
    if options.include_absent {
        targets.extend(report.absent.iter().cloned());
    }
    targets.sort();
    if targets.is_empty() {
        return Ok(report);
    }
    let remade = remade_by_data_volumes(client, &targets).await?;
    if !remade.is_empty() {
        // Not overridable: the claim would come back empty under the backup's name.
        report.refused = Some(format!(
            "nothing was removed: {}; it is not part of the stale workload clean removes (a failover or failback here restored it, or it is absent from the backup and --include-absent was not given): check it, delete it or pass --include-absent, then run clean again",
            remade.join("; ")
        ));
        return Ok(report);
    }
    let busy = in_use(client, &targets).await?;
    if !busy.is_empty() && !options.force {
        report.refused = Some(format!(
            "nothing was removed: {}; stop them first (or pass --force)",
            busy.join("; ")
        ));
        return Ok(report);
    }
    report.applied = true;
    Box::pin(remove(client, &targets, options, &mut report, progress)).await?;
    store(client, namespace, &mut report).await?;
    Ok(report)
}

/// Why clean may not run here: this site is the active one, or that cannot be told.
pub(crate) async fn active_here(
    client: &Client,
    namespace: &str,
    sites: &replicadr_core::sitemap::SiteMap,
    site: &str,
) -> Option<String> {
    let records = match Record::every(client, namespace).await {
        Ok(records) => records,
        Err(error) => {
            return Some(format!(
                "{error}; clean removes a workload only at a site known not to be active"
            ));
        }
    };
    for record in records {
        match record.current(sites).await {
            Ok(active) if active.site == site => {
                return Some(format!(
                    "the active-site record {} names {}: this site's workload is the one in use, and clean removes a workload only at a site that is not active",
                    record.url(),
                    active.describe()
                ));
            }
            Ok(_) => {}
            Err(error) => {
                return Some(format!(
                    "{error}; clean removes a workload only at a site known not to be active"
                ));
            }
        }
    }
    None
}

/// The backups the failback would restore, planned here: the same selection as `plan`.
async fn planned(
    client: &Client,
    namespace: &str,
    options: &CleanOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Vec<Planned>, RecoveryError> {
    let policies = match (&options.backup, &options.policy) {
        (BackupChoice::Named(_), _) | (_, Some(_)) => vec![options.policy.clone()],
        (BackupChoice::LatestVerified, None) => {
            let (policies, _) = site::policies_to_restore(client, namespace, &options.site).await?;
            if policies.is_empty() {
                vec![None]
            } else {
                policies.into_iter().map(Some).collect()
            }
        }
    };
    let mut planned = Vec::new();
    for policy in policies {
        planned.push(
            Box::pin(site::plan_at_site(
                client,
                namespace,
                &options.site,
                &options.backup,
                site::Scope {
                    policy: policy.as_deref(),
                    source_site: None,
                },
                Timestamp::now(),
                progress,
            ))
            .await?,
        );
    }
    Ok(planned)
}

/// The stale objects under the backup's names, and the absent ones in its namespaces.
fn stale_and_absent(planned: &Planned, report: &mut CleanReport) {
    let contents = &planned.contents;
    let existing = &planned.existing;
    let vm_key = |ns: &str, name: &str| (ns.to_owned(), name.to_owned());
    let in_backup_vms: BTreeSet<(String, String)> = contents
        .vms
        .iter()
        .map(|vm| vm_key(&vm.namespace, &vm.name))
        .collect();
    let in_backup_claims: BTreeSet<(String, String)> = contents
        .pvcs
        .iter()
        .map(|pvc| vm_key(&pvc.namespace, &pvc.name))
        .collect();
    let namespaces: BTreeSet<String> = contents.namespaces().into_iter().collect();
    let not_ours = |object: &&Value| !existing.restored_here(object);
    for ((ns, name), vm) in existing.vms.iter().filter(|(_, v)| not_ours(v)) {
        let target = target(Kind::VirtualMachine, Some(ns), name, vm_detail(vm), uid(vm));
        if in_backup_vms.contains(&vm_key(ns, name)) {
            report.stale.push(target);
        } else {
            report.absent.push(target);
        }
    }
    let mut absent_claims = BTreeSet::new();
    let mut stale_claims = BTreeSet::new();
    for ((ns, name), claim) in existing.claims.iter().filter(|(_, c)| not_ours(c)) {
        let detail = format!(
            "bound to {}",
            claim
                .pointer("/spec/volumeName")
                .and_then(Value::as_str)
                .unwrap_or("no volume")
        );
        let target = target(
            Kind::PersistentVolumeClaim,
            Some(ns),
            name,
            detail,
            uid(claim),
        );
        if in_backup_claims.contains(&vm_key(ns, name)) {
            stale_claims.insert(vm_key(ns, name));
            report.stale.push(target);
        } else {
            absent_claims.insert(vm_key(ns, name));
            report.absent.push(target);
        }
    }
    for (name, pv) in existing.pvs.iter().filter(|(_, p)| not_ours(p)) {
        let claim = replicadr_core::objects::claim_ref(pv);
        let detail = format!(
            "claimed by {}, {}",
            claim
                .as_ref()
                .map_or_else(|| "no claim".to_owned(), |(ns, n)| format!("{ns}/{n}")),
            super::plan::location(pv).unwrap_or_else(|| "not NFS".to_owned())
        );
        let target = target(Kind::PersistentVolume, None, name, detail, uid(pv));
        let claimed_by = |set: &BTreeSet<(String, String)>| {
            claim
                .as_ref()
                .is_some_and(|(ns, n)| namespaces.contains(ns) && set.contains(&vm_key(ns, n)))
        };
        // A PV of the backup's name, or the volume of a stale claim (whose new volume the
        // backup names instead), is stale too.
        if contents.pvs.contains_key(name) || claimed_by(&stale_claims) {
            report.stale.push(target);
        } else if claim.as_ref().is_some_and(|(ns, n)| {
            namespaces.contains(ns) && absent_claims.contains(&vm_key(ns, n))
        }) {
            report.absent.push(target);
        }
    }
    let in_backup_dvs: BTreeSet<(String, String)> = contents
        .data_volumes
        .iter()
        .map(|dv| vm_key(&dv.namespace, &dv.name))
        .collect();
    for ((ns, name), dv) in existing.data_volumes.iter().filter(|(_, d)| not_ours(d)) {
        let key = vm_key(ns, name);
        let phase = dv
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .unwrap_or("no phase");
        let target = target(
            Kind::DataVolume,
            Some(ns),
            name,
            format!("{phase}, keeps claim {name}"),
            uid(dv),
        );
        // CDI keeps a claim of the DataVolume's name: one over a stale claim would make the
        // claim again, empty, so it is stale with it.
        if in_backup_dvs.contains(&key) || stale_claims.contains(&key) {
            report.stale.push(target);
        } else {
            report.absent.push(target);
        }
    }
}

fn target(
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    detail: String,
    uid: Option<String>,
) -> Target {
    Target {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        detail,
        uid,
    }
}

fn uid(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn vm_detail(vm: &Value) -> String {
    format!(
        "run strategy {}{}",
        replicadr_core::contents::run_strategy(vm),
        if vm_running(vm) { ", running" } else { "" }
    )
}

/// What outside the targets would make a listed claim again, new and empty: a `DataVolume` of
/// its name (CDI keeps a `DataVolume`'s claim in place), or a VM whose `dataVolumeTemplates`
/// name it (KubeVirt makes the missing `DataVolume`, even for a halted VM).
async fn remade_by_data_volumes(
    client: &Client,
    targets: &[Target],
) -> Result<Vec<String>, kube::Error> {
    let targeted = |kind: Kind, namespace: &str, name: &str| {
        targets
            .iter()
            .any(|t| t.kind == kind && t.namespace.as_deref() == Some(namespace) && t.name == name)
    };
    let claims: Vec<&Target> = targets
        .iter()
        .filter(|t| t.kind == Kind::PersistentVolumeClaim)
        .collect();
    let namespaces: BTreeSet<&str> = claims
        .iter()
        .filter_map(|t| t.namespace.as_deref())
        .collect();
    let mut remade = Vec::new();
    for namespace in namespaces {
        let data_volumes = site::list_optional(client, namespace, &data_volume_resource()).await?;
        let vms = site::list_optional(client, namespace, &vm_resource()).await?;
        for claim in claims
            .iter()
            .filter(|t| t.namespace.as_deref() == Some(namespace))
        {
            if data_volumes.iter().any(|dv| dv.name_any() == claim.name)
                && !targeted(Kind::DataVolume, namespace, &claim.name)
            {
                remade.push(format!(
                    "DataVolume {namespace}/{} exists and CDI would make {} again, empty",
                    claim.name,
                    claim.describe()
                ));
            }
            for vm in vms
                .iter()
                .filter(|vm| !targeted(Kind::VirtualMachine, namespace, &vm.name_any()))
            {
                let templated = vm
                    .data
                    .pointer("/spec/dataVolumeTemplates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|t| {
                        t.pointer("/metadata/name").and_then(Value::as_str)
                            == Some(claim.name.as_str())
                    });
                if templated {
                    remade.push(format!(
                        "VirtualMachine {namespace}/{} stays and its dataVolumeTemplates name {}: KubeVirt would make the DataVolume and CDI the claim again, empty",
                        vm.name_any(),
                        claim.describe()
                    ));
                }
            }
        }
    }
    Ok(remade)
}

/// The targets' VMs that run and the pods that mount the targets' claims.
pub(crate) async fn in_use(
    client: &Client,
    targets: &[Target],
) -> Result<Vec<String>, kube::Error> {
    let mut busy = Vec::new();
    for target in targets.iter().filter(|t| t.kind == Kind::VirtualMachine) {
        let namespace = target.namespace.as_deref().unwrap_or_default();
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &vm_resource());
        if let Some(vm) = api.get_opt(&target.name).await?
            && vm_running(&vm.data)
        {
            busy.push(format!("{} is running", target.describe()));
        }
    }
    let claims: BTreeSet<(String, String)> = targets
        .iter()
        .filter(|t| t.kind == Kind::PersistentVolumeClaim)
        .map(|t| (t.namespace.clone().unwrap_or_default(), t.name.clone()))
        .collect();
    let namespaces: BTreeSet<&String> = claims.iter().map(|(ns, _)| ns).collect();
    for namespace in namespaces {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        for pod in pods.list(&ListParams::default()).await?.items {
            let mounted = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .filter(|c| claims.contains(&(namespace.clone(), c.claim_name.clone())))
                .map(|c| c.claim_name.clone())
                .collect::<Vec<_>>();
            for claim in mounted {
                busy.push(format!(
                    "pod {namespace}/{} mounts PersistentVolumeClaim {namespace}/{claim}",
                    pod.name_any()
                ));
            }
        }
    }
    Ok(busy)
}

/// Removes the targets in order, each kind gone before the next: VMs and `DataVolumes` (their
/// dependents orphaned, so nothing goes with them), then claims, then PVs; before anything, every
/// PV of the set and every PV bound to a claim of the set is set to `Retain`, so no deletion
/// reaches data on the exports. Each object is deleted only if it still has the UID it was listed
/// with. A kind that is not gone in time, or whose deletion failed, stops the removal.
pub(crate) async fn remove(
    client: &Client,
    targets: &[Target],
    options: &CleanOptions,
    report: &mut CleanReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), kube::Error> {
    if !retain_every_volume(client, targets, report).await? {
        report.failures.push(
            "nothing was removed: every PV must be Retain before anything is deleted".to_owned(),
        );
        return Ok(());
    }
    for group in targets.chunk_by(|a, b| a.kind == b.kind) {
        let failed_before = report.failures.len();
        for target in group {
            match delete_guarded(
                &target.api(client),
                &target.name,
                target.uid.clone(),
                target.kind.orphans(),
            )
            .await
            {
                Ok(true) => {
                    progress(format!("removed {}", target.describe()));
                    report.removed.push(target.describe());
                }
                Ok(false) => {}
                Err(error) => report
                    .failures
                    .push(format!("cannot remove {}: {error}", target.describe())),
            }
        }
        // The next kind only once this one is gone: a claim is not deleted while the
        // DataVolume that keeps it is still there, whether its deletion is slow or failed.
        let mut left = wait_gone(client, group, options, report).await?;
        left.extend(
            report.failures[failed_before..]
                .iter()
                .map(|failure| format!("not deleted ({failure})")),
        );
        if !left.is_empty() {
            let rest: Vec<String> = targets
                .iter()
                .filter(|t| t.kind > group[0].kind)
                .map(Target::describe)
                .collect();
            report.failures.push(format!(
                "still there after {}: {}; not removed, since they depend on it: {}",
                crate::duration::human(options.timeout),
                left.join(", "),
                if rest.is_empty() {
                    "nothing".to_owned()
                } else {
                    rest.join(", ")
                }
            ));
            return Ok(());
        }
    }
    Ok(())
}

/// Sets every PV of the targets, and every PV bound to or claimed by a claim of the targets, to
/// `Retain`; whether all of them are.
async fn retain_every_volume(
    client: &Client,
    targets: &[Target],
    report: &mut CleanReport,
) -> Result<bool, kube::Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut to_retain: BTreeSet<String> = targets
        .iter()
        .filter(|t| t.kind == Kind::PersistentVolume)
        .map(|t| t.name.clone())
        .collect();
    for target in targets
        .iter()
        .filter(|t| t.kind == Kind::PersistentVolumeClaim)
    {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            client.clone(),
            target.namespace.as_deref().unwrap_or_default(),
        );
        match api.get_opt(&target.name).await {
            Ok(claim) => to_retain.extend(claim.and_then(|c| c.spec?.volume_name)),
            Err(error) => report
                .failures
                .push(format!("cannot read {}: {error}", target.describe())),
        }
    }
    for pv in volumes.list(&ListParams::default()).await?.items {
        let claimed = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| {
                targets.iter().any(|t| {
                    t.kind == Kind::PersistentVolumeClaim
                        && t.namespace == r.namespace
                        && Some(&t.name) == r.name.as_ref()
                })
            });
        if claimed {
            to_retain.insert(pv.name_any());
        }
    }
    let mut unsafe_claims = BTreeSet::new();
    for volume in &to_retain {
        if let Err(error) = retain(&volumes, volume).await {
            report.failures.push(format!(
                "cannot set PersistentVolume {volume} to Retain: {error}; its claim is not deleted"
            ));
            unsafe_claims.insert(volume.clone());
        }
    }
    Ok(unsafe_claims.is_empty())
}

/// Sets a PV's reclaim policy to `Retain`, so that removing its claim or itself never deletes data.
async fn retain(volumes: &Api<PersistentVolume>, name: &str) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    match volumes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes `name` if it still has `uid` (a changed UID is a 409 from the API server: someone made
/// it again since it was listed, and it is left); whether it was deleted. `orphan` leaves its
/// dependents in place.
async fn delete_guarded<K>(
    api: &Api<K>,
    name: &str,
    uid: Option<String>,
    orphan: bool,
) -> Result<bool, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(uid) = uid else {
        return Ok(false);
    };
    let mut params = if orphan {
        DeleteParams::orphan()
    } else {
        DeleteParams::default()
    };
    params.preconditions = Some(Preconditions {
        uid: Some(uid),
        resource_version: None,
    });
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Waits until every removed object of `targets` is gone (finalizers done); what is left when
/// the timeout passes.
async fn wait_gone(
    client: &Client,
    targets: &[Target],
    options: &CleanOptions,
    report: &CleanReport,
) -> Result<Vec<String>, kube::Error> {
    let deadline = Instant::now() + options.timeout;
    loop {
        let mut left = Vec::new();
        for target in targets
            .iter()
            .filter(|t| report.removed.contains(&t.describe()))
        {
            if target.api(client).get_opt(&target.name).await?.is_some() {
                left.push(target.describe());
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return Ok(left);
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// Stores the report as a ConfigMap (`report.json`) and records an Event on it.
pub(crate) async fn store(
    client: &Client,
    namespace: &str,
    report: &mut CleanReport,
) -> Result<(), kube::Error> {
    let name = format!(
        "replicadr-clean-{}-{}",
        report.site,
        Timestamp::now().strftime("%Y%m%d%H%M%S")
    );
    report.report_configmap = Some(name.clone());
    let configmap: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {LABEL_MANAGED_BY: MANAGED_BY, "replicadr.io/operation": "clean"}},
        "data": {"report.json": serde_json::to_string_pretty(&*report).unwrap_or_default()},
    }))
    .expect("a valid ConfigMap");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let stored = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&configmap),
        )
        .await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: None,
        },
    );
    let ok = report.failures.is_empty();
    let event = Event {
        type_: if ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: if ok { "CleanSucceeded" } else { "CleanFailed" }.to_owned(),
        note: Some(
            format!(
                "removed {} stale objects at site {}: {}",
                report.removed.len(),
                report.site,
                report.removed.join(", ")
            )
            .chars()
            .take(1000)
            .collect(),
        ),
        action: "Clean".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &stored.object_ref(&())).await {
        tracing::warn!(%error, "cannot record the clean Event");
    }
    Ok(())
}
