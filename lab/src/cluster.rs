//! [`TestCluster`]: a real etcd and kube-apiserver on loopback, started the way envtest starts them,
//! reached through a kubeconfig with an admin token, and torn down on drop.
//!
//! Nothing else runs: no controller-manager, scheduler or kubelet. Tests play those parts by writing
//! objects and status themselves.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::apply::{self, FIELD_MANAGER};
use crate::peers::{Peer, PeerError};
use crate::pki::{ClusterPki, PkiError};
use crate::process::PeerProcess;

/// How long each peer may take to become ready unless the builder says otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_mins(1);
/// Free ports are found by binding and releasing them, so another process can take one in between;
/// a start that fails that way is retried on new ports.
const START_ATTEMPTS: usize = 3;
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Service CIDR handed to the apiserver; nothing routes it, it only has to be valid.
const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/24";

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot reserve a free port on 127.0.0.1")]
    FreePort(#[source] io::Error),
    #[error("cannot run {peer} ({})", path.display())]
    Spawn {
        peer: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{peer} exited ({status}) before it was ready; last lines of {}:\n{tail}", log.display())]
    Exited {
        peer: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{peer} is not ready after {timeout:?} (last probe: {last_probe}); last lines of {}:\n{tail}",
        log.display()
    )]
    NotReady {
        peer: &'static str,
        timeout: Duration,
        last_probe: String,
        log: PathBuf,
        tail: String,
    },
    #[error("cannot build a client from {}", path.display())]
    Client {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartError {
    /// A peer lost the race for a port reserved by [`free_ports`].
    fn is_port_conflict(&self) -> bool {
        matches!(self, StartError::Exited { tail, .. } if tail.contains("address already in use"))
    }
}

/// A real etcd + kube-apiserver on loopback, torn down on drop.
pub struct TestCluster {
    // Fields drop in order: the apiserver goes before its etcd, both before their directory.
    apiserver: PeerProcess,
    etcd: PeerProcess,
    /// The apiserver's binary, to start it again after [`TestCluster::stop_apiserver`].
    apiserver_bin: PathBuf,
    client: Client,
    ports: Ports,
    layout: Layout,
    _dir: ClusterDir,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("server", &self.server_url())
            .field("dir", &self.layout.root)
            .field("apiserver", &self.apiserver)
            .field("etcd", &self.etcd)
            .finish_non_exhaustive()
    }
}

/// Options for [`TestCluster`]; [`TestCluster::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    dir: Option<PathBuf>,
    kube_apiserver: Option<PathBuf>,
    etcd: Option<PathBuf>,
    startup_timeout: Duration,
}

/// A peer process of a running cluster, for tests that check the teardown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub name: &'static str,
    pub pid: u32,
    /// Every port the peer listens on.
    pub ports: Vec<u16>,
    /// The peer's stdout and stderr.
    pub log: PathBuf,
}

impl TestCluster {
    /// Starts a cluster in a fresh temporary directory with the binaries from [`Peer::locate`],
    /// returning once the apiserver reports `/readyz` and the `default` namespace exists.
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    /// Options: a kept directory, other binaries, another startup timeout.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            dir: None,
            kube_apiserver: None,
            etcd: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }

    /// A kubeconfig with one context: the cluster's CA and a `system:masters` token user.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.layout.kubeconfig
    }

    /// A new client read from [`Self::kubeconfig_path`], authenticated as its admin user.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(client_from_kubeconfig(&self.layout.kubeconfig).await?)
    }

    /// A client that acts as `user` (`Impersonate-User`), with the admin user's right to
    /// impersonate: every request is authorized as that user alone. A service account
    /// (`system:serviceaccount:<namespace>:<name>`) gets its groups from the API server, so the
    /// client has exactly what RBAC grants that `ServiceAccount`.
    pub async fn client_as(&self, user: &str) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.layout.kubeconfig)?;
        let mut config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.auth_info.impersonate = Some(user.to_owned());
        Ok(Client::try_from(config)?)
    }

    /// Server-side applies every object of a multi-document manifest and waits for the CRDs among
    /// them to be Established (see [`apply::apply_yaml`]).
    pub async fn apply_yaml(&self, yaml: &str) -> anyhow::Result<()> {
        apply::apply_yaml(&self.client, yaml).await?;
        Ok(())
    }

    /// Creates the namespace `name`, or leaves it as it is if it exists.
    pub async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&namespace),
        )
        .await
        .with_context(|| format!("cannot create namespace {name}"))?;
        Ok(())
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The directory holding the cluster's data, credentials, kubeconfig and peer logs.
    pub fn dir(&self) -> &Path {
        &self.layout.root
    }

    /// Kills the kube-apiserver, as a control-plane outage does: every request is refused until
    /// [`Self::restart_apiserver`]. etcd and everything stored in it stay.
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop();
    }

    /// Starts the kube-apiserver again on the same port, certificates and etcd, and returns once
    /// it is ready. A running one is stopped first.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        self.apiserver.stop();
        let mut apiserver = spawn(
            Peer::KubeApiserver,
            &self.apiserver_bin,
            &apiserver_args(&self.layout, self.ports),
            &self.layout,
        )?;
        let client = self.client.clone();
        wait_until_ready(&mut apiserver, DEFAULT_STARTUP_TIMEOUT, || {
            probe_apiserver(client.clone())
        })
        .await?;
        self.apiserver = apiserver;
        Ok(())
    }

    /// The running peers, apiserver first.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let info = |peer: &PeerProcess, ports: Vec<u16>| PeerInfo {
            name: peer.name(),
            pid: peer.pid(),
            ports,
            log: peer.log().to_owned(),
        };
        vec![
            info(&self.apiserver, vec![self.ports.apiserver]),
            info(
                &self.etcd,
                vec![self.ports.etcd_client, self.ports.etcd_peer],
            ),
        ]
    }
}

impl TestClusterBuilder {
    /// Keeps the cluster's files in `dir` (created if needed, left in place after drop) instead of a
    /// temporary directory.
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Runs this kube-apiserver instead of the located one.
    #[must_use]
    pub fn kube_apiserver(mut self, path: impl Into<PathBuf>) -> Self {
        self.kube_apiserver = Some(path.into());
        self
    }

    /// Runs this etcd instead of the located one.
    #[must_use]
    pub fn etcd(mut self, path: impl Into<PathBuf>) -> Self {
        self.etcd = Some(path.into());
        self
    }

    /// How long each peer may take to become ready.
    #[must_use]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts the cluster; see [`TestCluster::start`].
    pub async fn start(self) -> anyhow::Result<TestCluster> {
        Ok(self.start_typed().await?)
    }

    async fn start_typed(self) -> Result<TestCluster, StartError> {
        let binary = |explicit: Option<PathBuf>, peer: Peer| match explicit {
            Some(path) => peer.check(path),
            None => peer.locate(),
        };
        let etcd_bin = binary(self.etcd, Peer::Etcd)?;
        let apiserver_bin = binary(self.kube_apiserver, Peer::KubeApiserver)?;

        let dir = match self.dir {
            Some(path) => {
                std::fs::create_dir_all(&path).map_err(|source| StartError::Write {
                    path: path.clone(),
                    source,
                })?;
                ClusterDir::Kept(path)
            }
            None => ClusterDir::Temporary(
                tempfile::Builder::new()
                    .prefix("replicadr-e2e-")
                    .tempdir()
                    .map_err(|source| StartError::Write {
                        path: std::env::temp_dir(),
                        source,
                    })?,
            ),
        };
        let layout = Layout::new(dir.path());
        let pki = ClusterPki::generate()?;
        layout.write_credentials(&pki)?;

        let mut attempt = 1;
        loop {
            let ports = Ports::reserve()?;
            match start_peers(
                &layout,
                &pki,
                ports,
                &etcd_bin,
                &apiserver_bin,
                self.startup_timeout,
            )
            .await
            {
                Ok((etcd, apiserver, client)) => {
                    tracing::info!(
                        server = %format!("https://127.0.0.1:{}", ports.apiserver),
                        kubeconfig = %layout.kubeconfig.display(),
                        "test cluster ready"
                    );
                    return Ok(TestCluster {
                        apiserver,
                        etcd,
                        apiserver_bin,
                        client,
                        ports,
                        layout,
                        _dir: dir,
                    });
                }
                Err(error) if error.is_port_conflict() && attempt < START_ATTEMPTS => {
                    tracing::warn!(attempt, %error, "port taken, retrying on new ports");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Starts etcd, then the apiserver against it, then a client; on failure the started peers drop.
async fn start_peers(
    layout: &Layout,
    pki: &ClusterPki,
    ports: Ports,
    etcd_bin: &Path,
    apiserver_bin: &Path,
    timeout: Duration,
) -> Result<(PeerProcess, PeerProcess, Client), StartError> {
    // A retried attempt must not find the previous attempt's half-initialised member.
    let _ = std::fs::remove_dir_all(&layout.etcd_data);
    let mut etcd = spawn(Peer::Etcd, etcd_bin, &etcd_args(layout, ports), layout)?;
    wait_until_ready(&mut etcd, timeout, || probe_etcd(ports.etcd_client)).await?;

    write(
        &layout.kubeconfig,
        &kubeconfig_yaml(ports.apiserver, &layout.ca_cert, &pki.admin_token),
    )?;
    let client = client_from_kubeconfig(&layout.kubeconfig).await?;
    let mut apiserver = spawn(
        Peer::KubeApiserver,
        apiserver_bin,
        &apiserver_args(layout, ports),
        layout,
    )?;
    wait_until_ready(&mut apiserver, timeout, || probe_apiserver(client.clone())).await?;
    Ok((etcd, apiserver, client))
}

fn spawn(
    peer: Peer,
    program: &Path,
    args: &[String],
    layout: &Layout,
) -> Result<PeerProcess, StartError> {
    PeerProcess::spawn(peer.name(), program, args, layout.log(peer)).map_err(|source| {
        StartError::Spawn {
            peer: peer.name(),
            path: program.to_owned(),
            source,
        }
    })
}

/// Polls `probe` until it succeeds, the peer exits, or `timeout` passes.
async fn wait_until_ready<F, Fut>(
    peer: &mut PeerProcess,
    timeout: Duration,
    mut probe: F,
) -> Result<(), StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        if let Some(status) = peer.exit_status() {
            return Err(StartError::Exited {
                peer: peer.name(),
                status,
                log: peer.log().to_owned(),
                tail: peer.log_tail(),
            });
        }
        let last_probe = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(())) => {
                tracing::debug!(peer = peer.name(), elapsed = ?started.elapsed(), "peer ready");
                return Ok(());
            }
            Ok(Err(message)) => message,
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        if started.elapsed() >= timeout {
            return Err(StartError::NotReady {
                peer: peer.name(),
                timeout,
                last_probe,
                log: peer.log().to_owned(),
                tail: peer.log_tail(),
            });
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// etcd's `/health` over plain HTTP/1.0, which needs no HTTP client.
async fn probe_etcd(port: u16) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        io::Result::Ok(response)
    };
    let response = exchange.await.map_err(|error| error.to_string())?;
    if response.contains(r#""health":"true""#) {
        Ok(())
    } else {
        Err(response.lines().last().unwrap_or_default().to_owned())
    }
}

/// `/readyz`, then the `default` namespace, which a post-start hook creates and tests rely on.
async fn probe_apiserver(client: Client) -> Result<(), String> {
    let readyz = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|error| error.to_string())?;
    client
        .request_text(readyz)
        .await
        .map_err(|error| format!("/readyz: {error}"))?;
    Api::<Namespace>::all(client)
        .get("default")
        .await
        .map_err(|error| format!("namespace default: {error}"))?;
    Ok(())
}

async fn client_from_kubeconfig(path: &Path) -> Result<Client, StartError> {
    let error = |source: Box<dyn std::error::Error + Send + Sync>| StartError::Client {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| error(e.into()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| error(e.into()))?;
    Client::try_from(config).map_err(|e| error(e.into()))
}

/// The ports of one start attempt.
#[derive(Debug, Clone, Copy)]
struct Ports {
    apiserver: u16,
    etcd_client: u16,
    etcd_peer: u16,
}

impl Ports {
    /// Three distinct free ports, held together while chosen so they differ.
    fn reserve() -> Result<Self, StartError> {
        let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(StartError::FreePort);
        let listeners = [bind()?, bind()?, bind()?];
        let [apiserver, etcd_client, etcd_peer] =
            listeners.map(|listener| listener.local_addr().map_or(0, |address| address.port()));
        if [apiserver, etcd_client, etcd_peer].contains(&0) {
            return Err(StartError::FreePort(io::Error::other("no local address")));
        }
        Ok(Self {
            apiserver,
            etcd_client,
            etcd_peer,
        })
    }
}

/// Where a cluster's files live under its directory.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
    token_auth: PathBuf,
    cert_dir: PathBuf,
    etcd_data: PathBuf,
    kubeconfig: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        let pki = root.join("pki");
        Self {
            root: root.to_owned(),
            ca_cert: pki.join("ca.crt"),
            serving_cert: pki.join("apiserver.crt"),
            serving_key: pki.join("apiserver.key"),
            service_account_key: pki.join("service-account.key"),
            service_account_public_key: pki.join("service-account.pub"),
            token_auth: pki.join("token-auth.csv"),
            cert_dir: root.join("apiserver-certs"),
            etcd_data: root.join("etcd-data"),
            kubeconfig: root.join("kubeconfig"),
        }
    }

    fn log(&self, peer: Peer) -> PathBuf {
        self.root.join(format!("{}.log", peer.name()))
    }

    fn write_credentials(&self, pki: &ClusterPki) -> Result<(), StartError> {
        write(&self.ca_cert, &pki.ca_cert)?;
        write(&self.serving_cert, &pki.serving_cert)?;
        write(&self.serving_key, &pki.serving_key)?;
        write(&self.service_account_key, &pki.service_account_key)?;
        write(
            &self.service_account_public_key,
            &pki.service_account_public_key,
        )?;
        write(
            &self.token_auth,
            &format!("{},admin,admin,system:masters\n", pki.admin_token),
        )
    }
}

fn write(path: &Path, contents: &str) -> Result<(), StartError> {
    let io_error = |source| StartError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    std::fs::write(path, contents).map_err(io_error)
}

fn etcd_args(layout: &Layout, ports: Ports) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
        "--name=replicadr-e2e".to_owned(),
        format!("--data-dir={}", layout.etcd_data.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=replicadr-e2e={peer}"),
        // Throwaway data: skipping fsync makes every write (and the apiserver's start) much faster.
        "--unsafe-no-fsync=true".to_owned(),
    ]
}

fn apiserver_args(layout: &Layout, ports: Ports) -> Vec<String> {
    let path = |flag: &str, path: &Path| format!("--{flag}={}", path.display());
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={}", ports.apiserver),
        path("cert-dir", &layout.cert_dir),
        path("tls-cert-file", &layout.serving_cert),
        path("tls-private-key-file", &layout.serving_key),
        format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        path(
            "service-account-key-file",
            &layout.service_account_public_key,
        ),
        path(
            "service-account-signing-key-file",
            &layout.service_account_key,
        ),
        path("token-auth-file", &layout.token_auth),
        "--authorization-mode=RBAC".to_owned(),
        // No controller-manager creates the default ServiceAccounts this plugin would wait for.
        "--disable-admission-plugins=ServiceAccount".to_owned(),
        "--allow-privileged=true".to_owned(),
        // Priority-and-fairness bootstraps its configuration before /readyz passes; tests need none.
        "--enable-priority-and-fairness=false".to_owned(),
        "--profiling=false".to_owned(),
    ]
}

fn kubeconfig_yaml(apiserver_port: u16, ca_cert: &Path, token: &str) -> String {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "replicadr-e2e",
            "cluster": {
                "server": format!("https://127.0.0.1:{apiserver_port}"),
                "certificate-authority": ca_cert,
            },
        }],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{
            "name": "replicadr-e2e",
            "context": {"cluster": "replicadr-e2e", "user": "admin", "namespace": "default"},
        }],
        "current-context": "replicadr-e2e",
    });
    serde_yaml_ng::to_string(&kubeconfig).expect("a JSON value always serialises to YAML")
}

/// The cluster's directory: removed on drop unless the caller chose it.
#[derive(Debug)]
enum ClusterDir {
    Temporary(TempDir),
    Kept(PathBuf),
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            ClusterDir::Temporary(dir) => dir.path(),
            ClusterDir::Kept(path) => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_parses_with_kube() {
        let yaml = kubeconfig_yaml(6443, Path::new("/tmp/x/ca.crt"), "abc");
        let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kube parses it");
        let cluster = kubeconfig.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/tmp/x/ca.crt")
        );
        let user = kubeconfig.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.token.is_some());
        assert_eq!(kubeconfig.current_context.as_deref(), Some("replicadr-e2e"));
    }

    #[test]
    fn reserved_ports_are_distinct() {
        let ports = Ports::reserve().expect("ports");
        assert_ne!(ports.apiserver, ports.etcd_client);
        assert_ne!(ports.apiserver, ports.etcd_peer);
        assert_ne!(ports.etcd_client, ports.etcd_peer);
    }
}
