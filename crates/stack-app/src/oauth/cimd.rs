//! OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
//! as profiled by the MCP authorization spec): a client whose `client_id` is
//! an `https` URL is not registered; the authorization server fetches the
//! JSON document at that URL and takes the client's name and redirect URIs
//! from it.
//!
//! What it checks:
//!
//! * the URL: `https` (plain `http` only where the egress allows it, i.e.
//!   `STACK_PROXY_ALLOW_HTTP` in tests), a DNS host name (no IP literal, no
//!   userinfo), a path other than `/`, no fragment, no dot segments, at most
//!   [`MAX_CLIENT_ID_BYTES`], and already in the canonical form
//!   `stack_proxy::parse_target` produces, so the URL fetched is exactly the
//!   `client_id`;
//! * the fetch: through the same SSRF-guarded egress client as the proxy
//!   (every resolved address checked, private and loopback refused unless
//!   allow-listed, no redirects followed), a response of at most
//!   [`MAX_DOCUMENT_BYTES`] within the egress timeout, status 200, a JSON
//!   content type when one is given, at most [`MAX_CONCURRENT_FETCHES`]
//!   fetches at a time per node;
//! * the document: a JSON object whose `client_id` equals the URL (simple
//!   string comparison), a non-empty `client_name`, 1–10 acceptable
//!   `redirect_uris`; no `client_secret`/`client_secret_expires_at`, and
//!   `token_endpoint_auth_method` (when given) `none`, since STACK only
//!   serves public clients; `grant_types`/`response_types` within what the
//!   server supports.
//!
//! Caching: a valid document is kept per node for the freshness its
//! `Cache-Control` gives (`max-age`/`s-maxage`; `no-store`/`no-cache` mean
//! not at all), [`DEFAULT_TTL_SECONDS`] without one, never longer than
//! [`MAX_TTL_SECONDS`]; at most [`CACHE_CAPACITY`] documents. Errors and
//! invalid documents are never cached.
//!
//! What it does not do: no `logo_uri` (never fetched or shown), no
//! `private_key_jwt` or `jwks_uri` (such clients are refused), no trust
//! policy by domain beyond showing the host on the login and consent pages.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::{Map, Value};
use stack_core::Timestamp;
use stack_proxy::{Scheme, Target};

use super::{
    MAX_CLIENT_NAME, MAX_REDIRECT_URIS, OAuthClient, OAuthError, OAuthErrorCode, OAuthResult,
    check_redirect_uri,
};
use crate::App;
use crate::proxy::{EgressPort, Outbound};

/// Largest metadata document accepted (the draft recommends 5 kilobytes).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Longest `client_id` URL accepted.
pub const MAX_CLIENT_ID_BYTES: usize = 512;
/// Freshness of a document served without `Cache-Control`.
pub const DEFAULT_TTL_SECONDS: i64 = 300;
/// The longest a document is kept, whatever its `Cache-Control` says.
pub const MAX_TTL_SECONDS: i64 = 3600;
/// Documents kept per node.
pub const CACHE_CAPACITY: usize = 1000;
/// Document fetches in flight per node; more are refused (temporarily).
pub const MAX_CONCURRENT_FETCHES: usize = 8;
/// Fetch timeout the server configures on its metadata egress client.
pub const FETCH_TIMEOUT_SECONDS: u64 = 5;

/// Per-node state: the egress client used for fetching, the document cache
/// and the count of fetches in flight.
#[derive(Default)]
pub struct OAuthRuntime {
    egress: RwLock<Option<Arc<dyn EgressPort>>>,
    allow_http: std::sync::atomic::AtomicBool,
    documents: RwLock<HashMap<String, CachedDocument>>,
    in_flight: AtomicUsize,
}

impl std::fmt::Debug for OAuthRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthRuntime").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct CachedDocument {
    client: OAuthClient,
    valid_until: i64,
}

/// Whether `client_id` names a metadata document (an `http(s)` URL) rather
/// than a registered client.
pub fn is_metadata_client_id(client_id: &str) -> bool {
    let lower = |n: usize| client_id.get(..n).map(str::to_ascii_lowercase);
    lower(8).as_deref() == Some("https://") || lower(7).as_deref() == Some("http://")
}

/// The host (with a non-default port) of a metadata-document `client_id`,
/// shown to the user next to the client's self-chosen name.
pub fn client_id_host(client_id: &str) -> Option<String> {
    if !is_metadata_client_id(client_id) {
        return None;
    }
    let url = url::Url::parse(client_id).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

fn invalid(description: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidClient, description)
}

/// Checks a metadata-document `client_id` and returns what to fetch.
pub fn check_client_id(client_id: &str, allow_http: bool) -> OAuthResult<Target> {
    if client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(invalid(format!(
            "a client_id URL may be at most {MAX_CLIENT_ID_BYTES} bytes"
        )));
    }
    let host = url::Url::parse(client_id)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .ok_or_else(|| invalid("the client_id URL has no host"))?;
    let target = stack_proxy::parse_target(client_id, &[host])
        .map_err(|e| invalid(format!("the client_id URL is not acceptable: {e}")))?;
    if target.scheme == Scheme::Http && !allow_http {
        return Err(invalid(
            "a client_id URL must use https (Client ID Metadata Documents)",
        ));
    }
    if target.path == "/" {
        return Err(invalid(
            "a client_id URL must have a path (for example https://app.example/client.json)",
        ));
    }
    if target.url() != client_id {
        return Err(invalid(
            "the client_id URL is not in canonical form (lower-case host, no default port, no needless escapes)",
        ));
    }
    Ok(target)
}

/// How long a document may be reused, from its `Cache-Control` (seconds;
/// 0 = do not keep).
pub fn freshness_seconds(headers: &BTreeMap<String, String>) -> i64 {
    let Some(cc) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("cache-control"))
        .map(|(_, v)| v.to_ascii_lowercase())
    else {
        return DEFAULT_TTL_SECONDS;
    };
    let (mut max_age, mut s_maxage) = (None, None);
    for directive in cc.split(',').map(str::trim) {
        let (name, value) = directive
            .split_once('=')
            .map_or((directive, None), |(n, v)| (n.trim(), Some(v.trim())));
        let seconds = value.and_then(|v| v.trim_matches('"').parse::<i64>().ok());
        match name {
            "no-store" | "no-cache" => return 0,
            "max-age" => max_age = seconds.or(Some(0)),
            "s-maxage" => s_maxage = seconds.or(Some(0)),
            _ => {}
        }
    }
    s_maxage
        .or(max_age)
        .unwrap_or(DEFAULT_TTL_SECONDS)
        .clamp(0, MAX_TTL_SECONDS)
}

fn string_field(doc: &Map<String, Value>, name: &str) -> OAuthResult<Option<String>> {
    match doc.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!(
            "the client metadata document's {name} must be a string"
        ))),
    }
}

fn string_list(doc: &Map<String, Value>, name: &str) -> OAuthResult<Option<Vec<String>>> {
    match doc.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| {
                invalid(format!(
                    "the client metadata document's {name} must be an array of strings"
                ))
            }),
        Some(_) => Err(invalid(format!(
            "the client metadata document's {name} must be an array of strings"
        ))),
    }
}

fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Validates a fetched document against its URL and turns it into the
/// client it describes.
pub fn parse_document(client_id: &str, body: &[u8], now: Timestamp) -> OAuthResult<OAuthClient> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid(format!(
            "the client metadata document is larger than {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    let doc = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(invalid("the client metadata document is not a JSON object"));
        }
    };
    if string_field(&doc, "client_id")?.as_deref() != Some(client_id) {
        return Err(invalid(
            "the client metadata document's client_id does not match its URL",
        ));
    }
    let client_name = string_field(&doc, "client_name")?
        .map(|n| clean(&n, MAX_CLIENT_NAME))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("the client metadata document has no client_name"))?;
    if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
        return Err(invalid(
            "a client metadata document must not carry client_secret or client_secret_expires_at",
        ));
    }
    match string_field(&doc, "token_endpoint_auth_method")?.as_deref() {
        None | Some("none") => {}
        Some(_) => {
            return Err(invalid(
                "this server accepts only public clients: token_endpoint_auth_method must be none",
            ));
        }
    }
    let redirect_uris = string_list(&doc, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(invalid("the client metadata document has no redirect_uris"));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(invalid(format!(
            "the client metadata document lists more than {MAX_REDIRECT_URIS} redirect_uris"
        )));
    }
    for uri in &redirect_uris {
        check_redirect_uri(uri).map_err(|d| {
            invalid(format!(
                "the client metadata document has an unacceptable redirect URI: {d}"
            ))
        })?;
    }
    let grant_types = string_list(&doc, "grant_types")?
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if !grant_types.iter().any(|g| g == "authorization_code")
        || grant_types
            .iter()
            .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return Err(invalid(
            "the client metadata document's grant_types must include authorization_code and may add only refresh_token",
        ));
    }
    if string_list(&doc, "response_types")?.is_some_and(|r| r.iter().any(|t| t != "code")) {
        return Err(invalid(
            "the client metadata document's response_types may hold only code",
        ));
    }
    let optional = |name: &str, max: usize| -> OAuthResult<Option<String>> {
        Ok(string_field(&doc, name)?
            .map(|s| clean(&s, max))
            .filter(|s| !s.is_empty()))
    };
    Ok(OAuthClient {
        client_id: client_id.to_owned(),
        client_name: Some(client_name),
        redirect_uris,
        grant_types,
        software_id: optional("software_id", MAX_CLIENT_NAME)?,
        software_version: optional("software_version", 64)?,
        registered_from: String::new(),
        created_at: now,
        last_used_at: Some(now),
    })
}

fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Counts a fetch in flight; released on drop.
struct FetchSlot<'a>(&'a AtomicUsize);

impl<'a> FetchSlot<'a> {
    fn take(counter: &'a AtomicUsize) -> Option<Self> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONCURRENT_FETCHES).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(counter))
    }
}

impl Drop for FetchSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OAuthRuntime {
    fn cached(&self, client_id: &str, now: i64) -> Option<OAuthClient> {
        self.documents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client_id)
            .filter(|d| d.valid_until > now)
            .map(|d| d.client.clone())
    }

    fn keep(&self, client: &OAuthClient, valid_until: i64, now: i64) {
        let mut docs = self
            .documents
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if docs.len() >= CACHE_CAPACITY && !docs.contains_key(&client.client_id) {
            docs.retain(|_, d| d.valid_until > now);
            if docs.len() >= CACHE_CAPACITY
                && let Some(oldest) = docs
                    .iter()
                    .min_by_key(|(_, d)| d.valid_until)
                    .map(|(k, _)| k.clone())
            {
                docs.remove(&oldest);
            }
        }
        docs.insert(
            client.client_id.clone(),
            CachedDocument {
                client: client.clone(),
                valid_until,
            },
        );
    }

    /// Documents currently cached (tests).
    pub fn cached_documents(&self) -> usize {
        self.documents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl App {
    /// Sets the egress client used to fetch Client ID Metadata Documents
    /// (the proxy's SSRF guard with tighter limits: [`MAX_DOCUMENT_BYTES`],
    /// [`FETCH_TIMEOUT_SECONDS`]). `allow_http` must match the client's own
    /// setting; it lets `http` client_id URLs through (tests only). Until
    /// this is called, such client_ids are refused.
    pub fn set_client_metadata_egress(&self, egress: Arc<dyn EgressPort>, allow_http: bool) {
        *self
            .oauth
            .egress
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(egress);
        self.oauth.allow_http.store(allow_http, Ordering::Release);
    }

    /// Whether this node can fetch Client ID Metadata Documents (advertised
    /// as `client_id_metadata_document_supported`).
    pub fn client_metadata_documents_supported(&self) -> bool {
        self.oauth
            .egress
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The per-node OAuth state (document cache), for tests.
    pub fn oauth_runtime(&self) -> &OAuthRuntime {
        &self.oauth
    }

    /// The client described by the metadata document at `client_id`: from
    /// the cache, else fetched and validated.
    pub(crate) async fn metadata_client(&self, client_id: &str) -> OAuthResult<OAuthClient> {
        let allow_http = self.oauth.allow_http.load(Ordering::Acquire);
        let target = check_client_id(client_id, allow_http)?;
        let now = self.now();
        if let Some(client) = self.oauth.cached(client_id, now.as_millis()) {
            return Ok(client);
        }
        let egress = self
            .oauth
            .egress
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                invalid("this server does not fetch client metadata documents; register the client")
            })?;
        let Some(_slot) = FetchSlot::take(&self.oauth.in_flight) else {
            return Err(OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "too many client metadata documents are being fetched; try again shortly",
            ));
        };
        let request = Outbound {
            target,
            method: "GET".to_owned(),
            headers: vec![(
                "accept".to_owned(),
                stack_core::Secret::new("application/json".to_owned()),
            )],
            body: None,
        };
        let response = egress.send(request).await.map_err(|e| {
            tracing::info!(
                code = e.code.as_str(),
                "client metadata document fetch failed"
            );
            invalid(format!(
                "the client metadata document could not be fetched: {}",
                e.message
            ))
        })?;
        if response.status != 200 {
            return Err(invalid(format!(
                "fetching the client metadata document answered HTTP {} (redirects are not followed)",
                response.status
            )));
        }
        if let Some(ct) = response
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v)
            && !is_json_content_type(ct)
        {
            return Err(invalid(
                "the client metadata document is not served as JSON (application/json)",
            ));
        }
        let client = parse_document(client_id, &response.body, now)?;
        let ttl = freshness_seconds(&response.headers);
        if ttl > 0 {
            self.oauth
                .keep(&client, now.as_millis() + ttl * 1000, now.as_millis());
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://app.example/oauth/client.json";

    fn doc(extra: Value) -> Vec<u8> {
        let mut d = serde_json::json!({
            "client_id": URL,
            "client_name": "Example MCP Client",
            "redirect_uris": ["http://127.0.0.1:3000/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        if let (Value::Object(d), Value::Object(e)) = (&mut d, extra) {
            d.extend(e);
        }
        serde_json::to_vec(&d).unwrap()
    }

    fn refused(body: &[u8]) -> String {
        parse_document(URL, body, Timestamp::from_millis(0))
            .unwrap_err()
            .description
    }

    #[test]
    fn client_id_urls_are_checked() {
        assert!(is_metadata_client_id(URL));
        assert!(is_metadata_client_id("HTTP://x.example/a"));
        assert!(!is_metadata_client_id("mcpc_abc"));
        assert!(check_client_id(URL, false).is_ok());
        assert!(check_client_id("https://app.example:8443/c.json?v=1", false).is_ok());
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://127.0.0.1/client.json",
            "https://[::1]/client.json",
            "https://user@app.example/client.json",
            "https://app.example/a/../client.json",
            "https://app.example/client.json#x",
            "https://APP.example/client.json",
            "https://app.example:443/client.json",
        ] {
            assert!(check_client_id(bad, false).is_err(), "{bad}");
        }
        assert!(check_client_id("http://app.example/client.json", true).is_ok());
        let long = format!("https://app.example/{}", "a".repeat(MAX_CLIENT_ID_BYTES));
        assert!(check_client_id(&long, false).is_err());
        assert_eq!(client_id_host(URL).as_deref(), Some("app.example"));
        assert_eq!(
            client_id_host("https://app.example:8443/c").as_deref(),
            Some("app.example:8443")
        );
        assert_eq!(client_id_host("mcpc_x"), None);
    }

    #[test]
    fn a_valid_document_describes_a_public_client() {
        let c = parse_document(URL, &doc(Value::Null), Timestamp::from_millis(7)).unwrap();
        assert_eq!(c.client_id, URL);
        assert_eq!(c.client_name.as_deref(), Some("Example MCP Client"));
        assert_eq!(c.redirect_uris, vec!["http://127.0.0.1:3000/callback"]);
        let minimal = serde_json::json!({
            "client_id": URL, "client_name": "m", "redirect_uris": ["https://app.example/cb"],
        });
        assert!(
            parse_document(
                URL,
                minimal.to_string().as_bytes(),
                Timestamp::from_millis(0)
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_documents_are_refused() {
        let other = serde_json::json!({ "client_id": "https://evil.example/client.json" });
        assert!(refused(&doc(other)).contains("does not match"));
        assert!(
            refused(&doc(serde_json::json!({ "client_id": format!("{URL}/") })))
                .contains("does not match")
        );
        assert!(refused(&doc(serde_json::json!({ "client_name": "  " }))).contains("client_name"));
        assert!(
            refused(&doc(serde_json::json!({ "redirect_uris": [] }))).contains("redirect_uris")
        );
        assert!(
            refused(&doc(
                serde_json::json!({ "redirect_uris": ["http://evil.example/cb"] })
            ))
            .contains("redirect URI")
        );
        assert!(
            refused(&doc(
                serde_json::json!({ "redirect_uris": "https://a.example/cb" })
            ))
            .contains("array")
        );
        assert!(
            refused(&doc(serde_json::json!({ "client_secret": "s" }))).contains("client_secret")
        );
        assert!(
            refused(&doc(
                serde_json::json!({ "token_endpoint_auth_method": "private_key_jwt" })
            ))
            .contains("public clients")
        );
        assert!(
            refused(&doc(
                serde_json::json!({ "grant_types": ["client_credentials"] })
            ))
            .contains("grant_types")
        );
        assert!(
            refused(&doc(serde_json::json!({ "response_types": ["token"] })))
                .contains("response_types")
        );
        assert!(refused(b"[1,2]").contains("JSON object"));
        assert!(refused(b"{nope").contains("JSON object"));
        let big = doc(serde_json::json!({ "padding": "x".repeat(MAX_DOCUMENT_BYTES) }));
        assert!(refused(&big).contains("larger than"));
    }

    #[test]
    fn cache_control_sets_the_freshness() {
        let h = |v: &str| BTreeMap::from([("cache-control".to_owned(), v.to_owned())]);
        assert_eq!(freshness_seconds(&BTreeMap::new()), DEFAULT_TTL_SECONDS);
        assert_eq!(freshness_seconds(&h("max-age=60")), 60);
        assert_eq!(freshness_seconds(&h("public, max-age=60, s-maxage=30")), 30);
        assert_eq!(freshness_seconds(&h("max-age=999999")), MAX_TTL_SECONDS);
        assert_eq!(freshness_seconds(&h("no-store")), 0);
        assert_eq!(freshness_seconds(&h("max-age=60, no-cache")), 0);
        assert_eq!(freshness_seconds(&h("max-age=-5")), 0);
        assert_eq!(freshness_seconds(&h("max-age=abc")), 0);
        assert_eq!(freshness_seconds(&h("private")), DEFAULT_TTL_SECONDS);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/client-metadata+json"));
        assert!(!is_json_content_type("text/html"));
        assert!(!is_json_content_type("application/jsonp"));
    }

    #[test]
    fn fetches_in_flight_are_bounded() {
        let n = AtomicUsize::new(0);
        let slots: Vec<_> = (0..MAX_CONCURRENT_FETCHES)
            .map(|_| FetchSlot::take(&n).unwrap())
            .collect();
        assert!(FetchSlot::take(&n).is_none());
        drop(slots);
        assert_eq!(n.load(Ordering::Acquire), 0);
        assert!(FetchSlot::take(&n).is_some());
    }
}
