//! STACK proxy policy: the pure decisions of `POST /v1/proxy`
//! (rest-contract §5, product §6, §8 and §11).
//!
//! What it does:
//! * the **service catalog** as data ([`Catalog`], [`Service`]): one TOML
//!   file per service under `catalog/`, embedded and validated at load:
//!   hosts the credential may be sent to, how it is attached, scopes, the
//!   `verify connection` call, OAuth endpoints and credential templates;
//! * **constraints** ([`ConstraintSet`]): `{path, op, value}` rules over a
//!   [`RequestView`] of the outbound call, compiled once, checked per call,
//!   narrowed by [`ConstraintSet::union`]; a denial is a [`Violation`] whose
//!   message never echoes a secret-looking value;
//! * **named intents** ([`Intent`], [`list_intents`]): catalog-declared
//!   shortcuts that expand into constraints;
//! * the **target-URL policy** ([`parse_target`] → [`Target`]) and the
//!   **address policy** ([`classify_ip`], [`is_forbidden`], [`Cidr`]) of the
//!   SSRF guard;
//! * **credential attachment** ([`attach`] → [`AuthEdits`]),
//!   [`strip_caller_auth`] and [`redact_headers`].
//!
//! What it does not do: no I/O, no DNS, no clock, no async. It stores
//! nothing, decrypts nothing and sends nothing: the application layer looks
//! up grants and credentials, and the egress adapter resolves the target's
//! host, calls [`is_forbidden`] on every address, connects to exactly that
//! address, and builds its request from the [`Target`] (never from the
//! caller's string). The language and policies are documented in
//! `docs/proxy.md`.
//!
//! ```
//! use serde_json::json;
//! use stack_proxy::{Catalog, ConstraintSet, check_target};
//!
//! let catalog = Catalog::builtin().expect("the built-in catalog is valid");
//! let slack = catalog.service("slack").expect("slack is in the catalog");
//! let constraints = catalog
//!     .expand_intents(
//!         "slack",
//!         &["chat:write".to_owned()],
//!         &[json!({"name": "slack.post_to_channel", "params": {"channel": ["C0123"]}})],
//!     )
//!     .expect("valid intent");
//! let set = ConstraintSet::from_constraints(constraints).expect("valid constraints");
//!
//! let hosts = slack.resolve_hosts(&Default::default()).expect("static hosts");
//! let target = slack
//!     .parse_target("https://slack.com/api/chat.postMessage", &hosts)
//!     .expect("allowed URL");
//! let ok = json!({"channel": "C0123", "text": "hi"});
//! assert!(check_target(&set, "POST", &target, Some(&ok)).is_ok());
//! let other = json!({"channel": "C0999", "text": "hi"});
//! assert!(check_target(&set, "POST", &target, Some(&other)).is_err());
//! ```
#![forbid(unsafe_code)]

pub mod catalog;
pub mod constraint;
pub mod credential;
pub mod intent;
pub mod ip;
mod redact;
pub mod target;

pub use catalog::{
    BodyEncoding, Catalog, CatalogError, CredentialField, OAuthSpec, ScopeSpec, Service,
    VerifyCall, check_target, list_intents,
};
pub use constraint::{
    Constraint, ConstraintError, ConstraintSet, MAX_CONSTRAINTS, MAX_PATTERN_CHARS, Op,
    RequestView, Violation, ViolationKind,
};
pub use credential::{
    AttachError, AuthEdits, AuthScheme, Credential, attach, is_sensitive_header, is_valid_header,
    redact_headers, strip_caller_auth, strip_caller_query,
};
pub use intent::{Intent, IntentError, IntentParam, NamedIntent, ParamKind};
pub use ip::{Cidr, CidrError, IpClass, classify_ip, is_forbidden, parse_cidr_list};
pub use redact::{looks_secret, preview};
pub use target::{MAX_URL_BYTES, Scheme, Target, UrlRejection, parse_target};
