//! The client-server endpoints the MLS client uses, one method each, and the MLS answers of the
//! commit and send endpoints read into types. No MLS logic lives here.

use std::time::Duration;

use poststelle_mls::client::ExternalSenderInfo;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

use crate::ClientError;

/// The answer to a commit (`PUT …/state/m.mls.commit/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitAnswer {
    Accepted {
        event_id: String,
    },
    /// Another commit won this epoch; the room is at `current_epoch`.
    WrongEpoch {
        current_epoch: u64,
    },
    /// The server holds proposals (base64 PublicMessages) the commit must include.
    PendingProposals(Vec<String>),
}

/// The answer to sending an `m.room.encrypted` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendAnswer {
    Sent {
        event_id: String,
    },
    /// The room moved on to another epoch; apply its commits and encrypt again.
    WrongEpoch {
        current_epoch: Option<u64>,
    },
}

/// How long a request may take; a long-polling sync gets its polling time on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an upload or download of media may take.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(600);

const WRONG_EPOCH: &str = "DE.POSTSTELLE.MLS_WRONG_EPOCH";
const PENDING_PROPOSALS: &str = "DE.POSTSTELLE.MLS_PENDING_PROPOSALS";

/// A homeserver, with the access token once logged in.
#[derive(Debug, Clone)]
pub struct Homeserver {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Homeserver {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let mut base = Url::parse(base)?;
        // Endpoint paths are joined onto the base, which must therefore end in a slash.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Homeserver { http, base, token })
    }

    /// `path` with each `{}` segment replaced by the next of `params`, percent-encoded as a
    /// path segment (so a `/` inside a parameter stays inside its segment).
    fn url(&self, path: &str, params: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        {
            let mut segments =
                url.path_segments_mut().map_err(|()| ClientError::Protocol("the homeserver URL has no path".into()))?;
            segments.pop_if_empty();
            let mut params = params.iter();
            for piece in path.split('/') {
                segments.push(if piece == "{}" { params.next().copied().unwrap_or_default() } else { piece });
            }
        }
        Ok(url)
    }

    async fn call(&self, method: Method, url: Url, body: Option<&Value>) -> Result<(StatusCode, Value), ClientError> {
        self.call_within(method, url, body, REQUEST_TIMEOUT).await
    }

    async fn call_within(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Value), ClientError> {
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() { json!({}) } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, value))
    }

    /// A JSON call that must succeed.
    async fn json(
        &self,
        method: Method,
        path: &str,
        params: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, value) = self.call(method, self.url(path, params)?, body).await?;
        if status.is_success() { Ok(value) } else { Err(server_error(status, &value)) }
    }

    /// Password login; returns the access token, user id and device id.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(String, String, String), ClientError> {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
        let answer = self.json(Method::POST, "_matrix/client/v3/login", &[], Some(&body)).await?;
        let field = |name: &str| {
            answer[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Protocol(format!("login without {name}")))
        };
        let (token, user_id, device_id) = (field("access_token")?, field("user_id")?, field("device_id")?);
        self.token = Some(token.clone());
        Ok((token, user_id, device_id))
    }

    pub async fn upload_keys(&self, body: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, "_matrix/client/v3/keys/upload", &[], Some(body)).await
    }

    /// The devices of `user` as `/keys/query` lists them: device id → device keys.
    pub async fn query_devices(&self, user: &str) -> Result<serde_json::Map<String, Value>, ClientError> {
        let body = json!({"device_keys": {user: []}});
        let answer = self.json(Method::POST, "_matrix/client/v3/keys/query", &[], Some(&body)).await?;
        Ok(answer
            .pointer(&format!("/device_keys/{}", user.replace('~', "~0").replace('/', "~1")))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default())
    }

    /// Claims one key of `algorithm` for each device: (device id, key id, value) for each claimed.
    pub async fn claim(
        &self,
        user: &str,
        devices: &[String],
        algorithm: &str,
    ) -> Result<Vec<(String, String, String)>, ClientError> {
        let wanted: serde_json::Map<String, Value> = devices.iter().map(|d| (d.clone(), json!(algorithm))).collect();
        let body = json!({"one_time_keys": {user: wanted}});
        let answer = self.json(Method::POST, "_matrix/client/v3/keys/claim", &[], Some(&body)).await?;
        let mut claimed = Vec::new();
        for (device, keys) in answer["one_time_keys"][user].as_object().into_iter().flatten() {
            for (key_id, value) in keys.as_object().into_iter().flatten() {
                if let (true, Some(value)) = (key_id.starts_with(algorithm), value.as_str()) {
                    claimed.push((device.clone(), key_id.clone(), value.to_owned()));
                }
            }
        }
        Ok(claimed)
    }

    /// The server as MLS external sender; `None` if the server does not offer one.
    pub async fn external_sender(&self) -> Result<Option<ExternalSenderInfo>, ClientError> {
        let url = self.url("_matrix/client/unstable/de.poststelle/mls/external_sender", &[])?;
        let (status, value) = self.call(Method::GET, url, None).await?;
        match status {
            s if s.is_success() => {
                serde_json::from_value(value).map(Some).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(server_error(s, &value)),
        }
    }

    /// Creates a private room whose encryption is the MLS `algorithm`.
    pub async fn create_room(&self, name: Option<&str>, algorithm: &str) -> Result<String, ClientError> {
        let mut body = json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": algorithm}}],
        });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        let answer = self.json(Method::POST, "_matrix/client/v3/createRoom", &[], Some(&body)).await?;
        answer["room_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Protocol("createRoom without room_id".into()))
    }

    /// Submits a commit (or the epoch-0 GroupInfo) as the room's `m.mls.commit` state.
    pub async fn put_commit(&self, room_id: &str, body: &Value) -> Result<CommitAnswer, ClientError> {
        let url = self.url("_matrix/client/v3/rooms/{}/state/m.mls.commit/", &[room_id])?;
        let (status, value) = self.call(Method::PUT, url, Some(body)).await?;
        if status.is_success() {
            let event_id = value["event_id"].as_str().unwrap_or_default().to_owned();
            return Ok(CommitAnswer::Accepted { event_id });
        }
        match (status, value["errcode"].as_str()) {
            (StatusCode::CONFLICT, Some(WRONG_EPOCH)) => match value["current_epoch"].as_u64() {
                Some(current_epoch) => Ok(CommitAnswer::WrongEpoch { current_epoch }),
                None => Err(ClientError::Protocol("wrong epoch without current_epoch".into())),
            },
            (StatusCode::CONFLICT, Some(PENDING_PROPOSALS)) => Ok(CommitAnswer::PendingProposals(
                value["proposals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            )),
            _ => Err(server_error(status, &value)),
        }
    }

    /// Sends an `m.room.encrypted` event.
    pub async fn send_encrypted(&self, room_id: &str, txn_id: &str, body: &Value) -> Result<SendAnswer, ClientError> {
        let url = self.url("_matrix/client/v3/rooms/{}/send/m.room.encrypted/{}", &[room_id, txn_id])?;
        let (status, value) = self.call(Method::PUT, url, Some(body)).await?;
        if status.is_success() {
            let event_id = value["event_id"].as_str().unwrap_or_default().to_owned();
            return Ok(SendAnswer::Sent { event_id });
        }
        if status == StatusCode::CONFLICT && value["errcode"].as_str() == Some(WRONG_EPOCH) {
            return Ok(SendAnswer::WrongEpoch { current_epoch: value["current_epoch"].as_u64() });
        }
        Err(server_error(status, &value))
    }

    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), ClientError> {
        let body = json!({"user_id": user_id});
        self.json(Method::POST, "_matrix/client/v3/rooms/{}/invite", &[room_id], Some(&body)).await.map(drop)
    }

    pub async fn join(&self, room_id: &str) -> Result<(), ClientError> {
        self.json(Method::POST, "_matrix/client/v3/join/{}", &[room_id], Some(&json!({}))).await.map(drop)
    }

    /// One `/sync`, long-polling up to `timeout_ms`.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Result<Value, ClientError> {
        let mut url = self.url("_matrix/client/v3/sync", &[])?;
        url.query_pairs_mut().append_pair("timeout", &timeout_ms.to_string());
        if let Some(since) = since {
            url.query_pairs_mut().append_pair("since", since);
        }
        // The server may hold the request for `timeout_ms`; allow for that and the answer.
        let within = Duration::from_millis(timeout_ms) + REQUEST_TIMEOUT;
        let (status, value) = self.call_within(Method::GET, url, None, within).await?;
        if status.is_success() { Ok(value) } else { Err(server_error(status, &value)) }
    }

    /// The room's latest GroupInfo and the server's pending proposals.
    pub async fn group_info(&self, room_id: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, "_matrix/client/unstable/de.poststelle/rooms/{}/mls/group_info", &[room_id], None).await
    }

    /// Uploads bytes to the media repository; returns the `mxc://` URI.
    pub async fn upload(&self, bytes: Vec<u8>, filename: &str) -> Result<String, ClientError> {
        let mut url = self.url("_matrix/media/v3/upload", &[])?;
        url.query_pairs_mut().append_pair("filename", filename);
        let mut request = self
            .http
            .post(url)
            .timeout(MEDIA_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(server_error(status, &value));
        }
        value["content_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Protocol("upload without content_uri".into()))
    }

    /// Downloads `mxc://server/id` through the authenticated media endpoint.
    pub async fn download(&self, mxc: &str) -> Result<Vec<u8>, ClientError> {
        let (server, id) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(|| ClientError::Protocol(format!("not an mxc URI: {mxc}")))?;
        let url = self.url("_matrix/client/v1/media/download/{}/{}", &[server, id])?;
        let mut request = self.http.get(url).timeout(MEDIA_TIMEOUT);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let value: Value = response.json().await.unwrap_or(Value::Null);
            return Err(server_error(status, &value));
        }
        Ok(response.bytes().await?.to_vec())
    }
}

fn server_error(status: StatusCode, value: &Value) -> ClientError {
    ClientError::Server {
        status: status.as_u16(),
        errcode: value["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
        message: value["error"].as_str().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_percent_encoded() {
        let server = Homeserver::new("http://127.0.0.1:8008/", None).unwrap();
        let url = server.url("_matrix/client/v3/rooms/{}/state/m.mls.commit/", &["!room:example.org"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8008/_matrix/client/v3/rooms/!room:example.org/state/m.mls.commit/");
        let url = server.url("_matrix/client/v3/rooms/{}/send/m.room.encrypted/{}", &["!r:x", "t/1 #?"]).unwrap();
        assert!(url.as_str().ends_with("/rooms/!r:x/send/m.room.encrypted/t%2F1%20%23%3F"), "{url}");
        let prefixed = Homeserver::new("https://example.org/matrix", None).unwrap();
        let url = prefixed.url("_matrix/client/v3/join/{}", &["!r:x"]).unwrap();
        assert_eq!(url.as_str(), "https://example.org/matrix/_matrix/client/v3/join/!r:x");
    }
}
