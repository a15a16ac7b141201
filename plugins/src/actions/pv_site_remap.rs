//! `replicadr.io/pv-site-remap`: at restore time, points each NFS PersistentVolume at the local
//! site's copy of its export, using the site map. Handles in-tree `spec.nfs` and the NFS CSI
//! driver (`nfs.csi.k8s.io`), records what it changed in annotations, and leaves everything else
//! in the object exactly as it came.

use serde_json::{Map, Value};

use super::{
    ActionFactory, BuildContext, ConfigError, ItemError, PluginConfig, ResourceSelector,
    RestoreInput, RestoreItemAction, RestoreOutput, describe,
};
use crate::sitemap::{ExportPath, NfsServer, Placement, SiteMap, SiteName, UnmappedPolicy};

/// The plugin name Velero registers and sends in every request.
pub const NAME: &str = "replicadr.io/pv-site-remap";
/// The NFS CSI driver whose volumes this action rewrites.
pub const NFS_CSI_DRIVER: &str = "nfs.csi.k8s.io";

/// ConfigMap key naming the site this Velero runs at.
pub const CONFIG_LOCAL_SITE: &str = "localSite";
/// ConfigMap key holding the site map YAML.
pub const CONFIG_SITE_MAP: &str = "siteMap";

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
    /// Reads the site map and the local site from the plugin ConfigMap.
    pub fn from_config(config: Option<&PluginConfig>) -> Result<Self, ConfigError> {
        let config = config.ok_or(ConfigError::Missing {
            required_keys: "localSite and siteMap",
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            origin: config.origin.clone(),
            message,
        };
        let text = config.data.get(CONFIG_SITE_MAP).ok_or_else(|| {
            invalid(format!(
                "key {CONFIG_SITE_MAP:?} is missing; it must hold the site map YAML"
            ))
        })?;
        let map = SiteMap::from_yaml(text)
            .map_err(|e| invalid(format!("key {CONFIG_SITE_MAP:?}: {e}")))?;
        let local = config.data.get(CONFIG_LOCAL_SITE).ok_or_else(|| {
            invalid(format!(
                "key {CONFIG_LOCAL_SITE:?} is missing; it must name this site, one of: {}",
                site_names(&map)
            ))
        })?;
        let local = map
            .site(local.trim())
            .map_err(|e| invalid(format!("key {CONFIG_LOCAL_SITE:?}: {e}")))?
            .clone();
        Ok(PvSiteRemap { map, local })
    }
}

fn site_names(map: &SiteMap) -> String {
    map.sites()
        .iter()
        .map(SiteName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configured action: a site map and the site this restore runs at.
#[derive(Debug, Clone)]
pub struct PvSiteRemap {
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

/// Where a PV keeps its NFS location.
enum NfsSource {
    InTree,
    Csi,
}

impl NfsSource {
    /// The object under `spec` holding server and path.
    fn location(&self) -> &'static [&'static str] {
        match self {
            NfsSource::InTree => &["nfs"],
            NfsSource::Csi => &["csi", "volumeAttributes"],
        }
    }

    /// The key of the exported path in that object.
    fn path_key(&self) -> &'static str {
        match self {
            NfsSource::InTree => "path",
            NfsSource::Csi => "share",
        }
    }

    /// The full field name, for messages.
    fn field(&self, key: &str) -> String {
        format!("spec.{}.{key}", self.location().join("."))
    }
}

impl PvSiteRemap {
    /// An action rewriting onto `local`'s exports.
    pub fn new(map: SiteMap, local: SiteName) -> Self {
        Self { map, local }
    }

    /// Rewrites one PersistentVolume in place.
    pub fn remap(&self, pv: &mut Value) -> Result<Outcome, ItemError> {
        let what = describe(pv);
        let kind = pv.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != "PersistentVolume" {
            return Err(ItemError(format!(
                "{what}: {NAME} only handles PersistentVolumes, got kind {kind:?}"
            )));
        }
        let spec = pv.get("spec").and_then(Value::as_object).ok_or_else(|| {
            ItemError(format!(
                "{what} has no spec object; cannot tell which volume it is"
            ))
        })?;
        let source = if spec.get("nfs").is_some() {
            NfsSource::InTree
        } else if spec
            .get("csi")
            .and_then(|csi| csi.get("driver"))
            .and_then(Value::as_str)
            == Some(NFS_CSI_DRIVER)
        {
            NfsSource::Csi
        } else {
            return Ok(Outcome::NotNfs);
        };
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
        let (server, path) = (read("server"), read(source.path_key()));
        let (server_field, path_field) = (source.field("server"), source.field(source.path_key()));
        let parsed_server = NfsServer::parse(&server)
            .map_err(|e| ItemError(format!("{what}: {server_field} {server:?} {e}")))?;
        let parsed_path = ExportPath::parse(&path)
            .map_err(|e| ItemError(format!("{what}: {path_field} {path:?} {e}")))?;

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
        let location = object_at(spec, source.location());
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

/// The object at `path` below `root`, created (or replaced, if not an object) as needed.
fn object_at<'v>(root: &'v mut Map<String, Value>, path: &[&str]) -> &'v mut Map<String, Value> {
    let mut current = root;
    for key in path {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        current = entry.as_object_mut().expect("made an object above");
    }
    current
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
        match self.remap(&mut item)? {
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

#[cfg(test)]
mod tests;
