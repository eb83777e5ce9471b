//! cargo-fuzz target `merkle`: see `../bodies/merkle.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/merkle.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
