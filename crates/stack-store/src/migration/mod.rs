//! Versioned schema migrations, run at start.
//!
//! Each migration is a module named `mYYYYMMDD_NNNNNN_what`; applied versions
//! are recorded in `seaql_migrations`. Migrations only add; a released
//! migration is never edited.

use sea_orm_migration::prelude::*;

mod m20261122_000001_init;
mod m20261122_000002_passports;
mod m20261122_000003_oauth;
mod m20261122_000004_scan;
mod m20261122_000005_services;
mod m20261122_000006_intents;
mod m20261122_000007_oauth_connect;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_init::Migration),
            Box::new(m20261122_000002_passports::Migration),
            Box::new(m20261122_000003_oauth::Migration),
            Box::new(m20261122_000004_scan::Migration),
            Box::new(m20261122_000005_services::Migration),
            Box::new(m20261122_000006_intents::Migration),
            Box::new(m20261122_000007_oauth_connect::Migration),
        ]
    }
}

pub(crate) fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
}

/// An index on `table(cols)`, unique or not.
pub(crate) fn index(name: &str, table: &str, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(Alias::new(table));
    for c in cols {
        i.col(Alias::new(*c));
    }
    if unique {
        i.unique();
    }
    i.to_owned()
}
