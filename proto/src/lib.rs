//! The `sharing.v1` gRPC contract shared by the gateway, the agents and the tests.
//!
//! Generated types stop at the service boundary: convert them into domain types with `TryFrom`.

#![allow(missing_docs, clippy::all)]

/// `sharing.v1`: messages and services.
pub mod v1 {
    tonic::include_proto!("sharing.v1");
}

/// Encoded `FileDescriptorSet` of `sharing.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sharing_v1_descriptor.bin"));
