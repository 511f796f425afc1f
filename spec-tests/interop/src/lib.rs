//! Interop tests with the real matrix-rust-sdk; the tests live in `tests/`.
