//! The built plugin binary over its real protocol: started the way go-plugin starts it, spoken to
//! over the socket it announces. Actions that need the cluster are covered in the e2e crate,
//! against a real kube-apiserver and Velero's own client.

mod support;

use std::process::Command;
use std::time::Duration;

use replicadr_proto::generated::{
    Empty, RestoreItemActionAppliesToRequest, RestoreItemActionExecuteRequest,
    plugin_lister_client::PluginListerClient, restore_item_action_client::RestoreItemActionClient,
};
use replicadr_proto::goplugin::{
    grpc_controller_client::GrpcControllerClient, grpc_stdio_client::GrpcStdioClient,
};
use support::{BINARY, Plugin};

const PV_SITE_REMAP: &str = "replicadr.io/pv-site-remap";

fn pv_json() -> Vec<u8> {
    br#"{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"pv-1"},"spec":{"nfs":{"server":"nfs-a.example.com","path":"/exports/vms/a"}}}"#.to_vec()
}

#[tokio::test]
async fn lists_its_plugins_with_argv0_as_the_command() {
    let plugin = Plugin::start();
    let listed = PluginListerClient::new(plugin.channel().await)
        .list_plugins(Empty {})
        .await
        .expect("ListPlugins")
        .into_inner()
        .plugins;
    let kinds: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|p| (p.command.as_str(), p.kind.as_str(), p.name.as_str()))
        .collect();
    // Velero's own order: kind (BIA, BIAv2, …, RIA), then name.
    assert_eq!(
        kinds,
        vec![
            (BINARY, "BackupItemAction", "replicadr.io/pv-retain"),
            (BINARY, "BackupItemActionV2", "replicadr.io/kubevirt-backup"),
            (BINARY, "BackupItemActionV2", "replicadr.io/snapshot-to-pvc"),
            (BINARY, "RestoreItemAction", "replicadr.io/kubevirt-restore"),
            (BINARY, "RestoreItemAction", PV_SITE_REMAP),
        ]
    );
}

#[tokio::test]
async fn health_reports_the_plugin_service_serving() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let plugin = Plugin::start();
    let response = HealthClient::new(plugin.channel().await)
        .check(HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn applies_to_persistent_volumes_with_no_namespace_filter() {
    let plugin = Plugin::start();
    let selector = RestoreItemActionClient::new(plugin.channel().await)
        .applies_to(RestoreItemActionAppliesToRequest {
            plugin: PV_SITE_REMAP.into(),
        })
        .await
        .expect("AppliesTo")
        .into_inner()
        .resource_selector
        .expect("selector");
    assert_eq!(selector.included_resources, vec!["persistentvolumes"]);
    assert!(selector.included_namespaces.is_empty() && selector.excluded_namespaces.is_empty());
}

#[tokio::test]
async fn unknown_plugin_names_are_errors_naming_them() {
    let plugin = Plugin::start();
    let mut client = RestoreItemActionClient::new(plugin.channel().await);
    let status = client
        .execute(RestoreItemActionExecuteRequest {
            plugin: "example.io/nope".into(),
            item: pv_json(),
            ..Default::default()
        })
        .await
        .expect_err("unknown plugin");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("\"example.io/nope\"")
            && status.message().contains(PV_SITE_REMAP),
        "{}",
        status.message()
    );
    let status = client
        .applies_to(RestoreItemActionAppliesToRequest {
            plugin: "example.io/nope".into(),
        })
        .await
        .expect_err("unknown plugin");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn without_a_cluster_execute_fails_clearly_and_the_plugin_keeps_serving() {
    let plugin = Plugin::start();
    let mut client = RestoreItemActionClient::new(plugin.channel().await);
    for _ in 0..2 {
        let status = client
            .execute(RestoreItemActionExecuteRequest {
                plugin: PV_SITE_REMAP.into(),
                item: pv_json(),
                ..Default::default()
            })
            .await
            .expect_err("no cluster");
        assert!(
            status.message().contains("Kubernetes"),
            "{}",
            status.message()
        );
    }
    // Still alive and answering.
    PluginListerClient::new(plugin.channel().await)
        .list_plugins(Empty {})
        .await
        .expect("still serving");
}

#[tokio::test]
async fn shutdown_replies_then_exits_within_a_second_with_one_stdout_line() {
    let plugin = Plugin::start();
    let channel = plugin.channel().await;
    // Velero opens the stdio stream at connect and holds it; it must not delay the exit.
    let mut stdio = GrpcStdioClient::new(channel.clone())
        .stream_stdio(())
        .await
        .expect("stdio")
        .into_inner();
    GrpcControllerClient::new(channel)
        .shutdown(replicadr_proto::goplugin::Empty {})
        .await
        .expect("Shutdown replies");
    assert!(
        stdio.message().await.map_or(true, |m| m.is_none()),
        "stdio stream carried data"
    );
    let (elapsed, rest_of_stdout, stderr) = plugin.wait_exit(Duration::from_secs(2));
    assert!(elapsed < Duration::from_secs(1), "exit took {elapsed:?}");
    assert_eq!(rest_of_stdout, "", "stdout must carry only the handshake");
    for line in stderr.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(
            value["@message"].is_string() && value["@level"].is_string(),
            "{line}"
        );
        assert!(
            ["trace", "debug", "info", "warn", "error"]
                .contains(&value["@level"].as_str().unwrap_or_default()),
            "{line}"
        );
    }
}

#[tokio::test]
async fn malformed_items_are_rejected_with_the_json_error() {
    let plugin = Plugin::start();
    let mut client = RestoreItemActionClient::new(plugin.channel().await);
    let status = client
        .execute(RestoreItemActionExecuteRequest {
            plugin: PV_SITE_REMAP.into(),
            item: b"{not json".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("bad item");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("request field item is not a valid JSON object")
            && status.message().contains("line 1 column 2"),
        "{}",
        status.message()
    );
    let status = client
        .execute(RestoreItemActionExecuteRequest {
            plugin: PV_SITE_REMAP.into(),
            item: b"[1]".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("not an object");
    assert!(
        status.message().contains("expected a JSON object"),
        "{}",
        status.message()
    );
}

#[test]
fn run_by_hand_it_explains_itself_and_exits_1() {
    let output = Command::new(BINARY)
        .env_remove("VELERO_PLUGIN")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not meant to be run by hand") && stderr.contains("VELERO_PLUGIN=hello"),
        "{stderr}"
    );
    let wrong = Command::new(BINARY)
        .env("VELERO_PLUGIN", "goodbye")
        .output()
        .expect("runs");
    assert_eq!(wrong.status.code(), Some(1));
}

#[test]
fn refuses_hosts_without_protocol_version_2() {
    let output = Command::new(BINARY)
        .env("VELERO_PLUGIN", "hello")
        .env("PLUGIN_PROTOCOL_VERSIONS", "1")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only version 2"));
}

#[test]
fn install_mode_copies_the_binary_for_velero_init_containers() {
    let target = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BINARY)
        .env_remove("VELERO_PLUGIN")
        .arg("install")
        .arg(target.path())
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty());
    let installed = target.path().join("replicadr-velero-plugins");
    assert_eq!(
        std::fs::read(&installed).expect("installed"),
        std::fs::read(BINARY).expect("binary")
    );
    let missing = Command::new(BINARY)
        .env_remove("VELERO_PLUGIN")
        .args(["install", "/nonexistent/dir"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/dir"));
}
