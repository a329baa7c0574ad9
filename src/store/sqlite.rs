//! SQLite, the embedded default: one file, WAL journal, foreign keys on.
//!
//! SQLite allows one writer at a time. Rather than let concurrent write
//! transactions collide (`SQLITE_BUSY` when a reader upgrades to a writer),
//! writes go through exactly one connection, held by the store behind an
//! async mutex (so they queue in Roster, in arrival order, and no pool pings
//! it between two of them), and reads use a pool of read-only connections,
//! which WAL lets run beside the writer.
//!
//! Write transactions that queue for the writer share one SQLite transaction
//! (group commit). A commit appends every page the transaction changed to
//! the log, which cost about a third of a SCIM create's time with the
//! writer; pages changed by several transactions of a group are appended
//! once. Each transaction of the group runs in a savepoint of its own, so
//! one that fails or is dropped undoes only its own changes, and its
//! `commit` returns only once the group is committed: what it wrote is then
//! durable and visible to readers, as with a transaction of its own. The
//! group is committed by a task that queues for the writer when the group
//! begins, behind the transactions already waiting, which join the group;
//! later ones start the next group. A group whose commit fails, or which
//! SQLite rolled back by itself, fails the commit of every transaction in it.
//!
//! Copying the write-ahead log into the database (a checkpoint) happens
//! mostly beside the writer: a background task on its own connection keeps
//! copying the frames writers commit. SQLite's own checkpoint, which runs
//! inside whichever commit crossed its threshold and stalls every write queued
//! behind it, then finds only a short tail left to copy, and restarts the log,
//! which bounds it (and every reader's search of it).

use super::sql::{impl_tx, Held, SqlTx, *};
use super::sqlite_statistics as statistics;
use super::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Sqlite, SqliteConnection, SqlitePool, TransactionManager as _};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{watch, Mutex, OwnedMutexGuard, Semaphore};

impl_tx!(Sqlite);

impl Statements for Sqlite {
    // Several statements sharing the numbered parameters, sent at once.
    const INSERT_AUDIT_AND_EVENT: &'static str = "INSERT INTO audit_log (id, org_id, actor_kind, actor_id, action, \
        target, before_json, after_json, request_id, at, client_address) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11); \
        UPDATE organizations SET event_seq = event_seq + 1 WHERE id = $2; \
        INSERT INTO events (org_id, seq, id, kind, subject, data, at) \
        SELECT $2, event_seq, $12, $5, $6, COALESCE($8, $7), $10 FROM organizations WHERE id = $2";
    const USER_GROUPS: &'static str = "(SELECT json_group_array(json_array(g.id, g.display_name) \
        ORDER BY g.display_name_lc, g.id) FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id \
        WHERE gm.user_id = r.id)";
    const SENDS_STATEMENTS_TOGETHER: bool = true;
    const SKIP_LOCKED: &'static str = "";

    fn page_as_one_row(columns: &str, from_where: &str, order: &str) -> Option<String> {
        Some(format!("SELECT json_group_array(json_array({columns}) ORDER BY {order}) FROM {from_where}"))
    }
}

/// How often the checkpointer looks for new frames when it has caught up,
/// and when it is behind.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(100);
const CHECKPOINT_BEHIND: Duration = Duration::from_millis(5);

/// The log's size in frames (pages) at which a commit finishes the
/// checkpoint itself and the next write restarts the log: about 16 MB.
const WAL_AUTOCHECKPOINT_FRAMES: &str = "4000";

/// Rows `ANALYZE` reads of each index when a grown table is analyzed.
const ANALYSIS_LIMIT: u32 = 1000;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Writer>>,
    readers: Arc<Readers>,
    /// The checkpointer runs while any clone of the store is alive.
    _alive: Arc<()>,
    events: Arc<tokio::sync::Notify>,
    /// A shared lock on the database file, held while the store lives:
    /// `roster restore` swaps the file only when no process holds one.
    _in_use: Option<Arc<std::fs::File>>,
}

impl SqliteStore {
    /// Connects to the database `url` names. Commits are durable
    /// (`synchronous = FULL`: a commit is on disk when it returns, through
    /// a power loss); `synchronous=normal` in the URL's query trades that
    /// for speed (a power loss may drop the last commits, never corrupt).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let (url, synchronous) = synchronous_of(url)?;
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("invalid SQLite URL: {e}")))?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let mut writer = options
            .clone()
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_FRAMES)
            // A savepoint keeps the pages it changes in a journal of its own; in
            // memory, not a temporary file written with every group member.
            .pragma("temp_store", "memory")
            .connect()
            .await?;
        let rollbacks = Arc::new(AtomicU64::new(0));
        let counter = rollbacks.clone();
        writer.lock_handle().await?.set_rollback_hook(move || {
            counter.fetch_add(1, Ordering::AcqRel);
        });
        // A connection to a local file cannot drop: no health check on acquire.
        let checkpointer = SqlitePoolOptions::new().max_connections(1).connect_lazy_with(options.clone());
        let in_use = super::backup::hold_in_use(options.get_filename()).map_err(|e| StoreError::Other(e.into()))?;
        let readers = Readers::new(options.read_only(true), max_connections.max(1) as usize);
        let alive = Arc::new(());
        tokio::spawn(checkpoint_wal(checkpointer, Arc::downgrade(&alive)));
        let writer = Writer { conn: writer, rollbacks, group: None, ended: Ended::Settled, groups: 0 };
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            _alive: alive,
            events: Arc::default(),
            _in_use: in_use.map(Arc::new),
        })
    }

    /// A write transaction: a member of the writer's open group, or of one
    /// it begins.
    ///
    /// The statements that start it change the writer's state along with
    /// its connection's, so they run to the end in a task of their own even
    /// when the caller goes away (a client disconnects, a timeout passes):
    /// a member whose caller is gone is then dropped, which abandons it.
    async fn member(&self) -> StoreResult<GroupMember> {
        let mut writer = self.writer.clone().lock_owned().await;
        let store_writer = self.writer.clone();
        run_to_end(async move {
            if let Some(group) = writer.join().await? {
                commit_group_later(store_writer, group);
            }
            Ok(GroupMember { writer, committed: false })
        })
        .await?
    }

    /// The writer, with no group open on it, for statements of the store's
    /// own. The group's commit runs to the end, as in [`Self::member`].
    async fn writer_alone(&self) -> StoreResult<OwnedMutexGuard<Writer>> {
        let mut writer = self.writer.clone().lock_owned().await;
        run_to_end(async move {
            writer.finish_group().await;
            writer
        })
        .await
    }

    /// Runs `work` on the writer with no group open, to the end even when
    /// the caller goes away: a transaction it opens is always closed.
    async fn on_writer_alone<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> futures::future::BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let mut writer = self.writer_alone().await?;
        run_to_end(async move { work(&mut writer.conn).await }).await?
    }
}

/// The URL without Roster's own `synchronous` parameter, and the mode it
/// asks for (`full` when absent).
pub(super) fn synchronous_of(url: &str) -> StoreResult<(String, SqliteSynchronous)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), SqliteSynchronous::Full));
    };
    let mut synchronous = SqliteSynchronous::Full;
    let mut kept = Vec::new();
    for param in query.split('&') {
        match param.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("synchronous") => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "full" => SqliteSynchronous::Full,
                    "normal" => SqliteSynchronous::Normal,
                    other => {
                        return Err(StoreError::Other(anyhow::anyhow!(
                            "invalid SQLite URL: synchronous={other}: use full (the default) or normal"
                        )))
                    }
                };
            }
            _ => kept.push(param),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, synchronous))
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.readers.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// The read-only connections, each lent whole to one read or look-up.
///
/// Not sqlx's pool: it pings a connection every time one is returned (a
/// round trip to the connection's worker thread, and a task to run it),
/// which made a SCIM GET four round trips to worker threads where two do. A
/// returned reader goes straight back to the idle list; a read transaction
/// left unfinished is rolled back by a command queued on the connection's
/// worker, which runs before any later one.
struct Readers {
    options: SqliteConnectOptions,
    /// Idle connections, each with the generation it was opened in.
    idle: std::sync::Mutex<Vec<(u64, SqliteConnection)>>,
    permits: Arc<Semaphore>,
    /// How many may be lent at once.
    max: usize,
    /// Bumped when the planner's statistics change: a connection loads them
    /// when it opens, so older ones are closed as they come back.
    generation: AtomicU64,
}

/// A reader's transactions, as sqlx keeps them (so that a dropped one can
/// be rolled back without waiting).
type ReaderTx = <Sqlite as sqlx::Database>::TransactionManager;

/// How long a read waits for a connection before it fails.
const READER_WAIT: Duration = Duration::from_secs(30);

impl Readers {
    fn new(options: SqliteConnectOptions, max: usize) -> Self {
        let permits = Arc::new(Semaphore::new(max));
        Self { options, idle: std::sync::Mutex::new(Vec::new()), permits, max, generation: AtomicU64::new(0) }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(u64, SqliteConnection)>> {
        // Nothing panics while holding the lock; a poisoned list is still a list.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn acquire(self: &Arc<Self>) -> StoreResult<Reader> {
        let permit = tokio::time::timeout(READER_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::Other(anyhow::anyhow!("no database reader was free for {READER_WAIT:?}")))?
            .map_err(|_| StoreError::Other(anyhow::anyhow!("the store is closed")))?;
        let generation = self.generation.load(Ordering::Acquire);
        let idle = self.idle().pop();
        let conn = match idle {
            Some((opened, conn)) if opened == generation => conn,
            _ => self.options.connect().await?,
        };
        Ok(Reader { conn: Some(conn), generation, readers: self.clone(), _permit: permit })
    }

    /// Closes the idle connections, and the lent ones as they return.
    fn renew(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.idle().clear();
    }
}

/// A reader lent to one read or look-up, back to the idle list when dropped.
struct Reader {
    conn: Option<SqliteConnection>,
    generation: u64,
    readers: Arc<Readers>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Reader {
    fn conn_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("a lent reader holds its connection until dropped")
    }
}

#[async_trait]
impl Held<Sqlite> for Reader {
    fn conn(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("a lent reader holds its connection until dropped")
    }

    fn conn_mut(&mut self) -> &mut SqliteConnection {
        Reader::conn_mut(self)
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        let conn = self.conn_mut();
        if ReaderTx::get_transaction_depth(conn) > 0 {
            ReaderTx::commit(conn).await?;
        }
        Ok(())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        if ReaderTx::get_transaction_depth(&conn) > 0 {
            ReaderTx::start_rollback(&mut conn);
        }
        if self.generation == self.readers.generation.load(Ordering::Acquire) {
            self.readers.idle().push((self.generation, conn));
        }
    }
}

/// The one connection that writes, and the group transaction open on it.
struct Writer {
    conn: SqliteConnection,
    /// Transactions SQLite rolled back, counted by its rollback hook: the
    /// transaction of a group can end by itself (on a full disk, say).
    rollbacks: Arc<AtomicU64>,
    group: Option<Group>,
    /// How the last member ended, sent with the connection's next statement.
    ended: Ended,
    /// Groups begun so far, which numbers them.
    groups: u64,
}

/// How the last member of the open group ended. Each member runs in the
/// savepoint `member`, released or undone by the next statement the writer
/// runs, which saves a round trip per member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Nothing is left to do for an earlier member (none, or it is settled).
    Settled,
    /// Committed: its changes become the group's.
    Committed,
    /// Dropped unended: its changes are undone.
    Abandoned,
}

impl Ended {
    /// Ends the last member, then starts the next one's savepoint.
    fn then_member(self) -> &'static str {
        match self {
            Ended::Settled => "SAVEPOINT member",
            Ended::Committed => "RELEASE member; SAVEPOINT member",
            Ended::Abandoned => "ROLLBACK TO member; RELEASE member; SAVEPOINT member",
        }
    }

    /// Ends the last member, then commits the group.
    fn then_commit(self) -> &'static str {
        match self {
            Ended::Settled => "COMMIT",
            Ended::Committed => "RELEASE member; COMMIT",
            Ended::Abandoned => "ROLLBACK TO member; RELEASE member; COMMIT",
        }
    }
}

/// Write transactions sharing one SQLite transaction.
struct Group {
    id: u64,
    /// [`Writer::rollbacks`] when the group began.
    rollbacks: u64,
    /// The group's outcome, once committed or rolled back: `Err` holds why.
    outcome: watch::Sender<Option<Result<(), String>>>,
}

impl Writer {
    /// Starts a member transaction: joins the open group, or begins one
    /// (whose id is returned: its committer is the caller's to start).
    async fn join(&mut self) -> StoreResult<Option<u64>> {
        if self.group.as_ref().is_some_and(|g| self.rollbacks.load(Ordering::Acquire) != g.rollbacks) {
            self.finish_group().await;
        }
        if self.group.is_some() {
            let sql = std::mem::replace(&mut self.ended, Ended::Settled).then_member();
            if let Err(e) = sqlx::query(sql).execute(&mut self.conn).await {
                // Whether the last member's end took effect is unknown: the group commits nothing.
                self.fail_group(&e.to_string()).await;
                return Err(e.into());
            }
            return Ok(None);
        }
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE; SAVEPOINT member").execute(&mut self.conn).await {
            // The BEGIN may have taken effect without the savepoint.
            sqlx::query("ROLLBACK").execute(&mut self.conn).await.ok();
            return Err(e.into());
        }
        self.groups += 1;
        self.group = Some(Group {
            id: self.groups,
            rollbacks: self.rollbacks.load(Ordering::Acquire),
            outcome: watch::channel(None).0,
        });
        Ok(Some(self.groups))
    }

    /// Ends the open group, if any: commits it, or rolls it back when it
    /// cannot commit, and tells its members.
    async fn finish_group(&mut self) {
        let sql = std::mem::replace(&mut self.ended, Ended::Settled).then_commit();
        let Some(group) = &self.group else { return };
        if self.rollbacks.load(Ordering::Acquire) != group.rollbacks {
            return self.fail_group("SQLite rolled the transaction back").await;
        }
        match sqlx::query(sql).execute(&mut self.conn).await {
            Ok(_) => self.tell_group(Ok(())),
            Err(e) => self.fail_group(&e.to_string()).await,
        }
    }

    /// Rolls the open group back, telling its members why.
    async fn fail_group(&mut self, reason: &str) {
        tracing::error!(%reason, "a group of write transactions was not committed");
        self.ended = Ended::Settled;
        // Whatever the failure left open ends here.
        sqlx::query("ROLLBACK").execute(&mut self.conn).await.ok();
        self.tell_group(Err(reason.to_string()));
    }

    fn tell_group(&mut self, outcome: Result<(), String>) {
        if let Some(group) = self.group.take() {
            group.outcome.send_replace(Some(outcome));
        }
    }
}

/// Runs `work` in a task of its own, to the end even when the caller goes away.
async fn run_to_end<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> StoreResult<T> {
    tokio::spawn(work).await.map_err(|e| StoreError::Other(anyhow::anyhow!("a task on the writer failed: {e}")))
}

/// Commits group `id` once every transaction that queued for the writer
/// before this task has joined it and finished.
fn commit_group_later(writer: Arc<Mutex<Writer>>, id: u64) {
    tokio::spawn(async move {
        let mut writer = writer.lock().await;
        if writer.group.as_ref().is_some_and(|g| g.id == id) {
            writer.finish_group().await;
        }
    });
}

/// One write transaction: a member of the writer's open group.
struct GroupMember {
    writer: OwnedMutexGuard<Writer>,
    committed: bool,
}

#[async_trait]
impl Held<Sqlite> for GroupMember {
    fn conn(&self) -> &SqliteConnection {
        &self.writer.conn
    }

    fn conn_mut(&mut self) -> &mut SqliteConnection {
        &mut self.writer.conn
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        let Some(mut outcome) = self.writer.group.as_ref().map(|g| g.outcome.subscribe()) else {
            return Err(StoreError::Other(anyhow::anyhow!("a write transaction lost its group")));
        };
        self.committed = true;
        // The writer goes to the next transaction; this one waits for its group.
        drop(self);
        let ended = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
        match ended {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(reason))) => {
                Err(StoreError::Other(anyhow::anyhow!("the write transaction was not committed: {reason}")))
            }
            Ok(None) | Err(_) => {
                Err(StoreError::Other(anyhow::anyhow!("the store closed before the write transaction was committed")))
            }
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.writer.ended = if self.committed { Ended::Committed } else { Ended::Abandoned };
    }
}

/// Copies committed WAL frames into the database until the store is
/// dropped. A passive checkpoint waits for no one: frames a reader still
/// needs, or committed while it copied, are left for the next round, which
/// comes at once while rounds make progress.
async fn checkpoint_wal(pool: SqlitePool, alive: std::sync::Weak<()>) {
    let mut last = (0, 0);
    while alive.strong_count() > 0 {
        let pause = match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await
        {
            Ok((_, log, copied)) => {
                let progress = copied < log && (log, copied) != last;
                last = (log, copied);
                if progress {
                    CHECKPOINT_BEHIND
                } else {
                    CHECKPOINT_IDLE
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                CHECKPOINT_IDLE
            }
        };
        tokio::time::sleep(pause).await;
    }
    pool.close().await;
}

#[async_trait]
impl Store for SqliteStore {
    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::held(Box::new(self.member().await?)).telling(&self.events)))
    }

    fn events_committed(&self) -> Arc<tokio::sync::Notify> {
        self.events.clone()
    }

    async fn read(&self) -> StoreResult<Box<dyn Tx>> {
        let mut reader = self.readers.acquire().await?;
        ReaderTx::begin(reader.conn_mut(), None).await?;
        Ok(Box::new(SqlTx::held(Box::new(reader))))
    }

    async fn lookup(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::held(Box::new(self.readers.acquire().await?))))
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.on_writer_alone(|conn| {
            Box::pin(async move {
                sqlx::migrate!("./migrations/sqlite")
                    .run_direct(&mut *conn)
                    .await
                    .map_err(|e| StoreError::Other(e.into()))?;
                // Statistics before the first reader opens: a fresh database
                // plans as a large one from its first statement.
                let refresh = statistics::plan(&mut *conn).await?;
                Ok(statistics::apply(conn, &refresh, ANALYSIS_LIMIT).await?)
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.readers.acquire().await?.conn_mut()).await?;
        Ok(())
    }

    async fn optimize(&self) -> StoreResult<()> {
        // Counting runs on a reader; the writer is taken only for a change.
        let refresh = statistics::plan(self.readers.acquire().await?.conn_mut()).await?;
        if refresh.is_empty() {
            return Ok(());
        }
        tracing::info!(seeded = ?refresh.seed, analyzed = ?refresh.analyze, "refreshing planner statistics");
        self.on_writer_alone(move |conn| {
            Box::pin(async move { Ok(statistics::apply(conn, &refresh, ANALYSIS_LIMIT).await?) })
        })
        .await?;
        // Connections load statistics when they open.
        self.readers.renew();
        Ok(())
    }

    fn dialect(&self) -> crate::scim::filter::Dialect {
        crate::scim::filter::Dialect::Sqlite
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn connections(&self) -> Connections {
        let readers = &self.readers;
        let in_use = readers.max.saturating_sub(readers.permits.available_permits());
        Connections { in_use: in_use as f64, idle: readers.idle().len() as f64, max: readers.max as f64 }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scim::filter;
    use crate::scim::schema::ResourceKind;

    /// However fast writes come, the log is restarted once it holds about
    /// [`WAL_AUTOCHECKPOINT_FRAMES`]: it never grows without bound while the
    /// background checkpointer copies beside the writer (40 commits here
    /// write 2.5 times as many frames).
    #[tokio::test]
    async fn the_write_ahead_log_stays_bounded_under_steady_writes() {
        let (dir, store) = store_in_temp_dir().await;
        sqlx::query("CREATE TABLE blobs (b BLOB)")
            .execute(&mut store.writer_alone().await.unwrap().conn)
            .await
            .unwrap();
        let wal = dir.path().join("roster.db-wal");
        let frames: u64 = WAL_AUTOCHECKPOINT_FRAMES.parse().unwrap();
        let mut largest = 0;
        // 40 commits of ~250 pages each: 2.5 times the threshold, with reads between.
        for _ in 0..40 {
            let mut writer = store.writer_alone().await.unwrap();
            let mut tx = sqlx::Connection::begin(&mut writer.conn).await.unwrap();
            sqlx::query(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 250) \
                 INSERT INTO blobs SELECT zeroblob(4000) FROM c",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            drop(writer);
            let _: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM blobs")
                .fetch_one(store.readers.acquire().await.unwrap().conn_mut())
                .await
                .unwrap();
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        // A frame is a 4 KiB page and its 24-byte header. A commit whose
        // checkpoint found the checkpointer busy copying leaves the restart to
        // a later one, so the log may pass the threshold by a few commits.
        let bound = 2 * frames * (4096 + 24) + 32;
        assert!(largest <= bound, "the log reached {largest} bytes (bound {bound})");
    }

    /// A read transaction dropped unfinished gives its connection back at
    /// once; the rollback queued on the connection's worker runs before
    /// the next reader's first statement, which therefore sees what was
    /// committed since, not the dropped transaction's snapshot.
    #[tokio::test]
    async fn a_reader_dropped_inside_its_transaction_does_not_pass_its_snapshot_on() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("roster.db").display());
        // One reader, so the second read gets the first one's connection.
        let store = SqliteStore::connect(&url, 1).await.unwrap();
        store.migrate().await.unwrap();
        let count = "SELECT COUNT(*) FROM leases";
        let mut first = store.readers.acquire().await.unwrap();
        ReaderTx::begin(first.conn_mut(), None).await.unwrap();
        let (n,): (i64,) = sqlx::query_as(count).fetch_one(first.conn_mut()).await.unwrap();
        assert_eq!(n, 0);
        drop(first);
        sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES ('l', 'h', '2026-01-01')")
            .execute(&mut store.writer_alone().await.unwrap().conn)
            .await
            .unwrap();
        let mut second = store.readers.acquire().await.unwrap();
        let (n,): (i64,) = sqlx::query_as(count).fetch_one(second.conn_mut()).await.unwrap();
        assert_eq!(n, 1, "the second read saw the first one's snapshot");
    }

    /// A store on `roster.db` in a directory of its own, kept while the test runs.
    async fn store_in_temp_dir() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("roster.db").display());
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        (dir, store)
    }

    /// A migrated store in a directory of its own, kept while the test runs.
    async fn migrated_store() -> (tempfile::TempDir, SqliteStore) {
        let (dir, store) = store_in_temp_dir().await;
        store.migrate().await.unwrap();
        (dir, store)
    }

    fn user(email: &str) -> User {
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        User { id: Uuid::now_v7(), email: Email::parse(email).ok(), created_at: at }
    }

    async fn visible(store: &SqliteStore, user: &User) -> bool {
        let mut read = store.read().await.unwrap();
        read.find_user_by_email(user.email.as_ref().unwrap()).await.unwrap().is_some()
    }

    #[test]
    fn commits_are_durable_unless_the_url_says_otherwise() {
        let full = synchronous_of("sqlite://r.db?mode=rwc").unwrap();
        assert_eq!(full.0, "sqlite://r.db?mode=rwc");
        assert!(matches!(full.1, SqliteSynchronous::Full));
        let normal = synchronous_of("sqlite://r.db?synchronous=NORMAL&mode=rwc").unwrap();
        assert_eq!(normal.0, "sqlite://r.db?mode=rwc");
        assert!(matches!(normal.1, SqliteSynchronous::Normal));
        assert_eq!(synchronous_of("sqlite://r.db?synchronous=full").unwrap().0, "sqlite://r.db");
        let err = synchronous_of("sqlite://r.db?synchronous=off").unwrap_err().to_string();
        assert!(err.contains("synchronous=off"), "{err}");
    }

    #[tokio::test]
    async fn the_writer_commits_with_synchronous_full() {
        let (_dir, store) = store_in_temp_dir().await;
        let mode: (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut store.writer_alone().await.unwrap().conn)
            .await
            .unwrap();
        assert_eq!(mode.0, 2, "2 is FULL");
    }

    /// A write waits for the transaction's next statement, which sees it,
    /// while readers see it only once committed.
    #[tokio::test]
    async fn a_deferred_write_is_seen_by_its_transaction_and_committed_with_it() {
        let (_dir, store) = migrated_store().await;
        let new = user("new@x.com");
        let mut tx = store.begin().await.unwrap();
        tx.insert_user(&new).await.unwrap();
        assert!(!visible(&store, &new).await);
        let seen = tx.find_user_by_email(new.email.as_ref().unwrap()).await.unwrap();
        assert_eq!(seen.map(|u| u.id), Some(new.id));
        tx.commit().await.unwrap();
        assert!(visible(&store, &new).await);
    }

    /// Transactions that queue for the writer share a group. One that is
    /// dropped unended, or whose write failed, leaves nothing of its own
    /// and takes nothing from the others; each commit returns once what it
    /// wrote is visible to readers.
    #[tokio::test]
    async fn transactions_of_one_group_commit_or_fail_each_on_its_own() {
        let (_dir, store) = migrated_store().await;
        let taken = user("taken@x.com");
        let mut tx = store.begin().await.unwrap();
        tx.insert_user(&taken).await.unwrap();
        tx.commit().await.unwrap();
        let groups_before = store.writer.lock().await.groups;

        let transactions = 12;
        let mut tasks = Vec::new();
        for i in 0..transactions {
            let store = store.clone();
            let taken = user("TAKEN@x.com");
            tasks.push(tokio::spawn(async move {
                let mine = user(&format!("u{i}@x.com"));
                let mut tx = store.begin().await.unwrap();
                tx.insert_user(&mine).await.unwrap();
                let committed = match i % 4 {
                    // Dropped unended, as when a request goes away.
                    1 => false,
                    // A write refused when it reaches the database, with the
                    // next statement: the service returns the error, dropping
                    // the transaction.
                    2 => {
                        tx.insert_user(&taken).await.unwrap();
                        let refused = tx.find_user_by_email(mine.email.as_ref().unwrap()).await;
                        assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
                        false
                    }
                    // ... or with the commit.
                    3 => {
                        tx.insert_user(&taken).await.unwrap();
                        let refused = tx.commit().await;
                        assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
                        false
                    }
                    _ => {
                        tx.commit().await.unwrap();
                        assert!(visible(&store, &mine).await, "u{i} committed but is not visible");
                        true
                    }
                };
                (mine, committed)
            }));
        }
        for task in tasks {
            let (mine, committed) = task.await.unwrap();
            assert_eq!(visible(&store, &mine).await, committed, "{:?}", mine.email);
        }
        assert!(visible(&store, &taken).await);
        let groups = store.writer.lock().await.groups - groups_before;
        assert!(groups < transactions, "no two transactions shared a group ({groups} groups)");
    }

    /// Requests go away at any moment (a client disconnects, the request
    /// timeout passes), so a write transaction can be dropped at any await:
    /// while its `BEGIN` or its savepoint is in flight, mid-statement, or
    /// waiting for its group. None of that may leave the writer out of step
    /// with its connection: every transaction that runs to the end commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_cancelled_at_any_point_leave_the_writer_in_step() {
        let (_dir, store) = migrated_store().await;
        // Four writers, each trying transactions one after another with a
        // deadline that sweeps the length of a transaction, so that it
        // passes at every step of one; one try in four has no deadline.
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut committed = Vec::new();
                for i in 0..600u64 {
                    let mine = user(&format!("c{w}-{i}@x.com"));
                    let write = async {
                        let mut tx = store.begin().await?;
                        tx.insert_user(&mine).await?;
                        tx.find_user_by_email(mine.email.as_ref().unwrap()).await?;
                        tx.commit().await
                    };
                    let deadline = match i % 4 {
                        0 => std::time::Duration::from_secs(60),
                        _ => std::time::Duration::from_micros((i * 37 + w * 11) % 600),
                    };
                    match tokio::time::timeout(deadline, write).await {
                        Ok(Ok(())) => committed.push(mine),
                        Ok(Err(e)) => panic!("transaction {w}-{i} failed: {e:#}"),
                        Err(_) => {}
                    }
                }
                committed
            }));
        }
        let mut committed = Vec::new();
        for task in tasks {
            committed.extend(task.await.unwrap());
        }
        assert!(committed.len() >= 600, "{} committed", committed.len());
        for mine in &committed {
            assert!(visible(&store, mine).await, "{:?} committed but is not visible", mine.email);
        }
        let next = user("after@x.com");
        let mut tx = store.begin().await.unwrap();
        tx.insert_user(&next).await.unwrap();
        tx.commit().await.unwrap();
        assert!(visible(&store, &next).await);
    }

    /// A group whose commit fails fails the commit of every transaction in
    /// it, keeps none of their changes, and leaves the writer ready for the
    /// next. The first transaction breaks a foreign key checked only at the
    /// commit; the second, queued behind it, is in its group.
    #[tokio::test]
    async fn a_group_that_cannot_commit_fails_every_transaction_in_it() {
        let (_dir, store) = migrated_store().await;
        let (good, next) = (user("good@x.com"), user("next@x.com"));
        let breaking = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.member().await.unwrap();
                sqlx::query("PRAGMA defer_foreign_keys = ON").execute(tx.conn_mut()).await.unwrap();
                sqlx::query(
                    "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at) \
                     VALUES ('m', 'no-org', 'no-user', 'read', 'active', 'scim', '2026-01-01', '2026-01-01')",
                )
                .execute(tx.conn_mut())
                .await
                .unwrap();
                Box::new(tx).commit().await
            })
        };
        let queued = {
            let (store, good) = (store.clone(), good.clone());
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                tx.insert_user(&good).await.unwrap();
                tx.commit().await
            })
        };
        assert!(breaking.await.unwrap().is_err(), "the foreign key was not checked");
        assert!(queued.await.unwrap().is_err(), "a transaction of the failed group was reported committed");
        assert_eq!(store.writer.lock().await.groups, 1, "the two transactions were not in one group");
        assert!(!visible(&store, &good).await, "a change of the failed group stayed");

        let mut tx = store.begin().await.unwrap();
        tx.insert_user(&next).await.unwrap();
        tx.commit().await.unwrap();
        assert!(visible(&store, &next).await);
        let members: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM members")
            .fetch_one(store.readers.acquire().await.unwrap().conn_mut())
            .await
            .unwrap();
        assert_eq!(members.0, 0);
    }

    /// A write transaction dropped before it is committed (an error, or a
    /// request that went away) leaves nothing; the one after it commits.
    #[tokio::test]
    async fn a_write_transaction_dropped_unended_is_rolled_back_before_the_next_begins() {
        let (_dir, store) = migrated_store().await;
        let (dropped, kept) = (user("dropped@x.com"), user("kept@x.com"));

        let mut tx = store.begin().await.unwrap();
        tx.insert_user(&dropped).await.unwrap();
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        tx.insert_user(&kept).await.unwrap();
        tx.commit().await.unwrap();

        assert!(!visible(&store, &dropped).await, "the dropped write stayed");
        assert!(visible(&store, &kept).await, "the committed write is not visible");
    }

    /// Rebuilding `users` to let a user go without an email keeps every user
    /// and every member's reference to its user, and foreign keys still hold.
    #[tokio::test]
    async fn users_rebuilt_without_the_email_requirement_keep_their_members() {
        let (_dir, store) = store_in_temp_dir().await;
        let all = sqlx::migrate!("./migrations/sqlite");
        let rebuild = all.migrations.iter().position(|m| m.description == "users without email").unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        before.migrations = all.migrations[..rebuild].to_vec().into();
        let mut writer = store.writer_alone().await.unwrap();
        let conn = &mut writer.conn;
        before.run_direct(&mut *conn).await.unwrap();
        let seed = [
            "INSERT INTO organizations (id, name, plan, purchased_seats, seat_policy, created_at, updated_at) \
             VALUES ('o', 'o', 'enterprise_seat_yearly', 2, 'strict', '2026-01-01', '2026-01-01')",
            "INSERT INTO users (id, email, email_normalized, created_at) \
             VALUES ('u1', 'A@x.com', 'a@x.com', '2026-01-01'), ('u2', 'b@x.com', 'b@x.com', '2026-01-02')",
            "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at) \
             VALUES ('m1', 'o', 'u1', 'owner', 'active', 'admin', '2026-01-01', '2026-01-01'), \
             ('m2', 'o', 'u2', 'read', 'active', 'scim', '2026-01-02', '2026-01-02')",
        ];
        for sql in seed {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
        all.run_direct(&mut *conn).await.unwrap();

        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT m.id, u.email FROM members m JOIN users u ON u.id = m.user_id ORDER BY m.id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(rows, [("m1".into(), Some("A@x.com".into())), ("m2".into(), Some("b@x.com".into()))]);
        sqlx::query("INSERT INTO users (id, created_at) VALUES ('u3', '2026-01-03'), ('u4', '2026-01-03')")
            .execute(&mut *conn)
            .await
            .expect("users without an email");
        let orphan = "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at) \
             VALUES ('m3', 'o', 'nobody', 'read', 'active', 'scim', '2026-01-03', '2026-01-03')";
        assert!(sqlx::query(orphan).execute(&mut *conn).await.is_err(), "members still need a user");
        let duplicate = "INSERT INTO users (id, email, email_normalized, created_at) \
             VALUES ('u5', 'a@X.com', 'a@x.com', '2026-01-03')";
        assert!(sqlx::query(duplicate).execute(&mut *conn).await.is_err(), "emails are still unique");
    }

    /// Once statistics exist, an `emails.value` filter is answered from the
    /// `(org_id, value_lc)` index, not by probing every user of the organization.
    #[tokio::test]
    async fn email_filters_are_driven_by_the_email_index_once_analyzed() {
        let (_dir, store) = migrated_store().await;
        let seed = [
            "INSERT INTO organizations (id, name, plan, purchased_seats, seat_policy, created_at, updated_at) \
             VALUES ('o', 'o', 'enterprise_seat_yearly', 1, 'strict', '2026-01-01', '2026-01-01')",
            "INSERT INTO users (id, email, email_normalized, created_at) VALUES ('u', 'u@x.com', 'u@x.com', '2026-01-01')",
            "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at) \
             VALUES ('m', 'o', 'u', 'read', 'active', 'scim', '2026-01-01', '2026-01-01')",
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) \
             INSERT INTO scim_users (id, org_id, member_id, user_name, user_name_lc, active, resource, version, \
             created_at, updated_at) SELECT 'u' || i, 'o', 'm', 'n' || i, 'n' || i, TRUE, '{}', 1, '2026-01-01', \
             '2026-01-01' FROM c",
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) \
             INSERT INTO scim_user_emails (user_id, org_id, value_lc) SELECT 'u' || i, 'o', 'e' || i || '@x.com' FROM c",
        ];
        let mut writer = store.writer_alone().await.unwrap();
        let conn = &mut writer.conn;
        // One member row stands behind every user of this fixture.
        sqlx::query("DROP INDEX scim_users_member").execute(&mut *conn).await.unwrap();
        for sql in seed {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
        drop(writer);
        store.optimize().await.unwrap();
        let parsed = filter::parse(r#"emails.value eq "e42@x.com""#).unwrap();
        let frag = filter::to_sql(&parsed, ResourceKind::User, filter::Dialect::Sqlite, 2).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN SELECT r.id FROM scim_users r WHERE r.org_id = $1 AND {}", frag.sql);
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&sql)
            .bind("o")
            .bind("e42@x.com")
            .fetch_all(store.readers.acquire().await.unwrap().conn_mut())
            .await
            .unwrap();
        let steps: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
        assert!(steps.iter().any(|s| s.contains("scim_user_emails_value")), "{steps:?}");
        assert!(!steps.iter().any(|s| s.contains("scim_users_active")), "the users were scanned: {steps:?}");
    }
}
