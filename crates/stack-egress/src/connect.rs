//! The guarded connector: resolve, check every address, connect to a checked
//! address, then TLS with the target host as SNI.
//!
//! It is the `tower::Service<Uri>` hyper-util's pooled client calls for
//! every *new* connection. The pool is keyed by (scheme, host:port), so a
//! pooled connection is only ever reused for the host it was opened (and
//! checked) for; the allow list is fixed for the life of an [`crate::Egress`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use stack_proxy::{Cidr, classify_ip, is_forbidden};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::error::EgressError;

/// The address a response came from; hyper-util copies it into the
/// response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

#[derive(Clone)]
pub(crate) struct GuardedConnector {
    inner: Arc<Inner>,
}

struct Inner {
    resolve: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    allow_private: Vec<Cidr>,
    allow_http: bool,
    connect_timeout: Duration,
    tls: TlsConnector,
}

impl GuardedConnector {
    pub(crate) fn new(
        resolve: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
        allow_private: Vec<Cidr>,
        allow_http: bool,
        connect_timeout: Duration,
        tls: TlsConnector,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                resolve,
                allow_private,
                allow_http,
                connect_timeout,
                tls,
            }),
        }
    }
}

impl tower::Service<Uri> for GuardedConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = EgressError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, EgressError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), EgressError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let limit = inner.connect_timeout;
            match tokio::time::timeout(limit, inner.connect(&uri)).await {
                Ok(result) => result.map(TokioIo::new),
                Err(_) => Err(EgressError::ConnectTimeout {
                    seconds: limit.as_secs(),
                }),
            }
        })
    }
}

impl Inner {
    async fn connect(&self, uri: &Uri) -> Result<UpstreamStream, EgressError> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.allow_http => false,
            Some("http") => return Err(EgressError::InsecureScheme),
            _ => {
                return Err(EgressError::InvalidRequest {
                    reason: "the target scheme must be http or https",
                });
            }
        };
        let host = uri
            .host()
            .ok_or(EgressError::InvalidRequest {
                reason: "the target has no host",
            })?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });

        let addrs = self.resolve_checked(host, port).await?;
        let (tcp, addr) = connect_first(host, &addrs).await?;
        if !tls {
            return Ok(UpstreamStream {
                io: Io::Plain(tcp),
                peer: addr,
            });
        }
        let name =
            ServerName::try_from(host.to_owned()).map_err(|_| EgressError::InvalidRequest {
                reason: "the target host is not a valid TLS server name",
            })?;
        let stream = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| EgressError::Tls {
                reason: tls_reason(&e),
            })?;
        Ok(UpstreamStream {
            io: Io::Tls(Box::new(stream)),
            peer: addr,
        })
    }

    /// Every address `host` resolves to, each one checked; refused if any
    /// one is forbidden (a name that mixes public and internal addresses is
    /// a rebinding setup, not a misconfiguration to work around).
    async fn resolve_checked(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let resolved: Vec<SocketAddr> = match self.resolve.get(&host.to_ascii_lowercase()) {
            Some(fixed) => fixed.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| {
                    tracing::debug!(host, error = %e, "egress: DNS resolution failed");
                    EgressError::Dns
                })?
                .collect(),
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in resolved {
            let ip = addr.ip();
            if is_forbidden(ip, &self.allow_private) {
                let class = classify_ip(ip);
                tracing::warn!(host, %ip, %class, "egress: refused a forbidden upstream address");
                return Err(EgressError::Forbidden { class });
            }
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            tracing::debug!(host, "egress: the host resolved to no address");
            return Err(EgressError::Dns);
        }
        Ok(addrs)
    }
}

/// Connects to the checked addresses in resolver order; the first that
/// accepts wins. Never resolves again.
async fn connect_first(
    host: &str,
    addrs: &[SocketAddr],
) -> Result<(TcpStream, SocketAddr), EgressError> {
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "egress: could not set TCP_NODELAY");
                }
                tracing::debug!(host, %addr, "egress: connected");
                return Ok((tcp, addr));
            }
            Err(e) => tracing::debug!(host, %addr, error = %e, "egress: connect failed"),
        }
    }
    Err(EgressError::Connect)
}

/// The rustls error behind a failed handshake, when there is one.
fn tls_reason(e: &io::Error) -> String {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
        .map_or_else(|| e.kind().to_string(), ToString::to_string)
}

/// A connection to an upstream: plain TCP (only with `allow_http`) or TLS.
pub(crate) struct UpstreamStream {
    io: Io,
    /// The checked address this connection went to.
    peer: SocketAddr,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(PeerAddr(self.peer))
    }
}

// Both variants are `Unpin`, so pinning needs no projection.
impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
