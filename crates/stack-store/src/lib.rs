//! STACK's persistence adapter: implements `stack_app::Store` on sea-orm.
//!
//! What it does: connects to the embedded default (one SQLite file in WAL
//! mode with `synchronous=FULL`) or to PostgreSQL, runs the versioned
//! migrations, and stores operators, keys, agents and the audit chain. Every
//! state change and its audit entry commit in one transaction.
//!
//! How the chain stays linear under concurrent writers: an append locks the
//! operator's row in `audit_heads` (`SELECT … FOR UPDATE` on PostgreSQL; on
//! SQLite every write transaction is `BEGIN IMMEDIATE`, which takes the
//! database write lock up front), seals the next entry from that head, inserts
//! it and moves the head, all inside the caller's transaction. A unique index
//! on `(operator_id, seq)` is the backstop: a fork cannot be committed.
//!
//! On SQLite a proxied call's record is committed by a connection of its
//! own on a thread it owns ([`owned`], rusqlite), and a second such thread
//! checkpoints the WAL, so that no commit has to.
//!
//! What it does not do: no business rules. It stores what `stack-app` decided.
#![forbid(unsafe_code)]

mod convert;
pub mod entity;
mod intents;
pub mod migration;
mod oauth;
mod owned;
mod passports;
mod scan;
mod services;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, SqlErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use stack_app::agents::Agent;
use stack_app::audit::{AuditFilter, AuditRange};
use stack_app::operators::{ApiKeyRecord, Operator};
use stack_app::ports::AgentChange;
use stack_app::{CoreStore, NewAudit};
use stack_audit::{AuditEntry, ChainHead};
use stack_core::{Error, Result, Secret};

use crate::entity::{agent, api_key, audit_entry, audit_head, operator};

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DbConfig {
    /// One SQLite file (created if missing).
    Sqlite { path: PathBuf },
    /// A `postgres://` URL (may carry a password, hence the redacting type).
    Postgres { url: Secret<String> },
}

/// A connected database.
#[derive(Clone)]
pub struct Db {
    /// Reads (and, on PostgreSQL, writes).
    conn: DatabaseConnection,
    /// Writes. On SQLite a pool of exactly one connection: writers queue in
    /// the pool, in order, instead of meeting `SQLITE_BUSY` and sleeping in
    /// SQLite's busy handler (1, 2, 5, 10 … 100 ms steps), which put tens of
    /// milliseconds on the tail of concurrent writes. On PostgreSQL the same
    /// pool as `conn`.
    writer: DatabaseConnection,
    /// SQLite: whose turn it is to hold SQLite's write lock, this
    /// process's sqlx writer or the owned writer ([`owned`]). Every write
    /// takes it first ([`Db::write_txn`], [`Db::write_conn`], and the owned
    /// writer's thread for each batch it commits), so neither meets the
    /// other's lock (it would meet `SQLITE_BUSY` and sleep in the busy
    /// handler); they queue here, in order. (One exception, on an error
    /// path: a sqlx transaction dropped without commit is rolled back by
    /// sqlx's worker thread just after its turn is given up, so the next
    /// writer can meet that rollback's lock for a moment and wait in the
    /// busy handler.) `None` on PostgreSQL.
    ///
    /// It is a mutex of STACK's own, not the sqlx writer connection itself
    /// (as until Round 10 of the proxy benchmark): sqlx pings a SQLite
    /// connection on its worker thread every time it goes back to its pool,
    /// which cost each proxied call two more thread wake-ups and made the
    /// next record wait for the ping (`docs/benchmarks.md`, proxy, Round 10).
    turn: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    backend: DatabaseBackend,
    /// SQLite: the chain head this process last wrote, per operator, so
    /// that a proxied call's record need not read it first. Read and moved
    /// only in the write turn (`turn`), so proxied calls and lone entries
    /// of this process never build on the same head. A record in the owned
    /// writer's batch moves it as it is built, so that the next record of
    /// the same batch builds on it, and forgets it if its writes do not
    /// commit. Still only a hint: operations that append an entry inside
    /// their own transaction do not move it, and another process may write
    /// the same file; the write that uses it moves the head only if the
    /// stored head is still this one, and falls back to reading it when
    /// not.
    heads: std::sync::Arc<HeadMemory>,
    /// How many records found the remembered head moved and were made
    /// again (see [`Db::stale_head_retries`]).
    stale_heads: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// SQLite: the write connection on a thread of STACK's own that
    /// commits proxied calls' records ([`owned`]). `None` on PostgreSQL.
    owned: Option<owned::OwnedWriter>,
}

/// Remembered chain heads (see [`Db`]). Bounded: cleared when full.
#[derive(Debug, Default)]
struct HeadMemory(std::sync::Mutex<std::collections::HashMap<String, ChainHead>>);

impl HeadMemory {
    const CAPACITY: usize = 10_000;

    fn get(&self, operator_id: &str) -> Option<ChainHead> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(operator_id)
            .cloned()
    }

    fn put(&self, operator_id: &str, head: ChainHead) {
        let mut heads = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if heads.len() >= Self::CAPACITY && !heads.contains_key(operator_id) {
            heads.clear();
        }
        heads.insert(operator_id.to_owned(), head);
    }

    fn forget(&self, operator_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(operator_id);
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Logs a database error and returns a generic internal error: SQL text and
/// driver messages stay in the server log, never in a response.
fn db_err(e: DbErr) -> Error {
    tracing::error!(error = %e, "database error");
    Error::internal("database error")
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

impl Db {
    /// Connects and runs pending migrations.
    pub async fn connect(config: &DbConfig) -> Result<Self> {
        let conn = Self::pool(config, None).await?;
        let writer = match config {
            DbConfig::Sqlite { .. } => Self::pool(config, Some(1)).await?,
            DbConfig::Postgres { .. } => conn.clone(),
        };
        let backend = conn.get_database_backend();
        let turn = matches!(config, DbConfig::Sqlite { .. }).then(std::sync::Arc::default);
        let mut db = Self {
            conn,
            writer,
            turn,
            backend,
            heads: std::sync::Arc::default(),
            stale_heads: std::sync::Arc::default(),
            owned: None,
        };
        db.migrate().await?;
        if let DbConfig::Sqlite { path } = config {
            db.owned = Some(
                owned::OwnedWriter::open(path, SQLITE_WAL_AUTOCHECKPOINT_PAGES, db.turn.clone())
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot open the SQLite writer");
                        Error::new(
                            stack_core::ErrorCode::Unavailable,
                            "cannot connect to the database",
                        )
                    })?,
            );
        }
        Ok(db)
    }

    async fn pool(config: &DbConfig, size: Option<u32>) -> Result<DatabaseConnection> {
        let mut opts = match config {
            DbConfig::Sqlite { path } => {
                let mut o = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
                o.max_connections(size.unwrap_or(8))
                    .map_sqlx_sqlite_opts(|o| {
                        o.journal_mode(SqliteJournalMode::Wal)
                            .synchronous(SqliteSynchronous::Full)
                            .busy_timeout(SQLITE_BUSY_TIMEOUT)
                            .foreign_keys(true)
                            .create_if_missing(true)
                            .pragma(
                                "wal_autocheckpoint",
                                SQLITE_WAL_AUTOCHECKPOINT_PAGES.to_string(),
                            )
                    });
                // No ping before each use: the connection is in-process and
                // cannot be dropped by a peer, and sqlx's ping is a round
                // trip to the connection's worker thread before every query.
                o.test_before_acquire(false);
                o
            }
            DbConfig::Postgres { url } => {
                let mut o = ConnectOptions::new(url.expose().clone());
                // Ping only connections idle for 30 s (the ones a server,
                // proxy or firewall may have dropped), not every checkout:
                // the default costs a network round trip before each query.
                o.max_connections(size.unwrap_or(16))
                    .test_before_acquire_if_idle_for(Duration::from_secs(30));
                o
            }
        };
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        Database::connect(opts).await.map_err(|e| {
            tracing::error!(error = %e, "cannot connect to the database");
            Error::new(
                stack_core::ErrorCode::Unavailable,
                "cannot connect to the database",
            )
        })
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        migration::Migrator::up(&self.writer, None)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "migration failed");
                Error::internal("database migration failed")
            })
    }

    /// SQLite: how many proxied calls' records found the chain head this
    /// process remembered already moved and were written again after
    /// reading it (a second, slower transaction). An audit entry written
    /// in another operation's own transaction (once per such entry) or
    /// another process writing the same file moves it; concurrent proxied
    /// calls and lone entries (`append_audit`) of this process never do,
    /// for they read and move it in the write turn. A counter for tests
    /// and diagnostics; always 0 on PostgreSQL.
    pub fn stale_head_retries(&self) -> u64 {
        self.stale_heads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// SQLite: how many times the background checkpointer copied WAL
    /// frames into the database file (see [`owned`]). A counter for tests
    /// and diagnostics; always 0 on PostgreSQL.
    pub fn background_checkpoints(&self) -> u64 {
        self.owned
            .as_ref()
            .map_or(0, owned::OwnedWriter::checkpoints)
    }

    /// SQLite: how many batches the owned writer committed, and how many
    /// records (and lone entries) they held; the second over the first is
    /// the group commit's mean batch (see [`owned`]). A counter for tests
    /// and diagnostics; always `(0, 0)` on PostgreSQL.
    pub fn group_commits(&self) -> (u64, u64) {
        self.owned
            .as_ref()
            .map_or((0, 0), owned::OwnedWriter::commits)
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            DatabaseBackend::Sqlite => "sqlite",
            DatabaseBackend::Postgres => "postgres",
            _ => "other",
        }
    }

    /// The raw connection, for tests that tamper with rows on purpose.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Closes the connections: on SQLite the owned writer and checkpointer
    /// first, after the records already sent to them are committed.
    pub async fn close(self) -> Result<()> {
        if let Some(owned) = &self.owned {
            owned.close().await;
        }
        if self.backend == DatabaseBackend::Sqlite {
            self.writer.close().await.map_err(db_err)?;
        }
        self.conn.close().await.map_err(db_err)
    }

    /// A transaction that will write. On SQLite it takes the write turn
    /// (see [`Db::turn`]) and then the write lock at `BEGIN` (IMMEDIATE), so
    /// it can never fail later on a lock upgrade; both are held until it
    /// commits or is dropped.
    async fn write_txn(&self) -> Result<WriteTxn> {
        let turn = match &self.turn {
            Some(t) => Some(std::sync::Arc::clone(t).lock_owned().await),
            None => None,
        };
        let txn = match self.backend {
            DatabaseBackend::Sqlite => {
                self.writer
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..TransactionOptions::default()
                    })
                    .await
            }
            _ => self.writer.begin().await,
        };
        Ok(WriteTxn {
            txn: txn.map_err(db_err)?,
            _turn: turn,
        })
    }

    /// The writer connection for one statement outside a transaction, the
    /// write turn held (SQLite) for as long as the returned value lives.
    async fn write_conn(&self) -> WriteConn<'_> {
        let turn = match &self.turn {
            Some(t) => Some(t.lock().await),
            None => None,
        };
        WriteConn {
            conn: &self.writer,
            _turn: turn,
        }
    }
}

/// A write transaction holding the write turn (SQLite). Dereferences to
/// the transaction; dropping it rolls back and gives the turn up.
struct WriteTxn {
    // Declared first, so dropped (rolled back) before the turn is given up.
    txn: DatabaseTransaction,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// The writer connection, the write turn held (SQLite); see
/// [`Db::write_conn`].
struct WriteConn<'a> {
    conn: &'a DatabaseConnection,
    _turn: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl WriteConn<'_> {
    fn get(&self) -> &DatabaseConnection {
        self.conn
    }
}

/// Appends `audit` to `operator_id`'s chain inside `txn`.
async fn append_in(
    txn: &DatabaseTransaction,
    operator_id: &str,
    audit: NewAudit,
) -> Result<AuditEntry> {
    let (entry, writes) = append_writes(txn, operator_id, audit).await?;
    execute_batch(txn, writes).await?;
    Ok(entry)
}

/// Locks `operator_id`'s chain head inside `txn` and seals `audit` after
/// it; returns the entry and the two writes that append it (insert the
/// entry, move the head), for the caller to run, alone or batched with
/// its own writes.
async fn append_writes(
    txn: &DatabaseTransaction,
    operator_id: &str,
    audit: NewAudit,
) -> Result<(AuditEntry, Vec<Statement>)> {
    let locked = || {
        audit_head::Entity::find_by_id(operator_id.to_owned())
            .lock_exclusive()
            .one(txn)
    };
    let head = match locked().await.map_err(db_err)? {
        Some(head) => head,
        None => {
            // The operator's first entry: create the head row (a concurrent
            // first append may win the insert), then lock it.
            let genesis = ChainHead::genesis();
            let seed = audit_head::ActiveModel {
                operator_id: sea_orm::Set(operator_id.to_owned()),
                seq: sea_orm::Set(genesis.seq),
                hash: sea_orm::Set(genesis.hash.clone()),
                timestamp: sea_orm::Set(genesis.timestamp),
                last_entry_id: sea_orm::Set(String::new()),
            };
            audit_head::Entity::insert(seed)
                .on_conflict(
                    OnConflict::column(audit_head::Column::OperatorId)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await
                .map_err(db_err)?;
            locked()
                .await
                .map_err(db_err)?
                .ok_or_else(|| Error::internal("audit head row vanished inside its transaction"))?
        }
    };
    let head = ChainHead {
        seq: head.seq,
        hash: head.hash,
        timestamp: head.timestamp,
    };
    let (entry, insert, moved) =
        append_after(txn.get_database_backend(), operator_id, &head, audit, false);
    Ok((entry, vec![insert, moved]))
}

/// Seals `audit` after `head` and returns the entry and the two writes that
/// append it: insert the entry, move the head. `guarded`: the head moves
/// only if the stored head is still `head` (for a remembered head; the
/// caller treats a move that changed no row as a stale head).
fn append_after(
    backend: DatabaseBackend,
    operator_id: &str,
    head: &ChainHead,
    audit: NewAudit,
    guarded: bool,
) -> (AuditEntry, Statement, Statement) {
    let entry = stack_audit::seal(operator_id, head, audit.entry_id, audit.now, audit.draft);
    let insert = audit_entry::Entity::insert(convert::entry_to_row(&entry)).build(backend);
    let mut moved = audit_head::Entity::update_many()
        .col_expr(audit_head::Column::Seq, Expr::value(entry.seq))
        .col_expr(
            audit_head::Column::Hash,
            Expr::value(entry.entry_hash.clone()),
        )
        .col_expr(audit_head::Column::Timestamp, Expr::value(entry.timestamp))
        .col_expr(
            audit_head::Column::LastEntryId,
            Expr::value(entry.entry_id.clone()),
        )
        .filter(audit_head::Column::OperatorId.eq(operator_id));
    if guarded {
        moved = moved
            .filter(audit_head::Column::Seq.eq(head.seq))
            .filter(audit_head::Column::Hash.eq(head.hash.as_str()))
            .filter(audit_head::Column::Timestamp.eq(head.timestamp));
    }
    (entry, insert, moved.build(backend))
}

/// Runs `writes` in `txn`, in order. On SQLite they go to the connection's
/// worker thread as one `;`-separated batch (SQLite binds each statement's
/// `?` parameters in turn), one hand-off instead of one per statement; on
/// other backends one after another. The first failing statement stops the
/// batch and fails the call; the caller's transaction is then rolled back.
async fn execute_batch(txn: &DatabaseTransaction, writes: Vec<Statement>) -> Result<()> {
    match txn.get_database_backend() {
        DatabaseBackend::Sqlite if writes.len() > 1 => {
            let mut sql = String::new();
            let mut values = Vec::new();
            for w in writes {
                sql.push_str(&w.sql);
                sql.push_str(";\n");
                values.extend(w.values.map(|v| v.0).unwrap_or_default());
            }
            txn.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                sql,
                values,
            ))
            .await
            .map_err(db_err)?;
        }
        _ => {
            for w in writes {
                txn.execute_raw(w).await.map_err(db_err)?;
            }
        }
    }
    Ok(())
}

/// WAL frames after which a commit on SQLite also checkpoints the WAL into
/// the database file (SQLite's default is 1,000). The checkpoint runs
/// inside that commit, so its call and the calls queued behind it wait for
/// it: with 1,000, one proxied call in ≈ 145 (a call writes ≈ 7 frames), a
/// share that sets the p99. With 10,000 it is one in ≈ 1,450, and pages
/// written again and again between two checkpoints (the chain head, the
/// meter, the indexes' last leaves) are copied once. The cost: a WAL file of
/// up to ≈ 40 MiB beside the database, and a longer checkpoint when one
/// runs (`docs/benchmarks.md`, proxy, Round 7).
const SQLITE_WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// How long a SQLite connection waits for another's write lock (the sqlx
/// pools' and the owned connections' alike).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

async fn commit(txn: WriteTxn) -> Result<()> {
    txn.txn.commit().await.map_err(db_err)
}

#[async_trait]
impl CoreStore for Db {
    async fn ping(&self) -> Result<()> {
        self.conn.ping().await.map_err(db_err)
    }

    async fn operator_count(&self) -> Result<u64> {
        operator::Entity::find()
            .count(&self.conn)
            .await
            .map_err(db_err)
    }

    async fn create_operator(
        &self,
        op: &Operator,
        key: &ApiKeyRecord,
        audit: NewAudit,
    ) -> Result<()> {
        let txn = self.write_txn().await?;
        operator::Entity::insert(convert::operator_to_row(op))
            .exec_without_returning(&*txn)
            .await
            .map_err(db_err)?;
        api_key::Entity::insert(convert::key_to_row(key))
            .exec_without_returning(&*txn)
            .await
            .map_err(db_err)?;
        append_in(&txn, &op.id, audit).await?;
        commit(txn).await
    }

    async fn get_operator(&self, operator_id: &str) -> Result<Option<Operator>> {
        Ok(operator::Entity::find_by_id(operator_id.to_owned())
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(convert::operator_from_row))
    }

    async fn find_api_key(&self, digest: &str) -> Result<Option<ApiKeyRecord>> {
        // `digest` is unique. `.all()`, not `.one()`: see `recorded_head`.
        api_key::Entity::find()
            .filter(api_key::Column::Digest.eq(digest))
            .filter(api_key::Column::RevokedAt.is_null())
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .next()
            .map(convert::key_from_row)
            .transpose()
    }

    async fn insert_agent(&self, a: &Agent, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        let inserted = agent::Entity::insert(convert::agent_to_row(a)?)
            .exec_without_returning(&*txn)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(
                    Error::conflict(format!("an agent named '{}' already exists", a.name))
                        .with_details(serde_json::json!({ "field": "name" })),
                );
            }
            Err(e) => return Err(db_err(e)),
        }
        append_in(&txn, &a.operator_id, audit).await?;
        commit(txn).await
    }

    async fn get_agent(&self, operator_id: &str, agent_id: &str) -> Result<Option<Agent>> {
        agent::Entity::find_by_id(agent_id.to_owned())
            .filter(agent::Column::OperatorId.eq(operator_id))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(convert::agent_from_row)
            .transpose()
    }

    async fn list_agents(&self, operator_id: &str) -> Result<Vec<Agent>> {
        agent::Entity::find()
            .filter(agent::Column::OperatorId.eq(operator_id))
            .order_by_asc(agent::Column::CreatedAt)
            .order_by_asc(agent::Column::Id)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(convert::agent_from_row)
            .collect()
    }

    async fn update_agent(
        &self,
        operator_id: &str,
        agent_id: &str,
        change: AgentChange,
    ) -> Result<Option<Agent>> {
        let txn = self.write_txn().await?;
        let Some(row) = agent::Entity::find_by_id(agent_id.to_owned())
            .filter(agent::Column::OperatorId.eq(operator_id))
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let current = convert::agent_from_row(row)?;
        let (next, audit) = change(current)?;
        let Some(audit) = audit else {
            // Nothing changed: nothing to write or record.
            return Ok(Some(next));
        };
        let mut am = convert::agent_to_row(&next)?;
        // The key columns never change through an update.
        am.id = sea_orm::Unchanged(next.id.clone());
        am.operator_id = sea_orm::Unchanged(operator_id.to_owned());
        match am.update(&*txn).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::conflict(format!(
                    "an agent named '{}' already exists",
                    next.name
                ))
                .with_details(serde_json::json!({ "field": "name" })));
            }
            Err(e) => return Err(db_err(e)),
        }
        append_in(&txn, operator_id, audit).await?;
        commit(txn).await?;
        Ok(Some(next))
    }

    async fn delete_agent(
        &self,
        operator_id: &str,
        agent_id: &str,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let res = agent::Entity::delete_many()
            .filter(agent::Column::Id.eq(agent_id))
            .filter(agent::Column::OperatorId.eq(operator_id))
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Ok(false);
        }
        append_in(&txn, operator_id, audit).await?;
        commit(txn).await?;
        Ok(true)
    }

    async fn append_audit(&self, operator_id: &str, audit: NewAudit) -> Result<AuditEntry> {
        // A proxied call's record without the call's other writes: on
        // SQLite one hand-off after the remembered head, which it keeps
        // current for the calls that follow.
        self.record(operator_id, audit, None, None).await
    }

    async fn list_audit(&self, operator_id: &str, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut q =
            audit_entry::Entity::find().filter(audit_entry::Column::OperatorId.eq(operator_id));
        if let Some(since) = f.since {
            q = q.filter(audit_entry::Column::Timestamp.gt(since));
        }
        if let Some(a) = &f.agent_id {
            q = q.filter(audit_entry::Column::AgentId.eq(a.as_str()));
        }
        if let Some(j) = &f.passport_jti {
            q = q.filter(audit_entry::Column::PassportJti.eq(j.as_str()));
        }
        q.order_by_desc(audit_entry::Column::Seq)
            .limit(f.limit)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(convert::entry_from_row)
            .collect()
    }

    async fn audit_in_order(
        &self,
        operator_id: &str,
        after_seq: i64,
        range: &AuditRange,
        limit: u64,
    ) -> Result<Vec<AuditEntry>> {
        let mut q = audit_entry::Entity::find()
            .filter(audit_entry::Column::OperatorId.eq(operator_id))
            .filter(audit_entry::Column::Seq.gt(after_seq));
        if let Some(from) = range.from {
            q = q.filter(audit_entry::Column::Timestamp.gte(from));
        }
        if let Some(to) = range.to {
            q = q.filter(audit_entry::Column::Timestamp.lt(to));
        }
        q.order_by_asc(audit_entry::Column::Seq)
            .limit(limit)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(convert::entry_from_row)
            .collect()
    }

    async fn recorded_head(&self, operator_id: &str) -> Result<Option<(ChainHead, String)>> {
        // A primary-key lookup, read with `.all()`: `.one()` adds `LIMIT ?`,
        // and the bundled SQLite (built with STAT4) treats a bound LIMIT as a
        // constant of the plan, so every execution re-prepares the statement
        // (~90k instructions; this read is on every `stack_audit_chain_head`).
        Ok(audit_head::Entity::find_by_id(operator_id.to_owned())
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .next()
            .filter(|h| h.seq > 0)
            .map(|h| {
                (
                    ChainHead {
                        seq: h.seq,
                        hash: h.hash,
                        timestamp: h.timestamp,
                    },
                    h.last_entry_id,
                )
            }))
    }
}

/// Scratch PostgreSQL databases for tests: created from an admin URL (any
/// database the user may connect to) and dropped afterwards.
pub mod scratch {
    use sea_orm::{ConnectionTrait, Database};
    use stack_core::{Error, Result};

    fn checked(name: &str) -> Result<&str> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(name)
        } else {
            Err(Error::validation(
                "scratch database names are [a-z0-9_]{1,63}",
            ))
        }
    }

    async fn admin(url: &str, sql: String) -> Result<()> {
        let conn = Database::connect(url)
            .await
            .map_err(|e| Error::internal(format!("cannot connect to {url}: {e}")))?;
        conn.execute_unprepared(&sql)
            .await
            .map_err(|e| Error::internal(format!("{sql}: {e}")))?;
        conn.close()
            .await
            .map_err(|e| Error::internal(e.to_string()))
    }

    /// Runs `sql` (one or more statements, no results) on the database at
    /// `url`, SQLite or PostgreSQL: for tests that change a live database
    /// under a running server (e.g. to inject a storage fault).
    pub async fn execute(url: &str, sql: &str) -> Result<()> {
        admin(url, sql.to_owned()).await
    }

    /// Creates database `name` and returns a URL for it.
    pub async fn create(admin_url: &str, name: &str) -> Result<String> {
        let name = checked(name)?;
        admin(admin_url, format!("CREATE DATABASE {name}")).await?;
        Ok(url_for(admin_url, name))
    }

    /// Drops database `name`, disconnecting its sessions.
    pub async fn drop(admin_url: &str, name: &str) -> Result<()> {
        let name = checked(name)?;
        admin(
            admin_url,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await
    }

    /// `admin_url` with its database name replaced by `name`.
    pub fn url_for(admin_url: &str, name: &str) -> String {
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url, None), |(b, q)| (b, Some(q)));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn scratch() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DbConfig::Sqlite {
            path: dir.path().join("stack.db"),
        })
        .await
        .unwrap();
        db.writer
            .execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .await
            .unwrap();
        (dir, db)
    }

    fn sql(s: &str) -> Statement {
        Statement::from_string(DatabaseBackend::Sqlite, s)
    }

    fn insert(k: &str, n: i64) -> Statement {
        Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "INSERT INTO t (k, n) VALUES (?, ?)",
            [k.into(), n.into()],
        )
    }

    async fn rows(db: &Db) -> Vec<(String, i64)> {
        let q = sql("SELECT k, n FROM t ORDER BY k");
        db.writer
            .query_all_raw(q)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get("", "k").unwrap(), r.try_get("", "n").unwrap()))
            .collect()
    }

    use owned::Write;

    #[tokio::test]
    async fn every_sqlite_connection_checkpoints_after_the_configured_wal_frames() {
        let (_dir, db) = scratch().await;
        for conn in [&db.writer, &db.conn] {
            let row = conn
                .query_one_raw(sql("PRAGMA wal_autocheckpoint"))
                .await
                .unwrap()
                .unwrap();
            let pages: i64 = row.try_get_by_index(0).unwrap();
            assert_eq!(pages, i64::from(SQLITE_WAL_AUTOCHECKPOINT_PAGES));
            let row = conn
                .query_one_raw(sql("PRAGMA journal_mode"))
                .await
                .unwrap()
                .unwrap();
            let mode: String = row.try_get_by_index(0).unwrap();
            assert_eq!(mode, "wal");
        }
    }

    async fn one_shot(
        db: &Db,
        writes: Vec<owned::Write>,
    ) -> std::result::Result<(), owned::BatchError> {
        let owned = db.owned.as_ref().unwrap();
        owned.run(move || Some((writes, |_| ()))).await.map(|_| ())
    }

    #[tokio::test]
    async fn the_owned_writer_uses_the_same_durability_settings() {
        let (_dir, db) = scratch().await;
        let owned = db.owned.as_ref().unwrap();
        for (pragma, expected) in [
            ("journal_mode", "wal".to_owned()),
            ("synchronous", "2".to_owned()),
            ("foreign_keys", "1".to_owned()),
            (
                "wal_autocheckpoint",
                SQLITE_WAL_AUTOCHECKPOINT_PAGES.to_string(),
            ),
        ] {
            assert_eq!(owned.pragma(pragma).await.unwrap(), expected, "{pragma}");
        }
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_in_the_background_without_a_commit_doing_it() {
        let (_dir, db) = scratch().await;
        // Far below `wal_autocheckpoint`: no commit checkpoints.
        for n in 0..20 {
            one_shot(&db, vec![Write::plain(insert(&format!("k{n}"), n))])
                .await
                .unwrap();
        }
        let before = db.background_checkpoints();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db.background_checkpoints() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The frames are in the database file: a read that ignores the WAL
        // (an immutable open of the file alone) sees every row.
        let path = _dir.path().join("stack.db");
        let file = rusqlite::Connection::open_with_flags(
            format!("file:{}?immutable=1", path.display()),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let n: i64 = file
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 20);
    }

    #[tokio::test]
    async fn a_one_shot_batch_commits_all_or_nothing_and_leaves_no_transaction_open() {
        let (_dir, db) = scratch().await;
        // Parameters bind statement by statement.
        one_shot(
            &db,
            vec![Write::plain(insert("a", 1)), Write::plain(insert("b", 2))],
        )
        .await
        .unwrap();
        assert_eq!(rows(&db).await, [("a".into(), 1), ("b".into(), 2)]);

        // A guarded update that changes nothing fails the batch as stale;
        // the write before it is rolled back.
        let stale = vec![
            Write::plain(insert("c", 3)),
            Write::guarded(sql("UPDATE t SET n = 20 WHERE k = 'b' AND n = 99")),
            Write::plain(insert("d", 4)),
        ];
        let e = one_shot(&db, stale).await.unwrap_err();
        assert!(matches!(e, owned::BatchError::Stale), "{e}");
        assert_eq!(rows(&db).await.len(), 2);

        // It passes when the update changed its row.
        let fresh = vec![
            Write::guarded(sql("UPDATE t SET n = 20 WHERE k = 'b' AND n = 2")),
            Write::plain(insert("c", 3)),
        ];
        one_shot(&db, fresh).await.unwrap();
        assert_eq!(
            rows(&db).await,
            [("a".into(), 1), ("b".into(), 20), ("c".into(), 3)]
        );

        // A unique violation is stale too; any other failure is not, and
        // neither leaves a transaction open or the write lock held: the next
        // batches and a sea-orm transaction on the sqlx writer work.
        let e = one_shot(
            &db,
            vec![Write::plain(insert("e", 5)), Write::plain(insert("a", 9))],
        )
        .await
        .unwrap_err();
        assert!(matches!(e, owned::BatchError::Stale), "{e}");
        let e = one_shot(
            &db,
            vec![
                Write::plain(insert("e", 5)),
                Write::plain(sql("SELECT nope FROM t")),
            ],
        )
        .await
        .unwrap_err();
        assert!(matches!(e, owned::BatchError::Failed(_)), "{e}");
        one_shot(&db, vec![Write::plain(insert("e", 5))])
            .await
            .unwrap();
        let txn = db.write_txn().await.unwrap();
        txn.execute_raw(insert("f", 6)).await.unwrap();
        commit(txn).await.unwrap();
        assert_eq!(rows(&db).await.len(), 5);
    }

    #[tokio::test]
    async fn a_panicking_job_loses_its_answer_not_the_writer() {
        let (_dir, db) = scratch().await;
        let owned = db.owned.as_ref().unwrap();
        type Built = Option<(Vec<owned::Write>, fn(bool))>;
        let panics = owned.run(|| -> Built { panic!("a job that panics") }).await;
        assert!(matches!(panics, Err(owned::BatchError::Failed(_))));
        one_shot(&db, vec![Write::plain(insert("a", 1))])
            .await
            .unwrap();
        assert_eq!(rows(&db).await, [("a".into(), 1)]);
    }

    #[tokio::test]
    async fn the_owned_writer_waits_its_turn_behind_a_sqlx_write_transaction() {
        let (_dir, db) = scratch().await;
        // A sqlx write transaction holds the turn and SQLite's write lock.
        let txn = db.write_txn().await.unwrap();
        txn.execute_raw(insert("a", 1)).await.unwrap();
        let queued = db.clone();
        let record =
            tokio::spawn(
                async move { one_shot(&queued, vec![Write::plain(insert("b", 2))]).await },
            );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !record.is_finished(),
            "the record did not wait for the turn"
        );
        commit(txn).await.unwrap();
        record.await.unwrap().unwrap();
        assert_eq!(rows(&db).await, [("a".into(), 1), ("b".into(), 2)]);
        // And the other way round: a transaction begun while a record is
        // queued waits for it; a statement outside a transaction too.
        let txn = db.write_txn().await.unwrap();
        let queued = db.clone();
        let record =
            tokio::spawn(
                async move { one_shot(&queued, vec![Write::plain(insert("c", 3))]).await },
            );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let later = db.clone();
        let single = tokio::spawn(async move {
            later
                .write_conn()
                .await
                .get()
                .execute_raw(insert("d", 4))
                .await
                .map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!record.is_finished() && !single.is_finished());
        drop(txn);
        record.await.unwrap().unwrap();
        single.await.unwrap().unwrap();
        assert_eq!(rows(&db).await.len(), 4);
    }

    /// Records sent while the writer waits for the turn commit together,
    /// in one transaction; one that fails (stale, a unique key, a panic) is
    /// rolled back alone and the others are not.
    #[tokio::test]
    async fn records_queued_together_commit_in_one_batch_and_fail_alone() {
        let (_dir, db) = scratch().await;
        one_shot(&db, vec![Write::plain(insert("a", 1))])
            .await
            .unwrap();
        let before = db.group_commits();
        // A sqlx write transaction holds the turn: the writer takes the
        // first record and waits; the others queue behind it.
        let txn = db.write_txn().await.unwrap();
        let send = |writes: Vec<Write>| {
            let db = db.clone();
            tokio::spawn(async move { one_shot(&db, writes).await })
        };
        let ok_b = send(vec![Write::plain(insert("b", 2))]);
        let stale = send(vec![
            Write::plain(insert("x", 9)),
            Write::guarded(sql("UPDATE t SET n = 20 WHERE k = 'a' AND n = 99")),
        ]);
        let unique = send(vec![
            Write::plain(insert("y", 9)),
            Write::plain(insert("a", 9)),
        ]);
        let owned = db.owned.clone().unwrap();
        let panics = tokio::spawn(async move {
            type Built = Option<(Vec<owned::Write>, fn(bool))>;
            owned.run(|| -> Built { panic!("a job that panics") }).await
        });
        let ok_c = send(vec![
            Write::plain(insert("c", 3)),
            Write::guarded(sql("UPDATE t SET n = 10 WHERE k = 'a' AND n = 1")),
        ]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!ok_b.is_finished(), "the record did not wait for the turn");
        commit(txn).await.unwrap();
        ok_b.await.unwrap().unwrap();
        ok_c.await.unwrap().unwrap();
        let e = stale.await.unwrap().unwrap_err();
        assert!(matches!(e, owned::BatchError::Stale), "{e}");
        let e = unique.await.unwrap().unwrap_err();
        assert!(matches!(e, owned::BatchError::Stale), "{e}");
        let e = panics.await.unwrap().unwrap_err();
        assert!(matches!(e, owned::BatchError::Failed(_)), "{e}");
        assert_eq!(
            rows(&db).await,
            [("a".into(), 10), ("b".into(), 2), ("c".into(), 3)]
        );
        // The five went in one batch: the writer took the first, waited
        // for the turn, then the four sent meanwhile (the failed ones are
        // counted with their batch).
        let after = db.group_commits();
        assert_eq!(after.0 - before.0, 1, "{before:?} -> {after:?}");
        assert_eq!(after.1 - before.1, 5, "{before:?} -> {after:?}");
        // Nothing was left open: a sqlx write goes through.
        let txn = db.write_txn().await.unwrap();
        txn.execute_raw(insert("d", 4)).await.unwrap();
        commit(txn).await.unwrap();
        assert_eq!(rows(&db).await.len(), 4);
    }

    #[tokio::test]
    async fn close_commits_what_was_sent_and_closes_every_connection() {
        let (dir, db) = scratch().await;
        one_shot(&db, vec![Write::plain(insert("a", 1))])
            .await
            .unwrap();
        let clone = db.clone();
        db.close().await.unwrap();
        // The last connection to close checkpoints the WAL and removes it:
        // none of the owned ones was left open.
        assert!(!dir.path().join("stack.db-wal").exists());
        assert!(
            one_shot(&clone, vec![Write::plain(insert("b", 2))])
                .await
                .is_err()
        );
        let again = Db::connect(&DbConfig::Sqlite {
            path: dir.path().join("stack.db"),
        })
        .await
        .unwrap();
        assert_eq!(rows(&again).await, [("a".into(), 1)]);
    }

    #[tokio::test]
    async fn the_owned_writer_binds_values_as_sqlx_does() {
        let (_dir, db) = scratch().await;
        db.writer
            .execute_unprepared("CREATE TABLE v (i INTEGER, r REAL, s TEXT, b BLOB, z TEXT)")
            .await
            .unwrap();
        let row = Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "INSERT INTO v (i, r, s, b, z) VALUES (?, ?, ?, ?, ?)",
            [
                true.into(),
                1.5f64.into(),
                "x\u{e9}".into(),
                vec![0u8, 255].into(),
                sea_orm::Value::String(None),
            ],
        );
        one_shot(&db, vec![Write::plain(row)]).await.unwrap();
        let got = db
            .writer
            .query_one_raw(sql("SELECT typeof(i), i, r, s, hex(b), z IS NULL FROM v"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.try_get_by_index::<String>(0).unwrap(), "integer");
        assert_eq!(got.try_get_by_index::<i64>(1).unwrap(), 1);
        assert!((got.try_get_by_index::<f64>(2).unwrap() - 1.5).abs() < f64::EPSILON);
        assert_eq!(got.try_get_by_index::<String>(3).unwrap(), "x\u{e9}");
        assert_eq!(got.try_get_by_index::<String>(4).unwrap(), "00FF");
        assert!(got.try_get_by_index::<bool>(5).unwrap());
        // An unsigned value beyond SQLite's integers fails the batch.
        let big = Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "INSERT INTO v (i) VALUES (?)",
            [u64::MAX.into()],
        );
        let e = one_shot(&db, vec![Write::plain(big)]).await.unwrap_err();
        assert!(matches!(e, owned::BatchError::Failed(_)), "{e}");
    }
}
