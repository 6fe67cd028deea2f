//! Agents: the identity an operator registers before it can hold passports.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stack_audit::Layer;
use stack_core::{Error, ErrorCode, IdKind, Permission, Principal, Result, Timestamp};

use crate::{App, require};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? } default $default:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $s)] $variant),+
        }
        impl $name {
            pub const ALL: &'static [&'static str] = &[$($s),+];
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$variant),)+ _ => None }
            }
        }
        impl Default for $name {
            fn default() -> Self { Self::$default }
        }
    };
}

string_enum!(
    /// How much an agent must declare and report (§9 of the product spec).
    AccountabilityMode { Standard = "standard", Logged = "logged", Enforced = "enforced" } default Enforced
);
string_enum!(
    /// Whether an agent may pull raw credentials or only use them through the proxy.
    CredentialAccess { Direct = "direct", ProxyPreferred = "proxy_preferred", ProxyOnly = "proxy_only" } default ProxyOnly
);
string_enum!(
    /// Who holds the agent's signing key. Immutable after registration.
    KeyMode { StackManaged = "stack_managed", CustomerManaged = "customer_managed", CoSigned = "co_signed" } default StackManaged
);
string_enum!(
    /// What happens when a detector raises a flag of that level.
    Escalation { Notify = "notify", Block = "block" } default Notify
);
string_enum!(
    AgentStatus { Active = "active", Suspended = "suspended" } default Active
);
string_enum!(
    /// `all`: any skill may be invoked; `custom`: only those in `allowed_skills`.
    SkillAccessMode { All = "all", Custom = "custom" } default All
);

/// An agent, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: String,
    pub operator_id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: AgentStatus,
    pub accountability_mode: AccountabilityMode,
    pub credential_access: CredentialAccess,
    pub key_mode: KeyMode,
    pub on_warning: Escalation,
    pub on_critical: Escalation,
    pub passport_blocked: bool,
    pub passport_blocked_reason: Option<String>,
    pub passport_blocked_at: Option<Timestamp>,
    pub skill_access_mode: SkillAccessMode,
    pub allowed_skills: Vec<String>,
    pub icon_url: Option<String>,
    pub llm_inject_system_prompt: bool,
    pub llm_redact_pii: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The agent as both REST and MCP return it (the SDK's `Agent` type).
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub operator_id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: &'static str,
    pub accountability_mode: &'static str,
    pub credential_access: &'static str,
    pub key_mode: &'static str,
    pub on_warning: &'static str,
    pub on_critical: &'static str,
    pub passport_blocked: bool,
    pub passport_blocked_reason: Option<String>,
    pub passport_blocked_at: Option<String>,
    pub skill_access_mode: &'static str,
    pub allowed_skills: Vec<String>,
    pub icon_url: Option<String>,
    pub llm_inject_system_prompt: bool,
    pub llm_redact_pii: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        Self {
            id: a.id.clone(),
            operator_id: a.operator_id.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            status: a.status.as_str(),
            accountability_mode: a.accountability_mode.as_str(),
            credential_access: a.credential_access.as_str(),
            key_mode: a.key_mode.as_str(),
            on_warning: a.on_warning.as_str(),
            on_critical: a.on_critical.as_str(),
            passport_blocked: a.passport_blocked,
            passport_blocked_reason: a.passport_blocked_reason.clone(),
            passport_blocked_at: a.passport_blocked_at.map(Timestamp::to_rfc3339),
            skill_access_mode: a.skill_access_mode.as_str(),
            allowed_skills: a.allowed_skills.clone(),
            icon_url: a.icon_url.clone(),
            llm_inject_system_prompt: a.llm_inject_system_prompt,
            llm_redact_pii: a.llm_redact_pii,
            created_at: a.created_at.to_rfc3339(),
            updated_at: a.updated_at.to_rfc3339(),
        }
    }
}

/// `POST /v1/agents/register` and `stack_register_agent`. Unknown fields are tolerated.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegisterAgent {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub accountability_mode: Option<String>,
    #[serde(default)]
    pub credential_access: Option<String>,
    #[serde(default)]
    pub key_mode: Option<String>,
    #[serde(default)]
    pub on_warning: Option<String>,
    #[serde(default)]
    pub on_critical: Option<String>,
    #[serde(default)]
    pub skill_access_mode: Option<String>,
    #[serde(default)]
    pub allowed_skills: Option<Vec<String>>,
    #[serde(default)]
    pub icon_url: Option<String>,
    #[serde(default)]
    pub llm_inject_system_prompt: Option<bool>,
    #[serde(default)]
    pub llm_redact_pii: Option<bool>,
}

pub const MAX_NAME_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 256;
pub const MAX_ICON_URL_LEN: usize = 100_000;
pub const MAX_ALLOWED_SKILLS: usize = 1_000;

/// `^[a-z0-9][a-z0-9-]*[a-z0-9]$`, at most 64 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let ok_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = (2..=MAX_NAME_LEN).contains(&bytes.len())
        && bytes.first().is_some_and(ok_char)
        && bytes.last().is_some_and(ok_char)
        && bytes.iter().all(|b| ok_char(b) || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_field(
            "name",
            "name must be 2-64 characters of lowercase letters, digits and '-', starting and ending with a letter or digit",
        ))
    }
}

fn parse_enum<T>(
    field: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    all: &[&str],
) -> Result<T> {
    parse(value).ok_or_else(|| {
        Error::invalid_field(field, format!("{field} must be one of: {}", all.join(", ")))
            .with_details(json!({ "field": field, "allowed": all }))
    })
}

fn validate_description(d: &Option<String>) -> Result<()> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => Err(Error::invalid_field(
            "description",
            format!("description is at most {MAX_DESCRIPTION_LEN} characters"),
        )),
        _ => Ok(()),
    }
}

fn validate_icon(icon: &Option<String>) -> Result<()> {
    match icon {
        Some(i) if i.len() > MAX_ICON_URL_LEN => Err(Error::invalid_field(
            "icon_url",
            format!("icon_url is at most {MAX_ICON_URL_LEN} characters"),
        )),
        _ => Ok(()),
    }
}

fn validate_skills(skills: &[String]) -> Result<()> {
    if skills.len() > MAX_ALLOWED_SKILLS {
        return Err(Error::invalid_field(
            "allowed_skills",
            "too many allowed skills",
        ));
    }
    match skills.iter().find(|s| !IdKind::Skill.is_valid(s)) {
        Some(_) => Err(Error::invalid_field(
            "allowed_skills",
            "allowed_skills must hold skill ids (skl_…)",
        )),
        None => Ok(()),
    }
}

/// Checks that `agent_id` is well formed before it reaches storage; a
/// malformed id is simply not found.
fn check_agent_id(agent_id: &str) -> Result<()> {
    if IdKind::Agent.is_valid(agent_id) {
        Ok(())
    } else {
        Err(Error::not_found("agent", agent_id))
    }
}

/// Permissions listing returned by `GET /v1/agents/{id}/permissions`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentPermissions {
    pub agent_id: String,
    pub grants: Vec<Value>,
}

/// Request to add or remove a skill from an agent's allow-list.
#[derive(Debug, Clone, Deserialize)]
pub struct SkillAccessChange {
    pub agent_id: String,
    pub skill_id: String,
}

impl App {
    pub async fn register_agent(&self, p: &Principal, cmd: RegisterAgent) -> Result<AgentView> {
        require(p, Permission::AgentsWrite)?;
        validate_name(&cmd.name)?;
        validate_description(&cmd.description)?;
        validate_icon(&cmd.icon_url)?;

        // A profile is a preset; fields given explicitly override it.
        let (mut accountability, mut access, mut key_mode) = (
            AccountabilityMode::default(),
            CredentialAccess::default(),
            KeyMode::default(),
        );
        match cmd.profile.as_deref() {
            None => {}
            Some("proxied-llm-bot") => {
                access = CredentialAccess::ProxyOnly;
                accountability = AccountabilityMode::Logged;
                key_mode = KeyMode::StackManaged;
            }
            Some(_) => {
                return Err(Error::invalid_field(
                    "profile",
                    "unknown profile; known profiles: proxied-llm-bot",
                ));
            }
        }
        if let Some(v) = &cmd.accountability_mode {
            accountability = parse_enum(
                "accountability_mode",
                v,
                AccountabilityMode::parse,
                AccountabilityMode::ALL,
            )?;
        }
        if let Some(v) = &cmd.credential_access {
            access = parse_enum(
                "credential_access",
                v,
                CredentialAccess::parse,
                CredentialAccess::ALL,
            )?;
        }
        if let Some(v) = &cmd.key_mode {
            key_mode = parse_enum("key_mode", v, KeyMode::parse, KeyMode::ALL)?;
        }
        let on_warning = match &cmd.on_warning {
            Some(v) => parse_enum("on_warning", v, Escalation::parse, Escalation::ALL)?,
            None => Escalation::default(),
        };
        let on_critical = match &cmd.on_critical {
            Some(v) => parse_enum("on_critical", v, Escalation::parse, Escalation::ALL)?,
            None => Escalation::default(),
        };
        let skill_access_mode = match &cmd.skill_access_mode {
            Some(v) => parse_enum(
                "skill_access_mode",
                v,
                SkillAccessMode::parse,
                SkillAccessMode::ALL,
            )?,
            None => SkillAccessMode::default(),
        };
        let allowed_skills = dedup(cmd.allowed_skills.unwrap_or_default());
        validate_skills(&allowed_skills)?;

        let now = self.now();
        let agent = Agent {
            id: self.new_id(IdKind::Agent)?,
            operator_id: p.operator_id.clone(),
            name: cmd.name,
            description: cmd.description,
            status: AgentStatus::Active,
            accountability_mode: accountability,
            credential_access: access,
            key_mode,
            on_warning,
            on_critical,
            passport_blocked: false,
            passport_blocked_reason: None,
            passport_blocked_at: None,
            skill_access_mode,
            allowed_skills,
            icon_url: cmd.icon_url,
            llm_inject_system_prompt: cmd.llm_inject_system_prompt.unwrap_or(true),
            llm_redact_pii: cmd.llm_redact_pii.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        let audit = self.audit(
            Self::draft(p, Layer::System, "agent.register")
                .agent(&agent.id)
                .target("agent", &agent.id)
                .details(json!({
                    "name": agent.name,
                    "accountability_mode": agent.accountability_mode.as_str(),
                    "credential_access": agent.credential_access.as_str(),
                    "key_mode": agent.key_mode.as_str(),
                })),
        )?;
        self.store.insert_agent(&agent, audit).await?;
        Ok(AgentView::from(&agent))
    }

    pub async fn list_agents(&self, p: &Principal) -> Result<Vec<AgentView>> {
        require(p, Permission::AgentsRead)?;
        let agents = self.store.list_agents(&p.operator_id).await?;
        Ok(agents
            .iter()
            .filter(|a| p.confined_agent().is_none_or(|only| only == a.id))
            .map(AgentView::from)
            .collect())
    }

    pub async fn get_agent(&self, p: &Principal, agent_id: &str) -> Result<AgentView> {
        require(p, Permission::AgentsRead)?;
        Ok(AgentView::from(&self.load_agent(p, agent_id).await?))
    }

    /// Loads an agent of the caller's operator (and, for agent-confined
    /// callers, only their own agent). Anything else is NOT_FOUND, so other
    /// tenants' ids are indistinguishable from unknown ones.
    pub(crate) async fn load_agent(&self, p: &Principal, agent_id: &str) -> Result<Agent> {
        check_agent_id(agent_id)?;
        if p.confined_agent().is_some_and(|only| only != agent_id) {
            return Err(Error::not_found("agent", agent_id));
        }
        self.store
            .get_agent(&p.operator_id, agent_id)
            .await?
            .ok_or_else(|| Error::not_found("agent", agent_id))
    }

    /// `PATCH /v1/agents/{id}`: applies the known mutable fields of `patch`,
    /// tolerates unknown ones, and refuses changes that must go elsewhere.
    pub async fn update_agent(
        &self,
        p: &Principal,
        agent_id: &str,
        patch: Value,
    ) -> Result<AgentView> {
        require(p, Permission::AgentsWrite)?;
        check_agent_id(agent_id)?;
        let patch = match patch {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(Error::validation("the request body must be a JSON object")),
        };
        let entry_id = self.new_id(IdKind::AuditEntry)?;
        let now = self.now();
        let draft = Self::draft(p, Layer::System, "agent.update")
            .agent(agent_id)
            .target("agent", agent_id);
        let updated = self
            .store
            .update_agent(
                &p.operator_id,
                agent_id,
                Box::new(move |mut agent: Agent| {
                    let before = agent.clone();
                    apply_patch(&mut agent, &patch)?;
                    let changes = diff(&before, &agent);
                    if changes.is_empty() {
                        return Ok((before, None));
                    }
                    agent.updated_at = now.max(agent.updated_at);
                    let audit = crate::NewAudit {
                        entry_id,
                        now,
                        draft: draft.details(json!({ "changes": changes })),
                    };
                    Ok((agent, Some(audit)))
                }),
            )
            .await?
            .ok_or_else(|| Error::not_found("agent", agent_id))?;
        Ok(AgentView::from(&updated))
    }

    pub async fn delete_agent(&self, p: &Principal, agent_id: &str) -> Result<Value> {
        require(p, Permission::AgentsWrite)?;
        let agent = self.load_agent(p, agent_id).await?;
        let audit = self.audit(
            Self::draft(p, Layer::System, "agent.delete")
                .agent(agent_id)
                .target("agent", agent_id)
                .details(json!({ "name": agent.name, "reason": "Agent deleted" })),
        )?;
        if !self
            .store
            .delete_agent(&p.operator_id, agent_id, audit)
            .await?
        {
            return Err(Error::not_found("agent", agent_id));
        }
        Ok(json!({ "id": agent_id, "deleted": true }))
    }

    /// Clears `passport_blocked`. From an API-key session this needs a
    /// governance approval id (the `X-Governance-Approval` header), which is
    /// recorded in the audit entry.
    pub async fn unblock_agent(
        &self,
        p: &Principal,
        agent_id: &str,
        governance_approval: Option<&str>,
    ) -> Result<AgentView> {
        require(p, Permission::AgentsWrite)?;
        check_agent_id(agent_id)?;
        let approval = match governance_approval.map(str::trim) {
            Some(a) if stack_core::id::is_url_safe_body(a) => a.to_owned(),
            Some(_) => {
                return Err(Error::invalid_field(
                    "X-Governance-Approval",
                    "the governance approval id must be 1-128 characters of [A-Za-z0-9_-]",
                ));
            }
            None => {
                return Err(Error::new(
                    ErrorCode::GovernanceApprovalRequired,
                    "unblocking an agent from an API-key session needs a human approval: retry with the X-Governance-Approval header",
                )
                .with_details(json!({ "action": "agent.unblock", "agent_id": agent_id })));
            }
        };
        let entry_id = self.new_id(IdKind::AuditEntry)?;
        let now = self.now();
        let draft = Self::draft(p, Layer::System, "agent.unblock")
            .agent(agent_id)
            .target("agent", agent_id);
        let updated = self
            .store
            .update_agent(
                &p.operator_id,
                agent_id,
                Box::new(move |mut agent: Agent| {
                    let was_blocked = agent.passport_blocked;
                    agent.passport_blocked = false;
                    agent.passport_blocked_reason = None;
                    agent.passport_blocked_at = None;
                    agent.updated_at = now.max(agent.updated_at);
                    let audit = crate::NewAudit {
                        entry_id,
                        now,
                        draft: draft.details(json!({
                            "governance_approval": approval,
                            "was_blocked": was_blocked,
                        })),
                    };
                    Ok((agent, Some(audit)))
                }),
            )
            .await?
            .ok_or_else(|| Error::not_found("agent", agent_id))?;
        Ok(AgentView::from(&updated))
    }

    pub async fn agent_permissions(
        &self,
        p: &Principal,
        agent_id: &str,
    ) -> Result<AgentPermissions> {
        require(p, Permission::AgentsRead)?;
        let agent = self.load_agent(p, agent_id).await?;
        let grants = self.grant_views(&p.operator_id, &agent.id).await?;
        Ok(AgentPermissions {
            agent_id: agent.id,
            grants,
        })
    }

    /// Adds (`allow = true`) or removes a skill from the agent's allow-list. Idempotent.
    pub async fn set_skill_access(
        &self,
        p: &Principal,
        change: SkillAccessChange,
        allow: bool,
    ) -> Result<AgentView> {
        require(p, Permission::AgentsWrite)?;
        check_agent_id(&change.agent_id)?;
        if !IdKind::Skill.is_valid(&change.skill_id) {
            return Err(Error::invalid_field(
                "skill_id",
                "skill_id must be a skill id (skl_…)",
            ));
        }
        let entry_id = self.new_id(IdKind::AuditEntry)?;
        let now = self.now();
        let action = if allow {
            "skill.allow"
        } else {
            "skill.disallow"
        };
        let draft = Self::draft(p, Layer::Skills, action)
            .agent(&change.agent_id)
            .target("skill", &change.skill_id);
        let skill = change.skill_id.clone();
        let updated = self
            .store
            .update_agent(
                &p.operator_id,
                &change.agent_id,
                Box::new(move |mut agent: Agent| {
                    let present = agent.allowed_skills.contains(&skill);
                    if present == allow {
                        return Ok((agent, None));
                    }
                    if allow {
                        agent.allowed_skills.push(skill.clone());
                        validate_skills(&agent.allowed_skills)?;
                    } else {
                        agent.allowed_skills.retain(|s| *s != skill);
                    }
                    agent.updated_at = now.max(agent.updated_at);
                    let audit = crate::NewAudit {
                        entry_id,
                        now,
                        draft: draft.details(json!({
                            "skill_id": skill,
                            "skill_access_mode": agent.skill_access_mode.as_str(),
                        })),
                    };
                    Ok((agent, Some(audit)))
                }),
            )
            .await?
            .ok_or_else(|| Error::not_found("agent", &change.agent_id))?;
        Ok(AgentView::from(&updated))
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
    v
}

fn field_str<'a>(patch: &'a Map<String, Value>, field: &str) -> Result<Option<Option<&'a str>>> {
    match patch.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s))),
        Some(_) => Err(Error::invalid_field(
            field,
            format!("{field} must be a string"),
        )),
    }
}

fn field_bool(patch: &Map<String, Value>, field: &str) -> Result<Option<bool>> {
    match patch.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::invalid_field(
            field,
            format!("{field} must be a boolean"),
        )),
    }
}

fn required<'a>(field: &str, v: Option<&'a str>) -> Result<&'a str> {
    v.ok_or_else(|| Error::invalid_field(field, format!("{field} may not be null")))
}

/// Applies the mutable fields of a PATCH body. Unknown keys are ignored (the
/// SDK passes arbitrary kwargs through); known keys with wrong types fail.
fn apply_patch(agent: &mut Agent, patch: &Map<String, Value>) -> Result<()> {
    if let Some(v) = field_str(patch, "name")? {
        let v = required("name", v)?;
        validate_name(v)?;
        v.clone_into(&mut agent.name);
    }
    if let Some(v) = field_str(patch, "description")? {
        let d = v.map(str::to_owned);
        validate_description(&d)?;
        agent.description = d;
    }
    if let Some(v) = field_str(patch, "icon_url")? {
        let i = v.map(str::to_owned);
        validate_icon(&i)?;
        agent.icon_url = i;
    }
    if let Some(v) = field_str(patch, "status")? {
        agent.status = parse_enum(
            "status",
            required("status", v)?,
            AgentStatus::parse,
            AgentStatus::ALL,
        )?;
    }
    if let Some(v) = field_str(patch, "accountability_mode")? {
        agent.accountability_mode = parse_enum(
            "accountability_mode",
            required("accountability_mode", v)?,
            AccountabilityMode::parse,
            AccountabilityMode::ALL,
        )?;
    }
    if let Some(v) = field_str(patch, "credential_access")? {
        agent.credential_access = parse_enum(
            "credential_access",
            required("credential_access", v)?,
            CredentialAccess::parse,
            CredentialAccess::ALL,
        )?;
    }
    if let Some(v) = field_str(patch, "on_warning")? {
        agent.on_warning = parse_enum(
            "on_warning",
            required("on_warning", v)?,
            Escalation::parse,
            Escalation::ALL,
        )?;
    }
    if let Some(v) = field_str(patch, "on_critical")? {
        agent.on_critical = parse_enum(
            "on_critical",
            required("on_critical", v)?,
            Escalation::parse,
            Escalation::ALL,
        )?;
    }
    if let Some(v) = field_str(patch, "skill_access_mode")? {
        agent.skill_access_mode = parse_enum(
            "skill_access_mode",
            required("skill_access_mode", v)?,
            SkillAccessMode::parse,
            SkillAccessMode::ALL,
        )?;
    }
    if let Some(v) = field_str(patch, "key_mode")? {
        let wanted = parse_enum(
            "key_mode",
            required("key_mode", v)?,
            KeyMode::parse,
            KeyMode::ALL,
        )?;
        if wanted != agent.key_mode {
            return Err(Error::invalid_field(
                "key_mode",
                "key_mode is fixed at registration",
            ));
        }
    }
    if let Some(v) = patch.get("passport_blocked")
        && v.as_bool() != Some(agent.passport_blocked)
    {
        return Err(Error::invalid_field(
            "passport_blocked",
            "passport_blocked changes through POST /v1/agents/{id}/unblock or a review decision",
        ));
    }
    if let Some(v) = patch.get("allowed_skills") {
        let skills: Vec<String> = match v {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Error::invalid_field(
                        "allowed_skills",
                        "allowed_skills must be an array of strings",
                    )
                })?,
            _ => {
                return Err(Error::invalid_field(
                    "allowed_skills",
                    "allowed_skills must be an array of strings",
                ));
            }
        };
        let skills = dedup(skills);
        validate_skills(&skills)?;
        agent.allowed_skills = skills;
    }
    if let Some(b) = field_bool(patch, "llm_inject_system_prompt")? {
        agent.llm_inject_system_prompt = b;
    }
    if let Some(b) = field_bool(patch, "llm_redact_pii")? {
        agent.llm_redact_pii = b;
    }
    Ok(())
}

/// `{field: {from, to}}` for every field that changed.
fn diff(before: &Agent, after: &Agent) -> Map<String, Value> {
    let (b, a) = (
        serde_json::to_value(AgentView::from(before)).unwrap_or(Value::Null),
        serde_json::to_value(AgentView::from(after)).unwrap_or(Value::Null),
    );
    let mut out = Map::new();
    if let (Value::Object(b), Value::Object(a)) = (b, a) {
        for (k, av) in a {
            if k == "updated_at" {
                continue;
            }
            let bv = b.get(&k).cloned().unwrap_or(Value::Null);
            if bv != av {
                out.insert(k, json!({ "from": bv, "to": av }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["ab", "support-bot", "a1", "x-y-z-9"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "a",
            "-ab",
            "ab-",
            "Ab",
            "a_b",
            "a b",
            "",
            long.as_str(),
            "ä-b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
