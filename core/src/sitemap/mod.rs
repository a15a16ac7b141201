//! The site map: one YAML document, deployed unchanged at every site, that names the sites and the
//! NFS exports the storage array replicates between them. It decides where a PV's export lives at
//! another site. Used by the restore plugin, the backup verifier and the operator CLI alike, so a
//! successful dry run means the same rewrite the restore will do.
//!
//! ```yaml
//! sites: [primary, dr]
//! exports:
//!   - name: vm-disks
//!     primary: {server: nfs-a.example.com, path: /exports/vms}
//!     dr:      {server: 10.20.0.5,         path: /replica/vms}
//! unmapped: fail          # or: keep
//! ```

mod location;
mod parse;

use std::fmt;

pub use location::{ExportPath, NfsServer, PathError, ServerError};
pub use parse::{Problem, SiteMapError};

/// A validated site map.
#[derive(Debug, Clone)]
pub struct SiteMap {
    sites: Vec<SiteName>,
    exports: Vec<Export>,
    unmapped: UnmappedPolicy,
}

/// A site's name as declared in `sites`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteName(String);

impl SiteName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One replicated export: where it lives at each site.
#[derive(Debug, Clone)]
pub struct Export {
    name: String,
    /// One endpoint per site, in the order of `SiteMap::sites`.
    endpoints: Vec<Endpoint>,
}

impl Export {
    /// The export's name, used in annotations and messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Where an export lives at one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub server: NfsServer,
    pub path: ExportPath,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.server, self.path)
    }
}

/// What to do with an NFS PV that no export covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnmappedPolicy {
    /// Refuse to restore the PV: it would point at a server the site cannot reach.
    #[default]
    Fail,
    /// Restore it unchanged and warn.
    Keep,
}

/// Where a PV's NFS location sits in the site map, seen from the local site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement<'m> {
    /// Already on the local site's export: nothing to rewrite.
    Local { export: &'m str },
    /// On another site's export: the rewrite to apply.
    Remote(Rewrite<'m>),
}

/// A rewrite of a PV's NFS location onto the local site's copy of the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite<'m> {
    /// The export the PV's location was found in.
    pub export: &'m str,
    /// The site the PV's location belongs to.
    pub from_site: &'m SiteName,
    /// The server to write, as the site map spells it.
    pub server: &'m str,
    /// The path to write: the local export path plus the PV's path below the matched export.
    pub path: ExportPath,
}

/// An NFS location that no export of the site map covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nfs export {server}:{path} is not in the site map ({hint})")]
pub struct Unmapped {
    pub server: String,
    pub path: String,
    hint: String,
}

impl SiteMap {
    /// Parses and validates a site map document; every problem found is reported at once.
    pub fn from_yaml(text: &str) -> Result<Self, SiteMapError> {
        parse::parse(text)
    }

    /// The declared sites, in declaration order.
    pub fn sites(&self) -> &[SiteName] {
        &self.sites
    }

    /// The declared exports.
    pub fn exports(&self) -> &[Export] {
        &self.exports
    }

    /// The policy for NFS PVs outside the map.
    pub fn unmapped_policy(&self) -> UnmappedPolicy {
        self.unmapped
    }

    /// Looks a site up by name; the error lists the declared sites.
    pub fn site(&self, name: &str) -> Result<&SiteName, UnknownSite> {
        self.sites
            .iter()
            .find(|s| s.0 == name)
            .ok_or_else(|| UnknownSite {
                name: name.to_owned(),
                declared: self.site_list(),
            })
    }

    fn site_list(&self) -> String {
        self.sites
            .iter()
            .map(SiteName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Finds the export covering `server:path` and, unless it is already the local site's copy,
    /// the rewrite onto the local copy. The longest matching export path wins.
    pub fn place(
        &self,
        local: &SiteName,
        server: &NfsServer,
        path: &ExportPath,
    ) -> Result<Placement<'_>, Unmapped> {
        let local_index = self.site_index(local);
        let Some((export, site, rest)) = self.best_match(server, path) else {
            return Err(self.unmapped(server, path));
        };
        if site == local_index {
            return Ok(Placement::Local {
                export: &export.name,
            });
        }
        let target = &export.endpoints[local_index];
        Ok(Placement::Remote(Rewrite {
            export: &export.name,
            from_site: &self.sites[site],
            server: target.server.as_written(),
            path: target.path.join(rest),
        }))
    }

    /// The export covering `server:path` and the site whose copy it is, whichever site is local.
    /// Backup-side actions use it: a PV is covered when some site's export contains it.
    pub fn export_of(&self, server: &NfsServer, path: &ExportPath) -> Option<(&str, &SiteName)> {
        self.best_match(server, path)
            .map(|(export, site, _)| (export.name(), &self.sites[site]))
    }

    /// The endpoint containing `server:path` with the longest export path: its export, its site
    /// index, and the components of `path` below the export.
    fn best_match<'p>(
        &self,
        server: &NfsServer,
        path: &'p ExportPath,
    ) -> Option<(&Export, usize, &'p [String])> {
        self.endpoints()
            .filter(|(_, _, endpoint)| endpoint.server == *server)
            .filter_map(|(export, site, endpoint)| {
                path.strip_base(&endpoint.path)
                    .map(|rest| (export, site, endpoint, rest))
            })
            .max_by_key(|(_, _, endpoint, _)| endpoint.path.depth())
            .map(|(export, site, _, rest)| (export, site, rest))
    }

    fn site_index(&self, site: &SiteName) -> usize {
        self.sites
            .iter()
            .position(|s| s == site)
            .expect("SiteName values come from this site map")
    }

    /// Every (export, site index, endpoint) triple.
    fn endpoints(&self) -> impl Iterator<Item = (&Export, usize, &Endpoint)> {
        self.exports.iter().flat_map(|export| {
            export
                .endpoints
                .iter()
                .enumerate()
                .map(move |(site, endpoint)| (export, site, endpoint))
        })
    }

    /// Builds the "not mapped" error with the nearest export as a hint for the operator.
    fn unmapped(&self, server: &NfsServer, path: &ExportPath) -> Unmapped {
        let closest = self.endpoints().max_by_key(|(_, _, endpoint)| {
            (
                endpoint.server == *server,
                endpoint.path.common_depth(path),
                std::cmp::Reverse(endpoint.path.depth()),
            )
        });
        let hint = match closest {
            Some((export, site, endpoint)) => format!(
                "closest export: {} at site {} is {endpoint}",
                export.name, self.sites[site]
            ),
            None => "the site map declares no exports".to_owned(),
        };
        Unmapped {
            server: server.to_string(),
            path: path.to_string(),
            hint,
        }
    }
}

/// A site name that the site map does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("site {name:?} is not declared in the site map (declared sites: {declared})")]
pub struct UnknownSite {
    pub name: String,
    pub declared: String,
}

#[cfg(test)]
mod tests;
