//! The deployable YAML under `manifests/`, rendered with the pinned kustomize and checked against a
//! real kube-apiserver.
//!
//! - Schemas: every rendering goes through a server-side dry run with strict field validation, so
//!   each object passes the API server's own schema validation and defaulting, with no unknown
//!   field. `ServiceMonitor` and `PrometheusRule` are checked against the Prometheus Operator's
//!   real CRDs, which `hack/validate-manifests.sh` takes from its pinned Go module.
//!   `DataProtectionApplication` is checked against OADP's own CRD, read from
//!   `../shared/crds/oadp/` beside the checkout (OADP's module is not on the Go module proxy).
//! - A real apply of the OADP primary overlay, read back.
//! - The scheduler's RBAC as bound there, asked as its `ServiceAccount`: what it needs is allowed;
//!   deleting Backups or PVCs, editing the site map and creating Restores are not.
//! - What the API server cannot see: each overlay names its own site, the plugin ConfigMap's site
//!   map parses with the plugins' parser, and everything (RBAC subjects included) lands in
//!   Velero's namespace.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::api::{Api, PostParams};
use replicadr_core::sitemap::SiteMap;
use replicadr_e2e::apply::{self, Document};
use replicadr_e2e::backup_env::POLICY_CRD;
use replicadr_e2e::workspace::{pinned, repo_root};
use replicadr_e2e::{TestCluster, peers};
use replicadr_scheduler::policy::BackupPolicy;
use serde_json::Value;

const DPA: &str = include_str!("../../manifests/oadp/dataprotectionapplication.yaml");

/// OADP's `DataProtectionApplication` CRD, from its own repository, kept beside the checkout in
/// `../shared/crds/oadp/` (read, never copied into the project).
fn oadp_crd() -> anyhow::Result<String> {
    let path =
        repo_root().join("../shared/crds/oadp/oadp.openshift.io_dataprotectionapplications.yaml");
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: OADP's DataProtectionApplication CRD is expected there, beside the checkout",
            path.display()
        )
    })
}

/// `<peer cache>/<dir>/<file>`, which `hack/validate-manifests.sh` puts there.
fn cached(dir: &str, file: &str) -> anyhow::Result<PathBuf> {
    let path = peers::cache_dir()?.join(dir).join(file);
    ensure!(
        path.is_file(),
        "{} not found: run `bash hack/validate-manifests.sh` to fetch it",
        path.display()
    );
    Ok(path)
}

/// The pinned kustomize, as `hack/validate-manifests.sh` installs it, or `$REPLICADR_KUSTOMIZE`.
fn kustomize() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("REPLICADR_KUSTOMIZE") {
        return Ok(PathBuf::from(path));
    }
    cached(
        &format!("kustomize-{}", pinned("KUSTOMIZE_VERSION")?),
        "kustomize",
    )
}

/// The Prometheus Operator's `ServiceMonitor` and `PrometheusRule` CRDs, from its pinned release.
fn prometheus_operator_crds() -> anyhow::Result<Vec<String>> {
    let dir = format!(
        "prometheus-operator-crds-{}",
        pinned("PROMETHEUS_OPERATOR_VERSION")?
    );
    ["servicemonitors.yaml", "prometheusrules.yaml"]
        .iter()
        .map(|file| Ok(std::fs::read_to_string(cached(&dir, file)?)?))
        .collect()
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

/// Asks the API server whether the client's user (here the scheduler's `ServiceAccount`) may
/// `verb` `resource` (`group/resource`, or `resource` for the core group) in `namespace`.
async fn may(
    client: &kube::Client,
    namespace: &str,
    verb: &str,
    resource: &str,
) -> anyhow::Result<bool> {
    let (group, resource) = resource.split_once('/').unwrap_or(("", resource));
    let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "namespace": namespace, "verb": verb, "group": group, "resource": resource,
        }},
    }))?;
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[tokio::test]
async fn every_manifest_passes_the_api_servers_strict_validation_and_applies() -> anyhow::Result<()>
{
    let renderings = [
        ("base", render("base")?),
        ("overlays/primary", render("overlays/primary")?),
        ("overlays/dr", render("overlays/dr")?),
    ];
    let cluster = TestCluster::start().await?;
    for crd in prometheus_operator_crds()? {
        cluster.apply_yaml(&crd).await?;
    }
    cluster.apply_yaml(&oadp_crd()?).await?;
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

    // The primary site under OADP, for real: `kubectl apply -k manifests/overlays/primary`.
    let applied = apply::apply_yaml(&client, &renderings[1].1)
        .await
        .context("manifests/overlays/primary does not apply")?;
    for object in &applied {
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or_default();
        ensure!(
            object.metadata.uid.is_some(),
            "{kind} {} was not stored",
            object.metadata.name.as_deref().unwrap_or_default()
        );
    }
    let deployment = Api::<Deployment>::namespaced(client.clone(), "openshift-adp")
        .get("replicadr-scheduler")
        .await?;
    ensure!(deployment.spec.and_then(|s| s.replicas) == Some(2));
    let policy = Api::<BackupPolicy>::namespaced(client.clone(), "openshift-adp")
        .get("example-vms")
        .await?;
    ensure!(policy.spec.paused, "the example policy is applied paused");

    // Its RBAC, asked as the ServiceAccount it is bound to.
    let scheduler = cluster
        .client_as("system:serviceaccount:openshift-adp:replicadr-scheduler")
        .await?;
    for (verb, resource) in [
        ("list", "replicadr.io/backuppolicies"),
        ("patch", "replicadr.io/backuppolicies/status"),
        ("create", "velero.io/backups"),
        ("patch", "velero.io/backups"),
        ("get", "velero.io/backupstoragelocations"),
        ("get", "secrets"),
        ("get", "configmaps"),
        ("update", "coordination.k8s.io/leases"),
        ("create", "events.k8s.io/events"),
        ("list", "persistentvolumeclaims"),
        ("list", "kubevirt.io/virtualmachines"),
        // The warm standby (scheduler-rbac-standby.yaml): its Restores, and pruning what they made.
        ("create", "velero.io/restores"),
        ("delete", "velero.io/restores"),
        ("create", "configmaps"),
        ("patch", "persistentvolumes"),
        ("delete", "persistentvolumeclaims"),
        ("delete", "kubevirt.io/virtualmachines"),
        ("delete", "cdi.kubevirt.io/datavolumes"),
    ] {
        ensure!(
            may(&scheduler, "openshift-adp", verb, resource).await?,
            "the scheduler's ServiceAccount may not {verb} {resource} in openshift-adp"
        );
    }
    for (verb, resource) in [
        ("delete", "velero.io/backups"),
        ("delete", "replicadr.io/backuppolicies"),
        ("update", "configmaps"),
        // Only the standby's resource-modifier ConfigMap may be patched, never the site map's.
        ("patch", "configmaps"),
        ("create", "velero.io/deletebackuprequests"),
        ("update", "secrets"),
        ("create", "persistentvolumes"),
    ] {
        ensure!(
            !may(&scheduler, "openshift-adp", verb, resource).await?,
            "the scheduler's ServiceAccount may {verb} {resource} in openshift-adp"
        );
    }
    Ok(())
}
