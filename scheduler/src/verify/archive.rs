//! Streaming inspection of a Velero backup tarball (`<backup>.tar.gz`): one pass through gzip and
//! tar, memory bounded by the largest item and a few 64-bit hashes per item, never by the
//! tarball's size or its names; a second pass, only when a cross check fails, names the objects
//! at fault.
//!
//! Velero's layout (`pkg/archive`, `pkg/backup/item_backupper.go`): `metadata/version`, then each
//! item at `resources/<resource>[.<group>]/{namespaces/<ns>|cluster}/<name>.json` and again under
//! `resources/<resource>[.<group>]/<version>-preferredversion/…`; other versions of a resource sit
//! in a plain `<version>/` directory. Each item is counted once, from its unversioned path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use replicadr_plugins::actions::pv_site_remap::{NFS_CSI_DRIVER, Outcome, PvSiteRemap};
use replicadr_plugins::sitemap::{SiteMap, SiteName};
use serde::Deserialize;
use serde_json::Value;

use super::report::{Findings, KEPT_PER_REASON, Reason, Stats};

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

/// A PVC found in the tarball, by hashes only: a fixed few bytes whatever its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvcRef {
    /// [`pv_key`] of `spec.volumeName`: the PV it is bound to.
    pub volume: Option<NonZeroU64>,
}

/// What one pass over the tarball found. The cross-check state holds 64-bit hashes, not names,
/// so it grows by a few bytes per PVC, PV, snapshot and VM disk; the names of whatever fails a
/// cross check are read again from the tarball ([`cross_check`]).
#[derive(Debug, Default)]
pub struct Inventory {
    pub stats: Stats,
    pub format_version: Option<String>,
    /// By [`pvc_key`].
    pub pvcs: HashMap<u64, PvcRef>,
    /// Replica PVCs: [`pvc_key`] by [`replica_key`] of their namespace and snapshot UID; the
    /// last in tarball order when several claim the same snapshot.
    pub replicas: HashMap<u64, u64>,
    /// By [`pv_key`].
    pub pvs: HashSet<NonZeroU64>,
    /// Each VolumeSnapshot in tarball order, as the [`replica_key`] of its namespace and UID.
    pub snapshots: Vec<u64>,
    /// Each VM disk in tarball order, as the [`pvc_key`] of the claim or `DataVolume` it names.
    pub vm_volumes: Vec<u64>,
    /// Hashes of `apiVersion/Kind` + `namespace/name` of every item, to compare with the
    /// resource list without keeping 100,000 strings.
    pub item_keys: HashSet<u64>,
    pub findings: Findings,
}

impl Inventory {
    /// Whether the tarball holds the PVC `namespace/name`.
    pub fn has_pvc(&self, namespace: &str, name: &str) -> bool {
        self.pvcs.contains_key(&pvc_key(namespace, name))
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
pub fn pv_key(name: &str) -> NonZeroU64 {
    NonZeroU64::new(item_key("pv", "", name)).unwrap_or(NonZeroU64::MIN)
}

/// The key joining a VolumeSnapshot to its replica PVC.
pub fn replica_key(namespace: &str, snapshot_uid: &str) -> u64 {
    item_key("replica", namespace, snapshot_uid)
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
    let mut inventory = Inventory::default();
    let (compressed, uncompressed) = read_tarball(source, |entry| match entry {
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
    inventory.stats.compressed_bytes = compressed;
    inventory.stats.uncompressed_bytes = uncompressed;
    Ok(inventory)
}

/// Reads a `.tar.gz` Velero backup from `source` to its end, handing each canonical item of the
/// group-resources `wanted` accepts (`persistentvolumes`, `virtualmachines.kubevirt.io`, …) to
/// `visit` as its group-resource and raw JSON. Returns the number of items in the tarball.
pub fn read_items(
    source: impl Read,
    wanted: impl Fn(&str) -> bool,
    mut visit: impl FnMut(&str, &[u8]),
) -> Result<u64, ArchiveError> {
    let mut items = 0;
    read_tarball(source, |entry| {
        if let Entry::Item {
            location, bytes, ..
        } = entry
        {
            items += 1;
            if wanted(location.group_resource) {
                visit(location.group_resource, bytes);
            }
        }
    })?;
    Ok(items)
}

/// What [`read_tarball`] hands over, in tarball order.
enum Entry<'a> {
    /// `metadata/version`.
    Version(&'a [u8]),
    /// A canonical item too large to be a Kubernetes object (not read).
    Oversized { path: &'a str, size: u64 },
    /// A canonical item.
    Item {
        location: &'a ItemPath<'a>,
        path: &'a str,
        bytes: &'a [u8],
    },
}

/// Streams `source` through gzip and tar to its end, calling `visit` for each entry that counts;
/// returns the compressed and uncompressed byte counts. Both passes over a tarball go through
/// here, so they see the same items in the same order.
fn read_tarball(
    source: impl Read,
    visit: impl FnMut(Entry<'_>),
) -> Result<(u64, u64), ArchiveError> {
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
    let mut context = String::from("the tar header of the first entry");
    match read_entries(gunzip, &mut context, visit) {
        Ok(()) => Ok((
            compressed.load(Ordering::Relaxed),
            uncompressed.load(Ordering::Relaxed),
        )),
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
    context: &mut String,
    mut visit: impl FnMut(Entry<'_>),
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
            visit(Entry::Version(&buffer));
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
            visit(Entry::Oversized { path: &path, size });
            continue;
        }
        buffer.clear();
        entry.read_to_end(&mut buffer)?;
        visit(Entry::Item {
            location: &location,
            path: &path,
            bytes: &buffer,
        });
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
    let namespace = location.namespace.unwrap_or_default();
    let name = location.name;
    inventory
        .item_keys
        .insert(item_key(&format!("{api_version}/{kind}"), namespace, name));
    match location.group_resource {
        "persistentvolumeclaims" => {
            inventory.stats.persistent_volume_claims += 1;
            let key = pvc_key(namespace, name);
            if let Some(uid) = replica_of(&object) {
                inventory.replicas.insert(replica_key(namespace, uid), key);
            }
            inventory.pvcs.insert(
                key,
                PvcRef {
                    volume: volume_name(&object).map(pv_key),
                },
            );
        }
        "persistentvolumes" => {
            inventory.stats.persistent_volumes += 1;
            check_pv(&object, name, checks, inventory);
            inventory.pvs.insert(pv_key(name));
        }
        "volumesnapshots.snapshot.storage.k8s.io" => {
            inventory.stats.volume_snapshots += 1;
            inventory
                .snapshots
                .push(replica_key(namespace, snapshot_uid(&object)));
        }
        "virtualmachines.kubevirt.io" => {
            inventory.stats.virtual_machines += 1;
            for claim in vm_claims(&object) {
                inventory.vm_volumes.push(pvc_key(namespace, claim));
            }
        }
        _ => {}
    }
}

/// A PVC's `spec.volumeName`, if set.
pub fn volume_name(pvc: &Value) -> Option<&str> {
    pvc.pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

/// For a replica PVC the project made, the UID of the VolumeSnapshot it copies.
pub fn replica_of(pvc: &Value) -> Option<&str> {
    let str_at = |pointer: &str| pvc.pointer(pointer).and_then(Value::as_str);
    str_at(&format!("/metadata/labels/{}", escape(LABEL_MANAGED_BY)))
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
}

fn snapshot_uid(snapshot: &Value) -> &str {
    snapshot
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The PVC or `DataVolume` names of a VM's disks, in order.
pub fn vm_claims(vm: &Value) -> impl Iterator<Item = &str> {
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|volume| {
            volume
                .pointer("/persistentVolumeClaim/claimName")
                .or_else(|| volume.pointer("/dataVolume/name"))
                .and_then(Value::as_str)
        })
}

/// JSON pointer escaping of a label key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

pub fn is_nfs(pv: &Value) -> bool {
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
///
/// They run on the inventory's hashes. Only if one fails is the tarball read a second time, from
/// `reopen`, to recover the names of the objects at fault, so each finding names them exactly;
/// if that read fails the findings stay, with the names replaced by why they are missing.
pub fn cross_check<R: Read>(
    inventory: &mut Inventory,
    resource_list: Option<&ResourceList>,
    reopen: impl FnOnce() -> io::Result<R>,
) {
    let failures = find_failures(inventory);
    let names = if failures.need_names() {
        reopen()
            .map_err(|source| ArchiveError::Source { offset: 0, source })
            .and_then(|source| recover_names(source, &failures))
    } else {
        Ok(Names::default())
    };
    report_failures(inventory, &failures, &names, resource_list);
}

/// What failed the cross checks, by hash and position, before the names are known.
#[derive(Debug, Default)]
struct Failures {
    no_version: bool,
    /// PVCs bound to a PV that is not in the backup, by [`pvc_key`]: all of them, since the
    /// findings kept word for word are the first in (namespace, name) order.
    pvcs_without_pv: HashSet<u64>,
    /// The first [`KEPT_PER_REASON`] snapshots failing, by position among the snapshots, with
    /// the [`pvc_key`] of their replica PVC when it is there but unbound.
    snapshots: Vec<(usize, Option<u64>)>,
    snapshots_failed: usize,
    /// The first [`KEPT_PER_REASON`] VM disks failing, by position among the VM disks.
    vm_volumes: Vec<usize>,
    vm_volumes_failed: usize,
}

impl Failures {
    fn need_names(&self) -> bool {
        !self.pvcs_without_pv.is_empty() || self.snapshots_failed > 0 || self.vm_volumes_failed > 0
    }
}

fn find_failures(inventory: &Inventory) -> Failures {
    let mut failures = Failures {
        no_version: inventory.format_version.is_none(),
        ..Failures::default()
    };
    failures.pvcs_without_pv = inventory
        .pvcs
        .iter()
        .filter(|(_, pvc)| pvc.volume.is_some_and(|pv| !inventory.pvs.contains(&pv)))
        .map(|(key, _)| *key)
        .collect();
    for (index, replica) in inventory.snapshots.iter().enumerate() {
        let failure = match inventory.replicas.get(replica) {
            None => Some(None),
            Some(pvc) => inventory
                .pvcs
                .get(pvc)
                .and_then(|p| p.volume)
                .is_none()
                .then_some(Some(*pvc)),
        };
        if let Some(unbound) = failure {
            failures.snapshots_failed += 1;
            if failures.snapshots.len() < KEPT_PER_REASON {
                failures.snapshots.push((index, unbound));
            }
        }
    }
    for (index, claim) in inventory.vm_volumes.iter().enumerate() {
        if !inventory.pvcs.contains_key(claim) {
            failures.vm_volumes_failed += 1;
            if failures.vm_volumes.len() < KEPT_PER_REASON {
                failures.vm_volumes.push(index);
            }
        }
    }
    failures
}

/// The names of the objects in the failures kept word for word, read on the second pass.
#[derive(Debug, Default)]
struct Names {
    /// The first PVCs without their PV, in (namespace, name) order, with the PV's name.
    pvcs_without_pv: BTreeMap<(String, String), String>,
    /// By position among the snapshots: (namespace, name, uid).
    snapshots: HashMap<usize, (String, String, String)>,
    /// Unbound replica PVCs' names, by [`pvc_key`].
    replica_pvcs: HashMap<u64, String>,
    /// By position among the VM disks: (namespace, VM name, claim).
    vm_volumes: HashMap<usize, (String, String, String)>,
}

/// The second pass: streams the tarball again and keeps the names of what `failures` needs.
/// Items are counted as in [`inspect`] (same reader, same order, same items skipped), so the
/// positions recorded in the first pass find the same objects.
fn recover_names(source: impl Read, failures: &Failures) -> Result<Names, ArchiveError> {
    let snapshots: HashSet<usize> = failures.snapshots.iter().map(|(i, _)| *i).collect();
    let replica_pvcs: HashSet<u64> = failures.snapshots.iter().filter_map(|(_, p)| *p).collect();
    let vm_volumes: HashSet<usize> = failures.vm_volumes.iter().copied().collect();
    let mut names = Names::default();
    let (mut snapshot_index, mut vm_volume_index) = (0, 0);
    read_tarball(source, |entry| {
        let Entry::Item {
            location, bytes, ..
        } = entry
        else {
            return;
        };
        let namespace = location.namespace.unwrap_or_default();
        let name = location.name;
        match location.group_resource {
            "persistentvolumeclaims" => {
                let key = pvc_key(namespace, name);
                let without_pv = failures.pvcs_without_pv.contains(&key);
                if !without_pv && !replica_pvcs.contains(&key) {
                    return;
                }
                let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                if replica_pvcs.contains(&key) {
                    names.replica_pvcs.insert(key, name.to_owned());
                }
                if without_pv {
                    let volume = volume_name(&object).unwrap_or_default().to_owned();
                    let kept = &mut names.pvcs_without_pv;
                    kept.insert((namespace.to_owned(), name.to_owned()), volume);
                    if kept.len() > KEPT_PER_REASON {
                        kept.pop_last();
                    }
                }
            }
            "volumesnapshots.snapshot.storage.k8s.io" if !snapshots.is_empty() => {
                let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                if snapshots.contains(&snapshot_index) {
                    names.snapshots.insert(
                        snapshot_index,
                        (
                            namespace.to_owned(),
                            name.to_owned(),
                            snapshot_uid(&object).to_owned(),
                        ),
                    );
                }
                snapshot_index += 1;
            }
            "virtualmachines.kubevirt.io" if !vm_volumes.is_empty() => {
                let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
                    return;
                };
                for claim in vm_claims(&object) {
                    if vm_volumes.contains(&vm_volume_index) {
                        names.vm_volumes.insert(
                            vm_volume_index,
                            (namespace.to_owned(), name.to_owned(), claim.to_owned()),
                        );
                    }
                    vm_volume_index += 1;
                }
            }
            _ => {}
        }
    })?;
    Ok(names)
}

/// Pushes the cross checks' findings, in the order and with the words of a check on names.
fn report_failures(
    inventory: &mut Inventory,
    failures: &Failures,
    names: &Result<Names, ArchiveError>,
    resource_list: Option<&ResourceList>,
) {
    let findings = &mut inventory.findings;
    if failures.no_version {
        findings.push(
            Reason::ItemInvalid,
            "the tarball has no metadata/version: it was not written by Velero",
        );
    }
    let unnamed = |what: &str| match names {
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
    };
    let recovered = names.as_ref().ok();

    let mut messages: Vec<String> = recovered
        .map(|n| &n.pvcs_without_pv)
        .into_iter()
        .flatten()
        .map(|((namespace, name), volume)| {
            format!("PersistentVolumeClaim {namespace}/{name} is bound to PersistentVolume {volume}, which is not in the backup")
        })
        .collect();
    let listed = failures.pvcs_without_pv.len().min(KEPT_PER_REASON);
    while messages.len() < listed {
        messages.push(unnamed(
            "a PersistentVolumeClaim is bound to a PersistentVolume which is not in the backup",
        ));
    }
    push_counted(
        findings,
        Reason::PvMissing,
        messages,
        failures.pvcs_without_pv.len(),
    );

    let messages = failures.snapshots.iter().map(|(index, unbound)| {
        let snapshot = recovered.and_then(|n| n.snapshots.get(index));
        match (snapshot, unbound) {
            (Some((namespace, name, uid)), None) => format!("VolumeSnapshot {namespace}/{name} (uid {uid}) has no replica PVC in the backup (a PVC labelled {LABEL_MANAGED_BY}={MANAGED_BY}, {LABEL_REPLICA_OF_SNAPSHOT_UID}={uid})"),
            (Some((namespace, name, _)), Some(pvc)) => match recovered.and_then(|n| n.replica_pvcs.get(pvc)) {
                Some(pvc) => format!("replica PVC {namespace}/{pvc} of VolumeSnapshot {namespace}/{name} was not bound to a PersistentVolume when backed up"),
                None => unnamed(&format!("the replica PVC of VolumeSnapshot {namespace}/{name} was not bound to a PersistentVolume when backed up")),
            },
            (None, None) => unnamed("a VolumeSnapshot has no replica PVC in the backup"),
            (None, Some(_)) => unnamed("the replica PVC of a VolumeSnapshot was not bound to a PersistentVolume when backed up"),
        }
    });
    push_counted(
        findings,
        Reason::ReplicaPvcMissing,
        messages,
        failures.snapshots_failed,
    );

    let messages = failures.vm_volumes.iter().map(|index| {
        match recovered.and_then(|n| n.vm_volumes.get(index)) {
            Some((namespace, vm, claim)) => format!(
                "VirtualMachine {namespace}/{vm} uses PVC {claim}, which is not in the backup"
            ),
            None => unnamed("a VirtualMachine uses a PVC which is not in the backup"),
        }
    });
    push_counted(
        findings,
        Reason::VmVolumeMissing,
        messages,
        failures.vm_volumes_failed,
    );

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

/// Pushes `messages` (the findings kept word for word), then counts the rest up to `total`.
fn push_counted(
    findings: &mut Findings,
    reason: Reason,
    messages: impl IntoIterator<Item = String>,
    total: usize,
) {
    let mut pushed = 0;
    for message in messages {
        findings.push(reason, message);
        pushed += 1;
    }
    // Past the kept ones, `push` only counts: the message is never stored.
    for _ in pushed..total {
        findings.push(reason, String::new());
    }
}

#[cfg(test)]
mod tests;
