//! gateway library
