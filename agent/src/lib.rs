//! agent library
