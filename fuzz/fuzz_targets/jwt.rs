//! cargo-fuzz target `jwt`: see `../bodies/jwt.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/jwt.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
