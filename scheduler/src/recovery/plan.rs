//! `replicadr plan`: what a restore of one backup at one site would do, without doing it. Every
//! VM, PVC and PV per namespace, each NFS PV's export before and after the restore plugin's
//! rewrite (the plugin's own code, run on a copy), and every problem that would leave the restore
//! incomplete: the backup invariants ([`replicadr_core::invariants`], the same checks and reasons
//! as verification) and what only this site can tell (a PV of the same name here, the backup's
//! age, its verification). The failover runs the same plan first and checks its result against it.
//!
//! The plan also compares the backup with the previous verified backup of its policy, when there
//! is one: a backup that is empty or lost more than half of the VMs or claims is refused
//! ([`Reason::BackupShrank`](invariants::Reason::BackupShrank)), naming both backups so the
//! operator chooses; each VM it lost is a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use replicadr_core::contents::{BackupContents, DataVolumeItem, LeftOutItem, PvcItem, VmItem};
use replicadr_core::invariants::{self, Shrink, SnapshotSeen, Violation};
use replicadr_core::kubevirt::{ReferencedKind, VmReference};
use replicadr_core::remap::{Outcome, SiteRemap};
use replicadr_core::sitemap::{SiteMap, SiteName};
use serde::Serialize;
use serde_json::Value;

pub use replicadr_core::invariants::Severity;
/// `server:path` of an NFS PV.
pub use replicadr_core::nfs::location;

/// Plan reasons about this site rather than the backup's contents.
pub mod reason {
    /// The verifier failed the backup at this site (Blocking), or could not run (Warning).
    pub const BACKUP_NOT_VERIFIED: &str = "BackupNotVerified";
    /// The backup is older than the policy's RPO (Warning).
    pub const RPO_EXCEEDED: &str = "RpoExceeded";
    /// A PV of the same name exists here pointing elsewhere (Blocking).
    pub const PERSISTENT_VOLUME_EXISTS: &str = "PersistentVolumeExists";
    /// A VM, `DataVolume`, PVC or PV the backup holds already exists here and was not restored
    /// by this operation (Blocking): Velero would keep it as it is.
    pub const OBJECT_EXISTS: &str = "ObjectExists";
    /// The backup has no `replicadr.io/site` label: the site it came from is assumed, and the
    /// plan says from what (Warning).
    pub const SOURCE_SITE_ASSUMED: &str = "SourceSiteAssumed";
    /// The backup was made at the site it would be restored to: it holds this site's own earlier
    /// state, not the other site's (Warning; only a named backup gets here).
    pub const BACKUP_FROM_THIS_SITE: &str = "BackupFromThisSite";
    /// A VM with `runStrategy: Manual` ran when backed up: the restore gives it `Manual` back,
    /// which KubeVirt starts only when someone does, so it stays stopped (Warning).
    pub const MANUAL_VM_NOT_STARTED: &str = "ManualVmNotStarted";
}

/// The site a backup came from, and whether that is known or assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSite {
    /// The site; `None` when it cannot be told (say it with `--source-site`).
    pub site: Option<String>,
    /// Not read from the backup's `replicadr.io/site` label.
    pub assumed: bool,
    /// How the site was found: the label, `--source-site`, or where the Backup object appeared.
    pub how: String,
}

impl SourceSite {
    /// Read from the backup's `replicadr.io/site` label.
    pub fn labelled(site: &str) -> Self {
        Self {
            site: Some(site.to_owned()),
            assumed: false,
            how: format!("its label {}={site}", crate::velero::LABEL_SITE),
        }
    }
}

/// Velero's label on every object a restore created: the Restore's name.
pub use crate::velero::LABEL_RESTORE_NAME;

/// The Restore that made `object` (its [`LABEL_RESTORE_NAME`]), if a restore made it.
pub fn restored_by(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/labels")?
        .get(LABEL_RESTORE_NAME)?
        .as_str()
}

/// What already exists at the site under the names the backup holds, and which of this backup's
/// failover or failback Restores at this site made what.
#[derive(Debug, Default, Clone)]
pub struct Existing {
    /// PVs by name.
    pub pvs: BTreeMap<String, Value>,
    /// PVCs by `(namespace, name)`.
    pub claims: BTreeMap<(String, String), Value>,
    /// VirtualMachines by `(namespace, name)`.
    pub vms: BTreeMap<(String, String), Value>,
    /// CDI `DataVolumes` by `(namespace, name)`.
    pub data_volumes: BTreeMap<(String, String), Value>,
    /// The objects VMs of the backup need that the backup lacks and that exist here, by
    /// [`replicadr_core::contents::reference_key`].
    pub referenced: BTreeSet<String>,
    /// The kinds VMs of the backup reference whose API the site does not serve (their CRD is not
    /// installed): objects of them in the backup cannot be restored here.
    pub unserved: BTreeSet<ReferencedKind>,
    /// The names of this backup's failover and failback Restores at this site (every attempt):
    /// an object labelled [`LABEL_RESTORE_NAME`] with one of them was restored by this operation.
    pub own_restores: BTreeSet<String>,
    /// The Restores of other backups in the same takeover at this site, by name, with their
    /// backup: what they restored is not stale but the state this site already runs.
    pub takeover_restores: BTreeMap<String, String>,
}

impl Existing {
    /// The Restore of another backup in this takeover that made `object`, and that backup.
    pub fn restored_by_takeover(&self, object: &Value) -> Option<(&str, &str)> {
        self.takeover_restores
            .get_key_value(restored_by(object)?)
            .map(|(r, b)| (r.as_str(), b.as_str()))
    }

    /// Whether `object` was restored by one of [`Self::own_restores`].
    pub fn restored_here(&self, object: &Value) -> bool {
        restored_by(object).is_some_and(|restore| self.own_restores.contains(restore))
    }
}

/// One problem, naming the object, what is wrong and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// A stable CamelCase reason for scripts.
    pub reason: &'static str,
    /// `Kind namespace/name`.
    pub object: String,
    pub message: String,
}

/// How the backup was checked before planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail")]
pub enum Verification {
    /// The verifier passed it from object storage at this site.
    Passed,
    /// The verifier found problems (its summary).
    Failed(String),
    /// Not verified (why: offline, or object storage unreachable).
    NotRun(String),
}

/// The backup being planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    pub name: String,
    pub policy: Option<String>,
    /// The site the backup came from.
    pub source: SourceSite,
    /// When Velero started reading the cluster: the recovery point.
    pub recovery_point: Option<Timestamp>,
    pub verification: Verification,
}

/// The previous verified backup of the same policy, that the planned one is compared with.
#[derive(Debug, Clone, Copy)]
pub struct PreviousBackup<'a> {
    pub name: &'a str,
    pub contents: &'a BackupContents,
}

/// What the plan reads besides the backup.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub backup: BackupFacts,
    pub contents: &'a BackupContents,
    /// The previous verified backup of the policy, when there is one.
    pub previous: Option<PreviousBackup<'a>>,
    pub site_map: &'a SiteMap,
    /// The site the restore runs at.
    pub site: SiteName,
    pub now: Timestamp,
    /// The policy's RPO, if it has one.
    pub rpo: Option<Duration>,
    /// What already exists at the site, when a cluster was reachable.
    pub existing: Option<&'a Existing>,
}

/// What a PV's restore does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VolumeAction {
    /// Restored pointing at this site's replica of its export.
    Rewrite,
    /// Restored unchanged: already on this site's export.
    AlreadyLocal,
    /// Restored unchanged: not NFS.
    NotNfs,
    /// Restored unchanged although it points at another site (`unmapped: keep`).
    KeptUnmapped,
    /// The restore plugin fails this PV.
    Fails,
    /// Not restored: Velero provisions a new, empty volume (Delete reclaim policy).
    Reprovisioned,
}

/// One PV of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePlan {
    pub name: String,
    /// `namespace/name` of the claim it is bound to.
    pub claim: Option<String>,
    pub reclaim_policy: String,
    pub action: VolumeAction,
    /// The backup invariants this PV breaks.
    pub problems: Vec<invariants::Reason>,
    /// `server:path` in the backup.
    pub before: Option<String>,
    /// `server:path` after the restore.
    pub after: Option<String>,
}

/// The VMs and PVCs of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePlan {
    pub name: String,
    pub virtual_machines: Vec<VmItem>,
    pub data_volumes: Vec<DataVolumeItem>,
    pub claims: Vec<PvcItem>,
    /// What the restore leaves out: VMIs and KubeVirt pods (KubeVirt makes them again), and
    /// claims whose CDI import had not completed.
    pub left_out: Vec<LeftOutItem>,
}

/// The dry run's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub backup: String,
    pub policy: Option<String>,
    pub site: String,
    /// The site the backup came from.
    pub source: SourceSite,
    pub recovery_point: Option<Timestamp>,
    /// The backup's age now: the RPO a failover with it achieves.
    pub age_seconds: Option<u64>,
    pub verification: Verification,
    /// The previous verified backup of the policy this one was compared with.
    pub compared_with: Option<String>,
    pub namespaces: Vec<NamespacePlan>,
    pub volumes: Vec<VolumePlan>,
    pub problems: Vec<Problem>,
    /// No blocking problem.
    pub complete: bool,
}

impl Plan {
    /// The planned PV `name`.
    pub fn volume(&self, name: &str) -> Option<&VolumePlan> {
        self.volumes.iter().find(|v| v.name == name)
    }

    /// Every VM, in namespace order.
    pub fn virtual_machines(&self) -> impl Iterator<Item = &VmItem> {
        self.namespaces.iter().flat_map(|n| &n.virtual_machines)
    }

    /// Every PVC, in namespace order.
    pub fn claims(&self) -> impl Iterator<Item = &PvcItem> {
        self.namespaces.iter().flat_map(|n| &n.claims)
    }

    /// The blocking problems.
    pub fn blocking(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Blocking)
    }
}

/// The problems found so far.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, severity: Severity, reason: &'static str, object: String, message: String) {
        self.0.push(Problem {
            severity,
            reason,
            object,
            message,
        });
    }

    /// A broken backup invariant, with its reason's severity.
    fn violation(&mut self, violation: Violation) {
        self.push(
            violation.severity(),
            violation.reason.as_str(),
            violation.object,
            violation.message,
        );
    }
}

/// Plans the restore.
pub fn build(input: &PlanInput<'_>) -> Plan {
    let PlanInput {
        backup,
        contents,
        previous,
        site_map,
        site,
        now,
        rpo,
        existing,
    } = input;
    let mut problems = Problems::default();
    let age = backup
        .recovery_point
        .map(|point| now.duration_since(point).as_secs().max(0).unsigned_abs());
    backup_problems(backup, site, age, *rpo, &mut problems);
    let remap = SiteRemap::new((*site_map).clone(), site.clone());
    let volumes = volume_plans(contents, &remap, site, *existing, &mut problems);
    claim_problems(contents, site, *existing, &mut problems);
    manual_vm_problems(contents, &mut problems);
    if let Some(existing) = existing {
        existing_problems(&backup.name, contents, site, existing, &mut problems);
    }
    if let Some(previous) = previous {
        shrink_problems(&backup.name, contents, previous, &mut problems);
    }
    let namespaces = contents
        .namespaces()
        .into_iter()
        .map(|name| NamespacePlan {
            virtual_machines: contents
                .vms
                .iter()
                .filter(|vm| vm.namespace == name)
                .cloned()
                .collect(),
            data_volumes: contents
                .data_volumes
                .iter()
                .filter(|dv| dv.namespace == name)
                .cloned()
                .collect(),
            claims: contents
                .pvcs
                .iter()
                .filter(|pvc| pvc.namespace == name)
                .cloned()
                .collect(),
            left_out: contents
                .left_out
                .iter()
                .filter(|item| item.namespace == name)
                .cloned()
                .chain(
                    contents
                        .pvcs
                        .iter()
                        .filter(|pvc| pvc.namespace == name && pvc.left_out.is_some())
                        .map(|pvc| LeftOutItem {
                            namespace: pvc.namespace.clone(),
                            kind: "PersistentVolumeClaim",
                            name: pvc.name.clone(),
                            why: "its CDI import had not completed".to_owned(),
                        }),
                )
                .collect(),
            name,
        })
        .collect();
    let mut problems = problems.0;
    problems.sort_by(|a, b| (a.severity, &a.object).cmp(&(b.severity, &b.object)));
    let complete = problems.iter().all(|p| p.severity == Severity::Warning);
    Plan {
        backup: backup.name.clone(),
        policy: backup.policy.clone(),
        site: site.to_string(),
        source: backup.source.clone(),
        recovery_point: backup.recovery_point,
        age_seconds: age,
        verification: backup.verification.clone(),
        compared_with: previous.map(|p| p.name.to_owned()),
        namespaces,
        volumes,
        problems,
        complete,
    }
}

/// The backup's own problems: verification and age.
fn backup_problems(
    backup: &BackupFacts,
    site: &SiteName,
    age: Option<u64>,
    rpo: Option<Duration>,
    problems: &mut Problems,
) {
    match &backup.verification {
        Verification::Passed => {}
        Verification::Failed(summary) => problems.push(
            Severity::Blocking,
            reason::BACKUP_NOT_VERIFIED,
            format!("Backup {}", backup.name),
            format!("verification at site {site} failed: {summary}"),
        ),
        Verification::NotRun(why) => problems.push(
            Severity::Warning,
            reason::BACKUP_NOT_VERIFIED,
            format!("Backup {}", backup.name),
            format!("not verified: {why}"),
        ),
    }
    let object = || format!("Backup {}", backup.name);
    if backup.source.site.as_deref() == Some(site.as_str()) {
        problems.push(
            Severity::Warning,
            reason::BACKUP_FROM_THIS_SITE,
            object(),
            format!(
                "made at site {site} itself ({}): it holds this site's own earlier state, not the other site's",
                backup.source.how
            ),
        );
    } else if backup.source.assumed {
        problems.push(
            Severity::Warning,
            reason::SOURCE_SITE_ASSUMED,
            object(),
            backup.source.how.clone(),
        );
    }
    if let (Some(age), Some(rpo)) = (age, rpo)
        && age > rpo.as_secs()
    {
        problems.push(
            Severity::Warning,
            reason::RPO_EXCEEDED,
            format!("Backup {}", backup.name),
            format!(
                "the backup is {} old, more than the policy's RPO of {}: a failover with it loses more than the objective allows",
                crate::duration::human(Duration::from_secs(age)),
                crate::duration::human(rpo)
            ),
        );
    }
}

/// Each VM that ran under `runStrategy: Manual` when backed up: no restore starts it.
fn manual_vm_problems(contents: &BackupContents, problems: &mut Problems) {
    for vm in contents
        .vms
        .iter()
        .filter(|vm| vm.run_strategy == "Manual" && vm.was_running)
    {
        problems.push(
            Severity::Warning,
            reason::MANUAL_VM_NOT_STARTED,
            format!("VirtualMachine {}/{}", vm.namespace, vm.name),
            format!(
                "runStrategy Manual, and running when backed up: the restore gives it Manual back, which KubeVirt starts only when asked, so it stays stopped; start it once the restore is checked (virtctl start {} -n {})",
                vm.name, vm.namespace
            ),
        );
    }
}

/// Each PV before and after the restore plugin's rewrite, and its problems: the per-volume
/// backup invariants run onto this site, and a PV of the same name already here.
fn volume_plans(
    contents: &BackupContents,
    remap: &SiteRemap,
    site: &SiteName,
    existing: Option<&Existing>,
    problems: &mut Problems,
) -> Vec<VolumePlan> {
    let claims_by_volume: BTreeMap<&str, &PvcItem> = contents
        .pvcs
        .iter()
        .filter_map(|pvc| pvc.volume.as_deref().map(|v| (v, pvc)))
        .collect();
    let mut volumes = Vec::new();
    for (name, pv) in &contents.pvs {
        let object = format!("PersistentVolume {name}");
        let claim = claims_by_volume
            .get(name.as_str())
            .map(|pvc| format!("{}/{}", pvc.namespace, pvc.name));
        let check = invariants::check_volume(name, pv, std::slice::from_ref(remap));
        let before = location(pv);
        let mut plan = VolumePlan {
            name: name.clone(),
            claim,
            reclaim_policy: check.reclaim_policy.clone(),
            action: VolumeAction::NotNfs,
            problems: check.violations.iter().map(|v| v.reason).collect(),
            before: before.clone(),
            after: before,
        };
        for violation in check.violations {
            problems.violation(violation);
        }
        if check.reprovisioned {
            plan.action = VolumeAction::Reprovisioned;
            plan.after = None;
            volumes.push(plan);
            continue;
        }
        match check
            .rewrites
            .into_iter()
            .next()
            .map(|(_, outcome)| outcome)
        {
            Some(Ok(Outcome::Remapped { to, .. })) => {
                plan.action = VolumeAction::Rewrite;
                plan.after = Some(to);
            }
            Some(Ok(Outcome::AlreadyLocal)) => plan.action = VolumeAction::AlreadyLocal,
            Some(Ok(Outcome::NotNfs)) | None => plan.action = VolumeAction::NotNfs,
            Some(Ok(Outcome::KeptUnmapped { .. })) => plan.action = VolumeAction::KeptUnmapped,
            Some(Err(_)) => {
                plan.action = VolumeAction::Fails;
                plan.after = None;
            }
        }
        if let (Some(existing), Some(after)) = (
            existing
                .filter(|e| e.pvs.get(name).is_some_and(|pv| e.restored_here(pv)))
                .and_then(|e| e.pvs.get(name)),
            plan.after.as_deref(),
        ) {
            let there = location(existing);
            if there.as_deref() != Some(after) {
                problems.push(
                    Severity::Blocking,
                    reason::PERSISTENT_VOLUME_EXISTS,
                    object,
                    format!(
                        "a PV of this name already exists at site {site} pointing at {}, not {after}: Velero would keep it and the claim would bind to it; delete it (after checking it is stale) and plan again",
                        there.as_deref().unwrap_or("a non-NFS volume")
                    ),
                );
            }
        }
        volumes.push(plan);
    }
    volumes
}

/// Every VM, `DataVolume`, PVC and PV of the backup that already exists at the site and was not
/// restored by this backup's own failover or failback: Velero keeps what exists
/// (`existingResourcePolicy: none`), so the backup's object would not be restored and the old one
/// would be taken for it.
fn existing_problems(
    backup: &str,
    contents: &BackupContents,
    site: &SiteName,
    existing: &Existing,
    problems: &mut Problems,
) {
    let stale = |what: String, object: &str, detail: String, live: &Value| {
        stale_message(backup, site, existing, &what, object, &detail, live)
    };
    for vm in &contents.vms {
        let key = (vm.namespace.clone(), vm.name.clone());
        if let Some(live) = existing
            .vms
            .get(&key)
            .filter(|v| !existing.restored_here(v))
        {
            let strategy = replicadr_core::contents::run_strategy(live);
            problems.push(
                Severity::Blocking,
                reason::OBJECT_EXISTS,
                format!("VirtualMachine {}/{}", vm.namespace, vm.name),
                stale(
                    format!("a VirtualMachine {}/{}", vm.namespace, vm.name),
                    "VM",
                    format!(
                        "run strategy {strategy} here, {} in the backup",
                        vm.run_strategy
                    ),
                    live,
                ),
            );
        }
    }
    existing_data_volumes(backup, contents, site, existing, problems);
    for pvc in &contents.pvcs {
        let key = (pvc.namespace.clone(), pvc.name.clone());
        if let Some(live) = existing
            .claims
            .get(&key)
            .filter(|c| !existing.restored_here(c))
        {
            let bound = live.pointer("/spec/volumeName").and_then(Value::as_str);
            problems.push(
                Severity::Blocking,
                reason::OBJECT_EXISTS,
                format!("PersistentVolumeClaim {}/{}", pvc.namespace, pvc.name),
                stale(
                    format!("a PersistentVolumeClaim {}/{}", pvc.namespace, pvc.name),
                    "claim",
                    format!(
                        "bound to {} here; the backup binds it to {}",
                        bound.unwrap_or("no volume"),
                        pvc.volume.as_deref().unwrap_or("no volume")
                    ),
                    live,
                ),
            );
        }
    }
    let claims_by_volume: BTreeMap<&str, &PvcItem> = contents
        .pvcs
        .iter()
        .filter_map(|pvc| pvc.volume.as_deref().map(|v| (v, pvc)))
        .collect();
    for name in contents.pvs.keys() {
        let Some(live) = existing
            .pvs
            .get(name)
            .filter(|v| !existing.restored_here(v))
        else {
            continue;
        };
        let claim_ref =
            replicadr_core::objects::claim_ref(live).map(|(ns, name)| format!("{ns}/{name}"));
        let backed_up = claims_by_volume
            .get(name.as_str())
            .map(|pvc| format!("{}/{}", pvc.namespace, pvc.name));
        problems.push(
            Severity::Blocking,
            reason::OBJECT_EXISTS,
            format!("PersistentVolume {name}"),
            stale(
                format!("a PersistentVolume {name}"),
                "PV",
                format!(
                    "claimed by {} and pointing at {} here; the backup's is claimed by {}",
                    claim_ref.as_deref().unwrap_or("no claim"),
                    location(live).as_deref().unwrap_or("a non-NFS volume"),
                    backed_up.as_deref().unwrap_or("no claim")
                ),
                live,
            ),
        );
    }
}

/// Every `DataVolume` of the backup that already exists at the site and was not restored by this
/// backup's own failover or failback, as [`existing_problems`] does for the other kinds.
fn existing_data_volumes(
    backup: &str,
    contents: &BackupContents,
    site: &SiteName,
    existing: &Existing,
    problems: &mut Problems,
) {
    let stale = |what: String, object: &str, detail: String, live: &Value| {
        stale_message(backup, site, existing, &what, object, &detail, live)
    };
    for dv in &contents.data_volumes {
        let key = (dv.namespace.clone(), dv.name.clone());
        if let Some(live) = existing
            .data_volumes
            .get(&key)
            .filter(|d| !existing.restored_here(d))
        {
            let phase = |p: Option<&str>| match p {
                Some(p) if !p.is_empty() => p.to_owned(),
                _ => "no phase".to_owned(),
            };
            problems.push(
                Severity::Blocking,
                reason::OBJECT_EXISTS,
                format!("DataVolume {}/{}", dv.namespace, dv.name),
                stale(
                    format!("a DataVolume {}/{}", dv.namespace, dv.name),
                    "DataVolume",
                    format!(
                        "{} here, {} in the backup; CDI keeps claim {} for it",
                        phase(live.pointer("/status/phase").and_then(Value::as_str)),
                        phase(Some(&dv.phase)),
                        dv.name
                    ),
                    live,
                ),
            );
        }
    }
}

/// Why an existing object blocks: made by another backup's Restore in this takeover (the state
/// the site already runs: name that backup to go on), or left from before.
fn stale_message(
    backup: &str,
    site: &SiteName,
    existing: &Existing,
    what: &str,
    object: &str,
    detail: &str,
    live: &Value,
) -> String {
    if let Some((restore, other)) = existing.restored_by_takeover(live) {
        return format!(
            "{what} was restored at site {site} by Restore {restore} of backup {other} in this same takeover ({detail}): this site already runs that backup's state, and Velero would keep it rather than restore backup {backup}'s {object}. To go on with the restore already made, run the same command with `--backup {other}`; to restore {backup} instead, remove what Restore {restore} made first"
        );
    }
    format!(
        "{what} already exists at site {site} and was not restored from backup {backup} by a failover or failback here ({detail}); Velero keeps what exists, so the backup's {object} would not be restored and the old one would be used instead. Remove it (after checking nothing needs it: it may be this site's state from before a failover, or a drill's leftover) and plan again"
    )
}

/// The backup invariants across items: claims bound to a PV in the backup, snapshots with their
/// replica, VM disks with their claim, `DataVolumes` CDI would adopt rather than import, and the
/// objects VMs need, in the backup or (when the site was read) at `site`.
fn claim_problems(
    contents: &BackupContents,
    site: &SiteName,
    existing: Option<&Existing>,
    problems: &mut Problems,
) {
    let references = contents.references();
    let broken = invariants::cross_check(&references, &[]);
    let claims: BTreeMap<String, &PvcItem> = contents
        .pvcs
        .iter()
        .map(|pvc| (format!("{}/{}", pvc.namespace, pvc.name), pvc))
        .collect();
    for key in &broken.unbound_claims {
        let pvc = claims[key];
        problems.violation(Violation::pvc_not_bound(
            &pvc.namespace,
            &pvc.name,
            pvc.replica_of_snapshot.as_deref(),
        ));
    }
    for key in &broken.claims_without_pv {
        let pvc = claims[key];
        problems.violation(Violation::pv_missing(
            &pvc.namespace,
            &pvc.name,
            pvc.volume.as_deref().unwrap_or_default(),
        ));
    }
    for index in broken.snapshots_without_replica {
        let snapshot = &contents.snapshots[index];
        problems.violation(Violation::replica_pvc_missing(
            &snapshot.namespace,
            &snapshot.name,
            &snapshot.uid,
            SnapshotSeen::InBackup,
        ));
    }
    let disks: Vec<(&VmItem, &str)> = contents.vm_volumes().collect();
    for index in broken.vm_volumes_without_claim {
        let (vm, claim) = disks[index];
        problems.violation(Violation::vm_volume_missing(&vm.namespace, &vm.name, claim));
    }
    let mut left_out: Vec<&PvcItem> = broken
        .claims_left_out
        .iter()
        .map(|key| claims[key])
        .collect();
    left_out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for pvc in left_out {
        if let Some(hazard) = &pvc.left_out {
            problems.violation(Violation::claim_would_import(
                &pvc.namespace,
                &pvc.name,
                hazard,
            ));
        }
    }
    for (index, cause) in broken.data_volumes_would_import {
        let dv = &contents.data_volumes[index];
        problems.violation(Violation::data_volume_would_import(
            &dv.namespace,
            &dv.name,
            &dv.phase,
            cause,
        ));
    }
    let needed: Vec<(&VmItem, &VmReference)> = contents.vm_references().collect();
    let not_in_backup: BTreeSet<usize> = broken.references_not_in_backup.into_iter().collect();
    for (index, (vm, reference)) in needed.into_iter().enumerate() {
        if !not_in_backup.contains(&index) {
            // In the backup: restorable only where the kind's API is served.
            if existing.is_some_and(|e| e.unserved.contains(&reference.kind)) {
                problems.violation(Violation::reference_not_restorable(
                    &vm.namespace,
                    &vm.name,
                    reference,
                    site,
                ));
            }
            continue;
        }
        if existing.is_some_and(|e| e.referenced.contains(&reference.key())) {
            continue;
        }
        problems.violation(Violation::reference_missing(
            &vm.namespace,
            &vm.name,
            reference,
            existing.map(|_| site),
        ));
    }
}

/// What `backup` lacks of `previous`: each VM it held is a warning; losing everything, or more
/// than half of the VMs or of the claims, is blocking. Replica PVCs are left out of the claims:
/// they follow the snapshots of the day, not the workload.
fn shrink_problems(
    backup: &str,
    contents: &BackupContents,
    previous: &PreviousBackup<'_>,
    problems: &mut Problems,
) {
    let vms = |c: &BackupContents| -> BTreeSet<(String, String)> {
        c.vms
            .iter()
            .map(|vm| (vm.namespace.clone(), vm.name.clone()))
            .collect()
    };
    let claims = |c: &BackupContents| -> BTreeSet<(String, String)> {
        c.pvcs
            .iter()
            .filter(|pvc| pvc.replica_of_snapshot.is_none())
            .map(|pvc| (pvc.namespace.clone(), pvc.name.clone()))
            .collect()
    };
    let (vms_before, vms_now) = (vms(previous.contents), vms(contents));
    let (claims_before, claims_now) = (claims(previous.contents), claims(contents));
    let lost_vms: Vec<&(String, String)> = vms_before.difference(&vms_now).collect();
    let lost_claims: Vec<&(String, String)> = claims_before.difference(&claims_now).collect();
    for (namespace, name) in &lost_vms {
        problems.violation(Violation::vm_missing_from_backup(
            namespace,
            name,
            backup,
            previous.name,
        ));
    }
    let more_than_half = |lost: usize, before: usize| lost * 2 > before;
    if more_than_half(lost_vms.len(), vms_before.len())
        || more_than_half(lost_claims.len(), claims_before.len())
    {
        let missing: Vec<String> = lost_vms
            .iter()
            .map(|(namespace, name)| format!("VirtualMachine {namespace}/{name}"))
            .chain(
                lost_claims
                    .iter()
                    .map(|(namespace, name)| format!("PersistentVolumeClaim {namespace}/{name}")),
            )
            .collect();
        problems.violation(Violation::backup_shrank(&Shrink {
            backup,
            previous: previous.name,
            vms: (vms_before.len(), vms_before.len() - lost_vms.len()),
            claims: (claims_before.len(), claims_before.len() - lost_claims.len()),
            missing: &missing,
        }));
    }
}

#[cfg(test)]
mod tests;
