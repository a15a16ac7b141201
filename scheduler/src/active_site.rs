//! Which site is active: one small record in the shared bucket, the only state that a lost site
//! and the surviving site both see. `replicadr activate` writes it once at installation,
//! `failover` and `failback` rewrite it when they take a site over, and every scheduler reads it
//! before it creates a backup: a site that is not the active one creates none (retries and missed
//! slots included), so a primary that comes back after a failover stays quiet until failback
//! makes it active again.
//!
//! The record lives at `<prefix>/metadata/replicadr-active-site.json` of each
//! BackupStorageLocation: Velero's store validation accepts only its own top-level directories
//! under the prefix, and `metadata/` is one that holds no backups. ReplicaDR reads and writes it
//! with the credentials the verifier already uses and never deletes it. A missing, unreadable or
//! invalid record, or one naming a site the site map does not know, stops backups at every site
//! and says so in the policy's `Ready` condition: never both sites backing up at once.

use std::fmt::Write as _;

use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use replicadr_core::sitemap::SiteMap;
use serde::{Deserialize, Serialize};

use crate::backup_site;
use crate::velero::{self, StorageLocation};
use crate::verify::report::Reason;
use crate::verify::store::{ObjectStore, StoreError};
use crate::verify::{SiteMapSource, Verifier};

/// The record's file in a location's `metadata/` directory.
pub const RECORD_FILE: &str = "replicadr-active-site.json";
/// The record's format, written into it so that a later layout can be told apart.
pub const FORMAT: &str = "replicadr.io/active-site/v1";

/// How a site became the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Takeover {
    /// `replicadr activate`, at installation.
    Activate,
    Failover,
    Failback,
}

impl Takeover {
    pub fn as_str(self) -> &'static str {
        match self {
            Takeover::Activate => "activate",
            Takeover::Failover => "failover",
            Takeover::Failback => "failback",
        }
    }
}

/// The record: which site is active, since when, and by which operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSite {
    pub format: String,
    pub site: String,
    /// Grows by one each time another site takes over.
    pub epoch: u64,
    /// RFC 3339.
    pub since: String,
    pub operation: Takeover,
    /// The backup the takeover restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The site that was active before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_site: Option<String>,
}

impl ActiveSite {
    /// "site dr, active since … (failover of backup X, epoch 2)".
    pub fn describe(&self) -> String {
        let mut text = format!(
            "site {}, active since {} ({}",
            self.site,
            self.since,
            self.operation.as_str()
        );
        if let Some(backup) = &self.backup {
            let _ = write!(text, " of backup {backup}");
        }
        let _ = write!(text, ", epoch {})", self.epoch);
        text
    }

    /// Whether `site` may create backups; the refusal says who is active and what would make
    /// `site` active again.
    pub fn allows(&self, site: &str) -> Result<(), String> {
        if self.site == site {
            return Ok(());
        }
        Err(format!(
            "the active-site record names {}; this site, {site}, makes no backups (retries and missed slots included) until `replicadr failback --site {site}` or `replicadr failover --site {site}` makes it the active site",
            self.describe()
        ))
    }
}

/// Why the record cannot be used. Every message names the record's place and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(
        "there is no active-site record at {url} (BackupStorageLocation {location}), so no site may make backups; at installation, run `replicadr activate --site <the site running the workload>` against that site, once"
    )]
    Missing { url: String, location: String },
    #[error(
        "cannot read the active-site record {url} (BackupStorageLocation {location}): {detail}; no backup is made until it can be read"
    )]
    Unreadable {
        url: String,
        location: String,
        detail: String,
    },
    #[error(
        "the active-site record {url} is not valid: {detail}; it must be the JSON that `replicadr activate` writes ({{\"format\": \"{FORMAT}\", \"site\": …, \"epoch\": …, \"since\": …, \"operation\": \"activate|failover|failback\"}}); no backup is made until it is"
    )]
    Invalid { url: String, detail: String },
    #[error(
        "the active-site record {url} names site {site:?}, which the site map does not know (its sites: {known}); no backup is made until the record or the site map is corrected"
    )]
    UnknownSite {
        url: String,
        site: String,
        known: String,
    },
    #[error("cannot write the active-site record {url}: {detail}")]
    Unwritable { url: String, detail: String },
    #[error("cannot find where the active-site record lives: {0}")]
    NoLocation(String),
}

impl RecordError {
    /// The `Ready` condition's reason for it.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Missing { .. } => "ActiveSiteMissing",
            RecordError::Unreadable { .. } | RecordError::NoLocation(_) => "ActiveSiteUnreadable",
            RecordError::Invalid { .. } => "ActiveSiteInvalid",
            RecordError::UnknownSite { .. } => "ActiveSiteUnknown",
            RecordError::Unwritable { .. } => "ActiveSiteUnwritable",
        }
    }
}

/// What a takeover did to one location's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// `s3://bucket/key`.
    pub url: String,
    pub location: String,
    pub record: ActiveSite,
    /// The site named before, if any record existed.
    pub previous: Option<String>,
    /// False when the record already named this site (nothing was written).
    pub written: bool,
}

/// Why `replicadr activate` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivateError {
    #[error(
        "the active-site record {url} already names {}: a site becomes active only by `replicadr failover` or `replicadr failback`, which restore its workload first",
        record.describe()
    )]
    OtherSiteActive { url: String, record: ActiveSite },
    #[error("{0}")]
    WrongSite(String),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The epoch a takeover by `site` runs under: the first storage location's record's epoch when it
/// names `site` already (a re-run of the same takeover), else the next one. `None` when the record
/// cannot be read: then no earlier Restore counts as the takeover's own.
pub async fn takeover_epoch(
    client: &Client,
    namespace: &str,
    site: &str,
    sites: &SiteMap,
) -> Option<u64> {
    let record = Record::every(client, namespace)
        .await
        .ok()?
        .into_iter()
        .next()?;
    match record.read().await.ok()? {
        None => Some(1),
        Some(current) => {
            known(&current, sites).ok()?;
            Some(if current.site == site {
                current.epoch
            } else {
                current.epoch + 1
            })
        }
    }
}

/// `replicadr activate --site <site>`: at the site named, which its plugin ConfigMap must confirm,
/// writes the first active-site record of `location` (every BackupStorageLocation of the namespace
/// when `None`). Locations whose record names `site` already are left as they are.
pub async fn activate(
    client: &Client,
    namespace: &str,
    site: &str,
    location: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Change>, ActivateError> {
    let config = backup_site::site_config(client, namespace, &SiteMapSource::default())
        .await
        .map_err(|e| ActivateError::WrongSite(e.to_string()))?;
    let local = config.local_site.as_str();
    if local != site {
        return Err(ActivateError::WrongSite(format!(
            "--site is {site:?} but this cluster's plugin ConfigMap {namespace}/{} names localSite {local:?}; run the command against the cluster of site {site}",
            config_name()
        )));
    }
    let records = match location {
        Some(name) => {
            vec![Record::open(client, namespace, Some(name), "--storage-location").await?]
        }
        None => Record::every(client, namespace).await?,
    };
    let mut changes = Vec::new();
    for record in records {
        changes.push(record.activate(site, now).await?);
    }
    Ok(changes)
}

fn config_name() -> String {
    SiteMapSource::default().configmap
}

/// One location's record.
#[derive(Debug, Clone)]
pub struct Record {
    store: ObjectStore,
    key: String,
    /// `namespace/name` of the BackupStorageLocation.
    location: String,
}

impl Record {
    /// The record of the BackupStorageLocation `location` (Velero's default when `None`), named
    /// by `user` ("BackupPolicy X") for messages.
    pub async fn open(
        client: &Client,
        namespace: &str,
        location: Option<&str>,
        user: &str,
    ) -> Result<Self, RecordError> {
        let verifier = Verifier::new(client.clone(), namespace);
        let location = verifier
            .storage_location_named(location, user)
            .await
            .map_err(|e| RecordError::NoLocation(e.message))?;
        Self::at(&verifier, namespace, &location).await
    }

    /// The records of every BackupStorageLocation in `namespace`: a takeover writes all of them,
    /// whichever location each policy uses.
    pub async fn every(client: &Client, namespace: &str) -> Result<Vec<Self>, RecordError> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &velero::storage_location_resource(),
        );
        let objects = api.list(&ListParams::default()).await.map_err(|e| {
            RecordError::NoLocation(format!(
                "cannot list BackupStorageLocations in {namespace}: {e}"
            ))
        })?;
        if objects.items.is_empty() {
            return Err(RecordError::NoLocation(format!(
                "namespace {namespace} has no BackupStorageLocation"
            )));
        }
        let verifier = Verifier::new(client.clone(), namespace);
        let mut records = Vec::new();
        for object in &objects.items {
            let location = StorageLocation::from_object(object).map_err(RecordError::NoLocation)?;
            records.push(Self::at(&verifier, namespace, &location).await?);
        }
        Ok(records)
    }

    async fn at(
        verifier: &Verifier,
        namespace: &str,
        location: &StorageLocation,
    ) -> Result<Self, RecordError> {
        let store = verifier
            .open_store(location)
            .await
            .map_err(|e| RecordError::NoLocation(e.message))?;
        Ok(Self {
            key: location.metadata_key(RECORD_FILE),
            store,
            location: format!("{namespace}/{}", location.name),
        })
    }

    /// `s3://bucket/key`.
    pub fn url(&self) -> String {
        self.store.url(&self.key)
    }

    /// `namespace/name` of the BackupStorageLocation.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The record as stored; `None` when there is none.
    pub async fn read(&self) -> Result<Option<ActiveSite>, RecordError> {
        let bytes = match self.store.get_bytes(&self.key).await {
            Ok(bytes) => bytes,
            Err(StoreError {
                reason: Reason::ObjectMissing,
                ..
            }) => return Ok(None),
            Err(error) => {
                return Err(RecordError::Unreadable {
                    url: self.url(),
                    location: self.location.clone(),
                    detail: error.message,
                });
            }
        };
        parse(&bytes)
            .map(Some)
            .map_err(|detail| RecordError::Invalid {
                url: self.url(),
                detail,
            })
    }

    /// The record, which must exist and name one of `sites`' sites.
    pub async fn current(&self, sites: &SiteMap) -> Result<ActiveSite, RecordError> {
        let record = self.read().await?.ok_or_else(|| RecordError::Missing {
            url: self.url(),
            location: self.location.clone(),
        })?;
        known(&record, sites).map_err(|known| RecordError::UnknownSite {
            url: self.url(),
            site: record.site.clone(),
            known,
        })?;
        Ok(record)
    }

    async fn write(&self, record: &ActiveSite) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec_pretty(record).expect("a record serializes");
        self.store
            .put_json(&self.key, bytes)
            .await
            .map_err(|e| RecordError::Unwritable {
                url: self.url(),
                detail: e.message,
            })
    }

    /// Makes `site` the active one by `operation` (restoring `backup`): a record naming another
    /// site, or none, is replaced with the next epoch; one already naming `site` is left as it is,
    /// so a re-run changes nothing. An invalid record is replaced too: the takeover is the
    /// operator's decision of which site is active.
    pub async fn take_over(
        &self,
        site: &str,
        operation: Takeover,
        backup: Option<&str>,
        now: Timestamp,
    ) -> Result<Change, RecordError> {
        let previous = match self.read().await {
            Ok(previous) => previous,
            Err(RecordError::Invalid { url, detail }) => {
                tracing::warn!(%url, %detail, "replacing an invalid active-site record");
                None
            }
            Err(error) => return Err(error),
        };
        if let Some(current) = previous.as_ref().filter(|r| r.site == site) {
            return Ok(self.change(current.clone(), Some(site), false));
        }
        let record = ActiveSite {
            format: FORMAT.to_owned(),
            site: site.to_owned(),
            epoch: previous.as_ref().map_or(1, |p| p.epoch + 1),
            since: now.to_string(),
            operation,
            backup: backup.map(str::to_owned),
            previous_site: previous.as_ref().map(|p| p.site.clone()),
        };
        self.write(&record).await?;
        tracing::info!(url = %self.url(), record = %record.describe(), "active site recorded");
        let before = previous.map(|p| p.site);
        Ok(self.change(record, before.as_deref(), true))
    }

    /// `replicadr activate`: writes the first record, naming `site`. A record naming `site`
    /// already is fine; one naming another site is refused.
    pub async fn activate(&self, site: &str, now: Timestamp) -> Result<Change, ActivateError> {
        if let Some(current) = self.read().await? {
            if current.site != site {
                return Err(ActivateError::OtherSiteActive {
                    url: self.url(),
                    record: current,
                });
            }
            return Ok(self.change(current, Some(site), false));
        }
        Ok(self.take_over(site, Takeover::Activate, None, now).await?)
    }

    fn change(&self, record: ActiveSite, previous: Option<&str>, written: bool) -> Change {
        Change {
            url: self.url(),
            location: self.location.clone(),
            record,
            previous: previous.map(str::to_owned),
            written,
        }
    }
}

/// Reads a record, checking its format and fields.
pub fn parse(bytes: &[u8]) -> Result<ActiveSite, String> {
    let record: ActiveSite = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if record.format != FORMAT {
        return Err(format!(
            "field format is {:?}; this version reads {FORMAT:?}",
            record.format
        ));
    }
    if record.site.trim().is_empty() {
        return Err("field site is empty".to_owned());
    }
    if record.epoch == 0 {
        return Err("field epoch is 0; epochs start at 1".to_owned());
    }
    record.since.parse::<Timestamp>().map_err(|e| {
        format!(
            "field since is {:?}, not an RFC 3339 time: {e}",
            record.since
        )
    })?;
    Ok(record)
}

/// Checks that `record` names one of `sites`' sites; the error lists them.
fn known(record: &ActiveSite, sites: &SiteMap) -> Result<(), String> {
    if sites.sites().iter().any(|s| s.as_str() == record.site) {
        return Ok(());
    }
    Err(sites
        .sites()
        .iter()
        .map(replicadr_core::sitemap::SiteName::as_str)
        .collect::<Vec<_>>()
        .join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(site: &str, epoch: u64) -> ActiveSite {
        ActiveSite {
            format: FORMAT.to_owned(),
            site: site.to_owned(),
            epoch,
            since: "2026-12-02T01:00:00Z".to_owned(),
            operation: Takeover::Failover,
            backup: Some("prod-vms-20261202-0000".to_owned()),
            previous_site: Some("primary".to_owned()),
        }
    }

    #[test]
    fn a_record_round_trips_and_names_its_fields_in_camel_case() {
        let record = record("dr", 2);
        let text = serde_json::to_string(&record).expect("serializes");
        assert!(text.contains("\"previousSite\":\"primary\""), "{text}");
        assert!(text.contains("\"operation\":\"failover\""), "{text}");
        assert_eq!(parse(text.as_bytes()).expect("parses"), record);
    }

    #[test]
    fn only_the_named_site_may_back_up_and_the_refusal_says_who_is_active() {
        let record = record("dr", 2);
        assert!(record.allows("dr").is_ok());
        let refusal = record.allows("primary").expect_err("not active");
        assert!(refusal.contains("site dr, active since 2026-12-02T01:00:00Z (failover of backup prod-vms-20261202-0000, epoch 2)"), "{refusal}");
        assert!(
            refusal.contains("replicadr failback --site primary"),
            "{refusal}"
        );
    }

    #[test]
    fn a_bad_record_is_refused_naming_the_field() {
        let good = serde_json::to_value(record("dr", 2)).expect("serializes");
        for (field, value, expected) in [
            ("format", serde_json::json!("v0"), "field format is \"v0\""),
            ("epoch", serde_json::json!(0), "field epoch is 0"),
            (
                "since",
                serde_json::json!("yesterday"),
                "field since is \"yesterday\"",
            ),
            ("site", serde_json::json!(" "), "field site is empty"),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            let error = parse(bad.to_string().as_bytes()).expect_err("invalid");
            assert!(error.contains(expected), "{field}: {error}");
        }
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn a_site_the_site_map_does_not_know_is_refused_listing_the_known_ones() {
        let map = SiteMap::from_yaml(
            "sites: [primary, dr]\nexports:\n  - name: vm-disks\n    primary: {server: a, path: /x}\n    dr: {server: b, path: /y}\n",
        )
        .expect("a site map");
        assert!(known(&record("dr", 1), &map).is_ok());
        assert_eq!(
            known(&record("moon", 1), &map).expect_err("unknown"),
            "primary, dr"
        );
    }
}
