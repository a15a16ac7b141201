//! `replicadr.io/pv-retain`: at backup time, writes `persistentVolumeReclaimPolicy: Retain` into
//! the *backed-up copy* of each NFS PersistentVolume the site map covers, and records the original
//! policy in an annotation. Velero re-provisions an empty volume for a PV without a snapshot whose
//! policy is `Delete`, before any restore plugin can intervene; a `Retain` PV is restored as it is,
//! so `replicadr.io/pv-site-remap` can point it at the replica. The live PV is never touched: the
//! action only returns a changed copy, and makes no API call.

use replicadr_core::nfs::{NfsLocation, persistent_volume_spec};
use replicadr_core::sitemap::SiteMap;
use replicadr_core::wire::{RECLAIM_DELETE, RECLAIM_RETAIN as RETAIN};
use serde_json::Value;

use super::{
    ActionFactory, BackupInput, BackupItemAction, BackupOutput, BuildContext, ConfigError,
    ItemError, PluginConfig, ResourceSelector, describe, object_at,
};

pub use replicadr_core::wire::{
    ANNOTATION_ORIGINAL_RECLAIM_POLICY, CONFIG_RETAIN_UNMAPPED, PLUGIN_PV_RETAIN as NAME,
};

/// Builds [`PvRetain`] from the plugin ConfigMap.
#[derive(Debug, Default, Clone, Copy)]
pub struct PvRetainFactory;

impl ActionFactory for PvRetainFactory {
    type Action = PvRetain;

    fn applies_to(&self) -> ResourceSelector {
        ResourceSelector::resources(&["persistentvolumes"])
    }

    fn build(&self, context: BuildContext<'_>) -> Result<PvRetain, ConfigError> {
        PvRetain::from_config(context.config)
    }
}

/// The configured action: the site map deciding which NFS PVs are replicated.
#[derive(Debug, Clone)]
pub struct PvRetain {
    map: SiteMap,
    retain_unmapped: bool,
}

/// What happened to one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backed-up copy now says `Retain`; `export` is the covering export, `None` for an
    /// unmapped PV kept because of `retainUnmapped`.
    Retained {
        export: Option<String>,
        original: String,
    },
    /// Already `Retain` (explicitly or by default): nothing to change.
    AlreadyRetain,
    /// Not an NFS volume.
    NotNfs,
    /// NFS, outside the site map (or unreadable), passed through because `retainUnmapped` is off.
    Unmapped { reason: String, policy: String },
}

impl PvRetain {
    /// Reads the site map and `retainUnmapped` from the plugin ConfigMap.
    pub fn from_config(config: Option<&PluginConfig>) -> Result<Self, ConfigError> {
        let config = config.ok_or(ConfigError::Missing {
            required_keys: "siteMap",
        })?;
        Ok(Self {
            map: config.site_map()?,
            retain_unmapped: config.flag(CONFIG_RETAIN_UNMAPPED, false)?,
        })
    }

    /// Sets `Retain` on one PV object (the backed-up copy) when the configuration says so.
    pub fn retain(&self, pv: &mut Value) -> Result<Outcome, ItemError> {
        let spec = persistent_volume_spec(pv, NAME)?;
        let Some(location) = NfsLocation::read(spec) else {
            return Ok(Outcome::NotNfs);
        };
        // The API server defaults an absent policy to Retain.
        let policy = spec
            .get("persistentVolumeReclaimPolicy")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .unwrap_or(RETAIN)
            .to_owned();
        let export = match location.parse() {
            Ok((server, path)) => match self.map.export_of(&server, &path) {
                Some((export, _)) => Ok(export.to_owned()),
                None => Err(format!("nfs export {server}:{path} is not in the site map")),
            },
            Err(unreadable) => Err(unreadable),
        };
        let export = match export {
            Ok(export) => Some(export),
            Err(_) if self.retain_unmapped => None,
            Err(reason) => return Ok(Outcome::Unmapped { reason, policy }),
        };
        if policy == RETAIN {
            return Ok(Outcome::AlreadyRetain);
        }
        let object = pv
            .as_object_mut()
            .expect("checked by persistent_volume_spec");
        object_at(object, &["spec"]).insert(
            "persistentVolumeReclaimPolicy".into(),
            Value::String(RETAIN.into()),
        );
        object_at(object, &["metadata", "annotations"]).insert(
            ANNOTATION_ORIGINAL_RECLAIM_POLICY.into(),
            Value::String(policy.clone()),
        );
        Ok(Outcome::Retained {
            export,
            original: policy,
        })
    }
}

impl BackupItemAction for PvRetain {
    fn execute(&self, input: BackupInput) -> Result<BackupOutput, ItemError> {
        let mut item = input.item;
        let what = describe(&item);
        match self.retain(&mut item)? {
            Outcome::Retained { export, original } => {
                let export = export.as_deref().unwrap_or("<unmapped>");
                tracing::info!(pv = %what, export, original = %original, "backed-up copy set to Retain");
            }
            Outcome::AlreadyRetain => {
                tracing::debug!(pv = %what, "reclaim policy already Retain");
            }
            Outcome::NotNfs => tracing::debug!(pv = %what, "not an nfs volume; unchanged"),
            Outcome::Unmapped { reason, policy } if policy == RECLAIM_DELETE => {
                tracing::warn!(pv = %what, reason = %reason, "nfs pv outside the site map keeps reclaim policy Delete; Velero will re-provision it empty on restore (set retainUnmapped: \"true\" to keep it)");
            }
            Outcome::Unmapped { reason, .. } => {
                tracing::debug!(pv = %what, reason = %reason, "nfs pv outside the site map; unchanged");
            }
        }
        Ok(BackupOutput::item(item))
    }
}

#[cfg(test)]
mod tests;
