//! NFS server and path values with the equality rules the site map matches by: hostnames compare
//! case-insensitively, IP addresses as addresses, paths component by component.

use std::fmt;
use std::net::IpAddr;

/// An NFS server as the site map and PVs name it.
#[derive(Debug, Clone)]
pub struct NfsServer {
    /// The spelling to write into rewritten PVs, exactly as the site map gives it.
    written: String,
    key: ServerKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ServerKey {
    Ip(IpAddr),
    Host(String),
}

/// Why a server string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("is empty; expected a hostname, an IPv4 address or an IPv6 address")]
    Empty,
    #[error("contains {0:?}; expected a hostname, an IPv4 address or an IPv6 address")]
    BadCharacter(char),
}

impl NfsServer {
    /// Parses a server name: a hostname (any case, optional trailing dot), an IPv4 address, or an
    /// IPv6 address with or without brackets.
    pub fn parse(value: &str) -> Result<Self, ServerError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(ServerError::Empty);
        }
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(trimmed);
        let key = if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            ServerKey::Ip(ip)
        } else {
            if let Some(bad) = trimmed
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
            {
                return Err(ServerError::BadCharacter(bad));
            }
            ServerKey::Host(trimmed.trim_end_matches('.').to_ascii_lowercase())
        };
        Ok(Self {
            written: trimmed.to_owned(),
            key,
        })
    }

    /// The server exactly as written in the site map.
    pub fn as_written(&self) -> &str {
        &self.written
    }
}

impl PartialEq for NfsServer {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for NfsServer {}

impl fmt::Display for NfsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// An absolute NFS path, normalised: no empty or `.` components, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportPath {
    components: Vec<String>,
}

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("is empty; expected an absolute path such as /exports/vms")]
    Empty,
    #[error("is relative; expected an absolute path starting with '/'")]
    Relative,
    #[error("contains a '..' component; expected a path without '..'")]
    ParentComponent,
}

impl ExportPath {
    /// Parses an absolute path, folding `//`, `/./` and trailing slashes.
    pub fn parse(value: &str) -> Result<Self, PathError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(PathError::Empty);
        }
        if !value.starts_with('/') {
            return Err(PathError::Relative);
        }
        let mut components = Vec::new();
        for part in value.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(PathError::ParentComponent),
                other => components.push(other.to_owned()),
            }
        }
        Ok(Self { components })
    }

    /// The components of `self` after `base`, when `self` is `base` or lies under it on a
    /// component boundary (`/exports/vms2` is not under `/exports/vms`).
    pub fn strip_base(&self, base: &ExportPath) -> Option<&[String]> {
        self.components.strip_prefix(base.components.as_slice())
    }

    /// Whether one of the two paths equals or contains the other.
    pub fn overlaps(&self, other: &ExportPath) -> bool {
        self.strip_base(other).is_some() || other.strip_base(self).is_some()
    }

    /// `self` with `rest` appended.
    #[must_use]
    pub fn join(&self, rest: &[String]) -> ExportPath {
        let mut components = self.components.clone();
        components.extend_from_slice(rest);
        ExportPath { components }
    }

    /// Number of components; the root has none.
    pub fn depth(&self) -> usize {
        self.components.len()
    }

    /// Number of leading components `self` and `other` share.
    pub fn common_depth(&self, other: &ExportPath) -> usize {
        self.components
            .iter()
            .zip(&other.components)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

impl fmt::Display for ExportPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components.is_empty() {
            return f.write_str("/");
        }
        for component in &self.components {
            write!(f, "/{component}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(v: &str) -> NfsServer {
        NfsServer::parse(v).expect("valid server")
    }

    fn path(v: &str) -> ExportPath {
        ExportPath::parse(v).expect("valid path")
    }

    #[test]
    fn hostnames_compare_case_insensitively_and_ignore_a_trailing_dot() {
        assert_eq!(server("NFS-A.Example.com"), server("nfs-a.example.com."));
        assert_ne!(server("nfs-a.example.com"), server("nfs-b.example.com"));
    }

    #[test]
    fn ip_addresses_compare_as_addresses() {
        assert_eq!(server("fd00:0:0::5"), server("[fd00::5]"));
        assert_eq!(server("FD00::A"), server("fd00::a"));
        assert_ne!(server("10.0.0.5"), server("10.0.0.50"));
        // No DNS: a name never equals an address.
        assert_ne!(server("localhost"), server("127.0.0.1"));
    }

    #[test]
    fn rewritten_servers_keep_the_site_map_spelling() {
        assert_eq!(
            server("NFS-B.example.com").as_written(),
            "NFS-B.example.com"
        );
    }

    #[test]
    fn bad_servers_are_rejected_with_the_reason() {
        assert_eq!(NfsServer::parse("  "), Err(ServerError::Empty));
        assert_eq!(
            NfsServer::parse("nfs a"),
            Err(ServerError::BadCharacter(' '))
        );
        assert_eq!(
            NfsServer::parse("nfs:/x"),
            Err(ServerError::BadCharacter(':'))
        );
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(path("//exports//vms/./"), path("/exports/vms"));
        assert_eq!(path("/exports/vms/").to_string(), "/exports/vms");
        assert_eq!(path("/").to_string(), "/");
        assert_eq!(ExportPath::parse("exports"), Err(PathError::Relative));
        assert_eq!(ExportPath::parse(""), Err(PathError::Empty));
        assert_eq!(
            ExportPath::parse("/a/../b"),
            Err(PathError::ParentComponent)
        );
    }

    #[test]
    fn containment_is_on_component_boundaries() {
        let base = path("/exports/vms");
        assert_eq!(
            path("/exports/vms/disk-1/x").strip_base(&base),
            Some(&["disk-1".to_owned(), "x".to_owned()][..])
        );
        assert_eq!(path("/exports/vms").strip_base(&base), Some(&[][..]));
        assert_eq!(path("/exports/vms2").strip_base(&base), None);
        assert_eq!(path("/exports").strip_base(&base), None);
        assert!(path("/").overlaps(&base));
        assert!(!path("/exports/vms2").overlaps(&base));
    }

    #[test]
    fn join_onto_the_root_has_no_double_slash() {
        assert_eq!(path("/").join(&["a".to_owned()]).to_string(), "/a");
    }
}
