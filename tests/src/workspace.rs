//! The project's own artefacts as the end-to-end tests find them: binaries built by cargo in this
//! workspace, and the repository's scripts.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives one level below the repository root")
        .to_path_buf()
}

/// A binary of this workspace, built in the same profile and target directory as the running
/// test (tests run from `<target>/<profile>/deps/`). Build it first with
/// `cargo build -p <crate>`; the error says so.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let test_exe = std::env::current_exe().context("cannot locate the running test binary")?;
    let profile_dir = test_exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("test binary is not in <target>/<profile>/deps")?;
    let binary = profile_dir.join(name);
    if !binary.is_file() {
        bail!(
            "{} not found; build it first (`cargo build --workspace --bins`, or `bash hack/test.sh`, which does)",
            binary.display()
        );
    }
    Ok(binary)
}

pub use replicadr_lab::peers::require_pinned as pinned;
