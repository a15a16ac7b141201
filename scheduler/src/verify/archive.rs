//! Verification's pass over a Velero backup tarball: one streaming read ([`replicadr_core::tarball`])
//! that checks every item and runs the per-volume backup invariants as each PV streams past,
//! keeping only 64-bit hashes of names for the checks across items; then the cross checks
//! ([`replicadr_core::invariants::cross_check`]) on those hashes, and a second read, only when one
//! fails, to name the objects at fault. Memory is bounded by the largest item and a few hashes
//! per PVC, PV, snapshot, VM disk and `DataVolume`, never by the tarball's size or its names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};

use replicadr_core::contents::{replica_of, uid, vm_claims, volume_name};
use replicadr_core::invariants::{
    self, ClaimRef, DataVolumeRef, ImportCause, LiveSnapshot, References, SnapshotSeen, Violation,
};
use replicadr_core::kubevirt::{
    ClaimHazard, ReferencedKind, VmReference, claim_hazard, is_kubevirt_pod, vm_owning_vmi,
    vm_references_in_its_namespace,
};
use replicadr_core::remap::SiteRemap;
use replicadr_core::sitemap::SiteMap;
use replicadr_core::tarball::{self, Entry, ItemPath, TarballError};
use replicadr_core::wire::{
    POINTER_STATUS_PHASE, RESOURCE_DATA_VOLUMES, RESOURCE_PODS, RESOURCE_PVCS, RESOURCE_PVS,
    RESOURCE_VIRTUAL_MACHINE_INSTANCES, RESOURCE_VIRTUAL_MACHINES, RESOURCE_VOLUME_SNAPSHOTS,
};
use serde::Deserialize;
use serde_json::Value;

pub use replicadr_core::tarball::ResourceList;

use super::report::{Findings, KEPT_PER_REASON, Reason, Stats};

/// The per-volume checks run on each PV as it streams past.
#[derive(Debug, Clone, Default)]
pub struct PvChecks {
    /// One configured rewrite per site: a dry run of the failover to each.
    pub remaps: Vec<SiteRemap>,
}

impl PvChecks {
    /// A dry-run rewrite to every site of `map`.
    pub fn for_every_site(map: &SiteMap) -> Self {
        Self {
            remaps: SiteRemap::every_site(map),
        }
    }
}

/// A VolumeSnapshot seen live where the backup is verified, with the live UID of its source
/// claim; see [`LiveSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVolumeSnapshot {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub source_claim: String,
    pub source_claim_uid: String,
}

/// What one pass over the tarball found. The cross-check state holds 64-bit hashes, not names,
/// so it grows by a few bytes per PVC, PV, snapshot and VM disk; the names of whatever fails a
/// cross check are read again from the tarball ([`cross_check`]).
#[derive(Debug, Default)]
pub struct Inventory {
    pub stats: Stats,
    pub format_version: Option<String>,
    /// The cross references, keyed by [`pvc_key`], [`pv_key`], [`snapshot_key`] and [`uid_key`].
    pub references: References<u64>,
    /// Hashes of `apiVersion/Kind` + `namespace/name` of every item, to compare with the
    /// resource list without keeping 100,000 strings.
    pub item_keys: HashSet<u64>,
    pub findings: Findings,
}

impl Inventory {
    /// Whether the tarball holds the PVC `namespace/name`.
    pub fn has_pvc(&self, namespace: &str, name: &str) -> bool {
        self.references
            .claims
            .contains_key(&pvc_key(namespace, name))
    }

    /// The UID the PVC `namespace/name` has in the tarball, as [`uid_key`].
    pub fn pvc_uid(&self, namespace: &str, name: &str) -> Option<u64> {
        self.references
            .claims
            .get(&pvc_key(namespace, name))
            .map(|claim| claim.uid)
    }
}

/// The key of an item as Velero's resource list writes it.
pub fn item_key(api_version_kind: &str, namespace: &str, name: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    api_version_kind.hash(&mut hasher);
    namespace.hash(&mut hasher);
    name.hash(&mut hasher);
    hasher.finish()
}

/// The key of a PVC (or of the claim a VM names).
pub fn pvc_key(namespace: &str, name: &str) -> u64 {
    item_key("pvc", namespace, name)
}

/// The key of a PV.
pub fn pv_key(name: &str) -> u64 {
    item_key("pv", "", name)
}

/// The key of a VolumeSnapshot, joining it to its replica PVC.
pub fn snapshot_key(namespace: &str, snapshot_uid: &str) -> u64 {
    item_key("snapshot", namespace, snapshot_uid)
}

/// The key of an object's UID.
pub fn uid_key(uid: &str) -> u64 {
    item_key("uid", "", uid)
}

/// The key of an object a VM can name, by its tarball directory (see [`ReferencedKind`]).
pub fn reference_key(group_resource: &str, namespace: &str, name: &str) -> u64 {
    item_key(group_resource, namespace, name)
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    metadata: HeaderMeta<'a>,
}

#[derive(Deserialize)]
struct HeaderMeta<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    namespace: Option<std::borrow::Cow<'a, str>>,
}

/// Reads a `.tar.gz` Velero backup from `source` to its end, running the per-item checks.
pub fn inspect(source: impl Read, checks: &PvChecks) -> Result<Inventory, TarballError> {
    let mut inventory = Inventory::default();
    let counts = tarball::read(source, |entry| match entry {
        Entry::Version(bytes) => {
            inventory.format_version = Some(String::from_utf8_lossy(bytes).trim().to_owned());
        }
        Entry::Oversized { path, size } => inventory.findings.push(
            Reason::ItemInvalid,
            format!("{path} is {size} bytes, larger than any Kubernetes object"),
        ),
        Entry::Item {
            location,
            path,
            bytes,
        } => {
            inventory.stats.items += 1;
            inspect_item(location, path, bytes, checks, &mut inventory);
        }
    })?;
    inventory.stats.compressed_bytes = counts.compressed;
    inventory.stats.uncompressed_bytes = counts.uncompressed;
    Ok(inventory)
}

fn inspect_item(
    location: &ItemPath<'_>,
    path: &str,
    bytes: &[u8],
    checks: &PvChecks,
    inventory: &mut Inventory,
) {
    let interesting = matches!(
        location.group_resource,
        RESOURCE_PVCS
            | RESOURCE_PVS
            | RESOURCE_VOLUME_SNAPSHOTS
            | RESOURCE_VIRTUAL_MACHINES
            | RESOURCE_DATA_VOLUMES
            | RESOURCE_PODS
            | RESOURCE_VIRTUAL_MACHINE_INSTANCES
    );
    if !interesting {
        if ReferencedKind::from_group_resource(location.group_resource).is_some() {
            inventory.references.referenceable.insert(reference_key(
                location.group_resource,
                location.namespace.unwrap_or_default(),
                location.name,
            ));
        }
        record_header(location, path, bytes, inventory);
        return;
    }
    inspect_object(location, path, bytes, checks, inventory);
}

/// Items the checks do not look into: only their identity, read without building the object.
fn record_header(location: &ItemPath<'_>, path: &str, bytes: &[u8], inventory: &mut Inventory) {
    {
        match serde_json::from_slice::<Header<'_>>(bytes) {
            Ok(header) => {
                let key = format!("{}/{}", header.api_version, header.kind);
                let namespace = header.metadata.namespace.as_deref().unwrap_or_default();
                if header.metadata.name != location.name
                    || namespace != location.namespace.unwrap_or_default()
                {
                    inventory.findings.push(
                        Reason::ItemInvalid,
                        format!(
                            "{path} holds {namespace}/{} instead: the file was moved or replaced",
                            header.metadata.name
                        ),
                    );
                }
                inventory
                    .item_keys
                    .insert(item_key(&key, namespace, &header.metadata.name));
            }
            Err(error) => inventory.findings.push(
                Reason::ItemInvalid,
                format!("{path} is not a valid Kubernetes object: {error}"),
            ),
        }
    }
}

/// PVCs, PVs, VolumeSnapshots, VMs and `DataVolumes`: parsed whole and recorded for the cross
/// checks; pods and VMIs: parsed to count what the restore leaves out.
fn inspect_object(
    location: &ItemPath<'_>,
    path: &str,
    bytes: &[u8],
    checks: &PvChecks,
    inventory: &mut Inventory,
) {
    let object: Value = match serde_json::from_slice(bytes) {
        Ok(object) => object,
        Err(error) => {
            inventory.findings.push(
                Reason::ItemInvalid,
                format!("{path} is not valid JSON: {error}"),
            );
            return;
        }
    };
    let str_at = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let api_version = str_at("/apiVersion").unwrap_or_default();
    let kind = str_at("/kind").unwrap_or_default();
    let namespace = location.namespace.unwrap_or_default();
    let name = location.name;
    inventory
        .item_keys
        .insert(item_key(&format!("{api_version}/{kind}"), namespace, name));
    let references = &mut inventory.references;
    match location.group_resource {
        RESOURCE_PVCS => {
            inventory.stats.persistent_volume_claims += 1;
            let replica = replica_of(&object);
            if let Some(snapshot_uid) = replica {
                references
                    .replicated
                    .insert(snapshot_key(namespace, snapshot_uid));
            }
            references.claims.insert(
                pvc_key(namespace, name),
                ClaimRef {
                    volume: volume_name(&object).map(pv_key),
                    uid: uid_key(uid(&object)),
                    replica: replica.is_some(),
                    left_out: claim_hazard(&object).is_some(),
                },
            );
        }
        RESOURCE_PVS => {
            inventory.stats.persistent_volumes += 1;
            let check = invariants::check_volume(name, &object, &checks.remaps);
            if check.nfs {
                inventory.stats.nfs_persistent_volumes += 1;
            }
            for violation in check.violations {
                push_violation(&mut inventory.findings, &violation);
            }
            references.volumes.insert(pv_key(name));
        }
        RESOURCE_VOLUME_SNAPSHOTS => {
            inventory.stats.volume_snapshots += 1;
            references
                .snapshots
                .push(snapshot_key(namespace, uid(&object)));
        }
        RESOURCE_VIRTUAL_MACHINES => {
            inventory.stats.virtual_machines += 1;
            for claim in vm_claims(&object) {
                references.vm_volumes.push(pvc_key(namespace, claim));
            }
            for reference in vm_references_in_its_namespace(&object) {
                references.vm_references.push(reference_key(
                    &reference.kind.group_resource(),
                    &reference.namespace,
                    &reference.name,
                ));
            }
        }
        RESOURCE_DATA_VOLUMES => {
            inventory.stats.data_volumes += 1;
            references.data_volumes.push(DataVolumeRef {
                claim: pvc_key(namespace, name),
                succeeded: str_at(POINTER_STATUS_PHASE) == Some("Succeeded"),
            });
        }
        RESOURCE_PODS if is_kubevirt_pod(&object).is_some() => {
            inventory.stats.left_out_of_restore += 1;
        }
        RESOURCE_VIRTUAL_MACHINE_INSTANCES if vm_owning_vmi(&object).is_some() => {
            inventory.stats.left_out_of_restore += 1;
        }
        _ => {}
    }
}

/// Records a broken backup invariant as a finding of the same reason and words.
fn push_violation(findings: &mut Findings, violation: &Violation) {
    findings.push(Reason::Backup(violation.reason), violation.to_string());
}

/// The checks across items, after the pass: every PVC bound to a PV in the backup, every
/// VolumeSnapshot (in the backup, or live here in `live`) with its replica PVC, every VM disk
/// with its claim ([`invariants::cross_check`]), and the resource list.
///
/// They run on the inventory's hashes. Only if one fails is the tarball read a second time, from
/// `reopen`, to recover the names of the objects at fault, so each finding names them exactly;
/// if that read fails the findings stay, with the names replaced by why they are missing.
pub fn cross_check<R: Read>(
    inventory: &mut Inventory,
    resource_list: Option<&ResourceList>,
    live: &[LiveVolumeSnapshot],
    reopen: impl FnOnce() -> io::Result<R>,
) {
    let failures = find_failures(inventory, live);
    let names = if failures.need_names() {
        reopen()
            .map_err(|source| TarballError::Source { offset: 0, source })
            .and_then(|source| recover_names(source, &failures))
    } else {
        Ok(Names::default())
    };
    report_failures(inventory, &failures, &names, live, resource_list);
}

/// What failed the cross checks, by hash and position, before the names are known.
#[derive(Debug, Default)]
struct Failures {
    no_version: bool,
    /// PVCs without `spec.volumeName`, by [`pvc_key`]: all of them, since the findings kept word
    /// for word are the first in (namespace, name) order.
    unbound_claims: HashSet<u64>,
    /// PVCs bound to a PV that is not in the backup, likewise.
    claims_without_pv: HashSet<u64>,
    /// The first [`KEPT_PER_REASON`] snapshots failing, by position among the snapshots.
    snapshots: Vec<usize>,
    snapshots_failed: usize,
    /// Every live snapshot failing, by position in the live list (their names are known).
    live_snapshots: Vec<usize>,
    /// The first [`KEPT_PER_REASON`] VM disks failing, by position among the VM disks.
    vm_volumes: Vec<usize>,
    vm_volumes_failed: usize,
    /// PVCs the restore leaves out, by [`pvc_key`].
    claims_left_out: HashSet<u64>,
    /// The first [`KEPT_PER_REASON`] `DataVolumes` failing, by position, with the cause.
    data_volumes: Vec<(usize, ImportCause)>,
    data_volumes_failed: usize,
    /// The first [`KEPT_PER_REASON`] VM references not in the backup, by position among them.
    references: Vec<usize>,
    references_failed: usize,
}

impl Failures {
    fn need_names(&self) -> bool {
        !self.unbound_claims.is_empty()
            || !self.claims_without_pv.is_empty()
            || self.snapshots_failed > 0
            || self.vm_volumes_failed > 0
            || !self.claims_left_out.is_empty()
            || self.data_volumes_failed > 0
            || self.references_failed > 0
    }
}

fn find_failures(inventory: &Inventory, live: &[LiveVolumeSnapshot]) -> Failures {
    let live: Vec<LiveSnapshot<u64>> = live
        .iter()
        .map(|snapshot| LiveSnapshot {
            snapshot: snapshot_key(&snapshot.namespace, &snapshot.uid),
            source_claim: pvc_key(&snapshot.namespace, &snapshot.source_claim),
            source_claim_uid: uid_key(&snapshot.source_claim_uid),
        })
        .collect();
    let broken = invariants::cross_check(&inventory.references, &live);
    let (snapshots, snapshots_failed) = first_kept(broken.snapshots_without_replica);
    let (vm_volumes, vm_volumes_failed) = first_kept(broken.vm_volumes_without_claim);
    let (data_volumes, data_volumes_failed) = first_kept(broken.data_volumes_would_import);
    let (references, references_failed) = first_kept(broken.references_not_in_backup);
    Failures {
        no_version: inventory.format_version.is_none(),
        unbound_claims: broken.unbound_claims.into_iter().collect(),
        claims_without_pv: broken.claims_without_pv.into_iter().collect(),
        snapshots,
        snapshots_failed,
        live_snapshots: broken.live_snapshots_without_replica,
        vm_volumes,
        vm_volumes_failed,
        claims_left_out: broken.claims_left_out.into_iter().collect(),
        data_volumes,
        data_volumes_failed,
        references,
        references_failed,
    }
}

/// The first [`KEPT_PER_REASON`] of `all`, and how many there were.
fn first_kept<T>(mut all: Vec<T>) -> (Vec<T>, usize) {
    let count = all.len();
    all.truncate(KEPT_PER_REASON);
    (all, count)
}

/// The names of the objects in the failures kept word for word, read on the second pass.
#[derive(Debug, Default)]
struct Names {
    /// The first unbound PVCs, in (namespace, name) order, with the snapshot UID of a replica.
    unbound_claims: BTreeMap<(String, String), Option<String>>,
    /// The first PVCs without their PV, in (namespace, name) order, with the PV's name.
    claims_without_pv: BTreeMap<(String, String), String>,
    /// By position among the snapshots: (namespace, name, uid).
    snapshots: HashMap<usize, (String, String, String)>,
    /// By position among the VM disks: (namespace, VM name, claim).
    vm_volumes: HashMap<usize, (String, String, String)>,
    /// The first PVCs the restore leaves out, in (namespace, name) order, with why.
    claims_left_out: BTreeMap<(String, String), Option<ClaimHazard>>,
    /// By position among the `DataVolumes`: (namespace, name, phase).
    data_volumes: HashMap<usize, (String, String, String)>,
    /// By position among the VM references: (namespace, VM name, reference).
    references: HashMap<usize, (String, String, VmReference)>,
}

/// Keeps `value` under `key` in `kept`, which holds the [`KEPT_PER_REASON`] first keys.
fn keep_first<K: Ord, V>(kept: &mut BTreeMap<K, V>, key: K, value: V) {
    kept.insert(key, value);
    if kept.len() > KEPT_PER_REASON {
        kept.pop_last();
    }
}

/// The second pass: streams the tarball again and keeps the names of what `failures` needs.
/// Items are counted as in [`inspect`] (same reader, same order, same items skipped), so the
/// positions recorded in the first pass find the same objects.
fn recover_names(source: impl Read, failures: &Failures) -> Result<Names, TarballError> {
    let snapshots: HashSet<usize> = failures.snapshots.iter().copied().collect();
    let vm_volumes: HashSet<usize> = failures.vm_volumes.iter().copied().collect();
    let data_volumes: HashSet<usize> = failures.data_volumes.iter().map(|(i, _)| *i).collect();
    let references: HashSet<usize> = failures.references.iter().copied().collect();
    let mut names = Names::default();
    let (mut snapshot_index, mut vm_volume_index, mut data_volume_index) = (0, 0, 0);
    let mut reference_index = 0;
    tarball::read(source, |entry| {
        let Entry::Item {
            location, bytes, ..
        } = entry
        else {
            return;
        };
        let namespace = location.namespace.unwrap_or_default();
        let name = location.name;
        match location.group_resource {
            RESOURCE_PVCS => {
                let key = pvc_key(namespace, name);
                let unbound = failures.unbound_claims.contains(&key);
                let without_pv = failures.claims_without_pv.contains(&key);
                let left_out = failures.claims_left_out.contains(&key);
                if !unbound && !without_pv && !left_out {
                    return;
                }
                let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                let key = (namespace.to_owned(), name.to_owned());
                if left_out {
                    keep_first(
                        &mut names.claims_left_out,
                        key.clone(),
                        claim_hazard(&object),
                    );
                }
                if !unbound && !without_pv {
                    return;
                }
                if unbound {
                    let replica = replica_of(&object).map(str::to_owned);
                    keep_first(&mut names.unbound_claims, key, replica);
                } else {
                    let volume = volume_name(&object).unwrap_or_default().to_owned();
                    keep_first(&mut names.claims_without_pv, key, volume);
                }
            }
            RESOURCE_VOLUME_SNAPSHOTS if !snapshots.is_empty() => {
                // Counted as the first pass counts: only items that parse.
                let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                if snapshots.contains(&snapshot_index) {
                    names.snapshots.insert(
                        snapshot_index,
                        (
                            namespace.to_owned(),
                            name.to_owned(),
                            uid(&object).to_owned(),
                        ),
                    );
                }
                snapshot_index += 1;
            }
            RESOURCE_DATA_VOLUMES if !data_volumes.is_empty() => {
                let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                if data_volumes.contains(&data_volume_index) {
                    let phase = object
                        .pointer(POINTER_STATUS_PHASE)
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    names.data_volumes.insert(
                        data_volume_index,
                        (namespace.to_owned(), name.to_owned(), phase.to_owned()),
                    );
                }
                data_volume_index += 1;
            }
            RESOURCE_VIRTUAL_MACHINES if !vm_volumes.is_empty() || !references.is_empty() => {
                let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                let vm = (namespace, name, &object);
                let wanted = (&vm_volumes, &references);
                let at = (&mut vm_volume_index, &mut reference_index);
                recover_vm_names(vm, wanted, at, &mut names);
            }
            _ => {}
        }
    })?;
    Ok(names)
}

/// The names a VM gives on the second pass: its disks and the objects it needs, each wanted by
/// position, counted from `at`.
fn recover_vm_names(
    (namespace, name, object): (&str, &str, &Value),
    (vm_volumes, references): (&HashSet<usize>, &HashSet<usize>),
    (vm_volume_index, reference_index): (&mut usize, &mut usize),
    names: &mut Names,
) {
    for claim in vm_claims(object) {
        if vm_volumes.contains(vm_volume_index) {
            names.vm_volumes.insert(
                *vm_volume_index,
                (namespace.to_owned(), name.to_owned(), claim.to_owned()),
            );
        }
        *vm_volume_index += 1;
    }
    for reference in vm_references_in_its_namespace(object) {
        if references.contains(reference_index) {
            names.references.insert(
                *reference_index,
                (namespace.to_owned(), name.to_owned(), reference),
            );
        }
        *reference_index += 1;
    }
}

/// Pushes the cross checks' findings, in the order and with the words of a check on names.
fn report_failures(
    inventory: &mut Inventory,
    failures: &Failures,
    names: &Result<Names, TarballError>,
    live: &[LiveVolumeSnapshot],
    resource_list: Option<&ResourceList>,
) {
    let findings = &mut inventory.findings;
    if failures.no_version {
        findings.push(
            Reason::ItemInvalid,
            "the tarball has no metadata/version: it was not written by Velero",
        );
    }
    let unnamed = |what: &str| unnamed(names, what);
    let recovered = names.as_ref().ok();

    let messages: Vec<String> = recovered
        .map(|n| &n.unbound_claims)
        .into_iter()
        .flatten()
        .map(|((namespace, name), replica)| {
            Violation::pvc_not_bound(namespace, name, replica.as_deref()).to_string()
        })
        .collect();
    push_counted(
        findings,
        invariants::Reason::PvcNotBound,
        messages,
        || unnamed("a PersistentVolumeClaim has no spec.volumeName in the backup"),
        failures.unbound_claims.len(),
    );

    let messages: Vec<String> = recovered
        .map(|n| &n.claims_without_pv)
        .into_iter()
        .flatten()
        .map(|((namespace, name), volume)| {
            Violation::pv_missing(namespace, name, volume).to_string()
        })
        .collect();
    push_counted(
        findings,
        invariants::Reason::PvMissing,
        messages,
        || {
            unnamed(
                "a PersistentVolumeClaim is bound to a PersistentVolume which is not in the backup",
            )
        },
        failures.claims_without_pv.len(),
    );

    let in_backup = failures.snapshots.iter().map(|index| {
        match recovered.and_then(|n| n.snapshots.get(index)) {
            Some((namespace, name, uid)) => {
                Violation::replica_pvc_missing(namespace, name, uid, SnapshotSeen::InBackup)
                    .to_string()
            }
            None => unnamed("a VolumeSnapshot has no replica PVC in the backup"),
        }
    });
    let at_source = failures.live_snapshots.iter().map(|index| {
        let snapshot = &live[*index];
        Violation::replica_pvc_missing(
            &snapshot.namespace,
            &snapshot.name,
            &snapshot.uid,
            SnapshotSeen::LiveAtSource,
        )
        .to_string()
    });
    push_counted(
        findings,
        invariants::Reason::ReplicaPvcMissing,
        in_backup.chain(at_source).collect(),
        String::new,
        failures.snapshots_failed + failures.live_snapshots.len(),
    );

    let messages = failures
        .vm_volumes
        .iter()
        .map(
            |index| match recovered.and_then(|n| n.vm_volumes.get(index)) {
                Some((namespace, vm, claim)) => {
                    Violation::vm_volume_missing(namespace, vm, claim).to_string()
                }
                None => unnamed("a VirtualMachine uses a PVC which is not in the backup"),
            },
        )
        .collect();
    push_counted(
        findings,
        invariants::Reason::VmVolumeMissing,
        messages,
        String::new,
        failures.vm_volumes_failed,
    );

    report_data_volumes(findings, failures, names);
    report_references(findings, failures, names);

    if let Some(list) = resource_list {
        check_resource_list(inventory, list);
    }
}

/// The [`invariants::Reason::DataVolumeWouldImport`] findings: claims the restore leaves out,
/// then `DataVolumes` CDI would import.
fn report_data_volumes(
    findings: &mut Findings,
    failures: &Failures,
    names: &Result<Names, TarballError>,
) {
    let unnamed = |what: &str| unnamed(names, what);
    let recovered = names.as_ref().ok();
    let claims = recovered
        .map(|n| &n.claims_left_out)
        .into_iter()
        .flatten()
        .filter_map(|((namespace, name), hazard)| {
            hazard
                .as_ref()
                .map(|h| Violation::claim_would_import(namespace, name, h).to_string())
        });
    let data_volumes = failures.data_volumes.iter().map(|(index, cause)| {
        match recovered.and_then(|n| n.data_volumes.get(index)) {
            Some((namespace, name, phase)) => {
                Violation::data_volume_would_import(namespace, name, phase, *cause).to_string()
            }
            None => unnamed("CDI would import a DataVolume instead of adopting its claim"),
        }
    });
    push_counted(
        findings,
        invariants::Reason::DataVolumeWouldImport,
        claims.chain(data_volumes).collect(),
        || unnamed("the restore leaves out a claim whose CDI import had not completed"),
        failures.claims_left_out.len() + failures.data_volumes_failed,
    );
}

/// The [`invariants::Reason::ReferenceMissing`] findings: objects VMs need that the backup
/// lacks.
fn report_references(
    findings: &mut Findings,
    failures: &Failures,
    names: &Result<Names, TarballError>,
) {
    let recovered = names.as_ref().ok();
    let messages = failures
        .references
        .iter()
        .map(
            |index| match recovered.and_then(|n| n.references.get(index)) {
                Some((namespace, vm, reference)) => {
                    Violation::reference_missing(namespace, vm, reference, None).to_string()
                }
                None => unnamed(
                    names,
                    "a VirtualMachine needs an object which is not in the backup",
                ),
            },
        )
        .collect();
    push_counted(
        findings,
        invariants::Reason::ReferenceMissing,
        messages,
        String::new,
        failures.references_failed,
    );
}

/// A finding whose object's name the second pass did not recover, and why.
fn unnamed(names: &Result<Names, TarballError>, what: &str) -> String {
    match names {
        Ok(_) => format!(
            "{what} (its name was not found when the tarball was read a second time for it)"
        ),
        Err(error) => {
            let mut cause = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(error) = source {
                cause = format!("{cause}: {error}");
                source = error.source();
            }
            format!(
                "{what} (its name could not be read: reading the tarball a second time failed: {cause})"
            )
        }
    }
}

/// Every item the resource list names is in the tarball, and no more.
fn check_resource_list(inventory: &mut Inventory, list: &ResourceList) {
    let findings = &mut inventory.findings;
    let listed = list.len();
    let item_keys = &inventory.item_keys;
    list.for_each(|resource, entry| {
        let (namespace, name) = entry.split_once('/').unwrap_or(("", entry));
        if !item_keys.contains(&item_key(resource, namespace, name)) {
            findings.push(
                Reason::ResourceListMismatch,
                format!("{resource} {entry} is in the resource list but not in the tarball"),
            );
        }
    });
    if listed < inventory.stats.items {
        findings.push(
            Reason::ResourceListMismatch,
            format!(
                "the tarball holds {} items but the resource list names {listed}: items were added",
                inventory.stats.items
            ),
        );
    }
}

/// Pushes `messages` (the findings kept word for word), fills up to [`KEPT_PER_REASON`] with
/// `unnamed()` when fewer names were recovered, then counts the rest up to `total`.
fn push_counted(
    findings: &mut Findings,
    reason: invariants::Reason,
    messages: Vec<String>,
    unnamed: impl Fn() -> String,
    total: usize,
) {
    let reason = Reason::Backup(reason);
    let named = messages.len();
    let kept = total.min(KEPT_PER_REASON).max(named);
    for message in messages {
        findings.push(reason, message);
    }
    for _ in named..kept {
        findings.push(reason, unnamed());
    }
    // Past the kept ones, `push` only counts: the message is never stored.
    for _ in kept..total {
        findings.push(reason, String::new());
    }
}

#[cfg(test)]
mod tests;
