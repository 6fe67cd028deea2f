//! Delegation: a child passport's services are the parent's, narrowed.
//!
//! Pure set logic over [`ServiceGrant`]s; the application layer decides who
//! may delegate to whom and checks accountability modes.

use serde::{Deserialize, Serialize};

use crate::{MAX_DELEGATION_DEPTH, ServiceGrant};

/// One requested grant of a `POST /v1/passports/delegate` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeRequest {
    pub service_connection_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<serde_json::Value>,
    #[serde(default)]
    pub allow_data_from: Vec<String>,
}

/// Why a delegation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarrowError {
    #[error("delegation depth {depth} exceeds the maximum of 4")]
    DepthExceeded { depth: u8 },
    /// A connection the parent does not hold (`scope: None`), a scope it does
    /// not hold on that connection, or a data source outside the parent's
    /// `allow_data_from` (`scope: Some("allow_data_from:<source>")`).
    #[error("{}", describe_escalation(connection_id, scope.as_deref()))]
    ScopeEscalation {
        connection_id: String,
        scope: Option<String>,
    },
}

fn describe_escalation(connection_id: &str, scope: Option<&str>) -> String {
    let connection = crate::error::clip(connection_id);
    match scope {
        None => format!("the parent passport has no grant on connection {connection}"),
        Some(s) => format!(
            "the parent passport does not hold {} on connection {connection}",
            crate::error::clip(s)
        ),
    }
}

impl NarrowError {
    /// The API error code (rest-contract §2).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::DepthExceeded { .. } => "DELEGATION_DEPTH_EXCEEDED",
            Self::ScopeEscalation { .. } => "SCOPE_ESCALATION",
        }
    }
}

/// The child's depth: `parent_depth + 1`, refused past [`MAX_DELEGATION_DEPTH`].
pub fn child_depth(parent_depth: u8) -> Result<u8, NarrowError> {
    let depth = parent_depth.saturating_add(1);
    if depth > MAX_DELEGATION_DEPTH {
        return Err(NarrowError::DepthExceeded { depth });
    }
    Ok(depth)
}

/// Child grants: each requested connection must be in the parent, each scope
/// in the parent's scopes for it; constraints = parent's constraints plus
/// requested ones (adding only narrows); `allow_data_from` ⊆ parent's if the
/// parent's is non-empty (an empty list on the parent means unrestricted).
///
/// An empty request means "inherit the parent's services unchanged"; within a
/// request, empty `scopes` inherit the parent's scopes on that connection and
/// empty `allow_data_from` inherits the parent's list. A connection requested
/// twice is merged into one grant. Grants come out in request order.
pub fn narrow(
    parent: &[ServiceGrant],
    requested: &[ScopeRequest],
) -> Result<Vec<ServiceGrant>, NarrowError> {
    if requested.is_empty() {
        return Ok(parent.to_vec());
    }
    let mut out: Vec<ServiceGrant> = Vec::with_capacity(requested.len());
    for req in requested {
        let escalation = |scope: Option<String>| NarrowError::ScopeEscalation {
            connection_id: req.service_connection_id.clone(),
            scope,
        };
        let base = parent
            .iter()
            .find(|g| g.connection_id == req.service_connection_id)
            .ok_or_else(|| escalation(None))?;
        for scope in &req.scopes {
            if !base.scopes.contains(scope) {
                return Err(escalation(Some(scope.clone())));
            }
        }
        if !base.allow_data_from.is_empty() {
            for source in &req.allow_data_from {
                if !base.allow_data_from.contains(source) {
                    return Err(escalation(Some(format!("allow_data_from:{source}"))));
                }
            }
        }

        let idx = match out
            .iter()
            .position(|g| g.connection_id == base.connection_id)
        {
            Some(i) => i,
            None => {
                out.push(ServiceGrant {
                    scopes: Vec::new(),
                    allow_data_from: Vec::new(),
                    ..base.clone()
                });
                out.len() - 1
            }
        };
        let Some(grant) = out.get_mut(idx) else {
            continue;
        };
        let scopes = if req.scopes.is_empty() {
            &base.scopes
        } else {
            &req.scopes
        };
        push_unique(&mut grant.scopes, scopes);
        push_unique(&mut grant.constraints, &req.constraints);
        let sources = if req.allow_data_from.is_empty() {
            &base.allow_data_from
        } else {
            &req.allow_data_from
        };
        push_unique(&mut grant.allow_data_from, sources);
    }
    Ok(out)
}

fn push_unique<T: PartialEq + Clone>(into: &mut Vec<T>, items: &[T]) {
    for item in items {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}
