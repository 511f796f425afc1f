//! Black-box tests against real `poststelle` processes. One module per area; the Sytest and
//! Complement behaviours each module covers are listed in `spec-tests/COVERAGE.md`.

mod basics;
mod real_clients;
mod registration;
mod sessions;
