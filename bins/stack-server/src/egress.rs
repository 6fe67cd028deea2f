//! The proxy's egress port, implemented with `stack-egress`.

use std::sync::Arc;

use async_trait::async_trait;
use stack_app::proxy::{EgressPort, Inbound, Outbound};
use stack_core::{Error, Result};
use stack_egress::{Egress, EgressConfig, OutboundRequest};

use crate::config::Config;

/// Adapts `stack_egress::Egress` to the application's port.
pub struct EgressAdapter(Egress);

#[async_trait]
impl EgressPort for EgressAdapter {
    async fn send(&self, request: Outbound) -> Result<Inbound> {
        let method = http::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| Error::invalid_field("method", "not an HTTP method"))?;
        let mut out = OutboundRequest::new(request.target, method);
        out.headers = request.headers;
        out.body = request.body.map(bytes::Bytes::from);
        let response = self.0.send(out).await.map_err(Error::from)?;
        Ok(Inbound {
            status: response.status,
            headers: response.headers,
            body: response.body.to_vec(),
        })
    }
}

/// Builds the egress client from the configuration.
pub fn build(config: &Config) -> anyhow::Result<Arc<dyn EgressPort>> {
    let egress = Egress::new(EgressConfig {
        allow_private: config.proxy_allow_private.clone(),
        allow_http: config.proxy_allow_http,
        resolve: config.proxy_resolve.clone(),
        extra_roots: config.proxy_extra_roots.clone(),
        max_request_bytes: config.proxy_max_bytes,
        max_response_bytes: config.proxy_max_bytes,
        timeout: config.proxy_timeout,
        ..EgressConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("egress client: {e}"))?;
    Ok(Arc::new(EgressAdapter(egress)))
}

/// The client that fetches OAuth Client ID Metadata Documents: the proxy's
/// SSRF guard and allow-lists, with the documents' own limits (5 KiB, 5 s).
pub fn build_client_metadata(config: &Config) -> anyhow::Result<Arc<dyn EgressPort>> {
    let timeout =
        std::time::Duration::from_secs(stack_app::oauth::CLIENT_METADATA_FETCH_TIMEOUT_SECONDS);
    let egress = Egress::new(EgressConfig {
        allow_private: config.proxy_allow_private.clone(),
        allow_http: config.proxy_allow_http,
        resolve: config.proxy_resolve.clone(),
        extra_roots: config.proxy_extra_roots.clone(),
        max_request_bytes: 1024,
        max_response_bytes: stack_app::oauth::CLIENT_METADATA_MAX_BYTES,
        timeout,
        connect_timeout: timeout,
        pool_max_idle_per_host: 2,
        ..EgressConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("client metadata egress client: {e}"))?;
    Ok(Arc::new(EgressAdapter(egress)))
}
