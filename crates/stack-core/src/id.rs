//! Prefixed identifiers.
//!
//! Every object id is `<prefix><body>` where the body is URL-safe
//! (`[A-Za-z0-9_-]`), because the SDK inserts most ids into paths without
//! percent-encoding. Generating the random body is `stack-crypto`'s job; this
//! module only knows prefixes and validation.

/// The kinds of object that carry a prefixed id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Operator,
    Agent,
    ApiKey,
    AuditEntry,
    Member,
    Passport,
    Session,
    Mission,
    Skill,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Operator => "op_",
            Self::Agent => "agt_",
            Self::ApiKey => "key_",
            Self::AuditEntry => "aud_",
            Self::Member => "mem_",
            Self::Passport => "pp_",
            Self::Session => "ses_",
            Self::Mission => "ms_",
            Self::Skill => "skl_",
        }
    }

    /// Whether `s` looks like an id of this kind: the prefix, then 1..=128
    /// URL-safe characters. Ids from outside are checked with this before they
    /// reach storage, so a malformed id is a clean 404 rather than a query error.
    pub fn is_valid(self, s: &str) -> bool {
        match s.strip_prefix(self.prefix()) {
            Some(body) => is_url_safe_body(body),
            None => false,
        }
    }
}

/// 1..=128 characters of `[A-Za-z0-9_-]`.
pub fn is_url_safe_body(body: &str) -> bool {
    !body.is_empty()
        && body.len() <= 128
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_prefix_and_body() {
        assert!(IdKind::Agent.is_valid("agt_abc-DEF_123"));
        assert!(!IdKind::Agent.is_valid("op_abc"));
        assert!(!IdKind::Agent.is_valid("agt_"));
        assert!(!IdKind::Agent.is_valid("agt_a/b"));
        assert!(!IdKind::Agent.is_valid("agt_ä"));
        assert!(!IdKind::Agent.is_valid(&format!("agt_{}", "a".repeat(129))));
    }
}
