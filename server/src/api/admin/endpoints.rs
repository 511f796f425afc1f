//! Endpoint definitions of the Synapse admin API subset, with ruma's own macros.

/// `GET /_synapse/admin/v1/register`: a nonce for shared-secret registration.
pub mod get_register_nonce {
    use ruma::api::{auth_scheme::NoAuthentication, metadata, request, response};

    metadata! {
        method: GET,
        rate_limited: true,
        authentication: NoAuthentication,
        path: "/_synapse/admin/v1/register",
    }

    #[request]
    pub struct Request {}

    #[response]
    pub struct Response {
        pub nonce: String,
    }
}

/// `POST /_synapse/admin/v1/register`: create an account with an HMAC over the shared secret.
pub mod shared_secret_register {
    use ruma::api::{auth_scheme::NoAuthentication, metadata, request, response};

    metadata! {
        method: POST,
        rate_limited: true,
        authentication: NoAuthentication,
        path: "/_synapse/admin/v1/register",
    }

    #[request]
    pub struct Request {
        pub nonce: String,
        pub username: String,
        pub password: String,
        #[serde(default)]
        pub admin: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub displayname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub user_type: Option<String>,
        pub mac: String,
    }

    #[response]
    pub struct Response {
        pub access_token: String,
        pub user_id: String,
        pub home_server: String,
        pub device_id: String,
    }
}

/// A registration token as the admin API shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RegistrationToken {
    pub token: String,
    pub uses_allowed: Option<i32>,
    pub pending: i32,
    pub completed: i32,
    pub expiry_time: Option<i64>,
}

/// `GET /_synapse/admin/v1/registration_tokens`
pub mod list_registration_tokens {
    use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/registration_tokens",
    }

    #[request]
    pub struct Request {
        /// `true`: only valid tokens; `false`: only invalid ones; absent: all.
        #[ruma_api(query)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub valid: Option<bool>,
    }

    #[response]
    pub struct Response {
        pub registration_tokens: Vec<super::RegistrationToken>,
    }
}

/// `GET /_synapse/admin/v1/registration_tokens/{token}`
pub mod get_registration_token {
    use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/registration_tokens/{token}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub token: String,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub token: super::RegistrationToken,
    }
}

/// `POST /_synapse/admin/v1/registration_tokens/new`
pub mod create_registration_token {
    use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

    metadata! {
        method: POST,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/registration_tokens/new",
    }

    #[request]
    pub struct Request {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub uses_allowed: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub expiry_time: Option<i64>,
        /// Length of a generated token (default 16, at most 64).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub length: Option<u32>,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub token: super::RegistrationToken,
    }
}

/// `PUT /_synapse/admin/v1/registration_tokens/{token}`
pub mod update_registration_token {
    use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/registration_tokens/{token}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub token: String,
        /// Absent: unchanged; `null`: unlimited.
        #[serde(default, deserialize_with = "super::double_option", skip_serializing_if = "Option::is_none")]
        pub uses_allowed: Option<Option<i32>>,
        /// Absent: unchanged; `null`: never expires.
        #[serde(default, deserialize_with = "super::double_option", skip_serializing_if = "Option::is_none")]
        pub expiry_time: Option<Option<i64>>,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub token: super::RegistrationToken,
    }
}

/// `DELETE /_synapse/admin/v1/registration_tokens/{token}`
pub mod delete_registration_token {
    use ruma::api::{auth_scheme::AccessToken, metadata, request, response};

    metadata! {
        method: DELETE,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/registration_tokens/{token}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub token: String,
    }

    #[response]
    pub struct Response {}
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    Option::<T>::deserialize(de).map(Some)
}
