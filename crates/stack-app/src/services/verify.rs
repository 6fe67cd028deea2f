//! Verify a connection (`POST /v1/services/{id}/verify`,
//! `stack_verify_connection`): one cheap authenticated call per catalog
//! service (its `[verify]` entry; for custom connections a GET of
//! `verify_path`, default `/`, on the base URL) through the egress port with
//! the credential injected (an OAuth token refreshed first when needed).
//! The answer says whether the upstream accepted the credential, never the
//! credential; the result is audited and recorded on the connection.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stack_audit::{Layer, Outcome};
use stack_core::{Error, Permission, Principal, Result, Secret, Timestamp};
use stack_proxy::{Credential, Target};

use super::oauth::check_usable;
use super::{Connection, ConnectionUpdate, catalog, connection_view};
use crate::proxy::{Inbound, Outbound};
use crate::{App, require};

/// The outcome of the last verification, kept on the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    pub checked_at: Timestamp,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed (`credential_rejected`, `upstream_status`,
    /// `needs_reauth`, or an error code).
    pub reason: Option<String>,
}

impl Verification {
    pub fn view(&self) -> Value {
        json!({
            "ok": self.ok,
            "checked_at": self.checked_at.to_rfc3339(),
            "status": self.status,
            "reason": self.reason,
        })
    }
}

/// The verification call of one connection, credential not yet attached.
struct VerifyRequest {
    target: Target,
    method: String,
    body: Option<Value>,
    /// The service's default headers (API versions).
    headers: Vec<(String, String)>,
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl App {
    /// Builds the verification request of `c`.
    fn verification_request(&self, c: &Connection) -> Result<VerifyRequest> {
        let (method, path, body, host, default_headers) = if c.service == "custom" {
            let path = c
                .fields
                .get("verify_path")
                .cloned()
                .unwrap_or_else(|| "/".to_owned());
            ("GET".to_owned(), path, None, None, Vec::new())
        } else {
            let service = catalog()?
                .service(&c.service)
                .ok_or_else(|| Error::internal("the connection's service left the catalog"))?;
            let call = service.verify_call(c.connected_via == "oauth");
            let path = service
                .resolve_call_path(call, &c.fields)
                .map_err(|e| Error::internal(format!("verification path: {e}")))?;
            let host = match &c.base_url {
                Some(_) => None,
                None => Some(
                    service
                        .resolve_call_host(call, &c.fields, &c.hosts)
                        .map_err(|e| Error::internal(format!("verification host: {e}")))?
                        .to_owned(),
                ),
            };
            let headers = service
                .default_headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            (call.method.clone(), path, call.body.clone(), host, headers)
        };
        let url = match (&c.base_url, host) {
            (Some(base), _) => format!("{}{path}", base.trim_end_matches('/')),
            (None, Some(host)) => format!("https://{host}{path}"),
            (None, None) => return Err(Error::internal("the connection has no host")),
        };
        let target = stack_proxy::parse_target(&url, &c.hosts)
            .map_err(|e| Error::internal(format!("the verification URL is refused: {e}")))?;
        Ok(VerifyRequest {
            target,
            method,
            body,
            headers: default_headers,
        })
    }

    /// One authenticated call, 401 → refresh → retry for OAuth.
    async fn verification_call(&self, c: &Connection, sealed: &str) -> Result<Inbound> {
        let VerifyRequest {
            mut target,
            method,
            body,
            headers: defaults,
        } = self.verification_request(c)?;
        let secret = self.usable_secret(c, sealed).await?;
        let credential = if secret.len() == 1 {
            match secret.into_values().next() {
                Some(v) => Credential::Token(v),
                None => return Err(Error::internal("empty credential")),
            }
        } else {
            Credential::Fields(secret)
        };
        let edits = stack_proxy::attach(&c.auth, &credential)
            .map_err(|e| Error::internal(format!("credential does not attach: {e}")))?;
        let mut headers: Vec<(String, Secret<String>)> = defaults
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        if body.is_some() {
            headers.push((
                "content-type".into(),
                Secret::new("application/json".into()),
            ));
        }
        for (name, value) in edits.headers {
            headers.retain(|(k, _)| *k != name);
            headers.push((name, value));
        }
        if !edits.query.is_empty() {
            let mut pairs = target.query_pairs();
            for (name, value) in &edits.query {
                pairs.retain(|(k, _)| k != name);
                pairs.push((name.clone(), value.expose().clone()));
            }
            target.query = Some(
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(&b)
                    .map_err(|_| Error::internal("verify body did not serialize"))?,
            ),
            None => None,
        };
        let egress = self
            .egress
            .read()
            .ok()
            .and_then(|e| e.clone())
            .ok_or_else(|| Error::not_implemented("the egress client"))?;
        self.send_with_oauth_retry(
            egress.as_ref(),
            &c.operator_id,
            &c.id,
            Outbound {
                target,
                method,
                headers,
                body,
            },
        )
        .await
    }

    /// `POST /v1/services/{connection_id}/verify`.
    pub async fn verify_connection(&self, p: &Principal, id: &str) -> Result<Value> {
        require(p, Permission::ServicesWrite)?;
        let (c, sealed) = self.load_connection(p, id).await?;
        if c.status == "disconnected" {
            return Err(Error::conflict("the connection is disconnected"));
        }
        let sealed = sealed.ok_or_else(|| Error::not_found("credential", id))?;
        let started = std::time::Instant::now();
        let checked_at = self.now();
        let answer = match check_usable(&c) {
            Ok(()) => self.verification_call(&c, &sealed).await,
            Err(e) => Err(e),
        };
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        // (ok, upstream status, reason, new connection status, message)
        let (ok, status, reason, next_status, message) = match &answer {
            Ok(inbound) => {
                let refused_in_body = serde_json::from_slice::<Value>(&inbound.body)
                    .ok()
                    .and_then(|v| v.get("ok").and_then(Value::as_bool))
                    == Some(false);
                let s = inbound.status;
                if (200..300).contains(&s) && !refused_in_body {
                    (true, Some(s), None, Some("active"), None)
                } else if s == 401 || s == 403 || ((200..300).contains(&s) && refused_in_body) {
                    (
                        false,
                        Some(s),
                        Some("credential_rejected".to_owned()),
                        Some("invalid_credential"),
                        Some(format!("the upstream refused the credential (HTTP {s})")),
                    )
                } else {
                    (
                        false,
                        Some(s),
                        Some("upstream_status".to_owned()),
                        None,
                        Some(format!("the upstream answered HTTP {s}")),
                    )
                }
            }
            Err(e) => {
                let detail = e
                    .details
                    .as_ref()
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str);
                let reason = match detail {
                    Some("connection_needs_reauth") => "needs_reauth".to_owned(),
                    Some(r) => r.to_owned(),
                    None => e.code.as_str().to_ascii_lowercase(),
                };
                (false, None, Some(reason), None, Some(e.message.clone()))
            }
        };
        let verification = Verification {
            ok,
            checked_at,
            status,
            reason: reason.clone(),
        };
        let mut draft = Self::draft(p, Layer::Vault, "service.verify")
            .target("connection", id)
            .details(json!({
                "service": c.service,
                "ok": ok,
                "upstream_status": status,
                "reason": reason,
            }));
        draft.duration_ms = Some(latency_ms);
        if !ok {
            draft.outcome = Outcome::Failure;
            draft.error_code = reason.clone();
        }
        let audit = self.audit(draft)?;
        let stored = self
            .update_connection(
                &p.operator_id,
                id,
                Box::new(move |cur: &Connection| {
                    if cur.status == "disconnected" {
                        return Ok(None);
                    }
                    let mut next = cur.clone();
                    next.verification = Some(verification);
                    // A refused OAuth refresh is only cleared by a new authorization.
                    if let Some(s) = next_status
                        && cur.status != "needs_reauth"
                    {
                        next.status = s.to_owned();
                    }
                    Ok(Some(ConnectionUpdate {
                        connection: next,
                        sealed: None,
                        audit: Some(audit),
                    }))
                }),
            )
            .await?;
        let current = stored.map_or(c, |(c, _)| c);
        Ok(json!({
            "ok": ok,
            "connection_id": current.id,
            "service": current.service,
            "status": status,
            "reason": reason,
            "message": message,
            "connection_status": current.status,
            "checked_at": checked_at.to_rfc3339(),
            "latency_ms": latency_ms,
            "connection": connection_view(&current),
        }))
    }
}
