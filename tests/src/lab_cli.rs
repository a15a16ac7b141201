//! The `replicadr` binary run against one site of the two-site lab.

use std::path::Path;

use tokio::process::Command;

use crate::workspace::workspace_binary;

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
