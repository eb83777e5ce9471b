//! The agency agent: reads source exports beside the agency's systems, pseudonymises people at
//! source with the partnership linkage key and pushes records to the gateway over mutual TLS.
//!
//! Never sends a raw direct identifier: names, NHS numbers, PNC ids, references, postcodes and
//! UPRNs are normalised and turned into tokens here, and only the tokens leave.

#![forbid(unsafe_code)]

pub mod check;
pub mod client;
pub mod config;
pub mod person_token;
pub mod pseudonymise;
pub mod push;
pub mod source;
pub mod spool;
pub mod synth;
