//! The plugin-config convention against a real kube-apiserver, through the real binary: the
//! ConfigMap is found by label in Velero's namespace, two matching ConfigMaps are refused as Velero
//! refuses them, and each plugin process reads the configuration afresh.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use replicadr_e2e::TestCluster;
use replicadr_e2e::plugin::PluginProcess;
use replicadr_e2e::workspace::workspace_binary;
use replicadr_proto::generated::RestoreItemActionExecuteRequest;
use replicadr_proto::generated::restore_item_action_client::RestoreItemActionClient;
use serde_json::{Value, json};

const VELERO_NAMESPACE: &str = "velero";
const PV_SITE_REMAP: &str = "replicadr.io/pv-site-remap";

fn config_map(name: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"velero.io/plugin-config": "", PV_SITE_REMAP: "RestoreItemAction"}
        },
        "data": {
            "localSite": "dr",
            "siteMap": "sites: [primary, dr]\nexports:\n  - name: vm-disks\n    primary: {server: nfs-a.example.com, path: /exports/vms}\n    dr: {server: 10.20.0.5, path: /replica/vms}\n"
        }
    }))?)
}

/// One restore's worth of plugin process: Execute on an in-tree NFS PV.
async fn restore_pv(cluster: &TestCluster) -> anyhow::Result<Result<Value, tonic::Status>> {
    let plugin = PluginProcess::start(
        &workspace_binary("replicadr-velero-plugins")?,
        cluster.kubeconfig_path(),
        VELERO_NAMESPACE,
    )?;
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"},
        "spec": {"nfs": {"server": "nfs-a.example.com", "path": "/exports/vms/disk-1"}}
    });
    let response = RestoreItemActionClient::new(plugin.channel().await?)
        .execute(RestoreItemActionExecuteRequest {
            plugin: PV_SITE_REMAP.into(),
            item: serde_json::to_vec(&pv)?,
            ..Default::default()
        })
        .await;
    Ok(match response {
        Ok(response) => Ok(serde_json::from_slice(&response.into_inner().item)?),
        Err(status) => Err(status),
    })
}

#[tokio::test]
async fn two_config_maps_with_the_plugin_label_are_refused_by_name() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    cluster.create_namespace(VELERO_NAMESPACE).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client().await?, VELERO_NAMESPACE);
    for name in ["replicadr-plugins", "replicadr-plugins-old"] {
        config_maps
            .create(&PostParams::default(), &config_map(name)?)
            .await?;
    }

    let status = restore_pv(&cluster)
        .await?
        .expect_err("two ConfigMaps are ambiguous");
    for expected in [
        "found 2 ConfigMaps",
        "replicadr-plugins, replicadr-plugins-old",
        "velero.io/plugin-config,replicadr.io/pv-site-remap=RestoreItemAction",
    ] {
        assert!(
            status.message().contains(expected),
            "{expected:?} missing from {}",
            status.message()
        );
    }

    // Remove one: the next restore (a new plugin process) reads the remaining one.
    config_maps
        .delete("replicadr-plugins-old", &DeleteParams::default())
        .await?;
    let pv = restore_pv(&cluster)
        .await?
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    assert_eq!(
        pv["spec"]["nfs"],
        json!({"server": "10.20.0.5", "path": "/replica/vms/disk-1"})
    );
    Ok(())
}

#[tokio::test]
async fn a_config_map_in_another_namespace_is_not_used() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    cluster.create_namespace(VELERO_NAMESPACE).await?;
    cluster.create_namespace("elsewhere").await?;
    Api::<ConfigMap>::namespaced(cluster.client().await?, "elsewhere")
        .create(&PostParams::default(), &config_map("replicadr-plugins")?)
        .await?;
    let status = restore_pv(&cluster)
        .await?
        .expect_err("no ConfigMap in Velero's namespace");
    assert!(
        status.message().contains("none was found")
            && status.message().contains("namespace velero"),
        "{}",
        status.message()
    );
    Ok(())
}
