//! Who is calling, and on behalf of which operator.
//!
//! Every request resolves to one [`Principal`]. The operator is the tenant:
//! every object belongs to exactly one operator and every read and write is
//! scoped by [`Principal::operator_id`]. What the caller may do is decided by
//! [`Principal::allows`], which combines the kind of credential (operator key,
//! team member role, agent, passport) with an optional OAuth scope ceiling.

use serde::{Deserialize, Serialize};

/// A team member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Readonly,
    Standard,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "readonly" => Some(Self::Readonly),
            "standard" => Some(Self::Standard),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Coarse permissions that operations check. OAuth scopes map onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    AgentsRead,
    AgentsWrite,
    PassportsRead,
    PassportsWrite,
    ServicesRead,
    ServicesWrite,
    /// Connecting a new service (OAuth or custom credential).
    ServicesConnect,
    CredentialsRead,
    /// Making calls through the proxy.
    Proxy,
    /// Reading proxy usage and quotas.
    ProxyRead,
    AuditRead,
    ScanUse,
    IdentityRead,
    IdentityWrite,
    TeamAdmin,
    SecurityEvents,
    /// A passport reporting on itself: checkpoints, checkout, refresh.
    /// Operations still check that a passport acts only on itself.
    ReportActivity,
}

impl Permission {
    /// Whether this permission only reads state.
    pub const fn is_read(self) -> bool {
        matches!(
            self,
            Self::AgentsRead
                | Self::PassportsRead
                | Self::ServicesRead
                | Self::AuditRead
                | Self::CredentialsRead
                | Self::Proxy
                | Self::ProxyRead
                | Self::ScanUse
                | Self::IdentityRead
        )
    }
}

/// The kind of credential a request was authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The operator's master API key (or a session acting as the operator).
    Operator,
    /// A team member's API key.
    Member { member_id: String, role: Role },
    /// An agent authenticated with its own key.
    Agent { agent_id: String },
    /// A passport used as a bearer credential: limited to its agent.
    Passport { agent_id: String, jti: String },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub operator_id: String,
    pub kind: PrincipalKind,
    /// An OAuth scope ceiling; `None` means the credential's full rights.
    pub scopes: Option<Vec<Permission>>,
}

impl Principal {
    pub fn operator(operator_id: impl Into<String>) -> Self {
        Self {
            operator_id: operator_id.into(),
            kind: PrincipalKind::Operator,
            scopes: None,
        }
    }

    pub fn operator_id(&self) -> &str {
        &self.operator_id
    }

    /// Whether the caller may exercise `permission` at all.
    pub fn allows(&self, permission: Permission) -> bool {
        let by_kind = match &self.kind {
            PrincipalKind::Operator => true,
            PrincipalKind::Member { role, .. } => match role {
                Role::Admin => permission != Permission::SecurityEvents,
                Role::Standard => !matches!(
                    permission,
                    Permission::TeamAdmin | Permission::SecurityEvents
                ),
                Role::Readonly => permission.is_read(),
            },
            // Confined to their own agent by `confined_agent` in every operation.
            PrincipalKind::Agent { .. } | PrincipalKind::Passport { .. } => matches!(
                permission,
                Permission::Proxy
                    | Permission::ScanUse
                    | Permission::PassportsRead
                    | Permission::AgentsRead
                    | Permission::ReportActivity
            ),
        };
        by_kind
            && self
                .scopes
                .as_ref()
                .is_none_or(|scopes| scopes.contains(&permission))
    }

    /// The agent this caller is confined to, if any.
    pub fn confined_agent(&self) -> Option<&str> {
        match &self.kind {
            PrincipalKind::Agent { agent_id } | PrincipalKind::Passport { agent_id, .. } => {
                Some(agent_id)
            }
            _ => None,
        }
    }

    /// A short label recorded as the actor of audit entries, e.g.
    /// `operator:op_…` or `member:mem_…`. Never contains a credential.
    pub fn actor_label(&self) -> String {
        match &self.kind {
            PrincipalKind::Operator => format!("operator:{}", self.operator_id),
            PrincipalKind::Member { member_id, .. } => format!("member:{member_id}"),
            PrincipalKind::Agent { agent_id } => format!("agent:{agent_id}"),
            PrincipalKind::Passport { jti, .. } => format!("passport:{jti}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: Role) -> Principal {
        Principal {
            operator_id: "op_a".into(),
            kind: PrincipalKind::Member {
                member_id: "mem_1".into(),
                role,
            },
            scopes: None,
        }
    }

    #[test]
    fn roles_narrow_permissions() {
        assert!(member(Role::Readonly).allows(Permission::AgentsRead));
        assert!(!member(Role::Readonly).allows(Permission::AgentsWrite));
        assert!(member(Role::Standard).allows(Permission::AgentsWrite));
        assert!(!member(Role::Standard).allows(Permission::TeamAdmin));
        assert!(member(Role::Admin).allows(Permission::TeamAdmin));
        assert!(!member(Role::Admin).allows(Permission::SecurityEvents));
        assert!(Principal::operator("op_a").allows(Permission::SecurityEvents));
    }

    #[test]
    fn oauth_scopes_are_a_ceiling() {
        let mut p = Principal::operator("op_a");
        p.scopes = Some(vec![Permission::AgentsRead]);
        assert!(p.allows(Permission::AgentsRead));
        assert!(!p.allows(Permission::AgentsWrite));
    }

    #[test]
    fn passports_are_confined_to_their_agent() {
        let p = Principal {
            operator_id: "op_a".into(),
            kind: PrincipalKind::Passport {
                agent_id: "agt_1".into(),
                jti: "pp_1".into(),
            },
            scopes: None,
        };
        assert_eq!(p.confined_agent(), Some("agt_1"));
        assert!(!p.allows(Permission::AgentsWrite));
        assert_eq!(p.actor_label(), "passport:pp_1");
    }
}
