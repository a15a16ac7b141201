use proptest::prelude::*;

use super::*;

const EXAMPLE: &str = r"
sites: [primary, dr]
exports:
  - name: vm-disks
    primary: {server: nfs-a.example.com, path: /exports/vms}
    dr:      {server: 10.20.0.5,         path: /replica/vms}
  - name: vm-disks-gold
    primary: {server: nfs-a.example.com, path: /exports/vms/gold}
    dr:      {server: 10.20.0.5,         path: /replica/vms/gold}
  - name: scratch
    primary: {server: nfs-a.example.com, path: /scratch}
    dr:      {server: nfs-b.example.com, path: /scratch}
  - name: v6
    primary: {server: 'fd00::1', path: /v6}
    dr:      {server: '[fd00::2]', path: /v6-replica}
unmapped: keep
";

fn map() -> SiteMap {
    SiteMap::from_yaml(EXAMPLE).expect("example site map is valid")
}

fn place<'m>(
    map: &'m SiteMap,
    local: &str,
    server: &str,
    path: &str,
) -> Result<Placement<'m>, Unmapped> {
    let local = map.site(local).expect("declared site");
    map.place(
        local,
        &NfsServer::parse(server).expect("valid server"),
        &ExportPath::parse(path).expect("valid path"),
    )
}

fn rewritten(map: &SiteMap, local: &str, server: &str, path: &str) -> (String, String, String) {
    match place(map, local, server, path) {
        Ok(Placement::Remote(r)) => (r.server.to_owned(), r.path.to_string(), r.export.to_owned()),
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

fn invalid(yaml: &str) -> String {
    match SiteMap::from_yaml(yaml) {
        Ok(_) => panic!("expected the site map to be rejected:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_the_example() {
    let map = map();
    assert_eq!(map.sites().len(), 2);
    assert_eq!(map.exports().len(), 4);
    assert_eq!(map.unmapped_policy(), UnmappedPolicy::Keep);
}

#[test]
fn export_of_finds_the_export_and_site_whichever_site_is_local() {
    let map = map();
    let export_of = |server: &str, path: &str| {
        map.export_of(
            &NfsServer::parse(server).expect("valid server"),
            &ExportPath::parse(path).expect("valid path"),
        )
        .map(|(export, site)| (export.to_owned(), site.to_string()))
    };
    assert_eq!(
        export_of("nfs-a.example.com", "/exports/vms/gold/disk"),
        Some(("vm-disks-gold".into(), "primary".into()))
    );
    assert_eq!(
        export_of("10.20.0.5", "/replica/vms/disk"),
        Some(("vm-disks".into(), "dr".into()))
    );
    assert_eq!(export_of("nfs-a.example.com", "/elsewhere"), None);
    assert_eq!(export_of("other.example.com", "/exports/vms"), None);
}

#[test]
fn unmapped_defaults_to_fail() {
    let map = SiteMap::from_yaml(&EXAMPLE.replace("unmapped: keep", "")).expect("valid");
    assert_eq!(map.unmapped_policy(), UnmappedPolicy::Fail);
}

#[test]
fn rewrites_keep_the_path_below_the_export() {
    let map = map();
    assert_eq!(
        rewritten(&map, "dr", "nfs-a.example.com", "/exports/vms/ns1/disk-1"),
        (
            "10.20.0.5".into(),
            "/replica/vms/ns1/disk-1".into(),
            "vm-disks".into()
        )
    );
    assert_eq!(
        rewritten(&map, "dr", "NFS-A.example.com", "//exports/vms/"),
        ("10.20.0.5".into(), "/replica/vms".into(), "vm-disks".into())
    );
}

#[test]
fn server_only_moves_keep_the_path() {
    assert_eq!(
        rewritten(&map(), "dr", "nfs-a.example.com", "/scratch/pvc-1"),
        (
            "nfs-b.example.com".into(),
            "/scratch/pvc-1".into(),
            "scratch".into()
        )
    );
}

#[test]
fn the_longest_export_wins() {
    assert_eq!(
        rewritten(&map(), "dr", "nfs-a.example.com", "/exports/vms/gold/db").2,
        "vm-disks-gold"
    );
}

#[test]
fn ipv6_servers_match_as_addresses() {
    assert_eq!(
        rewritten(&map(), "dr", "fd00:0::1", "/v6/a"),
        ("[fd00::2]".into(), "/v6-replica/a".into(), "v6".into())
    );
}

#[test]
fn locations_already_local_are_left_alone() {
    assert_eq!(
        place(&map(), "dr", "10.20.0.5", "/replica/vms/disk-1"),
        Ok(Placement::Local { export: "vm-disks" })
    );
}

#[test]
fn failback_uses_the_same_map_in_reverse() {
    assert_eq!(
        rewritten(&map(), "primary", "10.20.0.5", "/replica/vms/disk-1"),
        (
            "nfs-a.example.com".into(),
            "/exports/vms/disk-1".into(),
            "vm-disks".into()
        )
    );
}

#[test]
fn sibling_paths_are_not_under_an_export() {
    let err = place(&map(), "dr", "nfs-a.example.com", "/exports/vms2/disk").expect_err("unmapped");
    let text = err.to_string();
    assert!(
        text.contains("nfs-a.example.com:/exports/vms2/disk"),
        "{text}"
    );
    assert!(
        text.contains("closest export: vm-disks at site primary is nfs-a.example.com:/exports/vms"),
        "{text}"
    );
}

#[test]
fn unknown_servers_are_unmapped() {
    assert!(place(&map(), "dr", "other.example.com", "/exports/vms/x").is_err());
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let text =
        invalid("sites: [primary, dr]\nexports:\n  - name: a\n    primary: {server: x, path: /a\n");
    assert!(text.contains("line"), "{text}");
    assert!(text.contains("column"), "{text}");
}

#[test]
fn unknown_top_level_keys_are_rejected() {
    let text = invalid("sites: [primary, dr]\nexports: []\nunmaped: keep\n");
    assert!(text.contains("unknown field `unmaped`"), "{text}");
}

#[test]
fn unknown_endpoint_keys_name_the_entry() {
    let text = invalid(
        "sites: [primary, dr]\nexports:\n  - name: a\n    primary: {sever: x, path: /a}\n    dr: {server: y, path: /a}\n",
    );
    assert!(text.contains("exports[0] (a).primary"), "{text}");
    assert!(text.contains("unknown field `sever`"), "{text}");
}

#[test]
fn bad_unmapped_policy_lists_the_accepted_values() {
    let text = invalid("sites: [primary, dr]\nexports: []\nunmapped: ignore\n");
    assert!(text.contains("`fail`") && text.contains("`keep`"), "{text}");
}

#[test]
fn unknown_and_missing_sites_are_named() {
    let text = invalid(
        "sites: [primary, dr]\nexports:\n  - name: a\n    primary: {server: x, path: /a}\n    drr: {server: y, path: /a}\n",
    );
    assert!(
        text.contains("exports[0] (a).drr: \"drr\" is not a declared site"),
        "{text}"
    );
    assert!(text.contains("exports[0] (a).dr: is missing"), "{text}");
}

#[test]
fn site_list_problems_are_reported() {
    assert!(invalid("sites: [primary]\nexports: []\n").contains("at least two"));
    assert!(invalid("sites: [primary, primary]\nexports: []\n").contains("declared twice"));
    assert!(invalid("sites: [primary, DR]\nexports: []\n").contains("sites[1]"));
}

#[test]
fn empty_and_relative_values_are_rejected() {
    let text = invalid(
        "sites: [primary, dr]\nexports:\n  - name: a\n    primary: {server: '', path: exports}\n    dr: {server: y, path: ''}\n",
    );
    assert!(
        text.contains("exports[0] (a).primary.server: \"\" is empty"),
        "{text}"
    );
    assert!(
        text.contains("exports[0] (a).primary.path: \"exports\" is relative"),
        "{text}"
    );
    assert!(
        text.contains("exports[0] (a).dr.path: \"\" is empty"),
        "{text}"
    );
    assert!(invalid("sites: [primary, dr]\nexports:\n  - name: ''\n    primary: {server: x, path: /a}\n    dr: {server: y, path: /a}\n").contains("exports[0].name: is empty"));
}

#[test]
fn duplicate_exports_are_rejected() {
    let text = invalid(
        "sites: [primary, dr]\nexports:\n  - name: a\n    primary: {server: x, path: /a}\n    dr: {server: y, path: /a}\n  - name: a\n    primary: {server: x, path: /a/}\n    dr: {server: y, path: /b}\n",
    );
    assert!(text.contains("used twice"), "{text}");
    assert!(text.contains("both declare x:/a"), "{text}");
}

#[test]
fn inconsistent_nesting_is_rejected_as_ambiguous() {
    // /a/b nests in /a at primary but lands in an unrelated place at dr: mapping back is ambiguous.
    let text = invalid(
        "sites: [primary, dr]\nexports:\n  - name: outer\n    primary: {server: x, path: /a}\n    dr: {server: y, path: /x}\n  - name: inner\n    primary: {server: x, path: /a/b}\n    dr: {server: y, path: /y}\n",
    );
    assert!(text.contains("nested at site primary"), "{text}");
}

#[test]
fn overlapping_locations_of_different_sites_are_rejected() {
    let text = invalid(
        "sites: [primary, dr]\nexports:\n  - name: same\n    primary: {server: x, path: /a}\n    dr: {server: X, path: /a/replica}\n",
    );
    assert!(text.contains("belong to different sites"), "{text}");
}

// Property tests: the rewrite rules over generated paths.

fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,8}".prop_filter("not a dot component", |s| s != "." && s != "..")
}

fn tail() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(segment(), 0..5)
}

fn join(base: &str, tail: &[String]) -> String {
    let mut path = base.to_owned();
    for part in tail {
        path.push('/');
        path.push_str(part);
    }
    path
}

proptest! {
    #[test]
    fn rewriting_twice_changes_nothing(rest in tail()) {
        let map = map();
        let (server, path, _) = rewritten(&map, "dr", "nfs-a.example.com", &join("/exports/vms", &rest));
        let placed = place(&map, "dr", &server, &path);
        prop_assert!(matches!(placed, Ok(Placement::Local { .. })), "{:?}", placed);
    }

    #[test]
    fn failover_then_failback_returns_the_original(rest in tail(), base in prop::sample::select(vec!["/exports/vms", "/exports/vms/gold", "/scratch"])) {
        let map = map();
        let original = join(base, &rest);
        let (dr_server, dr_path, export) = rewritten(&map, "dr", "nfs-a.example.com", &original);
        let (back_server, back_path, back_export) = rewritten(&map, "primary", &dr_server, &dr_path);
        prop_assert_eq!(back_server, "nfs-a.example.com");
        prop_assert_eq!(back_path, ExportPath::parse(&original).expect("valid").to_string());
        prop_assert_eq!(back_export, export);
    }

    #[test]
    fn only_component_boundaries_match(suffix in "[a-z0-9]{1,6}", rest in tail()) {
        let map = map();
        let sibling = join(&format!("/exports/vms{suffix}"), &rest);
        prop_assert!(place(&map, "dr", "nfs-a.example.com", &sibling).is_err());
    }

    #[test]
    fn parsing_never_panics(chars in prop::collection::vec(any::<char>(), 0..200)) {
        let text: String = chars.into_iter().collect();
        let _ = SiteMap::from_yaml(&text);
    }
}
