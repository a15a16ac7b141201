//! [`BackupEnv`]: what the scheduler's end-to-end tests run against — a real kube-apiserver with
//! Velero's CRDs (as the pinned `velero install --crds-only` writes them), the BackupPolicy CRD
//! from `manifests/`, the tests' KubeVirt and CSI snapshot CRDs (`tests/crds/`), a real S3
//! server with a bucket, a BackupStorageLocation and credentials Secret pointing at it, and the
//! site map ConfigMap. [`BackupEnv::complete_backup`] plays Velero's part: it uploads a backup's
//! files in Velero's layout and writes the Backup's final status.

use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use replicadr_scheduler::active_site::{self, Record, Takeover};
use replicadr_scheduler::policy::BackupPolicy;
use replicadr_scheduler::velero::{self, BackupView};
use serde_json::json;

use crate::TestCluster;
use crate::s3::S3Server;

/// The KubeVirt, CDI `DataVolume` and CSI snapshot CRDs the tests install.
pub const WORKLOAD_CRDS: [&str; 6] = replicadr_lab::crds::WORKLOAD;

pub use replicadr_lab::velero::velero_crds;
use replicadr_lab::velero::{
    ObjectStorage, put_credentials, put_plugin_config, put_storage_location,
};

/// The BackupPolicy CRD as shipped.
pub const POLICY_CRD: &str = include_str!("../../manifests/base/crds/backuppolicies.yaml");

/// The scheduler's `Role`, `ClusterRole` and bindings as shipped (for the `ServiceAccount`
/// `velero/replicadr-scheduler`).
pub const SCHEDULER_RBAC: &str = include_str!("../../manifests/base/scheduler-rbac.yaml");
/// The user the API server sees for the scheduler's `ServiceAccount` in namespace `velero`.
pub const SCHEDULER_USER: &str = "system:serviceaccount:velero:replicadr-scheduler";

/// The bucket every test's BackupStorageLocation uses.
pub const BUCKET: &str = "velero-backups";
/// The BSL's prefix.
pub const PREFIX: &str = "site-a";

/// A cluster and an object store set up for the scheduler.
pub struct BackupEnv {
    pub cluster: TestCluster,
    pub s3: S3Server,
    pub client: Client,
    /// The Velero namespace.
    pub namespace: String,
    /// The scheduler's client, once [`Self::scheduler_client`] has set up its RBAC.
    scheduler: tokio::sync::OnceCell<Client>,
}

impl std::fmt::Debug for BackupEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupEnv")
            .field("cluster", &self.cluster)
            .field("s3", &self.s3)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl BackupEnv {
    /// Starts everything; `namespace` is the Velero namespace.
    pub async fn start(namespace: &str) -> anyhow::Result<Self> {
        let (cluster, s3) = tokio::try_join!(TestCluster::start(), S3Server::start())?;
        let client = cluster.client().await?;
        cluster
            .apply_yaml(&velero_crds()?)
            .await
            .context("velero crds")?;
        for crds in WORKLOAD_CRDS {
            cluster.apply_yaml(crds).await.context("workload crds")?;
        }
        cluster.apply_yaml(POLICY_CRD).await.context("policy crd")?;
        cluster.create_namespace(namespace).await?;
        cluster.create_namespace("vms").await?;
        s3.create_bucket(BUCKET)?;
        let env = Self {
            cluster,
            s3,
            client,
            namespace: namespace.to_owned(),
            scheduler: tokio::sync::OnceCell::new(),
        };
        env.put_storage_location("default", BUCKET, Some(("cloud-credentials", "cloud")))
            .await?;
        env.put_credentials("cloud-credentials", "cloud", &env.s3.credentials_file())
            .await?;
        env.put_site_map(replicadr_lab::fixture::SITE_MAP).await?;
        // As at installation: the primary is the active site.
        active_site::activate(&env.client, namespace, "primary", None, Timestamp::now())
            .await
            .context("replicadr activate --site primary")?;
        Ok(env)
    }

    /// The active-site record of the default storage location.
    pub async fn active_site_record(&self) -> anyhow::Result<Record> {
        Ok(Record::open(&self.client, &self.namespace, None, "the test").await?)
    }

    /// Makes `site` the active one, as a failover or failback to it does.
    pub async fn make_active(&self, site: &str, takeover: Takeover) -> anyhow::Result<()> {
        self.active_site_record()
            .await?
            .take_over(site, takeover, None, Timestamp::now())
            .await?;
        Ok(())
    }

    /// Writes `key` of the default location through the S3 API, as a client other than Velero
    /// would (s3s-fs keeps checksums of what it was sent: a file changed beside it no longer reads).
    pub async fn put_through_s3(&self, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let verifier =
            replicadr_scheduler::verify::Verifier::new(self.client.clone(), &self.namespace);
        let location = verifier.storage_location_named(None, "the test").await?;
        verifier
            .open_store(&location)
            .await?
            .put_json(key, bytes.to_vec())
            .await?;
        Ok(())
    }

    /// The object key of the active-site record.
    pub fn active_site_key() -> String {
        format!("{PREFIX}/metadata/{}", active_site::RECORD_FILE)
    }

    /// Creates or replaces a BackupStorageLocation pointing at the test S3 server.
    pub async fn put_storage_location(
        &self,
        name: &str,
        bucket: &str,
        credential: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        let endpoint = self.s3.endpoint();
        let storage = ObjectStorage {
            endpoint: &endpoint,
            bucket,
            prefix: PREFIX,
            ca_cert: None,
        };
        put_storage_location(&self.client, &self.namespace, name, &storage, credential).await?;
        self.set_storage_location_phase(name, "Available").await
    }

    /// Writes a BackupStorageLocation's `status.phase`, as Velero's validation would.
    pub async fn set_storage_location_phase(&self, name: &str, phase: &str) -> anyhow::Result<()> {
        Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &velero::storage_location_resource(),
        )
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await?;
        Ok(())
    }

    /// Creates or replaces a credentials Secret.
    pub async fn put_credentials(&self, name: &str, key: &str, text: &str) -> anyhow::Result<()> {
        put_credentials(&self.client, &self.namespace, name, key, text).await
    }

    /// Creates or replaces the plugin ConfigMap's site map; the local site is `primary`.
    pub async fn put_site_map(&self, yaml: &str) -> anyhow::Result<()> {
        put_plugin_config(
            &self.client,
            &self.namespace,
            &[("siteMap", yaml), ("localSite", "primary")],
        )
        .await
    }

    /// Makes this cluster the site `site` (the plugin ConfigMap's `localSite`), with the fixture
    /// site map.
    pub async fn put_local_site(&self, site: &str) -> anyhow::Result<()> {
        put_plugin_config(
            &self.client,
            &self.namespace,
            &[
                ("siteMap", replicadr_lab::fixture::SITE_MAP),
                ("localSite", site),
            ],
        )
        .await
    }

    /// A client with exactly the scheduler's rights: the `ServiceAccount` `replicadr-scheduler` and
    /// the shipped RBAC are created, and the client impersonates that `ServiceAccount`. Needs the
    /// Velero namespace the shipped RBAC names, `velero`.
    /// The first call creates them; later calls return the same client.
    pub async fn scheduler_client(&self) -> anyhow::Result<Client> {
        let client = self
            .scheduler
            .get_or_try_init(|| self.install_scheduler_rbac())
            .await?;
        Ok(client.clone())
    }

    async fn install_scheduler_rbac(&self) -> anyhow::Result<Client> {
        anyhow::ensure!(
            self.namespace == "velero",
            "the shipped RBAC is for namespace velero, not {}",
            self.namespace
        );
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "replicadr-scheduler", "namespace": "velero"}});
        self.cluster.apply_yaml(&account.to_string()).await?;
        self.cluster.apply_yaml(SCHEDULER_RBAC).await?;
        let client = self.cluster.client_as(SCHEDULER_USER).await?;
        // The authorizer reads RBAC from its informers: wait until the new rules are seen.
        let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), "velero");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Err(error) = policies.list(&ListParams::default().limit(1)).await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the scheduler's RBAC does not take effect: {error}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(client)
    }

    /// Creates a BackupPolicy from its spec.
    pub async fn create_policy(&self, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
        let policy: BackupPolicy = serde_json::from_value(json!({
            "apiVersion": "replicadr.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))?;
        self.policies()
            .create(&PostParams::default(), &policy)
            .await?;
        Ok(())
    }

    /// The BackupPolicy API.
    pub fn policies(&self) -> Api<BackupPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Backup API.
    pub fn backups(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &velero::backup_resource(),
        )
    }

    /// Every Backup, sorted by name.
    pub async fn backup_views(&self) -> anyhow::Result<Vec<BackupView>> {
        let mut views: Vec<BackupView> = self
            .backups()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(BackupView::from_object)
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    /// The names of every Backup, sorted.
    pub async fn backup_names(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .backup_views()
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The object key of a backup's file.
    pub fn key(backup: &str, file: &str) -> String {
        format!("{PREFIX}/backups/{backup}/{file}")
    }

    /// Plays Velero: uploads `tarball` and `resource_list` with the backup's other files, then
    /// marks the Backup `phase` with start and completion times.
    pub async fn complete_backup(
        &self,
        name: &str,
        tarball: &[u8],
        resource_list: &[u8],
        phase: &str,
        started: Timestamp,
    ) -> anyhow::Result<()> {
        let backup = self.backups().get(name).await?;
        self.s3.put(
            BUCKET,
            &Self::key(name, "velero-backup.json"),
            &serde_json::to_vec(&backup)?,
        )?;
        self.s3
            .put(BUCKET, &Self::key(name, &format!("{name}.tar.gz")), tarball)?;
        self.s3.put(
            BUCKET,
            &Self::key(name, &format!("{name}-resource-list.json.gz")),
            resource_list,
        )?;
        self.s3.put(
            BUCKET,
            &Self::key(name, &format!("{name}-logs.gz")),
            &replicadr_lab::fixture::gzip(b"log\n"),
        )?;
        self.set_phase(name, phase, Some(started)).await
    }

    /// Writes a Backup's `status.phase`; with `started`, also its start time and a completion time
    /// one second later.
    pub async fn set_phase(
        &self,
        name: &str,
        phase: &str,
        started: Option<Timestamp>,
    ) -> anyhow::Result<()> {
        let mut status = json!({"phase": phase});
        if let Some(started) = started {
            status["startTimestamp"] = json!(started.to_string());
            status["completionTimestamp"] = json!((started + Duration::from_secs(1)).to_string());
        }
        self.backups()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
        Ok(())
    }

    /// Waits until `check` holds for the policy, up to `timeout`.
    pub async fn wait_policy<F>(
        &self,
        name: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<BackupPolicy>
    where
        F: FnMut(&BackupPolicy) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let policy = self.policies().get(name).await?;
            if check(&policy) {
                return Ok(policy);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "policy {name} did not reach the expected state in {timeout:?}; status: {}",
                    serde_json::to_string_pretty(&policy.status)?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `check` holds for the backup, up to `timeout`.
    pub async fn wait_backup<F>(
        &self,
        name: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<BackupView>
    where
        F: FnMut(&BackupView) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(object) = self.backups().get_opt(name).await? {
                let view = BackupView::from_object(&object);
                if check(&view) {
                    return Ok(view);
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "backup {name} did not reach the expected state in {timeout:?}: {view:?}"
                    );
                }
            } else if tokio::time::Instant::now() > deadline {
                anyhow::bail!("backup {name} does not exist after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the real Velero server for this environment's namespace with velero-plugin-for-aws
    /// and the project's plugins (`cargo build -p replicadr-velero-plugins`), and waits until it
    /// has validated the BackupStorageLocation (`Available`).
    pub async fn start_velero(&self) -> anyhow::Result<crate::velero::VeleroServer> {
        let plugins = [
            crate::velero::plugin_for_aws_binary()?,
            crate::workspace::workspace_binary("replicadr-velero-plugins")?,
        ];
        let mut velero = crate::velero::VeleroServer::start(
            self.cluster.kubeconfig_path(),
            &self.namespace,
            &plugins,
        )?;
        let locations: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &velero::storage_location_resource(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
        loop {
            if let Some(status) = velero.exited() {
                anyhow::bail!("velero exited ({status}):\n{}", velero.log_tail());
            }
            let location = locations.get("default").await?;
            if location.data.pointer("/status/phase") == Some(&json!("Available")) {
                return Ok(velero);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "velero never marked the location Available:\n{}",
                    velero.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
