//! `gateway demo`: placeholder until the agent library lands.

use anyhow::Result;
use std::path::PathBuf;

/// Runs the demo.
pub async fn run(_persons: usize, _out: Option<PathBuf>) -> Result<()> {
    anyhow::bail!("demo not built yet")
}
