//! stack-store against real databases: SQLite always, PostgreSQL when
//! `STACK_TEST_POSTGRES_URL` is set (CI sets it). Each test runs once per
//! backend through `both_backends!`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::sync::Arc;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use stack_app::agents::RegisterAgent;
use stack_app::audit::{AuditListQuery, VerifyQuery};
use stack_app::{App, AppConfig, SystemClock};
use stack_core::{ErrorCode, Principal};
use stack_crypto::SystemRandom;
use stack_store::{Db, DbConfig};

/// A fresh database: a temp SQLite file, or a new PostgreSQL database
/// created for this test and dropped afterwards.
struct TestDb {
    db: Db,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>, // (admin url, database name)
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DbConfig::Sqlite {
            path: dir.path().join("stack.db"),
        })
        .await
        .unwrap();
        Self {
            db,
            _dir: Some(dir),
            pg: None,
        }
    }

    async fn postgres() -> Option<Self> {
        let admin = std::env::var("STACK_TEST_POSTGRES_URL").ok()?;
        let token = stack_crypto::random_token(&SystemRandom::new(), 9).unwrap();
        let name = format!(
            "stack_test_{}",
            token.to_lowercase().replace(['-', '_'], "x")
        );
        let url = stack_store::scratch::create(&admin, &name).await.unwrap();
        let db = Db::connect(&DbConfig::Postgres { url: url.into() })
            .await
            .unwrap();
        Some(Self {
            db,
            _dir: None,
            pg: Some((admin, name)),
        })
    }

    async fn cleanup(self) {
        let Self { db, pg, .. } = self;
        db.close().await.unwrap();
        if let Some((admin, name)) = pg {
            stack_store::scratch::drop(&admin, &name).await.unwrap();
        }
    }
}

fn app(db: &Db) -> App {
    App::new(
        Arc::new(db.clone()),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::new()),
        AppConfig::default(),
    )
}

macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let t = TestDb::sqlite().await;
                ($body)(t.db.clone()).await;
                t.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(t) = TestDb::postgres().await else {
                    eprintln!("STACK_TEST_POSTGRES_URL not set: skipping the PostgreSQL run");
                    return;
                };
                ($body)(t.db.clone()).await;
                t.cleanup().await;
            }
        }
    };
}

async fn operator(app: &App, name: &str) -> Principal {
    let created = app.create_operator(name).await.unwrap();
    Principal::operator(created.operator.id)
}

async fn verify(app: &App, p: &Principal) -> Value {
    app.verify_audit_chain(p, VerifyQuery::default())
        .await
        .unwrap()
}

both_backends!(concurrent_writers_never_fork_a_chain, |db: Db| async move {
    let app = app(&db);
    let a = operator(&app, "a").await;
    let b = operator(&app, "b").await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        for p in [a.clone(), b.clone()] {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..12 {
                    let cmd = RegisterAgent {
                        name: format!("w{w}-n{i}"),
                        ..RegisterAgent::default()
                    };
                    app.register_agent(&p, cmd).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for p in [&a, &b] {
        let v = verify(&app, p).await;
        assert_eq!(v["ok"], true, "{v}");
        // operator.create + 96 registrations
        assert_eq!(v["entries_checked"], 97, "{v}");
        let head = app.audit_chain_head(p).await.unwrap();
        assert_eq!(head.entry_count, 97);
        assert_eq!(app.list_agents(p).await.unwrap().len(), 96);
    }
});

async fn seeded(db: &Db) -> (App, Principal) {
    let app = app(db);
    let p = operator(&app, "tamper").await;
    for i in 0..5 {
        app.register_agent(
            &p,
            RegisterAgent {
                name: format!("agent-{i}"),
                ..RegisterAgent::default()
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(verify(&app, &p).await["ok"], true);
    (app, p)
}

async fn exec(db: &Db, sql: &str) {
    let c = db.connection();
    c.execute_raw(Statement::from_string(
        c.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap();
}

both_backends!(
    a_changed_row_is_reported_at_that_entry,
    |db: Db| async move {
        let (app, p) = seeded(&db).await;
        exec(&db, &format!("UPDATE audit_entries SET action = 'agent.nothing' WHERE operator_id = '{}' AND seq = 3", p.operator_id)).await;
        let v = verify(&app, &p).await;
        assert_eq!(v["ok"], false);
        assert_eq!(v["first_break"]["seq"], 3, "{v}");
        assert_eq!(v["first_break"]["kind"]["kind"], "hash_mismatch", "{v}");
    }
);

both_backends!(a_changed_details_field_is_reported, |db: Db| async move {
    let (app, p) = seeded(&db).await;
    exec(
        &db,
        &format!(
            "UPDATE audit_entries SET details = '{{}}' WHERE operator_id = '{}' AND seq = 2",
            p.operator_id
        ),
    )
    .await;
    let v = verify(&app, &p).await;
    assert_eq!(v["first_break"]["seq"], 2, "{v}");
});

both_backends!(a_deleted_row_is_reported_at_the_gap, |db: Db| async move {
    let (app, p) = seeded(&db).await;
    exec(
        &db,
        &format!(
            "DELETE FROM audit_entries WHERE operator_id = '{}' AND seq = 4",
            p.operator_id
        ),
    )
    .await;
    let v = verify(&app, &p).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_break"]["seq"], 5, "{v}");
    assert_eq!(v["first_break"]["kind"]["kind"], "seq_gap", "{v}");
});

both_backends!(reordered_rows_are_reported, |db: Db| async move {
    let (app, p) = seeded(&db).await;
    let op = &p.operator_id;
    exec(
        &db,
        &format!("UPDATE audit_entries SET seq = 1000 WHERE operator_id = '{op}' AND seq = 2"),
    )
    .await;
    exec(
        &db,
        &format!("UPDATE audit_entries SET seq = 2 WHERE operator_id = '{op}' AND seq = 3"),
    )
    .await;
    exec(
        &db,
        &format!("UPDATE audit_entries SET seq = 3 WHERE operator_id = '{op}' AND seq = 1000"),
    )
    .await;
    let v = verify(&app, &p).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_break"]["seq"], 2, "{v}");
});

both_backends!(a_truncated_tail_is_reported, |db: Db| async move {
    let (app, p) = seeded(&db).await;
    exec(
        &db,
        &format!(
            "DELETE FROM audit_entries WHERE operator_id = '{}' AND seq = 6",
            p.operator_id
        ),
    )
    .await;
    let v = verify(&app, &p).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_break"]["kind"]["kind"], "head_mismatch", "{v}");
});

both_backends!(operators_are_isolated, |db: Db| async move {
    let app = app(&db);
    let a = operator(&app, "a").await;
    let b = operator(&app, "b").await;
    let agent = app
        .register_agent(
            &a,
            RegisterAgent {
                name: "mine".into(),
                ..RegisterAgent::default()
            },
        )
        .await
        .unwrap();
    // Same name is fine in another tenant; duplicate in the same tenant is a conflict.
    app.register_agent(
        &b,
        RegisterAgent {
            name: "mine".into(),
            ..RegisterAgent::default()
        },
    )
    .await
    .unwrap();
    let dup = app
        .register_agent(
            &a,
            RegisterAgent {
                name: "mine".into(),
                ..RegisterAgent::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(dup.code, ErrorCode::Conflict);

    assert_eq!(
        app.get_agent(&b, &agent.id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        app.update_agent(&b, &agent.id, json!({"description": "x"}))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert_eq!(
        app.delete_agent(&b, &agent.id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(app.list_agents(&b).await.unwrap().len(), 1);
    let b_log = app.list_audit(&b, AuditListQuery::default()).await.unwrap();
    assert!(b_log.entries.iter().all(|e| e.operator_id == b.operator_id));
    assert!(
        b_log
            .entries
            .iter()
            .all(|e| e.target_id.as_deref() != Some(agent.id.as_str()))
    );
    // The owner still sees it unchanged.
    assert!(
        app.get_agent(&a, &agent.id)
            .await
            .unwrap()
            .description
            .is_none()
    );
});

both_backends!(
    migrations_are_idempotent_and_versioned,
    |db: Db| async move {
        db.migrate().await.unwrap();
        db.migrate().await.unwrap();
        let c = db.connection();
        let rows = c
            .query_all_raw(Statement::from_string(
                c.get_database_backend(),
                "SELECT version FROM seaql_migrations".to_owned(),
            ))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
    }
);
