//! The partnership gateway: receives pseudonymised records from agency agents over mutual TLS,
//! validates them against the catalog and stores them durably.
//!
//! Never holds the partnership linkage key and never sees a raw identifier.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod client;
pub mod config;
pub mod console;
pub mod demo;
pub mod disclosure;
pub mod durable;
pub mod jwt;
pub mod limits;
pub mod linkage;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod register;
pub mod release;
pub mod revocation;
pub mod server;
#[cfg(test)]
mod server_tests;
pub mod service;
pub mod store;
pub mod tls;
pub mod validate;

/// The guard of a lock (or condition-variable wait) even when a thread panicked holding it: every
/// lock in the gateway guards state each update leaves whole, so one panic must not stop the
/// others from taking it. Use as `unpoisoned(m.lock())` or `unpoisoned(cv.wait(guard))`.
pub(crate) fn unpoisoned<G>(result: std::sync::LockResult<G>) -> G {
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}
