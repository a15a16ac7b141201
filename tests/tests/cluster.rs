//! The harness against the real peers: a cluster starts, serves namespaces, CRDs and custom objects,
//! and leaves no process or port behind when dropped. Failure reporting is checked with stand-in
//! binaries, which is the only way to make a peer fail on purpose.

use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use replicadr_e2e::apply::ApplyError;
use replicadr_e2e::peers::Peer;
use replicadr_e2e::pki::ClusterPki;
use replicadr_e2e::{StartError, TestCluster};

const WIDGET_CRD_AND_INSTANCE: &str = r"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.replicadr.io
spec:
  group: e2e.replicadr.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
---
apiVersion: e2e.replicadr.io/v1
kind: Widget
metadata: {name: first, namespace: harness}
spec: {size: 3}
";

#[tokio::test]
async fn cluster_serves_crds_and_custom_objects_then_tears_down() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let client = cluster.client().await?;

    let version = client.apiserver_version().await?;
    assert_eq!(
        version.git_version,
        Peer::KubeApiserver.pinned_version()?,
        "apiserver reports the pinned version (ldflags of hack/build-kube-peers.sh)"
    );

    cluster.create_namespace("harness").await?;
    cluster.create_namespace("harness").await?; // idempotent
    Api::<Namespace>::all(client.clone()).get("harness").await?;

    // The Widget follows its CRD in one manifest: apply must wait for the CRD in between.
    cluster.apply_yaml(WIDGET_CRD_AND_INSTANCE).await?;
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "harness",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("e2e.replicadr.io", "v1", "Widget")),
    );
    let listed = widgets.list(&ListParams::default()).await?;
    let names: Vec<_> = listed.iter().map(|w| w.metadata.name.as_deref()).collect();
    assert_eq!(names, [Some("first")]);
    assert_eq!(listed.items[0].data["spec"]["size"], 3);

    // Re-applying a changed manifest updates in place.
    cluster
        .apply_yaml(&WIDGET_CRD_AND_INSTANCE.replace("size: 3", "size: 5"))
        .await?;
    assert_eq!(widgets.get("first").await?.data["spec"]["size"], 5);

    let unknown = cluster
        .apply_yaml("apiVersion: nowhere.example/v1\nkind: Gadget\nmetadata: {name: g}\n")
        .await
        .expect_err("no such kind");
    assert!(
        matches!(
            unknown.downcast_ref::<ApplyError>(),
            Some(ApplyError::UnknownKind { number: 1, .. })
        ),
        "{unknown:#}"
    );

    let kubeconfig = std::fs::read_to_string(cluster.kubeconfig_path())?;
    assert!(kubeconfig.contains(&cluster.server_url()), "{kubeconfig}");
    assert_server_certificate_is_verified(cluster.kubeconfig_path()).await?;

    let peers = cluster.peers();
    let dir = cluster.dir().to_owned();
    for peer in &peers {
        assert!(process_exists(peer.pid), "{} is running", peer.name);
        for &port in &peer.ports {
            assert!(port_accepts(port), "{} listens on {port}", peer.name);
        }
    }
    drop(cluster);

    for peer in &peers {
        assert!(
            !process_exists(peer.pid),
            "{} (pid {}) is gone",
            peer.name,
            peer.pid
        );
        for &port in &peer.ports {
            assert!(
                !port_accepts(port),
                "{} no longer listens on {port}",
                peer.name
            );
        }
    }
    assert!(
        !dir.exists(),
        "temporary directory {} removed",
        dir.display()
    );
    Ok(())
}

#[tokio::test]
async fn missing_binary_names_the_expected_path_and_the_build_script() {
    let error = TestCluster::builder()
        .etcd("/nonexistent/etcd")
        .start()
        .await
        .expect_err("no etcd there");
    let message = format!("{error:#}");
    assert!(message.contains("/nonexistent/etcd"), "{message}");
    assert!(message.contains("hack/build-kube-peers.sh"), "{message}");
}

#[tokio::test]
async fn peer_that_exits_during_startup_reports_its_exit_and_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let failing = dir.path().join("fake-etcd");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho \"fake etcd: refusing $1\" >&2\nexit 3\n",
    )?;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755))?;

    let error = TestCluster::builder()
        .etcd(&failing)
        .kube_apiserver(&failing) // never reached
        .dir(dir.path().join("cluster"))
        .start()
        .await
        .expect_err("etcd fails");
    let Some(StartError::Exited {
        peer, status, tail, ..
    }) = error.downcast_ref::<StartError>()
    else {
        panic!("unexpected error: {error:#}");
    };
    assert_eq!((*peer, status.code()), ("etcd", Some(3)));
    assert!(
        tail.contains("fake etcd: refusing --name=replicadr-e2e"),
        "{tail}"
    );
    assert!(
        format!("{error}").contains("fake etcd: refusing"),
        "{error}"
    );
    Ok(())
}

/// The kubeconfig's CA is really checked (rustls verifies the apiserver's IP SAN): with another CA,
/// the same kubeconfig fails.
async fn assert_server_certificate_is_verified(kubeconfig: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, ClusterPki::generate()?.ca_cert)?;
    let mut config = Kubeconfig::read_from(kubeconfig)?;
    for cluster in config
        .clusters
        .iter_mut()
        .filter_map(|named| named.cluster.as_mut())
    {
        cluster.certificate_authority = Some(other_ca.display().to_string());
    }
    let client = Client::try_from(
        Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?,
    )?;
    let error = client.apiserver_version().await.expect_err("untrusted CA");
    assert!(
        format!("{error:?}").contains("InvalidCertificate"),
        "{error:?}"
    );
    Ok(())
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn port_accepts(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}
