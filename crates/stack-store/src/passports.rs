//! Signing keys, passports, missions, checkpoints and reviews (issue 3).

use stack_app::passports::PassportStore;

use crate::Db;

impl PassportStore for Db {}
