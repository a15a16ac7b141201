//! What a backup must hold for a failover to restore it completely: the backup invariants, each
//! checked by one function here and reported under one [`Reason`] with one [`Severity`], whoever
//! asks. Verification (from object storage, after every backup), `replicadr plan` (before a
//! failover) and the failover's own checks all call these functions, so a backup the plan would
//! block never verifies, and nothing verification accepts blocks the plan.
//!
//! Two kinds of check:
//! - per volume, on each PersistentVolume as it is read ([`check_volume`]): its reclaim policy and
//!   the restore plugin's own rewrite run on a copy, to every site asked;
//! - across items, once everything is read ([`cross_check`]): each PVC bound to a PV in the
//!   backup, each VolumeSnapshot with its replica PVC, each VM disk with its claim. They work on
//!   [`References`] keyed by any `K`: names for a reader that keeps them, 64-bit hashes of names
//!   for one that must stay small over 100,000 items and names only what fails.
//!
//! Messages are built here too ([`Violation`]'s constructors), so the same fact reads the same
//! in a verification report, a plan and a failover report.
//!
//! Two reasons compare a backup with the previous verified backup of its policy rather than judge
//! it alone ([`Reason::BackupShrank`], [`Reason::VmMissingFromBackup`]): verification reads one
//! backup, so only the plan (and the failover, which plans first) reports them. One looks at the
//! site too ([`Reason::ReferenceMissing`]): verification reports the objects of a VM's own
//! namespace it needs that the backup lacks, and a plan every object it needs that is absent
//! from both the backup and its site, since an object there (a cluster-wide instance type, a
//! network definition) serves the restored VM as well.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use serde::Serialize;
use serde_json::Value;

use crate::kubevirt::{ClaimHazard, VmReference};
use crate::nfs;
use crate::remap::{Outcome, RemapError, SiteRemap};
use crate::sitemap::SiteName;
use crate::wire::{
    LABEL_MANAGED_BY, LABEL_REPLICA_OF_SNAPSHOT_UID, MANAGED_BY, PLUGIN_KUBEVIRT_RESTORE,
    PLUGIN_PV_RETAIN, PLUGIN_SNAPSHOT_TO_PVC, POINTER_RECLAIM_POLICY, RECLAIM_DELETE,
    RECLAIM_RETAIN,
};

/// Whether a violation makes the restore incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    /// The restore would be incomplete or wrong: verification fails, and a failover refuses
    /// without `--force`.
    Blocking,
    /// Worth knowing; the restore would still hold everything the backup can give.
    Warning,
}

/// Which invariant a backup breaks. The string forms are metric labels, annotation values,
/// condition reasons and plan output, so they never change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Reason {
    /// A PVC in the backup has no `spec.volumeName`: it was not bound when backed up, so the
    /// restore provisions it new and empty instead of binding it to its data.
    PvcNotBound,
    /// A PVC in the backup is bound to a PV that is not in the backup.
    PvMissing,
    /// A VolumeSnapshot (in the backup, or live at the source site and taken of a claim in the
    /// backup before the backup started) has no replica PVC in the backup, so its data is not at
    /// the other site.
    ReplicaPvcMissing,
    /// A VM's disk (PVC or `DataVolume`) is not in the backup.
    VmVolumeMissing,
    /// An NFS PV is backed up with a reclaim policy other than `Retain`: with `Delete`, Velero
    /// provisions a new, empty volume instead of restoring it (the backup ran without
    /// `replicadr.io/pv-retain`); with `Recycle`, the replica is scrubbed when its claim goes.
    PvNotRetain,
    /// A PV that is not NFS is backed up with reclaim policy `Delete`: Velero provisions a new,
    /// empty volume for its claim. The array does not replicate it, so there is nothing of it to
    /// restore at the other site anyway.
    PvReprovisioned,
    /// The restore plugin would refuse an NFS PV: its export is not in the site map (with
    /// `unmapped: fail`) or its server or path is malformed.
    PvUnmappable,
    /// An NFS PV outside the site map would be restored unchanged (`unmapped: keep`), still
    /// pointing at its old server.
    PvKeptUnmapped,
    /// The backup is empty, or lost more than half of the VMs or of the claims of the previous
    /// verified backup of its policy: restoring it would bring back a fraction of the workload.
    BackupShrank,
    /// A VM the previous verified backup of the policy held is not in this one.
    VmMissingFromBackup,
    /// CDI would import a new disk instead of adopting the replicated one: a `DataVolume` that
    /// had not succeeded, or whose claim is not in the backup or is left out of the restore; or a
    /// claim whose import had not completed (the restore leaves it out, since CDI's importer
    /// would write into the replicated disk).
    DataVolumeWouldImport,
    /// An object a VM needs to start (a Secret, `ConfigMap` or `ServiceAccount` of its volumes or
    /// credentials, its instance type or preference or their `ControllerRevision`, a
    /// `NetworkAttachmentDefinition`) is not in the backup, and, for a plan, not at the site
    /// either ([`crate::kubevirt::vm_references`]).
    ReferenceMissing,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: [Reason; 12] = [
        Reason::PvcNotBound,
        Reason::PvMissing,
        Reason::ReplicaPvcMissing,
        Reason::VmVolumeMissing,
        Reason::DataVolumeWouldImport,
        Reason::ReferenceMissing,
        Reason::PvNotRetain,
        Reason::PvReprovisioned,
        Reason::PvUnmappable,
        Reason::PvKeptUnmapped,
        Reason::BackupShrank,
        Reason::VmMissingFromBackup,
    ];

    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PvcNotBound => "PvcNotBound",
            Reason::PvMissing => "PvMissing",
            Reason::ReplicaPvcMissing => "ReplicaPvcMissing",
            Reason::VmVolumeMissing => "VmVolumeMissing",
            Reason::PvNotRetain => "PvNotRetain",
            Reason::PvReprovisioned => "PvReprovisioned",
            Reason::PvUnmappable => "PvUnmappable",
            Reason::PvKeptUnmapped => "PvKeptUnmapped",
            Reason::BackupShrank => "BackupShrank",
            Reason::VmMissingFromBackup => "VmMissingFromBackup",
            Reason::DataVolumeWouldImport => "DataVolumeWouldImport",
            Reason::ReferenceMissing => "ReferenceMissing",
        }
    }

    /// How bad it is; fixed per reason.
    pub fn severity(self) -> Severity {
        match self {
            Reason::PvReprovisioned | Reason::PvKeptUnmapped | Reason::VmMissingFromBackup => {
                Severity::Warning
            }
            Reason::PvcNotBound
            | Reason::PvMissing
            | Reason::ReplicaPvcMissing
            | Reason::VmVolumeMissing
            | Reason::DataVolumeWouldImport
            | Reason::ReferenceMissing
            | Reason::PvNotRetain
            | Reason::PvUnmappable
            | Reason::BackupShrank => Severity::Blocking,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken invariant: the reason, the object (`Kind namespace/name`) and what is wrong and
/// what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub reason: Reason,
    pub object: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// Where a VolumeSnapshot was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSeen {
    /// In the backup (Velero before 1.17 backs VolumeSnapshots up).
    InBackup,
    /// Live at the source site, taken of a claim in the backup before the backup started
    /// (Velero 1.17 and later leave VolumeSnapshots out of every backup).
    LiveAtSource,
}

impl Violation {
    /// The severity of its reason.
    pub fn severity(&self) -> Severity {
        self.reason.severity()
    }

    /// [`Reason::PvcNotBound`]; `replica_of` is the snapshot UID when the claim is a replica PVC.
    pub fn pvc_not_bound(namespace: &str, name: &str, replica_of: Option<&str>) -> Self {
        let replica = replica_of.map_or_else(String::new, |uid| {
            format!(
                "; it is the replica PVC of VolumeSnapshot uid {uid}, and {PLUGIN_SNAPSHOT_TO_PVC} did not see it bound before the backup ended, so the snapshot's data is not in this backup"
            )
        });
        Self {
            reason: Reason::PvcNotBound,
            object: format!("PersistentVolumeClaim {namespace}/{name}"),
            message: format!(
                "the claim has no spec.volumeName in the backup, so the restore would provision it new and empty instead of binding it to its data{replica}"
            ),
        }
    }

    /// [`Reason::PvMissing`].
    pub fn pv_missing(namespace: &str, name: &str, volume: &str) -> Self {
        Self {
            reason: Reason::PvMissing,
            object: format!("PersistentVolumeClaim {namespace}/{name}"),
            message: format!(
                "it is bound to PersistentVolume {volume}, which is not in the backup: include cluster-scoped resources (the scheduler's backups do) and back up again"
            ),
        }
    }

    /// [`Reason::ReplicaPvcMissing`].
    pub fn replica_pvc_missing(namespace: &str, name: &str, uid: &str, seen: SnapshotSeen) -> Self {
        let seen = match seen {
            SnapshotSeen::InBackup => "",
            SnapshotSeen::LiveAtSource => {
                " (the snapshot exists at the source site and was taken of a claim in the backup before the backup started)"
            }
        };
        Self {
            reason: Reason::ReplicaPvcMissing,
            object: format!("VolumeSnapshot {namespace}/{name}"),
            message: format!(
                "no replica PVC of this snapshot (uid {uid}) is in the backup{seen}: a PVC labelled {LABEL_MANAGED_BY}={MANAGED_BY}, {LABEL_REPLICA_OF_SNAPSHOT_UID}={uid}; the snapshot's data is not at the other site. Check the {PLUGIN_SNAPSHOT_TO_PVC} plugin's messages in the backup log"
            ),
        }
    }

    /// [`Reason::VmVolumeMissing`].
    pub fn vm_volume_missing(namespace: &str, vm: &str, claim: &str) -> Self {
        Self {
            reason: Reason::VmVolumeMissing,
            object: format!("VirtualMachine {namespace}/{vm}"),
            message: format!("its disk claim {claim} is not in the backup"),
        }
    }
}

/// Why a `DataVolume` would be imported rather than adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportCause {
    /// It had not succeeded when backed up.
    NotSucceeded,
    /// No claim of its name is in the backup.
    ClaimMissing,
    /// Its claim is in the backup, but the restore leaves it out (an unfinished import).
    ClaimLeftOut,
}

impl Violation {
    /// [`Reason::DataVolumeWouldImport`] for a claim the restore leaves out.
    pub fn claim_would_import(namespace: &str, name: &str, hazard: &ClaimHazard) -> Self {
        Self {
            reason: Reason::DataVolumeWouldImport,
            object: format!("PersistentVolumeClaim {namespace}/{name}"),
            message: format!(
                "{}; the restore leaves the claim out ({PLUGIN_KUBEVIRT_RESTORE}, and kubevirt-velero-plugin), so whatever uses it has no disk at the other site, while Velero still restores its PersistentVolume (PVs come before claims), pre-bound to this claim's name: a claim of that name made there later (CDI makes one for a DataVolume KubeVirt creates from the VM's dataVolumeTemplates) binds to the replicated disk and is imported into. Back up again once the import has completed",
                hazard.explain()
            ),
        }
    }

    /// [`Reason::DataVolumeWouldImport`] for a `DataVolume`; `phase` as backed up.
    pub fn data_volume_would_import(
        namespace: &str,
        name: &str,
        phase: &str,
        cause: ImportCause,
    ) -> Self {
        let why = match cause {
            ImportCause::NotSucceeded => format!(
                "it was {} when backed up, not Succeeded, so its disk was not complete",
                if phase.is_empty() {
                    "without a phase"
                } else {
                    phase
                }
            ),
            ImportCause::ClaimMissing => {
                format!("its claim {namespace}/{name} is not in the backup")
            }
            ImportCause::ClaimLeftOut => format!(
                "its claim {namespace}/{name} is in the backup but the restore leaves it out, since its import had not completed"
            ),
        };
        Self {
            reason: Reason::DataVolumeWouldImport,
            object: format!("DataVolume {namespace}/{name}"),
            message: format!(
                "{why}; restored, CDI would import a new disk instead of adopting the replicated one, so {PLUGIN_KUBEVIRT_RESTORE} refuses it. Back up again once the DataVolume is Succeeded with its claim bound"
            ),
        }
    }
}

impl Violation {
    /// [`Reason::ReferenceMissing`]: VM `namespace/vm` names `reference`, which is not in the
    /// backup, and not at `site` when a plan looked there.
    pub fn reference_missing(
        namespace: &str,
        vm: &str,
        reference: &VmReference,
        site: Option<&SiteName>,
    ) -> Self {
        let object = reference.object();
        let kind = reference.kind;
        let (looked, fix) = match site {
            None => (
                String::new(),
                format!(
                    "It lives in the VM's namespace, so a backup of the namespace holds it unless it is not there at the source site or the Backup's resource filters leave out {}: back it up with the VM, or make sure it exists at the site a failover restores at (`replicadr plan` there checks it)",
                    kind.group_resource()
                ),
            ),
            Some(site) => (
                format!(" and not at site {site}"),
                format!(
                    "Create {object} at site {site} (or include it in the backup and back up again), and plan again"
                ),
            ),
        };
        Self {
            reason: Reason::ReferenceMissing,
            object: format!("VirtualMachine {namespace}/{vm}"),
            message: format!(
                "it needs {object} ({}), which is not in the backup{looked}: restored without it, {}. {fix}",
                reference.field,
                kind.without_it()
            ),
        }
    }

    /// A VM of the backup needs `reference`, which the backup holds but the site cannot take:
    /// its kind's API is not served there (the CRD is not installed), and Velero does not restore
    /// CRDs for a VM backup, so the Restore leaves the object out.
    pub fn reference_not_restorable(
        namespace: &str,
        vm: &str,
        reference: &VmReference,
        site: &SiteName,
    ) -> Self {
        let kind = reference.kind;
        Self {
            reason: Reason::ReferenceMissing,
            object: format!("VirtualMachine {namespace}/{vm}"),
            message: format!(
                "it needs {} ({}), which is in the backup but cannot be restored at site {site}: the API {} {} is not served there (its CRD is not installed), so the Restore leaves it out, and restored without it, {}. Install what serves {} at site {site} (KubeVirt for instance types and preferences, Multus for networks), and plan again",
                reference.object(),
                reference.field,
                kind.api_version(),
                kind.plural(),
                kind.without_it(),
                kind.kind()
            ),
        }
    }
}

/// How many missing objects a [`Reason::BackupShrank`] message names; the rest are counted.
const NAMED_MISSING: usize = 10;

/// What a backup holds of the previous verified backup of its policy, for
/// [`Violation::backup_shrank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shrink<'a> {
    /// The backup judged.
    pub backup: &'a str,
    /// The previous verified backup of its policy.
    pub previous: &'a str,
    /// How many VMs `previous` holds, and how many of them `backup` holds too.
    pub vms: (usize, usize),
    /// How many claims `previous` holds, and how many of them `backup` holds too.
    pub claims: (usize, usize),
    /// What `backup` lacks, each as `Kind namespace/name`.
    pub missing: &'a [String],
}

impl Violation {
    /// [`Reason::BackupShrank`]. Names both backups and how to restore either, since neither is
    /// chosen for the operator.
    pub fn backup_shrank(shrink: &Shrink<'_>) -> Self {
        let Shrink {
            backup,
            previous,
            vms: (vms_before, vms_kept),
            claims: (claims_before, claims_kept),
            missing,
        } = *shrink;
        let named = missing
            .iter()
            .take(NAMED_MISSING)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = match missing.len().saturating_sub(NAMED_MISSING) {
            0 => String::new(),
            more => format!(" and {more} more"),
        };
        let held = if vms_kept == 0 && claims_kept == 0 {
            format!(
                "backup {backup} holds none of the {vms_before} VMs and {claims_before} claims of backup {previous}"
            )
        } else {
            format!(
                "backup {backup} holds {vms_kept} of the {vms_before} VMs and {claims_kept} of the {claims_before} claims of backup {previous}"
            )
        };
        Self {
            reason: Reason::BackupShrank,
            object: format!("Backup {backup}"),
            message: format!(
                "{held}, the previous verified backup of its policy (missing: {named}{more}); restore {previous} with `--backup {previous}`, or {backup} with `--backup {backup} --force`"
            ),
        }
    }

    /// [`Reason::VmMissingFromBackup`].
    pub fn vm_missing_from_backup(
        namespace: &str,
        name: &str,
        backup: &str,
        previous: &str,
    ) -> Self {
        Self {
            reason: Reason::VmMissingFromBackup,
            object: format!("VirtualMachine {namespace}/{name}"),
            message: format!(
                "backup {previous}, the previous verified backup of the policy, holds this VM and backup {backup} does not, so the restore would not bring it back; if it was not deleted on purpose, restore {previous} with `--backup {previous}`"
            ),
        }
    }
}

/// A PV's reclaim policy as backed up. An absent field reads as `Retain`, the API server's
/// default for PVs and what Velero acts on (it re-provisions only `Delete`).
pub fn reclaim_policy(pv: &Value) -> &str {
    pv.pointer(POINTER_RECLAIM_POLICY)
        .and_then(Value::as_str)
        .unwrap_or(RECLAIM_RETAIN)
}

/// What [`check_volume`] found for one PV.
#[derive(Debug, Clone)]
pub struct VolumeCheck {
    /// An NFS volume (in-tree or the NFS CSI driver).
    pub nfs: bool,
    /// The reclaim policy as backed up.
    pub reclaim_policy: String,
    /// Velero provisions a new, empty volume instead of restoring this one (policy `Delete`);
    /// such a PV never reaches the restore plugin.
    pub reprovisioned: bool,
    /// The restore plugin's rewrite onto each site asked, in order; empty when re-provisioned.
    pub rewrites: Vec<(SiteName, Result<Outcome, RemapError>)>,
    pub violations: Vec<Violation>,
}

/// The per-volume invariants of PV `name`: NFS PVs are `Retain`; a `Delete` PV of another driver
/// is re-provisioned (a warning); and the restore plugin's rewrite, run on a copy onto each site of
/// `remaps`, accepts it.
pub fn check_volume(name: &str, pv: &Value, remaps: &[SiteRemap]) -> VolumeCheck {
    let object = format!("PersistentVolume {name}");
    let nfs = nfs::is_nfs(pv);
    let policy = reclaim_policy(pv).to_owned();
    let reprovisioned = policy == RECLAIM_DELETE;
    let mut violations = Vec::new();
    if nfs && policy != RECLAIM_RETAIN {
        let consequence = if reprovisioned {
            "Velero would provision a new, empty volume instead of restoring this one"
        } else {
            "the replica would be scrubbed when its claim is deleted"
        };
        violations.push(Violation {
            reason: Reason::PvNotRetain,
            object: object.clone(),
            message: format!(
                "the NFS PV is backed up with reclaim policy {policy}, so {consequence}; the backup was taken without the {PLUGIN_PV_RETAIN} plugin covering it — take a new backup with it installed and the export in the site map"
            ),
        });
    } else if reprovisioned {
        violations.push(Violation {
            reason: Reason::PvReprovisioned,
            object: object.clone(),
            message: "the PV is not NFS and is backed up with reclaim policy Delete, so Velero provisions a new, empty volume for its claim; the storage array does not replicate it, so its data is not at the other site".to_owned(),
        });
    }
    let mut rewrites = Vec::new();
    if !reprovisioned {
        for remap in remaps {
            let mut copy = pv.clone();
            let outcome = remap.remap(&mut copy);
            match &outcome {
                Ok(Outcome::KeptUnmapped { reason }) => violations.push(Violation {
                    reason: Reason::PvKeptUnmapped,
                    object: object.clone(),
                    message: format!(
                        "{reason}; restored unchanged at site {} because the site map says `unmapped: keep`, so it still points at {}",
                        remap.site(),
                        nfs::location(pv).as_deref().unwrap_or("its old server")
                    ),
                }),
                Ok(_) => {}
                Err(error) => violations.push(Violation {
                    reason: Reason::PvUnmappable,
                    object: object.clone(),
                    message: format!("cannot fail over to site {}: {error}", remap.site()),
                }),
            }
            rewrites.push((remap.site().clone(), outcome));
        }
    }
    VolumeCheck {
        nfs,
        reclaim_policy: policy,
        reprovisioned,
        rewrites,
        violations,
    }
}

/// A PVC as the cross checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef<K> {
    /// The key of the PV its `spec.volumeName` names; `None` when unbound.
    pub volume: Option<K>,
    /// The key of its UID.
    pub uid: K,
    /// A replica PVC the project made from a VolumeSnapshot.
    pub replica: bool,
    /// The restore leaves it out: CDI would write into it ([`crate::kubevirt::claim_hazard`]).
    pub left_out: bool,
}

/// A `DataVolume` as the cross checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolumeRef<K> {
    /// The key of the claim of its name (CDI names the claim after the `DataVolume`).
    pub claim: K,
    /// It had succeeded when backed up.
    pub succeeded: bool,
}

/// The cross references of a backup's items, by key `K`. A claim's key stands for its namespace
/// and name, a PV's for its name, a snapshot's for its namespace and UID.
#[derive(Debug, Clone)]
pub struct References<K> {
    /// Every PVC.
    pub claims: HashMap<K, ClaimRef<K>>,
    /// Every PV.
    pub volumes: HashSet<K>,
    /// The snapshots a replica PVC in the backup copies.
    pub replicated: HashSet<K>,
    /// Every VolumeSnapshot in the backup, in tarball order.
    pub snapshots: Vec<K>,
    /// Every VM disk, by the claim key of the PVC or `DataVolume` it names, in tarball order.
    pub vm_volumes: Vec<K>,
    /// Every `DataVolume`, in tarball order.
    pub data_volumes: Vec<DataVolumeRef<K>>,
    /// Every object a VM names and needs ([`crate::kubevirt::vm_references`]), by the key of its
    /// kind, namespace and name, VM after VM in tarball order.
    pub vm_references: Vec<K>,
    /// Every object of a kind a VM can name ([`crate::kubevirt::ReferencedKind`]), by the same
    /// key.
    pub referenceable: HashSet<K>,
}

impl<K> Default for References<K> {
    fn default() -> Self {
        Self {
            claims: HashMap::new(),
            volumes: HashSet::new(),
            replicated: HashSet::new(),
            snapshots: Vec::new(),
            vm_volumes: Vec::new(),
            data_volumes: Vec::new(),
            vm_references: Vec::new(),
            referenceable: HashSet::new(),
        }
    }
}

/// A VolumeSnapshot seen live at the site verifying, with its source claim. Pass only snapshots
/// the backup should have replicated: taken before the backup started, not being deleted, not
/// Velero's own temporary ones ([`is_replicated_at_backup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSnapshot<K> {
    /// Its key (namespace and UID).
    pub snapshot: K,
    /// The key of its source claim (namespace and name).
    pub source_claim: K,
    /// The key of the UID the source claim has live. Only when it is the UID of the claim in the
    /// backup is this the site the backup was taken at and the snapshot one the backup saw.
    pub source_claim_uid: K,
}

/// What the cross checks found broken, by key (claims) and by position (in
/// [`References::snapshots`], the live snapshots passed, [`References::vm_volumes`]); every one,
/// in no particular order for claims and in order for positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken<K> {
    /// [`Reason::PvcNotBound`].
    pub unbound_claims: Vec<K>,
    /// [`Reason::PvMissing`].
    pub claims_without_pv: Vec<K>,
    /// [`Reason::ReplicaPvcMissing`], snapshots in the backup.
    pub snapshots_without_replica: Vec<usize>,
    /// [`Reason::ReplicaPvcMissing`], live snapshots.
    pub live_snapshots_without_replica: Vec<usize>,
    /// [`Reason::VmVolumeMissing`].
    pub vm_volumes_without_claim: Vec<usize>,
    /// [`Reason::DataVolumeWouldImport`], claims the restore leaves out.
    pub claims_left_out: Vec<K>,
    /// [`Reason::DataVolumeWouldImport`], `DataVolumes` by position, with the cause.
    pub data_volumes_would_import: Vec<(usize, ImportCause)>,
    /// [`Reason::ReferenceMissing`] as far as the backup goes, by position in
    /// [`References::vm_references`]: a plan drops those present at its site.
    pub references_not_in_backup: Vec<usize>,
}

impl<K> Default for Broken<K> {
    fn default() -> Self {
        Self {
            unbound_claims: Vec::new(),
            claims_without_pv: Vec::new(),
            snapshots_without_replica: Vec::new(),
            live_snapshots_without_replica: Vec::new(),
            vm_volumes_without_claim: Vec::new(),
            claims_left_out: Vec::new(),
            data_volumes_would_import: Vec::new(),
            references_not_in_backup: Vec::new(),
        }
    }
}

impl<K> Broken<K> {
    /// Whether every cross check passed.
    pub fn is_empty(&self) -> bool {
        self.unbound_claims.is_empty()
            && self.claims_without_pv.is_empty()
            && self.snapshots_without_replica.is_empty()
            && self.live_snapshots_without_replica.is_empty()
            && self.vm_volumes_without_claim.is_empty()
            && self.claims_left_out.is_empty()
            && self.data_volumes_would_import.is_empty()
            && self.references_not_in_backup.is_empty()
    }
}

/// The invariants across items: every PVC bound ([`Reason::PvcNotBound`]) to a PV in the backup
/// ([`Reason::PvMissing`]); every VolumeSnapshot in the backup, and every live one of a claim in
/// the backup taken before it started, with its replica PVC ([`Reason::ReplicaPvcMissing`]);
/// every VM disk's claim in the backup ([`Reason::VmVolumeMissing`]); every `DataVolume` succeeded
/// with its claim in the backup and restored, and no claim left out of the restore
/// ([`Reason::DataVolumeWouldImport`]); every object a VM needs in the backup
/// ([`Reason::ReferenceMissing`]).
pub fn cross_check<K: Eq + Hash + Clone>(
    references: &References<K>,
    live: &[LiveSnapshot<K>],
) -> Broken<K> {
    let mut broken = Broken::default();
    for (key, claim) in &references.claims {
        if claim.left_out {
            broken.claims_left_out.push(key.clone());
        }
        match &claim.volume {
            None => broken.unbound_claims.push(key.clone()),
            Some(volume) if !references.volumes.contains(volume) => {
                broken.claims_without_pv.push(key.clone());
            }
            Some(_) => {}
        }
    }
    broken.snapshots_without_replica = positions_where(&references.snapshots, |snapshot| {
        !references.replicated.contains(snapshot)
    });
    let in_backup: HashSet<&K> = references.snapshots.iter().collect();
    broken.live_snapshots_without_replica = live
        .iter()
        .enumerate()
        .filter(|(_, snapshot)| {
            let seen_by_backup = references
                .claims
                .get(&snapshot.source_claim)
                .is_some_and(|claim| !claim.replica && claim.uid == snapshot.source_claim_uid);
            seen_by_backup
                && !in_backup.contains(&snapshot.snapshot)
                && !references.replicated.contains(&snapshot.snapshot)
        })
        .map(|(index, _)| index)
        .collect();
    broken.vm_volumes_without_claim = positions_where(&references.vm_volumes, |claim| {
        !references.claims.contains_key(claim)
    });
    broken.data_volumes_would_import = references
        .data_volumes
        .iter()
        .enumerate()
        .filter_map(|(index, dv)| {
            let cause = match references.claims.get(&dv.claim) {
                _ if !dv.succeeded => ImportCause::NotSucceeded,
                None => ImportCause::ClaimMissing,
                Some(claim) if claim.left_out => ImportCause::ClaimLeftOut,
                Some(_) => return None,
            };
            Some((index, cause))
        })
        .collect();
    broken.references_not_in_backup = positions_where(&references.vm_references, |key| {
        !references.referenceable.contains(key)
    });
    broken
}

/// The positions in `items` of those `broken` holds for, in order.
fn positions_where<K>(items: &[K], broken: impl Fn(&K) -> bool) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, item)| broken(item))
        .map(|(index, _)| index)
        .collect()
}

/// Whether `replicadr.io/snapshot-to-pvc` replicates a live VolumeSnapshot when it backs up the
/// snapshot's source claim: not while it is being deleted, and not Velero's own temporary
/// snapshots (labelled with a backup's name and not restored).
pub fn is_replicated_at_backup(snapshot: &Value) -> bool {
    let deleting = snapshot.pointer("/metadata/deletionTimestamp").is_some();
    !deleting && !is_velero_temporary(snapshot)
}

/// Whether a VolumeSnapshot is one Velero's CSI support took for a backup (labelled with the
/// backup's name) rather than restored (labelled with a restore's name too): Velero deletes it
/// when the backup finalizes, so it is never replicated.
pub fn is_velero_temporary(snapshot: &Value) -> bool {
    use crate::wire::{LABEL_VELERO_BACKUP_NAME, LABEL_VELERO_RESTORE_NAME, label_pointer};
    snapshot
        .pointer(&label_pointer(LABEL_VELERO_BACKUP_NAME))
        .is_some()
        && snapshot
            .pointer(&label_pointer(LABEL_VELERO_RESTORE_NAME))
            .is_none()
}

#[cfg(test)]
mod tests;
