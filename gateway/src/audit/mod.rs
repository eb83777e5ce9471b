//! The audit log: what happened, as entries that become leaves of an RFC 9162 Merkle tree.
//! This module owns the entry format; it never holds personal data or field values.

pub mod client;
pub mod entry;
pub mod export;
pub mod log;
pub mod verify;
