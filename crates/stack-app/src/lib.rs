//! STACK's application layer: every operation, written once.
//!
//! What it does: the use cases (register an agent, list the audit log, verify
//! the chain, authenticate a bearer key, …). Each takes the caller's
//! [`Principal`](stack_core::Principal), checks its permission, scopes every
//! read and write to the caller's operator, and records state changes in the
//! audit chain through the store, in the same transaction as the change.
//! REST (`stack-http`) and MCP (`stack-mcp`) are thin adapters over these
//! methods and share the command and view types defined here.
//!
//! What it does not do: no HTTP, no SQL, no sockets. Storage, the clock and
//! randomness are ports ([`ports`]) implemented by adapters and passed in.
#![forbid(unsafe_code)]

mod access;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod input;
pub mod intents;
pub mod oauth;
pub mod operators;
pub mod passports;
pub mod ports;
pub mod proxy;
pub mod revocation;
pub mod scan;
pub mod services;

use std::sync::Arc;

use stack_audit::AuditDraft;
use stack_core::{IdKind, Principal, Result, Timestamp};
use stack_crypto::RandomSource;

pub use input::parse_input;
pub use ports::{Clock, CoreStore, NewAudit, Store, SystemClock};

/// Settings the application layer needs.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Largest page a list operation returns.
    pub max_page: u64,
    /// The OAuth authorization server (issuer, registration limits).
    pub oauth: oauth::OAuthConfig,
    /// `iss` of the passports this deployment signs.
    pub passport_issuer: String,
    /// This node's id on the revocation bus.
    pub node_id: String,
    /// Scan allowances and the scanner cache TTL.
    pub scan: scan::ScanSettings,
    /// Proxy allowances and limits.
    pub proxy: proxy::ProxySettings,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            max_page: 100,
            oauth: oauth::OAuthConfig::default(),
            passport_issuer: stack_passport::DEFAULT_ISSUER.to_owned(),
            node_id: "node".to_owned(),
            scan: scan::ScanSettings::default(),
            proxy: proxy::ProxySettings::default(),
        }
    }
}

/// A monthly allowance per operator tier (calendar month, UTC); an unknown
/// tier gets the free allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierQuotas {
    pub free: u64,
    pub developer: u64,
    pub studio: u64,
    pub enterprise: u64,
}

impl TierQuotas {
    /// Content scans per month.
    pub const SCAN: Self = Self {
        free: 1_000,
        developer: 10_000,
        studio: 100_000,
        enterprise: 1_000_000,
    };
    /// Proxied calls per month.
    pub const PROXY: Self = Self {
        free: 5_000,
        developer: 50_000,
        studio: 500_000,
        enterprise: 5_000_000,
    };

    /// The allowance of `tier`.
    pub fn for_tier(&self, tier: &str) -> u64 {
        match tier {
            "developer" => self.developer,
            "studio" => self.studio,
            "enterprise" => self.enterprise,
            _ => self.free,
        }
    }
}

/// Per-node passport state: signing keys, the revocation index, the bus.
pub struct PassportRuntime {
    pub(crate) keys: passports::KeyRing,
    pub(crate) revocations: Arc<passports::RevocationIndex>,
    pub(crate) bus: std::sync::RwLock<Option<Arc<dyn revocation::RevocationBus>>>,
    pub(crate) node_id: String,
}

/// The application: ports plus configuration. Cheap to clone (one
/// reference count): the HTTP layer clones it into every request's handler
/// and middleware.
#[derive(Clone)]
pub struct App(Arc<AppShared>);

/// What every clone of an [`App`] shares; reached through `App` only.
pub struct AppShared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    config: AppConfig,
    passports: Arc<PassportRuntime>,
    operator_keys: Arc<services::OperatorKeys>,
    egress: Arc<std::sync::RwLock<Option<Arc<dyn proxy::EgressPort>>>>,
    scan: Arc<scan::ScanRuntime>,
    /// Verified bearer credentials, remembered for a few seconds.
    credentials: Arc<auth::CredentialCache>,
    /// Per-node OAuth state (Client ID Metadata Documents).
    oauth: Arc<oauth::OAuthRuntime>,
    /// Proxied calls admitted by the quota and not yet recorded.
    proxy_in_flight: Arc<proxy::InFlight>,
    /// Passport records read by the proxy, until their tokens expire.
    passport_records: Arc<proxy::PassportRecords>,
    compiled_constraints: Arc<proxy::CompiledConstraints>,
    /// What the proxy reads before a call (grants, connection, tier, meter),
    /// kept on this node; owned by the revocation index, whose bus drops it.
    access: Arc<access::AccessCache>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl std::ops::Deref for App {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn RandomSource>,
        config: AppConfig,
    ) -> Self {
        let options = stack_passport::VerifyOptions {
            issuer: config.passport_issuer.clone(),
            ..stack_passport::VerifyOptions::default()
        };
        let passports = Arc::new(PassportRuntime {
            keys: passports::KeyRing::new(options),
            revocations: Arc::new(passports::RevocationIndex::new(
                store.clone(),
                clock.clone(),
            )),
            bus: std::sync::RwLock::new(None),
            node_id: config.node_id.clone(),
        });
        let access = Arc::clone(passports.revocations.access());
        Self(Arc::new(AppShared {
            store,
            clock,
            rng,
            config,
            passports,
            operator_keys: Arc::new(services::OperatorKeys::default()),
            egress: Arc::new(std::sync::RwLock::new(None)),
            scan: Arc::new(scan::ScanRuntime::default()),
            credentials: Arc::new(auth::CredentialCache::default()),
            oauth: Arc::new(oauth::OAuthRuntime::default()),
            proxy_in_flight: Arc::new(proxy::InFlight::default()),
            passport_records: Arc::new(proxy::PassportRecords::default()),
            compiled_constraints: Arc::new(proxy::CompiledConstraints::default()),
            access,
        }))
    }

    /// The sink a revocation bus delivers into (this node's index).
    pub fn revocation_sink(&self) -> Arc<dyn revocation::RevocationSink> {
        self.passports.revocations.clone()
    }

    /// Sets the bus revocations are published on.
    pub fn set_revocation_bus(&self, bus: Arc<dyn revocation::RevocationBus>) {
        if let Ok(mut b) = self.passports.bus.write() {
            *b = Some(bus);
        }
    }

    /// Whether this node's revocation index is in sync with the database.
    pub fn revocations_in_sync(&self) -> bool {
        !self.passports.revocations.is_stale()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn new_id(&self, kind: IdKind) -> Result<String> {
        stack_crypto::new_id(self.rng.as_ref(), kind)
    }

    /// Wraps a draft with a fresh entry id and the current time.
    pub(crate) fn audit(&self, draft: AuditDraft) -> Result<NewAudit> {
        Ok(NewAudit {
            entry_id: self.new_id(IdKind::AuditEntry)?,
            now: self.now(),
            draft,
        })
    }

    /// A draft attributed to `principal`, with the agent filled in for
    /// agent-confined callers.
    pub(crate) fn draft(
        principal: &Principal,
        layer: stack_audit::Layer,
        action: &str,
    ) -> AuditDraft {
        let mut d = AuditDraft::new(principal.actor_label(), layer, action);
        if let Some(agent) = principal.confined_agent() {
            d.agent_id = Some(agent.to_owned());
        }
        if let stack_core::principal::PrincipalKind::Passport { jti, .. } = &principal.kind {
            d.passport_jti = Some(jti.clone());
        }
        d
    }
}

/// Fails with FORBIDDEN unless `principal` holds `permission`.
pub(crate) fn require(principal: &Principal, permission: stack_core::Permission) -> Result<()> {
    if principal.allows(permission) {
        Ok(())
    } else {
        Err(stack_core::Error::forbidden(format!(
            "this credential may not perform this operation (needs {})",
            serde_json::to_value(permission)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )))
    }
}
