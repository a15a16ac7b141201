//! The rewrite of a PersistentVolume's NFS location onto one site's copy of its export, by the
//! site map. The restore plugin `replicadr.io/pv-site-remap` runs it on every PV it restores;
//! verification and `replicadr plan` run it on a copy of every backed-up PV, so a dry run is the
//! rewrite itself, not a second reading of the site map.

use serde_json::Value;

use crate::nfs::{NfsLocation, NfsSource, persistent_volume_spec};
use crate::objects::{describe, object_at};
use crate::sitemap::{Placement, SiteMap, SiteName, UnmappedPolicy};
use crate::wire::{
    ANNOTATION_ORIGINAL_HANDLE, ANNOTATION_ORIGINAL_PATH, ANNOTATION_ORIGINAL_SERVER,
    ANNOTATION_ORIGINAL_SITE, ANNOTATION_REMAP_RULE, PLUGIN_PV_SITE_REMAP,
};

/// A site map and the site PVs are rewritten onto.
#[derive(Debug, Clone)]
pub struct SiteRemap {
    map: SiteMap,
    local: SiteName,
}

/// What happened to one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Rewritten onto the local site's export.
    Remapped {
        export: String,
        from: String,
        to: String,
    },
    /// Already on the local site's export.
    AlreadyLocal,
    /// Not an NFS volume.
    NotNfs,
    /// NFS, outside the site map, kept unchanged because the map says `unmapped: keep`.
    KeptUnmapped { reason: String },
}

/// Why a PV cannot be rewritten; the message names the PV and what would fix it, and is what the
/// user sees in the restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RemapError(pub String);

impl SiteRemap {
    /// A rewrite onto `local`'s exports of `map`.
    pub fn new(map: SiteMap, local: SiteName) -> Self {
        Self { map, local }
    }

    /// One rewrite per site of `map`: a dry run of the failover to each.
    pub fn every_site(map: &SiteMap) -> Vec<SiteRemap> {
        map.sites()
            .iter()
            .map(|site| SiteRemap::new(map.clone(), site.clone()))
            .collect()
    }

    /// The site PVs are rewritten onto.
    pub fn site(&self) -> &SiteName {
        &self.local
    }

    /// The site map.
    pub fn map(&self) -> &SiteMap {
        &self.map
    }

    /// Rewrites one PersistentVolume in place and records what it changed in annotations.
    pub fn remap(&self, pv: &mut Value) -> Result<Outcome, RemapError> {
        let what = describe(pv);
        let spec = persistent_volume_spec(pv, PLUGIN_PV_SITE_REMAP)
            .map_err(|e| RemapError(e.to_string()))?;
        let Some(location) = NfsLocation::read(spec) else {
            return Ok(Outcome::NotNfs);
        };
        let (parsed_server, parsed_path) = location
            .parse()
            .map_err(|e| RemapError(format!("{what}: {e}")))?;
        let NfsLocation {
            source,
            server,
            path,
        } = location;

        let rewrite = match self.map.place(&self.local, &parsed_server, &parsed_path) {
            Ok(Placement::Local { .. }) => return Ok(Outcome::AlreadyLocal),
            Ok(Placement::Remote(rewrite)) => rewrite,
            Err(unmapped) => {
                return match self.map.unmapped_policy() {
                    UnmappedPolicy::Keep => Ok(Outcome::KeptUnmapped {
                        reason: unmapped.to_string(),
                    }),
                    UnmappedPolicy::Fail => Err(RemapError(format!(
                        "{what}: {unmapped}; it would point at a server that site {} does not replicate to. Add the export to the site map, or set `unmapped: keep` to restore such PVs unchanged",
                        self.local
                    ))),
                };
            }
        };
        let new_path = rewrite.path.to_string();
        let mut annotations = vec![
            (ANNOTATION_ORIGINAL_SERVER, server.clone()),
            (ANNOTATION_ORIGINAL_PATH, path.clone()),
            (ANNOTATION_ORIGINAL_SITE, rewrite.from_site.to_string()),
            (ANNOTATION_REMAP_RULE, rewrite.export.to_owned()),
        ];
        let spec = pv
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .expect("checked above");
        if let NfsSource::Csi = source {
            let csi = object_at(spec, &["csi"]);
            if let Some(handle) = csi.get("volumeHandle").and_then(Value::as_str) {
                let new_handle =
                    rewrite_volume_handle(handle, &server, &path, rewrite.server, &new_path);
                if new_handle != handle {
                    annotations.push((ANNOTATION_ORIGINAL_HANDLE, handle.to_owned()));
                    csi.insert("volumeHandle".into(), new_handle.into());
                }
            }
        }
        let location = source.location_mut(spec);
        location.insert("server".into(), rewrite.server.into());
        location.insert(source.path_key().into(), new_path.clone().into());
        let metadata = object_at(
            pv.as_object_mut().expect("checked above"),
            &["metadata", "annotations"],
        );
        for (key, value) in annotations {
            metadata.insert(key.into(), value.into());
        }
        Ok(Outcome::Remapped {
            export: rewrite.export.to_owned(),
            from: format!("{server}:{path}"),
            to: format!("{}:{new_path}", rewrite.server),
        })
    }
}

/// Keeps a csi-driver-nfs volume handle consistent with the rewritten server and share, so the
/// handle stays unique per export at the new site. Handles in the driver's formats are
/// `server#share#subDir#uuid[#onDelete]` (share and subDir without surrounding slashes) and, in
/// old releases, `server/share/uuid`; a handle in neither format is left unchanged.
pub fn rewrite_volume_handle(
    handle: &str,
    old_server: &str,
    old_share: &str,
    new_server: &str,
    new_share: &str,
) -> String {
    let old_share_trimmed = old_share.trim_matches('/');
    let new_share_trimmed = new_share.trim_matches('/');
    let parts: Vec<&str> = handle.split('#').collect();
    if parts.len() >= 3
        && parts[0].trim_matches('/') == old_server.trim_matches('/')
        && parts[1].trim_matches('/') == old_share_trimmed
    {
        let mut rewritten = vec![new_server.trim_matches('/'), new_share_trimmed];
        rewritten.extend_from_slice(&parts[2..]);
        return rewritten.join("#");
    }
    let legacy_prefix = format!("{old_server}/{old_share_trimmed}/");
    if let Some(rest) = handle.strip_prefix(&legacy_prefix) {
        return format!("{new_server}/{new_share_trimmed}/{rest}");
    }
    handle.to_owned()
}
