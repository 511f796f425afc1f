//! Outbound HTTP on behalf of users (push gateways, URL previews): the address guard lives in the
//! federation crate (`poststelle_federation::net`), shared with the federation client, so there is
//! one definition of which addresses the server may reach.

pub use poststelle_federation::net::{client, is_private_host, is_public};
