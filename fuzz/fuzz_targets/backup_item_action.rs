//! A BackupItemAction request's item, as Velero sends it (JSON bytes), through `pv-retain`'s
//! public entry point, configured with the fixture site map, with and without `retainUnmapped`.
//! Bytes that are not JSON end where the framework ends them, with a bad-request status.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use replicadr_plugins::actions::pv_retain::PvRetain;
use replicadr_plugins::actions::{BackupInput, BackupItemAction};
use serde_json::Value;

static ACTIONS: LazyLock<[PvRetain; 2]> = LazyLock::new(|| {
    ["false", "true"].map(|retain_unmapped| {
        PvRetain::from_config(Some(&replicadr_fuzz::plugin_config(&[(
            "retainUnmapped",
            retain_unmapped,
        )])))
        .expect("fixture config")
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(item) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for action in &*ACTIONS {
        let input = BackupInput {
            item: item.clone(),
            backup: Value::Null,
        };
        if let Ok(output) = action.execute(input) {
            serde_json::to_vec(&output.item).expect("an action's output item encodes");
        }
    }
});
