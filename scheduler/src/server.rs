//! The HTTP endpoints every replica serves: `/metrics` (`OpenMetrics` text, or the classic Prometheus
//! text format for clients that ask only for `text/plain`), `/healthz` (the process runs) and
//! `/readyz` (it has talked to the API server).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Shared state of the endpoints.
#[derive(Debug, Clone)]
pub struct Health {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Endpoints serving `registry`; not ready until [`Health::set_ready`].
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            ready: Arc::default(),
        }
    }

    /// Marks the process ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// Serves on `address` until `shutdown` is cancelled.
    pub async fn serve(
        &self,
        address: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// Content type of the `OpenMetrics` text the registry encodes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
const CLASSIC_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(health): State<Health>, headers: HeaderMap) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &health.registry) {
        Ok(()) => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let (content_type, body) = if wants_classic_text(accept) {
                (CLASSIC_TEXT, openmetrics_to_classic(&text))
            } else {
                (OPENMETRICS, text)
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Whether an `Accept` header asks for `text/plain` and not for `OpenMetrics` (Prometheus lists
/// both and gets `OpenMetrics`; `promtool check metrics` and older scrapers read only the classic
/// format).
fn wants_classic_text(accept: &str) -> bool {
    let types: Vec<&str> = accept
        .split(',')
        .map(|item| item.split(';').next().unwrap_or_default().trim())
        .collect();
    types.contains(&"text/plain") && !types.contains(&"application/openmetrics-text")
}

/// The classic text format of an `OpenMetrics` exposition as `prometheus-client` writes it: a
/// counter family is named with its `_total` suffix, and `# UNIT` and `# EOF` go. Sample lines
/// are the same in both formats.
fn openmetrics_to_classic(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut classic = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let declaration = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        if let Some((prefix, rest)) = declaration {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let tail = if tail == "unknown" { "untyped" } else { tail };
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            let _ = writeln!(classic, "{prefix}{name}{suffix} {tail}");
        } else {
            classic.push_str(line);
            classic.push('\n');
        }
    }
    classic
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_text_only_clients_the_classic_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(!wants_classic_text(prometheus));
        assert!(!wants_classic_text(""));
        assert!(!wants_classic_text("*/*"));
        assert!(wants_classic_text("text/plain; version=0.0.4"));
    }

    #[test]
    fn counters_are_named_with_total_and_unit_and_eof_go() {
        let (registry, metrics) = crate::metrics::Metrics::new_registry();
        metrics.backup.run("vms");
        metrics.rpo.set("vms", Some(1000.0), 60.0, 3600.0);
        let classic = openmetrics_to_classic(&crate::metrics::encode(&registry));
        assert!(
            classic.contains("# HELP replicadr_backup_runs_total Velero backups created, by policy.\n# TYPE replicadr_backup_runs_total counter\nreplicadr_backup_runs_total{policy=\"vms\"} 1\n"),
            "{classic}"
        );
        assert!(
            classic.contains(
                "# TYPE replicadr_rpo_seconds gauge\nreplicadr_rpo_seconds{policy=\"vms\"} 60.0\n"
            ),
            "{classic}"
        );
        assert!(
            !classic.contains("# UNIT") && !classic.contains("# EOF"),
            "{classic}"
        );
    }
}
