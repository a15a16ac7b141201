//! Prometheus metrics, one struct per component, each registered in the sub-registry `main` hands
//! it: `replicadr_backup_*` (the scheduler's runs), `replicadr_verification_*` (the verifier) and
//! the RPO series (the recovery point each policy offers, from its status, on every replica).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

/// Labels of per-policy metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// Labels of per-policy, per-reason metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub policy: String,
    pub reason: String,
}

fn policy(name: &str) -> PolicyLabels {
    PolicyLabels {
        policy: name.to_owned(),
    }
}

fn duration_histogram() -> Histogram {
    // 1 s … ~9 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// The scheduler's runs: `replicadr_backup_*`.
#[derive(Debug, Clone)]
pub struct BackupMetrics {
    runs: Family<PolicyLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    missed: Family<PolicyLabels, Counter>,
    duration: Family<PolicyLabels, Histogram>,
}

impl BackupMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            runs: Family::default(),
            failures: Family::default(),
            missed: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        };
        registry.register(
            "runs",
            "Velero backups created, by policy",
            metrics.runs.clone(),
        );
        registry.register(
            "failures",
            "Backups that did not complete (Failed, PartiallyFailed, FailedValidation, TimedOut), by policy and reason",
            metrics.failures.clone(),
        );
        registry.register(
            "missed_runs",
            "Schedule slots that passed without a backup, by policy",
            metrics.missed.clone(),
        );
        registry.register_with_unit(
            "duration",
            "Time from a backup's creation to its final phase, by policy",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        metrics
    }

    pub fn run(&self, name: &str) {
        self.runs.get_or_create(&policy(name)).inc();
    }

    pub fn failure(&self, name: &str, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                policy: name.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn missed(&self, name: &str, count: u32) {
        self.missed
            .get_or_create(&policy(name))
            .inc_by(u64::from(count));
    }

    pub fn finished(&self, name: &str, seconds: f64) {
        self.duration.get_or_create(&policy(name)).observe(seconds);
    }
}

/// The verifier: `replicadr_verification_*`.
#[derive(Debug, Clone)]
pub struct VerificationMetrics {
    runs: Family<PolicyLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    duration: Family<PolicyLabels, Histogram>,
}

impl VerificationMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            runs: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.1, 2.0, 14))
            }),
        };
        registry.register(
            "runs",
            "Backup verifications run, by policy",
            metrics.runs.clone(),
        );
        registry.register(
            "failures",
            "Backup verifications that failed, by policy and the first failure's reason",
            metrics.failures.clone(),
        );
        registry.register_with_unit(
            "duration",
            "Time to verify one backup, by policy",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        metrics
    }

    /// Records one verification.
    pub fn observe(&self, name: &str, failure_reason: Option<&str>, seconds: f64) {
        self.runs.get_or_create(&policy(name)).inc();
        self.duration.get_or_create(&policy(name)).observe(seconds);
        if let Some(reason) = failure_reason {
            self.failures
                .get_or_create(&ReasonLabels {
                    policy: name.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }
}

/// The recovery point of each policy: `replicadr_rpo_seconds`, `replicadr_rpo_ratio`,
/// `replicadr_expected_interval_seconds`, `replicadr_last_verified_success_timestamp_seconds`,
/// `replicadr_has_verified_backup`, `replicadr_policy_paused`, and where the policy stands with
/// the active-site record: `replicadr_policy_standby` and `replicadr_active_site_record_error`.
#[derive(Debug, Clone)]
pub struct RpoMetrics {
    last_verified: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    expected_interval: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    rpo: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    ratio: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    has_verified: Family<PolicyLabels, Gauge>,
    paused: Family<PolicyLabels, Gauge>,
    standby: Family<PolicyLabels, Gauge>,
    record_error: Family<PolicyLabels, Gauge>,
}

impl RpoMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            last_verified: Family::default(),
            expected_interval: Family::default(),
            rpo: Family::default(),
            ratio: Family::default(),
            has_verified: Family::default(),
            paused: Family::default(),
            standby: Family::default(),
            record_error: Family::default(),
        };
        registry.register_with_unit(
            "last_verified_success_timestamp",
            "Start time (Unix) of the newest backup that passed verification, by policy",
            Unit::Seconds,
            metrics.last_verified.clone(),
        );
        registry.register_with_unit(
            "expected_interval",
            "Longest gap between the policy's schedule slots",
            Unit::Seconds,
            metrics.expected_interval.clone(),
        );
        registry.register_with_unit(
            "rpo",
            "Age of the newest verified backup (the recovery point objective achieved now); the policy's age while none is verified",
            Unit::Seconds,
            metrics.rpo.clone(),
        );
        registry.register(
            "rpo_ratio",
            "replicadr_rpo_seconds / replicadr_expected_interval_seconds: 1 is on time, above 2 is late",
            metrics.ratio.clone(),
        );
        registry.register(
            "has_verified_backup",
            "1 once the policy has a verified backup, else 0",
            metrics.has_verified.clone(),
        );
        registry.register(
            "policy_paused",
            "1 while the policy's spec.paused is true (no new backups are made; the RPO alerts stay silent), else 0",
            metrics.paused.clone(),
        );
        registry.register(
            "policy_standby",
            "1 while the active-site record names another site: this site makes no backups on purpose and the RPO alerts stay silent; else 0",
            metrics.standby.clone(),
        );
        registry.register(
            "active_site_record_error",
            "1 while the active-site record the policy's storage location holds is missing, unreadable, invalid or names an unknown site (no backups are made), else 0",
            metrics.record_error.clone(),
        );
        metrics
    }

    /// Sets a policy's values. `last_verified` is Unix seconds; `age` is measured from it (or from
    /// the policy's creation while nothing is verified).
    pub fn set(&self, name: &str, last_verified: Option<f64>, age: f64, interval: f64) {
        let labels = policy(name);
        if let Some(last) = last_verified {
            self.last_verified.get_or_create(&labels).set(last);
        } else {
            self.last_verified.remove(&labels);
        }
        self.has_verified
            .get_or_create(&labels)
            .set(i64::from(last_verified.is_some()));
        self.expected_interval.get_or_create(&labels).set(interval);
        self.rpo.get_or_create(&labels).set(age);
        let ratio = if interval > 0.0 { age / interval } else { 0.0 };
        self.ratio.get_or_create(&labels).set(ratio);
    }

    /// Sets whether a policy is paused (`replicadr_policy_paused`).
    pub fn set_paused(&self, name: &str, paused: bool) {
        self.paused
            .get_or_create(&policy(name))
            .set(i64::from(paused));
    }

    /// Sets where a policy stands with the active-site record: `standby` while the record names
    /// another site, `record_error` while it cannot be used.
    pub fn set_standing(&self, name: &str, standby: bool, record_error: bool) {
        let labels = policy(name);
        self.standby.get_or_create(&labels).set(i64::from(standby));
        self.record_error
            .get_or_create(&labels)
            .set(i64::from(record_error));
    }

    /// Drops a deleted policy's series.
    pub fn forget(&self, name: &str) {
        let labels = policy(name);
        self.last_verified.remove(&labels);
        self.expected_interval.remove(&labels);
        self.rpo.remove(&labels);
        self.ratio.remove(&labels);
        self.has_verified.remove(&labels);
        self.paused.remove(&labels);
        self.standby.remove(&labels);
        self.record_error.remove(&labels);
    }
}

/// The warm standby at this site: `replicadr_standby_*`.
#[derive(Debug, Clone)]
pub struct StandbyMetrics {
    lag: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    ready: Family<PolicyLabels, Gauge>,
    restore_duration: Family<PolicyLabels, Histogram>,
}

impl StandbyMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            lag: Family::default(),
            ready: Family::default(),
            restore_duration: Family::new_with_constructor(duration_histogram),
        };
        registry.register_with_unit(
            "lag",
            "Age of the backup the warm standby at this site holds (its recovery point), by policy; the policy's age while it holds none",
            Unit::Seconds,
            metrics.lag.clone(),
        );
        registry.register(
            "ready",
            "1 while the policy's StandbyReady condition is True at this site, else 0",
            metrics.ready.clone(),
        );
        registry.register_with_unit(
            "restore_duration",
            "Time of one standby refresh: Velero's update restore, the checks and the pruning, by policy",
            Unit::Seconds,
            metrics.restore_duration.clone(),
        );
        metrics
    }

    /// Sets a policy's standby lag and readiness.
    pub fn set(&self, name: &str, lag: f64, ready: bool) {
        let labels = policy(name);
        self.lag.get_or_create(&labels).set(lag);
        self.ready.get_or_create(&labels).set(i64::from(ready));
    }

    /// Records one refresh's duration.
    pub fn restored(&self, name: &str, seconds: f64) {
        self.restore_duration
            .get_or_create(&policy(name))
            .observe(seconds);
    }

    /// Drops a policy's series (deleted, or no standby here any more).
    pub fn forget(&self, name: &str) {
        let labels = policy(name);
        self.lag.remove(&labels);
        self.ready.remove(&labels);
    }
}

/// Every component's metrics, registered under `replicadr_`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub backup: BackupMetrics,
    pub verification: VerificationMetrics,
    pub rpo: RpoMetrics,
    pub standby: StandbyMetrics,
}

impl Metrics {
    /// Registers each component in its own sub-registry of `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            backup: BackupMetrics::register(registry.sub_registry_with_prefix("backup")),
            verification: VerificationMetrics::register(
                registry.sub_registry_with_prefix("verification"),
            ),
            // The RPO series are the project's headline numbers: no component prefix.
            standby: StandbyMetrics::register(registry.sub_registry_with_prefix("standby")),
            rpo: RpoMetrics::register(registry),
        }
    }

    /// A registry prefixed `replicadr` with every component registered.
    pub fn new_registry() -> (Registry, Self) {
        let mut registry = Registry::with_prefix("replicadr");
        let metrics = Self::register(&mut registry);
        (registry, metrics)
    }
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_per_component() {
        let (registry, metrics) = Metrics::new_registry();
        metrics.backup.run("vms");
        metrics.backup.missed("vms", 2);
        metrics.verification.observe("vms", Some("PvMissing"), 1.5);
        metrics.rpo.set("vms", Some(1000.0), 7200.0, 3600.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "replicadr_backup_runs_total{policy=\"vms\"} 1",
            "replicadr_backup_missed_runs_total{policy=\"vms\"} 2",
            "replicadr_verification_failures_total{policy=\"vms\",reason=\"PvMissing\"} 1",
            "replicadr_rpo_seconds{policy=\"vms\"} 7200.0",
            "replicadr_rpo_ratio{policy=\"vms\"} 2.0",
            "replicadr_expected_interval_seconds{policy=\"vms\"} 3600.0",
            "replicadr_last_verified_success_timestamp_seconds{policy=\"vms\"} 1000.0",
            "replicadr_has_verified_backup{policy=\"vms\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            text.contains("replicadr_verification_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn paused_is_exported_and_forget_drops_every_series_of_the_policy() {
        let (registry, metrics) = Metrics::new_registry();
        metrics.rpo.set("kept", Some(1000.0), 60.0, 3600.0);
        metrics.rpo.set_paused("kept", true);
        metrics.rpo.set("deleted", None, 60.0, 3600.0);
        metrics.rpo.set_paused("deleted", false);
        metrics.rpo.forget("deleted");
        let text = encode(&registry);
        assert!(
            text.contains("replicadr_policy_paused{policy=\"kept\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("replicadr_rpo_ratio{policy=\"kept\"}"),
            "{text}"
        );
        assert!(!text.contains("policy=\"deleted\""), "{text}");
    }
}
