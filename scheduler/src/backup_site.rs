//! Which site made a Backup. Both sites' Velero read the same bucket, so each cluster holds its own
//! Backups and, through Velero's backup sync, copies of the other site's. The scheduler labels every
//! Backup it creates with [`LABEL_SITE`] = its `localSite`, and acts only on its own: it never
//! retries, verifies as its own, or publishes another site's Backup, and the verifier compares live
//! PVCs with a backup's scope only at the site that made it.
//!
//! A Backup without the label (made by a scheduler from before the label existed) counts as this
//! site's when it was created in this cluster, which shows in its timestamps: a Backup created
//! here exists before Velero finishes it, while Velero's sync creates its copy of another site's
//! Backup only after that Backup completed, with the original's `completionTimestamp`. So an
//! unlabelled Backup whose `creationTimestamp` is later than its `completionTimestamp` was synced
//! from elsewhere; any other unlabelled Backup was made here.
//!
//! This site's name is the `localSite` of the ConfigMap the policy's site map lives in (the plugin
//! ConfigMap `replicadr-plugins` by default), read and checked against that site map by the restore
//! plugin's own reader, so the scheduler and the restore plugin can never disagree on it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use replicadr_core::plugin_config::{PluginConfig, SiteConfig};
use replicadr_core::sitemap::SiteName;
use replicadr_core::wire::CONFIG_SITE_MAP;

use crate::velero::BackupView;
pub use crate::velero::LABEL_SITE;
use crate::verify::SiteMapSource;

/// Where a Backup was made, seen from one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// At this site: its label names this site, or it has no label and was created here.
    Here,
    /// At another site: the one its label names, or `None` for an unlabelled copy synced from
    /// object storage.
    Elsewhere(Option<String>),
}

impl Origin {
    /// Whether the Backup was made at this site.
    pub fn is_here(&self) -> bool {
        *self == Origin::Here
    }
}

/// Where `backup` was made, seen from the site `local_site`. A copy Velero synced from object
/// storage was made elsewhere even when its label names this site: a Velero Schedule applied at
/// both sites with one site's label would otherwise make the other site's state pass for this
/// site's own.
pub fn origin(backup: &BackupView, local_site: &str) -> Origin {
    let synced = synced_from_storage(backup);
    match &backup.site {
        Some(site) if site == local_site && !synced => Origin::Here,
        Some(site) if site == local_site => Origin::Elsewhere(None),
        Some(site) => Origin::Elsewhere(Some(site.clone())),
        None if synced => Origin::Elsewhere(None),
        None => Origin::Here,
    }
}

/// The site that made `backup`, when it can be named: its label, or this site for an unlabelled
/// Backup created here.
pub fn site_name(backup: &BackupView, local_site: &str) -> Option<String> {
    match origin(backup, local_site) {
        Origin::Here => Some(local_site.to_owned()),
        Origin::Elsewhere(site) => site,
    }
}

/// A Backup object created after it completed can only be Velero's copy of a finished backup;
/// any other was created in this cluster.
pub fn synced_from_storage(backup: &BackupView) -> bool {
    matches!((backup.created, backup.completed), (Some(created), Some(completed)) if created > completed)
}

/// Why this site's name cannot be known.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot read ConfigMap {origin}")]
    Unreadable {
        origin: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "ConfigMap {origin} does not exist: its localSite names this site, which every Backup is labelled with ({LABEL_SITE})"
    )]
    Missing { origin: String },
    #[error("{0}")]
    Invalid(String),
}

/// This site's name: `localSite` of the ConfigMap holding the site map of `source`.
pub async fn local_site(
    client: &Client,
    namespace: &str,
    source: &SiteMapSource,
) -> Result<SiteName, SiteError> {
    Ok(site_config(client, namespace, source).await?.local_site)
}

/// The site map of `source` and this site's name in it (`localSite` of the same ConfigMap).
pub async fn site_config(
    client: &Client,
    namespace: &str,
    source: &SiteMapSource,
) -> Result<SiteConfig, SiteError> {
    let origin = format!("{namespace}/{}", source.configmap);
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&source.configmap)
        .await
        .map_err(|source| SiteError::Unreadable {
            origin: origin.clone(),
            source,
        })?
        .ok_or_else(|| SiteError::Missing {
            origin: origin.clone(),
        })?;
    site_config_from(origin, configmap.data.unwrap_or_default(), &source.key)
}

/// This site's name from a ConfigMap's data, whose site map is under `site_map_key`: the restore
/// plugins' own reader checks that `localSite` is one of the site map's sites.
pub fn local_site_from(
    origin: String,
    data: BTreeMap<String, String>,
    site_map_key: &str,
) -> Result<SiteName, SiteError> {
    Ok(site_config_from(origin, data, site_map_key)?.local_site)
}

/// The site map and `localSite` from a ConfigMap's data, as [`local_site_from`] reads them.
pub fn site_config_from(
    origin: String,
    mut data: BTreeMap<String, String>,
    site_map_key: &str,
) -> Result<SiteConfig, SiteError> {
    if site_map_key != CONFIG_SITE_MAP
        && let Some(map) = data.get(site_map_key).cloned()
    {
        data.insert(CONFIG_SITE_MAP.to_owned(), map);
    }
    let config = PluginConfig { origin, data };
    config
        .site_config()
        .map_err(|error| SiteError::Invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicadr_lab::fixture::SITE_MAP;

    fn backup(site: Option<&str>, created: &str, completed: Option<&str>) -> BackupView {
        let mut labels = serde_json::Map::new();
        if let Some(site) = site {
            labels.insert(LABEL_SITE.into(), site.into());
        }
        let mut object = serde_json::json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "b", "namespace": "velero", "labels": labels, "creationTimestamp": created},
            "status": {"phase": "Completed"},
        });
        if let Some(completed) = completed {
            object["status"]["completionTimestamp"] = completed.into();
        }
        BackupView::from_object(&serde_json::from_value(object).expect("backup"))
    }

    #[test]
    fn the_label_names_the_site() {
        let here = backup(Some("primary"), "2026-01-01T02:00:00Z", None);
        assert_eq!(origin(&here, "primary"), Origin::Here);
        assert_eq!(
            origin(&here, "dr"),
            Origin::Elsewhere(Some("primary".into()))
        );
        assert_eq!(site_name(&here, "dr").as_deref(), Some("primary"));
        // Synced in from object storage, though labelled with this site: another site made it.
        let copied = backup(
            Some("primary"),
            "2026-01-01T02:05:00Z",
            Some("2026-01-01T02:00:09Z"),
        );
        assert_eq!(origin(&copied, "primary"), Origin::Elsewhere(None));
    }

    #[test]
    fn an_unlabelled_backup_is_here_unless_it_was_created_after_it_completed() {
        let made_here = backup(None, "2026-01-01T02:00:00Z", Some("2026-01-01T02:00:09Z"));
        assert_eq!(origin(&made_here, "dr"), Origin::Here);
        assert_eq!(site_name(&made_here, "dr").as_deref(), Some("dr"));
        let running = backup(None, "2026-01-01T02:00:00Z", None);
        assert_eq!(origin(&running, "dr"), Origin::Here);
        let synced = backup(None, "2026-01-01T02:05:00Z", Some("2026-01-01T02:00:09Z"));
        assert_eq!(origin(&synced, "dr"), Origin::Elsewhere(None));
        assert_eq!(site_name(&synced, "dr"), None);
    }

    #[test]
    fn the_local_site_is_read_as_the_restore_plugin_reads_it() {
        let data = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let site = local_site_from(
            "velero/replicadr-plugins".into(),
            data(&[("siteMap", SITE_MAP), ("localSite", " dr ")]),
            "siteMap",
        )
        .expect("valid");
        assert_eq!(site.as_str(), "dr");
        let custom_key = local_site_from(
            "velero/maps".into(),
            data(&[("sites.yaml", SITE_MAP), ("localSite", "primary")]),
            "sites.yaml",
        )
        .expect("valid");
        assert_eq!(custom_key.as_str(), "primary");
        let missing = local_site_from(
            "velero/replicadr-plugins".into(),
            data(&[("siteMap", SITE_MAP)]),
            "siteMap",
        )
        .expect_err("no localSite")
        .to_string();
        assert!(
            missing.contains("velero/replicadr-plugins") && missing.contains("\"localSite\""),
            "{missing}"
        );
        let unknown = local_site_from(
            "velero/replicadr-plugins".into(),
            data(&[("siteMap", SITE_MAP), ("localSite", "mars")]),
            "siteMap",
        )
        .expect_err("not a site")
        .to_string();
        assert!(unknown.contains("mars"), "{unknown}");
    }
}
