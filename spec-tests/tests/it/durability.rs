//! Crashes and concurrency: kill -9 after acknowledged sends, concurrent sends to one room, restarts.
