//! Verification of one finished Velero backup from its object storage: the files Velero writes
//! are there, the tarball reads to its end, it keeps the backup invariants a failover needs
//! ([`replicadr_core::invariants`], the same checks and reasons as `replicadr plan`: every PVC bound
//! to its PV, every VolumeSnapshot's replica PVC, every VM's disks, NFS PVs as Retain and mappable
//! to every site by the restore plugin's own rewrite), every PVC in scope and every VolumeSnapshot
//! of a backed-up claim at the site the backup was taken is in it, and no volume data was moved.
//! Nothing here writes to the cluster; [`crate::publish`] does.

pub mod archive;
pub mod report;
pub mod store;

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt as _};
use replicadr_core::invariants::is_replicated_at_backup;
use replicadr_core::sitemap::{SiteMap, SiteName};
use replicadr_core::wire::{PHASE_PARTIALLY_FAILED, POINTER_SNAPSHOT_SOURCE_PVC};
use tokio_util::io::SyncIoBridge;

pub use report::{Finding, Findings, LiveScope, Reason, Report, Stats};

use crate::backup_site::{self, Origin};
use crate::policy::{DEFAULT_SITE_MAP_CONFIGMAP, DEFAULT_SITE_MAP_KEY};
use crate::velero::{self, BackupView, CaCert, PhaseClass, SecretKeyRef, StorageLocation};
use archive::{Inventory, LiveVolumeSnapshot, PvChecks};
use store::{CaBundle, ObjectStore, StoreError};

/// Velero's default credentials Secret and key (what `velero install --secret-file` creates).
pub const DEFAULT_CREDENTIALS_SECRET: &str = "cloud-credentials";
/// The key of the credentials file in that Secret.
pub const DEFAULT_CREDENTIALS_KEY: &str = "cloud";

/// Why a verification could not run at all (as opposed to finding problems).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("backup {namespace}/{name} does not exist")]
    BackupNotFound { namespace: String, name: String },
    #[error("backup {name} has not finished (phase {phase})")]
    NotFinished { name: String, phase: String },
    #[error("cannot read backup {name}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Where the site map lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteMapSource {
    pub configmap: String,
    pub key: String,
}

impl Default for SiteMapSource {
    fn default() -> Self {
        Self {
            configmap: DEFAULT_SITE_MAP_CONFIGMAP.to_owned(),
            key: DEFAULT_SITE_MAP_KEY.to_owned(),
        }
    }
}

/// What the site map's ConfigMap says: the site map, and which site this is (`localSite`).
#[derive(Debug)]
struct SiteView {
    map: Result<SiteMap, String>,
    local: Result<SiteName, String>,
}

/// Verifies backups in one Velero namespace.
#[derive(Clone)]
pub struct Verifier {
    client: Client,
    namespace: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for backups in the Velero namespace `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// Reads the Backup `name`.
    pub async fn backup(&self, name: &str) -> Result<(DynamicObject, BackupView), VerifyError> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &velero::backup_resource(),
        );
        match api.get_opt(name).await {
            Ok(Some(object)) => {
                let view = BackupView::from_object(&object);
                Ok((object, view))
            }
            Ok(None) => Err(VerifyError::BackupNotFound {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
            }),
            Err(source) => Err(VerifyError::Kube {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Verifies the finished backup `name` with the site map from `site_map`.
    #[tracing::instrument(skip(self, site_map), fields(namespace = %self.namespace))]
    pub async fn verify(
        &self,
        name: &str,
        site_map: &SiteMapSource,
    ) -> Result<Report, VerifyError> {
        let started = Instant::now();
        let (_, backup) = self.backup(name).await?;
        let mut findings = Findings::default();
        let mut stats = Stats::default();
        match backup.class {
            PhaseClass::Running => {
                return Err(VerifyError::NotFinished {
                    name: name.to_owned(),
                    phase: backup.phase.clone().unwrap_or_else(|| "New".into()),
                });
            }
            PhaseClass::Succeeded => {}
            PhaseClass::Failed | PhaseClass::Deleting => {
                let phase = backup.phase.clone().unwrap_or_default();
                let why = backup
                    .failure_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                findings.push(
                    Reason::BackupNotCompleted,
                    format!("Velero finished backup {name} as {phase}{why}"),
                );
                if phase != PHASE_PARTIALLY_FAILED {
                    let mut report =
                        Report::new(name, &findings, stats, started.elapsed().as_secs_f64());
                    report.site.clone_from(&backup.site);
                    return Ok(report);
                }
            }
        }
        let site = self.site_view(site_map).await;
        let mut live_scope = LiveScope::NotRun;
        if let Err(error) = self
            .check_contents(&backup, &site, &mut findings, &mut stats, &mut live_scope)
            .await
        {
            findings.push(error.reason, error.message);
        }
        self.check_data_movers(name, &mut findings).await;
        let mut report = Report::new(name, &findings, stats, started.elapsed().as_secs_f64());
        report.site = match &site.local {
            Ok(local) => backup_site::site_name(&backup, local.as_str()),
            Err(_) => backup.site.clone(),
        };
        report.live_scope = live_scope;
        tracing::info!(backup = name, verified = report.verified, reason = %report.reason, items = report.stats.items, "verification finished");
        Ok(report)
    }

    async fn check_contents(
        &self,
        backup: &BackupView,
        site_view: &SiteView,
        findings: &mut Findings,
        stats: &mut Stats,
        live_scope: &mut LiveScope,
    ) -> Result<(), StoreError> {
        let location = self.storage_location(backup).await?;
        let store = self.open_store(&location).await?;
        store.check_bucket().await?;
        let name = &backup.name;
        let files = [
            "velero-backup.json".to_owned(),
            format!("{name}.tar.gz"),
            format!("{name}-resource-list.json.gz"),
            format!("{name}-logs.gz"),
        ];
        let mut present = BTreeMap::new();
        for file in &files {
            let key = location.backup_key(name, file);
            let size = store.size(&key).await?;
            if size.is_none() {
                findings.push(
                    Reason::ObjectMissing,
                    format!(
                        "s3://{}/{key} does not exist: Velero writes it for every backup",
                        location.bucket
                    ),
                );
            }
            present.insert(file.clone(), size.is_some());
        }
        let checks = match &site_view.map {
            Ok(map) => PvChecks::for_every_site(map),
            Err(message) => {
                findings.push(Reason::SiteMapUnavailable, message.clone());
                PvChecks::default()
            }
        };
        let resource_list = if present[&files[2]] {
            let bytes = store
                .get_bytes(&location.backup_key(name, &files[2]))
                .await?;
            match archive::ResourceList::parse(bytes) {
                Ok(list) => Some(list),
                Err(error) => {
                    findings.push(Reason::from(&error), format!("{}: {error}", files[2]));
                    None
                }
            }
        } else {
            None
        };
        if !present[&files[1]] {
            return Ok(());
        }
        let live = self.live_snapshots(backup, findings).await;
        let key = location.backup_key(name, &files[1]);
        let body = store.get(&key).await?;
        let reader = SyncIoBridge::new(body.into_async_read());
        // Only when a cross check fails: a second GET, to name the objects at fault.
        let reopen = {
            let (store, key) = (store.clone(), key.clone());
            let runtime = tokio::runtime::Handle::current();
            move || {
                let body = runtime
                    .block_on(store.get(&key))
                    .map_err(std::io::Error::other)?;
                Ok(SyncIoBridge::new(body.into_async_read()))
            }
        };
        let inspected = tokio::task::spawn_blocking(move || {
            let mut inventory = archive::inspect(reader, &checks)?;
            archive::cross_check(&mut inventory, resource_list.as_ref(), &live, reopen);
            Ok::<_, replicadr_core::tarball::TarballError>(inventory)
        })
        .await
        .map_err(|e| StoreError {
            reason: Reason::TarballCorrupt,
            message: format!("the tarball reader panicked: {e}"),
        })?;
        let mut inventory = match inspected {
            Ok(inventory) => inventory,
            Err(error) => {
                return Err(StoreError {
                    reason: Reason::from(&error),
                    message: format!("s3://{}/{key}: {error}", location.bucket),
                });
            }
        };
        *live_scope = self
            .live_scope(backup, site_view, &inventory, findings)
            .await;
        *stats = inventory.stats.clone();
        findings.extend(std::mem::take(&mut inventory.findings));
        Ok(())
    }

    /// The backup's tarball from its object storage, as a blocking reader (read it on a blocking
    /// thread). Names the object and why when it cannot be opened.
    pub async fn open_tarball(
        &self,
        backup: &BackupView,
    ) -> Result<impl std::io::Read + Send + 'static, StoreError> {
        let location = self.storage_location(backup).await?;
        let store = self.open_store(&location).await?;
        let key = location.backup_key(&backup.name, &format!("{}.tar.gz", backup.name));
        let body = store.get(&key).await?;
        Ok(SyncIoBridge::new(body.into_async_read()))
    }

    /// The results Velero stored for restore `restore` of `backup` (`restores/<name>/
    /// restore-<name>-results.gz`: `{"warnings": …, "errors": …}`).
    pub async fn restore_results(
        &self,
        backup: &BackupView,
        restore: &str,
    ) -> Result<serde_json::Value, StoreError> {
        let location = self.storage_location(backup).await?;
        let store = self.open_store(&location).await?;
        let key = location.restore_key(restore, &format!("restore-{restore}-results.gz"));
        let bytes = store.get_bytes(&key).await?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(bytes.as_slice()),
            &mut text,
        )
        .and_then(|_| serde_json::from_slice(&text).map_err(std::io::Error::other))
        .map_err(|e| StoreError {
            reason: Reason::TarballCorrupt,
            message: format!("s3://{}/{key}: {e}", location.bucket),
        })
    }

    async fn storage_location(&self, backup: &BackupView) -> Result<StorageLocation, StoreError> {
        self.storage_location_named(
            backup.storage_location.as_deref(),
            &format!("backup {}", backup.name),
        )
        .await
    }

    /// The BackupStorageLocation `name`, or Velero's default one when `None`; `user` says who
    /// names it, for messages ("backup X", "BackupPolicy Y").
    pub async fn storage_location_named(
        &self,
        name: Option<&str>,
        user: &str,
    ) -> Result<StorageLocation, StoreError> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &velero::storage_location_resource(),
        );
        let unreachable = |e: kube::Error| StoreError {
            reason: Reason::StorageLocationNotFound,
            message: format!(
                "cannot read BackupStorageLocations in {}: {e}",
                self.namespace
            ),
        };
        let object = match name {
            Some(name) => api.get_opt(name).await.map_err(unreachable)?.ok_or_else(|| StoreError {
                reason: Reason::StorageLocationNotFound,
                message: format!(
                    "{user} names BackupStorageLocation {name}, which does not exist in namespace {}",
                    self.namespace
                ),
            })?,
            None => api
                .list(&ListParams::default())
                .await
                .map_err(unreachable)?
                .items
                .into_iter()
                .find(StorageLocation::is_default)
                .ok_or_else(|| StoreError {
                    reason: Reason::StorageLocationNotFound,
                    message: format!(
                        "{user} names no storage location and namespace {} has no default BackupStorageLocation",
                        self.namespace
                    ),
                })?,
        };
        StorageLocation::from_object(&object).map_err(|message| StoreError {
            reason: Reason::StorageLocationInvalid,
            message,
        })
    }

    /// A client for `location`'s bucket, with its credentials and CA bundle read from the cluster.
    pub async fn open_store(&self, location: &StorageLocation) -> Result<ObjectStore, StoreError> {
        let keys = self.credentials(location).await?;
        let ca = match &location.ca_cert {
            None => None,
            Some(CaCert::Inline(pem)) => Some((
                pem.clone(),
                format!(
                    "BackupStorageLocation {}/{} spec.objectStorage.caCert",
                    self.namespace, location.name
                ),
            )),
            Some(CaCert::Secret(reference)) => {
                let purpose = format!(
                    "spec.objectStorage.caCertRef of BackupStorageLocation {} names it",
                    location.name
                );
                Some(
                    self.secret_value(reference, &purpose, Reason::StorageLocationInvalid)
                        .await?,
                )
            }
        };
        let bundle = ca.as_ref().map(|(pem, origin)| CaBundle { pem, origin });
        ObjectStore::new(location, &keys, bundle)
    }

    /// The bytes of a Secret key in the Velero namespace, and the key's description for messages.
    /// Failures carry `reason` and say who needs the key (`purpose`).
    async fn secret_value(
        &self,
        reference: &SecretKeyRef,
        purpose: &str,
        reason: Reason,
    ) -> Result<(Vec<u8>, String), StoreError> {
        let origin = format!(
            "Secret {}/{} key {}",
            self.namespace, reference.name, reference.key
        );
        let failed = |message: String| StoreError { reason, message };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let object = api
            .get_opt(&reference.name)
            .await
            .map_err(|e| failed(format!("cannot read {origin}: {e}")))?
            .ok_or_else(|| failed(format!("{origin} does not exist: {purpose}")))?;
        let value = object
            .data
            .and_then(|mut d| d.remove(&reference.key))
            .ok_or_else(|| {
                failed(format!(
                    "{origin}: the Secret has no key {} ({purpose})",
                    reference.key
                ))
            })?;
        Ok((value.0, origin))
    }

    async fn credentials(
        &self,
        location: &StorageLocation,
    ) -> Result<store::AccessKeys, StoreError> {
        let reference = location.credential.clone().unwrap_or_else(|| SecretKeyRef {
            name: DEFAULT_CREDENTIALS_SECRET.to_owned(),
            key: DEFAULT_CREDENTIALS_KEY.to_owned(),
        });
        let purpose = format!(
            "BackupStorageLocation {} reads its credentials from it",
            location.name
        );
        let (data, origin) = self
            .secret_value(&reference, &purpose, Reason::CredentialsMissing)
            .await?;
        let text = String::from_utf8_lossy(&data);
        let profile = location
            .config
            .get("profile")
            .map_or("default", String::as_str);
        store::parse_credentials(&text, profile, &origin)
    }

    /// Reads the site map's ConfigMap once: the site map and this site's name.
    async fn site_view(&self, source: &SiteMapSource) -> SiteView {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let origin = format!(
            "ConfigMap {}/{} key {}",
            self.namespace, source.configmap, source.key
        );
        let configmap = match api.get_opt(&source.configmap).await {
            Ok(Some(configmap)) => configmap,
            Ok(None) => {
                let message = format!(
                    "{origin} does not exist: the site map is needed to dry-run the failover of NFS PVs"
                );
                return SiteView {
                    map: Err(message.clone()),
                    local: Err(message),
                };
            }
            Err(e) => {
                let message = format!("cannot read {origin}: {e}");
                return SiteView {
                    map: Err(message.clone()),
                    local: Err(message),
                };
            }
        };
        let data = configmap.data.unwrap_or_default();
        let map = data
            .get(&source.key)
            .ok_or_else(|| format!("{origin} is missing"))
            .and_then(|text| SiteMap::from_yaml(text).map_err(|e| format!("{origin}: {e}")));
        let local = backup_site::local_site_from(
            format!("{}/{}", self.namespace, source.configmap),
            data,
            &source.key,
        )
        .map_err(|e| e.to_string());
        SiteView { map, local }
    }

    /// Compares the live PVCs in the backup's scope with it, at the site that made it only.
    async fn live_scope(
        &self,
        backup: &BackupView,
        site_view: &SiteView,
        inventory: &Inventory,
        findings: &mut Findings,
    ) -> LiveScope {
        match &site_view.local {
            Ok(local) => match backup_site::origin(backup, local.as_str()) {
                Origin::Here => {
                    self.check_live_scope(backup, inventory, findings).await;
                    LiveScope::Checked
                }
                Origin::Elsewhere(made_at) => LiveScope::Skipped {
                    note: format!(
                        "backup {} was made at {}, and this is site {local}: the PVCs here are not its scope, so they were not compared with it",
                        backup.name,
                        made_at.map_or_else(
                            || {
                                "another site (an unlabelled copy synced from object storage)"
                                    .to_owned()
                            },
                            |s| format!("site {s}")
                        )
                    ),
                },
            },
            Err(message) => LiveScope::Skipped {
                note: format!(
                    "which site this is cannot be told ({message}), so neither can whether it made backup {}: the PVCs here were not compared with it",
                    backup.name
                ),
            },
        }
    }

    /// Every PVC in the backup's scope that existed when the backup started must be in it.
    async fn check_live_scope(
        &self,
        backup: &BackupView,
        inventory: &Inventory,
        findings: &mut Findings,
    ) {
        let Some(started) = backup.recovery_point() else {
            return;
        };
        let query = match backup.label_query() {
            Ok(query) => query,
            Err(message) => {
                findings.push(
                    Reason::PvcMissing,
                    format!("cannot tell which PVCs are in scope: {message}"),
                );
                return;
            }
        };
        let params = if query.is_empty() {
            ListParams::default()
        } else {
            ListParams::default().labels(&query)
        };
        for namespace in Self::scope_namespaces(backup) {
            let api: Api<PersistentVolumeClaim> = match namespace {
                Some(namespace) => Api::namespaced(self.client.clone(), namespace),
                None => Api::all(self.client.clone()),
            };
            let pvcs = match api.list(&params).await {
                Ok(list) => list.items,
                Err(error) => {
                    findings.push(
                        Reason::LiveClusterUnreadable,
                        format!(
                            "cannot list the PersistentVolumeClaims in the backup's scope ({}): whether the backup holds every one of them could not be checked ({error})",
                            namespace.unwrap_or("all namespaces")
                        ),
                    );
                    continue;
                }
            };
            for pvc in pvcs {
                let created = pvc.metadata.creation_timestamp.as_ref().map(|t| t.0);
                if created.is_none_or(|c| c >= started) || pvc.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let key = (pvc.namespace().unwrap_or_default(), pvc.name_any());
                if !inventory.has_pvc(&key.0, &key.1) {
                    findings.push(
                        Reason::PvcMissing,
                        format!(
                            "PersistentVolumeClaim {}/{} is in the backup's scope and existed when it started, but is not in the backup",
                            key.0, key.1
                        ),
                    );
                }
            }
        }
    }

    /// The VolumeSnapshots here that `replicadr.io/snapshot-to-pvc` replicates when it backs up
    /// their source claim, taken before the backup started, with the live UID of that claim: the
    /// invariants hold them against the backup where that UID is the one backed up (at the site
    /// the backup was taken), since Velero 1.17 and later leave VolumeSnapshots out of the backup.
    /// Empty where the snapshot API is not served; a list that fails otherwise is a transient
    /// finding (`LiveClusterUnreadable`), never a silent pass.
    async fn live_snapshots(
        &self,
        backup: &BackupView,
        findings: &mut Findings,
    ) -> Vec<LiveVolumeSnapshot> {
        let Some(started) = backup.recovery_point() else {
            return Vec::new();
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        ));
        let mut live = Vec::new();
        for namespace in Self::scope_namespaces(backup) {
            let (snapshots, claims): (Api<DynamicObject>, Api<PersistentVolumeClaim>) =
                match namespace {
                    Some(namespace) => (
                        Api::namespaced_with(self.client.clone(), namespace, &resource),
                        Api::namespaced(self.client.clone(), namespace),
                    ),
                    None => (
                        Api::all_with(self.client.clone(), &resource),
                        Api::all(self.client.clone()),
                    ),
                };
            let snapshots = match snapshots.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(kube::Error::Api(status)) if status.code == 404 => return Vec::new(),
                Err(error) => {
                    findings.push(
                        Reason::LiveClusterUnreadable,
                        format!(
                            "cannot list the VolumeSnapshots in the backup's scope ({}): whether each has its replica claim in the backup could not be checked ({error})",
                            namespace.unwrap_or("all namespaces")
                        ),
                    );
                    continue;
                }
            };
            let wanted: Vec<DynamicObject> = snapshots
                .into_iter()
                .filter(|s| {
                    s.metadata
                        .creation_timestamp
                        .as_ref()
                        .is_some_and(|t| t.0 < started)
                })
                .filter(|s| serde_json::to_value(s).is_ok_and(|v| is_replicated_at_backup(&v)))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let uids: BTreeMap<(String, String), String> = match claims
                .list(&ListParams::default())
                .await
            {
                Ok(list) => list
                    .items
                    .into_iter()
                    .map(|pvc| {
                        let uid = pvc.metadata.uid.clone().unwrap_or_default();
                        ((pvc.namespace().unwrap_or_default(), pvc.name_any()), uid)
                    })
                    .collect(),
                Err(error) => {
                    findings.push(
                        Reason::LiveClusterUnreadable,
                        format!(
                            "cannot list the PersistentVolumeClaims in the backup's scope ({}): the replica claims of its VolumeSnapshots could not be checked ({error})",
                            namespace.unwrap_or("all namespaces")
                        ),
                    );
                    continue;
                }
            };
            for snapshot in wanted {
                let namespace = snapshot.namespace().unwrap_or_default();
                let Some(source) = snapshot
                    .data
                    .pointer(POINTER_SNAPSHOT_SOURCE_PVC)
                    .and_then(serde_json::Value::as_str)
                else {
                    continue;
                };
                let Some(source_uid) = uids.get(&(namespace.clone(), source.to_owned())) else {
                    continue;
                };
                live.push(LiveVolumeSnapshot {
                    source_claim: source.to_owned(),
                    source_claim_uid: source_uid.clone(),
                    uid: snapshot.metadata.uid.clone().unwrap_or_default(),
                    name: snapshot.name_any(),
                    namespace,
                });
            }
        }
        live
    }

    /// The namespaces of the backup's scope, `None` for all.
    fn scope_namespaces(backup: &BackupView) -> Vec<Option<&str>> {
        if backup.included_namespaces.is_empty() {
            vec![None]
        } else {
            backup
                .included_namespaces
                .iter()
                .map(|n| Some(n.as_str()))
                .collect()
        }
    }

    /// A metadata-only backup must not have moved volume data.
    async fn check_data_movers(&self, name: &str, findings: &mut Findings) {
        // Velero cuts a long backup name in the labels it writes; the same cut finds them.
        let params = ListParams::default().labels(&format!(
            "{}={}",
            velero::LABEL_BACKUP_NAME,
            replicadr_core::names::label_value(name)
        ));
        for (resource, kind) in [
            (velero::pod_volume_backup_resource(), "PodVolumeBackups"),
            (velero::data_upload_resource(), "DataUploads"),
        ] {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
            match api.list_metadata(&params).await {
                Ok(list) if !list.items.is_empty() => findings.push(
                    Reason::DataMoverUsed,
                    format!(
                        "backup {name} has {} {kind} ({}): it moved volume data instead of being metadata-only",
                        list.items.len(),
                        list.items.iter().map(kube::ResourceExt::name_any).collect::<Vec<_>>().join(", ")
                    ),
                ),
                Ok(_) => {}
                // Velero's CRDs may be absent where only metadata is backed up.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => tracing::warn!(kind, error = %error, "cannot list data mover objects"),
            }
        }
    }
}
