//! The state database (SQLite with WAL by default, or PostgreSQL when `state.url` names
//! one): what has been seen, the events made from it and the outbox of deliveries. Every
//! SQL statement of clairo-sync lives in this module, so sources, dispatch and connectors
//! never know which backend holds their state (docs/architecture.md, section 2).
//!
//! One `Store`, two pools: each method runs its statement in the dialect of the pool it
//! has ([`on_pool!`], [`on_tx!`]), with the same binds and the same row mapping. The
//! SQLite statements are exactly those of the SQLite-only store, so SQLite pays nothing for
//! the second backend but a `match`.
//!
//! The outbox rule: an item, its event and one delivery per routed connector are written
//! in ONE transaction, so a crash either loses nothing or repeats a delivery whose outcome
//! was unknown.
//!
//! The SQL is kept per table, so a second backend can follow the same map: this file opens
//! the database (pool, pragmas, migrations) and holds the errors and the `meta` table;
//! `briefs.rs`, `conversations.rs` and `meetings.rs` the items; `outbox.rs` events,
//! deliveries and attempts; `claims.rs` claiming deliveries and recording attempts; `replay.rs` reading events again and queueing a
//! replay; `runs.rs` the sources' runs; `leases.rs` instances and who polls each source;
//! `retention.rs` pruning.

use std::path::Path;
use std::str::FromStr;
#[cfg(feature = "postgres")]
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::MigrateError;
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// Runs `$body` on the store's pool with `$sql` bound to the statement in that pool's
/// dialect and `$ex` to the pool (the body is compiled once per backend).
macro_rules! on_pool {
    ($store:expr, ($sqlite:expr, $pg:expr), |$sql:ident, $ex:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($ex) => {
                let $sql = $sqlite;
                #[cfg(not(feature = "postgres"))]
                let _ = $pg;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::store::Pool::Postgres($ex) => {
                let $sql = $pg;
                $body
            }
        }
    };
}

/// [`on_pool!`] inside a write transaction: `$ex` is the transaction's connection.
macro_rules! on_tx {
    ($tx:expr, ($sqlite:expr, $pg:expr), |$sql:ident, $ex:ident| $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(tx) => {
                let $sql = $sqlite;
                #[cfg(not(feature = "postgres"))]
                let _ = $pg;
                let $ex = &mut **tx;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::store::Tx::Postgres(tx) => {
                let $sql = $pg;
                let $ex = &mut **tx;
                $body
            }
        }
    };
}

mod briefs;
mod claims;
mod conversations;
mod leases;
pub mod meetings;
mod outbox;
mod packed;
mod replay;
mod retention;
mod runs;
mod wakers;

pub use briefs::BriefRecord;
pub use claims::{Claim, ClaimedDelivery, Finish, Lease};
pub use conversations::ConversationState;
pub use leases::{Holder, InstanceRow, delivery_owner, owner_instance};
pub use outbox::{
    AttemptRow, DeliveryFilter, DeliveryRow, FailedRoute, NewEvent, NextState, QueueStats,
};
use outbox::{insert_event, insert_events};
pub use replay::{RecordedItem, ReplayCount, StoredEvent};
pub use runs::SourceRun;
pub use wakers::Wakers;

/// How long a writer waits for another connection's write lock before failing. Writes are
/// short (one small transaction), so a wait this long means something is wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the pool: one. SQLite serializes writers anyway, and the daemon's
/// statements are short. Each connection is a thread with its own page and statement
/// caches (and glibc gives its thread a malloc arena of its own); more important for
/// CPU, under WAL every commit on one connection discards the page cache of every other,
/// whose next transaction then reads its pages back (about nine `pread`s per event with
/// two). One connection with a small cache ([`PAGE_CACHE_KIB`]) took about 5 % off the
/// CPU per event at the same idle memory (BENCHMARKS.md, issue 16). An operator's
/// `status` or `events` runs in its own process, with its own connection.
const MAX_CONNECTIONS: u32 = 1;

/// The connection's page cache, in KiB (SQLite's default is 2,000). The outbox's writes
/// touch few pages at each turn, and a poll's group of briefs more than any cache holds;
/// whatever the cache holds after a backlog stays resident while the daemon idles. 128
/// KiB measured the same CPU per event as 512 and 0.4 MiB less idle memory (BENCHMARKS.md).
const PAGE_CACHE_KIB: u32 = 128;

/// WAL pages written before a commit copies them into the database file (SQLite's default
/// is 1,000). A checkpoint costs two fsyncs and rewrites each page once however often it
/// changed: the outbox rewrites the same few pages with every event, so checkpointing
/// every ~40 MB instead of every ~4 MB saves most of that work (BENCHMARKS.md, issue 16).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database {path}: {source}; check that the directory exists and is writable by the clairo-sync user"
    )]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "no state yet: {path} does not exist; the service creates it at its first start (sudo systemctl enable --now clairo-sync)"
    )]
    NoState { path: String },
    #[error("{}", migrate_advice(.0))]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// PostgreSQL could not be reached or refused this client: said in plain words, with
    /// the URL (which holds no password) and what to check.
    #[error("{}", connect_advice(url, source, *had_password))]
    Connect {
        url: String,
        had_password: bool,
        #[source]
        source: sqlx::Error,
    },
    /// `state.url` in a binary built without PostgreSQL (validation says so first).
    #[error(
        "this build of clairo-sync has no PostgreSQL support; remove state.url to keep the state in SQLite, or install a build with the `postgres` feature"
    )]
    NoPostgres,
    #[error("state database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The worker's lease ran out and another worker claimed the delivery: what this
    /// worker learnt is stale, and the newer claim's record wins.
    #[error(
        "the lease on delivery {delivery_id} was lost to another worker; its outcome was not recorded (the lease ran out before the attempt finished: raise delivery.lease above the connectors' timeouts)"
    )]
    LeaseLost { delivery_id: i64 },
}

impl StoreError {
    /// Another worker holds the delivery now; nothing was written.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::LeaseLost { .. })
    }

    /// The database cannot record anything now: its disk is full, it is read-only, or
    /// (PostgreSQL) its server cannot be reached or refuses this client. New work must
    /// wait; what it would have recorded is polled or delivered again later.
    pub fn is_unavailable(&self) -> bool {
        if matches!(self, Self::Connect { .. }) || self.is_disk_full() {
            return true;
        }
        #[cfg(feature = "postgres")]
        if let Self::Sql(source) = self {
            return is_server_trouble(source);
        }
        false
    }

    /// The disk is full (or the file system read-only): new work must wait.
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            Self::Open { source, .. } | Self::Connect { source, .. } | Self::Sql(source) => source,
            Self::Migrate(
                MigrateError::Execute(source) | MigrateError::ExecuteMigration(source, _),
            ) => source,
            _ => return false,
        };
        is_full_or_read_only(source)
    }
}

/// SQLite's primary result codes for a full disk and a database it may not write
/// (<https://www.sqlite.org/rescode.html>). An extended code (`SQLITE_READONLY_DBMOVED`,
/// …) keeps its primary code in the low byte.
const SQLITE_READONLY: i32 = 8;
const SQLITE_FULL: i32 = 13;

/// Whether `error` says the disk is full or the database cannot be written: by SQLite's
/// result code (sqlx gives the extended code as text), or by the OS's error where sqlx met
/// the file system itself.
fn is_full_or_read_only(error: &sqlx::Error) -> bool {
    match error {
        #[cfg(feature = "postgres")]
        sqlx::Error::Database(database)
            if database
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some() =>
        {
            database
                .code()
                .is_some_and(|code| PG_FULL_OR_READ_ONLY.contains(&code.as_ref()))
        }
        sqlx::Error::Database(database) => database
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, SQLITE_READONLY | SQLITE_FULL)),
        sqlx::Error::Io(error) => matches!(
            error.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::ReadOnlyFilesystem
        ),
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A failed migration, with what to do: a database migrated by a newer binary is not
/// damaged, this binary is just too old for it.
fn migrate_advice(error: &MigrateError) -> String {
    match error {
        MigrateError::VersionMissing(version) => format!(
            "the state database's schema is newer than this clairo-sync (migration {version} is unknown to it): a newer version has used it; upgrade clairo-sync (every instance sharing one database must run the same version or newer)"
        ),
        other => format!(
            "cannot migrate the state database: {other}; restore a backup, or (SQLite) move the file aside to start afresh"
        ),
    }
}

/// Why PostgreSQL could not be used, in an operator's words.
fn connect_advice(url: &str, error: &sqlx::Error, had_password: bool) -> String {
    let code = match error {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    };
    let what = match (code.as_deref(), error) {
        (Some("28P01"), _) if had_password => {
            "PostgreSQL refused the password: check the file named by state.password_file (or the credential state-password) against the user's password on the server".to_owned()
        }
        (Some("28P01"), _) => {
            "PostgreSQL asks for a password and none was given: put it in the file named by state.password_file (or the systemd credential state-password)".to_owned()
        }
        (Some("28000"), _) => format!(
            "PostgreSQL does not let this user in from this host ({error}): add a line for it in the server's pg_hba.conf, or fix the user in state.url"
        ),
        (Some("25006"), _) => format!(
            "the database takes no writes ({error}): state.url names a standby, or default_transaction_read_only is on for the server, the database or the user; point state.url at the primary, or make the database writable again"
        ),
        (Some(code), _) if code.starts_with("53") => format!(
            "the server is out of resources ({error}): free disk space or connections on it"
        ),
        (Some(code), _) if code.starts_with("57") || code.starts_with("08") => format!(
            "PostgreSQL is shutting down or dropped the connection ({error}): check the server; the daemon retries"
        ),
        (Some("3D000"), _) => format!(
            "the database does not exist ({error}): create it (createdb -O USER DATABASE) or fix its name in state.url"
        ),
        (_, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => format!(
            "PostgreSQL cannot be reached ({error}): check that the server is running, that state.url's host and port are right, and that no firewall stands between"
        ),
        (_, sqlx::Error::Tls(_)) => format!(
            "the TLS handshake with PostgreSQL failed ({error}): check the server's certificate, or the sslmode in state.url"
        ),
        (_, sqlx::Error::Configuration(_)) => format!(
            "state.url cannot be used ({error}): write it as postgres://USER@HOST:PORT/DATABASE"
        ),
        _ => format!("PostgreSQL refused the connection: {error}"),
    };
    format!("cannot use the state database {url}: {what}")
}

/// Milliseconds since the Unix epoch, the store's unit of time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Connections to PostgreSQL: a server serves many clients at once, unlike SQLite's one
/// writer, and each instance's workers and pollers may write concurrently; four keep a
/// small instance's share of the server's `max_connections` (100 by default) small.
#[cfg(feature = "postgres")]
const PG_MAX_CONNECTIONS: u32 = 4;

/// PostgreSQL's SQLSTATEs for a full disk and a read-only server (a hot standby, or
/// `default_transaction_read_only`): new work waits, as on SQLite.
#[cfg(feature = "postgres")]
const PG_FULL_OR_READ_ONLY: [&str; 2] = ["53100", "25006"];

/// How long a connection to PostgreSQL may take: a server on a network answers within
/// this, and an operator's `status` or `check` should not hang for sqlx's 30 s default.
#[cfg(feature = "postgres")]
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the database's schema fits this binary (`check --online`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Every migration this binary knows is applied, and no other.
    Current,
    /// Migrations the daemon applies at its next start.
    Older { pending: usize },
    /// Migrations applied by a newer binary: this one cannot use the database.
    Newer { unknown: usize },
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
}

/// A write transaction on either backend.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    #[cfg(feature = "postgres")]
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    async fn commit(self) -> Result<()> {
        match self {
            Self::Sqlite(tx) => tx.commit().await?,
            #[cfg(feature = "postgres")]
            Self::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    async fn rollback(self) -> Result<()> {
        match self {
            Self::Sqlite(tx) => tx.rollback().await?,
            #[cfg(feature = "postgres")]
            Self::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// PostgreSQL: the server as errors name it.
    #[cfg(feature = "postgres")]
    server: Option<Arc<Server>>,
}

/// How errors name a PostgreSQL server: its URL without a password, and whether a
/// password was given (a refusal is worded by it).
#[cfg(feature = "postgres")]
struct Server {
    url: String,
    had_password: bool,
}

impl Store {
    /// The daemon's state where `[state]` says: the SQLite file (created if missing) or the
    /// PostgreSQL database; pending migrations applied.
    pub async fn open_state(
        backend: crate::config::StateBackend<'_>,
        password: Option<&str>,
    ) -> Result<Self> {
        match backend {
            crate::config::StateBackend::Sqlite(path) => Self::open(path).await,
            #[cfg(feature = "postgres")]
            crate::config::StateBackend::Postgres(url) => Self::connect(url, password).await,
            #[cfg(not(feature = "postgres"))]
            crate::config::StateBackend::Postgres(_) => {
                let _ = password;
                Err(StoreError::NoPostgres)
            }
        }
    }

    /// [`Store::open_state`] for an operator's command: nothing created, nothing migrated.
    pub async fn open_existing_state(
        backend: crate::config::StateBackend<'_>,
        password: Option<&str>,
        writable: bool,
    ) -> Result<Self> {
        match backend {
            crate::config::StateBackend::Sqlite(path) => Self::open_existing(path, writable).await,
            #[cfg(feature = "postgres")]
            crate::config::StateBackend::Postgres(url) => {
                Self::connect_existing(url, password).await
            }
            #[cfg(not(feature = "postgres"))]
            crate::config::StateBackend::Postgres(_) => {
                let _ = (password, writable);
                Err(StoreError::NoPostgres)
            }
        }
    }

    /// How many migrations this binary holds for `backend`'s kind of database.
    pub fn migrations_known(backend: crate::config::StateBackend<'_>) -> usize {
        match backend {
            crate::config::StateBackend::Sqlite(_) => {
                sqlx::migrate!("./migrations/sqlite").iter().count()
            }
            #[cfg(feature = "postgres")]
            crate::config::StateBackend::Postgres(_) => {
                sqlx::migrate!("./migrations/postgres").iter().count()
            }
            #[cfg(not(feature = "postgres"))]
            crate::config::StateBackend::Postgres(_) => 0,
        }
    }

    /// Compares the migrations applied to the database with those this binary holds.
    pub async fn schema(&self) -> Result<Schema> {
        let (known, applied): (Vec<i64>, Vec<i64>) = match &self.pool {
            Pool::Sqlite(pool) => {
                let known = sqlx::migrate!("./migrations/sqlite")
                    .iter()
                    .map(|migration| migration.version)
                    .collect();
                let exists: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(pool)
                .await?;
                let applied = if exists > 0 {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(pool)
                        .await?
                } else {
                    Vec::new()
                };
                (known, applied)
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let known = sqlx::migrate!("./migrations/postgres")
                    .iter()
                    .map(|migration| migration.version)
                    .collect();
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(pool)
                        .await?;
                let applied = if exists {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(pool)
                        .await?
                } else {
                    Vec::new()
                };
                (known, applied)
            }
        };
        let unknown = applied.iter().filter(|v| !known.contains(v)).count();
        let pending = known.iter().filter(|v| !applied.contains(v)).count();
        Ok(if unknown > 0 {
            Schema::Newer { unknown }
        } else if pending > 0 {
            Schema::Older { pending }
        } else {
            Schema::Current
        })
    }

    /// Opens (creating if missing) the state file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .pragma("cache_size", format!("-{PAGE_CACHE_KIB}"))
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The daemon and an operator's `status` may open a new file at the same moment:
        // switching a new file to WAL and migrating it are not covered by SQLite's busy
        // handler, so opening and migrating take turns under an flock. (flock and SQLite's
        // own fcntl locks do not interfere on Linux.)
        let guard = open_lock(path).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A ping is a round trip to the connection's thread (two thread wake-ups) and
            // tells nothing about a local file: not one before every checkout.
            .test_before_acquire(false)
            // After SQLITE_FULL (or an I/O error) SQLite rolls the transaction back itself;
            // the driver's ROLLBACK then fails and it still counts the connection as inside
            // a transaction, refusing every later BEGIN on it. Such a connection is closed
            // instead of pooled, so the store recovers once the disk has room again.
            .after_release(|connection, _| {
                Box::pin(async move {
                    // Outside a transaction (the driver's depth counter, no round trip) is
                    // the common case: nothing to wait for.
                    if !sqlx::Connection::is_in_transaction(connection) {
                        return Ok(true);
                    }
                    // The ping lets a rollback still queued on the connection finish first,
                    // so a healthy connection is not closed needlessly.
                    sqlx::Connection::ping(connection).await?;
                    Ok(!sqlx::Connection::is_in_transaction(connection))
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let migrated = sqlx::migrate!("./migrations/sqlite").run(&pool).await;
        drop(guard);
        migrated?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            #[cfg(feature = "postgres")]
            server: None,
        })
    }

    /// Connects to the PostgreSQL database at `url` (which holds no password: it comes
    /// apart, from `state.password_file` or the credential `state-password`) and applies
    /// pending migrations. Several instances may start at once: sqlx's migrator takes an
    /// advisory lock, so they take turns.
    #[cfg(feature = "postgres")]
    pub async fn connect(url: &str, password: Option<&str>) -> Result<Self> {
        let store = Self::connect_pool(url, password, PG_MAX_CONNECTIONS).await?;
        if let Pool::Postgres(pool) = &store.pool {
            sqlx::migrate!("./migrations/postgres").run(pool).await?;
        }
        Ok(store)
    }

    /// [`Store::connect`] for an operator's command: never migrates (the daemon's job).
    #[cfg(feature = "postgres")]
    pub async fn connect_existing(url: &str, password: Option<&str>) -> Result<Self> {
        Self::connect_pool(url, password, 1).await
    }

    /// The daemon's store on the PostgreSQL database at `url`, connecting to nothing yet:
    /// the daemon starts whether or not the server answers, and [`Store::prepare`] (retried
    /// until it succeeds) reaches it and migrates it. Fails only on a URL that cannot be
    /// used.
    #[cfg(feature = "postgres")]
    pub fn connect_later(url: &str, password: Option<&str>) -> Result<Self> {
        let options = pg_options(url, password)?;
        let pool = pg_pool_options(PG_MAX_CONNECTIONS).connect_lazy_with(options);
        Ok(Self::postgres(pool, url, password))
    }

    #[cfg(feature = "postgres")]
    async fn connect_pool(url: &str, password: Option<&str>, connections: u32) -> Result<Self> {
        let options = pg_options(url, password)?;
        let pool = pg_pool_options(connections)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(url),
                had_password: password.is_some(),
                source,
            })?;
        Ok(Self::postgres(pool, url, password))
    }

    #[cfg(feature = "postgres")]
    fn postgres(pool: PgPool, url: &str, password: Option<&str>) -> Self {
        Self {
            pool: Pool::Postgres(pool),
            server: Some(Arc::new(Server {
                url: redact_url(url),
                had_password: password.is_some(),
            })),
        }
    }

    /// PostgreSQL: the password for the connections made from now on (a reload re-reads
    /// `state.password_file`); the open ones keep theirs. Nothing on SQLite.
    pub fn set_password(&self, password: &str) {
        #[cfg(feature = "postgres")]
        if let Pool::Postgres(pool) = &self.pool {
            pool.set_connect_options((*pool.connect_options()).clone().password(password));
        }
        #[cfg(not(feature = "postgres"))]
        let _ = password;
    }

    /// Whether this is a PostgreSQL store (which the daemon watches: its server can go
    /// away and come back; a SQLite file cannot).
    pub fn is_server(&self) -> bool {
        match self.pool {
            Pool::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => true,
        }
    }

    /// PostgreSQL: reaches the server on a connection of its own (so the answer names the
    /// cause: refused, a wrong password, no such database, not the pool's timeout),
    /// applies pending migrations and checks that it takes a write. A server's trouble
    /// comes back as [`StoreError::Connect`] (worded per cause), a schema newer than this
    /// binary as [`StoreError::Migrate`]. Nothing to do on SQLite (opened at start).
    pub async fn prepare(&self) -> Result<()> {
        #[cfg(feature = "postgres")]
        if let Pool::Postgres(pool) = &self.pool {
            use sqlx::Connection as _;
            let options = pool.connect_options();
            let connected = tokio::time::timeout(
                PG_CONNECT_TIMEOUT,
                sqlx::postgres::PgConnection::connect_with(&options),
            )
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", PG_CONNECT_TIMEOUT.as_secs()),
                )))
            });
            let mut connection = connected.map_err(|source| self.server_error(source))?;
            let prepared = async {
                // `run_direct` is `run` on a connection of one's own (`run` through
                // `Acquire` makes this future not `Send` for every lifetime, and the
                // daemon spawns it).
                sqlx::migrate!("./migrations/postgres")
                    .run_direct(None, &mut connection, false)
                    .await
                    .map_err(|error| match error {
                        MigrateError::Execute(source)
                        | MigrateError::ExecuteMigration(source, _)
                            if is_server_trouble(&source) =>
                        {
                            self.server_error(source)
                        }
                        other => StoreError::Migrate(other),
                    })?;
                sqlx::query("INSERT INTO meta (key, value) VALUES ('last_write_check', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                    .bind(now_ms().to_string())
                    .execute(&mut connection)
                    .await
                    .map_err(|source| self.classify(source))?;
                Ok(())
            }
            .await;
            let _ = connection.close().await;
            return prepared;
        }
        Ok(())
    }

    /// PostgreSQL: whether the server takes no writes (a standby, or
    /// `default_transaction_read_only` set for the server, the database or the user), for
    /// `check --online`, which writes nothing. Never on SQLite.
    pub async fn read_only(&self) -> Result<bool> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(false),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let setting: String =
                    sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
                        .fetch_one(pool)
                        .await
                        .map_err(|source| self.classify(source))?;
                Ok(setting == "on")
            }
        }
    }

    /// A failed statement on PostgreSQL: the server's trouble worded as a connection
    /// error (what to fix), anything else as it is.
    #[cfg(feature = "postgres")]
    fn classify(&self, source: sqlx::Error) -> StoreError {
        if is_server_trouble(&source) {
            self.server_error(source)
        } else {
            StoreError::Sql(source)
        }
    }

    #[cfg(feature = "postgres")]
    fn server_error(&self, source: sqlx::Error) -> StoreError {
        let (url, had_password) = self.server.as_ref().map_or_else(
            || ("named by state.url".to_owned(), true),
            |server| (server.url.clone(), server.had_password),
        );
        StoreError::Connect {
            url,
            had_password,
            source,
        }
    }

    /// Opens the daemon's existing state for an operator's command (`status`,
    /// `deliveries`): never creates the file and never migrates it. Run from a root shell
    /// before the first start, creating it would leave a root-owned database the service
    /// cannot write; migrating is the daemon's job at its start. `writable` only for
    /// commands that change it (`deliveries retry`).
    pub async fn open_existing(path: &Path, writable: bool) -> Result<Self> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if !path.try_exists().unwrap_or(true) {
            return Err(StoreError::NoState {
                path: path.display().to_string(),
            });
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_error)?
            .filename(path)
            .create_if_missing(false)
            .read_only(!writable)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            #[cfg(feature = "postgres")]
            server: None,
        })
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// SQLite: writers take the lock at BEGIN, so two writers queue on the busy timeout
    /// instead of one failing at once when it upgrades a read transaction. PostgreSQL
    /// locks rows, not the database: a plain BEGIN (read committed), with the claims that
    /// race made safe by their own statements (`FOR UPDATE SKIP LOCKED`, guarded updates).
    async fn write_tx(&self) -> Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A plain transaction, taking no write lock at BEGIN (SQLite's deferred BEGIN): for
    /// work that only reads, and so works on a read-only open too.
    async fn read_tx(&self) -> Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Checks that the database accepts a write (readiness).
    pub async fn check_writable(&self) -> Result<()> {
        let checked = self.write_check().await;
        // PostgreSQL can go away under a running daemon: `/readyz` says why in the words
        // `check --online` uses.
        #[cfg(feature = "postgres")]
        if let (Pool::Postgres(_), Err(StoreError::Sql(_))) = (&self.pool, &checked) {
            let Err(StoreError::Sql(source)) = checked else {
                unreachable!("matched above")
            };
            return Err(self.classify(source));
        }
        checked
    }

    async fn write_check(&self) -> Result<()> {
        let mut tx = self.write_tx().await?;
        on_tx!(
            &mut tx,
            (
                "INSERT INTO meta (key, value) VALUES ('last_write_check', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                "INSERT INTO meta (key, value) VALUES ('last_write_check', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(now_ms().to_string())
                .execute(ex)
                .await?
                .rows_affected()
        );
        tx.commit().await?;
        Ok(())
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(on_pool!(
            self,
            (
                "SELECT value FROM meta WHERE key = ?",
                "SELECT value FROM meta WHERE key = $1"
            ),
            |sql, ex| sqlx::query_scalar(sql).bind(key).fetch_optional(ex).await?
        ))
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        on_pool!(
            self,
            (
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(key)
                .bind(value)
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }
}

/// `url`'s connect options, with the password that travels apart.
#[cfg(feature = "postgres")]
fn pg_options(url: &str, password: Option<&str>) -> Result<PgConnectOptions> {
    let mut options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
        url: redact_url(url),
        had_password: password.is_some(),
        source,
    })?;
    if let Some(password) = password {
        options = options.password(password);
    }
    Ok(options)
}

#[cfg(feature = "postgres")]
fn pg_pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        // A server that is down is said at once (with what to check), not after
        // sqlx's default 30 s.
        .acquire_timeout(PG_CONNECT_TIMEOUT)
}

/// Whether a statement failed because of the server or the way to it (not the
/// statement): unreachable, refusing this client, read-only or out of disk.
#[cfg(feature = "postgres")]
fn is_server_trouble(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        // Classes 08 (connection), 28 (authorization), 3D (no database), 53 (resources),
        // 57 (operator intervention: shutdown) and read-only transactions.
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            ["08", "28", "3D", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "25006"
        }),
        _ => false,
    }
}

/// `url` without its password, if it has one, for error texts and logs.
#[cfg(feature = "postgres")]
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed)
            if parsed.password().is_some()
                || parsed.query_pairs().any(|(key, _)| key == "password") =>
        {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("REDACTED"));
            }
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(key, value)| {
                    let value = if key == "password" {
                        "REDACTED".into()
                    } else {
                        value
                    };
                    (key.into_owned(), value.into_owned())
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "the configured state.url".to_owned(),
    }
}

/// An exclusive advisory lock on the state file, held while migrations run.
async fn open_lock(path: &Path) -> Result<std::fs::File> {
    let shown = path.display().to_string();
    let path = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|error| std::io::Error::other(error.to_string()))
    .and_then(|result| result);
    opened.map_err(|error| StoreError::Open {
        path: shown,
        source: sqlx::Error::Io(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "postgres")]
    #[test]
    fn a_password_in_a_url_is_redacted_wherever_it_sits() {
        for url in [
            "postgres://u:s3cret@db/x",
            "postgres://u@db/x?sslmode=require&password=s3cret",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("s3cret") && shown.contains("REDACTED"),
                "{shown}"
            );
        }
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
    }

    #[tokio::test]
    async fn a_full_database_is_told_by_sqlites_code() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        // Room for what is there and nothing more (a per-connection setting): the next
        // page is SQLITE_FULL, as when the file system has no space left.
        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!("a file is SQLite")
        };
        let mut connection = pool.acquire().await.unwrap();
        sqlx::query("PRAGMA max_page_count = 1")
            .execute(&mut *connection)
            .await
            .unwrap();
        let full = sqlx::query("CREATE TABLE filler (text TEXT)")
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from)
            .unwrap_err();
        assert!(full.is_disk_full(), "{full}");
    }

    #[tokio::test]
    async fn a_read_only_database_is_told_by_sqlites_code_and_other_errors_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Store::open(&path).await.unwrap().close().await;
        let store = Store::open_existing(&path, false).await.unwrap();
        let read_only = store
            .set_meta("key", "value")
            .await
            .expect_err("a read-only store refuses a write");
        assert!(read_only.is_disk_full(), "{read_only}");

        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!("a file is SQLite")
        };
        let other = sqlx::query("SELECT * FROM no_such_table")
            .execute(pool)
            .await
            .map_err(StoreError::from)
            .unwrap_err();
        assert!(!other.is_disk_full(), "{other}");
        assert!(!StoreError::LeaseLost { delivery_id: 1 }.is_disk_full());
    }
}
