//! Accounts: the username rules, registration, passwords, deactivation and profiles.

use ruma::{OwnedUserId, UserId};

use std::sync::Arc;

use super::{ServiceError, ServiceResult, passwords::PasswordHasherService, rooms::RoomService, tokens};
use crate::{
    config::Config,
    storage::{Storage, StorageError, users::NewUser},
};

/// How long an OpenID token is valid.
pub const OPENID_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// The longest user id the spec allows.
const MAX_USER_ID_LEN: usize = 255;

/// Turns what a client typed (`alice`, `@alice:server`, `@Alice:server`) into our full user id,
/// or `None` when it names another server or is not a user id at all.
pub fn qualify(user: &str, server_name: &str) -> Option<String> {
    let user = user.trim();
    if let Some(rest) = user.strip_prefix('@') {
        let (localpart, server) = rest.split_once(':')?;
        (server == server_name).then(|| format!("@{}:{server_name}", localpart.to_lowercase()))
    } else {
        Some(format!("@{}:{server_name}", user.to_lowercase()))
    }
}

/// An account's profile.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

#[derive(Debug)]
pub struct AccountService {
    storage: Storage,
    passwords: PasswordHasherService,
    server_name: String,
    reserved_prefixes: Vec<String>,
    public_profiles: bool,
    rooms: Arc<RoomService>,
    /// Asks other servers for their users' profiles.
    client: Arc<poststelle_federation::FederationClient>,
}

impl AccountService {
    pub fn new(
        storage: Storage,
        passwords: PasswordHasherService,
        config: &Config,
        rooms: Arc<RoomService>,
        client: Arc<poststelle_federation::FederationClient>,
    ) -> Self {
        Self {
            storage,
            passwords,
            server_name: config.server_name.clone(),
            reserved_prefixes: config.registration.reserved_prefixes.clone(),
            public_profiles: config.privacy.public_profiles,
            rooms,
            client,
        }
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Checks a requested localpart against the spec's grammar and our reservations; returns
    /// the full user id.
    pub fn validate_localpart(&self, localpart: &str) -> ServiceResult<OwnedUserId> {
        let invalid = |msg: &str| Err(ServiceError::InvalidUsername(msg.to_owned()));
        if localpart.is_empty() {
            return invalid("the username must not be empty");
        }
        if localpart != localpart.to_lowercase() {
            return invalid("the username must be lower case");
        }
        if !localpart.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')) {
            return invalid("the username may contain only a-z, 0-9, and . _ = - / +");
        }
        if localpart.starts_with('_') {
            return invalid("usernames starting with '_' are reserved");
        }
        let user_id = format!("@{localpart}:{}", self.server_name);
        if user_id.len() > MAX_USER_ID_LEN {
            return invalid("the user id would be longer than 255 bytes");
        }
        if self.reserved_prefixes.iter().any(|p| localpart.starts_with(p.as_str())) {
            return Err(ServiceError::Exclusive);
        }
        UserId::parse(&user_id).map_err(|e| ServiceError::InvalidUsername(e.to_string()))
    }

    /// `/register/available`: valid and not taken.
    pub async fn check_available(&self, localpart: &str) -> ServiceResult<OwnedUserId> {
        let user_id = self.validate_localpart(localpart)?;
        if self.storage.users.localpart_exists(localpart).await? {
            return Err(ServiceError::UserInUse);
        }
        Ok(user_id)
    }

    /// A fresh random localpart for registrations that did not ask for one.
    pub async fn generate_localpart(&self) -> ServiceResult<String> {
        for _ in 0..10 {
            let candidate = tokens::random_alphanumeric(12).to_lowercase();
            if !self.storage.users.localpart_exists(&candidate).await? {
                return Ok(candidate);
            }
        }
        Err(ServiceError::Internal("could not find a free localpart".into()))
    }

    /// Creates an account (registration, admin API, CLI).
    pub async fn create(
        &self,
        localpart: &str,
        password: Option<String>,
        is_admin: bool,
        displayname: Option<&str>,
    ) -> ServiceResult<OwnedUserId> {
        let user_id = self.validate_localpart(localpart)?;
        let password_hash = match password {
            Some(p) => Some(self.passwords.hash(p).await?),
            None => None,
        };
        let result = self
            .storage
            .users
            .create(NewUser {
                user_id: user_id.as_str(),
                localpart,
                password_hash: password_hash.as_deref(),
                is_admin,
                displayname: Some(displayname.unwrap_or(localpart)),
            })
            .await;
        match result {
            Ok(()) => {
                tracing::info!(user_id = %user_id, is_admin, "account created");
                Ok(user_id)
            }
            Err(StorageError::Conflict(_)) => Err(ServiceError::UserInUse),
            Err(e) => Err(e.into()),
        }
    }

    /// A new guest account (numeric localpart, no credentials).
    pub async fn create_guest(&self) -> ServiceResult<OwnedUserId> {
        for _ in 0..10 {
            if let Some(user_id) = self.storage.users.create_guest(&self.server_name).await? {
                tracing::info!(user_id = %user_id, "guest account created");
                return OwnedUserId::try_from(user_id).map_err(|e| ServiceError::Internal(e.to_string()));
            }
        }
        Err(ServiceError::Internal("could not find a free guest localpart".into()))
    }

    /// Turns a guest account into a full one with `password` (UIA done by the caller).
    pub async fn upgrade_guest(&self, user_id: &UserId, password: Option<String>) -> ServiceResult<()> {
        let password_hash = match password {
            Some(p) => Some(self.passwords.hash(p).await?),
            None => None,
        };
        if !self.storage.users.upgrade_guest(user_id.as_str(), password_hash.as_deref()).await? {
            return Err(ServiceError::Forbidden(format!("{user_id} is not a guest account")));
        }
        tracing::info!(user_id = %user_id, "guest account upgraded");
        Ok(())
    }

    /// Sets a new password (UIA done by the caller).
    pub async fn set_password(&self, user_id: &str, password: String) -> ServiceResult<()> {
        let hash = self.passwords.hash(password).await?;
        self.storage.users.set_password_hash(user_id, &hash).await?;
        Ok(())
    }

    /// Deactivates the account for good: no login, no devices, profile erased; with `erase`,
    /// the user's events go to other servers redacted from now on.
    pub async fn deactivate(&self, user_id: &str, erase: bool) -> ServiceResult<()> {
        self.storage.users.deactivate(user_id, erase).await?;
        tracing::info!(user_id, erase, "account deactivated");
        Ok(())
    }

    /// Another user's profile as `requester` may see it: their own, any for admins, and
    /// otherwise only of users they share a room with (unless `privacy.public_profiles`).
    pub async fn visible_profile(&self, requester: Option<(&str, bool)>, target: &UserId) -> ServiceResult<Profile> {
        let allowed = self.public_profiles
            || match requester {
                Some((user, is_admin)) => {
                    is_admin
                        || user == target.as_str()
                        || self.storage.rooms.share_a_room(user, target.as_str()).await?
                }
                None => false,
            };
        if !allowed {
            return Err(ServiceError::Forbidden("you may only look up profiles of users you share a room with".into()));
        }
        if target.server_name().as_str() != self.server_name {
            return self.remote_profile(target).await;
        }
        self.profile(target.as_str()).await
    }

    /// A user's profile as their server answers `/query/profile`.
    async fn remote_profile(&self, target: &UserId) -> ServiceResult<Profile> {
        use ruma::api::federation::query::get_profile_information::v1 as query_profile;
        let answer = self
            .client
            .send(target.server_name(), query_profile::Request::new(target.to_owned()))
            .await
            .map_err(|e| super::federation_queries::from_client_error(e, "profile not found"))?;
        let text = |field: &str| answer.get(field).and_then(serde_json::Value::as_str).map(str::to_owned);
        Ok(Profile { displayname: text("displayname"), avatar_url: text("avatar_url") })
    }

    /// `/query/profile` from server `origin`: the profile of one of our users, if a user of
    /// `origin` shares a room with them (or profiles are public). 404 for users we do not have.
    pub async fn profile_for_server(&self, origin: &str, target: &UserId) -> ServiceResult<Profile> {
        if target.server_name().as_str() != self.server_name {
            return Err(ServiceError::NotFound(format!("{target} is not a user of this server")));
        }
        let profile = self.profile(target.as_str()).await?;
        if !self.public_profiles {
            let shared = self.storage.e2ee.users_sharing_a_room_with_server(origin, &[target.to_string()]).await?;
            if shared.is_empty() {
                return Err(ServiceError::Forbidden(format!("{target} shares no room with users of {origin}")));
            }
        }
        Ok(profile)
    }

    /// `/openid/request_token`: a new short-lived token that proves to another server that
    /// its bearer is `user_id`; only its hash is stored.
    pub async fn request_openid_token(&self, requester: &str, user_id: &UserId) -> ServiceResult<String> {
        if requester != user_id.as_str() {
            return Err(ServiceError::Forbidden("you may only request OpenID tokens for yourself".into()));
        }
        let token = tokens::new_token("oid");
        let lifetime = i64::try_from(OPENID_TOKEN_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        let expires = crate::storage::now_ms().saturating_add(lifetime);
        self.storage.users.add_openid_token(&tokens::token_hash(&token), user_id.as_str(), expires).await?;
        Ok(token)
    }

    /// `/openid/userinfo`: whose unexpired OpenID token this is.
    pub async fn openid_userinfo(&self, token: &str) -> ServiceResult<OwnedUserId> {
        let user = self.storage.users.openid_user(&tokens::token_hash(token), crate::storage::now_ms()).await?;
        user.and_then(|u| OwnedUserId::try_from(u).ok()).ok_or(ServiceError::UnknownToken { soft_logout: false })
    }

    /// The profile of a local user; `NotFound` if there is no such (active) account.
    pub async fn profile(&self, user_id: &str) -> ServiceResult<Profile> {
        match self.storage.users.get(user_id).await? {
            Some(u) if !u.deactivated => Ok(Profile { displayname: u.displayname, avatar_url: u.avatar_url }),
            Some(_) => Ok(Profile::default()),
            None => Err(ServiceError::NotFound("profile not found".into())),
        }
    }

    pub async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> ServiceResult<()> {
        if name.is_some_and(|n| n.len() > 256) {
            return Err(ServiceError::InvalidParam("display name longer than 256 bytes".into()));
        }
        self.storage.users.set_displayname(user_id, name.filter(|n| !n.is_empty())).await?;
        self.propagate(user_id).await
    }

    /// Member events in the user's rooms follow their profile.
    async fn propagate(&self, user_id: &str) -> ServiceResult<()> {
        let user = UserId::parse(user_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.rooms.propagate_profile(&user).await
    }

    pub async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> ServiceResult<()> {
        let url = url.filter(|u| !u.is_empty());
        if let Some(url) = url
            && (!url.starts_with("mxc://") || url.len() > 1000)
        {
            return Err(ServiceError::InvalidParam("avatar_url must be an mxc:// URI".into()));
        }
        self.storage.users.set_avatar_url(user_id, url).await?;
        self.propagate(user_id).await
    }

    pub async fn set_admin(&self, user_id: &str, is_admin: bool) -> ServiceResult<()> {
        Ok(self.storage.users.set_admin(user_id, is_admin).await?)
    }

    pub async fn is_admin(&self, user_id: &str) -> ServiceResult<bool> {
        Ok(self.storage.users.get(user_id).await?.is_some_and(|u| u.is_admin))
    }
}

#[cfg(test)]
mod tests {
    use super::qualify;

    #[test]
    fn qualify_user_input() {
        assert_eq!(qualify("alice", "hs").as_deref(), Some("@alice:hs"));
        assert_eq!(qualify("@Alice:hs", "hs").as_deref(), Some("@alice:hs"));
        assert_eq!(qualify("@alice:other", "hs"), None);
        assert_eq!(qualify("@nocolon", "hs"), None);
    }
}
