//! Sync: initial and incremental, long-poll, filters, lazy-loaded members, leave/invite sections, typing, receipts, read markers, to-device and unread counts.
