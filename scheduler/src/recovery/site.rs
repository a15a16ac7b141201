//! What a site knows about itself and its backups: the restore plugin's ConfigMap (site map and
//! `localSite`), the backup to restore (named, or the newest one that verifies here), the previous
//! verified backup of its policy that the plan compares it with, and the plan for it, read from
//! object storage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
use replicadr_core::contents::BackupContents;
use replicadr_core::kubevirt::ReferencedKind;
use replicadr_core::plugin_config::PluginConfig;
use replicadr_core::sitemap::{SiteMap, SiteName};
use replicadr_core::wire::{
    CONFIG_SITE_MAP, KIND_RESTORE_ITEM_ACTION, LABEL_PLUGIN_CONFIG, PLUGIN_PV_SITE_REMAP,
};

use super::plan::{self, BackupFacts, Plan, PlanInput, SourceSite, Verification};
use crate::backup_site;
use crate::policy::{BackupPolicy, ValidPolicy};
use crate::velero::{self, BackupView, PhaseClass};
use crate::verify::{Report, SiteMapSource, Verifier};

/// Why planning or recovering could not run.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NoBackup(String),
    #[error("cannot read backup {backup}: {message}")]
    Unreadable { backup: String, message: String },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The restore plugin's configuration at a site, read and validated as the plugin reads it.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The ConfigMap it was read from.
    pub configmap: String,
    /// Its `localSite`, one of the site map's sites.
    pub local_site: String,
    pub site_map: SiteMap,
}

/// Reads the plugin ConfigMap of the Velero namespace `namespace`, found as Velero finds it (the
/// plugin-config label and `replicadr.io/pv-site-remap: RestoreItemAction`).
pub async fn site_config(client: &Client, namespace: &str) -> Result<SiteConfig, RecoveryError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let selector =
        format!("{LABEL_PLUGIN_CONFIG},{PLUGIN_PV_SITE_REMAP}={KIND_RESTORE_ITEM_ACTION}");
    let found = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let configmap = match found.as_slice() {
        [one] => one,
        [] => {
            return Err(RecoveryError::Config(format!(
                "no ConfigMap in namespace {namespace} is labelled {selector}: the restore plugin has no site map at this site. Apply the plugin ConfigMap of this site's overlay (manifests/overlays/<site>)"
            )));
        }
        many => {
            return Err(RecoveryError::Config(format!(
                "ConfigMaps {} in namespace {namespace} are all labelled {selector}; Velero hands the plugin only one, so keep exactly one",
                many.iter()
                    .map(ResourceExt::name_any)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let name = configmap.name_any();
    let config = PluginConfig {
        origin: format!("{namespace}/{name}"),
        data: configmap.data.clone().unwrap_or_default(),
    };
    let site = config
        .site_config()
        .map_err(|e| RecoveryError::Config(e.to_string()))?;
    Ok(SiteConfig {
        configmap: name,
        local_site: site.local_site.to_string(),
        site_map: site.site_map,
    })
}

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupChoice {
    /// This one.
    Named(String),
    /// The newest finished backup (of the policy, if given) that verifies at this site.
    LatestVerified,
}

/// Which backups a restore chooses from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// Only this BackupPolicy's backups (`--policy`).
    pub policy: Option<&'a str>,
    /// The site the backups come from (`--source-site`): a backup labelled with another site is
    /// passed over, and one without a site label is taken as made there.
    pub source_site: Option<&'a str>,
}

/// A planned restore at a site.
#[derive(Debug, Clone)]
pub struct Planned {
    pub backup: BackupView,
    pub plan: Plan,
    pub contents: BackupContents,
    /// What exists at the site under the backup's names, as the plan saw it.
    pub existing: plan::Existing,
    /// The verification run at this site, if it could run.
    pub verification: Option<Report>,
}

/// How many finished backups `LatestVerified` tries, newest first, before giving up.
const CANDIDATES: usize = 10;

/// Chooses the backup, verifies it from object storage, reads it and plans its restore at
/// `site`. `progress` receives one line per step.
pub async fn plan_at_site(
    client: &Client,
    namespace: &str,
    site: &str,
    choice: &BackupChoice,
    scope: Scope<'_>,
    now: Timestamp,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Planned, RecoveryError> {
    let policy = scope.policy;
    let config = site_config(client, namespace).await?;
    let site_name = config.site_map.site(site).map_err(|e| {
        RecoveryError::Config(format!(
            "site {site:?}: {e} (the site map in ConfigMap {namespace}/{})",
            config.configmap
        ))
    })?;
    if let Some(source) = scope.source_site {
        check_source_site(&config, namespace, site, source)?;
    }
    let sources = Sources {
        site: site_name.as_str(),
        sites: &config.site_map,
        stated: scope.source_site,
    };
    let verifier = Verifier::new(client.clone(), namespace);
    let source = SiteMapSource {
        configmap: config.configmap.clone(),
        key: CONFIG_SITE_MAP.to_owned(),
    };
    let (backup, report) = match choice {
        BackupChoice::Named(name) => {
            let (_, view) = verifier
                .backup(name)
                .await
                .map_err(|e| RecoveryError::NoBackup(e.to_string()))?;
            progress(format!("verifying backup {name} from object storage"));
            let report = verifier.verify(name, &source).await.ok();
            (view, report)
        }
        BackupChoice::LatestVerified => {
            latest_verified(
                client, namespace, &sources, policy, &verifier, &source, progress,
            )
            .await?
        }
    };
    let verification = match &report {
        Some(report) if report.verified => Verification::Passed,
        Some(report) => Verification::Failed(report.summary()),
        None => Verification::NotRun("the verifier could not run".to_owned()),
    };
    progress(format!(
        "reading backup {} from object storage",
        backup.name
    ));
    let contents = read_contents(&verifier, &backup).await?;
    let previous = previous_verified(
        client, namespace, &sources, &backup, &verifier, &source, progress,
    )
    .await?;
    let existing = existing_at_site(
        client,
        namespace,
        site_name.as_str(),
        &config.site_map,
        &backup,
        &contents,
    )
    .await?;
    let rpo = policy_rpo(client, namespace, policy.or(backup.policy.as_deref())).await;
    let plan = plan::build(&PlanInput {
        backup: BackupFacts {
            name: backup.name.clone(),
            policy: backup.policy.clone(),
            source: sources.of(&backup),
            recovery_point: backup.recovery_point(),
            verification,
        },
        contents: &contents,
        previous: previous
            .as_ref()
            .map(|(view, contents)| plan::PreviousBackup {
                name: &view.name,
                contents,
            }),
        site_map: &config.site_map,
        site: site_name.clone(),
        now,
        rpo,
        existing: Some(&existing),
    });
    Ok(Planned {
        backup,
        plan,
        contents,
        existing,
        verification: report,
    })
}

/// `--source-site`: a site of the site map, other than the one restoring.
fn check_source_site(
    config: &SiteConfig,
    namespace: &str,
    site: &str,
    source: &str,
) -> Result<(), RecoveryError> {
    config.site_map.site(source).map_err(|e| {
        RecoveryError::Config(format!(
            "--source-site {source:?}: {e} (the site map in ConfigMap {namespace}/{})",
            config.configmap
        ))
    })?;
    if source == site {
        return Err(RecoveryError::Config(format!(
            "--source-site {source} is the site this restore runs at: it names the other site, whose backups are restored here"
        )));
    }
    Ok(())
}

/// Plans a restore of a backup tarball on disk, with a site map file: no cluster, no object
/// storage.
pub fn plan_from_file(
    tarball: &Path,
    site_map: &Path,
    site: &str,
    now: Timestamp,
) -> Result<Plan, RecoveryError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| RecoveryError::Config(format!("cannot read {}: {e}", path.display())))
    };
    let map_text = String::from_utf8(read(site_map)?)
        .map_err(|_| RecoveryError::Config(format!("{} is not UTF-8 text", site_map.display())))?;
    let map = SiteMap::from_yaml(&map_text)
        .map_err(|e| RecoveryError::Config(format!("{}: {e}", site_map.display())))?;
    let site_name: SiteName = map
        .site(site)
        .map_err(|e| RecoveryError::Config(format!("site {site:?}: {e}")))?
        .clone();
    let file = std::fs::File::open(tarball)
        .map_err(|e| RecoveryError::Config(format!("cannot open {}: {e}", tarball.display())))?;
    let contents = BackupContents::read(std::io::BufReader::new(file)).map_err(|e| {
        RecoveryError::Unreadable {
            backup: tarball.display().to_string(),
            message: e.to_string(),
        }
    })?;
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .map_or("backup", |n| n.trim_end_matches(".tar.gz"))
        .to_owned();
    Ok(plan::build(&PlanInput {
        backup: BackupFacts {
            name,
            policy: None,
            source: SourceSite {
                site: None,
                assumed: true,
                how: "an offline plan of a tarball does not know which site made it".to_owned(),
            },
            recovery_point: None,
            verification: Verification::NotRun(format!(
                "offline plan of {}; `replicadr verify` checks a backup in object storage",
                tarball.display()
            )),
        },
        contents: &contents,
        previous: None,
        site_map: &map,
        site: site_name,
        now,
        rpo: None,
        existing: None,
    }))
}

/// The tarball of `backup`, read from its object storage.
async fn read_contents(
    verifier: &Verifier,
    backup: &BackupView,
) -> Result<BackupContents, RecoveryError> {
    let unreadable = |message: String| RecoveryError::Unreadable {
        backup: backup.name.clone(),
        message,
    };
    let reader = verifier
        .open_tarball(backup)
        .await
        .map_err(|e| unreadable(e.message))?;
    tokio::task::spawn_blocking(move || BackupContents::read(reader))
        .await
        .map_err(|e| unreadable(format!("the reader panicked: {e}")))?
        .map_err(|e| unreadable(e.to_string()))
}

/// The Backups in `namespace`, of `policy` when given: labelled with it, and, where the
/// BackupPolicy exists at this site, made the way it makes them ([`velero::is_policy_backup`]:
/// by the scheduler, or by the Velero Schedule it follows), so a second Schedule or a hand-made
/// backup that carries the policy label is not taken for the policy's. Also returns why each
/// such backup was passed over.
async fn list_backups(
    client: &Client,
    namespace: &str,
    policy: Option<&str>,
) -> Result<(Vec<BackupView>, Vec<String>), RecoveryError> {
    let here = match policy {
        Some(name) => {
            Api::<BackupPolicy>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
        }
        None => None,
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::backup_resource());
    let mut params = ListParams::default();
    if let Some(policy) = policy {
        params = params.labels(&format!(
            "{}={}",
            velero::LABEL_POLICY,
            replicadr_core::names::label_value(policy)
        ));
    }
    let mut passed_over = Vec::new();
    let mut backups = Vec::new();
    for backup in api.list(&params).await?.items {
        let Some(policy) = &here else {
            backups.push(BackupView::from_object(&backup));
            continue;
        };
        let follows = policy.spec.velero_schedule.as_deref();
        if velero::is_policy_backup(backup.labels(), &policy.name_any(), follows) {
            backups.push(BackupView::from_object(&backup));
        } else {
            passed_over.push(format!(
                "{}: labelled {}={} but not made by the policy ({}), as BackupPolicy {namespace}/{} here says",
                backup.name_any(),
                velero::LABEL_POLICY,
                policy.name_any(),
                follows.map_or_else(
                    || format!("{}={}", velero::LABEL_MANAGED_BY, velero::MANAGED_BY),
                    |s| format!("Velero Schedule {s}, {}={s}", velero::LABEL_SCHEDULE_NAME)
                ),
                policy.name_any()
            ));
        }
    }
    Ok((backups, passed_over))
}

async fn latest_verified(
    client: &Client,
    namespace: &str,
    sources: &Sources<'_>,
    policy: Option<&str>,
    verifier: &Verifier,
    source: &SiteMapSource,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(BackupView, Option<Report>), RecoveryError> {
    let (listed, foreign) = list_backups(client, namespace, policy).await?;
    let (finished, mut rejected) = sources.candidates(listed);
    rejected.extend(foreign);
    for line in &rejected {
        progress(format!("  skipped {line}"));
    }
    let scope = policy
        .map(|p| format!(" of policy {p}"))
        .unwrap_or_default();
    for backup in finished.into_iter().take(CANDIDATES) {
        progress(format!(
            "verifying backup {} from object storage",
            backup.name
        ));
        match verifier.verify(&backup.name, source).await {
            Ok(report) if report.verified => return Ok((backup, Some(report))),
            Ok(report) => {
                progress(format!("  skipped {}: {}", backup.name, report.summary()));
                rejected.push(format!("{}: {}", backup.name, report.summary()));
            }
            Err(error) => {
                progress(format!("  skipped {}: {error}", backup.name));
                rejected.push(format!("{}: {error}", backup.name));
            }
        }
    }
    Err(RecoveryError::NoBackup(if rejected.is_empty() {
        format!(
            "no completed Backup{scope} in namespace {namespace}: has Velero at this site synced the backups from object storage (BackupStorageLocation Available, --backup-sync-period)?"
        )
    } else {
        format!(
            "no completed backup{scope} can be restored at this site ({} passed over):\n  {}\nname one with --backup and --force to restore it anyway",
            rejected.len(),
            rejected.join("\n  ")
        )
    }))
}

/// The previous verified backup of `backup`'s policy, with its contents: the newest candidate at
/// `site` ([`candidates`]) with an older recovery point that verifies here. `None` when `backup`
/// has no policy label or no older backup of its policy verifies; the plan then compares nothing.
async fn previous_verified(
    client: &Client,
    namespace: &str,
    sources: &Sources<'_>,
    backup: &BackupView,
    verifier: &Verifier,
    source: &SiteMapSource,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Option<(BackupView, BackupContents)>, RecoveryError> {
    let Some(policy) = backup.policy.as_deref() else {
        return Ok(None);
    };
    let (listed, _) = list_backups(client, namespace, Some(policy)).await?;
    let older = sources.older_candidates(listed, backup);
    for candidate in older.into_iter().take(CANDIDATES) {
        progress(format!(
            "verifying backup {}, the one of policy {policy} before {}, to compare them",
            candidate.name, backup.name
        ));
        match verifier.verify(&candidate.name, source).await {
            Ok(report) if report.verified => {
                progress(format!(
                    "reading backup {} from object storage",
                    candidate.name
                ));
                match read_contents(verifier, &candidate).await {
                    Ok(contents) => return Ok(Some((candidate, contents))),
                    Err(error) => {
                        progress(format!("  not compared with {}: {error}", candidate.name));
                    }
                }
            }
            Ok(report) => progress(format!(
                "  not compared with {}: {}",
                candidate.name,
                report.summary()
            )),
            Err(error) => progress(format!("  not compared with {}: {error}", candidate.name)),
        }
    }
    Ok(None)
}

/// Where the backups a restore at `site` may choose come from: the site map, and the site
/// `--source-site` states.
struct Sources<'a> {
    site: &'a str,
    sites: &'a SiteMap,
    stated: Option<&'a str>,
}

impl Sources<'_> {
    /// The site `backup` came from: its `replicadr.io/site` label; for a Backup without one (a
    /// Velero Schedule's without the label, or made by hand), the site `--source-site` states,
    /// else where its object appeared ([`backup_site::origin`]): created in this cluster, so
    /// made here, or synced from object storage, so made at another site, which is named when
    /// the site map has only one other.
    fn of(&self, backup: &BackupView) -> SourceSite {
        let site = self.site;
        let made_here = !backup_site::synced_from_storage(backup);
        match &backup.site {
            // The object's own history outweighs a label naming another site.
            Some(label) if label != site && made_here => {
                return SourceSite {
                    site: Some(site.to_owned()),
                    assumed: true,
                    how: format!(
                        "its label says {}={label}, but its Backup object was created in this cluster before it completed, not synced from object storage, so site {site} made it (a Velero Schedule applied at both sites with one site's label?)",
                        velero::LABEL_SITE
                    ),
                };
            }
            Some(label) => return SourceSite::labelled(label),
            None => {}
        }
        let unlabelled = format!(
            "backup {} has no {} label (a Velero Schedule's or a hand-made backup, not a BackupPolicy's)",
            backup.name,
            velero::LABEL_SITE
        );
        if made_here {
            return SourceSite {
                site: Some(site.to_owned()),
                assumed: true,
                how: format!(
                    "{unlabelled}, and its Backup object was created in this cluster, not synced from object storage, so site {site} made it{}",
                    self.stated
                        .map(|s| format!(", whatever --source-site {s} says"))
                        .unwrap_or_default()
                ),
            };
        }
        if let Some(stated) = self.stated {
            return SourceSite {
                site: Some(stated.to_owned()),
                assumed: true,
                how: format!(
                    "{unlabelled}; Velero synced it from object storage, and --source-site {stated} says site {stated} made it"
                ),
            };
        }
        let others: Vec<&str> = self
            .sites
            .sites()
            .iter()
            .map(SiteName::as_str)
            .filter(|s| *s != site)
            .collect();
        match others.as_slice() {
            [other] => SourceSite {
                site: Some((*other).to_owned()),
                assumed: true,
                how: format!(
                    "{unlabelled}; Velero synced it from object storage, so another site made it, and the site map names one other site: taken as made at site {other}; if not, say which with --source-site"
                ),
            },
            _ => SourceSite {
                site: None,
                assumed: true,
                how: format!(
                    "{unlabelled}; Velero synced it from object storage, so another site made it, but the site map names {} other sites: say which with --source-site",
                    others.len()
                ),
            },
        }
    }

    /// The backups a restore here may choose, newest recovery point first: completed ones not
    /// made at this site itself, which would restore this site's own state onto itself, and with
    /// `--source-site`, only those made there. Also returns why each other completed backup was
    /// passed over.
    fn candidates(&self, backups: Vec<BackupView>) -> (Vec<BackupView>, Vec<String>) {
        let site = self.site;
        let mut chosen = Vec::new();
        let mut skipped = Vec::new();
        for backup in backups
            .into_iter()
            .filter(|b| b.class == PhaseClass::Succeeded)
        {
            let source = self.of(&backup);
            if source.site.as_deref() == Some(site) {
                skipped.push(format!(
                    "{}: made at site {site} itself ({}), so it holds this site's own objects; name it with --backup to restore it anyway",
                    backup.name, source.how
                ));
            } else if let Some(stated) = self.stated
                && source.site.as_deref() != Some(stated)
            {
                skipped.push(format!(
                    "{}: made at site {} ({}), not at --source-site {stated}",
                    backup.name,
                    source.site.as_deref().unwrap_or("unknown"),
                    source.how
                ));
            } else {
                chosen.push(backup);
            }
        }
        chosen.sort_by_key(|b| std::cmp::Reverse(b.recovery_point()));
        (chosen, skipped)
    }

    /// The candidates ([`Self::candidates`]) older than `backup`, newest first.
    fn older_candidates(&self, backups: Vec<BackupView>, backup: &BackupView) -> Vec<BackupView> {
        let Some(point) = backup.recovery_point() else {
            return Vec::new();
        };
        self.candidates(backups)
            .0
            .into_iter()
            .filter(|b| b.name != backup.name && b.recovery_point().is_some_and(|p| p < point))
            .collect()
    }
}

/// The RPO of `policy` when it exists at this site and sets one.
async fn policy_rpo(client: &Client, namespace: &str, policy: Option<&str>) -> Option<Duration> {
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), namespace);
    let policy = api.get_opt(policy?).await.ok()??;
    ValidPolicy::from_policy(&policy).ok()?.rpo
}

/// What exists at `site` under the names `contents` holds — every PV, and the PVCs, VMs and
/// `DataVolumes` of the backup's namespaces — and which Restores of `backup` a failover or
/// failback here made.
async fn existing_at_site(
    client: &Client,
    namespace: &str,
    site: &str,
    sites: &SiteMap,
    backup: &BackupView,
    contents: &BackupContents,
) -> Result<plan::Existing, RecoveryError> {
    let policy = backup.policy.as_deref();
    let backup = backup.name.as_str();
    let mut existing = plan::Existing {
        pvs: Api::<PersistentVolume>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|pv| Some((pv.name_any(), serde_json::to_value(pv).ok()?)))
            .collect(),
        ..plan::Existing::default()
    };
    for name in contents.namespaces() {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &name);
        for claim in claims.list(&ListParams::default()).await?.items {
            if let Ok(value) = serde_json::to_value(&claim) {
                existing
                    .claims
                    .insert((name.clone(), claim.name_any()), value);
            }
        }
        for (resource, into) in [
            (super::vm_start::vm_resource(), &mut existing.vms),
            (
                super::vm_start::data_volume_resource(),
                &mut existing.data_volumes,
            ),
        ] {
            for object in list_optional(client, &name, &resource).await? {
                if let Ok(value) = serde_json::to_value(&object) {
                    into.insert((name.clone(), object.name_any()), value);
                }
            }
        }
    }
    existing.referenced = referenced_at_site(client, contents).await?;
    existing.unserved = unserved_kinds(client, contents).await?;
    // Only the Restores of the takeover this restore runs under: objects a failover of the same
    // backup restored in an earlier epoch are stale.
    let epoch = crate::active_site::takeover_epoch(client, namespace, site, sites).await;
    let (own, others): (BTreeMap<_, _>, BTreeMap<_, _>) =
        super::restore::Restores::new(client, namespace)
            .of_epoch(site, epoch)
            .await?
            .into_iter()
            .partition(|(_, of)| of == backup);
    existing.own_restores = own.into_keys().collect();
    existing.takeover_restores = others;
    // The warm standby's Restores of the backup's policy here made what a failover from it
    // uses, and what a standby refresh updates: both take those objects as their own.
    if let Some(policy) = policy {
        existing.own_restores.extend(
            super::restore::Restores::new(client, namespace)
                .standby(site, policy)
                .await?
                .into_iter()
                .map(|r| r.name),
        );
    }
    Ok(existing)
}

/// The objects VMs of `contents` need that the backup lacks and that exist at the site, by
/// [`VmReference::key`](replicadr_core::kubevirt::VmReference::key): one read each, and none of a kind whose CRD is not installed here.
async fn referenced_at_site(
    client: &Client,
    contents: &BackupContents,
) -> Result<BTreeSet<String>, kube::Error> {
    let mut found = BTreeSet::new();
    let mut looked = BTreeSet::new();
    for (_, reference) in contents.vm_references() {
        let key = reference.key();
        if contents.referenceable.contains(&key) || !looked.insert(key.clone()) {
            continue;
        }
        let kind = reference.kind;
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(kind.group(), kind.version(), kind.kind()),
            kind.plural(),
        );
        let api: Api<DynamicObject> = if kind.namespaced() {
            Api::namespaced_with(client.clone(), &reference.namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        match api.get_metadata_opt(&reference.name).await {
            // One being deleted is as good as gone by the time the restored VM starts.
            Ok(Some(object)) if object.metadata.deletion_timestamp.is_none() => {
                found.insert(key);
            }
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(found)
}

/// The kinds that VMs of `contents` reference and whose API this site does not serve: one
/// discovery read per group/version of the kinds that need a CRD (the four instance type kinds
/// share one).
async fn unserved_kinds(
    client: &Client,
    contents: &BackupContents,
) -> Result<BTreeSet<ReferencedKind>, kube::Error> {
    let kinds: BTreeSet<ReferencedKind> = contents
        .vm_references()
        .map(|(_, reference)| reference.kind)
        .filter(|kind| kind.needs_crd())
        .collect();
    // The resources each group/version serves here; none when the group/version is not served.
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unserved = BTreeSet::new();
    for kind in kinds {
        let api_version = kind.api_version();
        if !served.contains_key(&api_version) {
            let resources = match client.list_api_group_resources(&api_version).await {
                Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                Err(kube::Error::Api(status)) if status.code == 404 => BTreeSet::new(),
                Err(error) => return Err(error),
            };
            served.insert(api_version.clone(), resources);
        }
        if !served[&api_version].contains(kind.plural()) {
            unserved.insert(kind);
        }
    }
    Ok(unserved)
}

/// The names of the objects of `resource` in `namespace` (one list, metadata only); none when
/// its CRD is not installed here.
pub(crate) async fn names_in(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
) -> Result<BTreeSet<String>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    none_when_unserved(
        (api.list_metadata(&ListParams::default()).await)
            .map(|list| list.items.iter().map(ResourceExt::name_any).collect()),
    )
}

/// A list's result, with a kind not served here (404) read as no objects.
fn none_when_unserved<T: Default>(listed: Result<T, kube::Error>) -> Result<T, kube::Error> {
    match listed {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(T::default()),
        listed => listed,
    }
}

/// The objects of `resource` in `namespace`; none when its CRD is not installed here (KubeVirt or
/// CDI absent: no such object can exist).
pub(crate) async fn list_optional(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    none_when_unserved(
        api.list(&ListParams::default())
            .await
            .map(|list| list.items),
    )
}

/// The policies a restore at `site` restores when none is named, sorted: the `replicadr.io/policy`
/// of every backup not made at `site` itself, in any phase, and every BackupPolicy at the site.
/// Also returns, as lines to show, the completed backups without a policy label (a Velero
/// Schedule's, or made by hand): they are not chosen without `--backup`.
pub async fn policies_to_restore(
    client: &Client,
    namespace: &str,
    site: &str,
) -> Result<(Vec<String>, Vec<String>), RecoveryError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::backup_resource());
    let listed: Vec<BackupView> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(BackupView::from_object)
        .collect();
    // Every policy a backup from another site names, whatever its phase, and every BackupPolicy
    // here: one of them without a backup that can be restored is a refusal naming it, never a
    // policy silently left out.
    let mut policies: Vec<String> = listed
        .iter()
        .filter(|b| b.site.as_deref() != Some(site))
        .filter_map(|b| b.policy.clone())
        .collect();
    policies.extend(
        Api::<BackupPolicy>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any),
    );
    policies.sort();
    policies.dedup();
    let unlabelled = listed
        .iter()
        .filter(|b| {
            b.class == PhaseClass::Succeeded && b.policy.is_none() && b.site.as_deref() != Some(site)
        })
        .map(|b| {
            format!(
                "backup {} has no {} label (not made by a BackupPolicy): not restored unless named with --backup",
                b.name,
                velero::LABEL_POLICY
            )
        })
        .collect();
    Ok((policies, unlabelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Backup as Velero's sync creates it at the other site: its object created after it
    /// completed.
    fn backup(name: &str, site: Option<&str>, phase: &str, started: &str) -> BackupView {
        made(name, site, phase, started, "2026-12-01T05:00:00Z")
    }

    fn made(
        name: &str,
        site: Option<&str>,
        phase: &str,
        started: &str,
        created: &str,
    ) -> BackupView {
        let mut labels = serde_json::Map::new();
        if let Some(site) = site {
            labels.insert(velero::LABEL_SITE.into(), site.into());
        }
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": name, "namespace": "velero", "labels": labels,
                         "creationTimestamp": created},
            "status": {"phase": phase, "startTimestamp": started,
                       "completionTimestamp": "2026-12-01T04:30:00Z"},
        }))
        .expect("a Backup");
        BackupView::from_object(&object)
    }

    fn sites(count: usize) -> SiteMap {
        let names = &["primary", "dr", "third"][..count];
        let exports = names
            .iter()
            .enumerate()
            .fold(String::new(), |mut out, (i, s)| {
                use std::fmt::Write as _;
                let _ = writeln!(
                    out,
                    "    {s}: {{server: nfs-{i}.example.com, path: /exports/vms}}"
                );
                out
            });
        SiteMap::from_yaml(&format!(
            "sites: [{}]\nexports:\n  - name: vm-disks\n{exports}",
            names.join(", ")
        ))
        .expect("site map")
    }

    fn at_dr<'a>(sites: &'a SiteMap, stated: Option<&'a str>) -> Sources<'a> {
        Sources {
            site: "dr",
            sites,
            stated,
        }
    }

    #[test]
    fn a_backup_made_at_the_restoring_site_is_never_chosen() {
        let map = sites(2);
        let (chosen, skipped) = at_dr(&map, None).candidates(vec![
            backup(
                "primary-old",
                Some("primary"),
                "Completed",
                "2026-12-01T01:00:00Z",
            ),
            backup("dr-newest", Some("dr"), "Completed", "2026-12-01T03:00:00Z"),
            backup("unlabelled", None, "Completed", "2026-12-01T02:00:00Z"),
            backup(
                "primary-failed",
                Some("primary"),
                "Failed",
                "2026-12-01T04:00:00Z",
            ),
            // Created here before it completed: made here, though unlabelled.
            made(
                "by-hand-here",
                None,
                "Completed",
                "2026-12-01T04:10:00Z",
                "2026-12-01T04:09:00Z",
            ),
            // Created here, though labelled with the other site.
            made(
                "mislabelled",
                Some("primary"),
                "Completed",
                "2026-12-01T04:20:00Z",
                "2026-12-01T04:19:00Z",
            ),
        ]);
        let names: Vec<&str> = chosen.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["unlabelled", "primary-old"]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(
            skipped[2].starts_with("mislabelled: made at site dr itself (its label says replicadr.io/site=primary, but its Backup object was created in this cluster before it completed"),
            "{skipped:?}"
        );
        // --source-site never turns a backup made here into the other site's.
        let (_, stated) = at_dr(&map, Some("primary")).candidates(vec![made(
            "by-hand-here",
            None,
            "Completed",
            "2026-12-01T04:10:00Z",
            "2026-12-01T04:09:00Z",
        )]);
        assert!(
            stated[0].contains("so site dr made it, whatever --source-site primary says"),
            "{stated:?}"
        );
        assert!(
            skipped[0]
                .starts_with("dr-newest: made at site dr itself (its label replicadr.io/site=dr)"),
            "{skipped:?}"
        );
        assert!(
            skipped[1].starts_with("by-hand-here: made at site dr itself (backup by-hand-here has no replicadr.io/site label")
                && skipped[1].contains("created in this cluster, not synced"),
            "{skipped:?}"
        );
    }

    #[test]
    fn an_unlabelled_backup_is_assumed_from_the_one_other_site_or_the_stated_one() {
        let synced = backup("by-hand", None, "Completed", "2026-12-01T02:00:00Z");
        let two = sites(2);
        let source = at_dr(&two, None).of(&synced);
        assert_eq!(source.site.as_deref(), Some("primary"));
        assert!(source.assumed);
        assert!(
            source.how.contains("synced it from object storage")
                && source.how.contains("taken as made at site primary"),
            "{source:?}"
        );
        let three = sites(3);
        let unknown = at_dr(&three, None).of(&synced);
        assert_eq!(unknown.site, None);
        assert!(
            unknown
                .how
                .contains("names 2 other sites: say which with --source-site")
        );
        let stated = at_dr(&three, Some("third")).of(&synced);
        assert_eq!(stated.site.as_deref(), Some("third"));
        assert!(
            stated
                .how
                .contains("--source-site third says site third made it")
        );
        // --source-site passes over a backup labelled with another site, and takes the
        // unlabelled one as made there.
        let (chosen, skipped) = at_dr(&three, Some("third")).candidates(vec![
            backup(
                "primary-made",
                Some("primary"),
                "Completed",
                "2026-12-01T03:00:00Z",
            ),
            synced.clone(),
        ]);
        assert_eq!(
            chosen.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
            ["by-hand"]
        );
        assert!(
            skipped[0].starts_with("primary-made: made at site primary (its label replicadr.io/site=primary), not at --source-site third"),
            "{skipped:?}"
        );
        let labelled = at_dr(&two, None).of(&backup(
            "b",
            Some("primary"),
            "Completed",
            "2026-12-01T03:00:00Z",
        ));
        assert!(!labelled.assumed);
    }

    #[test]
    fn the_previous_backup_is_the_newest_older_one_not_made_at_the_restoring_site() {
        let listed = || {
            vec![
                backup(
                    "vms-1",
                    Some("primary"),
                    "Completed",
                    "2026-12-01T01:00:00Z",
                ),
                backup(
                    "vms-2",
                    Some("primary"),
                    "Completed",
                    "2026-12-01T02:00:00Z",
                ),
                backup("vms-2-dr", Some("dr"), "Completed", "2026-12-01T02:30:00Z"),
                backup("vms-3", Some("primary"), "Failed", "2026-12-01T02:45:00Z"),
                backup(
                    "vms-4",
                    Some("primary"),
                    "Completed",
                    "2026-12-01T03:00:00Z",
                ),
                backup(
                    "vms-5",
                    Some("primary"),
                    "Completed",
                    "2026-12-01T04:00:00Z",
                ),
            ]
        };
        let chosen = backup(
            "vms-4",
            Some("primary"),
            "Completed",
            "2026-12-01T03:00:00Z",
        );
        let map = sites(2);
        let sources = at_dr(&map, None);
        let older = sources.older_candidates(listed(), &chosen);
        let names: Vec<&str> = older.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["vms-2", "vms-1"]);
        let first = backup(
            "vms-1",
            Some("primary"),
            "Completed",
            "2026-12-01T01:00:00Z",
        );
        assert!(sources.older_candidates(listed(), &first).is_empty());
    }
}
