//! The shipped monitoring (`manifests/base/prometheusrule.yaml`, `manifests/monitoring/grafana-dashboard.json`)
//! proven with the real Prometheus (`bash hack/build-prometheus.sh`) against the real scheduler
//! binary, on a real kube-apiserver + etcd and S3. Build the binaries first:
//! `cargo build --workspace --bins`.
//!
//! - `promtool check metrics` lints a real scrape of the scheduler's `/metrics`.
//! - `promtool check rules` checks the shipped rule groups; `promtool test rules` runs unit tests,
//!   written here from that scrape, for every alert: each fires when it should and stays silent
//!   when it should not. The input series carry the metric names and label sets the scrape shows,
//!   plus the target labels (`job`, `instance`, `namespace`) a `ServiceMonitor` scrape adds.
//! - Every dashboard query parses (as a recording rule under `promtool check rules`) and names only
//!   metrics and labels the scrape shows.
//! - A real `prometheus` server scrapes the running scheduler and evaluates the shipped rules: after
//!   a verified backup the RPO ratio is below 1 and nothing is pending; a failed verification makes
//!   `ReplicaDRVerificationFailing` fire; a stopped scheduler makes `ReplicaDRSchedulerDown` fire.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use jiff::Timestamp;
use replicadr_e2e::backup_env::BackupEnv;
use replicadr_e2e::scheduler_process::SchedulerProcess;
use replicadr_lab::fixture;
use replicadr_lab::prometheus::{PrometheusServer, promtool};
use replicadr_scheduler::active_site::Takeover;
use replicadr_scheduler::velero::BackupView;
use serde_json::{Value, json};

const RULES: &str = include_str!("../../manifests/base/prometheusrule.yaml");
const DASHBOARD: &str = include_str!("../../manifests/monitoring/grafana-dashboard.json");

/// The labels a Prometheus Operator scrape of the shipped `ServiceMonitor` adds to every series
/// (`job` is the Service's name). The rules aggregate by `namespace`.
const JOB: &str = "replicadr-scheduler";
/// What Prometheus asks a target for first.
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";
const NAMESPACE: &str = "velero";

/// Waits up to `timeout` for `check` to give a value.
async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::new(),
            Err(error) => format!(": {error:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what} did not happen within {timeout:?}{last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The newest Backup of `policy` other than those in `seen`, once the scheduler has created it
/// (real time: an `@every 1m` slot comes within a minute).
async fn next_backup(env: &BackupEnv, policy: &str, seen: &[String]) -> anyhow::Result<BackupView> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let backups = env.backup_views().await?;
        if let Some(backup) = backups
            .into_iter()
            .filter(|b| b.policy.as_deref() == Some(policy) && !seen.contains(&b.name))
            .max_by(|a, b| a.name.cmp(&b.name))
        {
            return Ok(backup);
        }
        ensure!(
            Instant::now() < deadline,
            "no new backup of policy {policy} within 90s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Plays Velero completing `backup`: with the healthy fixture it verifies; `truncated` cuts the
/// tarball in half, which verification rejects.
async fn complete(env: &BackupEnv, backup: &str, truncated: bool) -> anyhow::Result<()> {
    let (tarball, list) = fixture::healthy_vm_backup()?;
    let tarball = if truncated {
        &tarball[..tarball.len() / 2]
    } else {
        &tarball[..]
    };
    env.complete_backup(backup, tarball, &list, "Completed", Timestamp::now())
        .await
}

/// One series of a scrape: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// What a `/metrics` scrape declares (`# TYPE` lines: family name and type) and the series it
/// holds.
#[derive(Debug)]
struct Scrape {
    families: BTreeMap<String, String>,
    series: Vec<Series>,
}

impl Scrape {
    /// Parses the text exposition format (label values as the scheduler writes them: no escaped
    /// quotes or commas, which policy names and reasons cannot contain).
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut families = BTreeMap::new();
        let mut series = Vec::new();
        for line in text.lines() {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declaration
                    .split_once(' ')
                    .with_context(|| format!("a TYPE line: {line}"))?;
                families.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name, labels) = match line.split_once('{') {
                Some((name, rest)) => {
                    let (labels, _) = rest
                        .split_once('}')
                        .with_context(|| format!("a label set: {line}"))?;
                    let labels = labels
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair
                                .split_once('=')
                                .with_context(|| format!("a label: {line}"))?;
                            Ok((key.to_owned(), value.trim_matches('"').to_owned()))
                        })
                        .collect::<anyhow::Result<_>>()?;
                    (name, labels)
                }
                None => (
                    line.split_once(' ')
                        .with_context(|| format!("a sample: {line}"))?
                        .0,
                    BTreeMap::new(),
                ),
            };
            series.push(Series {
                name: name.to_owned(),
                labels,
            });
        }
        Ok(Self { families, series })
    }

    /// The one series `name` with label `policy="<policy>"` (and `extra` labels, if any).
    fn find(&self, name: &str, policy: &str) -> anyhow::Result<&Series> {
        let mut found = self.series.iter().filter(|s| {
            s.name == name && s.labels.get("policy").map(String::as_str) == Some(policy)
        });
        let series = found
            .next()
            .with_context(|| format!("the scrape has no {name}{{policy=\"{policy}\"}}"))?;
        ensure!(
            found.next().is_none(),
            "{name}{{policy=\"{policy}\"}} is not unique"
        );
        Ok(series)
    }

    /// A family the scrape declares with `# TYPE`, checked to be of `kind`.
    fn family(&self, name: &str, kind: &str) -> anyhow::Result<String> {
        // OpenMetrics declares counters without their `_total` suffix.
        let declared = name.strip_suffix("_total").unwrap_or(name);
        match self.families.get(declared) {
            Some(found) if found == kind => Ok(name.to_owned()),
            Some(found) => bail!("{declared} is a {found} in the scrape, not a {kind}"),
            None => bail!("the scrape declares no family {declared}"),
        }
    }

    /// Every series name and every label name the scrape shows.
    fn names(&self) -> (BTreeSet<&str>, BTreeSet<&str>) {
        let names = self.series.iter().map(|s| s.name.as_str()).collect();
        let labels = self
            .series
            .iter()
            .flat_map(|s| s.labels.keys().map(String::as_str))
            .collect();
        (names, labels)
    }
}

/// A series selector for promtool's input: `series`'s name (or `rename`d, keeping its labels) with
/// the scrape target's labels added.
fn input_series(series: &Series, rename: Option<&str>) -> String {
    let mut labels = series.labels.clone();
    labels.insert("job".into(), JOB.into());
    labels.insert("instance".into(), "10.0.0.7:8080".into());
    labels.insert("namespace".into(), NAMESPACE.into());
    selector(rename.unwrap_or(&series.name), &labels)
}

fn selector(name: &str, labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", pairs.join(", "))
}

/// The shipped `PrometheusRule`'s `spec` (its rule groups) as a Prometheus rule file; each `for:`
/// replaced by `hold`, when given. Only this copy is rewritten, never the shipped file.
fn rule_file(hold: Option<&str>) -> anyhow::Result<String> {
    let rule: Value = serde_yaml_ng::from_str(RULES)?;
    ensure!(rule["kind"] == "PrometheusRule", "not a PrometheusRule");
    let mut groups = rule["spec"]["groups"].clone();
    if let Some(hold) = hold {
        for group in groups.as_array_mut().context("groups")? {
            for rule in group["rules"].as_array_mut().context("rules")? {
                if rule.get("for").is_some() {
                    rule["for"] = json!(hold);
                }
            }
        }
    }
    Ok(serde_yaml_ng::to_string(&json!({ "groups": groups }))?)
}

/// The alert names the shipped rules define.
fn shipped_alerts() -> anyhow::Result<BTreeSet<String>> {
    let rules: Value = serde_yaml_ng::from_str(&rule_file(None)?)?;
    Ok(rules["groups"]
        .as_array()
        .context("groups")?
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect())
}

/// `ALERTS` as promtool reports it for an alert in `state` with the alert's output labels.
fn alert_sample(alert: &str, state: &str, severity: &str, labels: &[(&str, &str)]) -> Value {
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.insert("alertname".into(), alert.into());
    all.insert("alertstate".into(), state.into());
    all.insert("severity".into(), severity.into());
    json!({"labels": selector("ALERTS", &all), "value": 1})
}

/// A promtool check that, at `at`, exactly `alerts` are pending or firing.
fn alerts_at(at: &str, alerts: &[Value]) -> Value {
    json!({"expr": "ALERTS", "eval_time": at, "exp_samples": alerts})
}

/// The `promtool test rules` file: one test group per case the shipped alerts must get right,
/// every input series shaped like `scrape`'s.
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn rule_tests(scrape: &Scrape) -> anyhow::Result<(Value, BTreeSet<String>)> {
    let ratio = scrape.find(&scrape.family("replicadr_rpo_ratio", "gauge")?, "vms")?;
    let has_verified = scrape.find(
        &scrape.family("replicadr_has_verified_backup", "gauge")?,
        "vms",
    )?;
    let failures = scrape.find(
        &scrape.family("replicadr_verification_failures_total", "counter")?,
        "broken",
    )?;
    let record_error = scrape.find(
        &scrape.family("replicadr_active_site_record_error", "gauge")?,
        "vms",
    )?;
    let interval = scrape.find(
        &scrape.family("replicadr_expected_interval_seconds", "gauge")?,
        "vms",
    )?;
    // The standby's lag carries the same labels as every per-policy gauge.
    let lag = json!({"series": input_series(ratio, Some("replicadr_standby_lag_seconds")), "values": "3600x10 9000x30"});
    let reason = failures.labels["reason"].clone();
    let up = up_series();
    let vms = [("namespace", NAMESPACE), ("policy", "vms")];
    let series =
        |s: &Series, values: &str| json!({"series": input_series(s, None), "values": values});
    let healthy_up = json!({"series": up, "values": "1x300"});

    let mut covered = BTreeSet::new();
    let mut case = |name: &str, alerts: &[&str], input: Vec<Value>, checks: Vec<Value>| {
        covered.extend(alerts.iter().map(|a| (*a).to_owned()));
        json!({"name": name, "interval": "1m", "input_series": input, "promql_expr_test": checks})
    };
    let tests = vec![
        case(
            "late by twice the interval: pending, then firing after 5m; not yet critical",
            &["ReplicaDRRecoveryPointLate"],
            vec![
                series(ratio, "2.5x30"),
                series(has_verified, "1x30"),
                healthy_up.clone(),
            ],
            vec![
                alerts_at(
                    "3m",
                    &[alert_sample(
                        "ReplicaDRRecoveryPointLate",
                        "pending",
                        "warning",
                        &vms,
                    )],
                ),
                alerts_at(
                    "6m",
                    &[alert_sample(
                        "ReplicaDRRecoveryPointLate",
                        "firing",
                        "warning",
                        &vms,
                    )],
                ),
            ],
        ),
        case(
            "late by three times the interval: late and critical",
            &["ReplicaDRRecoveryPointCritical"],
            vec![
                series(ratio, "3x30"),
                series(has_verified, "1x30"),
                healthy_up.clone(),
            ],
            vec![alerts_at(
                "6m",
                &[
                    alert_sample("ReplicaDRRecoveryPointCritical", "firing", "critical", &vms),
                    alert_sample("ReplicaDRRecoveryPointLate", "firing", "warning", &vms),
                ],
            )],
        ),
        case(
            "no verified backup for more than two intervals",
            &["ReplicaDRNoVerifiedBackup"],
            vec![
                series(ratio, "2.5x30"),
                series(has_verified, "0x30"),
                healthy_up.clone(),
            ],
            vec![alerts_at(
                "6m",
                &[
                    alert_sample("ReplicaDRNoVerifiedBackup", "firing", "critical", &vms),
                    alert_sample("ReplicaDRRecoveryPointLate", "firing", "warning", &vms),
                ],
            )],
        ),
        case(
            "verification failing: the reason's counter appears at 1, later rises to 2; silent two hours after",
            &["ReplicaDRVerificationFailing"],
            vec![series(failures, "_x5 1x60 2x200"), healthy_up.clone()],
            {
                let failing = || {
                    vec![alert_sample(
                        "ReplicaDRVerificationFailing",
                        "firing",
                        "warning",
                        &[
                            ("namespace", NAMESPACE),
                            ("policy", "broken"),
                            ("reason", &reason),
                        ],
                    )]
                };
                vec![
                    alerts_at("4m", &[]),
                    alerts_at("5m", &failing()),
                    alerts_at("70m", &failing()),
                    alerts_at("3h", &failing()),
                    alerts_at("4h", &[]),
                ]
            },
        ),
        case(
            "scheduler down: no healthy target for 10m",
            &["ReplicaDRSchedulerDown"],
            vec![
                series(ratio, "0.5x30"),
                series(has_verified, "1x30"),
                json!({"series": up, "values": "1x5 0x30"}),
            ],
            vec![
                alerts_at(
                    "10m",
                    &[alert_sample(
                        "ReplicaDRSchedulerDown",
                        "pending",
                        "warning",
                        &[],
                    )],
                ),
                alerts_at(
                    "16m",
                    &[alert_sample(
                        "ReplicaDRSchedulerDown",
                        "firing",
                        "warning",
                        &[],
                    )],
                ),
            ],
        ),
        case(
            "scheduler down: its target gone altogether",
            &[],
            vec![series(ratio, "0.5x5")],
            vec![alerts_at(
                "20m",
                &[alert_sample(
                    "ReplicaDRSchedulerDown",
                    "firing",
                    "warning",
                    &[],
                )],
            )],
        ),
        case(
            "the active-site record unusable for 10m: critical",
            &["ReplicaDRActiveSiteUnusable"],
            vec![
                series(ratio, "0.1x30"),
                series(has_verified, "1x30"),
                series(record_error, "0x5 1x25"),
                healthy_up.clone(),
            ],
            vec![
                alerts_at(
                    "10m",
                    &[alert_sample(
                        "ReplicaDRActiveSiteUnusable",
                        "pending",
                        "critical",
                        &vms,
                    )],
                ),
                alerts_at(
                    "16m",
                    &[alert_sample(
                        "ReplicaDRActiveSiteUnusable",
                        "firing",
                        "critical",
                        &vms,
                    )],
                ),
            ],
        ),
        case(
            "the standby holds a backup more than twice the interval old for 15m: warning",
            &["ReplicaDRStandbyLagging"],
            vec![
                series(ratio, "0.1x40"),
                series(has_verified, "1x40"),
                json!({"series": input_series(interval, None), "values": "3600x40"}),
                lag,
                healthy_up.clone(),
            ],
            vec![
                alerts_at("9m", &[]),
                alerts_at(
                    "20m",
                    &[alert_sample(
                        "ReplicaDRStandbyLagging",
                        "pending",
                        "warning",
                        &vms,
                    )],
                ),
                alerts_at(
                    "30m",
                    &[alert_sample(
                        "ReplicaDRStandbyLagging",
                        "firing",
                        "warning",
                        &vms,
                    )],
                ),
            ],
        ),
        case(
            "on time: silent",
            &[],
            vec![
                series(ratio, "0.1+0.01x60"),
                series(has_verified, "1x60"),
                healthy_up.clone(),
            ],
            vec![alerts_at("10m", &[]), alerts_at("59m", &[])],
        ),
        case(
            "a deleted policy: its series disappear and its alerts resolve",
            &[],
            vec![
                series(ratio, "3x10 stale"),
                series(has_verified, "1x10 stale"),
                healthy_up,
            ],
            vec![
                alerts_at(
                    "8m",
                    &[
                        alert_sample("ReplicaDRRecoveryPointCritical", "firing", "critical", &vms),
                        alert_sample("ReplicaDRRecoveryPointLate", "firing", "warning", &vms),
                    ],
                ),
                alerts_at("12m", &[]),
            ],
        ),
    ];
    Ok((rule_test_file(&tests), covered))
}

fn rule_test_file(tests: &[Value]) -> Value {
    json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
}

/// `up` is written by Prometheus, not the scheduler: only the target labels.
fn up_series() -> String {
    selector(
        "up",
        &BTreeMap::from([
            ("job".to_owned(), JOB.to_owned()),
            ("instance".to_owned(), "10.0.0.7:8080".to_owned()),
            ("namespace".to_owned(), NAMESPACE.to_owned()),
        ]),
    )
}

/// Rule tests for a policy that makes no backups on purpose, from a scrape that shows `gauge` at 1
/// for policy `name` (`replicadr_policy_paused`, `replicadr_policy_standby`): three intervals late
/// and never verified, it raises nothing; the same series with the gauge at 0 raise the RPO alerts,
/// so it is the gauge that silences them.
fn silenced_rule_tests(scrape: &Scrape, gauge: &str, name: &str) -> anyhow::Result<Value> {
    let paused = scrape.find(&scrape.family(gauge, "gauge")?, name)?;
    let ratio = scrape.find(&scrape.family("replicadr_rpo_ratio", "gauge")?, name)?;
    let has_verified = scrape.find(
        &scrape.family("replicadr_has_verified_backup", "gauge")?,
        name,
    )?;
    let input = |paused_value: &str| {
        json!([
            {"series": input_series(ratio, None), "values": "3.5x30"},
            {"series": input_series(has_verified, None), "values": "0x30"},
            {"series": input_series(paused, None), "values": paused_value},
            {"series": up_series(), "values": "1x30"},
        ])
    };
    let labels = [("namespace", NAMESPACE), ("policy", name)];
    Ok(rule_test_file(&[
        json!({"name": format!("{gauge} 1, three intervals late, never verified: silent"),
               "interval": "1m", "input_series": input("1x30"),
               "promql_expr_test": [alerts_at("10m", &[]), alerts_at("29m", &[])]}),
        json!({"name": format!("the same policy with {gauge} 0: late, critical and never verified"),
        "interval": "1m", "input_series": input("0x30"),
        "promql_expr_test": [alerts_at("10m", &[
            alert_sample("ReplicaDRNoVerifiedBackup", "firing", "critical", &labels),
            alert_sample("ReplicaDRRecoveryPointCritical", "firing", "critical", &labels),
            alert_sample("ReplicaDRRecoveryPointLate", "firing", "warning", &labels),
        ])]}),
    ]))
}

/// Runs [`silenced_rule_tests`] for `gauge` of policy `name`, from the scrape `text`, with
/// `promtool test rules` against the shipped rules; they must pass.
fn silenced_rule_tests_pass(text: &str, gauge: &str, name: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("rules.yaml"), rule_file(None)?)?;
    let tests =
        serde_yaml_ng::to_string(&silenced_rule_tests(&Scrape::parse(text)?, gauge, name)?)?;
    std::fs::write(dir.path().join("tests.yaml"), &tests)?;
    let unit = promtool(&["test", "rules", "tests.yaml"], dir.path(), None)?;
    assert!(
        unit.success,
        "promtool test rules:\n{}\n{tests}",
        unit.text()
    );
    Ok(())
}

/// Every `PromQL` expression of the dashboard (panel targets and variable queries' metrics), with
/// Grafana's variables replaced by values Prometheus accepts.
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let dashboard: Value = serde_json::from_str(DASHBOARD)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let title = panel["title"].as_str().context("a panel title")?;
        let targets = panel["targets"].as_array().context("targets")?;
        ensure!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().context("a target expr")?;
            queries.push((format!("panel {title}"), grafana_to_promql(expr)));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .context("templating")?
    {
        let query = variable["query"]["query"]
            .as_str()
            .context("a variable query")?;
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .with_context(|| {
                format!("variable query {query} is not label_values(selector, label)")
            })?;
        queries.push((
            format!("variable {}", variable["name"]),
            // The selector must parse, and the label must be one the selector's series have.
            format!(
                "count by ({}) ({})",
                inner.1.trim(),
                grafana_to_promql(inner.0)
            ),
        ));
    }
    Ok(queries)
}

fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$namespace", ".*")
        .replace("$policy", ".*")
}

/// The metric names (`replicadr_*`) and label names a `PromQL` expression uses: identifiers that
/// start with `replicadr_` outside `{…}`, the label names of `{…}` matchers and of `by (…)` /
/// `without (…)` clauses. String literals and `[…]` ranges are skipped.
fn names_used(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let bytes = expr.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_past = |from: usize, close: u8| {
        let mut at = from + 1;
        while at < bytes.len() && bytes[at] != close {
            at += if bytes[at] == b'\\' { 2 } else { 1 };
        }
        at + 1
    };
    let mut in_matchers = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_past(i, b'"'),
            b'[' => i = skip_past(i, b']'),
            b'{' | b'}' => {
                in_matchers = bytes[i] == b'{';
                i += 1;
            }
            c if is_ident(c) && !c.is_ascii_digit() => {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let rest = expr[i..].trim_start();
                if in_matchers {
                    labels.insert(word.to_owned());
                } else if matches!(word, "by" | "without" | "on" | "ignoring")
                    && rest.starts_with('(')
                {
                    let close = rest.find(')').unwrap_or(rest.len());
                    labels.extend(
                        rest[1..close]
                            .split(',')
                            .map(|l| l.trim().to_owned())
                            .filter(|l| !l.is_empty()),
                    );
                    i = expr.len() - rest.len() + close + 1;
                } else if word.starts_with("replicadr_") {
                    metrics.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    (metrics, labels)
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scrape, then each check on it in turn"
)]
async fn promtool_checks_the_scrape_rules_and_dashboard_and_unit_tests_every_alert()
-> anyhow::Result<()> {
    let env = BackupEnv::start(NAMESPACE).await?;
    let template = json!({"includedNamespaces": ["vms"]});
    for name in ["vms", "broken", "late"] {
        env.create_policy(name, json!({"schedule": "@every 1m", "template": template}))
            .await?;
    }
    // Policy late last ran five minutes ago (as after a scheduler outage): its next pass counts
    // the slots missed since.
    env.policies()
        .patch_status(
            "late",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {
                "lastScheduleTime": (Timestamp::now() - Duration::from_mins(5)).round(jiff::Unit::Second)?.to_string()
            }})),
        )
        .await?;
    let scheduler = SchedulerProcess::start(&env, "replica-a", 5)?;
    // A verified backup, one that fails verification and one Velero fails, so the scrape holds
    // every family with series: backup runs, failures and missed slots, verification runs and
    // failures by reason, both durations, the RPO series.
    let with_log =
        |error: anyhow::Error| error.context(format!("scheduler log:\n{}", scheduler.log_tail()));
    let good = next_backup(&env, "vms", &[]).await.map_err(with_log)?;
    let bad = next_backup(&env, "broken", &[]).await.map_err(with_log)?;
    let failed = next_backup(&env, "late", &[]).await.map_err(with_log)?;
    complete(&env, &good.name, false).await?;
    complete(&env, &bad.name, true).await?;
    env.set_phase(&failed.name, "Failed", Some(Timestamp::now()))
        .await?;
    let text = eventually("a scrape with every family", Duration::from_mins(1), || {
        let text = scheduler.scrape(OPENMETRICS)?;
        ensure!(
            text.contains("replicadr_has_verified_backup{policy=\"vms\"} 1")
                && text.contains("replicadr_verification_failures_total{policy=\"broken\"")
                && text
                    .contains("replicadr_backup_failures_total{policy=\"late\",reason=\"Failed\"}")
                && text.contains("replicadr_backup_missed_runs_total{policy=\"late\"}"),
            "the last scrape:\n{text}"
        );
        Ok(Some(text))
    })
    .await?;
    let scrape = Scrape::parse(&text)?;
    let dir = tempfile::tempdir()?;

    // The scrape, as Prometheus's own linter sees it: promtool reads the classic text format,
    // which the scheduler serves to clients that ask only for text/plain.
    let classic = scheduler.scrape("text/plain; version=0.0.4")?;
    assert!(
        !classic.contains("# EOF"),
        "not the classic format:\n{classic}"
    );
    let lint = promtool(&["check", "metrics"], dir.path(), Some(&classic))?;
    assert!(
        lint.success,
        "promtool check metrics:\n{}\non\n{classic}",
        lint.text()
    );

    // The shipped rules.
    std::fs::write(dir.path().join("rules.yaml"), rule_file(None)?)?;
    let check = promtool(&["check", "rules", "rules.yaml"], dir.path(), None)?;
    assert!(check.success, "promtool check rules:\n{}", check.text());
    assert!(
        check.stdout.contains("SUCCESS: 7 rules found"),
        "{}",
        check.text()
    );

    // Unit tests for every alert, from the scrape.
    let (tests, covered) = rule_tests(&scrape)?;
    assert_eq!(
        covered,
        shipped_alerts()?,
        "every shipped alert has a case that fires it"
    );
    let tests_yaml = serde_yaml_ng::to_string(&tests)?;
    std::fs::write(dir.path().join("tests.yaml"), &tests_yaml)?;
    let unit = promtool(&["test", "rules", "tests.yaml"], dir.path(), None)?;
    assert!(
        unit.success,
        "promtool test rules:\n{}\n{tests_yaml}",
        unit.text()
    );
    assert!(unit.text().contains("SUCCESS"), "{}", unit.text());

    // The same unit tests must fail against rules that never fire: they are not vacuous.
    let shipped = rule_file(None)?;
    let never_late = shipped
        .replace("(replicadr_rpo_ratio) > 2", "(replicadr_rpo_ratio) > 1000")
        .replace(
            "(replicadr_rpo_ratio) >= 3",
            "(replicadr_rpo_ratio) >= 1000",
        );
    assert_ne!(
        never_late, shipped,
        "the thresholds to raise are in the rules"
    );
    std::fs::write(dir.path().join("rules.yaml"), never_late)?;
    let broken = promtool(&["test", "rules", "tests.yaml"], dir.path(), None)?;
    assert!(
        !broken.success,
        "raised thresholds still pass:\n{}",
        broken.text()
    );

    // The dashboard: each query parses as a recording rule, and names only what the scheduler
    // exports (series names, label names) or a ServiceMonitor scrape adds.
    let queries = dashboard_queries()?;
    let recording: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("replicadr_dashboard:query_{i}"), "expr": expr}))
        .collect();
    std::fs::write(
        dir.path().join("dashboard-rules.yaml"),
        serde_yaml_ng::to_string(&json!({"groups": [{"name": "dashboard", "rules": recording}]}))?,
    )?;
    let parsed = promtool(
        &["check", "rules", "dashboard-rules.yaml"],
        dir.path(),
        None,
    )?;
    assert!(
        parsed.success,
        "dashboard queries:\n{}\n{queries:#?}",
        parsed.text()
    );
    let (exported, exported_labels) = scrape.names();
    let target_labels = ["namespace", "job", "instance"];
    for (place, expr) in &queries {
        let (metrics, labels) = names_used(expr);
        assert!(
            !metrics.is_empty(),
            "{place} reads no replicadr metric: {expr}"
        );
        for metric in &metrics {
            assert!(
                exported.contains(metric.as_str()),
                "{place} reads {metric}, which the scheduler does not export: {expr}"
            );
        }
        for label in &labels {
            assert!(
                exported_labels.contains(label.as_str()) || target_labels.contains(&label.as_str()),
                "{place} uses label {label}, which no scraped series has: {expr}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_real_prometheus_scraping_the_scheduler_fires_only_the_alerts_that_hold()
-> anyhow::Result<()> {
    let env = BackupEnv::start(NAMESPACE).await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@every 1m", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let mut scheduler = SchedulerProcess::start(&env, "replica-a", 5)?;
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n\
         - job_name: {JOB}\n\
         \x20 static_configs:\n\
         \x20 - targets: ['127.0.0.1:{}']\n\
         \x20   labels: {{namespace: {NAMESPACE}}}\n",
        scheduler.port
    );
    // The shipped rules with every `for:` shortened to 3s, in this copy only, so that pending
    // alerts would become firing within the test.
    let prometheus =
        PrometheusServer::start(&config, &[("rules.yaml", &rule_file(Some("3s"))?)]).await?;
    let loaded = prometheus.api("rules")?;
    let loaded_rules = loaded["groups"][0]["rules"].as_array().map_or(0, Vec::len);
    assert_eq!(loaded_rules, 7, "the shipped rules are loaded: {loaded}");

    // A verified backup: the RPO ratio is below 1 and no alert is pending or firing.
    let first = next_backup(&env, "vms", &[]).await?;
    complete(&env, &first.name, false).await?;
    let ratio = eventually(
        "a verified backup, as Prometheus sees it",
        Duration::from_secs(30),
        || {
            let verified =
                prometheus.query("replicadr_has_verified_backup{policy=\"vms\"} == 1")?;
            if verified.is_empty() {
                return Ok(None);
            }
            Ok(prometheus
                .query("replicadr_rpo_ratio{policy=\"vms\"}")?
                .first()
                .map(|s| s.value))
        },
    )
    .await?;
    assert!(
        ratio < 1.0,
        "RPO ratio {ratio} right after a verified backup"
    );
    let sample = &prometheus.query("replicadr_rpo_ratio")?[0];
    assert_eq!(
        sample.labels.get("namespace").map(String::as_str),
        Some(NAMESPACE),
        "{sample:?}"
    );
    assert_eq!(
        sample.labels.get("job").map(String::as_str),
        Some(JOB),
        "{sample:?}"
    );
    // Several evaluations (each 1s) with the shortened holds: anything that would fire has fired.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let alerts = prometheus.alerts()?;
    assert!(
        alerts.is_empty(),
        "alerts after a verified backup: {alerts:#?}"
    );
    let health = prometheus.target_health()?;
    assert!(health.values().all(|h| h == "up"), "{health:?}");

    // The next slot's backup fails verification: ReplicaDRVerificationFailing fires.
    let second = next_backup(&env, "vms", std::slice::from_ref(&first.name)).await?;
    complete(&env, &second.name, true).await?;
    let failing = eventually(
        "ReplicaDRVerificationFailing firing",
        Duration::from_secs(45),
        || {
            Ok(prometheus.alerts()?.into_iter().find(|a| {
                a["labels"]["alertname"] == "ReplicaDRVerificationFailing" && a["state"] == "firing"
            }))
        },
    )
    .await?;
    assert_eq!(failing["labels"]["policy"], "vms", "{failing:#}");
    assert_eq!(failing["labels"]["namespace"], NAMESPACE, "{failing:#}");
    assert_eq!(
        failing["labels"]["reason"], "TarballTruncated",
        "{failing:#}"
    );
    // What the first line of the rule alone sees of a counter created at 1: printed, not asserted
    // (a retried verification may have counted 2 by now).
    let increase = prometheus.query("increase(replicadr_verification_failures_total[2h])")?;
    println!("increase() of the new failure counter: {increase:?}");
    let others: Vec<Value> = prometheus
        .alerts()?
        .into_iter()
        .filter(|a| a["labels"]["alertname"] != "ReplicaDRVerificationFailing")
        .collect();
    assert!(
        others.is_empty(),
        "only the verification alert: {others:#?}"
    );

    // The scheduler stops: its target goes down and ReplicaDRSchedulerDown fires.
    scheduler.kill();
    let down = eventually(
        "ReplicaDRSchedulerDown firing",
        Duration::from_secs(30),
        || {
            Ok(prometheus.alerts()?.into_iter().find(|a| {
                a["labels"]["alertname"] == "ReplicaDRSchedulerDown" && a["state"] == "firing"
            }))
        },
    )
    .await?;
    assert_eq!(down["labels"]["severity"], "warning", "{down:#}");
    println!("prometheus log:\n{}", prometheus.log_tail());
    Ok(())
}

#[tokio::test]
async fn a_paused_policy_is_exported_as_paused_and_its_rpo_alerts_stay_silent() -> anyhow::Result<()>
{
    let env = BackupEnv::start(NAMESPACE).await?;
    env.create_policy(
        "paused",
        json!({"schedule": "@every 1m", "paused": true, "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let scheduler = SchedulerProcess::start(&env, "replica-a", 5)?;
    let text = eventually(
        "policy paused reported as paused",
        Duration::from_secs(20),
        || {
            let text = scheduler.scrape(OPENMETRICS)?;
            ensure!(
                text.contains("replicadr_policy_paused{policy=\"paused\"} 1"),
                "no replicadr_policy_paused{{policy=\"paused\"}} 1 in the last scrape:\n{text}"
            );
            Ok(Some(text))
        },
    )
    .await?;
    silenced_rule_tests_pass(&text, "replicadr_policy_paused", "paused")
}

#[tokio::test]
async fn a_standby_sites_policy_is_exported_as_standby_and_its_rpo_alerts_stay_silent()
-> anyhow::Result<()> {
    let env = BackupEnv::start(NAMESPACE).await?;
    env.create_policy(
        "standby",
        json!({"schedule": "@every 1m", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    // The other site took over: this one is the standby.
    env.make_active("dr", Takeover::Failover).await?;
    let scheduler = SchedulerProcess::start(&env, "replica-a", 5)?;
    let text = eventually(
        "policy standby reported as standby",
        Duration::from_secs(20),
        || {
            let text = scheduler.scrape(OPENMETRICS)?;
            ensure!(
                text.contains("replicadr_policy_standby{policy=\"standby\"} 1")
                    && text.contains("replicadr_active_site_record_error{policy=\"standby\"} 0"),
                "not reported as standby in the last scrape:\n{text}"
            );
            Ok(Some(text))
        },
    )
    .await?;
    assert!(
        env.backup_views().await?.is_empty(),
        "the standby site made a backup"
    );
    silenced_rule_tests_pass(&text, "replicadr_policy_standby", "standby")
}

#[test]
fn names_used_reads_metrics_and_labels_out_of_promql() {
    let (metrics, labels) = names_used(
        "histogram_quantile(0.95, sum by (policy, le) (rate(replicadr_backup_duration_seconds_bucket{namespace=~\"a,b\"}[5m]))) * on (policy) group_left replicadr_rpo_ratio",
    );
    assert_eq!(
        metrics,
        BTreeSet::from([
            "replicadr_backup_duration_seconds_bucket".to_owned(),
            "replicadr_rpo_ratio".to_owned()
        ])
    );
    assert_eq!(
        labels,
        BTreeSet::from(["le".to_owned(), "namespace".to_owned(), "policy".to_owned()])
    );
}

#[test]
fn a_scrape_is_read_into_families_and_series() -> anyhow::Result<()> {
    let scrape = Scrape::parse(
        "# HELP replicadr_backup_runs Velero backups\n# TYPE replicadr_backup_runs counter\n\
         replicadr_backup_runs_total{policy=\"vms\"} 1\n# TYPE replicadr_rpo_ratio gauge\n\
         replicadr_rpo_ratio{policy=\"vms\"} 0.5\n# EOF\n",
    )?;
    assert_eq!(
        scrape.family("replicadr_backup_runs_total", "counter")?,
        "replicadr_backup_runs_total"
    );
    assert!(scrape.family("replicadr_rpo_ratio", "counter").is_err());
    assert_eq!(
        scrape.find("replicadr_rpo_ratio", "vms")?.labels["policy"],
        "vms"
    );
    assert!(scrape.find("replicadr_rpo_ratio", "other").is_err());
    Ok(())
}
