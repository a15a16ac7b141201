//! Logs in the shape Velero understands: one hclog-style JSON object per line on stderr, with a
//! string `@level` (trace, debug, info, warn, error) and a string `@message`; other fields are
//! passed through. Velero re-emits these lines in its own log (and, during a backup, counts
//! `error` lines as backup errors, so `error` is kept for real failures). Stdout is never used:
//! it carries the go-plugin handshake.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Maps Velero's `--log-level` (logrus names) to a filter; unknown names fall back to info.
pub fn level_filter(logrus_level: Option<&str>) -> LevelFilter {
    match logrus_level.map(str::to_ascii_lowercase).as_deref() {
        Some("trace") => LevelFilter::TRACE,
        Some("debug") => LevelFilter::DEBUG,
        Some("warning" | "warn") => LevelFilter::WARN,
        Some("error" | "fatal" | "panic") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    }
}

/// Installs the stderr JSON logger as the global subscriber. `level` applies to the project's
/// own code; libraries (gRPC, HTTP/2, the Kubernetes client) log warnings and errors only, since
/// their debug output would flood Velero's log with transport frames.
pub fn init(level: LevelFilter) {
    let _ = tracing_subscriber::registry()
        .with(HclogJson.with_filter(targets(level)))
        .try_init();
}

fn targets(level: LevelFilter) -> Targets {
    Targets::new()
        .with_target("replicadr_plugins", level)
        .with_default(level.min(LevelFilter::WARN))
}

/// A `tracing` layer writing hclog-style JSON lines to stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct HclogJson;

impl<S: Subscriber> Layer<S> for HclogJson {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = render(event);
        // One write per line so concurrent events never interleave within a line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

fn render(event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut fields = FieldMap::default();
    event.record(&mut fields);
    let mut object = fields.0;
    let message = object
        .remove("message")
        .unwrap_or(Value::String(String::new()));
    let message = match message {
        Value::String(s) => s,
        other => other.to_string(),
    };
    object.insert("@level".into(), level_name(*meta.level()).into());
    object.insert("@message".into(), message.into());
    object.insert("@module".into(), meta.target().into());
    if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
        object.insert("logSource".into(), format!("{file}:{line}").into());
        // Tells Velero's log hook to keep our logSource instead of its own Go location.
        object.insert("@logSourceSetBy".into(), "plugin".into());
    }
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    line
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

#[derive(Default)]
struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logrus_level_names_map_to_filters() {
        assert_eq!(level_filter(Some("debug")), LevelFilter::DEBUG);
        assert_eq!(level_filter(Some("warning")), LevelFilter::WARN);
        assert_eq!(level_filter(Some("fatal")), LevelFilter::ERROR);
        assert_eq!(level_filter(Some("bogus")), LevelFilter::INFO);
        assert_eq!(level_filter(None), LevelFilter::INFO);
    }

    #[test]
    fn library_debug_output_is_filtered_out() {
        let filter = targets(LevelFilter::DEBUG);
        assert!(filter.would_enable("replicadr_plugins::framework", &Level::DEBUG));
        assert!(!filter.would_enable("h2::codec::framed_write", &Level::DEBUG));
        assert!(filter.would_enable("h2::codec::framed_write", &Level::WARN));
        let quiet = targets(LevelFilter::ERROR);
        assert!(!quiet.would_enable("kube_client", &Level::WARN));
    }

    #[test]
    fn events_render_as_hclog_json() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
                self.0.lock().expect("lock").push(render(event));
            }
        }
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(pv = "pv-1", count = 3, "cannot map nfs export");
        });
        let lines = capture.0.lock().expect("lock").clone();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with('\n') && !lines[0][..lines[0].len() - 1].contains('\n'));
        let value: Value = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!(value["@level"], "warn");
        assert_eq!(value["@message"], "cannot map nfs export");
        assert_eq!(value["pv"], "pv-1");
        assert_eq!(value["count"], 3);
        assert_eq!(value["@logSourceSetBy"], "plugin");
        assert!(
            value["logSource"]
                .as_str()
                .expect("string")
                .contains("logging.rs:")
        );
    }
}
