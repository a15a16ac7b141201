//! Conformance: the plugin binary driven by Velero's own client-side plugin code (the process
//! registry, plugin manager and go-plugin client the Velero server runs), built against each
//! pinned Velero release, with the plugin's ConfigMap served by a real kube-apiserver.
//! The Go side is tests/conformance; hack/build-conformance.sh builds it per release.

use std::process::Command;

use anyhow::{Context as _, bail};
use replicadr_e2e::TestCluster;
use replicadr_e2e::peers::cache_dir;
use replicadr_e2e::workspace::{pinned, repo_root, workspace_binary};

/// Builds (or reuses) the harness for every pinned Velero client version: `(version, binary)`.
fn harness_binaries() -> anyhow::Result<Vec<(String, String)>> {
    let output = Command::new("bash")
        .arg(repo_root().join("hack/build-conformance.sh"))
        .output()
        .context("cannot run hack/build-conformance.sh")?;
    if !output.status.success() {
        bail!(
            "hack/build-conformance.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(version, path)| (version.to_owned(), path.to_owned()))
        .collect())
}

#[tokio::test]
async fn velero_clients_drive_the_plugin() -> anyhow::Result<()> {
    let plugin = workspace_binary("replicadr-velero-plugins")?;
    let velero = cache_dir()?
        .join(format!("velero-{}", pinned("VELERO_VERSION")?))
        .join("velero");
    let harnesses = harness_binaries()?;
    let expected: Vec<String> = pinned("VELERO_CLIENT_VERSIONS")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let built: Vec<String> = harnesses.iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(built, expected, "a harness for every pinned Velero release");

    let mut failures = Vec::new();
    for (version, harness) in &harnesses {
        // A fresh API server per release, so each run owns the plugin ConfigMap in `velero`
        // (the namespace the harness also passes as `--namespace`, as the Velero server would).
        let cluster = TestCluster::start().await?;
        let mut command = Command::new(harness);
        command
            .args(["-test.v", "-test.count=1"])
            .env("REPLICADR_PLUGIN_BINARY", &plugin)
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("VELERO_NAMESPACE", "velero");
        // Velero's built-ins as the reference server only for the release they come from: a newer
        // server lists plugin kinds an older client rejects.
        if velero.is_file() && *version == pinned("VELERO_VERSION")? {
            command.env("REPLICADR_VELERO_BUILTINS", &velero);
        }
        let output = command
            .output()
            .with_context(|| format!("cannot run {harness}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!(
            "===== Velero {version} client =====\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() || !stdout.contains("\nPASS") {
            failures.push(version.clone());
        }
    }
    assert!(
        failures.is_empty(),
        "conformance failed against Velero client {failures:?}; see the output above"
    );
    Ok(())
}
