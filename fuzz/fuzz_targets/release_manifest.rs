//! cargo-fuzz target `release_manifest`: see `../bodies/release_manifest.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/release_manifest.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
