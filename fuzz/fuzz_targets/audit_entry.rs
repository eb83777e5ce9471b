//! cargo-fuzz target `audit_entry`: see `../bodies/audit_entry.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/audit_entry.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
