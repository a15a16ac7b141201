//! Streaming inspection of a Velero backup tarball (`<backup>.tar.gz`): one pass through gzip and
//! tar, memory bounded by the largest item and the per-kind inventories (PVCs, PVs, VMs,
//! VolumeSnapshots), never by the tarball's size.
//!
//! Velero's layout (`pkg/archive`, `pkg/backup/item_backupper.go`): `metadata/version`, then each
//! item at `resources/<resource>[.<group>]/{namespaces/<ns>|cluster}/<name>.json` and again under
//! `resources/<resource>[.<group>]/<version>-preferredversion/…`; other versions of a resource sit
//! in a plain `<version>/` directory. Each item is counted once, from its unversioned path.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use replicadr_plugins::actions::pv_site_remap::{NFS_CSI_DRIVER, Outcome, PvSiteRemap};
use replicadr_plugins::sitemap::{SiteMap, SiteName};
use serde::Deserialize;
use serde_json::Value;

use super::report::{Findings, Reason, Stats};

/// The label marking PVCs the project created.
pub use crate::velero::{LABEL_MANAGED_BY, MANAGED_BY};

/// On a replica PVC: the UID of the VolumeSnapshot it was created from.
pub const LABEL_REPLICA_OF_SNAPSHOT_UID: &str = "replicadr.io/replica-of-snapshot-uid";

/// Kubernetes objects are at most a few MiB (etcd's request limit); anything larger was not
/// written by Velero.
const MAX_ITEM_BYTES: u64 = 16 * 1024 * 1024;

/// Why the tarball could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading from the source failed (network, disk): not the tarball's fault.
    #[error("reading the tarball failed after {offset} bytes")]
    Source {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The stream ends before gzip or tar says it should.
    #[error(
        "the tarball is truncated: it ends after {compressed} compressed bytes, in the middle of {context}"
    )]
    Truncated { compressed: u64, context: String },
    /// The bytes are not valid gzip or tar.
    #[error("the tarball is corrupt after {compressed} compressed bytes ({context}): {source}")]
    Corrupt {
        compressed: u64,
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// The verification reason.
    pub fn reason(&self) -> Reason {
        match self {
            ArchiveError::Source { .. } => Reason::ObjectStoreUnreachable,
            ArchiveError::Truncated { .. } => Reason::TarballTruncated,
            ArchiveError::Corrupt { .. } => Reason::TarballCorrupt,
        }
    }
}

/// The NFS checks run on each PV as it streams past.
#[derive(Debug, Clone, Default)]
pub struct PvChecks {
    /// One configured rewrite per site: a dry run of the failover to each.
    pub remaps: Vec<(SiteName, PvSiteRemap)>,
}

impl PvChecks {
    /// A dry-run rewrite to every site of `map`.
    pub fn for_every_site(map: &SiteMap) -> Self {
        Self {
            remaps: map
                .sites()
                .iter()
                .map(|site| (site.clone(), PvSiteRemap::new(map.clone(), site.clone())))
                .collect(),
        }
    }
}

/// A PVC found in the tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcInfo {
    /// `spec.volumeName`: the PV it is bound to.
    pub volume_name: Option<String>,
    /// For replica PVCs, the UID of the VolumeSnapshot it copies.
    pub replica_of_snapshot: Option<String>,
}

/// What one pass over the tarball found.
#[derive(Debug, Default)]
pub struct Inventory {
    pub stats: Stats,
    pub format_version: Option<String>,
    /// By (namespace, name).
    pub pvcs: BTreeMap<(String, String), PvcInfo>,
    pub pvs: BTreeSet<String>,
    /// (namespace, name, uid).
    pub snapshots: Vec<(String, String, String)>,
    /// (namespace, VM name, claim or `DataVolume` name).
    pub vm_volumes: Vec<(String, String, String)>,
    /// Hashes of `apiVersion/Kind` + `namespace/name` of every item, to compare with the
    /// resource list without keeping 100,000 strings.
    pub item_keys: HashSet<u64>,
    pub findings: Findings,
}

/// The key of an item as Velero's resource list writes it.
pub fn item_key(api_version_kind: &str, namespace: &str, name: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    api_version_kind.hash(&mut hasher);
    namespace.hash(&mut hasher);
    name.hash(&mut hasher);
    hasher.finish()
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

/// Counts bytes through a reader and remembers whether the inner reader failed.
struct Counting<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(error) => {
                self.failed.store(true, Ordering::Relaxed);
                Err(error)
            }
        }
    }
}

/// Reads a `.tar.gz` Velero backup from `source` to its end, running the per-item checks.
pub fn inspect(source: impl Read, checks: &PvChecks) -> Result<Inventory, ArchiveError> {
    let compressed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let source_failed = Arc::new(AtomicBool::new(false));
    let counted = Counting {
        inner: source,
        count: Arc::clone(&compressed),
        failed: Arc::clone(&source_failed),
    };
    let uncompressed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gunzip = Counting {
        inner: flate2::read::GzDecoder::new(io::BufReader::with_capacity(256 * 1024, counted)),
        count: Arc::clone(&uncompressed),
        failed: Arc::new(AtomicBool::new(false)),
    };
    let mut inventory = Inventory::default();
    let mut context = String::from("the tar header of the first entry");
    let result = read_entries(gunzip, checks, &mut inventory, &mut context);
    inventory.stats.compressed_bytes = compressed.load(Ordering::Relaxed);
    inventory.stats.uncompressed_bytes = uncompressed.load(Ordering::Relaxed);
    match result {
        Ok(()) => Ok(inventory),
        Err(source) => {
            let offset = compressed.load(Ordering::Relaxed);
            Err(if source_failed.load(Ordering::Relaxed) {
                ArchiveError::Source { offset, source }
            } else if source.kind() == io::ErrorKind::UnexpectedEof {
                ArchiveError::Truncated {
                    compressed: offset,
                    context,
                }
            } else {
                ArchiveError::Corrupt {
                    compressed: offset,
                    context,
                    source,
                }
            })
        }
    }
}

fn read_entries(
    reader: impl Read,
    checks: &PvChecks,
    inventory: &mut Inventory,
    context: &mut String,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    let mut buffer = Vec::with_capacity(64 * 1024);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path_bytes();
        let path = String::from_utf8_lossy(&path).into_owned();
        context.clear();
        context.push_str(&path);
        if path == "metadata/version" {
            buffer.clear();
            entry.read_to_end(&mut buffer)?;
            inventory.format_version = Some(String::from_utf8_lossy(&buffer).trim().to_owned());
            continue;
        }
        let Some(location) = ItemPath::parse(&path) else {
            continue;
        };
        if !location.canonical {
            continue;
        }
        let size = entry.header().size()?;
        if size > MAX_ITEM_BYTES {
            inventory.findings.push(
                Reason::ItemInvalid,
                format!("{path} is {size} bytes, larger than any Kubernetes object"),
            );
            continue;
        }
        buffer.clear();
        entry.read_to_end(&mut buffer)?;
        inventory.stats.items += 1;
        inspect_item(&location, &path, &buffer, checks, inventory);
    }
    // The tar end-of-archive marker is two zero blocks; `entries` stops at the first, so a
    // stream cut just after the last entry is caught by gzip's own length and CRC check here.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(())
}

/// Where an item sits in the tarball.
#[derive(Debug, PartialEq, Eq)]
struct ItemPath<'p> {
    /// `persistentvolumes`, `virtualmachines.kubevirt.io`, …
    group_resource: &'p str,
    namespace: Option<&'p str>,
    name: &'p str,
    /// Not under a version directory: the copy counted.
    canonical: bool,
}

impl<'p> ItemPath<'p> {
    fn parse(path: &'p str) -> Option<Self> {
        let rest = path.strip_prefix("resources/")?;
        let (group_resource, rest) = rest.split_once('/')?;
        let (canonical, rest) = if rest.starts_with("namespaces/") || rest.starts_with("cluster/") {
            (true, rest)
        } else {
            (false, rest.split_once('/')?.1)
        };
        let (namespace, file) = if let Some(rest) = rest.strip_prefix("namespaces/") {
            let (namespace, file) = rest.split_once('/')?;
            (Some(namespace), file)
        } else {
            (None, rest.strip_prefix("cluster/")?)
        };
        let name = file.strip_suffix(".json")?;
        Some(Self {
            group_resource,
            namespace,
            name,
            canonical,
        })
    }
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
        "persistentvolumeclaims"
            | "persistentvolumes"
            | "volumesnapshots.snapshot.storage.k8s.io"
            | "virtualmachines.kubevirt.io"
    );
    if !interesting {
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

/// PVCs, PVs, VolumeSnapshots and VMs: parsed whole and recorded for the cross checks.
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
    let namespace = location.namespace.unwrap_or_default().to_owned();
    let name = location.name.to_owned();
    inventory.item_keys.insert(item_key(
        &format!("{api_version}/{kind}"),
        &namespace,
        &name,
    ));
    match location.group_resource {
        "persistentvolumeclaims" => {
            inventory.stats.persistent_volume_claims += 1;
            let replica_of = str_at(&format!("/metadata/labels/{}", escape(LABEL_MANAGED_BY)))
                .filter(|v| *v == MANAGED_BY)
                .and_then(|_| {
                    str_at(&format!(
                        "/metadata/labels/{}",
                        escape(LABEL_REPLICA_OF_SNAPSHOT_UID)
                    ))
                    .or_else(|| {
                        str_at(&format!(
                            "/metadata/annotations/{}",
                            escape(LABEL_REPLICA_OF_SNAPSHOT_UID)
                        ))
                    })
                })
                .map(str::to_owned);
            inventory.pvcs.insert(
                (namespace, name),
                PvcInfo {
                    volume_name: str_at("/spec/volumeName")
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned),
                    replica_of_snapshot: replica_of,
                },
            );
        }
        "persistentvolumes" => {
            inventory.stats.persistent_volumes += 1;
            check_pv(&object, &name, checks, inventory);
            inventory.pvs.insert(name);
        }
        "volumesnapshots.snapshot.storage.k8s.io" => {
            inventory.stats.volume_snapshots += 1;
            let uid = str_at("/metadata/uid").unwrap_or_default().to_owned();
            inventory.snapshots.push((namespace, name, uid));
        }
        "virtualmachines.kubevirt.io" => {
            inventory.stats.virtual_machines += 1;
            let volumes = object
                .pointer("/spec/template/spec/volumes")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for volume in volumes {
                let claim = volume
                    .pointer("/persistentVolumeClaim/claimName")
                    .or_else(|| volume.pointer("/dataVolume/name"))
                    .and_then(Value::as_str);
                if let Some(claim) = claim {
                    inventory
                        .vm_volumes
                        .push((namespace.clone(), name.clone(), claim.to_owned()));
                }
            }
        }
        _ => {}
    }
}

/// JSON pointer escaping of a label key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn is_nfs(pv: &Value) -> bool {
    pv.pointer("/spec/nfs").is_some()
        || pv.pointer("/spec/csi/driver").and_then(Value::as_str) == Some(NFS_CSI_DRIVER)
}

/// An NFS PV must be Retain in the backed-up copy (or Velero re-provisions it empty) and must map
/// to every site: the same rewrite the restore plugin will do, run on a copy.
fn check_pv(pv: &Value, name: &str, checks: &PvChecks, inventory: &mut Inventory) {
    if !is_nfs(pv) {
        return;
    }
    inventory.stats.nfs_persistent_volumes += 1;
    let policy = pv
        .pointer("/spec/persistentVolumeReclaimPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Delete");
    if policy != "Retain" {
        inventory.findings.push(
            Reason::PvNotRetain,
            format!(
                "PersistentVolume {name} is backed up with reclaim policy {policy}: Velero re-provisions such PVs empty on restore instead of restoring them"
            ),
        );
    }
    for (site, remap) in &checks.remaps {
        let mut copy = pv.clone();
        match remap.remap(&mut copy) {
            Ok(Outcome::Remapped { .. } | Outcome::AlreadyLocal | Outcome::NotNfs) => {}
            Ok(Outcome::KeptUnmapped { reason }) => {
                tracing::warn!(pv = name, site = %site, reason = %reason, "nfs pv would be restored unchanged (unmapped: keep)");
            }
            Err(error) => inventory.findings.push(
                Reason::PvUnmappable,
                format!("PersistentVolume {name} cannot fail over to site {site}: {error}"),
            ),
        }
    }
}

/// Velero's `<backup>-resource-list.json.gz`: `apiVersion/Kind` → `[ns/]name`. Kept gzipped and
/// read as a stream whenever it is needed, so its size in memory is its compressed size, not
/// 100,000 parsed names.
#[derive(Debug, Clone)]
pub struct ResourceList {
    gzipped: Vec<u8>,
    entries: u64,
}

impl ResourceList {
    /// Checks and counts a gzipped resource list.
    pub fn parse(gzipped: Vec<u8>) -> Result<Self, ArchiveError> {
        let mut entries = 0;
        for_each_entry(&gzipped, |_, _| entries += 1)?;
        Ok(Self { gzipped, entries })
    }

    /// How many items it names.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether it names no item.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Calls `f(resource, entry)` for each item, in file order.
    pub fn for_each(&self, f: impl FnMut(&str, &str)) {
        // Parsed once already in `parse`: it cannot fail now.
        let _ = for_each_entry(&self.gzipped, f);
    }
}

/// Streams the entries of a gzipped resource list.
fn for_each_entry(gzipped: &[u8], mut f: impl FnMut(&str, &str)) -> Result<(), ArchiveError> {
    use serde::Deserializer as _;
    let context = || "the resource list".to_owned();
    let reader = io::BufReader::new(flate2::read::GzDecoder::new(gzipped));
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let result = deserializer
        .deserialize_map(ListVisitor { f: &mut f })
        .and_then(|()| deserializer.end());
    result.map_err(|error| match error.classify() {
        serde_json::error::Category::Eof => ArchiveError::Truncated {
            compressed: gzipped.len() as u64,
            context: context(),
        },
        serde_json::error::Category::Io
            if error.io_error_kind() == Some(io::ErrorKind::UnexpectedEof) =>
        {
            ArchiveError::Truncated {
                compressed: gzipped.len() as u64,
                context: context(),
            }
        }
        _ => ArchiveError::Corrupt {
            compressed: gzipped.len() as u64,
            context: context(),
            source: io::Error::new(io::ErrorKind::InvalidData, error),
        },
    })
}

struct ListVisitor<'f, F> {
    f: &'f mut F,
}

impl<'de, F: FnMut(&str, &str)> serde::de::Visitor<'de> for ListVisitor<'_, F> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a map from resource to item names")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(resource) = map.next_key::<String>()? {
            map.next_value_seed(Entries {
                resource: &resource,
                f: &mut *self.f,
            })?;
        }
        Ok(())
    }
}

struct Entries<'a, F> {
    resource: &'a str,
    f: &'a mut F,
}

impl<'de, F: FnMut(&str, &str)> serde::de::DeserializeSeed<'de> for Entries<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(&str, &str)> serde::de::Visitor<'de> for Entries<'_, F> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a list of item names")
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while let Some(entry) = seq.next_element::<std::borrow::Cow<'_, str>>()? {
            (self.f)(self.resource, &entry);
        }
        Ok(())
    }
}

/// The checks across items, after the pass: bound PVs, replica PVCs, VM disks, resource list.
pub fn cross_check(inventory: &mut Inventory, resource_list: Option<&ResourceList>) {
    let findings = &mut inventory.findings;
    if inventory.format_version.is_none() {
        findings.push(
            Reason::ItemInvalid,
            "the tarball has no metadata/version: it was not written by Velero",
        );
    }
    for ((namespace, name), pvc) in &inventory.pvcs {
        if let Some(volume) = &pvc.volume_name
            && !inventory.pvs.contains(volume)
        {
            findings.push(
                Reason::PvMissing,
                format!("PersistentVolumeClaim {namespace}/{name} is bound to PersistentVolume {volume}, which is not in the backup"),
            );
        }
    }
    let replicas: BTreeMap<(&str, &str), &str> = inventory
        .pvcs
        .iter()
        .filter_map(|((namespace, name), pvc)| {
            pvc.replica_of_snapshot
                .as_deref()
                .map(|uid| ((namespace.as_str(), uid), name.as_str()))
        })
        .collect();
    for (namespace, name, uid) in &inventory.snapshots {
        match replicas.get(&(namespace.as_str(), uid.as_str())) {
            None => findings.push(
                Reason::ReplicaPvcMissing,
                format!("VolumeSnapshot {namespace}/{name} (uid {uid}) has no replica PVC in the backup (a PVC labelled {LABEL_MANAGED_BY}={MANAGED_BY}, {LABEL_REPLICA_OF_SNAPSHOT_UID}={uid})"),
            ),
            Some(pvc) => {
                let bound = inventory
                    .pvcs
                    .get(&(namespace.clone(), (*pvc).to_owned()))
                    .and_then(|p| p.volume_name.as_ref());
                if bound.is_none() {
                    findings.push(
                        Reason::ReplicaPvcMissing,
                        format!("replica PVC {namespace}/{pvc} of VolumeSnapshot {namespace}/{name} was not bound to a PersistentVolume when backed up"),
                    );
                }
            }
        }
    }
    for (namespace, vm, claim) in &inventory.vm_volumes {
        if !inventory
            .pvcs
            .contains_key(&(namespace.clone(), claim.clone()))
        {
            findings.push(
                Reason::VmVolumeMissing,
                format!(
                    "VirtualMachine {namespace}/{vm} uses PVC {claim}, which is not in the backup"
                ),
            );
        }
    }
    if let Some(list) = resource_list {
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
}

#[cfg(test)]
mod tests;
