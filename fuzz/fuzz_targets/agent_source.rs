//! cargo-fuzz target `agent_source`: see `../bodies/agent_source.rs` for what it feeds and checks.

#![no_main]

mod body {
    include!("../bodies/agent_source.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
