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
//! **Group commit.** The records that queue while the thread waits for the
//! write turn or commits a batch are committed together, in the next
//! batch: one transaction, one flush, each record in a savepoint of its own
//! so that one that fails (a stale chain head, a unique key) is rolled back
//! alone. Without it a disk whose flush takes 3 ms could commit at most
//! about 330 records a second, however many calls arrived, and the queue
//! behind it grew without bound (`docs/benchmarks.md`, proxy, Round 12).
//! Nothing waits to fill a batch: a lone record commits at once.
//!
//! Durability is unchanged: the same file, WAL, `synchronous=FULL`; no
//! record is answered before the `COMMIT` that holds it returned.
//!
//! Only one writer of this process may hold SQLite's write lock at a time,
//! or the other meets `SQLITE_BUSY` and sleeps in the busy handler: the
//! thread takes the process's write turn, which every sqlx write takes too,
//! for each batch (see [`crate::Db`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use sea_orm::{Statement, Value};

/// The most records one batch commits; the rest wait for the next.
const MAX_BATCH: usize = 64;

/// Work for the owning thread; `Stop` ends it once the batch it joins is
/// done.
enum Job {
    Run(Work),
    Stop,
}

/// What a job did inside the batch's transaction: whether its writes
/// succeeded, and what to do once that is final (for writes that failed, as
/// soon as they are rolled back; for the others, after the `COMMIT`).
struct Ran {
    wrote: Result<(), BatchError>,
    settle: Settle,
}

/// Tells a job how its writes ended (and sends its answer).
type Settle = Box<dyn FnOnce(Result<(), BatchError>)>;

/// The write turn of the process (see [`crate::Db`]); `None`: no other
/// writer to wait for.
pub(crate) type Turn = Option<Arc<tokio::sync::Mutex<()>>>;

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
    /// Batches committed, and the records in them.
    commits: Arc<Commits>,
    /// The two threads, for [`OwnedWriter::close`] to wait for.
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

/// Counters of the owning thread (for tests and benchmarks).
#[derive(Debug, Default)]
struct Commits {
    batches: AtomicU64,
    records: AtomicU64,
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Why a batch did not commit.
#[derive(Debug, Clone)]
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

/// One statement of a batch. `guarded`: the job fails as
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
    /// migrated) with the same settings as they use, on a new thread that
    /// takes `turn` for every batch it commits.
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
    pub(crate) fn open(path: &Path, wal_autocheckpoint: u32, turn: Turn) -> Result<Self, String> {
        let conn = connect(path, wal_autocheckpoint)?;
        conn.set_prepared_statement_cache_capacity(32);
        let (jobs, queue) = mpsc::channel::<Job>();
        let commits = Arc::<Commits>::default();
        let counted_commits = Arc::clone(&commits);
        let writer = std::thread::Builder::new()
            .name("stack-sqlite-writer".into())
            .spawn(move || {
                let conn = conn;
                while let Ok(Job::Run(first)) = queue.recv() {
                    // The write turn: a sqlx write of this process that
                    // holds it finishes first. Records sent meanwhile join
                    // this batch.
                    let held = turn.as_ref().map(|t| t.blocking_lock());
                    let mut batch = vec![first];
                    let mut stop = false;
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(Job::Run(job)) => batch.push(job),
                            Ok(Job::Stop) => {
                                stop = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    commit_batch(&conn, batch, &counted_commits);
                    drop(held);
                    if stop {
                        break;
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
            commits,
            threads: Arc::new(Mutex::new(vec![writer, checkpointing_thread])),
        })
    }

    /// How many background checkpoints copied frames.
    pub(crate) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// (batches committed, jobs in them).
    pub(crate) fn commits(&self) -> (u64, u64) {
        (
            self.commits.batches.load(Ordering::Relaxed),
            self.commits.records.load(Ordering::Relaxed),
        )
    }

    /// Stops both threads once the jobs already sent have run, and waits
    /// for them, so their connections are closed when this returns. Later
    /// jobs fail (`the SQLite writer thread has stopped`). Idempotent.
    pub(crate) async fn close(&self) {
        let _ = self.jobs.send(Job::Stop);
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

    /// Runs `build`'s writes in the next batch on the owning thread (see
    /// the module's doc), in the process's write turn. `build` runs there,
    /// after the writes of the jobs before it in the same batch; `None`
    /// writes nothing (`Ok(None)`). The first failing statement stops the
    /// job, whose writes are rolled back. `finish` is told whether they
    /// committed once that is final, on the owning thread, before the
    /// answer is sent, and its result is the answer: at once when they
    /// failed (before any later job of the batch is built), after the
    /// batch's `COMMIT` when they did not. So what a later job's `build`
    /// reads from memory that a committed write changes (a remembered chain
    /// head) must be changed by `build` itself, and undone by `finish(false)`.
    ///
    /// Once sent (on the returned future's first poll), the job runs to the
    /// end whether or not the future is still awaited.
    pub(crate) async fn run<B, C, T>(&self, build: B) -> Result<Option<T>, BatchError>
    where
        B: FnOnce() -> Option<(Vec<Write>, C)> + Send + 'static,
        C: FnOnce(bool) -> T + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = move |conn: &rusqlite::Connection| -> Ran {
            let Some((writes, finish)) = build() else {
                return Ran {
                    wrote: Ok(()),
                    settle: Box::new(move |_| {
                        let _ = answer.send(Ok(None));
                    }),
                };
            };
            Ran {
                wrote: execute(conn, writes),
                settle: Box::new(move |done: Result<(), BatchError>| {
                    let out = finish(done.is_ok());
                    let _ = answer.send(done.map(|()| Some(out)));
                }),
            }
        };
        self.send(Job::Run(Box::new(job)), answered).await
    }

    async fn send<T>(
        &self,
        job: Job,
        answered: tokio::sync::oneshot::Receiver<Result<T, BatchError>>,
    ) -> Result<T, BatchError> {
        self.jobs
            .send(job)
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
    /// A setting of the owned connection, as text (read in a batch).
    pub(crate) async fn pragma(&self, name: &'static str) -> Result<String, BatchError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = move |conn: &rusqlite::Connection| -> Ran {
            let value = conn
                .pragma_query_value(None, name, |r| r.get::<_, SqlValue>(0))
                .map(|v| match v {
                    SqlValue::Integer(n) => n.to_string(),
                    SqlValue::Text(s) => s,
                    other => format!("{other:?}"),
                })
                .map_err(|e| BatchError::Failed(e.to_string()));
            Ran {
                wrote: Ok(()),
                settle: Box::new(move |_| {
                    let _ = answer.send(value);
                }),
            }
        };
        self.send(Job::Run(Box::new(job)), answered).await
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

/// A job's work, as the owning thread runs it.
type Work = Box<dyn FnOnce(&rusqlite::Connection) -> Ran + Send>;

/// Runs `jobs` in one transaction (`BEGIN IMMEDIATE` … `COMMIT`), each in a
/// savepoint of its own when there are several, and settles each (see
/// [`OwnedWriter::run`]). A batch that commits is counted in `commits`
/// before any job is told.
///
/// A job that fails or panics is rolled back alone (with the whole
/// transaction when it is the only one). Should the transaction itself
/// fail (`BEGIN`, a savepoint's own statement, `COMMIT`), every job that
/// wrote is told so and the rest are dropped unrun, which their callers see
/// as an error.
fn commit_batch(conn: &rusqlite::Connection, jobs: Vec<Work>, commits: &Commits) {
    if let Err(e) = step(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "cannot begin a SQLite write batch");
        return;
    }
    let alone = jobs.len() == 1;
    let records = jobs.len() as u64;
    let mut wrote: Vec<Settle> = Vec::with_capacity(jobs.len());
    let mut broken: Option<BatchError> = None;
    for job in jobs {
        if !alone && let Err(e) = step(conn, "SAVEPOINT record") {
            broken = Some(BatchError::Failed(e.to_string()));
            break;
        }
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
        let (error, settle) = match ran {
            Ok(Ran {
                wrote: Ok(()),
                settle,
            }) => {
                if !alone && let Err(e) = step(conn, "RELEASE record") {
                    wrote.push(settle);
                    broken = Some(BatchError::Failed(e.to_string()));
                    break;
                }
                wrote.push(settle);
                continue;
            }
            Ok(Ran {
                wrote: Err(e),
                settle,
            }) => (e, Some(settle)),
            // Its answer is lost (its caller gets an error), not the batch.
            Err(_) => {
                tracing::error!("a SQLite write job panicked");
                (BatchError::Failed("the write job panicked".into()), None)
            }
        };
        // Roll the job's writes back before it is told, and before the
        // next job is built.
        let undone = if alone {
            step(conn, "ROLLBACK")
        } else {
            step(conn, "ROLLBACK TO record").and_then(|()| step(conn, "RELEASE record"))
        };
        if let Some(settle) = settle {
            settle_quietly(settle, Err(error));
        }
        if alone {
            if let Err(e) = undone {
                tracing::error!(error = %e, "cannot roll back a SQLite write batch");
            }
            return;
        }
        if let Err(e) = undone {
            broken = Some(BatchError::Failed(e.to_string()));
            break;
        }
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => step(conn, "COMMIT").map_err(|e| BatchError::Failed(e.to_string())),
    };
    if outcome.is_err()
        && !conn.is_autocommit()
        && let Err(e) = step(conn, "ROLLBACK")
    {
        tracing::error!(error = %e, "cannot roll back a SQLite write batch");
    }
    if outcome.is_ok() {
        commits.batches.fetch_add(1, Ordering::Relaxed);
        commits.records.fetch_add(records, Ordering::Relaxed);
    }
    for settle in wrote {
        settle_quietly(settle, outcome.clone());
    }
}

/// Tells a job how its writes ended; a panic there loses its answer only.
fn settle_quietly(settle: Settle, outcome: Result<(), BatchError>) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| settle(outcome))).is_err() {
        tracing::error!("a SQLite write job panicked");
    }
}

/// One statement without parameters or rows (transaction control).
fn step(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
}

/// A unique key met is [`BatchError::Stale`]; anything else is `Failed`.
fn failed(e: rusqlite::Error) -> BatchError {
    match e.sqlite_error_code() {
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
    }
}

/// A job's `writes`, in order, inside the open transaction; stops at the
/// first that fails.
fn execute(conn: &rusqlite::Connection, writes: Vec<Write>) -> Result<(), BatchError> {
    for w in writes {
        let values = w
            .statement
            .values
            .map(|v| v.0)
            .unwrap_or_default()
            .into_iter()
            .map(to_sql)
            .collect::<Result<Vec<_>, _>>()?;
        let changed = conn
            .prepare_cached(&w.statement.sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
            .map_err(failed)?;
        if w.guarded && changed != 1 {
            return Err(BatchError::Stale);
        }
    }
    Ok(())
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
