//! Code shared by the agency agent and the gateway.
//!
//! Pure: nothing here opens a socket or writes a file. It owns the identity newtypes, the
//! dataset catalog (TOML → validated types), identifier normalisation, linkage-token derivation
//! and the canonical content hash of a record.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod checkpoint;
pub mod content;
pub mod fuzzy;
pub mod ids;
pub mod merkle;
pub mod normalise;
pub mod pbconvert;
pub mod token;
pub mod toml_file;
pub mod transform;
pub mod wire;

pub use catalog::{Catalog, CatalogError, Dataset, Field, FieldClass, FieldType};
pub use ids::{AgencyId, DatasetName, FieldName, TRUST_DOMAIN};
pub use token::{LinkageKey, Token};
