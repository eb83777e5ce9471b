//! cargo-fuzz target `checkpoint`: see `../bodies/checkpoint.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/checkpoint.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
