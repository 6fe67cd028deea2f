//! STACK's upstream HTTP client for the proxy, with the I/O half of the SSRF
//! guard (product §11, `docs/proxy.md` "Egress").
//!
//! What it does: [`Egress::send`] takes an [`OutboundRequest`] whose
//! [`Target`] came from `stack_proxy::parse_target` and whose credential
//! headers came from `stack_proxy::attach`, and returns the upstream's
//! answer as an [`UpstreamResponse`], or an [`EgressError`] with a stable
//! [`EgressError::code`]. Guarantees:
//!
//! * **Resolve once, check every address, connect to a checked address.**
//!   The host is resolved with tokio's resolver; if *any* resolved address
//!   is refused by [`stack_proxy::is_forbidden`] (loopback, RFC 1918,
//!   link-local, CGNAT, multicast, metadata, IPv4-mapped forms of those…
//!   unless inside [`EgressConfig::allow_private`]; metadata, unspecified,
//!   multicast and broadcast whatever the list says) the call is refused
//!   before any connection. The TCP connection goes to exactly one of the
//!   checked `SocketAddr`s: there is no second lookup to rebind.
//! * **TLS by default**: rustls (ring provider, webpki roots plus
//!   [`EgressConfig::extra_roots`]), SNI and certificate name = the target
//!   host, `http/1.1` ALPN. Plain `http` only with
//!   [`EgressConfig::allow_http`].
//! * **The request is built from the `Target`** (`Host` = the target host,
//!   with the port when not the default); the caller may not set `Host` or
//!   any framing header (`Content-Length`, `Transfer-Encoding`,
//!   `Connection`, …): hyper writes those.
//! * **Redirects are never followed**: a 3xx is returned as data, so a
//!   redirect to another host cannot carry the credential there.
//! * **Limits**: the request body is checked against
//!   [`EgressConfig::max_request_bytes`] before anything is resolved; the
//!   response is refused on a larger `Content-Length` and otherwise read
//!   frame by frame, stopping (and dropping the connection) as soon as it
//!   passes [`EgressConfig::max_response_bytes`]: over the limit is an
//!   error, never a silent truncation. [`EgressConfig::connect_timeout`]
//!   bounds resolve + connect + handshake, [`EgressConfig::timeout`] the
//!   whole exchange including the body.
//! * **Pooling**: hyper-util's pooled client, keyed by (scheme, host:port);
//!   a connection is reused only for the host it was opened and checked
//!   for. `TCP_NODELAY` is set.
//! * **No secrets in logs**: header values are never logged, credential
//!   headers are marked sensitive, and the `Debug` of an
//!   [`OutboundRequest`] shows header names, not values, and hides the
//!   query (a query-scheme credential lives there).
//!
//! What it does not do: no policy of its own beyond the address check (the
//! target URL, constraints and credential are decided by `stack-proxy` and
//! the application layer), no retries of failed calls, no redirects, no
//! HTTP/2, no cookies, no response decompression, no outbound proxy.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stack_egress::EgressError> {
//! use stack_egress::{Egress, EgressConfig, OutboundRequest};
//!
//! let egress = Egress::new(EgressConfig::default())?;
//! let target = stack_proxy::parse_target("https://api.example.com/v1/items", &["api.example.com".to_owned()])
//!     .map_err(|_| stack_egress::EgressError::InvalidRequest { reason: "bad url" })?;
//! let response = egress.send(OutboundRequest::new(target, http::Method::GET)).await?;
//! assert!(response.status >= 100);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod connect;
mod error;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use stack_core::Secret;
use stack_proxy::Target;
use stack_proxy::credential::FRAMING_HEADERS;
use stack_proxy::{Cidr, Scheme, is_sensitive_header};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, RootCertStore};

use crate::connect::{GuardedConnector, PeerAddr};
pub use crate::error::EgressError;
pub use tokio_rustls::rustls::pki_types::CertificateDer;

/// Default for both body limits: 10 MiB (product §11: "10 MB").
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;

/// How the client behaves. [`Default`] is the production setting.
#[derive(Clone)]
pub struct EgressConfig {
    /// Largest request body sent (default 10 MiB).
    pub max_request_bytes: usize,
    /// Largest response body read (default 10 MiB).
    pub max_response_bytes: usize,
    /// The whole exchange, connect to last body byte (default 30 s).
    pub timeout: Duration,
    /// Resolve + TCP connect + TLS handshake (default 10 s).
    pub connect_timeout: Duration,
    /// Non-public blocks the proxy may reach (`STACK_PROXY_ALLOW_PRIVATE`,
    /// parsed by `stack_proxy::parse_cidr_list`). Empty by default.
    pub allow_private: Vec<Cidr>,
    /// Allow plain `http` targets. Off by default; for tests and private
    /// deployments only.
    pub allow_http: bool,
    /// Trust anchors added to the webpki roots (an internal CA of a private
    /// deployment, a test certificate). Empty by default.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Fixed addresses for host names, used instead of DNS (like curl's
    /// `--resolve`; `STACK_PROXY_RESOLVE=host=ip,host=ip`). The addresses
    /// still go through the forbidden-address check. Empty by default.
    pub resolve: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    /// How long an idle pooled connection is kept (default 90 s).
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per (scheme, host, port) (default 32).
    pub pool_max_idle_per_host: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_BYTES,
            max_response_bytes: DEFAULT_MAX_BYTES,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            allow_private: Vec::new(),
            resolve: std::collections::BTreeMap::new(),
            allow_http: false,
            extra_roots: Vec::new(),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
        }
    }
}

impl fmt::Debug for EgressConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressConfig")
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("allow_private", &self.allow_private)
            .field("allow_http", &self.allow_http)
            .field("extra_roots", &self.extra_roots.len())
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .finish()
    }
}

/// Parses every `CERTIFICATE` block of a PEM file, for
/// [`EgressConfig::extra_roots`].
pub fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, EgressError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EgressError::Config {
            reason: format!("unreadable PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(EgressError::Config {
            reason: "no PEM certificate found".to_owned(),
        });
    }
    Ok(certs)
}

/// One call to send. Build it from a checked [`Target`]; header values are
/// [`Secret`]s so an injected credential never shows in `Debug`.
#[derive(Clone)]
pub struct OutboundRequest {
    pub target: Target,
    pub method: Method,
    /// (name, value) in order; repeated names are sent repeated. Names are
    /// case-insensitive; `Host` and framing headers are refused.
    pub headers: Vec<(String, Secret<String>)>,
    pub body: Option<Bytes>,
}

impl OutboundRequest {
    pub fn new(target: Target, method: Method) -> Self {
        Self {
            target,
            method,
            headers: Vec::new(),
            body: None,
        }
    }

    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Secret::new(value.into())));
        self
    }

    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }
}

impl fmt::Debug for OutboundRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OutboundRequest")
            .field("method", &self.method)
            .field("origin", &self.target.origin())
            .field("path", &self.target.path)
            .field("query", &self.target.query.as_ref().map(|_| "[redacted]"))
            .field("header_names", &names)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

/// The upstream's answer, whatever its status (a 3xx or a 5xx is data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    pub status: u16,
    /// Lower-case names; repeated headers joined with `", "`; hop-by-hop
    /// headers (`Connection`, `Transfer-Encoding`, `Keep-Alive`, …) removed;
    /// values not valid UTF-8 are converted lossily.
    pub headers: BTreeMap<String, String>,
    /// The complete body (never truncated: over the limit is an error).
    pub body: Bytes,
    /// The checked address the response came from (for the audit entry).
    pub remote_addr: Option<SocketAddr>,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The upstream client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Egress {
    client: Client<GuardedConnector, Full<Bytes>>,
    config: Arc<EgressConfig>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// Builds the TLS configuration and the pooled client. Fails only on an
    /// unusable extra root certificate.
    pub fn new(config: EgressConfig) -> Result<Self, EgressError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &config.extra_roots {
            roots.add(cert.clone()).map_err(|e| EgressError::Config {
                reason: format!("unusable extra root certificate: {e}"),
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EgressError::Config {
                reason: format!("TLS configuration: {e}"),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];

        let connector = GuardedConnector::new(
            config.resolve.clone(),
            config.allow_private.clone(),
            config.allow_http,
            config.connect_timeout,
            TlsConnector::from(Arc::new(tls)),
        );
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .set_host(true)
            .build(connector);
        Ok(Self {
            client,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    /// Sends one request and reads the whole response. See the crate doc
    /// for what is checked, in which order.
    pub async fn send(&self, req: OutboundRequest) -> Result<UpstreamResponse, EgressError> {
        let head_only = req.method == Method::HEAD;
        let request = self.build(req)?;
        let limit = self.config.timeout;
        let host = request.uri().host().unwrap_or_default().to_owned();
        let exchange = async {
            let response = self.client.request(request).await.map_err(client_error)?;
            self.read(response, head_only).await
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => {
                if let Ok(r) = &result {
                    tracing::debug!(
                        host,
                        status = r.status,
                        bytes = r.body.len(),
                        "egress: response"
                    );
                }
                result
            }
            Err(_) => {
                tracing::debug!(host, "egress: timed out");
                Err(EgressError::Timeout {
                    seconds: limit.as_secs(),
                })
            }
        }
    }

    /// Everything that can be refused without touching the network.
    fn build(&self, req: OutboundRequest) -> Result<Request<Full<Bytes>>, EgressError> {
        if req.target.scheme == Scheme::Http && !self.config.allow_http {
            return Err(EgressError::InsecureScheme);
        }
        if req.method == Method::CONNECT {
            return Err(EgressError::InvalidRequest {
                reason: "the CONNECT method cannot be proxied",
            });
        }
        let body = req.body.unwrap_or_default();
        if body.len() > self.config.max_request_bytes {
            return Err(EgressError::RequestTooLarge {
                limit: self.config.max_request_bytes,
            });
        }
        let uri: Uri = req
            .target
            .url()
            .parse()
            .map_err(|_| EgressError::InvalidRequest {
                reason: "the target is not a valid URI",
            })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            let invalid = || EgressError::InvalidHeader {
                name: error::clip(name),
            };
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            if FRAMING_HEADERS.contains(&header.as_str()) {
                return Err(invalid());
            }
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| invalid())?;
            if value.as_bytes().contains(&0) {
                return Err(invalid());
            }
            value.set_sensitive(is_sensitive_header(header.as_str()));
            headers.append(header, value);
        }
        let mut request = Request::builder()
            .method(req.method)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|_| EgressError::InvalidRequest {
                reason: "the request cannot be built",
            })?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    async fn read(
        &self,
        response: http::Response<hyper::body::Incoming>,
        head_only: bool,
    ) -> Result<UpstreamResponse, EgressError> {
        let max = self.config.max_response_bytes;
        let (parts, mut body) = response.into_parts();
        let status = parts.status.as_u16();
        let remote_addr = parts.extensions.get::<PeerAddr>().map(|p| p.0);
        let bodiless = head_only || status == 204 || status == 304;
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if !bodiless && declared.is_some_and(|n| n > max as u64) {
            return Err(EgressError::ResponseTooLarge { limit: max });
        }
        let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(max).min(max));
        let mut buf = BytesMut::with_capacity(capacity.min(64 * 1024));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                tracing::debug!(error = %e, "egress: response body failed");
                EgressError::Protocol
            })?;
            if let Ok(data) = frame.into_data() {
                if data.len() > max.saturating_sub(buf.len()) {
                    return Err(EgressError::ResponseTooLarge { limit: max });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(UpstreamResponse {
            status,
            headers: end_to_end_headers(&parts.headers),
            body: buf.freeze(),
            remote_addr,
        })
    }
}

/// The response headers minus hop-by-hop ones (and those `Connection`
/// names), as a map.
fn end_to_end_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let listed: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// Recovers the connector's own error from hyper-util's wrapper.
fn client_error(e: hyper_util::client::legacy::Error) -> EgressError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(own) = err.downcast_ref::<EgressError>() {
            return own.clone();
        }
        source = err.source();
    }
    tracing::debug!(error = %e, "egress: upstream exchange failed");
    if e.is_connect() {
        EgressError::Connect
    } else {
        EgressError::Protocol
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_and_repeats_joined() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.append("vary", HeaderValue::from_static("a"));
        h.append("vary", HeaderValue::from_static("b"));
        h.insert(
            "location",
            HeaderValue::from_static("https://elsewhere.example/"),
        );
        let out = end_to_end_headers(&h);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out.get("vary").map(String::as_str), Some("a, b"));
        assert!(out.contains_key("location"));
    }

    #[test]
    fn debug_hides_header_values_and_query() {
        let target = stack_proxy::parse_target(
            "https://api.example.com/v1/x?api_key=sk_live_abc",
            &["api.example.com".to_owned()],
        )
        .unwrap();
        let req =
            OutboundRequest::new(target, Method::GET).header("authorization", "Bearer sk_live_abc");
        let shown = format!("{req:?}");
        assert!(!shown.contains("sk_live_abc"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }
}
