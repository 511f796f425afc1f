//! Push: pushers (`/pushers`, `/pushers/set`), push-rule evaluation for every event and local
//! member (`evaluate`, a consumer of the events stream), `/notifications`, and delivery to push
//! gateways over HTTP with retry and backoff (`deliver`).
//!
//! Evaluation and delivery run in one process at a time (the one holding the push leader lock in
//! PostgreSQL), so several processes on one database push each notification once.

pub mod context;
pub mod deliver;
pub mod evaluate;
pub mod gateway;

use std::{sync::Arc, time::Duration};

use serde_json::{Value as JsonValue, json};
use tokio::sync::Notify;

use self::gateway::GatewayClient;
use super::{ServiceError, ServiceResult, account_data::AccountDataService, notifier::Notifier, rooms::RoomService};
use crate::{
    config,
    storage::{
        Storage,
        push::{NotificationRow, PusherRecord},
    },
};

/// A pusher as the client API shows it (`GET /pushers`), in the spec's JSON shape.
pub type PusherJson = JsonValue;

/// One entry of `/notifications`, before rendering of its event.
#[derive(Debug)]
pub struct NotificationItem {
    pub row: NotificationRow,
    pub event: JsonValue,
    pub profile_tag: Option<String>,
}

#[derive(Debug)]
pub struct PushService {
    storage: Storage,
    rooms: Arc<RoomService>,
    account_data: Arc<AccountDataService>,
    gateway: GatewayClient,
    config: config::Push,
    server_name: String,
    /// Woken when new push actions are recorded or a pusher changes.
    deliveries: Notify,
}

/// The path every push gateway serves (spec, push gateway API).
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

impl PushService {
    pub fn new(
        storage: Storage,
        rooms: Arc<RoomService>,
        account_data: Arc<AccountDataService>,
        config: config::Push,
        server_name: String,
    ) -> ServiceResult<Arc<Self>> {
        let gateway = GatewayClient::new(config.allow_private_networks)?;
        Ok(Arc::new(Self { storage, rooms, account_data, gateway, config, server_name, deliveries: Notify::new() }))
    }

    /// `POST /pushers/set` with a pusher: validates and stores it.
    pub async fn set_pusher(
        &self,
        user_id: &str,
        device_id: &str,
        pusher: &JsonValue,
        append: bool,
    ) -> ServiceResult<()> {
        let text = |key: &str| pusher.get(key).and_then(JsonValue::as_str).map(str::to_owned);
        let required = |key: &str| text(key).ok_or_else(|| ServiceError::MissingParam(format!("missing {key}")));
        let kind = required("kind")?;
        let data = pusher.get("data").cloned().unwrap_or_else(|| json!({}));
        match kind.as_str() {
            "http" => self.check_gateway_url(data.get("url").and_then(JsonValue::as_str))?,
            "email" => return Err(ServiceError::InvalidParam("email pushers are not supported by this server".into())),
            other => return Err(ServiceError::InvalidParam(format!("unknown pusher kind {other}"))),
        }
        if let Some(format) = data.get("format")
            && format != "event_id_only"
        {
            return Err(ServiceError::InvalidParam("the only push format is event_id_only".into()));
        }
        let (app_id, pushkey) = (required("app_id")?, required("pushkey")?);
        if app_id.is_empty() || app_id.len() > 64 || pushkey.is_empty() || pushkey.len() > 512 {
            return Err(ServiceError::InvalidParam("app_id must have 1 to 64 characters, pushkey 1 to 512".into()));
        }
        let record = PusherRecord {
            user_id: user_id.to_owned(),
            device_id: Some(device_id.to_owned()),
            app_id,
            pushkey,
            kind,
            app_display_name: required("app_display_name")?,
            device_display_name: required("device_display_name")?,
            profile_tag: text("profile_tag"),
            lang: required("lang")?,
            data,
            last_stream_ordering: 0,
            failing_since: None,
        };
        self.storage.push.set_pusher(&record, append).await?;
        tracing::info!(user_id, app_id = record.app_id, "pusher set");
        self.deliveries.notify_one();
        Ok(())
    }

    /// The gateway URL must be an http(s) URL of the notify endpoint, and (unless allowed) not
    /// an address in a private range.
    fn check_gateway_url(&self, url: Option<&str>) -> ServiceResult<()> {
        let url = url.ok_or_else(|| ServiceError::MissingParam("http pushers need data.url".into()))?;
        let parsed = reqwest::Url::parse(url).map_err(|e| ServiceError::InvalidParam(format!("data.url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != NOTIFY_PATH {
            return Err(ServiceError::InvalidParam(format!("data.url must be an http(s) URL ending in {NOTIFY_PATH}")));
        }
        if !self.config.allow_private_networks && gateway::is_private_host(&parsed) {
            return Err(ServiceError::InvalidParam("data.url points into a private network".into()));
        }
        Ok(())
    }

    /// `POST /pushers/set` with `kind: null`: removes a pusher (no error when there is none).
    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> ServiceResult<()> {
        self.storage.push.delete_pusher(user_id, app_id, pushkey).await?;
        Ok(())
    }

    /// `GET /pushers`.
    pub async fn pushers(&self, user_id: &str) -> ServiceResult<Vec<PusherJson>> {
        Ok(self.storage.push.pushers(Some(user_id)).await?.into_iter().map(|p| pusher_json(&p)).collect())
    }

    /// `GET /notifications`: newest first; `from` is the token of the previous page.
    pub async fn notifications(
        &self,
        user_id: &str,
        from: Option<&str>,
        limit: usize,
        only_highlight: bool,
    ) -> ServiceResult<(Vec<NotificationItem>, Option<String>)> {
        let before = from
            .map(|f| f.parse::<i64>().map_err(|_| ServiceError::InvalidParam("invalid from token".into())))
            .transpose()?;
        let limit = limit.clamp(1, 100);
        let rows = self
            .storage
            .push
            .notifications(user_id, before, only_highlight, i64::try_from(limit).unwrap_or(100))
            .await?;
        let next = (rows.len() == limit).then(|| rows.last().map(|r| r.stream_ordering.to_string())).flatten();
        let viewer = super::rooms::client_format::Viewer { user_id, device_id: None };
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            // An event the user can no longer see (e.g. after forgetting the room) is left out.
            let Ok(event) = self.rooms.event_for(viewer, &row.room_id, &row.event_id).await else { continue };
            items.push(NotificationItem { row, event, profile_tag: None });
        }
        Ok((items, next))
    }

    /// Starts push-rule evaluation and delivery, in whichever process wins the leader lock.
    pub fn spawn(self: &Arc<Self>, notifier: Arc<Notifier>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.storage.push.try_lead().await {
                    Ok(Some(lock)) => {
                        tracing::info!("this process evaluates push rules and delivers pushes");
                        let evaluating = this.clone().evaluate_forever(notifier.clone());
                        let delivering = this.clone().deliver_forever();
                        tokio::select! {
                            () = evaluating => {}
                            () = delivering => {}
                            () = lock.lost() => tracing::warn!("lost the push leader lock"),
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "push leader election failed"),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
}

/// A stored pusher in the spec's JSON shape.
fn pusher_json(p: &PusherRecord) -> JsonValue {
    let mut v = json!({
        "pushkey": p.pushkey,
        "app_id": p.app_id,
        "kind": p.kind,
        "app_display_name": p.app_display_name,
        "device_display_name": p.device_display_name,
        "lang": p.lang,
        "data": p.data,
    });
    if let Some(tag) = &p.profile_tag {
        v["profile_tag"] = json!(tag);
    }
    v
}
