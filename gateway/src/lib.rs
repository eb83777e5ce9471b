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
pub mod service;
pub mod store;
pub mod tls;
pub mod validate;
