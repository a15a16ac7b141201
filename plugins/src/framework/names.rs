//! Plugin kinds as Velero spells them, and Velero's rules for plugin names.

/// A plugin kind this binary can serve. The strings are the ones Velero's registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PluginKind {
    BackupItemAction,
    BackupItemActionV2,
    RestoreItemAction,
}

impl PluginKind {
    /// The kind string sent in `ListPlugins` and used as the plugin-config label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::BackupItemAction => "BackupItemAction",
            PluginKind::BackupItemActionV2 => "BackupItemActionV2",
            PluginKind::RestoreItemAction => "RestoreItemAction",
        }
    }
}

/// Checks a plugin name the way Velero's registry does at startup (`prefix/name`, the prefix a
/// DNS-1123 subdomain). A name Velero would refuse stops Velero from starting, so we refuse first.
pub fn validate_name(name: &str) -> Result<(), String> {
    let accepted = "expected <DNS subdomain>/<name>, e.g. replicadr.io/pv-site-remap";
    let Some((prefix, rest)) = name.split_once('/') else {
        return Err(format!("plugin name {name:?} has no '/'; {accepted}"));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "plugin name {name:?} must have exactly one '/' followed by a name; {accepted}"
        ));
    }
    let subdomain_ok = !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !subdomain_ok {
        return Err(format!(
            "plugin name {name:?}: {prefix:?} is not a DNS-1123 subdomain; {accepted}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_project_names() {
        for name in [
            "replicadr.io/pv-site-remap",
            "replicadr.io/snapshot-to-pvc",
            "replicadr.io/pv-retain",
        ] {
            assert_eq!(validate_name(name), Ok(()));
        }
    }

    #[test]
    fn rejects_what_velero_rejects() {
        for name in [
            "pv-site-remap",
            "replicadr.io/",
            "/x",
            "a/b/c",
            "Replicadr.io/x",
            "-a.io/x",
            "a..io/x",
        ] {
            assert!(validate_name(name).is_err(), "{name} should be rejected");
        }
    }
}
