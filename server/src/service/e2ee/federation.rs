//! Keys across servers: asking other servers for their users' device keys and one-time keys
//! (grouped by server, each failure reported under its server's name), answering other servers'
//! questions about ours (only users who share a room with one of the asking server's users),
//! and our users' new cross-signing keys (`m.signing_key_update`); device lists in [`super::device_lists`].

use std::{collections::BTreeMap, time::Duration};

use futures_util::future::join_all;
use ruma::{
    OwnedServerName, OwnedUserId, ServerName, UInt, UserId,
    api::{
        client::keys::{claim_keys::v3 as claim_keys, get_keys::v3 as get_keys},
        federation::{
            device::get_devices::v1 as fed_devices, keys::claim_keys::v1 as fed_claim, keys::get_keys::v1 as fed_keys,
        },
    },
};
use serde_json::{Value as JsonValue, json};

use super::{ClaimRequest, DeviceRequest, E2eeService, Viewer, add_signatures, raw};
use crate::{
    service::{ServiceError, ServiceResult},
    storage::now_ms,
};

/// How long a client's query waits for other servers when it names no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most users one query from another server may name.
const MAX_USERS_PER_QUERY: usize = 1000;

/// Groups requested users by their server.
fn by_server<V>(users: BTreeMap<OwnedUserId, V>) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> {
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> = BTreeMap::new();
    for (user, v) in users {
        out.entry(user.server_name().to_owned()).or_default().insert(user, v);
    }
    out
}

/// A failure of another server as the client's `failures` map reports it.
fn failure(error: impl std::fmt::Display) -> JsonValue {
    json!({"errcode": "M_UNAVAILABLE", "error": error.to_string()})
}

/// The users asked about must all be the answering server's.
fn only_from(server: &ServerName, user: &UserId) -> bool {
    user.server_name() == server
}

impl E2eeService {
    /// Asks each server named by `users` for their device keys, merging the answers into
    /// `response`; a server that fails or does not answer in time goes into `failures`.
    pub(super) async fn query_remote(
        &self,
        users: DeviceRequest,
        timeout: Option<Duration>,
        response: &mut get_keys::Response,
    ) {
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let asks = by_server(users).into_iter().map(|(server, users)| async move {
            let answer = tokio::time::timeout(timeout, self.client.send(&server, fed_keys::Request::new(users))).await;
            (server, answer)
        });
        for (server, answer) in join_all(asks).await {
            match answer {
                Ok(Ok(answer)) => {
                    // A server answers for its own users only.
                    let own = |u: &OwnedUserId| only_from(&server, u);
                    response.device_keys.extend(answer.device_keys.into_iter().filter(|(u, _)| own(u)));
                    response.master_keys.extend(answer.master_keys.into_iter().filter(|(u, _)| own(u)));
                    response.self_signing_keys.extend(answer.self_signing_keys.into_iter().filter(|(u, _)| own(u)));
                }
                Ok(Err(e)) => {
                    tracing::info!(%server, error = %e, "remote key query failed");
                    response.failures.insert(server.to_string(), failure(e));
                }
                Err(_) => {
                    response.failures.insert(server.to_string(), failure("timed out"));
                }
            }
        }
    }

    /// Claims one-time keys at each server named by `users`, merging them into `response`.
    pub(super) async fn claim_remote(
        &self,
        users: ClaimRequest,
        timeout: Option<Duration>,
        response: &mut claim_keys::Response,
    ) {
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let asks = by_server(users).into_iter().map(|(server, users)| async move {
            let answer = tokio::time::timeout(timeout, self.client.send(&server, fed_claim::Request::new(users))).await;
            (server, answer)
        });
        for (server, answer) in join_all(asks).await {
            match answer {
                Ok(Ok(answer)) => {
                    let keys = answer.one_time_keys.into_iter().filter(|(u, _)| only_from(&server, u));
                    response.one_time_keys.extend(keys);
                }
                Ok(Err(e)) => {
                    tracing::info!(%server, error = %e, "remote key claim failed");
                    response.failures.insert(server.to_string(), failure(e));
                }
                Err(_) => {
                    response.failures.insert(server.to_string(), failure("timed out"));
                }
            }
        }
    }

    /// `POST /_matrix/federation/v1/user/keys/query` from `origin`.
    pub async fn serve_query(&self, origin: &ServerName, users: &DeviceRequest) -> ServiceResult<fed_keys::Response> {
        if users.len() > MAX_USERS_PER_QUERY {
            return Err(ServiceError::InvalidParam(format!("at most {MAX_USERS_PER_QUERY} users per query")));
        }
        let local = self.local_keys(Viewer::Server(origin), users).await?;
        let mut response = fed_keys::Response::new(local.device_keys);
        response.master_keys = local.master_keys;
        response.self_signing_keys = local.self_signing_keys;
        Ok(response)
    }

    /// `POST /_matrix/federation/v1/user/keys/claim` from `origin`.
    pub async fn serve_claim(&self, origin: &ServerName, users: &ClaimRequest) -> ServiceResult<fed_claim::Response> {
        if users.len() > MAX_USERS_PER_QUERY {
            return Err(ServiceError::InvalidParam(format!("at most {MAX_USERS_PER_QUERY} users per claim")));
        }
        Ok(fed_claim::Response::new(self.local_claim(Viewer::Server(origin), users).await?))
    }

    /// `GET /_matrix/federation/v1/user/devices/{userId}` from `origin`: 404 for users we do not
    /// have, 403 for users who share no room with the origin's users.
    pub async fn serve_devices(&self, origin: &ServerName, user: &UserId) -> ServiceResult<fed_devices::Response> {
        let not_found = || ServiceError::NotFound(format!("no user {user} on this server"));
        if user.server_name() != self.server_name {
            return Err(not_found());
        }
        if self.storage.users.get(user.as_str()).await?.is_none() {
            return Err(not_found());
        }
        let visible = self.visible_users(Viewer::Server(origin), std::iter::once(&user.to_owned())).await?;
        if visible.is_empty() {
            return Err(ServiceError::Forbidden(format!("{user} shares no room with users of {origin}")));
        }
        let position = self.storage.e2ee.device_list_position(user.as_str()).await?;
        let stream_id = UInt::try_from(u64::try_from(position).unwrap_or_default()).unwrap_or_default();
        let mut response = fed_devices::Response::new(user.to_owned(), stream_id);
        // With the owner's own signatures, as the updates carry them.
        let signatures = self.storage.e2ee.signatures(user.as_str(), "").await?;
        for row in self.storage.e2ee.device_keys(user.as_str(), None).await? {
            let mut keys = row.keys;
            add_signatures(&mut keys, &row.device_id, &signatures);
            let mut device = fed_devices::UserDevice::new(row.device_id.into(), raw(&keys)?);
            device.device_display_name = row.display_name;
            response.devices.push(device);
        }
        for (usage, key) in self.storage.e2ee.cross_signing_keys(user.as_str()).await? {
            match usage.as_str() {
                "master" => response.master_key = Some(raw(&key)?),
                "self_signing" => response.self_signing_key = Some(raw(&key)?),
                _ => {}
            }
        }
        Ok(response)
    }

    /// Tells the servers whose users share a room with `user` about the user's new master or
    /// self-signing key.
    pub(super) async fn announce_signing_keys(
        &self,
        user: &UserId,
        keys: &[(&'static str, JsonValue)],
    ) -> ServiceResult<()> {
        let mut content = json!({"user_id": user});
        for (usage, key) in keys {
            match *usage {
                "master" => content["master_key"] = key.clone(),
                "self_signing" => content["self_signing_key"] = key.clone(),
                _ => {}
            }
        }
        if content.get("master_key").is_none() && content.get("self_signing_key").is_none() {
            return Ok(());
        }
        let servers = self.other_servers(user.as_str()).await?;
        if !servers.is_empty() {
            self.storage.federation.queue_edu(&servers, "m.signing_key_update", &content, now_ms()).await?;
        }
        Ok(())
    }

    /// The other servers whose users share a joined room with `user_id`: where changes of the
    /// user's keys go.
    pub(super) async fn other_servers(&self, user_id: &str) -> ServiceResult<Vec<String>> {
        let mut servers = self.storage.e2ee.servers_sharing_a_room(user_id).await?;
        servers.retain(|s| s != self.server_name.as_str());
        Ok(servers)
    }
}
