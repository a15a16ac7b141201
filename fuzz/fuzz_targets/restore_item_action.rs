//! A RestoreItemAction request's item, as Velero sends it (JSON bytes), through `pv-site-remap`'s
//! public entry point, configured with the fixture site map at site `dr`. Bytes that are not JSON
//! end where the framework ends them, with a bad-request status; the rest reach the action as
//! both the item and the item from backup, with either reclaim-policy setting.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use replicadr_plugins::actions::pv_site_remap::PvSiteRemap;
use replicadr_plugins::actions::{RestoreInput, RestoreItemAction};
use serde_json::Value;

static ACTIONS: LazyLock<[PvSiteRemap; 2]> = LazyLock::new(|| {
    ["retain", "original"].map(|policy| {
        PvSiteRemap::from_config(Some(&replicadr_fuzz::plugin_config(&[(
            "restoreReclaimPolicy",
            policy,
        )])))
        .expect("fixture config")
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(item) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for action in &*ACTIONS {
        let input = RestoreInput {
            item: item.clone(),
            item_from_backup: Some(item.clone()),
            restore: Value::Null,
        };
        if let Ok(output) = replicadr_fuzz::first_poll(action.execute(input)) {
            // What the framework sends back must encode.
            serde_json::to_vec(&output.item).expect("an action's output item encodes");
        }
    }
});
