//! Black-box tests against real `poststelle` processes. One module per area; the Sytest and
//! Complement behaviours each module covers are listed in `spec-tests/COVERAGE.md`.

mod account;
mod account_data;
mod basics;
mod devices;
mod directory;
mod durability;
mod federation;
mod guests;
mod keys;
mod media;
mod membership;
mod mls;
mod multi_process;
mod presence;
mod profile;
mod push;
mod push_rules;
mod real_clients;
mod real_conversations;
mod registration;
mod room_events;
mod room_history;
mod rooms;
mod schema;
mod search;
mod sessions;
mod sliding_sync;
mod sync;
mod third_party_invites;
