//! The plugin ConfigMap's data, read once into typed values: the site map, the local site and the
//! plugins' switches. The plugins read their configuration through here, and so does the operator
//! CLI when it asks a site which site it is, so both accept and reject the same ConfigMaps with
//! the same words.

use std::collections::BTreeMap;

use crate::sitemap::{SiteMap, SiteName};
use crate::wire::{CONFIG_LOCAL_SITE, CONFIG_SITE_MAP};

/// The plugin's ConfigMap data, found by Velero's plugin-config label convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// `namespace/name` of the ConfigMap, for messages.
    pub origin: String,
    pub data: BTreeMap<String, String>,
}

/// Why the plugin configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The action needs a ConfigMap and none was found.
    #[error("the plugin needs a ConfigMap with keys {required_keys}, and none was found")]
    Missing { required_keys: &'static str },
    /// The ConfigMap exists but its content is wrong.
    #[error("ConfigMap {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// The restore plugin's view of its site: the site map and which of its sites this is.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub site_map: SiteMap,
    pub local_site: SiteName,
}

impl PluginConfig {
    /// A [`ConfigError::Invalid`] naming this ConfigMap.
    pub fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            message: message.into(),
        }
    }

    /// Reads an optional `"true"`/`"false"` key (any case, surrounding blanks ignored); `default`
    /// when the key is absent.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(value) = self.data.get(key) else {
            return Ok(default);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.invalid(format!(
                "key {key:?}: {value:?} is not a boolean; expected \"true\" or \"false\" (default {default})"
            ))),
        }
    }

    /// Reads and validates the site map under [`CONFIG_SITE_MAP`].
    pub fn site_map(&self) -> Result<SiteMap, ConfigError> {
        let text = self.data.get(CONFIG_SITE_MAP).ok_or_else(|| {
            self.invalid(format!(
                "key {CONFIG_SITE_MAP:?} is missing; it must hold the site map YAML"
            ))
        })?;
        SiteMap::from_yaml(text).map_err(|e| self.invalid(format!("key {CONFIG_SITE_MAP:?}: {e}")))
    }

    /// Reads the site map and [`CONFIG_LOCAL_SITE`], which must name one of its sites.
    pub fn site_config(&self) -> Result<SiteConfig, ConfigError> {
        let site_map = self.site_map()?;
        let local = self.data.get(CONFIG_LOCAL_SITE).ok_or_else(|| {
            self.invalid(format!(
                "key {CONFIG_LOCAL_SITE:?} is missing; it must name this site, one of: {}",
                site_names(&site_map)
            ))
        })?;
        let local_site = site_map
            .site(local.trim())
            .map_err(|e| self.invalid(format!("key {CONFIG_LOCAL_SITE:?}: {e}")))?
            .clone();
        Ok(SiteConfig {
            site_map,
            local_site,
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "sites: [primary, dr]
exports:
  - name: vm-disks
    primary: {server: nfs-a, path: /exports/vms}
    dr: {server: nfs-b, path: /replica/vms}
";

    fn config(pairs: &[(&str, &str)]) -> PluginConfig {
        PluginConfig {
            origin: "velero/replicadr-plugins".to_owned(),
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_local_site_is_one_of_the_site_map() {
        let site = config(&[(CONFIG_SITE_MAP, MAP), (CONFIG_LOCAL_SITE, " dr ")])
            .site_config()
            .expect("valid");
        assert_eq!(site.local_site.as_str(), "dr");
        assert_eq!(site.site_map.sites().len(), 2);
    }

    #[test]
    fn a_missing_or_unknown_local_site_names_the_key_and_the_sites() {
        let missing = config(&[(CONFIG_SITE_MAP, MAP)])
            .site_config()
            .expect_err("no localSite")
            .to_string();
        assert_eq!(
            missing,
            "ConfigMap velero/replicadr-plugins: key \"localSite\" is missing; it must name this site, one of: primary, dr"
        );
        let unknown = config(&[(CONFIG_SITE_MAP, MAP), (CONFIG_LOCAL_SITE, "east")])
            .site_config()
            .expect_err("unknown")
            .to_string();
        assert!(
            unknown.starts_with("ConfigMap velero/replicadr-plugins: key \"localSite\": site \"east\" is not declared"),
            "{unknown}"
        );
    }

    #[test]
    fn flags_accept_true_and_false_only() {
        let config = config(&[("a", " TRUE "), ("b", "yes")]);
        assert_eq!(config.flag("a", false), Ok(true));
        assert_eq!(config.flag("absent", true), Ok(true));
        let error = config
            .flag("b", false)
            .expect_err("not a boolean")
            .to_string();
        assert!(
            error.contains("key \"b\": \"yes\" is not a boolean"),
            "{error}"
        );
    }
}
