//! OAuth 2.1 authorization server for MCP clients (issue 5): dynamic client
//! registration, authorization codes with PKCE, access and refresh tokens.

use async_trait::async_trait;
use stack_core::{Error, Principal, Result};

use crate::App;

/// Prefix of STACK-issued OAuth access tokens.
pub const ACCESS_TOKEN_PREFIX: &str = "sat_";

/// Storage for OAuth clients, codes and tokens.
#[async_trait]
pub trait OAuthStore: Send + Sync + 'static {}

impl App {
    /// Authenticates an OAuth access token issued by STACK's authorization server.
    pub(crate) async fn authenticate_oauth_token(&self, _token: &str) -> Result<Principal> {
        Err(Error::unauthorized(
            "OAuth access tokens are not accepted yet",
        ))
    }
}
