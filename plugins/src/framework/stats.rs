//! How long this process spent serving Execute, per plugin: logged once when Velero shuts the
//! process down, so a restore's log shows how its time split between Velero and this binary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

static SERVED: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

/// Counts one Execute of `plugin` that took `took` (decoding, the action and encoding).
pub fn record(plugin: &str, took: Duration) {
    let mut served = SERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = served.entry(plugin.to_owned()).or_default();
    entry.0 += 1;
    entry.1 += took;
}

/// Records the time from [`Timer::start`] to its drop, whatever the outcome.
#[derive(Debug)]
pub struct Timer {
    plugin: String,
    started: std::time::Instant,
}

impl Timer {
    pub fn start(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        record(&self.plugin, self.started.elapsed());
    }
}

/// Logs one line per plugin that served any Execute: `calls` and `execute_ms`.
pub fn log_summary() {
    let served = SERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (plugin, (calls, took)) in served.iter() {
        tracing::info!(
            plugin = %plugin,
            calls = *calls,
            execute_ms = format!("{:.3}", took.as_secs_f64() * 1000.0),
            "execute time served by this process"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_calls_and_time_per_plugin() {
        record("test.io/a", Duration::from_millis(2));
        record("test.io/a", Duration::from_millis(3));
        let served = SERVED.lock().expect("lock");
        assert_eq!(served["test.io/a"], (2, Duration::from_millis(5)));
    }
}
