//! Embeds the shipped agreements (`policies/agreements/*.toml`) and their golden decision files
//! (`policies/tests/*.toml`), so `gateway serve`, `gateway demo` and `gateway policy test` work
//! from any directory. A directory given in the configuration or on the command line overrides.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn embed(dir: &Path, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut src = String::from("&[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("bad file name")?;
        let abs = f.canonicalize()?;
        writeln!(
            src,
            "    ({name:?}, include_str!({:?})),",
            abs.display().to_string()
        )?;
    }
    src.push_str("]\n");
    std::fs::write(PathBuf::from(std::env::var("OUT_DIR")?).join(out), src)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../policies");
    embed(&root.join("agreements"), "agreements.rs")?;
    embed(&root.join("tests"), "policy_tests.rs")?;
    Ok(())
}
