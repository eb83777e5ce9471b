//! cargo-fuzz target `isa`: see `../bodies/isa.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/isa.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
