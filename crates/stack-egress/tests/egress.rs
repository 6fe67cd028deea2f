#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! `stack-egress` against small local servers (tokio + hyper on 127.0.0.1,
//! and a rustls server with a committed self-signed certificate for
//! `localhost`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use stack_egress::{
    Egress, EgressConfig, EgressError, OutboundRequest, UpstreamResponse, parse_pem_certificates,
};
use stack_proxy::{Cidr, Scheme, Target, parse_cidr_list};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

const CERT_PEM: &[u8] = include_bytes!("fixtures/localhost.cert.pem");
const KEY_PEM: &[u8] = include_bytes!("fixtures/localhost.key.pem");

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    host: Option<String>,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// The TLS SNI, for the TLS server.
    sni: Option<String>,
}

/// A local upstream: its address, how many connections it accepted, and
/// the requests it saw.
struct Upstream {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

type Reply = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

fn full(body: impl Into<Bytes>) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Full::new(body.into()).boxed()
}

/// How the test upstream answers, by path.
async fn answer(
    req: Request<Incoming>,
    sni: Option<String>,
    seen: mpsc::UnboundedSender<Seen>,
) -> Reply {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let host = req
        .headers()
        .get("host")
        .map(|v| v.to_str().unwrap().to_owned());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let _ = seen.send(Seen {
        method,
        uri,
        host,
        headers,
        body: body.clone(),
        sni,
    });
    match path.as_str() {
        "/redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "https://elsewhere.example/steal")
            .body(full(""))
            .unwrap(),
        "/big-declared" => Response::builder()
            .header("content-length", "4096")
            .body(full(vec![b'x'; 4096]))
            .unwrap(),
        "/big-streamed" => {
            // Chunked, no length: the client must stop while streaming.
            let chunks =
                (0..64).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'y'; 1024]))));
            let stream = frames_body(chunks.collect());
            Response::new(stream.boxed())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(full("late"))
        }
        _ => Response::builder()
            .header("x-upstream", "yes")
            .header("content-type", "text/plain")
            .body(full(format!("echo:{}", String::from_utf8_lossy(&body))))
            .unwrap(),
    }
}

/// A body over prepared frames, sent without a length (chunked).
fn frames_body(
    frames: Vec<Result<Frame<Bytes>, Infallible>>,
) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static {
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, Infallible>>);
    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.pop_front())
        }
    }
    Frames(frames.into())
}

/// A plain HTTP/1.1 upstream on 127.0.0.1.
async fn plain_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let counter = Arc::clone(&accepts);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let tx = tx.clone();
                    async move { Ok::<_, Infallible>(answer(req, None, tx).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        accepts,
        seen: rx,
    }
}

/// A TLS upstream on 127.0.0.1 with the `localhost` test certificate.
async fn tls_upstream() -> Upstream {
    let certs = parse_pem_certificates(CERT_PEM).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let counter = Arc::clone(&accepts);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let svc = service_fn(move |req| {
                    let tx = tx.clone();
                    let sni = sni.clone();
                    async move { Ok::<_, Infallible>(answer(req, sni, tx).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        accepts,
        seen: rx,
    }
}

/// A target built by hand: `parse_target` refuses `localhost` and IP
/// literals, but the egress client must still check what it is given.
fn target(scheme: Scheme, host: &str, port: u16, path: &str) -> Target {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path.to_owned(), None),
    };
    Target {
        scheme,
        host: host.to_owned(),
        port,
        path,
        query,
    }
}

fn loopback() -> Vec<Cidr> {
    parse_cidr_list("127.0.0.0/8, ::1/128").unwrap()
}

/// Plain http, loopback allowed: the local test setting.
fn local_config() -> EgressConfig {
    EgressConfig {
        allow_private: loopback(),
        allow_http: true,
        ..EgressConfig::default()
    }
}

fn egress(config: EgressConfig) -> Egress {
    Egress::new(config).unwrap()
}

async fn get(e: &Egress, t: Target) -> Result<UpstreamResponse, EgressError> {
    e.send(OutboundRequest::new(t, Method::GET)).await
}

#[tokio::test]
async fn get_and_post_arrive_intact() {
    let mut up = plain_upstream().await;
    let e = egress(local_config());
    let port = up.addr.port();

    let r = e
        .send(
            OutboundRequest::new(
                target(Scheme::Http, "127.0.0.1", port, "/v1/items?a=1&b=x%20y"),
                Method::GET,
            )
            .header("Accept", "application/json")
            .header("authorization", "Bearer sk_test_secret"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Bytes::from_static(b"echo:"));
    assert_eq!(r.headers.get("x-upstream").map(String::as_str), Some("yes"));
    assert_eq!(r.remote_addr, Some(up.addr));
    let seen = up.seen.recv().await.unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/v1/items?a=1&b=x%20y");
    assert_eq!(
        seen.host.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert!(
        seen.headers
            .contains(&("accept".into(), "application/json".into()))
    );
    assert!(
        seen.headers
            .contains(&("authorization".into(), "Bearer sk_test_secret".into()))
    );
    assert!(seen.body.is_empty());

    let body = Bytes::from_static(br#"{"channel":"C1","text":"hi"}"#);
    let r = e
        .send(
            OutboundRequest::new(
                target(Scheme::Http, "localhost", port, "/api/chat.postMessage"),
                Method::POST,
            )
            .header("content-type", "application/json")
            .body(body.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        Bytes::from(format!("echo:{}", String::from_utf8_lossy(&body)))
    );
    let seen = up.seen.recv().await.unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, body);
    // Host is the target host, never an address.
    assert_eq!(
        seen.host.as_deref(),
        Some(format!("localhost:{port}").as_str())
    );
    let length = seen
        .headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str());
    assert_eq!(length, Some(body.len().to_string().as_str()));
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_allowed_by_the_list() {
    let up = plain_upstream().await;
    let port = up.addr.port();
    let strict = egress(EgressConfig {
        allow_http: true,
        ..EgressConfig::default()
    });
    let err = get(&strict, target(Scheme::Http, "127.0.0.1", port, "/"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EgressError::Forbidden {
                class: stack_proxy::IpClass::Loopback
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "EGRESS_FORBIDDEN_ADDRESS");
    assert_eq!(stack_core::Error::from(err).code.http_status(), 403);
    assert_eq!(up.accepts.load(Ordering::SeqCst), 0, "nothing may connect");

    let allowed = egress(EgressConfig {
        allow_http: true,
        allow_private: parse_cidr_list("127.0.0.0/8").unwrap(),
        ..EgressConfig::default()
    });
    let r = get(&allowed, target(Scheme::Http, "127.0.0.1", port, "/"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused() {
    // The check is on the resolved address, not on the name.
    let up = plain_upstream().await;
    let strict = egress(EgressConfig {
        allow_http: true,
        ..EgressConfig::default()
    });
    let err = get(
        &strict,
        target(Scheme::Http, "localhost", up.addr.port(), "/"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EgressError::Forbidden { .. }), "{err:?}");
    assert_eq!(up.accepts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn metadata_address_is_refused_even_with_a_broad_allow_list() {
    let e = egress(EgressConfig {
        allow_http: true,
        allow_private: parse_cidr_list("0.0.0.0/0, ::/0").unwrap(),
        ..EgressConfig::default()
    });
    for host in ["169.254.169.254", "169.254.170.2", "100.100.100.200"] {
        let err = get(&e, target(Scheme::Http, host, 80, "/latest/meta-data/"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EgressError::Forbidden {
                    class: stack_proxy::IpClass::CloudMetadata
                }
            ),
            "{host}: {err:?}"
        );
    }
    // Unspecified and IPv4-mapped forms too.
    let err = get(&e, target(Scheme::Http, "0.0.0.0", 80, "/"))
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::Forbidden { .. }), "{err:?}");
    let err = get(
        &e,
        target(Scheme::Http, "[::ffff:169.254.169.254]", 80, "/"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EgressError::Forbidden { .. }), "{err:?}");
}

#[tokio::test]
async fn private_and_mapped_addresses_are_refused_without_the_list() {
    let e = egress(EgressConfig {
        allow_http: true,
        ..EgressConfig::default()
    });
    for host in [
        "10.0.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "[fe80::1]",
    ] {
        let err = get(&e, target(Scheme::Http, host, 80, "/"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EgressError::Forbidden { .. }),
            "{host}: {err:?}"
        );
    }
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let mut up = plain_upstream().await;
    let e = egress(local_config());
    let r = e
        .send(
            OutboundRequest::new(
                target(Scheme::Http, "localhost", up.addr.port(), "/redirect"),
                Method::GET,
            )
            .header("authorization", "Bearer sk_test_secret"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers.get("location").map(String::as_str),
        Some("https://elsewhere.example/steal")
    );
    assert_eq!(up.seen.recv().await.unwrap().uri, "/redirect");
    assert!(up.seen.try_recv().is_err(), "exactly one request was made");
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_sending() {
    let up = plain_upstream().await;
    let e = egress(EgressConfig {
        max_request_bytes: 16,
        ..local_config()
    });
    let t = target(Scheme::Http, "localhost", up.addr.port(), "/");
    let err = e
        .send(OutboundRequest::new(t.clone(), Method::POST).body(vec![b'a'; 17]))
        .await
        .unwrap_err();
    assert_eq!(err, EgressError::RequestTooLarge { limit: 16 });
    assert_eq!(stack_core::Error::from(err).code.http_status(), 413);
    assert_eq!(up.accepts.load(Ordering::SeqCst), 0, "nothing was sent");
    let ok = e
        .send(OutboundRequest::new(t, Method::POST).body(vec![b'a'; 16]))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn an_oversized_response_is_aborted() {
    let up = plain_upstream().await;
    let e = egress(EgressConfig {
        max_response_bytes: 2048,
        ..local_config()
    });
    let port = up.addr.port();
    let err = get(&e, target(Scheme::Http, "localhost", port, "/big-declared"))
        .await
        .unwrap_err();
    assert_eq!(err, EgressError::ResponseTooLarge { limit: 2048 });
    let err = get(&e, target(Scheme::Http, "localhost", port, "/big-streamed"))
        .await
        .unwrap_err();
    assert_eq!(err, EgressError::ResponseTooLarge { limit: 2048 });
    assert_eq!(stack_core::Error::from(err).code.http_status(), 502);
    // Exactly at the limit is fine.
    let e = egress(EgressConfig {
        max_response_bytes: 64 * 1024,
        ..local_config()
    });
    let r = get(&e, target(Scheme::Http, "localhost", port, "/big-streamed"))
        .await
        .unwrap();
    assert_eq!(r.body.len(), 64 * 1024);
}

#[tokio::test]
async fn a_slow_upstream_times_out() {
    let up = plain_upstream().await;
    let e = egress(EgressConfig {
        timeout: Duration::from_millis(300),
        ..local_config()
    });
    let started = std::time::Instant::now();
    let err = get(
        &e,
        target(Scheme::Http, "localhost", up.addr.port(), "/slow"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EgressError::Timeout { .. }), "{err:?}");
    assert_eq!(err.code(), "UPSTREAM_TIMEOUT");
    assert_eq!(stack_core::Error::from(err).code.http_status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn plain_http_needs_allow_http() {
    let up = plain_upstream().await;
    let e = egress(EgressConfig {
        allow_private: loopback(),
        ..EgressConfig::default()
    });
    let err = get(&e, target(Scheme::Http, "localhost", up.addr.port(), "/"))
        .await
        .unwrap_err();
    assert_eq!(err, EgressError::InsecureScheme);
    assert_eq!(up.accepts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn host_and_framing_headers_cannot_be_set() {
    let up = plain_upstream().await;
    let e = egress(local_config());
    let t = target(Scheme::Http, "localhost", up.addr.port(), "/");
    for name in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "connection",
        "upgrade",
    ] {
        let err = e
            .send(OutboundRequest::new(t.clone(), Method::GET).header(name, "x"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EgressError::InvalidHeader { .. }),
            "{name}: {err:?}"
        );
    }
    let err = e
        .send(OutboundRequest::new(t.clone(), Method::GET).header("x-ok", "a\r\nx-injected: 1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EgressError::InvalidHeader { ref name } if name == "x-ok"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("injected"));
    let err = e
        .send(OutboundRequest::new(t, Method::CONNECT))
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::InvalidRequest { .. }), "{err:?}");
    assert_eq!(up.accepts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn connections_are_reused_per_host() {
    let mut up = plain_upstream().await;
    let e = egress(local_config());
    let port = up.addr.port();
    for _ in 0..3 {
        let r = get(&e, target(Scheme::Http, "localhost", port, "/"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        up.accepts.load(Ordering::SeqCst),
        1,
        "one connection for three calls"
    );
    // Another host name for the same address is another pool entry.
    let r = get(&e, target(Scheme::Http, "127.0.0.1", port, "/"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.accepts.load(Ordering::SeqCst), 2);
    for _ in 0..4 {
        up.seen.recv().await.unwrap();
    }
}

#[tokio::test]
async fn tls_with_an_unknown_issuer_is_refused() {
    let up = tls_upstream().await;
    let e = egress(EgressConfig {
        allow_private: loopback(),
        ..EgressConfig::default()
    });
    let err = get(&e, target(Scheme::Https, "localhost", up.addr.port(), "/"))
        .await
        .unwrap_err();
    let EgressError::Tls { reason } = &err else {
        panic!("expected a TLS error, got {err:?}");
    };
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(err.code(), "UPSTREAM_TLS_FAILED");
}

#[tokio::test]
async fn tls_sends_the_target_host_as_sni_and_checks_the_name() {
    let mut up = tls_upstream().await;
    let e = egress(EgressConfig {
        allow_private: loopback(),
        extra_roots: parse_pem_certificates(CERT_PEM).unwrap(),
        ..EgressConfig::default()
    });
    let port = up.addr.port();
    let r = e
        .send(
            OutboundRequest::new(
                target(Scheme::Https, "localhost", port, "/tls"),
                Method::POST,
            )
            .body("over tls"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Bytes::from_static(b"echo:over tls"));
    let seen = up.seen.recv().await.unwrap();
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
    assert_eq!(
        seen.host.as_deref(),
        Some(format!("localhost:{port}").as_str())
    );

    // The certificate is for `localhost`, not for the address.
    let err = get(&e, target(Scheme::Https, "127.0.0.1", port, "/"))
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn unresolvable_and_unreachable_upstreams() {
    let e = egress(EgressConfig {
        connect_timeout: Duration::from_secs(3),
        ..local_config()
    });
    let err = get(&e, target(Scheme::Http, "no-such-host.invalid", 80, "/"))
        .await
        .unwrap_err();
    // `.invalid` never resolves; a machine whose resolver is unreachable
    // may hit the connect timeout first.
    assert!(
        matches!(err, EgressError::Dns | EgressError::ConnectTimeout { .. }),
        "{err:?}"
    );
    assert!(matches!(
        stack_core::Error::from(err).code.http_status(),
        502 | 504
    ));

    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = get(&e, target(Scheme::Http, "127.0.0.1", port, "/"))
        .await
        .unwrap_err();
    assert_eq!(err, EgressError::Connect);
}

#[test]
fn config_and_request_debug_hide_secrets() {
    let cfg = EgressConfig {
        extra_roots: parse_pem_certificates(CERT_PEM).unwrap(),
        ..EgressConfig::default()
    };
    let shown = format!("{cfg:?}");
    assert!(shown.contains("extra_roots: 1"), "{shown}");
    let req = OutboundRequest::new(
        target(Scheme::Https, "api.example.com", 443, "/x?key=sk_live_zzz"),
        Method::GET,
    )
    .header("x-api-key", "sk_live_zzz");
    let shown = format!("{req:?}");
    assert!(!shown.contains("sk_live_zzz"), "{shown}");
    assert!(parse_pem_certificates(b"not pem").is_err());
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_hold_credential_values() {
    let logs = LogBuffer::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut up = plain_upstream().await;
    let e = egress(local_config());
    let r = e
        .send(
            OutboundRequest::new(
                target(Scheme::Http, "localhost", up.addr.port(), "/"),
                Method::GET,
            )
            .header("authorization", "Bearer sk_test_logcheck")
            .header("x-api-key", "sk_test_logcheck"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    up.seen.recv().await.unwrap();
    let strict = egress(EgressConfig::default());
    let _ = get(&strict, target(Scheme::Https, "localhost", 443, "/")).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("egress: response"), "{text}");
    assert!(text.contains("forbidden upstream address"), "{text}");
    assert!(!text.contains("sk_test_logcheck"), "{text}");
}
