//! Membership: join, invite, leave, kick, ban, unban, knock, forget, restricted joins and what each allows.
