//! End-to-end ingest tests.
