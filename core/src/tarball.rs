//! Streaming reading of a Velero backup tarball (`<backup>.tar.gz`) and its resource list
//! (`<backup>-resource-list.json.gz`): one pass through gzip and tar over any [`Read`], memory
//! bounded by the largest item, never by the tarball's size. Every reader of a backup goes through
//! here, so they see the same items in the same order.
//!
//! Velero's layout (`pkg/archive`, `pkg/backup/item_backupper.go`): `metadata/version`, then each
//! item at `resources/<resource>[.<group>]/{namespaces/<ns>|cluster}/<name>.json` and again under
//! `resources/<resource>[.<group>]/<version>-preferredversion/…`; other versions of a resource sit
//! in a plain `<version>/` directory. Each item is counted once, from its unversioned path.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Kubernetes objects are at most a few MiB (etcd's request limit); anything larger was not
/// written by Velero.
pub const MAX_ITEM_BYTES: u64 = 16 * 1024 * 1024;

/// Why the tarball could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
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

/// Counts bytes through a reader and remembers whether the inner reader failed.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
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

/// Reads a `.tar.gz` Velero backup from `source` to its end, handing each canonical item of the
/// group-resources `wanted` accepts (`persistentvolumes`, `virtualmachines.kubevirt.io`, …) to
/// `visit` as its group-resource and raw JSON. Returns the number of items in the tarball.
pub fn read_items(
    source: impl Read,
    wanted: impl Fn(&str) -> bool,
    mut visit: impl FnMut(&str, &[u8]),
) -> Result<u64, TarballError> {
    let mut items = 0;
    read(source, |entry| {
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

/// What [`read`] hands over, in tarball order.
#[derive(Debug)]
pub enum Entry<'a> {
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

/// How many bytes a read took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounts {
    /// Read from the source.
    pub compressed: u64,
    /// Of tar stream after decompression.
    pub uncompressed: u64,
}

/// Streams `source` through gzip and tar to its end, calling `visit` for each entry that counts.
pub fn read(source: impl Read, visit: impl FnMut(Entry<'_>)) -> Result<ByteCounts, TarballError> {
    let compressed = Arc::new(AtomicU64::new(0));
    let source_failed = Arc::new(AtomicBool::new(false));
    let counted = Counting {
        inner: source,
        count: Arc::clone(&compressed),
        failed: Arc::clone(&source_failed),
    };
    let uncompressed = Arc::new(AtomicU64::new(0));
    let gunzip = Counting {
        inner: flate2::read::GzDecoder::new(io::BufReader::with_capacity(256 * 1024, counted)),
        count: Arc::clone(&uncompressed),
        failed: Arc::new(AtomicBool::new(false)),
    };
    let mut context = String::from("the tar header of the first entry");
    match read_entries(gunzip, &mut context, visit) {
        Ok(()) => Ok(ByteCounts {
            compressed: compressed.load(Ordering::Relaxed),
            uncompressed: uncompressed.load(Ordering::Relaxed),
        }),
        Err(source) => {
            let offset = compressed.load(Ordering::Relaxed);
            Err(if source_failed.load(Ordering::Relaxed) {
                TarballError::Source { offset, source }
            } else if source.kind() == io::ErrorKind::UnexpectedEof {
                TarballError::Truncated {
                    compressed: offset,
                    context,
                }
            } else {
                TarballError::Corrupt {
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
pub struct ItemPath<'p> {
    /// `persistentvolumes`, `virtualmachines.kubevirt.io`, …
    pub group_resource: &'p str,
    pub namespace: Option<&'p str>,
    pub name: &'p str,
    /// Not under a version directory: the copy counted.
    pub canonical: bool,
}

impl<'p> ItemPath<'p> {
    /// Where `path` sits, when it is an item's path at all.
    pub fn parse(path: &'p str) -> Option<Self> {
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
    pub fn parse(gzipped: Vec<u8>) -> Result<Self, TarballError> {
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
fn for_each_entry(gzipped: &[u8], mut f: impl FnMut(&str, &str)) -> Result<(), TarballError> {
    use serde::Deserializer as _;
    let context = || "the resource list".to_owned();
    let reader = io::BufReader::new(flate2::read::GzDecoder::new(gzipped));
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let result = deserializer
        .deserialize_map(ListVisitor { f: &mut f })
        .and_then(|()| deserializer.end());
    result.map_err(|error| match error.classify() {
        serde_json::error::Category::Eof => TarballError::Truncated {
            compressed: gzipped.len() as u64,
            context: context(),
        },
        serde_json::error::Category::Io
            if error.io_error_kind() == Some(io::ErrorKind::UnexpectedEof) =>
        {
            TarballError::Truncated {
                compressed: gzipped.len() as u64,
                context: context(),
            }
        }
        _ => TarballError::Corrupt {
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, *bytes)
                .expect("in memory");
        }
        tar.into_inner()
            .expect("in memory")
            .finish()
            .expect("in memory")
    }

    #[test]
    fn item_paths_follow_velero_layout() {
        assert_eq!(
            ItemPath::parse("resources/persistentvolumes/cluster/pv-1.json"),
            Some(ItemPath {
                group_resource: "persistentvolumes",
                namespace: None,
                name: "pv-1",
                canonical: true
            })
        );
        assert_eq!(
            ItemPath::parse(
                "resources/virtualmachines.kubevirt.io/v1-preferredversion/namespaces/vms/db.json"
            ),
            Some(ItemPath {
                group_resource: "virtualmachines.kubevirt.io",
                namespace: Some("vms"),
                name: "db",
                canonical: false
            })
        );
        assert_eq!(ItemPath::parse("metadata/version"), None);
    }

    #[test]
    fn each_item_is_handed_over_once_from_its_unversioned_path() {
        let pv = br#"{"kind": "PersistentVolume"}"#;
        let bytes = tarball(&[
            ("metadata/version", b"1.1.0\n"),
            ("resources/persistentvolumes/cluster/pv-1.json", pv),
            (
                "resources/persistentvolumes/v1-preferredversion/cluster/pv-1.json",
                pv,
            ),
            ("resources/pods/namespaces/vms/p.json", b"{}"),
        ]);
        let mut seen = Vec::new();
        let items = read_items(
            bytes.as_slice(),
            |r| r == "persistentvolumes",
            |r, b| {
                seen.push((r.to_owned(), b.to_vec()));
            },
        )
        .expect("reads");
        assert_eq!(items, 2);
        assert_eq!(seen, [("persistentvolumes".to_owned(), pv.to_vec())]);
    }

    #[test]
    fn a_cut_stream_is_truncated_and_a_failing_source_is_not_the_tarball() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection reset"))
            }
        }

        let bytes = tarball(&[("resources/pods/namespaces/vms/p.json", b"{}")]);
        let cut = &bytes[..bytes.len() - 10];
        let error = read(cut, |_| {}).expect_err("cut");
        assert!(matches!(error, TarballError::Truncated { .. }), "{error}");
        let error = read(Broken, |_| {}).expect_err("broken");
        assert!(
            matches!(error, TarballError::Source { offset: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_resource_list_is_counted_and_streamed() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(
            br#"{"v1/PersistentVolume": ["pv-1"], "v1/PersistentVolumeClaim": ["vms/a", "vms/b"]}"#,
        )
        .expect("in memory");
        let list = ResourceList::parse(gz.finish().expect("in memory")).expect("valid");
        assert_eq!(list.len(), 3);
        let mut entries = Vec::new();
        list.for_each(|resource, entry| entries.push(format!("{resource} {entry}")));
        assert_eq!(
            entries,
            [
                "v1/PersistentVolume pv-1",
                "v1/PersistentVolumeClaim vms/a",
                "v1/PersistentVolumeClaim vms/b"
            ]
        );
    }
}
