//! `replicadr.io/pv-site-remap`: at restore time, points each NFS PersistentVolume at the local
//! site's copy of its export, using the site map. Handles in-tree `spec.nfs` and the NFS CSI
//! driver (`nfs.csi.k8s.io`), records what it changed in annotations, and leaves everything else
//! in the object exactly as it came. It also decides the restored PV's reclaim policy when
//! `replicadr.io/pv-retain` recorded the original one at backup time.

use replicadr_core::remap::SiteRemap;
use replicadr_core::sitemap::{SiteMap, SiteName};
use replicadr_core::wire::{RECLAIM_DELETE, RECLAIM_RECYCLE, RECLAIM_RETAIN};
use serde_json::Value;

use super::{
    ActionFactory, BuildContext, ConfigError, ItemError, PluginConfig, ResourceSelector,
    RestoreInput, RestoreItemAction, RestoreOutput, describe, object_at,
};

pub use replicadr_core::remap::{Outcome, rewrite_volume_handle};
pub use replicadr_core::wire::{
    ANNOTATION_ORIGINAL_HANDLE, ANNOTATION_ORIGINAL_PATH, ANNOTATION_ORIGINAL_RECLAIM_POLICY,
    ANNOTATION_ORIGINAL_SERVER, ANNOTATION_ORIGINAL_SITE, ANNOTATION_REMAP_RULE, CONFIG_LOCAL_SITE,
    CONFIG_RESTORE_RECLAIM_POLICY, CONFIG_SITE_MAP, NFS_CSI_DRIVER, PLUGIN_PV_SITE_REMAP as NAME,
};

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
        let site = config.site_config()?;
        let reclaim_policy = ReclaimPolicyOnRestore::from_config(config)?;
        Ok(PvSiteRemap {
            rewrite: SiteRemap::new(site.site_map, site.local_site),
            reclaim_policy,
        })
    }
}

/// The configured action: a site map, the site this restore runs at, and what to do with a
/// reclaim policy recorded at backup.
#[derive(Debug, Clone)]
pub struct PvSiteRemap {
    rewrite: SiteRemap,
    reclaim_policy: ReclaimPolicyOnRestore,
}

impl PvSiteRemap {
    /// An action rewriting onto `local`'s exports, keeping `Retain` on restored PVs.
    pub fn new(map: SiteMap, local: SiteName) -> Self {
        Self {
            rewrite: SiteRemap::new(map, local),
            reclaim_policy: ReclaimPolicyOnRestore::default(),
        }
    }

    /// Rewrites one PersistentVolume in place: the site map's rewrite, shared with verification
    /// and `replicadr plan`.
    pub fn remap(&self, pv: &mut Value) -> Result<Outcome, ItemError> {
        Ok(self.rewrite.remap(pv)?)
    }
}

#[async_trait::async_trait]
impl RestoreItemAction for PvSiteRemap {
    async fn execute(&self, input: RestoreInput) -> Result<RestoreOutput, ItemError> {
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
                tracing::info!(pv = %what, export = %export, from = %from, to = %to, site = %self.rewrite.site(), "remapped nfs export to local site");
            }
            Outcome::AlreadyLocal => {
                tracing::debug!(pv = %what, site = %self.rewrite.site(), "nfs export already on local site");
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
        if !matches!(
            recorded.as_str(),
            RECLAIM_DELETE | RECLAIM_RECYCLE | RECLAIM_RETAIN
        ) {
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
