//! The two-site lab as the recovery tests use it: both sites up with the drill's workload at
//! primary, a verified backup of the drill's policy, and the `replicadr` binary run against a site.

use std::path::Path;

use replicadr_drill::{self as drill, DrillOptions, Environment};
use tokio::process::Command;

use crate::workspace::workspace_binary;

/// Both sites up (the drill's environment with `scale_vms` further VMs), the workload created at
/// primary and ready.
pub async fn sites_with_workload(
    scale_vms: usize,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Environment> {
    let options = DrillOptions {
        plugin_binary: workspace_binary("replicadr-velero-plugins")?,
        scale_vms,
        failback: false,
        kill_velero_mid_restore: false,
        velero_log_level: "info".to_owned(),
        velero_client: drill::SHIPPED_VELERO_CLIENT,
        standby: false,
    };
    let env = Box::pin(Environment::start(options, progress)).await?;
    drill::create_workload(&env.primary.client, scale_vms).await?;
    drill::wait_workload_ready(&env.primary.client, progress).await?;
    Ok(env)
}

/// `backup now` of the drill's policy at the site of `client`; its name, once it verified.
pub async fn verified_backup(
    client: &kube::Client,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<String> {
    let (backup, verification) =
        Box::pin(drill::verified_backup(client, drill::POLICY, progress)).await?;
    anyhow::ensure!(
        verification.verified,
        "backup {backup} did not verify: {verification:#?}"
    );
    Ok(backup)
}

/// `replicadr failover --site dr --yes -o json` with `options` and then `extra`, against the site
/// of `kubeconfig`: exit code, stdout (the JSON report), stderr.
pub async fn failover_at_dr(
    kubeconfig: &Path,
    options: &[&str],
    extra: &[&str],
) -> anyhow::Result<(i32, String, String)> {
    let mut args = vec!["failover", "--site", "dr", "--yes", "-o", "json"];
    args.extend_from_slice(options);
    args.extend_from_slice(extra);
    replicadr(kubeconfig, &args).await
}

/// A claim on an in-tree NFS volume, as [`bound_nfs_claim`] makes it.
#[derive(Debug, Clone)]
pub struct NfsClaim<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The PV's name.
    pub volume: &'a str,
    pub server: &'a str,
    pub path: String,
    /// Merged into the claim's metadata (annotations, ownerReferences).
    pub metadata: serde_json::Value,
}

/// Creates a Retain NFS PV and a claim naming it (both labelled as the drill's), and waits until
/// the played PV controller has bound them.
pub async fn bound_nfs_claim(client: &kube::Client, claim: NfsClaim<'_>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use kube::api::{Api, PostParams};
    use serde_json::json;
    let labels = json!({drill::workload::LABEL_DRILL: "true"});
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": claim.volume, "labels": labels},
        "spec": {
            "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "nfs": {"server": claim.server, "path": claim.path},
        },
    }))?;
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let mut metadata = json!({"name": claim.name, "namespace": claim.namespace, "labels": labels});
    if let (Some(metadata), Some(extra)) = (metadata.as_object_mut(), claim.metadata.as_object()) {
        metadata.extend(extra.clone());
    }
    let object: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": {
            "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}},
            "storageClassName": "", "volumeName": claim.volume,
        },
    }))?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), claim.namespace);
    claims.create(&PostParams::default(), &object).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_mins(1);
    while claims
        .get(claim.name)
        .await?
        .status
        .and_then(|s| s.phase)
        .as_deref()
        != Some("Bound")
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{}/{} is not Bound",
            claim.namespace,
            claim.name
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Runs `replicadr` against the site of `kubeconfig`, in the lab's Velero namespace: exit code,
/// stdout, stderr. Awaited, not blocking: the lab's TLS front of object storage runs on the
/// calling test's runtime.
pub async fn replicadr(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let output = Command::new(workspace_binary("replicadr")?)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("VELERO_NAMESPACE", replicadr_drill::VELERO_NAMESPACE)
        .output()
        .await?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Creates a Velero object (`resource`) with `spec` and waits until its phase is final.
pub async fn velero_run(
    client: &kube::Client,
    resource: &kube::core::ApiResource,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<kube::api::DynamicObject> {
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), drill::VELERO_NAMESPACE, resource);
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "velero.io/v1", "kind": resource.kind,
        "metadata": {"name": name, "namespace": drill::VELERO_NAMESPACE},
        "spec": spec,
    }))?;
    api.create(&kube::api::PostParams::default(), &object)
        .await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_mins(3);
    loop {
        let object = api.get(name).await?;
        let phase = object.data["status"]["phase"].as_str().unwrap_or_default();
        if ["Completed", "PartiallyFailed", "Failed", "FailedValidation"].contains(&phase) {
            return Ok(object);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} {name} not finished: {phase:?}",
            resource.kind
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
