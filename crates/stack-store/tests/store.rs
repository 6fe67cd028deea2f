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
use stack_app::scan::ScanStore as _;
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
        use sea_orm_migration::MigratorTrait as _;
        assert_eq!(
            rows.len(),
            stack_store::migration::Migrator::migrations().len()
        );
    }
);

// ---- passports

async fn passport_app(db: &Db) -> (App, Principal) {
    let app = app(db);
    app.init_passport_keys(stack_crypto::aead::DataKey::generate(&SystemRandom::new()).unwrap())
        .await
        .unwrap();
    app.revocation_sink().resync().await.unwrap();
    let p = operator(&app, "passports").await;
    (app, p)
}

async fn agent(app: &App, p: &Principal, name: &str) -> String {
    app.register_agent(
        p,
        RegisterAgent {
            name: name.into(),
            ..RegisterAgent::default()
        },
    )
    .await
    .unwrap()
    .id
}

async fn start(app: &App, p: &Principal, agent_id: &str) -> (String, String, String) {
    let r = app
        .start_mission(
            p,
            json!({"agent_id": agent_id, "mission": {"intent_summary": "triage", "intent_services": ["gmail"]}, "passport": {}}),
        )
        .await
        .unwrap();
    (
        r["mission_id"].as_str().unwrap().to_owned(),
        r["passport"]["token"].as_str().unwrap().to_owned(),
        r["passport"]["jti"].as_str().unwrap().to_owned(),
    )
}

both_backends!(
    revocation_cascades_through_delegation_and_refresh,
    |db: Db| async move {
        let (app, p) = passport_app(&db).await;
        let a = agent(&app, &p, "root-agent").await;
        let b = agent(&app, &p, "child-agent").await;
        let c = agent(&app, &p, "grandchild-agent").await;
        let (_, root_token, root_jti) = start(&app, &p, &a).await;
        let child = app
            .delegate_passport(
                &p,
                stack_app::parse_input(
                    json!({"parent_passport_token": root_token, "child_agent_id": b}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        let grandchild = app
            .delegate_passport(
                &p,
                stack_app::parse_input(
                    json!({"parent_passport_token": child["token"], "child_agent_id": c}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(grandchild["delegation_depth"], 2);
        let refreshed = app
            .refresh_passport(
                &p,
                stack_app::parse_input(json!({"token": root_token})).unwrap(),
            )
            .await
            .unwrap();
        assert_ne!(refreshed["jti"].as_str().unwrap(), root_jti);
        let active = app
            .list_active_passports(&p, Default::default())
            .await
            .unwrap();
        assert_eq!(active.len(), 4);

        let out = app
            .revoke(
                &p,
                stack_app::passports::RevokeTarget::Passport(root_jti.clone()),
                Some("test".into()),
            )
            .await
            .unwrap();
        assert_eq!(out["count"], 4, "{out}");
        for token in [
            &root_token,
            child["token"].as_str().unwrap(),
            grandchild["token"].as_str().unwrap(),
            refreshed["token"].as_str().unwrap(),
        ] {
            let v = app.verify_passport(token).await.unwrap();
            assert_eq!(v["valid"], false, "{v}");
            assert_eq!(v["reason"], "revoked", "{v}");
        }
        assert!(
            app.list_active_passports(&p, Default::default())
                .await
                .unwrap()
                .is_empty()
        );
        let log = app
            .list_audit(
                &p,
                AuditListQuery {
                    limit: Some(json!(100)),
                    ..AuditListQuery::default()
                },
            )
            .await
            .unwrap();
        let count = |a: &str| log.entries.iter().filter(|e| e.action == a).count();
        assert_eq!(count("passport.revoke"), 1);
        assert_eq!(count("passport.revoke_cascade"), 3);
        assert_eq!(verify(&app, &p).await["ok"], true);
    }
);

both_backends!(
    completing_a_mission_revokes_its_passports_once,
    |db: Db| async move {
        let (app, p) = passport_app(&db).await;
        let a = agent(&app, &p, "worker").await;
        let (mission, token, _) = start(&app, &p, &a).await;
        let done = app
            .end_mission(&p, &mission, false, Default::default())
            .await
            .unwrap();
        assert_eq!(done["terminal_state"], "completed");
        assert_eq!(done["transitioned"], true);
        assert_eq!(
            app.verify_passport(&token).await.unwrap()["reason"],
            "revoked"
        );
        let again = app
            .end_mission(&p, &mission, false, Default::default())
            .await
            .unwrap();
        assert_eq!(again["transitioned"], false);
        let e = app
            .refresh_passport(&p, stack_app::parse_input(json!({"token": token})).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MissionEnded, "{}", e.message);
        let e = app
        .issue_passport(
            &p,
            stack_app::parse_input(json!({"agent_id": a, "mission_ids": [mission], "intent": {"summary": "x", "services": [], "will_delegate": false}})).unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::MissionEnded);
        assert!(
            e.message
                .contains(&format!("Mission {mission} is completed")),
            "{}",
            e.message
        );
    }
);

/// A clock the test moves by hand.
struct TestClock(std::sync::atomic::AtomicI64);

impl stack_app::Clock for TestClock {
    fn now(&self) -> stack_core::Timestamp {
        stack_core::Timestamp::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

both_backends!(
    a_missed_checkpoint_raises_one_security_event,
    |db: Db| async move {
        let start_ms = 1_800_000_000_000;
        let clock = Arc::new(TestClock(std::sync::atomic::AtomicI64::new(start_ms)));
        let app = App::new(
            Arc::new(db.clone()),
            clock.clone(),
            Arc::new(SystemRandom::new()),
            AppConfig::default(),
        );
        app.init_passport_keys(
            stack_crypto::aead::DataKey::generate(&SystemRandom::new()).unwrap(),
        )
        .await
        .unwrap();
        let p = operator(&app, "silence").await;
        let a = agent(&app, &p, "quiet").await;
        let (_, _token, jti) = start(&app, &p, &a).await;
        assert_eq!(
            app.sweep_checkpoint_silence().await.unwrap(),
            0,
            "not expired yet"
        );
        clock
            .0
            .store(start_ms + 301_000, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(app.sweep_checkpoint_silence().await.unwrap(), 1);
        assert_eq!(
            app.sweep_checkpoint_silence().await.unwrap(),
            0,
            "reported once"
        );
        let (events, total) = db
            .security_events_page(&p.operator_id, None, true, 0, 10)
            .await
            .unwrap();
        assert_eq!((events.len(), total), (1, 1));
        assert_eq!(events[0].kind, "checkpoint_silence");
        assert_eq!(events[0].passport_jti.as_deref(), Some(jti.as_str()));
        assert_eq!(verify(&app, &p).await["ok"], true);
    }
);

/// Proxied calls recorded by two writers on one SQLite file (as two server
/// processes would: each remembers the chain head it last committed),
/// interleaved with other writes that move the head: one unbroken chain and
/// every call metered exactly once. A remembered head that is no longer the
/// stored one must never fork or break the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_recorded_by_two_sqlite_writers_keep_one_chain() {
    use stack_app::NewAudit;
    use stack_app::proxy::ProxyStore as _;
    use stack_audit::{AuditDraft, Layer};

    let dir = tempfile::tempdir().unwrap();
    let config = DbConfig::Sqlite {
        path: dir.path().join("stack.db"),
    };
    let dbs = [
        Db::connect(&config).await.unwrap(),
        Db::connect(&config).await.unwrap(),
    ];
    let apps = [app(&dbs[0]), app(&dbs[1])];
    let p = operator(&apps[0], "a").await;
    let mut tasks = Vec::new();
    for (n, (db, app)) in dbs.iter().zip(apps.iter()).enumerate() {
        for w in 0..3 {
            let (db, p) = (db.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let audit = NewAudit {
                        entry_id: format!("aud_{n}_{w}_{i}"),
                        now: stack_core::Timestamp::from_millis(1_800_000_000_000),
                        draft: AuditDraft::new("agent", Layer::Proxy, "credential.proxy"),
                    };
                    db.record_call(&p.operator_id, audit, Some(("proxy", "2027-01")), None)
                        .await
                        .unwrap();
                }
            }));
        }
        // Other writes move the head behind the remembered one's back.
        let (app, p) = (app.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let cmd = RegisterAgent {
                    name: format!("n{n}-a{i}"),
                    ..RegisterAgent::default()
                };
                app.register_agent(&p, cmd).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for app in &apps {
        let v = verify(app, &p).await;
        assert_eq!(v["ok"], true, "{v}");
        // operator.create + 60 calls + 10 registrations
        assert_eq!(v["entries_checked"], 71, "{v}");
    }
    for db in &dbs {
        assert_eq!(
            db.usage(&p.operator_id, "proxy", "2027-01").await.unwrap(),
            60
        );
    }
    for db in dbs {
        db.close().await.unwrap();
    }
}

/// Calls recorded concurrently by one process on SQLite, and lone audit
/// entries (a denied call's) between them, each build on the head the
/// previous one committed: none of them is refused as stale and made
/// again. (Before the head was read under the writer connection, every
/// call that queued behind another had read the same head, failed its
/// batch and was written a second time, slowly: a queue behind one slow
/// commit turned into a stall of tens of milliseconds.) Records that queue
/// together commit in one batch, each built on the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_of_one_process_never_retry_on_sqlite() {
    use stack_app::proxy::ProxyStore as _;
    use stack_app::{CoreStore as _, NewAudit};
    use stack_audit::{AuditDraft, Layer};

    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbConfig::Sqlite {
        path: dir.path().join("stack.db"),
    })
    .await
    .unwrap();
    let app = app(&db);
    let p = operator(&app, "a").await;
    let call = |i: usize| NewAudit {
        entry_id: format!("aud_{i}"),
        now: stack_core::Timestamp::from_millis(1_800_000_000_000),
        draft: AuditDraft::new("agent", Layer::Proxy, "credential.proxy"),
    };
    // The first call reads the head (none remembered yet); the rest start
    // together and queue for the single writer connection. Every fourth
    // is a lone entry, as for a denied call.
    db.record_call(&p.operator_id, call(0), Some(("proxy", "2027-01")), None)
        .await
        .unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (1..=64)
        .map(|i| {
            let (db, p, start) = (db.clone(), p.clone(), Arc::clone(&start));
            let audit = call(i);
            tokio::spawn(async move {
                start.wait().await;
                if i % 4 == 0 {
                    let e = db.append_audit(&p.operator_id, audit).await.unwrap();
                    assert_eq!(e.entry_id, format!("aud_{i}"));
                } else {
                    db.record_call(&p.operator_id, audit, Some(("proxy", "2027-01")), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(db.stale_head_retries(), 0);
    // All 65 went through the owned writer (in however many batches).
    assert_eq!(db.group_commits().1, 65);
    let v = verify(&app, &p).await;
    assert_eq!(v["ok"], true, "{v}");
    // operator.create + 65 entries, 49 of them metered calls
    assert_eq!(v["entries_checked"], 66, "{v}");
    assert_eq!(
        db.usage(&p.operator_id, "proxy", "2027-01").await.unwrap(),
        49
    );
    db.close().await.unwrap();
}
