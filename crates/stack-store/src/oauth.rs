//! OAuth clients, codes and tokens (issue 5).

use stack_app::oauth::OAuthStore;

use crate::Db;

impl OAuthStore for Db {}
