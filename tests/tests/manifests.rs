//! The deployable YAML under `manifests/`, rendered with the pinned kustomize and applied to the real
//! kube-apiserver as a server-side dry run with strict field validation: every object must pass the
//! API server's own schema validation and defaulting, with no unknown field. Kinds from other
//! projects (`ServiceMonitor`, `PrometheusRule`, `DataProtectionApplication`) are checked against the
//! stand-in CRDs in `tests/crds/`, which type only the fields these manifests use. On top of what
//! the API server checks: each overlay names its own site, the plugin ConfigMap's site map parses
//! with the plugins' parser, and everything (RBAC subjects included) lands in Velero's namespace.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use replicadr_e2e::TestCluster;
use replicadr_e2e::apply::{self, Document};
use replicadr_e2e::backup_env::POLICY_CRD;
use replicadr_e2e::workspace::{pinned, repo_root};
use replicadr_plugins::sitemap::SiteMap;
use serde_json::Value;

const STAND_IN_CRDS: [&str; 2] = [
    include_str!("../crds/monitoring.coreos.com.yaml"),
    include_str!("../crds/oadp.openshift.io.yaml"),
];
const DPA: &str = include_str!("../../manifests/oadp/dataprotectionapplication.yaml");

/// The pinned kustomize, as `hack/validate-manifests.sh` installs it, or `$REPLICADR_KUSTOMIZE`.
fn kustomize() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("REPLICADR_KUSTOMIZE") {
        return Ok(PathBuf::from(path));
    }
    let cache = std::env::var_os("REPLICADR_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/replicadr"))
        })
        .context("neither REPLICADR_CACHE nor HOME is set")?;
    let version = pinned("KUSTOMIZE_VERSION")?;
    let path = cache.join(format!("kustomize-{version}")).join("kustomize");
    ensure!(
        path.is_file(),
        "kustomize not found at {}: run `bash hack/validate-manifests.sh` to install it, or set REPLICADR_KUSTOMIZE",
        path.display()
    );
    Ok(path)
}

/// `kustomize build manifests/<dir>`.
fn render(dir: &str) -> anyhow::Result<String> {
    let output = Command::new(kustomize()?)
        .arg("build")
        .arg(repo_root().join("manifests").join(dir))
        .output()
        .context("cannot run kustomize")?;
    if !output.status.success() {
        bail!(
            "kustomize build manifests/{dir} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn find<'a>(documents: &'a [Document], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    documents
        .iter()
        .find(|d| d.gvk.kind == kind && d.name() == name)
        .map(|d| &d.object.data)
        .with_context(|| format!("no {kind} {name} in the rendering"))
}

/// What the API server cannot see: the site, the site map, and namespaces.
fn check_rendering(dir: &str, yaml: &str, namespace: &str, site: &str) -> anyhow::Result<()> {
    let documents = apply::parse_documents(yaml)?;
    for document in &documents {
        let cluster_scoped = matches!(
            document.gvk.kind.as_str(),
            "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        let actual = document.object.metadata.namespace.as_deref();
        ensure!(
            cluster_scoped || actual == Some(namespace),
            "{dir}: {} {} is in namespace {actual:?}, not {namespace}",
            document.gvk.kind,
            document.name()
        );
        if document.gvk.kind.ends_with("RoleBinding") {
            let subjects = document.object.data["subjects"]
                .as_array()
                .context("subjects")?;
            for subject in subjects {
                ensure!(
                    subject["namespace"] == namespace,
                    "{dir}: {} {} binds {subject} outside {namespace}",
                    document.gvk.kind,
                    document.name()
                );
            }
        }
    }
    let data = &find(&documents, "ConfigMap", "replicadr-plugins")?
        .get("data")
        .context("plugin ConfigMap has no data")?;
    ensure!(
        data["localSite"] == site,
        "{dir}: localSite is {}, not {site}",
        data["localSite"]
    );
    let map = SiteMap::from_yaml(data["siteMap"].as_str().context("no siteMap")?)
        .with_context(|| format!("{dir}: the plugin ConfigMap's site map is invalid"))?;
    map.site(site)
        .with_context(|| format!("{dir}: the site map has no site {site}"))?;
    let deployment = find(&documents, "Deployment", "replicadr-scheduler")?;
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(pod["serviceAccountName"] == "replicadr-scheduler");
    ensure!(pod["securityContext"]["runAsNonRoot"] == true);
    let container = &pod["containers"][0];
    ensure!(container["securityContext"]["readOnlyRootFilesystem"] == true);
    ensure!(container["securityContext"]["capabilities"]["drop"] == serde_json::json!(["ALL"]));
    Ok(())
}

#[test]
fn each_rendering_puts_everything_in_velero_namespace_and_names_its_site() -> anyhow::Result<()> {
    check_rendering("base", &render("base")?, "velero", "primary")?;
    check_rendering(
        "overlays/primary",
        &render("overlays/primary")?,
        "openshift-adp",
        "primary",
    )?;
    check_rendering(
        "overlays/dr",
        &render("overlays/dr")?,
        "openshift-adp",
        "dr",
    )?;
    Ok(())
}

#[tokio::test]
async fn every_manifest_passes_the_api_servers_strict_validation() -> anyhow::Result<()> {
    let renderings = [
        ("base", render("base")?),
        ("overlays/primary", render("overlays/primary")?),
        ("overlays/dr", render("overlays/dr")?),
    ];
    let cluster = TestCluster::start().await?;
    for crds in STAND_IN_CRDS {
        cluster.apply_yaml(crds).await?;
    }
    // The BackupPolicy CRD is applied for real so that the example policy can be dry-run.
    cluster.apply_yaml(POLICY_CRD).await?;
    cluster.create_namespace("velero").await?;
    cluster.create_namespace("openshift-adp").await?;
    let client = cluster.client().await?;
    for (dir, yaml) in &renderings {
        let validated = apply::dry_run_yaml(&client, yaml)
            .await
            .with_context(|| format!("manifests/{dir} is refused"))?;
        ensure!(
            validated.len() >= 13,
            "{dir}: only {} objects",
            validated.len()
        );
    }
    apply::dry_run_yaml(&client, DPA)
        .await
        .context("manifests/oadp/dataprotectionapplication.yaml is refused")?;
    Ok(())
}
