//! The service catalog as data: one TOML file per service under
//! `crates/stack-proxy/catalog/`, embedded at build time and validated when
//! first loaded (every file, every intent, every intent's examples).
//!
//! Adding a service is adding a file and its line in [`BUILTIN_FILES`]
//! (a test fails if a file in the directory is not listed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stack_core::ErrorCode;

use crate::constraint::{Constraint, ConstraintSet, RequestView, compile_pattern};
use crate::credential::{AuthScheme, CREDENTIAL_HEADERS, FRAMING_HEADERS, is_valid_header};
use crate::intent::{ExampleRequest, Intent, IntentError, NamedIntent, fill, placeholders};
use crate::redact::clip;
use crate::target::{Scheme, Target, UrlRejection, is_dns_name, is_ipv4_like, parse_target};

/// The embedded service files, `(file name, contents)`.
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("anthropic.toml", include_str!("../catalog/anthropic.toml")),
    ("custom.toml", include_str!("../catalog/custom.toml")),
    ("github.toml", include_str!("../catalog/github.toml")),
    ("gmail.toml", include_str!("../catalog/gmail.toml")),
    (
        "google_drive.toml",
        include_str!("../catalog/google_drive.toml"),
    ),
    ("jira.toml", include_str!("../catalog/jira.toml")),
    ("linear.toml", include_str!("../catalog/linear.toml")),
    ("notion.toml", include_str!("../catalog/notion.toml")),
    ("openai.toml", include_str!("../catalog/openai.toml")),
    ("slack.toml", include_str!("../catalog/slack.toml")),
    ("stripe.toml", include_str!("../catalog/stripe.toml")),
];

/// How a proxy call's JSON `body` is encoded upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded` (Stripe); constraints still read
    /// the JSON the caller sent.
    Form,
}

/// One OAuth / permission scope of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    pub name: String,
    pub description: String,
}

/// The cheap call `verify connection` makes with the stored credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyCall {
    pub method: String,
    /// Which of the service's hosts (after placeholders are filled); the
    /// first one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path and optional query; may hold `{{field}}` placeholders.
    pub path: String,
    /// JSON body, for APIs that only answer POST (GraphQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// OAuth 2 endpoints, where the provider supports OAuth. Tokens obtained
/// this way are always attached as `Authorization: Bearer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSpec {
    pub authorize_url: String,
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_url: Option<String>,
    /// Whether the provider supports PKCE (S256).
    pub pkce: bool,
    /// Separator of the `scope` parameter.
    #[serde(default = "space")]
    pub scope_separator: String,
    /// Extra fixed parameters of the authorize URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorize_params: BTreeMap<String, String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub token_auth: TokenAuth,
    /// How the token request's parameters are encoded.
    #[serde(default)]
    pub token_body: TokenBody,
    /// The verification call for OAuth-connected connections, when it
    /// differs from the service's (Jira's OAuth tokens only reach
    /// `api.atlassian.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyCall>,
}

/// Client authentication at an OAuth token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// `client_id` and `client_secret` in the request body.
    #[default]
    ClientSecretPost,
    /// `Authorization: Basic base64(client_id:client_secret)` (Notion).
    ClientSecretBasic,
}

/// Encoding of a token request's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenBody {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    #[default]
    Form,
    /// A JSON object (Notion, Atlassian).
    Json,
}

fn space() -> String {
    " ".to_owned()
}

/// A field the user fills in for a manual connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialField {
    pub name: String,
    pub label: String,
    pub description: String,
    /// Stored encrypted and never shown again.
    #[serde(default = "yes")]
    pub secret: bool,
    #[serde(default = "yes")]
    pub required: bool,
    /// Whole-value pattern the input must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// A sample value (documentation and the catalog's own tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

fn yes() -> bool {
    true
}

/// One service of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The provider key (`slack`), also the `service` of a proxy call.
    pub slug: String,
    pub name: String,
    pub description: String,
    /// Exact host names the credential may be sent to; a `{{field}}`
    /// placeholder is filled from a non-secret credential field.
    pub hosts: Vec<String>,
    /// Plain `http` allowed (never for the built-in services).
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub body_encoding: BodyEncoding,
    /// How a manually entered credential is attached.
    pub auth: AuthScheme,
    /// Headers set when the caller did not send them (API versions).
    #[serde(default)]
    pub default_headers: BTreeMap<String, String>,
    pub scopes: Vec<ScopeSpec>,
    pub verify: VerifyCall,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSpec>,
    /// The credential template of a manual connection; empty when the
    /// service connects by OAuth only.
    #[serde(default)]
    pub credential_fields: Vec<CredentialField>,
    #[serde(default)]
    pub intents: Vec<Intent>,
}

/// A catalog file that does not load or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service catalog {file}: {reason}")]
pub struct CatalogError {
    pub file: String,
    pub reason: String,
}

impl CatalogError {
    pub const fn code(&self) -> &'static str {
        "catalog_invalid"
    }

    pub const fn error_code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

impl Service {
    /// `oauth` and/or `credential`.
    pub fn connect_methods(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.oauth.is_some() {
            v.push("oauth");
        }
        if !self.credential_fields.is_empty() {
            v.push("credential");
        }
        v
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s.name == scope)
    }

    /// The hosts of one connection: placeholders filled from its non-secret
    /// fields (or their defaults); each result must be a DNS name.
    pub fn resolve_hosts(
        &self,
        fields: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, CatalogError> {
        self.hosts
            .iter()
            .map(|h| {
                let host = self.fill_fields(h, fields, true)?.to_ascii_lowercase();
                if is_ipv4_like(&host) || !is_dns_name(&host) {
                    return Err(self.error("a resolved host is not a DNS name"));
                }
                Ok(host)
            })
            .collect()
    }

    /// The verification call's path and query for one connection.
    pub fn resolve_verify_path(
        &self,
        fields: &BTreeMap<String, String>,
    ) -> Result<String, CatalogError> {
        self.resolve_call_path(&self.verify, fields)
    }

    /// The verification call of a connection made by OAuth (`oauth`) or
    /// with a manually entered credential.
    pub fn verify_call(&self, oauth: bool) -> &VerifyCall {
        match &self.oauth {
            Some(OAuthSpec {
                verify: Some(v), ..
            }) if oauth => v,
            _ => &self.verify,
        }
    }

    /// `call`'s path and query with the connection's fields filled in.
    pub fn resolve_call_path(
        &self,
        call: &VerifyCall,
        fields: &BTreeMap<String, String>,
    ) -> Result<String, CatalogError> {
        let path = self.fill_fields(&call.path, fields, false)?;
        if !path.starts_with('/') {
            return Err(self.error("the verification path must start with /"));
        }
        Ok(path)
    }

    /// `call`'s host among the connection's resolved `hosts`.
    pub fn resolve_call_host<'h>(
        &self,
        call: &VerifyCall,
        fields: &BTreeMap<String, String>,
        hosts: &'h [String],
    ) -> Result<&'h str, CatalogError> {
        let wanted = match &call.host {
            Some(h) => Some(self.fill_fields(h, fields, true)?.to_ascii_lowercase()),
            None => None,
        };
        match wanted {
            None => hosts.first().map(String::as_str),
            Some(w) => hosts.iter().find(|h| **h == w).map(String::as_str),
        }
        .ok_or_else(|| self.error("the verification host is not one of the connection's hosts"))
    }

    fn fill_fields(
        &self,
        template: &str,
        fields: &BTreeMap<String, String>,
        for_host: bool,
    ) -> Result<String, CatalogError> {
        for name in placeholders(template) {
            let spec = self
                .credential_fields
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| self.error("a placeholder names no credential field"))?;
            if spec.secret {
                return Err(self.error("a placeholder names a secret field"));
            }
            let value = fields
                .get(name)
                .or(spec.default.as_ref())
                .ok_or_else(|| self.error("a connection field is missing"))?;
            let clean = !value.is_empty()
                && value.bytes().all(|b| b.is_ascii_graphic())
                && !(for_host && value.bytes().any(|b| b"/\\@:?#%{}".contains(&b)));
            let ok = clean
                && spec
                    .pattern
                    .as_deref()
                    .is_none_or(|p| compile_pattern(p).is_ok_and(|re| re.is_match(value)));
            if !ok {
                return Err(self.error("a connection field does not have the expected form"));
            }
        }
        fill(template, |name| {
            let spec = self.credential_fields.iter().find(|f| f.name == name)?;
            fields.get(name).or(spec.default.as_ref()).cloned()
        })
        .ok_or_else(|| self.error("a connection field is missing"))
    }

    /// [`parse_target`] against this connection's hosts, refusing plain
    /// `http` unless the service allows it.
    pub fn parse_target(&self, url: &str, hosts: &[String]) -> Result<Target, UrlRejection> {
        let target = parse_target(url, hosts)?;
        if target.scheme == Scheme::Http && !self.allow_http {
            return Err(UrlRejection::InsecureScheme);
        }
        Ok(target)
    }

    /// The example values of the credential fields.
    pub fn example_fields(&self) -> BTreeMap<String, String> {
        self.credential_fields
            .iter()
            .filter_map(|f| Some((f.name.clone(), f.example.clone()?)))
            .collect()
    }

    fn error(&self, reason: &str) -> CatalogError {
        CatalogError {
            file: format!("{}.toml", self.slug),
            reason: reason.to_owned(),
        }
    }
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    services: Vec<Service>,
}

impl Catalog {
    /// The built-in catalog, parsed and validated once.
    pub fn builtin() -> Result<&'static Self, CatalogError> {
        static BUILTIN: OnceLock<Result<Catalog, CatalogError>> = OnceLock::new();
        BUILTIN
            .get_or_init(|| Self::from_files(BUILTIN_FILES))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Parses and validates `(file name, TOML)` pairs; each file's name must
    /// be its slug.
    pub fn from_files(files: &[(&str, &str)]) -> Result<Self, CatalogError> {
        let mut services: Vec<Service> = Vec::with_capacity(files.len());
        for (file, text) in files {
            let err = |reason: String| CatalogError {
                file: (*file).to_owned(),
                reason,
            };
            let mut service: Service =
                toml::from_str(text).map_err(|e| err(e.message().to_owned()))?;
            if file.strip_suffix(".toml") != Some(service.slug.as_str()) {
                return Err(err("the file name must be <slug>.toml".into()));
            }
            if services.iter().any(|s| s.slug == service.slug) {
                return Err(err("duplicate slug".into()));
            }
            for intent in &mut service.intents {
                intent.service.clone_from(&service.slug);
            }
            validate(&service).map_err(err)?;
            services.push(service);
        }
        let mut names = BTreeSet::new();
        for intent in services.iter().flat_map(|s| &s.intents) {
            if !names.insert(intent.name.as_str()) {
                return Err(CatalogError {
                    file: format!("{}.toml", intent.service),
                    reason: format!("duplicate intent {}", intent.name),
                });
            }
        }
        Ok(Self { services })
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn service(&self, slug: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.slug == slug)
    }

    pub fn intents(&self) -> impl Iterator<Item = &Intent> {
        self.services.iter().flat_map(|s| &s.intents)
    }

    pub fn intent(&self, name: &str) -> Option<&Intent> {
        self.intents().find(|i| i.name == name)
    }

    /// Expands the `intents` of a grant or passport request (`[{name,
    /// params}]`) for a grant on `service` holding `scopes`. The result is
    /// concatenated with the request's raw constraints by the caller.
    pub fn expand_intents(
        &self,
        service: &str,
        scopes: &[String],
        intents: &[Value],
    ) -> Result<Vec<Constraint>, IntentError> {
        let mut out = Vec::new();
        for raw in intents {
            let named: NamedIntent = serde_json::from_value(raw.clone())
                .map_err(|_| IntentError::Malformed("expected {name, params}".into()))?;
            let intent = self
                .intent(&named.name)
                .ok_or_else(|| IntentError::UnknownIntent(clip(&named.name)))?;
            if intent.service != service {
                return Err(IntentError::WrongService {
                    intent: intent.name.clone(),
                    service: intent.service.clone(),
                });
            }
            if let Some(scope) = intent.scopes.iter().find(|s| !scopes.contains(s)) {
                return Err(IntentError::MissingScope {
                    intent: intent.name.clone(),
                    scope: scope.clone(),
                });
            }
            out.extend(intent.expand(&named.params)?);
        }
        Ok(out)
    }
}

/// Every intent of the built-in catalog (`stack_list_intents`).
pub fn list_intents() -> Result<Vec<&'static Intent>, CatalogError> {
    Ok(Catalog::builtin()?.intents().collect())
}

fn valid_token(s: &str) -> bool {
    is_valid_header(s, "")
}

fn validate(s: &Service) -> Result<(), String> {
    let slug_ok = s.slug.len() <= 40
        && s.slug
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
        && s.slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !slug_ok {
        return Err("the slug must be lower-case letters, digits and _".into());
    }
    if s.name.trim().is_empty() || s.description.trim().is_empty() {
        return Err("name and description are required".into());
    }

    let mut field_names = BTreeSet::new();
    for f in &s.credential_fields {
        if !field_names.insert(f.name.as_str()) {
            return Err(format!("duplicate credential field {}", f.name));
        }
        if let Some(p) = &f.pattern {
            let re = compile_pattern(p).map_err(|e| format!("field {}: {e}", f.name))?;
            for v in f.example.iter().chain(&f.default) {
                if !re.is_match(v) {
                    return Err(format!(
                        "field {}: example or default does not match",
                        f.name
                    ));
                }
            }
        }
    }
    if s.oauth.is_none() && s.credential_fields.is_empty() {
        return Err("a service needs OAuth endpoints or credential fields".into());
    }
    if !s.credential_fields.is_empty() {
        for field in s.auth.fields() {
            if !field_names.contains(field) {
                return Err(format!("auth reads field {field}, which is not declared"));
            }
        }
    }
    match &s.auth {
        AuthScheme::Header { name, .. } if !valid_token(name) => {
            return Err("auth header name is not a valid header name".into());
        }
        AuthScheme::Query { param, .. } if param.is_empty() => {
            return Err("auth query parameter is empty".into());
        }
        _ => {}
    }

    if s.hosts.is_empty() {
        return Err("at least one host is required".into());
    }
    let examples = s.example_fields();
    let hosts = s
        .resolve_hosts(&examples)
        .map_err(|e| format!("hosts: {}", e.reason))?;
    for (name, value) in &s.default_headers {
        let lower = name.to_ascii_lowercase();
        if !is_valid_header(name, value)
            || CREDENTIAL_HEADERS.contains(&lower.as_str())
            || FRAMING_HEADERS.contains(&lower.as_str())
            || s.auth.header_name().as_deref() == Some(&lower)
        {
            return Err(format!("default header {name} is not allowed"));
        }
    }

    let mut scope_names = BTreeSet::new();
    for scope in &s.scopes {
        if scope.name.is_empty() || !scope_names.insert(scope.name.as_str()) {
            return Err(format!("empty or duplicate scope {}", scope.name));
        }
    }
    if s.scopes.is_empty() {
        return Err("at least one scope is required".into());
    }

    let oauth_verify = s.oauth.as_ref().and_then(|o| o.verify.as_ref());
    for (what, call) in [("verify", Some(&s.verify)), ("oauth.verify", oauth_verify)] {
        let Some(call) = call else { continue };
        if !matches!(call.method.as_str(), "GET" | "POST" | "HEAD") {
            return Err(format!("{what}.method must be GET, POST or HEAD"));
        }
        let path = s
            .resolve_call_path(call, &examples)
            .map_err(|e| format!("{what}: {}", e.reason))?;
        let host = s
            .resolve_call_host(call, &examples, &hosts)
            .map_err(|e| format!("{what}: {}", e.reason))?;
        parse_target(&format!("https://{host}{path}"), &hosts)
            .map_err(|e| format!("{what}.path: {e}"))?;
    }

    if let Some(o) = &s.oauth {
        for url in [
            Some(&o.authorize_url),
            Some(&o.token_url),
            o.revoke_url.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let host = url
                .strip_prefix("https://")
                .and_then(|r| r.split(['/', '?']).next())
                .ok_or("OAuth URLs must be https")?;
            parse_target(url, &[host.to_owned()]).map_err(|e| format!("OAuth URL: {e}"))?;
        }
    }

    for intent in &s.intents {
        validate_intent(s, intent, &hosts).map_err(|e| format!("intent {}: {e}", intent.name))?;
    }
    Ok(())
}

fn validate_intent(s: &Service, intent: &Intent, hosts: &[String]) -> Result<(), String> {
    let action = intent
        .name
        .strip_prefix(&s.slug)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or("the name must be <slug>.<action>")?;
    if action.is_empty() || !action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err("the action must be lower-case letters and _".into());
    }
    if intent.description.trim().is_empty() {
        return Err("a description is required".into());
    }
    if let Some(scope) = intent.scopes.iter().find(|sc| !s.has_scope(sc)) {
        return Err(format!("scope {scope} is not a scope of the service"));
    }
    let mut names = BTreeSet::new();
    for p in &intent.params {
        if !names.insert(p.name.as_str()) {
            return Err(format!("duplicate parameter {}", p.name));
        }
        if let Some(pattern) = &p.pattern {
            compile_pattern(pattern).map_err(|e| format!("parameter {}: {e}", p.name))?;
        }
    }
    for t in &intent.constraints {
        let sources = [
            t.value.is_some(),
            t.param.is_some(),
            t.each.is_some(),
            t.regex.is_some(),
        ];
        if sources.iter().filter(|b| **b).count() != 1 {
            return Err("each template needs exactly one of value, param, each, regex".into());
        }
        let referenced: Vec<&str> = match (&t.param, &t.each, &t.regex) {
            (Some(p), _, _) => vec![p.as_str()],
            (_, Some(e), _) => {
                let ph = placeholders(e);
                if ph.len() != 1 {
                    return Err("an each template needs exactly one placeholder".into());
                }
                ph
            }
            (_, _, Some(r)) => placeholders(r),
            _ => vec![],
        };
        if let Some(unknown) = referenced.iter().find(|n| !names.contains(*n)) {
            return Err(format!("template names undeclared parameter {unknown}"));
        }
    }
    if intent.allow.is_empty() || intent.deny.is_empty() {
        return Err("at least one allow and one deny example are required".into());
    }
    let constraints = intent
        .expand(&Value::Object(intent.example_params.clone()))
        .map_err(|e| format!("example_params: {e}"))?;
    let set = ConstraintSet::from_constraints(constraints).map_err(|e| e.to_string())?;
    for (n, ex) in intent.allow.iter().enumerate() {
        if !example_allowed(s, &set, ex, hosts)? {
            return Err(format!("allow example #{n} is denied"));
        }
    }
    for (n, ex) in intent.deny.iter().enumerate() {
        if example_allowed(s, &set, ex, hosts)? {
            return Err(format!("deny example #{n} is allowed"));
        }
    }
    Ok(())
}

/// Runs one example request through the URL policy and the constraints.
fn example_allowed(
    s: &Service,
    set: &ConstraintSet,
    ex: &ExampleRequest,
    hosts: &[String],
) -> Result<bool, String> {
    let target = s
        .parse_target(&ex.url, hosts)
        .map_err(|e| format!("example URL: {e}"))?;
    Ok(check_target(set, &ex.method, &target, ex.body.as_ref()).is_ok())
}

/// Checks a constraint set against a parsed target: the view is built from
/// the normalised path, the host and the decoded query.
pub fn check_target(
    set: &ConstraintSet,
    method: &str,
    target: &Target,
    body: Option<&Value>,
) -> Result<(), crate::constraint::Violation> {
    let search = target
        .query
        .as_ref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut view = RequestView::new(method, &target.path).with_host(&target.host);
    view.search = Some(&search);
    for (k, v) in target.query_pairs() {
        view = view.with_query(k, v);
    }
    view.body = body;
    set.check(&view)
}
