//! Aliases, the room directory, the user directory, relations and threads, room upgrades.
