//! One backup's life, the same whoever starts it: create the Velero Backup (labelled with its
//! policy and the site creating it), follow it to a final phase (a timeout or a failure counts in
//! `replicadr_backup_failures_total` and raises an Event), verify it from object storage and
//! publish the result. The service runs these steps from its controller, each when its reconcile
//! finds it due; [`BackupLife::run_now`] runs them one after the other for `replicadr backup now`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use replicadr_core::plugin_config::SiteConfig;
use replicadr_core::sitemap::{SiteMap, SiteName};

use crate::active_site::{ActiveSite, Record, RecordError};

use crate::backup_site::{self, Origin, SiteError};
use crate::clock::Clock;
use crate::policy::{BackupPolicy, ValidPolicy, condition};
use crate::publish::{FIELD_MANAGER, Publisher};
use crate::schedule;
use crate::velero::{self, BackupRequest, BackupView, PhaseClass};
use crate::verify::{Report, SiteMapSource, Verifier, VerifyError};

/// Why a backup's life could not go on (as opposed to a backup that failed).
#[derive(Debug, thiserror::Error)]
pub enum LifeError {
    #[error("BackupPolicy {namespace}/{name} does not exist")]
    NoPolicy { namespace: String, name: String },
    #[error("BackupPolicy {name} is invalid: {message}")]
    InvalidPolicy { name: String, message: String },
    #[error("BackupPolicy {name} cannot label its backups with this site")]
    UnknownSite {
        name: String,
        #[source]
        source: SiteError,
    },
    #[error(
        "BackupPolicy {name} makes no backups itself: they come from Velero Schedule {schedule} (spec.veleroSchedule); make one with `velero backup create --from-schedule {schedule}` and the policy verifies it"
    )]
    FollowsSchedule { name: String, schedule: String },
    #[error("BackupPolicy {name} makes no backup here: {message}")]
    NotActive { name: String, message: String },
    #[error(transparent)]
    ActiveSite(#[from] RecordError),
    #[error("backup {name} already exists and was made at {made_at}: not this site's to follow")]
    Foreign { name: String, made_at: String },
    #[error("backup {name} did not finish within {timeout:?} (phase {phase})")]
    Timeout {
        name: String,
        timeout: Duration,
        phase: String,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// What creating a backup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call created it.
    New,
    /// It existed already, made here (by another replica, or an earlier run of this one).
    Existed,
    /// A Backup of that name exists but was made at another site (`None`: an unlabelled copy
    /// synced from object storage); nothing was written.
    Foreign { site: Option<String> },
}

/// The steps of a backup's life for policies in one Velero namespace, publishing through `P`
/// (the service shares an `Arc<Publisher>` with its tasks; a command lends a `&Publisher`).
pub struct BackupLife<P = Arc<Publisher>> {
    client: Client,
    namespace: String,
    publisher: P,
    verifier: Verifier,
    clock: Arc<dyn Clock>,
}

impl<P> std::fmt::Debug for BackupLife<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupLife")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Where a policy's site map (and so `localSite`) lives.
pub fn site_map_source(valid: &ValidPolicy) -> SiteMapSource {
    SiteMapSource {
        configmap: valid.site_map.name.clone(),
        key: valid.site_map_key().to_owned(),
    }
}

impl<P: Deref<Target = Publisher>> BackupLife<P> {
    /// Backups of the Velero namespace `namespace`; results go through `publisher`.
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        publisher: P,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let namespace = namespace.into();
        Self {
            verifier: Verifier::new(client.clone(), namespace.clone()),
            client,
            namespace,
            publisher,
            clock,
        }
    }

    /// Where results are published (and its metrics).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    fn backups(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &velero::backup_resource(),
        )
    }

    /// The site `valid`'s backups are made at: `localSite` of its site map's ConfigMap.
    pub async fn local_site(&self, valid: &ValidPolicy) -> Result<SiteName, SiteError> {
        Ok(self.site_config(valid).await?.local_site)
    }

    /// `valid`'s site map and this site's name in it.
    pub async fn site_config(&self, valid: &ValidPolicy) -> Result<SiteConfig, SiteError> {
        backup_site::site_config(&self.client, &self.namespace, &site_map_source(valid)).await
    }

    /// The active-site record of `valid`'s storage location, checked against `sites`.
    pub async fn active_site(
        &self,
        valid: &ValidPolicy,
        sites: &SiteMap,
    ) -> Result<ActiveSite, RecordError> {
        let record = Record::open(
            &self.client,
            &self.namespace,
            valid.template.storage_location.as_deref(),
            &format!("BackupPolicy {}/{}", self.namespace, valid.name),
        )
        .await?;
        record.current(sites).await
    }

    /// Creates the Backup `name` of `valid` at `site`, for `slot` (retry `attempt`) or by hand
    /// (no slot). A Backup of that name made here already counts as created; one made at another
    /// site is left alone and nothing is recorded for it.
    pub async fn create(
        &self,
        valid: &ValidPolicy,
        site: &str,
        name: &str,
        slot: Option<Timestamp>,
        attempt: u32,
    ) -> Result<Created, kube::Error> {
        let object = velero::build_backup(&BackupRequest {
            policy: valid,
            site,
            name: name.to_owned(),
            slot: slot.map(|s| s.to_string()),
            attempt,
        });
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let created = match self.backups().create(&params, &object).await {
            Ok(_) => {
                tracing::info!(policy = %valid.name, backup = name, site, attempt, "created backup");
                self.publisher.metrics.backup.run(&valid.name);
                Created::New
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = BackupView::from_object(&self.backups().get(name).await?);
                if let Origin::Elsewhere(made_at) = backup_site::origin(&existing, site) {
                    tracing::warn!(policy = %valid.name, backup = name, made_at = ?made_at, "a backup of this name was made at another site; leaving it alone");
                    // The slot is taken: recorded, so that it is not tried again.
                    self.record_started(valid, slot, None).await?;
                    return Ok(Created::Foreign { site: made_at });
                }
                tracing::info!(policy = %valid.name, backup = name, "backup already exists");
                Created::Existed
            }
            Err(error) => return Err(error),
        };
        self.record_started(valid, slot, Some((name, site))).await?;
        Ok(created)
    }

    /// Records `slot` as the newest one started (unless a newer one is), and `backup` (name and
    /// site) as the newest backup of this site.
    async fn record_started(
        &self,
        valid: &ValidPolicy,
        slot: Option<Timestamp>,
        backup: Option<(&str, &str)>,
    ) -> Result<(), kube::Error> {
        self.publisher
            .update_status(&valid.name, |_, status| {
                if let Some(slot) = slot {
                    let newer = status
                        .last_schedule_time
                        .as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .is_none_or(|previous| slot >= previous);
                    if newer {
                        status.last_schedule_time = Some(slot.to_string());
                    }
                }
                if let Some((name, site)) = backup {
                    status.last_backup = Some(name.to_owned());
                    status.site = Some(site.to_owned());
                }
            })
            .await
    }

    /// A backup still running `age` after its creation, past `spec.backupTimeout`: counted as
    /// `TimedOut`, reported in the `BackupSucceeded` condition and an Event.
    pub async fn timed_out(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        backup: &BackupView,
        age: Duration,
    ) -> Result<(), kube::Error> {
        self.publisher
            .metrics
            .backup
            .failure(&valid.name, "TimedOut");
        let message = format!(
            "backup {} has not finished after {}s (phase {}); spec.backupTimeout is {}s",
            backup.name,
            age.as_secs(),
            backup.phase.as_deref().unwrap_or("New"),
            valid.backup_timeout.as_secs()
        );
        let now = self.clock.now();
        self.publisher
            .update_status(&valid.name, |current, status| {
                status.set_condition(
                    condition::BACKUP_SUCCEEDED,
                    false,
                    "BackupTimedOut",
                    message.clone(),
                    current.metadata.generation,
                    now,
                );
            })
            .await?;
        self.publisher
            .event(policy, true, "BackupTimedOut", message)
            .await;
        Ok(())
    }

    /// Velero finished `backup`: its duration, and when it did not complete, the failure metric
    /// and an Event; the `BackupSucceeded` condition either way.
    pub async fn finished(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        backup: &BackupView,
    ) -> Result<(), kube::Error> {
        let name = &valid.name;
        if let (Some(created), Some(completed)) = (backup.created, backup.completed) {
            self.publisher.metrics.backup.finished(
                name,
                completed.duration_since(created).as_secs_f64().max(0.0),
            );
        }
        let phase = backup.phase.clone().unwrap_or_default();
        let ok = backup.class == PhaseClass::Succeeded;
        if !ok {
            self.publisher.metrics.backup.failure(name, &phase);
            self.publisher
                .event(
                    policy,
                    true,
                    &format!("Backup{phase}"),
                    format!("Velero finished backup {} as {phase}", backup.name),
                )
                .await;
        }
        let message = format!("backup {} finished as {phase}", backup.name);
        let now = self.clock.now();
        self.publisher
            .update_status(name, |current, status| {
                status.set_condition(
                    condition::BACKUP_SUCCEEDED,
                    ok,
                    if ok { "Completed" } else { &phase },
                    message.clone(),
                    current.metadata.generation,
                    now,
                );
            })
            .await
    }

    /// Verifies the finished `backup` from object storage and publishes the result. A transient
    /// failure is recorded as an attempt unless `final_attempt`.
    pub async fn verify(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        backup: &BackupView,
        final_attempt: bool,
    ) -> Result<Report, LifeError> {
        let report = self
            .verifier
            .verify(&backup.name, &site_map_source(valid))
            .await?;
        self.publisher
            .verification(
                Some(policy),
                backup,
                &report,
                self.clock.now(),
                final_attempt,
            )
            .await?;
        Ok(report)
    }

    /// The whole life at once: creates a backup of `policy_name` named for now, follows it
    /// (reading it every `poll`) until Velero finishes it or `spec.backupTimeout` passes,
    /// verifies it and publishes the result like a scheduled run.
    pub async fn run_now(
        &self,
        policy_name: &str,
        poll: Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<Report, LifeError> {
        let policy = Api::<BackupPolicy>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(policy_name)
            .await?
            .ok_or_else(|| LifeError::NoPolicy {
                namespace: self.namespace.clone(),
                name: policy_name.to_owned(),
            })?;
        let valid = ValidPolicy::from_policy(&policy).map_err(|e| LifeError::InvalidPolicy {
            name: policy_name.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(schedule) = valid.follows() {
            return Err(LifeError::FollowsSchedule {
                name: policy_name.to_owned(),
                schedule: schedule.to_owned(),
            });
        }
        let config = self
            .site_config(&valid)
            .await
            .map_err(|source| LifeError::UnknownSite {
                name: policy_name.to_owned(),
                source,
            })?;
        let site = config.local_site;
        let record = self.active_site(&valid, &config.site_map).await?;
        record
            .allows(site.as_str())
            .map_err(|message| LifeError::NotActive {
                name: policy_name.to_owned(),
                message,
            })?;
        let name = schedule::manual_backup_name(policy_name, self.clock.now());
        if let Created::Foreign { site: made_at } =
            self.create(&valid, site.as_str(), &name, None, 0).await?
        {
            return Err(LifeError::Foreign {
                name,
                made_at: made_at.map_or_else(|| "another site".to_owned(), |s| format!("site {s}")),
            });
        }
        progress(&format!(
            "created backup {}/{name} at site {site}",
            self.namespace
        ));
        let backup = self.follow_to_end(&policy, &valid, &name, poll).await?;
        progress(&format!(
            "backup {name} finished as {}",
            backup.phase.as_deref().unwrap_or_default()
        ));
        self.finished(&policy, &valid, &backup).await?;
        self.verify(&policy, &valid, &backup, true).await
    }

    /// Reads the Backup `name` every `poll` until it is no longer running; past
    /// `spec.backupTimeout` it is reported as timed out.
    async fn follow_to_end(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        name: &str,
        poll: Duration,
    ) -> Result<BackupView, LifeError> {
        let started = tokio::time::Instant::now();
        loop {
            let backup = BackupView::from_object(&self.backups().get(name).await?);
            if backup.class != PhaseClass::Running {
                return Ok(backup);
            }
            let age = started.elapsed();
            if age > valid.backup_timeout {
                self.timed_out(policy, valid, &backup, age).await?;
                return Err(LifeError::Timeout {
                    name: name.to_owned(),
                    timeout: valid.backup_timeout,
                    phase: backup.phase.unwrap_or_else(|| "New".into()),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
}
