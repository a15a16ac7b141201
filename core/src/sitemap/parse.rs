//! Reading a site map document and validating it before anything uses it. Every problem names
//! the entry and field, the offending value and what would be accepted.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;

use super::{Endpoint, Export, ExportPath, NfsServer, SiteMap, SiteName, UnmappedPolicy};

/// Why a site map document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SiteMapError {
    /// YAML syntax errors and unknown or mistyped keys, with line and column.
    #[error("site map is not valid: {0}")]
    Syntax(#[from] serde_yaml_ng::Error),
    /// Well-formed YAML that breaks the site map's rules.
    #[error("site map is not valid: {}", join_problems(.0))]
    Invalid(Vec<Problem>),
}

/// One rule broken by one entry of the site map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `sites[1]`, `exports[0] (vm-disks).dr.path`, …
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSiteMap {
    sites: Vec<String>,
    exports: Vec<RawExport>,
    #[serde(default)]
    unmapped: UnmappedPolicy,
}

#[derive(Deserialize)]
struct RawExport {
    name: String,
    /// Every other key must be a declared site; checked by hand so the message can say so.
    #[serde(flatten)]
    sites: BTreeMap<String, serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    server: String,
    path: String,
}

/// Collects problems so one run reports all of them.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
}

pub(super) fn parse(text: &str) -> Result<SiteMap, SiteMapError> {
    let raw: RawSiteMap = serde_yaml_ng::from_str(text)?;
    let mut problems = Problems::default();
    let sites = validate_sites(&raw.sites, &mut problems);
    let exports = validate_exports(&raw.exports, &sites, &mut problems);
    check_unambiguous(&exports, &sites, &mut problems);
    if !problems.0.is_empty() {
        return Err(SiteMapError::Invalid(problems.0));
    }
    Ok(SiteMap {
        sites,
        exports,
        unmapped: raw.unmapped,
    })
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn validate_sites(raw: &[String], problems: &mut Problems) -> Vec<SiteName> {
    if raw.len() < 2 {
        problems.push(
            "sites",
            format!(
                "declares {} site(s); a site map needs at least two, e.g. [primary, dr]",
                raw.len()
            ),
        );
    }
    let mut seen = HashSet::new();
    let mut sites = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        let field = format!("sites[{i}]");
        if !is_dns_label(name) {
            problems.push(
                field,
                format!("{name:?} is not a valid site name; expected lowercase letters, digits and '-' (at most 63), e.g. dr"),
            );
        } else if name == "name" {
            problems.push(
                field,
                "\"name\" is reserved for the export name; choose another site name",
            );
        } else if !seen.insert(name.as_str()) {
            problems.push(field, format!("site {name:?} is declared twice"));
        } else {
            sites.push(SiteName(name.clone()));
        }
    }
    sites
}

fn validate_exports(raw: &[RawExport], sites: &[SiteName], problems: &mut Problems) -> Vec<Export> {
    let declared = sites
        .iter()
        .map(SiteName::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut names = HashSet::new();
    let mut exports = Vec::new();
    for (i, export) in raw.iter().enumerate() {
        let entry = format!("exports[{i}] ({})", export.name);
        if export.name.trim().is_empty() {
            problems.push(
                format!("exports[{i}].name"),
                "is empty; every export needs a name, e.g. vm-disks",
            );
        } else if export.name.chars().any(char::is_whitespace) {
            problems.push(
                format!("{entry}.name"),
                format!(
                    "{:?} contains white space; use a name like vm-disks",
                    export.name
                ),
            );
        } else if !names.insert(export.name.as_str()) {
            problems.push(
                format!("{entry}.name"),
                format!(
                    "export name {:?} is used twice; export names must be unique",
                    export.name
                ),
            );
        }
        for key in export.sites.keys() {
            if !sites.iter().any(|s| s.as_str() == key) {
                problems.push(
                    format!("{entry}.{key}"),
                    format!("{key:?} is not a declared site; expected `name` or one of the sites: {declared}"),
                );
            }
        }
        let mut endpoints = Vec::with_capacity(sites.len());
        for site in sites {
            let field = format!("{entry}.{site}");
            match export.sites.get(site.as_str()) {
                None => problems.push(field, format!("is missing; every export needs a server and path for every site ({declared})")),
                Some(value) => {
                    if let Some(endpoint) = validate_endpoint(value, &field, problems) {
                        endpoints.push(endpoint);
                    }
                }
            }
        }
        if endpoints.len() == sites.len() {
            exports.push(Export {
                name: export.name.clone(),
                endpoints,
            });
        }
    }
    exports
}

fn validate_endpoint(
    value: &serde_yaml_ng::Value,
    field: &str,
    problems: &mut Problems,
) -> Option<Endpoint> {
    let raw: RawEndpoint = match serde_yaml_ng::from_value(value.clone()) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(
                field,
                format!("{e}; expected {{server: <host or IP>, path: <absolute path>}}"),
            );
            return None;
        }
    };
    let server = NfsServer::parse(&raw.server)
        .map_err(|e| problems.push(format!("{field}.server"), format!("{:?} {e}", raw.server)))
        .ok();
    let path = ExportPath::parse(&raw.path)
        .map_err(|e| problems.push(format!("{field}.path"), format!("{:?} {e}", raw.path)))
        .ok();
    Some(Endpoint {
        server: server?,
        path: path?,
    })
}

/// Rejects maps where a PV location could belong to two sites or two exports in a way that makes
/// the rewrite, or the reverse rewrite used at failback, depend on which one is picked.
fn check_unambiguous(exports: &[Export], sites: &[SiteName], problems: &mut Problems) {
    let all: Vec<(usize, usize, &Endpoint)> = exports
        .iter()
        .enumerate()
        .flat_map(|(e, export)| {
            export
                .endpoints
                .iter()
                .enumerate()
                .map(move |(s, ep)| (e, s, ep))
        })
        .collect();
    for (i, &(ea, sa, a)) in all.iter().enumerate() {
        for &(eb, sb, b) in &all[i + 1..] {
            if a.server != b.server || !a.path.overlaps(&b.path) {
                continue;
            }
            let (na, nb) = (&exports[ea].name, &exports[eb].name);
            let field = format!("exports ({na} at {}, {nb} at {})", sites[sa], sites[sb]);
            if sa != sb {
                problems.push(field, format!(
                    "{a} and {b} overlap on one server but belong to different sites; a PV there could not be told apart. Give each site its own server or non-overlapping paths"
                ));
            } else if a.path == b.path {
                problems.push(
                    field,
                    format!("both declare {a}; each export location may appear once"),
                );
            } else if !nested_consistently(&exports[ea], &exports[eb], sa) {
                problems.push(field, format!(
                    "{a} and {b} are nested at site {} but not nested the same way at every other site, so mapping back would be ambiguous; make the inner export the same sub-path at every site, or drop one",
                    sites[sa]
                ));
            }
        }
    }
}

/// Whether an export nested inside another at `site` sits at the same relative place at every site.
fn nested_consistently(a: &Export, b: &Export, site: usize) -> bool {
    let (outer, inner) = if b.endpoints[site]
        .path
        .strip_base(&a.endpoints[site].path)
        .is_some()
    {
        (a, b)
    } else {
        (b, a)
    };
    let Some(rel) = inner.endpoints[site]
        .path
        .strip_base(&outer.endpoints[site].path)
    else {
        return false;
    };
    outer
        .endpoints
        .iter()
        .zip(&inner.endpoints)
        .all(|(o, i)| o.server == i.server && i.path == o.path.join(rel))
}
