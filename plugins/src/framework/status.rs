//! Every way a request can fail, turned into a gRPC status in this one place. Velero shows the
//! message to the user (`error preparing persistentvolumes/pv-1: rpc error: code = Unknown desc = …`),
//! so messages name the plugin and the object; the code follows Go plugin servers (Unknown for
//! errors, Aborted for a recovered panic).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tonic::Status;

use super::cluster::LoadError;
use super::names::PluginKind;
use crate::actions::ItemError;

/// The action rejected the item.
pub fn item_error(plugin: &str, error: &ItemError) -> Status {
    tracing::warn!(plugin, error = %error, "item rejected");
    Status::unknown(format!("{plugin}: {error}"))
}

/// The action could not be built from its configuration, or the configuration could not be read.
pub fn load_error(error: &LoadError) -> Status {
    Status::unknown(error.to_string())
}

/// A request named a plugin this binary does not serve for that kind.
pub fn unknown_plugin(kind: PluginKind, name: &str, served: &[&str]) -> Status {
    Status::not_found(format!(
        "this binary serves no {} named {name:?}; it serves: {}",
        kind.as_str(),
        if served.is_empty() {
            "none".to_owned()
        } else {
            served.join(", ")
        }
    ))
}

/// A JSON payload from Velero could not be decoded.
pub fn bad_json(plugin: &str, field: &str, error: &serde_json::Error) -> Status {
    Status::invalid_argument(format!(
        "{plugin}: request field {field} is not a valid JSON object: {error}"
    ))
}

/// A response could not be encoded.
pub fn encode_error(plugin: &str, error: &serde_json::Error) -> Status {
    Status::internal(format!("{plugin}: cannot encode the item as JSON: {error}"))
}

/// Runs an action, turning a panic into an error for this item instead of a dead process.
pub fn guarded<T>(plugin: &str, run: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
    catch_unwind(AssertUnwindSafe(run))
        .unwrap_or_else(|payload| Err(panicked(plugin, payload.as_ref())))
}

/// Runs an asynchronous action, turning a panic into an error for this item.
pub async fn guarded_async<T>(
    plugin: &str,
    run: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    use futures::FutureExt as _;
    AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| Err(panicked(plugin, payload.as_ref())))
}

fn panicked(plugin: &str, payload: &(dyn Any + Send)) -> Status {
    let reason = panic_message(payload);
    tracing::error!(plugin, panic = %reason, "action panicked; the item fails, the plugin keeps serving");
    Status::aborted(format!(
        "{plugin}: internal error while processing the item: {reason}"
    ))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_aborted_statuses() {
        let status = guarded::<()>("replicadr.io/x", || panic!("boom")).expect_err("panicked");
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(status.message().contains("replicadr.io/x") && status.message().contains("boom"));
    }

    #[test]
    fn unknown_plugins_are_named_with_what_is_served() {
        let status = unknown_plugin(
            PluginKind::RestoreItemAction,
            "x.io/nope",
            &["replicadr.io/pv-site-remap"],
        );
        assert!(
            status.message().contains("\"x.io/nope\"")
                && status.message().contains("replicadr.io/pv-site-remap")
        );
    }
}
