//! `replicadr plan`: what a restore of one backup at one site would do, without doing it. Every
//! VM, PVC and PV per namespace, each NFS PV's export before and after the restore plugin's
//! rewrite (the plugin's own code, run on a copy), and every problem that would leave the restore
//! incomplete. The failover runs the same plan first and checks its result against it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use replicadr_plugins::actions::nfs_volume::NfsLocation;
use replicadr_plugins::actions::pv_site_remap::{Outcome, PvSiteRemap};
use replicadr_plugins::sitemap::{SiteMap, SiteName};
use serde::Serialize;
use serde_json::Value;

use super::contents::{BackupContents, PvcItem, VmItem};

/// Whether a problem makes the restore incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    /// The restore would be incomplete or wrong: failover refuses without `--force`.
    Blocking,
    /// Worth knowing; the restore would still be complete.
    Warning,
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
    /// When Velero started reading the cluster: the recovery point.
    pub recovery_point: Option<Timestamp>,
    pub verification: Verification,
}

/// What the plan reads besides the backup.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub backup: BackupFacts,
    pub contents: &'a BackupContents,
    pub site_map: &'a SiteMap,
    /// The site the restore runs at.
    pub site: SiteName,
    pub now: Timestamp,
    /// The policy's RPO, if it has one.
    pub rpo: Option<Duration>,
    /// The PVs that already exist at the site, by name, when a cluster was reachable.
    pub existing_pvs: Option<&'a BTreeMap<String, Value>>,
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
    pub claims: Vec<PvcItem>,
}

/// The dry run's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub backup: String,
    pub policy: Option<String>,
    pub site: String,
    pub recovery_point: Option<Timestamp>,
    /// The backup's age now: the RPO a failover with it achieves.
    pub age_seconds: Option<u64>,
    pub verification: Verification,
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
}

/// Plans the restore.
pub fn build(input: &PlanInput<'_>) -> Plan {
    let PlanInput {
        backup,
        contents,
        site_map,
        site,
        now,
        rpo,
        existing_pvs,
    } = input;
    let mut problems = Problems::default();
    let age = backup
        .recovery_point
        .map(|point| now.duration_since(point).as_secs().max(0).unsigned_abs());
    backup_problems(backup, site, age, *rpo, &mut problems);
    let remap = PvSiteRemap::new((*site_map).clone(), site.clone());
    let volumes = volume_plans(contents, &remap, site, *existing_pvs, &mut problems);
    claim_problems(contents, &mut problems);
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
            claims: contents
                .pvcs
                .iter()
                .filter(|pvc| pvc.namespace == name)
                .cloned()
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
        recovery_point: backup.recovery_point,
        age_seconds: age,
        verification: backup.verification.clone(),
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
            "BackupNotVerified",
            format!("Backup {}", backup.name),
            format!("verification at site {site} failed: {summary}"),
        ),
        Verification::NotRun(why) => problems.push(
            Severity::Warning,
            "BackupNotVerified",
            format!("Backup {}", backup.name),
            format!("not verified: {why}"),
        ),
    }
    if let (Some(age), Some(rpo)) = (age, rpo)
        && age > rpo.as_secs()
    {
        problems.push(
            Severity::Warning,
            "RpoExceeded",
            format!("Backup {}", backup.name),
            format!(
                "the backup is {} old, more than the policy's RPO of {}: a failover with it loses more than the objective allows",
                crate::duration::human(Duration::from_secs(age)),
                crate::duration::human(rpo)
            ),
        );
    }
}

/// Each PV before and after the restore plugin's rewrite, and its problems.
fn volume_plans(
    contents: &BackupContents,
    remap: &PvSiteRemap,
    site: &SiteName,
    existing_pvs: Option<&BTreeMap<String, Value>>,
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
        let reclaim_policy = pv
            .pointer("/spec/persistentVolumeReclaimPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Retain")
            .to_owned();
        let before = location(pv);
        let mut plan = VolumePlan {
            name: name.clone(),
            claim,
            reclaim_policy,
            action: VolumeAction::NotNfs,
            before: before.clone(),
            after: before,
        };
        if plan.reclaim_policy == "Delete" {
            plan.action = VolumeAction::Reprovisioned;
            plan.after = None;
            problems.push(
                Severity::Blocking,
                "DeleteReclaimPolicy",
                object,
                "the backed-up copy has reclaim policy Delete, so Velero would provision a new, empty volume instead of restoring this one; the backup was taken without the replicadr.io/pv-retain plugin — take a new backup with it installed".to_owned(),
            );
            volumes.push(plan);
            continue;
        }
        let mut copy = pv.clone();
        match remap.remap(&mut copy) {
            Ok(Outcome::Remapped { to, .. }) => {
                plan.action = VolumeAction::Rewrite;
                plan.after = Some(to);
            }
            Ok(Outcome::AlreadyLocal) => plan.action = VolumeAction::AlreadyLocal,
            Ok(Outcome::NotNfs) => plan.action = VolumeAction::NotNfs,
            Ok(Outcome::KeptUnmapped { reason }) => {
                plan.action = VolumeAction::KeptUnmapped;
                problems.push(
                    Severity::Warning,
                    "UnmappedExport",
                    object.clone(),
                    format!(
                        "{reason}; restored unchanged because the site map says `unmapped: keep`, so it still points at {}",
                        plan.before.as_deref().unwrap_or("its old server")
                    ),
                );
            }
            Err(error) => {
                plan.action = VolumeAction::Fails;
                plan.after = None;
                problems.push(
                    Severity::Blocking,
                    "UnmappedExport",
                    object.clone(),
                    error.0,
                );
            }
        }
        if let (Some(existing), Some(after)) = (
            existing_pvs.and_then(|pvs| pvs.get(name)),
            plan.after.as_deref(),
        ) {
            let there = location(existing);
            if there.as_deref() != Some(after) {
                problems.push(
                    Severity::Blocking,
                    "PersistentVolumeExists",
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

/// Claims without their PV, snapshots without their replica, VM disks without their claim.
fn claim_problems(contents: &BackupContents, problems: &mut Problems) {
    for pvc in &contents.pvcs {
        let object = format!("PersistentVolumeClaim {}/{}", pvc.namespace, pvc.name);
        match pvc.volume.as_deref() {
            None => problems.push(
                Severity::Blocking,
                "ClaimNotBound",
                object,
                "the claim has no spec.volumeName in the backup, so it would be provisioned new and empty at this site".to_owned(),
            ),
            Some(volume) if !contents.pvs.contains_key(volume) => problems.push(
                Severity::Blocking,
                "VolumeMissing",
                object,
                format!(
                    "its PersistentVolume {volume} is not in the backup: include cluster-scoped resources (the scheduler's backups do) and back up again"
                ),
            ),
            Some(_) => {}
        }
    }

    let replicas: HashSet<(&str, &str)> = contents
        .pvcs
        .iter()
        .filter_map(|pvc| {
            pvc.replica_of_snapshot
                .as_deref()
                .map(|uid| (pvc.namespace.as_str(), uid))
        })
        .collect();
    for snapshot in &contents.snapshots {
        if !replicas.contains(&(snapshot.namespace.as_str(), snapshot.uid.as_str())) {
            problems.push(
                Severity::Blocking,
                "ReplicaMissing",
                format!("VolumeSnapshot {}/{}", snapshot.namespace, snapshot.name),
                "no replica PVC of this snapshot is in the backup, so the snapshot's data is not at this site: check the replicadr.io/snapshot-to-pvc plugin's warnings in the backup log".to_owned(),
            );
        }
    }

    let claims: HashSet<(&str, &str)> = contents
        .pvcs
        .iter()
        .map(|pvc| (pvc.namespace.as_str(), pvc.name.as_str()))
        .collect();
    for vm in &contents.vms {
        for disk in &vm.disks {
            if !claims.contains(&(vm.namespace.as_str(), disk.as_str())) {
                problems.push(
                    Severity::Blocking,
                    "DiskMissing",
                    format!("VirtualMachine {}/{}", vm.namespace, vm.name),
                    format!("its disk claim {disk} is not in the backup"),
                );
            }
        }
    }
}

/// `server:path` of an NFS PV.
pub fn location(pv: &Value) -> Option<String> {
    let spec = pv.get("spec")?.as_object()?;
    let location = NfsLocation::read(spec)?;
    Some(format!("{}:{}", location.server, location.path))
}

#[cfg(test)]
mod tests;
