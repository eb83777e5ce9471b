//! cargo-fuzz target `catalog`: see `../bodies/catalog.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/catalog.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
