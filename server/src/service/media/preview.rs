//! URL previews (`/media/preview_url`), off unless `media.url_previews` is set: the server fetches
//! the page (through the outbound address guard, size- and time-limited), reads its OpenGraph
//! tags (or title and description), stores the preview image in the media repository and
//! answers with its `mxc://` URI. Previews are cached per URL for an hour.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value as JsonValue, json};

use super::{MediaService, content_store::StagedFile};
use crate::service::{ServiceError, ServiceResult, outbound, tokens};

/// The most of a page read, and of a preview image.
const MAX_PAGE_BYTES: usize = 1024 * 1024;
const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
const CACHE_FOR: Duration = Duration::from_secs(3600);
const MAX_CACHED: usize = 1000;

/// The fetching side of URL previews.
#[derive(Debug)]
pub struct Previewer {
    http: reqwest::Client,
    allow_private: bool,
    cache: Mutex<BTreeMap<String, (Instant, JsonValue)>>,
}

impl Previewer {
    pub fn new(allow_private: bool) -> ServiceResult<Self> {
        // Each redirect target passes the same check as the URL itself.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if !allow_private && outbound::is_private_host(attempt.url()) {
                attempt.error("redirect into a private network")
            } else {
                attempt.follow()
            }
        });
        let http = outbound::client(allow_private, Duration::from_secs(10), policy)
            .map_err(|e| ServiceError::Internal(format!("preview client: {e}")))?;
        Ok(Self { http, allow_private, cache: Mutex::new(BTreeMap::new()) })
    }

    fn check(&self, url: &str) -> ServiceResult<reqwest::Url> {
        let parsed = reqwest::Url::parse(url).map_err(|e| ServiceError::InvalidParam(format!("invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ServiceError::InvalidParam("only http and https URLs are previewed".into()));
        }
        if !self.allow_private && outbound::is_private_host(&parsed) {
            return Err(ServiceError::Forbidden("URLs in private networks are not previewed".into()));
        }
        Ok(parsed)
    }

    /// Fetches at most `max` bytes; the content type and the bytes.
    async fn fetch(&self, url: reqwest::Url, max: usize) -> ServiceResult<(String, Vec<u8>)> {
        let upstream = |e: String| ServiceError::Upstream(format!("could not fetch the URL: {e}"));
        let response = self.http.get(url).send().await.map_err(|e| upstream(e.to_string()))?;
        if !response.status().is_success() {
            return Err(upstream(format!("HTTP {}", response.status())));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| upstream(e.to_string()))? {
            let room = max.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= max {
                break;
            }
        }
        Ok((content_type, body))
    }
}

impl MediaService {
    /// `GET /media/preview_url`.
    pub async fn preview_url(&self, url: &str) -> ServiceResult<JsonValue> {
        let previewer = self.previewer.as_ref().ok_or(ServiceError::Disabled("URL previews are off"))?;
        let parsed = previewer.check(url)?;
        if let Some((at, cached)) = previewer.cache.lock().unwrap_or_else(|e| e.into_inner()).get(url)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(cached.clone());
        }
        let (content_type, body) = previewer.fetch(parsed.clone(), MAX_PAGE_BYTES).await?;
        let mut og = serde_json::Map::new();
        let image_url = if content_type.starts_with("text/html") || content_type.starts_with("application/xhtml") {
            let tags = opengraph(&String::from_utf8_lossy(&body));
            let image = tags.get("og:image").and_then(|i| parsed.join(i).ok());
            for (k, v) in tags {
                if k != "og:image" {
                    og.insert(k, json!(v));
                }
            }
            image
        } else if content_type.starts_with("image/") {
            Some(parsed.clone())
        } else {
            None
        };
        if let Some(image) = image_url
            && let Ok(image) = previewer.check(image.as_str())
            && let Ok((image_type, bytes)) = previewer.fetch(image, MAX_IMAGE_BYTES).await
            && image_type.starts_with("image/")
            && !image_type.starts_with("image/svg")
        {
            let staged = self.files.stage_bytes(&bytes).await.map_err(super::io_error)?;
            let mxc = self.store_preview_image(staged, &image_type).await?;
            og.insert("og:image".into(), json!(mxc));
            og.insert("og:image:type".into(), json!(image_type));
            og.insert("matrix:image:size".into(), json!(bytes.len()));
        }
        let preview = JsonValue::Object(og);
        let mut cache = previewer.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(url.to_owned(), (Instant::now(), preview.clone()));
        Ok(preview)
    }

    async fn store_preview_image(&self, staged: StagedFile, content_type: &str) -> ServiceResult<String> {
        let media_id = tokens::random_alphanumeric(super::MEDIA_ID_LEN);
        let (sha256, size) = (staged.sha256.clone(), staged.size);
        let meta = super::UploadMeta { content_type: Some(content_type.to_owned()), file_name: None };
        let mut lock = self.storage.media.lock_content(&sha256).await?;
        self.files.place(staged).await.map_err(super::io_error)?;
        lock.insert_uploaded(&self.server_name, &media_id, None, super::stored(&sha256, size, &meta)).await?;
        lock.commit().await?;
        Ok(self.mxc(&media_id).to_string())
    }
}

/// OpenGraph properties of a page: its `og:*` meta tags, with the `<title>` and the `description`
/// meta tag standing in for a missing `og:title` and `og:description`.
pub fn opengraph(html: &str) -> BTreeMap<String, String> {
    let lower = html.to_ascii_lowercase();
    let mut tags = BTreeMap::new();
    let mut description = None;
    let mut from = 0;
    while let Some(at) = lower[from..].find("<meta") {
        let start = from + at;
        let Some(len) = lower[start..].find('>') else { break };
        let attrs = attributes(&html[start + 5..start + len]);
        from = start + len;
        let content = attrs.get("content").cloned().unwrap_or_default();
        if let Some(property) = attrs.get("property").or_else(|| attrs.get("name")) {
            let property = property.to_ascii_lowercase();
            if property.starts_with("og:") && tags.len() < 50 {
                tags.entry(property).or_insert_with(|| truncate(&content));
            } else if property == "description" {
                description = Some(truncate(&content));
            }
        }
    }
    if !tags.contains_key("og:title")
        && let Some(start) = lower.find("<title")
        && let Some(open) = lower[start..].find('>')
        && let Some(end) = lower[start + open..].find("</title")
    {
        let title = decode_entities(html[start + open + 1..start + open + end].trim());
        if !title.is_empty() {
            tags.insert("og:title".into(), truncate(&title));
        }
    }
    if !tags.contains_key("og:description")
        && let Some(d) = description
    {
        tags.insert("og:description".into(), d);
    }
    tags
}

fn truncate(s: &str) -> String {
    s.chars().take(1000).collect()
}

/// `name="value"`, `name='value'` and `name=value` pairs, names lowercased, values decoded.
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = tag;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim().to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = match after.chars().next() {
            Some(q @ ('"' | '\'')) => match after[1..].find(q) {
                Some(end) => (&after[1..1 + end], &after[end + 2..]),
                None => (&after[1..], ""),
            },
            _ => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if !name.is_empty() && !name.contains(char::is_whitespace) {
            out.insert(name, decode_entities(value));
        }
        rest = remaining;
    }
    out
}

fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::opengraph;

    #[test]
    fn opengraph_tags_title_and_description() {
        let html = r#"<html><head><TITLE>Bürgeramt &amp; mehr</TITLE>
            <meta property="og:type" content="website">
            <meta content='Termine online buchen' name="description"/>
            <meta property=og:image content=/bild.png>
            <meta name="viewport" content="width=device-width">
            </head></html>"#;
        let og = opengraph(html);
        assert_eq!(og.get("og:title").map(String::as_str), Some("Bürgeramt & mehr"));
        assert_eq!(og.get("og:description").map(String::as_str), Some("Termine online buchen"));
        assert_eq!(og.get("og:type").map(String::as_str), Some("website"));
        assert_eq!(og.get("og:image").map(String::as_str), Some("/bild.png"));
        assert!(!og.contains_key("viewport"));
        let explicit = opengraph(r#"<meta property="og:title" content="Echt"><title>Nicht</title>"#);
        assert_eq!(explicit.get("og:title").map(String::as_str), Some("Echt"));
        assert!(opengraph("<meta").is_empty());
    }
}
