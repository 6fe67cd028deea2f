//! SQLite: a write connection on a thread STACK owns, for the one write in
//! every proxied call's path (its audit entry, meter unit and outcome).
//!
//! Why not sqlx's connection: sqlx runs each SQLite connection on a thread
//! of its own too, but speaks to it in messages, one per statement result,
//! each a possible wake-up of the async side. Here a record is one message
//! in and one answer out; the statements run back to back on the owning
//! thread, prepared once and cached, and whether a guarded statement
//! changed its row is read directly (sqlx's batch needed a failing `TEMP`
//! table insert to stop on it). The server's context switches per proxied
//! call fell by about a third (`docs/benchmarks.md`, proxy, Round 9).
//!
//! Durability is unchanged: the same file, WAL, `synchronous=FULL`; the
//! answer is sent only after `COMMIT` returned.
//!
//! Only one writer of this process may hold SQLite's write lock at a time,
//! or the other meets `SQLITE_BUSY` and sleeps in the busy handler: callers
//! hold the process's write turn, which every sqlx write takes too, while
//! their job runs here (see [`crate::sqlite_one_shot_with`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use sea_orm::{Statement, Value};

/// Work for the owning thread; `None` stops it.
type Job = Option<Box<dyn FnOnce(&mut rusqlite::Connection) + Send>>;

/// The handle: send jobs to the owning thread. Cheap to clone. Both threads
/// end, closing their connections, on [`OwnedWriter::close`] or once every
/// handle is dropped.
#[derive(Clone)]
pub(crate) struct OwnedWriter {
    jobs: mpsc::Sender<Job>,
    /// Sent on (or dropped) to stop the checkpointer.
    checkpointer: mpsc::Sender<()>,
    /// Background checkpoints that copied frames.
    checkpoints: Arc<AtomicU64>,
    /// The two threads, for [`OwnedWriter::close`] to wait for.
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Why a batch did not commit.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// A guarded statement changed no row, or an insert met a unique key:
    /// the batch was built on a chain head that has moved since.
    Stale,
    /// Anything else (logged by the caller; never shown to a client).
    Failed(String),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stale => f.write_str("the batch was built on a stale chain head"),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

/// One statement of a batch. `guarded`: the batch fails as
/// [`BatchError::Stale`] unless it changed exactly one row.
pub(crate) struct Write {
    statement: Statement,
    guarded: bool,
}

impl Write {
    pub(crate) fn plain(statement: Statement) -> Self {
        Self {
            statement,
            guarded: false,
        }
    }

    pub(crate) fn guarded(statement: Statement) -> Self {
        Self {
            statement,
            guarded: true,
        }
    }
}

impl OwnedWriter {
    /// Opens `path` (which the sqlx pools have already created and
    /// migrated) with the same settings as they use, on a new thread.
    ///
    /// Also starts the checkpointer: a second connection, on a thread of its
    /// own, that copies the WAL into the database file every
    /// [`CHECKPOINT_EVERY`] (`PRAGMA wal_checkpoint(PASSIVE)`: it never
    /// takes the write lock, so commits go on meanwhile). Without it the
    /// commit that crosses `wal_autocheckpoint` frames runs the checkpoint
    /// itself, and that call and every call queued behind it wait: 16 and
    /// 44 ms in one benchmark run on disk, which set that run's p99 at 300
    /// calls/s (`docs/benchmarks.md`, proxy, Round 9). `wal_autocheckpoint`
    /// stays set on every connection as the backstop should the checkpointer
    /// fall behind.
    pub(crate) fn open(path: &Path, wal_autocheckpoint: u32) -> Result<Self, String> {
        let conn = connect(path, wal_autocheckpoint)?;
        conn.set_prepared_statement_cache_capacity(32);
        let (jobs, queue) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("stack-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(Some(job)) = queue.recv() {
                    // A job that panics loses its own answer (its caller
                    // gets an error; an open transaction is rolled back as
                    // it unwinds), not the writer.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut conn));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("a SQLite write job panicked");
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let checkpointing = connect(path, wal_autocheckpoint)?;
        let checkpoints = Arc::<AtomicU64>::default();
        let counted = Arc::clone(&checkpoints);
        let (checkpointer, stop) = mpsc::channel::<()>();
        let checkpointing_thread = std::thread::Builder::new()
            .name("stack-sqlite-checkpoint".into())
            .spawn(move || {
                let mut last = (0, 0);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
                {
                    // (busy, frames in the WAL, frames of it in the database
                    // file): the last two start again at 0 when a writer
                    // restarts the WAL after a complete checkpoint.
                    let done = checkpointing.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok(now) => {
                            if now.1 > 0 && now != last {
                                counted.fetch_add(1, Ordering::Relaxed);
                            }
                            last = now;
                        }
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            jobs,
            checkpointer,
            checkpoints,
            threads: Arc::new(Mutex::new(vec![writer, checkpointing_thread])),
        })
    }

    /// How many background checkpoints copied frames.
    pub(crate) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Stops both threads once the jobs already sent have run, and waits
    /// for them, so their connections are closed when this returns. Later
    /// jobs fail (`the SQLite writer thread has stopped`). Idempotent.
    pub(crate) async fn close(&self) {
        let _ = self.jobs.send(None);
        let _ = self.checkpointer.send(());
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        // Joining blocks: off the async worker.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Runs `build`'s writes as one transaction on the owning thread:
    /// `BEGIN IMMEDIATE`, each statement in order, `COMMIT`. `build` runs
    /// there first; `None` writes nothing (`Ok(None)`). The first failing
    /// statement stops the batch, which is rolled back; `finish` is told
    /// whether the batch committed, on the owning thread, before the
    /// answer is sent, and its result is the answer.
    ///
    /// Once sent, the job runs to the end whether or not the returned
    /// future is still awaited.
    pub(crate) async fn run<B, C, T>(&self, build: B) -> Result<Option<T>, BatchError>
    where
        B: FnOnce() -> Option<(Vec<Write>, C)> + Send + 'static,
        C: FnOnce(bool) -> T,
        T: Send + 'static,
    {
        self.ask(move |conn| {
            let Some((writes, finish)) = build() else {
                return Ok(None);
            };
            let done = batch(conn, writes);
            let out = finish(done.is_ok());
            done.map(|()| Some(out))
        })
        .await
    }

    /// Runs `job` on the owning thread and returns its answer.
    async fn ask<J, T>(&self, job: J) -> Result<T, BatchError>
    where
        J: FnOnce(&mut rusqlite::Connection) -> Result<T, BatchError> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Some(Box::new(move |conn| {
                let _ = answer.send(job(conn));
            })))
            .map_err(|_| BatchError::Failed("the SQLite writer thread has stopped".into()))?;
        answered.await.map_err(|_| {
            BatchError::Failed(
                "the SQLite write job ended without an answer (it panicked, or the writer stopped)"
                    .into(),
            )
        })?
    }
}

#[cfg(test)]
impl OwnedWriter {
    /// A setting of the owned connection, as text.
    pub(crate) async fn pragma(&self, name: &'static str) -> Result<String, BatchError> {
        self.ask(move |conn| {
            conn.pragma_query_value(None, name, |r| r.get::<_, SqlValue>(0))
                .map(|v| match v {
                    SqlValue::Integer(n) => n.to_string(),
                    SqlValue::Text(s) => s,
                    other => format!("{other:?}"),
                })
                .map_err(|e| BatchError::Failed(e.to_string()))
        })
        .await
    }
}

/// A connection to `path` with the settings the sqlx pools use: WAL,
/// `synchronous=FULL` (a commit, and a checkpoint, is on disk before it
/// returns), foreign keys, the same busy timeout and autocheckpoint.
fn connect(path: &Path, wal_autocheckpoint: u32) -> Result<rusqlite::Connection, String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    conn.busy_timeout(crate::SQLITE_BUSY_TIMEOUT)
        .map_err(|e| e.to_string())?;
    for (pragma, value) in [
        ("journal_mode", "WAL".to_owned()),
        ("synchronous", "FULL".to_owned()),
        ("foreign_keys", "ON".to_owned()),
        ("wal_autocheckpoint", wal_autocheckpoint.to_string()),
    ] {
        conn.pragma_update(None, pragma, value)
            .map_err(|e| e.to_string())?;
    }
    Ok(conn)
}

/// `BEGIN IMMEDIATE`, `writes`, `COMMIT`; rolled back on the first failure.
fn batch(conn: &mut rusqlite::Connection, writes: Vec<Write>) -> Result<(), BatchError> {
    let failed = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation)
            if matches!(
                e.sqlite_error().map(|s| s.extended_code),
                Some(
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                )
            ) =>
        {
            BatchError::Stale
        }
        _ => BatchError::Failed(e.to_string()),
    };
    let txn = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(failed)?;
    for w in writes {
        let values = w
            .statement
            .values
            .map(|v| v.0)
            .unwrap_or_default()
            .into_iter()
            .map(to_sql)
            .collect::<Result<Vec<_>, _>>()?;
        let changed = txn
            .prepare_cached(&w.statement.sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
            .map_err(failed)?;
        if w.guarded && changed != 1 {
            // Dropping `txn` rolls it back.
            return Err(BatchError::Stale);
        }
    }
    txn.commit().map_err(failed)
}

/// A sea-query value as SQLite stores it (as sqlx's SQLite driver binds
/// it: integers, reals, text, blobs; JSON as text).
fn to_sql(v: Value) -> Result<SqlValue, BatchError> {
    fn or_null<T>(v: Option<T>, f: impl FnOnce(T) -> SqlValue) -> SqlValue {
        v.map_or(SqlValue::Null, f)
    }
    Ok(match v {
        Value::Bool(v) => or_null(v, |b| SqlValue::Integer(i64::from(b))),
        Value::TinyInt(v) => or_null(v, |n| SqlValue::Integer(n.into())),
        Value::SmallInt(v) => or_null(v, |n| SqlValue::Integer(n.into())),
        Value::Int(v) => or_null(v, |n| SqlValue::Integer(n.into())),
        Value::BigInt(v) => or_null(v, SqlValue::Integer),
        Value::TinyUnsigned(v) => or_null(v, |n| SqlValue::Integer(n.into())),
        Value::SmallUnsigned(v) => or_null(v, |n| SqlValue::Integer(n.into())),
        Value::Unsigned(v) => or_null(v, |n| SqlValue::Integer(n.into())),
        Value::BigUnsigned(Some(n)) => SqlValue::Integer(
            i64::try_from(n)
                .map_err(|_| BatchError::Failed("an unsigned value above i64::MAX".into()))?,
        ),
        Value::BigUnsigned(None) => SqlValue::Null,
        Value::Float(v) => or_null(v, |n| SqlValue::Real(n.into())),
        Value::Double(v) => or_null(v, SqlValue::Real),
        Value::String(v) => or_null(v, SqlValue::Text),
        Value::Char(v) => or_null(v, |c| SqlValue::Text(c.to_string())),
        Value::Bytes(v) => or_null(v, SqlValue::Blob),
        Value::Json(v) => or_null(v, |j| SqlValue::Text(j.to_string())),
        // Not printed: a value may be anything a row holds.
        _ => {
            return Err(BatchError::Failed(
                "a value of a type the SQLite writer does not bind".into(),
            ));
        }
    })
}
