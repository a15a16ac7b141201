//! `replicadr.io/pv-site-remap`: at restore time, points each NFS PersistentVolume at the local
//! site's copy of its export, using the site map. Handles in-tree `spec.nfs` and the NFS CSI
//! driver (`nfs.csi.k8s.io`), records what it changed in annotations, and leaves everything else
//! in the object exactly as it came. It also decides the restored PV's reclaim policy when
//! `replicadr.io/pv-retain` recorded the original one at backup time.

use serde_json::Value;

use super::nfs_volume::{NfsLocation, NfsSource, persistent_volume_spec};
use super::pv_retain::ANNOTATION_ORIGINAL_RECLAIM_POLICY;
use super::{
    ActionFactory, BuildContext, ConfigError, ItemError, PluginConfig, ResourceSelector,
    RestoreInput, RestoreItemAction, RestoreOutput, describe, object_at,
};
use crate::sitemap::{Placement, SiteMap, SiteName, UnmappedPolicy};

pub use super::CONFIG_SITE_MAP;
pub use super::nfs_volume::NFS_CSI_DRIVER;

/// The plugin name Velero registers and sends in every request.
pub const NAME: &str = "replicadr.io/pv-site-remap";

/// ConfigMap key naming the site this Velero runs at.
pub const CONFIG_LOCAL_SITE: &str = "localSite";
/// ConfigMap key choosing the restored PV's reclaim policy; see [`ReclaimPolicyOnRestore`].
pub const CONFIG_RESTORE_RECLAIM_POLICY: &str = "restoreReclaimPolicy";

/// The server the PV pointed at before the rewrite.
pub const ANNOTATION_ORIGINAL_SERVER: &str = "replicadr.io/original-nfs-server";
/// The path (in-tree) or share (CSI) the PV pointed at before the rewrite.
pub const ANNOTATION_ORIGINAL_PATH: &str = "replicadr.io/original-nfs-path";
/// The site the PV's export belonged to before the rewrite.
pub const ANNOTATION_ORIGINAL_SITE: &str = "replicadr.io/original-site";
/// The site map export that matched.
pub const ANNOTATION_RULE: &str = "replicadr.io/remap-rule";
/// The CSI volume handle before the rewrite.
pub const ANNOTATION_ORIGINAL_HANDLE: &str = "replicadr.io/original-volume-handle";

/// The reclaim policy a restored PV gets when the backup recorded its original one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReclaimPolicyOnRestore {
    /// Keep `Retain`, as backed up: a `Delete` PV at the DR site would let its provisioner delete
    /// the replicated data when the claim goes away.
    #[default]
    Retain,
    /// Put back the policy recorded in `replicadr.io/original-reclaim-policy`.
    Original,
}

impl ReclaimPolicyOnRestore {
    fn from_config(config: &PluginConfig) -> Result<Self, ConfigError> {
        let Some(value) = config.data.get(CONFIG_RESTORE_RECLAIM_POLICY) else {
            return Ok(Self::default());
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "retain" => Ok(Self::Retain),
            "original" => Ok(Self::Original),
            _ => Err(config.invalid(format!(
                "key {CONFIG_RESTORE_RECLAIM_POLICY:?}: {value:?} is not accepted; expected \"retain\" (default: restored PVs keep Retain) or \"original\" (put back the policy recorded at backup in {ANNOTATION_ORIGINAL_RECLAIM_POLICY})"
            ))),
        }
    }
}

/// Builds [`PvSiteRemap`] from the plugin ConfigMap.
#[derive(Debug, Default, Clone, Copy)]
pub struct PvSiteRemapFactory;

impl ActionFactory for PvSiteRemapFactory {
    type Action = PvSiteRemap;

    fn applies_to(&self) -> ResourceSelector {
        ResourceSelector::resources(&["persistentvolumes"])
    }

    fn build(&self, context: BuildContext<'_>) -> Result<PvSiteRemap, ConfigError> {
        PvSiteRemap::from_config(context.config)
    }
}

impl PvSiteRemap {
    /// Reads the site map, the local site and the reclaim policy choice from the plugin ConfigMap.
    pub fn from_config(config: Option<&PluginConfig>) -> Result<Self, ConfigError> {
        let config = config.ok_or(ConfigError::Missing {
            required_keys: "localSite and siteMap",
        })?;
        let map = config.site_map()?;
        let local = config.data.get(CONFIG_LOCAL_SITE).ok_or_else(|| {
            config.invalid(format!(
                "key {CONFIG_LOCAL_SITE:?} is missing; it must name this site, one of: {}",
                site_names(&map)
            ))
        })?;
        let local = map
            .site(local.trim())
            .map_err(|e| config.invalid(format!("key {CONFIG_LOCAL_SITE:?}: {e}")))?
            .clone();
        let reclaim_policy = ReclaimPolicyOnRestore::from_config(config)?;
        Ok(PvSiteRemap {
            map,
            local,
            reclaim_policy,
        })
    }
}

fn site_names(map: &SiteMap) -> String {
    map.sites()
        .iter()
        .map(SiteName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configured action: a site map, the site this restore runs at, and what to do with a
/// reclaim policy recorded at backup.
#[derive(Debug, Clone)]
pub struct PvSiteRemap {
    map: SiteMap,
    local: SiteName,
    reclaim_policy: ReclaimPolicyOnRestore,
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

impl PvSiteRemap {
    /// An action rewriting onto `local`'s exports, keeping `Retain` on restored PVs.
    pub fn new(map: SiteMap, local: SiteName) -> Self {
        Self {
            map,
            local,
            reclaim_policy: ReclaimPolicyOnRestore::default(),
        }
    }

    /// The site this restore runs at (`localSite`).
    pub fn local_site(&self) -> &SiteName {
        &self.local
    }

    /// Rewrites one PersistentVolume in place.
    pub fn remap(&self, pv: &mut Value) -> Result<Outcome, ItemError> {
        let what = describe(pv);
        let spec = persistent_volume_spec(pv, NAME)?;
        let Some(location) = NfsLocation::read(spec) else {
            return Ok(Outcome::NotNfs);
        };
        let (parsed_server, parsed_path) = location
            .parse()
            .map_err(|e| ItemError(format!("{what}: {e}")))?;
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
                    UnmappedPolicy::Fail => Err(ItemError(format!(
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
            (ANNOTATION_RULE, rewrite.export.to_owned()),
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

impl RestoreItemAction for PvSiteRemap {
    fn execute(&self, input: RestoreInput) -> Result<RestoreOutput, ItemError> {
        let mut item = input.item;
        let what = describe(&item);
        let outcome = self.remap(&mut item)?;
        match self.apply_reclaim_policy(&mut item) {
            ReclaimPolicyOutcome::Restored(policy) => {
                tracing::info!(pv = %what, policy = %policy, "restored original reclaim policy");
            }
            ReclaimPolicyOutcome::Unknown(value) => {
                tracing::warn!(pv = %what, recorded = %value, "recorded reclaim policy is not Delete, Recycle or Retain; kept the backed-up policy");
            }
            ReclaimPolicyOutcome::Kept => {}
        }
        match outcome {
            Outcome::Remapped { export, from, to } => {
                tracing::info!(pv = %what, export = %export, from = %from, to = %to, site = %self.local, "remapped nfs export to local site");
            }
            Outcome::AlreadyLocal => {
                tracing::debug!(pv = %what, site = %self.local, "nfs export already on local site");
            }
            Outcome::NotNfs => tracing::debug!(pv = %what, "not an nfs volume; unchanged"),
            Outcome::KeptUnmapped { reason } => {
                tracing::warn!(pv = %what, reason = %reason, "nfs export not in site map; restored unchanged (unmapped: keep)");
            }
        }
        Ok(RestoreOutput::item(item))
    }
}

/// What [`PvSiteRemap::apply_reclaim_policy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReclaimPolicyOutcome {
    /// The recorded original policy was written back.
    Restored(String),
    /// Nothing recorded, or the configuration keeps the backed-up policy.
    Kept,
    /// A recorded value that is not a reclaim policy; the backed-up policy was kept.
    Unknown(String),
}

impl PvSiteRemap {
    /// With `restoreReclaimPolicy: original`, puts back the reclaim policy `pv-retain` recorded at
    /// backup and drops the record; otherwise leaves the PV's policy (and the record, for the
    /// operator to see) as backed up.
    pub fn apply_reclaim_policy(&self, pv: &mut Value) -> ReclaimPolicyOutcome {
        if self.reclaim_policy == ReclaimPolicyOnRestore::Retain {
            return ReclaimPolicyOutcome::Kept;
        }
        let Some(object) = pv.as_object_mut() else {
            return ReclaimPolicyOutcome::Kept;
        };
        let recorded = object
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(ANNOTATION_ORIGINAL_RECLAIM_POLICY))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(recorded) = recorded else {
            return ReclaimPolicyOutcome::Kept;
        };
        if !matches!(recorded.as_str(), "Delete" | "Recycle" | "Retain") {
            return ReclaimPolicyOutcome::Unknown(recorded);
        }
        object_at(object, &["spec"]).insert(
            "persistentVolumeReclaimPolicy".into(),
            Value::String(recorded.clone()),
        );
        let annotations = object_at(object, &["metadata", "annotations"]);
        annotations.remove(ANNOTATION_ORIGINAL_RECLAIM_POLICY);
        if annotations.is_empty() {
            object_at(object, &["metadata"]).remove("annotations");
        }
        ReclaimPolicyOutcome::Restored(recorded)
    }
}

#[cfg(test)]
mod tests;
