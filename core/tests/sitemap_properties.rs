//! Properties of the site map over generated maps, through its public API only. The unit tests
//! next to the code check the rewrite rules on one fixed map; here every case builds a new map
//! (two to four sites, nested and sibling exports, hostnames in any case, IPv4 and IPv6 servers)
//! and a PV somewhere in it:
//!
//! - rewriting a PV to another site and back gives the original location;
//! - a rewrite always lands inside the local site's copy of the export the PV was found in, and a
//!   location outside every export is never rewritten;
//! - the parser never panics on arbitrary YAML documents, nor on damaged copies of valid maps.
//!
//! Cases per property: `PROPTEST_CASES` (default 64); `hack/proptest-nightly.sh` runs 100,000.

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::test_runner::Config;
use replicadr_core::sitemap::{ExportPath, NfsServer, Placement, SiteMap};

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(64);
    Config {
        cases,
        // Shrinking a failure of a 100,000-case run must not take longer than finding it.
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// A generated site map: its YAML and what the generator put in it.
#[derive(Debug, Clone)]
struct GeneratedMap {
    yaml: String,
    sites: Vec<String>,
    /// Per export: its name, and per site the server as written and the export path.
    exports: Vec<(String, Vec<(String, String)>)>,
}

fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,6}".prop_filter("not a dot component", |s| s != "." && s != "..")
}

/// A server spelling for site `site`, group `group`: distinct per (site, group) whatever the
/// spelling, so exports of different sites never share a server by accident.
fn server(site: usize, group: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<bool>().prop_map(move |upper| {
            let name = format!("nfs-{site}-{group}.example.com");
            if upper {
                name.to_ascii_uppercase()
            } else {
                name
            }
        }),
        Just(format!("10.{site}.{group}.5")),
        any::<bool>().prop_map(move |brackets| {
            let address = format!("fd00:{site}::{group}:5");
            if brackets {
                format!("[{address}]")
            } else {
                address
            }
        }),
    ]
}

/// Two to four sites; exports in two server groups, each export a tail of segments below its
/// site's base path. Exports whose tails nest are nested the same way at every site, as the
/// parser requires.
fn site_map() -> impl Strategy<Value = GeneratedMap> {
    (2usize..=4)
        .prop_flat_map(|site_count| {
            let servers: Vec<_> = (0..site_count)
                .map(|site| (server(site, 0), server(site, 1), segment()))
                .collect();
            let exports =
                prop::collection::vec((0usize..2, prop::collection::vec(segment(), 0..3)), 1..6);
            (Just(site_count), servers, exports, any::<bool>())
        })
        .prop_map(|(site_count, servers, raw_exports, keep)| {
            let sites: Vec<String> = (0..site_count).map(|i| format!("site-{i}")).collect();
            let mut seen = std::collections::HashSet::new();
            let mut exports = Vec::new();
            for (group, tail) in raw_exports {
                if !seen.insert((group, tail.clone())) {
                    continue;
                }
                let name = format!("export-{}", exports.len());
                let endpoints = servers
                    .iter()
                    .enumerate()
                    .map(|(site, (first, second, base))| {
                        let server = if group == 0 { first } else { second };
                        let mut path = format!("/base-{site}-{base}");
                        for part in &tail {
                            let _ = write!(path, "/{part}");
                        }
                        (server.clone(), path)
                    })
                    .collect();
                exports.push((name, endpoints));
            }
            let yaml = render(&sites, &exports, keep);
            GeneratedMap {
                yaml,
                sites,
                exports,
            }
        })
}

fn render(sites: &[String], exports: &[(String, Vec<(String, String)>)], keep: bool) -> String {
    let mut yaml = format!("sites: [{}]\nexports:\n", sites.join(", "));
    for (name, endpoints) in exports {
        let _ = writeln!(yaml, "  - name: {name}");
        for (site, (server, path)) in sites.iter().zip(endpoints) {
            let _ = writeln!(yaml, "    {site}: {{server: '{server}', path: '{path}'}}");
        }
    }
    yaml.push_str(if keep {
        "unmapped: keep\n"
    } else {
        "unmapped: fail\n"
    });
    yaml
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_rewrite_to_another_site_and_back_gives_the_original_location(
        generated in site_map(),
        pick in any::<prop::sample::Index>(),
        from in any::<prop::sample::Index>(),
        to in any::<prop::sample::Index>(),
        rest in prop::collection::vec(segment(), 0..4),
        trailing_slash in any::<bool>(),
    ) {
        let map = SiteMap::from_yaml(&generated.yaml)
            .unwrap_or_else(|e| panic!("generated map rejected: {e}\n{}", generated.yaml));
        let (_, endpoints) = &generated.exports[pick.index(generated.exports.len())];
        let from = from.index(generated.sites.len());
        let to = to.index(generated.sites.len());
        let (server, base) = &endpoints[from];
        let mut original = base.clone();
        for part in &rest {
            let _ = write!(original, "/{part}");
        }
        if trailing_slash {
            original.push('/');
        }
        let original_path = ExportPath::parse(&original).expect("generated paths are absolute");
        let original_server = NfsServer::parse(server).expect("generated servers are valid");

        let to_site = map.site(&generated.sites[to]).expect("declared");
        let from_site = map.site(&generated.sites[from]).expect("declared");
        let placed = map.place(to_site, &original_server, &original_path).expect("inside an export");
        let Placement::Remote(there) = placed else {
            prop_assert_eq!(from, to, "only a PV already at the local site stays: {:?}", placed);
            return Ok(());
        };
        prop_assert_ne!(from, to);
        prop_assert_eq!(there.from_site, from_site);
        let there_server = NfsServer::parse(there.server).expect("written servers parse");
        let back = map.place(from_site, &there_server, &there.path).expect("the rewrite is mapped");
        let Placement::Remote(back) = back else {
            return Err(TestCaseError::fail(format!("the way back is not a rewrite: {back:?}")));
        };
        prop_assert_eq!(back.server, server.as_str());
        prop_assert_eq!(back.path.to_string(), original_path.to_string());
        prop_assert_eq!(back.export, there.export);
    }

    #[test]
    fn a_rewrite_never_leaves_the_declared_exports(
        generated in site_map(),
        local in any::<prop::sample::Index>(),
        server_of in any::<prop::sample::Index>(),
        keep in 0usize..4,
        rest in prop::collection::vec(segment(), 0..4),
    ) {
        let map = SiteMap::from_yaml(&generated.yaml)
            .unwrap_or_else(|e| panic!("generated map rejected: {e}\n{}", generated.yaml));
        let local_name = &generated.sites[local.index(generated.sites.len())];
        let local = map.site(local_name).expect("declared");
        // Any declared server with a path that shares some leading components with one of its
        // exports and then goes anywhere: inside, beside or above the exports.
        let all: Vec<&(String, String)> = generated.exports.iter().flat_map(|(_, e)| e).collect();
        let (server, base) = all[server_of.index(all.len())];
        let mut path = String::new();
        for part in base.split('/').filter(|p| !p.is_empty()).take(keep) {
            let _ = write!(path, "/{part}");
        }
        for part in &rest {
            let _ = write!(path, "/{part}");
        }
        if path.is_empty() {
            path.push('/');
        }
        let server = NfsServer::parse(server).expect("valid");
        let path = ExportPath::parse(&path).expect("absolute");
        match map.place(local, &server, &path) {
            Ok(Placement::Remote(rewrite)) => {
                let written = NfsServer::parse(rewrite.server).expect("written servers parse");
                let landed = map.export_of(&written, &rewrite.path);
                prop_assert_eq!(landed, Some((rewrite.export, local)), "{} -> {}:{}", path, rewrite.server, rewrite.path);
                prop_assert_eq!(map.export_of(&server, &path).map(|(e, _)| e), Some(rewrite.export));
            }
            Ok(Placement::Local { export }) => {
                prop_assert_eq!(map.export_of(&server, &path), Some((export, local)));
            }
            Err(unmapped) => {
                prop_assert_eq!(map.export_of(&server, &path), None, "{}", unmapped);
            }
        }
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_yaml(document in yaml_value(), as_flow in any::<bool>()) {
        let text = if as_flow {
            serde_json::to_string(&document).expect("json")
        } else {
            serde_yaml_ng::to_string(&document).expect("yaml")
        };
        if let Err(error) = SiteMap::from_yaml(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn the_parser_never_panics_on_damaged_maps(
        generated in site_map(),
        cut in any::<prop::sample::Index>(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<char>()), 0..6),
    ) {
        let mut chars: Vec<char> = generated.yaml.chars().collect();
        for (at, replacement) in damage {
            let at = at.index(chars.len());
            chars[at] = replacement;
        }
        let cut = cut.index(chars.len() + 1);
        let text: String = chars[..cut].iter().collect();
        let _ = SiteMap::from_yaml(&text);
    }
}

/// YAML documents in the site map's vocabulary: its keys, site names, servers and paths, nested
/// in maps and lists of any shape, with scalars of every kind.
fn yaml_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("sites".to_owned()),
        Just("exports".to_owned()),
        Just("unmapped".to_owned()),
        Just("name".to_owned()),
        Just("server".to_owned()),
        Just("path".to_owned()),
        Just("primary".to_owned()),
        Just("dr".to_owned()),
        "[a-z-]{0,8}",
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("keep")),
        Just(serde_json::Value::from("/exports/vms")),
        Just(serde_json::Value::from("nfs-a.example.com")),
        Just(serde_json::Value::from("[fd00::1]")),
        "[/a-z0-9.:\\[\\]-]{0,16}".prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
