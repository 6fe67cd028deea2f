//! Passports, missions, revocation and accountability (issue 3).

use async_trait::async_trait;
use stack_core::{Error, Principal, Result};

use crate::App;

/// Storage for signing keys, passports, missions, checkpoints and reviews.
#[async_trait]
pub trait PassportStore: Send + Sync + 'static {}

impl App {
    /// Authenticates a passport presented as a bearer credential: the holder
    /// is confined to the passport's agent, scopes and mission.
    pub(crate) async fn authenticate_passport(&self, _token: &str) -> Result<Principal> {
        Err(Error::unauthorized(
            "passports are not accepted as bearer credentials yet",
        ))
    }
}
