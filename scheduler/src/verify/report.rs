//! The outcome of verifying one backup: findings with a precise reason each, and the counts that
//! show what was looked at.

use std::collections::BTreeMap;
use std::fmt;

use replicadr_core::invariants::{self, Severity};
use serde::{Serialize, Serializer};

/// Why a backup failed verification: a backup invariant (the reasons `replicadr plan` reports
/// too), or a problem only reading the backup from object storage can find. The string forms are
/// metric labels, annotation values and condition reasons, so they never change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A backup invariant is broken (shared with `replicadr plan` and the failover).
    Backup(invariants::Reason),
    /// Velero did not finish the backup as Completed.
    BackupNotCompleted,
    /// The backup names a BackupStorageLocation that does not exist (or there is no default).
    StorageLocationNotFound,
    /// The BackupStorageLocation cannot be used (bad provider, no bucket).
    StorageLocationInvalid,
    /// The credentials Secret or its key is missing or has no usable profile.
    CredentialsMissing,
    /// Object storage rejected the credentials.
    CredentialsRejected,
    /// The bucket does not exist.
    BucketNotFound,
    /// Object storage could not be reached (transient: verification is retried).
    ObjectStoreUnreachable,
    /// Object storage's TLS certificate does not chain to a trusted CA (the system's, or the BSL's
    /// `caCert`/`caCertRef`), or does not name the endpoint's host.
    ObjectStoreUntrusted,
    /// A file Velero writes for every backup is not in object storage.
    ObjectMissing,
    /// The tarball or another gzip file is not valid gzip/tar, or its checksum does not match.
    TarballCorrupt,
    /// The tarball ends early.
    TarballTruncated,
    /// An item in the tarball is not a valid Kubernetes object.
    ItemInvalid,
    /// The tarball and Velero's resource list disagree.
    ResourceListMismatch,
    /// A PVC in the backup's scope that existed when the backup started is not in it (checked
    /// against the live cluster where the backup was taken).
    PvcMissing,
    /// The live PVCs or VolumeSnapshots in the backup's scope could not be listed, so the checks
    /// against the live cluster could not run (transient: verification is retried).
    LiveClusterUnreadable,
    /// The site map could not be read or is invalid.
    SiteMapUnavailable,
    /// The backup moved volume data (`PodVolumeBackups` or `DataUploads` exist).
    DataMoverUsed,
}

impl Reason {
    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Backup(reason) => reason.as_str(),
            Reason::BackupNotCompleted => "BackupNotCompleted",
            Reason::StorageLocationNotFound => "StorageLocationNotFound",
            Reason::StorageLocationInvalid => "StorageLocationInvalid",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::CredentialsRejected => "CredentialsRejected",
            Reason::BucketNotFound => "BucketNotFound",
            Reason::ObjectStoreUnreachable => "ObjectStoreUnreachable",
            Reason::ObjectStoreUntrusted => "ObjectStoreUntrusted",
            Reason::ObjectMissing => "ObjectMissing",
            Reason::TarballCorrupt => "TarballCorrupt",
            Reason::TarballTruncated => "TarballTruncated",
            Reason::ItemInvalid => "ItemInvalid",
            Reason::ResourceListMismatch => "ResourceListMismatch",
            Reason::PvcMissing => "PvcMissing",
            Reason::LiveClusterUnreadable => "LiveClusterUnreadable",
            Reason::SiteMapUnavailable => "SiteMapUnavailable",
            Reason::DataMoverUsed => "DataMoverUsed",
        }
    }

    /// Whether it fails verification: every reason does but the backup invariants' warnings.
    pub fn severity(self) -> Severity {
        match self {
            Reason::Backup(reason) => reason.severity(),
            _ => Severity::Blocking,
        }
    }

    /// Failures that may pass on a later attempt without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::ObjectStoreUnreachable | Reason::LiveClusterUnreadable
        )
    }
}

impl From<invariants::Reason> for Reason {
    fn from(reason: invariants::Reason) -> Self {
        Reason::Backup(reason)
    }
}

impl From<&replicadr_core::tarball::TarballError> for Reason {
    fn from(error: &replicadr_core::tarball::TarballError) -> Self {
        use replicadr_core::tarball::TarballError;
        match error {
            TarballError::Source { .. } => Reason::ObjectStoreUnreachable,
            TarballError::Truncated { .. } => Reason::TarballTruncated,
            TarballError::Corrupt { .. } => Reason::TarballCorrupt,
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub reason: Reason,
    pub message: String,
}

/// How many findings of one reason are kept word for word; the rest are counted.
pub(crate) const KEPT_PER_REASON: usize = 20;

/// Findings, at most 20 kept word for word per reason so a broken backup of 100,000 items
/// cannot fill memory with messages.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    kept: Vec<Finding>,
    counts: BTreeMap<Reason, u64>,
}

impl Findings {
    /// Records a finding.
    pub fn push(&mut self, reason: Reason, message: impl Into<String>) {
        let count = self.counts.entry(reason).or_default();
        *count += 1;
        if *count <= KEPT_PER_REASON as u64 {
            self.kept.push(Finding {
                reason,
                message: message.into(),
            });
        }
    }

    /// Adds every finding of `other`.
    pub fn extend(&mut self, other: Findings) {
        for finding in other.kept {
            self.push(finding.reason, finding.message);
        }
        for (reason, count) in other.counts {
            let kept = other_kept_count(count);
            *self.counts.entry(reason).or_default() += count - kept;
        }
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Whether a finding fails verification.
    pub fn has_blocking(&self) -> bool {
        self.counts
            .keys()
            .any(|reason| reason.severity() == Severity::Blocking)
    }

    /// The findings kept word for word.
    pub fn kept(&self) -> &[Finding] {
        &self.kept
    }

    /// How many findings of each reason there were.
    pub fn counts(&self) -> &BTreeMap<Reason, u64> {
        &self.counts
    }
}

fn other_kept_count(count: u64) -> u64 {
    count.min(KEPT_PER_REASON as u64)
}

/// What was looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Items in the tarball (each counted once, not once per version directory).
    pub items: u64,
    pub persistent_volume_claims: u64,
    pub persistent_volumes: u64,
    pub nfs_persistent_volumes: u64,
    pub volume_snapshots: u64,
    pub virtual_machines: u64,
    pub data_volumes: u64,
    /// VMIs a VM owned and KubeVirt's launcher and hotplug pods: the restore leaves them out
    /// (KubeVirt makes them again when the VM starts).
    pub left_out_of_restore: u64,
    /// Bytes read from object storage for the tarball.
    pub compressed_bytes: u64,
    /// Bytes of tar stream after decompression.
    pub uncompressed_bytes: u64,
}

/// Whether the live PVCs in a backup's scope were compared with the backup. Only the site that
/// made a backup has its workload: elsewhere the live PVCs are not the backup's scope.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "result")]
pub enum LiveScope {
    /// Verification ended before the check (nothing to read, or object storage failed).
    #[default]
    NotRun,
    /// Compared at the site that made the backup.
    Checked,
    /// Not compared, and why: a note, not a failure.
    Skipped { note: String },
}

/// The result of verifying one backup.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub backup: String,
    /// The site that made the backup (its `replicadr.io/site` label), when it can be named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The live-scope check: run at the site that made the backup, skipped elsewhere.
    pub live_scope: LiveScope,
    /// No blocking finding: warnings alone do not fail a backup.
    pub verified: bool,
    /// The first blocking finding's reason, or "Verified".
    pub reason: String,
    /// Blocking findings and warnings, at most 20 per reason.
    pub findings: Vec<Finding>,
    /// How many findings of each reason, including those not listed.
    pub finding_counts: BTreeMap<String, u64>,
    pub stats: Stats,
    pub duration_seconds: f64,
}

impl Report {
    /// Builds the report from what was found.
    pub fn new(backup: &str, findings: &Findings, stats: Stats, duration_seconds: f64) -> Self {
        let first = findings
            .kept()
            .iter()
            .find(|f| f.reason.severity() == Severity::Blocking);
        Self {
            backup: backup.to_owned(),
            site: None,
            live_scope: LiveScope::NotRun,
            verified: !findings.has_blocking(),
            reason: first.map_or("Verified", |f| f.reason.as_str()).to_owned(),
            findings: findings.kept().to_vec(),
            finding_counts: findings
                .counts()
                .iter()
                .map(|(r, c)| (r.as_str().to_owned(), *c))
                .collect(),
            stats,
            duration_seconds,
        }
    }

    /// The blocking findings kept word for word.
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.reason.severity() == Severity::Blocking)
    }

    /// The warnings kept word for word.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.reason.severity() == Severity::Warning)
    }

    /// The first blocking finding's reason.
    pub fn first_reason(&self) -> Option<Reason> {
        self.blocking().next().map(|f| f.reason)
    }

    /// Whether every failure may pass on a later attempt.
    pub fn is_transient(&self) -> bool {
        !self.verified && self.blocking().all(|f| f.reason.is_transient())
    }

    /// A one-line summary for annotations, events and conditions.
    pub fn summary(&self) -> String {
        let warnings: u64 = self
            .finding_counts
            .iter()
            .filter(|(reason, _)| {
                self.findings.iter().any(|f| {
                    f.reason.as_str() == reason.as_str() && f.reason.severity() == Severity::Warning
                })
            })
            .map(|(_, count)| count)
            .sum();
        if self.verified {
            let warned = if warnings > 0 {
                format!(", {warnings} warning(s)")
            } else {
                String::new()
            };
            let kubevirt = [
                (self.stats.data_volumes, "DataVolumes"),
                (
                    self.stats.left_out_of_restore,
                    "VMIs and KubeVirt pods the restore leaves out",
                ),
            ]
            .iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, what)| format!(", {count} {what}"))
            .collect::<Vec<_>>()
            .concat();
            return format!(
                "backup {} verified: {} items, {} PVCs, {} PVs ({} NFS), {} VMs, {} VolumeSnapshots{kubevirt}{warned}",
                self.backup,
                self.stats.items,
                self.stats.persistent_volume_claims,
                self.stats.persistent_volumes,
                self.stats.nfs_persistent_volumes,
                self.stats.virtual_machines,
                self.stats.volume_snapshots
            );
        }
        let total: u64 = self.finding_counts.values().sum::<u64>() - warnings;
        let first = self
            .blocking()
            .next()
            .map(|f| f.message.as_str())
            .unwrap_or_default();
        if total > 1 {
            format!(
                "backup {} failed verification ({}): {first} (and {} more)",
                self.backup,
                self.reason,
                total - 1
            )
        } else {
            format!(
                "backup {} failed verification ({}): {first}",
                self.backup, self.reason
            )
        }
    }
}
