//! Where a PersistentVolume keeps its NFS location: in-tree `spec.nfs` (`server`, `path`) or the
//! NFS CSI driver's `spec.csi.volumeAttributes` (`server`, `share`). Every action that reads or
//! rewrites NFS PVs goes through here, so they agree on what counts as an NFS volume and name the
//! same fields in their messages.

use serde_json::{Map, Value};

use crate::objects::{describe, object_at};
use crate::sitemap::{ExportPath, NfsServer};
pub use crate::wire::NFS_CSI_DRIVER;

/// Which of the two NFS volume sources a PV uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfsSource {
    /// `spec.nfs`.
    InTree,
    /// `spec.csi` with driver [`NFS_CSI_DRIVER`].
    Csi,
}

impl NfsSource {
    /// The NFS source of a PV spec; `None` when the PV is not an NFS volume.
    pub fn of(spec: &Map<String, Value>) -> Option<Self> {
        if spec.get("nfs").is_some() {
            Some(NfsSource::InTree)
        } else if spec
            .get("csi")
            .and_then(|csi| csi.get("driver"))
            .and_then(Value::as_str)
            == Some(NFS_CSI_DRIVER)
        {
            Some(NfsSource::Csi)
        } else {
            None
        }
    }

    /// The object under `spec` holding server and path.
    pub fn location(self) -> &'static [&'static str] {
        match self {
            NfsSource::InTree => &["nfs"],
            NfsSource::Csi => &["csi", "volumeAttributes"],
        }
    }

    /// The key of the exported path in that object.
    pub fn path_key(self) -> &'static str {
        match self {
            NfsSource::InTree => "path",
            NfsSource::Csi => "share",
        }
    }

    /// The full field name, for messages: `spec.nfs.server`.
    pub fn field(self, key: &str) -> String {
        format!("spec.{}.{key}", self.location().join("."))
    }

    /// The object holding server and path, created if missing.
    pub fn location_mut(self, spec: &mut Map<String, Value>) -> &mut Map<String, Value> {
        object_at(spec, self.location())
    }
}

/// A PV's NFS location exactly as its spec writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsLocation {
    pub source: NfsSource,
    pub server: String,
    pub path: String,
}

impl NfsLocation {
    /// The NFS location in a PV spec; `None` when the PV is not an NFS volume. Missing values
    /// read as empty, so that [`NfsLocation::parse`] rejects them naming the field.
    pub fn read(spec: &Map<String, Value>) -> Option<Self> {
        let source = NfsSource::of(spec)?;
        let location = source.location().iter().try_fold(spec, |object, key| {
            object.get(*key).and_then(Value::as_object)
        });
        let read = |key: &str| {
            location
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(Self {
            source,
            server: read("server"),
            path: read(source.path_key()),
        })
    }

    /// Parses server and path; the error names the field and its value, e.g.
    /// `spec.nfs.server "" is empty; expected a hostname, …`.
    pub fn parse(&self) -> Result<(NfsServer, ExportPath), String> {
        let server = NfsServer::parse(&self.server)
            .map_err(|e| format!("{} {:?} {e}", self.source.field("server"), self.server))?;
        let path = ExportPath::parse(&self.path).map_err(|e| {
            format!(
                "{} {:?} {e}",
                self.source.field(self.source.path_key()),
                self.path
            )
        })?;
        Ok((server, path))
    }
}

/// Whether a PV is an NFS volume (in-tree or the NFS CSI driver).
pub fn is_nfs(pv: &Value) -> bool {
    pv.get("spec")
        .and_then(Value::as_object)
        .and_then(NfsSource::of)
        .is_some()
}

/// `server:path` of an NFS PV as its spec writes it; `None` for other volumes.
pub fn location(pv: &Value) -> Option<String> {
    let spec = pv.get("spec")?.as_object()?;
    let location = NfsLocation::read(spec)?;
    Some(format!("{}:{}", location.server, location.path))
}

/// An object that is not a PersistentVolume with a spec, handed to code that needs one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAVolume(pub String);

/// The spec of a PersistentVolume item. `plugin` names the action in the error for other kinds.
pub fn persistent_volume_spec<'v>(
    pv: &'v Value,
    plugin: &str,
) -> Result<&'v Map<String, Value>, NotAVolume> {
    let what = describe(pv);
    let kind = pv.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "PersistentVolume" {
        return Err(NotAVolume(format!(
            "{what}: {plugin} only handles PersistentVolumes, got kind {kind:?}"
        )));
    }
    pv.get("spec").and_then(Value::as_object).ok_or_else(|| {
        NotAVolume(format!(
            "{what} has no spec object; cannot tell which volume it is"
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: &Value) -> &Map<String, Value> {
        value.as_object().expect("object")
    }

    #[test]
    fn in_tree_and_csi_locations_are_read_with_their_field_names() {
        let in_tree = json!({"nfs": {"server": "nfs-a", "path": "/exports/a"}});
        let location = NfsLocation::read(spec(&in_tree)).expect("nfs");
        assert_eq!(
            location,
            NfsLocation {
                source: NfsSource::InTree,
                server: "nfs-a".into(),
                path: "/exports/a".into()
            }
        );
        let csi = json!({"csi": {"driver": NFS_CSI_DRIVER, "volumeAttributes": {"server": "nfs-b", "share": "/s"}}});
        let location = NfsLocation::read(spec(&csi)).expect("csi nfs");
        assert_eq!(location.source, NfsSource::Csi);
        assert_eq!(
            (location.server.as_str(), location.path.as_str()),
            ("nfs-b", "/s")
        );
        assert_eq!(
            location.source.field("share"),
            "spec.csi.volumeAttributes.share"
        );
    }

    #[test]
    fn locations_read_as_server_and_path() {
        let pv =
            json!({"kind": "PersistentVolume", "spec": {"nfs": {"server": "nfs-a", "path": "/x"}}});
        assert!(is_nfs(&pv));
        assert_eq!(location(&pv).as_deref(), Some("nfs-a:/x"));
        let other = json!({"kind": "PersistentVolume", "spec": {"hostPath": {"path": "/x"}}});
        assert!(!is_nfs(&other));
        assert_eq!(location(&other), None);
    }

    #[test]
    fn other_volumes_are_not_nfs() {
        for other in [
            json!({"hostPath": {"path": "/data"}}),
            json!({"csi": {"driver": "rbd.csi.ceph.com", "volumeAttributes": {"server": "x"}}}),
            json!({}),
        ] {
            assert_eq!(NfsLocation::read(spec(&other)), None, "{other}");
        }
    }

    #[test]
    fn missing_values_are_rejected_naming_the_field() {
        let csi = json!({"csi": {"driver": NFS_CSI_DRIVER, "volumeHandle": "h"}});
        let error = NfsLocation::read(spec(&csi))
            .expect("csi nfs")
            .parse()
            .expect_err("no server");
        assert!(
            error.starts_with("spec.csi.volumeAttributes.server \"\" is empty"),
            "{error}"
        );
        let relative = json!({"nfs": {"server": "nfs-a", "path": "exports"}});
        let error = NfsLocation::read(spec(&relative))
            .expect("nfs")
            .parse()
            .expect_err("relative");
        assert!(
            error.starts_with("spec.nfs.path \"exports\" is relative"),
            "{error}"
        );
    }

    #[test]
    fn only_persistent_volumes_with_a_spec_are_accepted() {
        let secret = json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "n"}});
        let error = persistent_volume_spec(&secret, "x.io/y").expect_err("kind");
        assert!(
            error
                .0
                .contains("Secret n/s: x.io/y only handles PersistentVolumes")
        );
        let bare = json!({"kind": "PersistentVolume", "metadata": {"name": "pv"}});
        let error = persistent_volume_spec(&bare, "x.io/y").expect_err("spec");
        assert!(error.0.contains("PersistentVolume pv has no spec"));
    }
}
