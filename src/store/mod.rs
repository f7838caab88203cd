//! The store: one SQL text for SQLite (embedded default, WAL) and PostgreSQL, migrations applied on open.

pub mod adoptions;
pub mod audit;
pub mod batches;
pub mod codelist_cache;
pub mod documents;
pub mod findings;
pub mod http_cache;
pub mod intents;
pub mod lease;
pub mod ledger;
pub mod log;
pub mod operator;
pub mod plans;
pub mod retention;
pub mod runs;
pub mod scan_cache;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// A connection pool on either backend. Every query is written once and runs on both.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same expression with `$pool` bound to whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database url `{0}` is neither sqlite:// nor postgres://")]
    Url(String),
    #[error("cannot create the database directory {0}: {1}")]
    Directory(String, std::io::Error),
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    /// A command that only reads found no database (and created none).
    #[error(
        "no database at {path}{why}: nothing has run with this configuration yet (`portal-bridge migrate` or the \
         daemon creates it), or `database.url` (or PORTAL_BRIDGE_DATABASE_URL) names the wrong place"
    )]
    Missing { path: String, why: String },
    /// The database (or the state directory holding it) cannot be written by this process.
    #[error(
        "the database {path} is read-only for this process: {detail}; make the state directory {dir} and the \
         database writable for the bridge's user (with the systemd unit: ReadWritePaths= and the owner of the directory)"
    )]
    ReadOnly { path: String, dir: String, detail: String },
    /// A write of a run whose lease (or shared batch claim) is gone: nothing of it was written.
    #[error("{0}")]
    LeaseLost(String),
    /// A ledger row changed since the run read it (someone else wrote it): nothing was written.
    #[error(
        "the ledger row of {item_key} at {target} changed since this run read it (revision {read}, now {now}); \
         nothing of this write was recorded"
    )]
    Stale { item_key: String, target: String, read: i64, now: i64 },
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations; an SQLite
    /// database that cannot be written is refused here, naming its path ([`StoreError::ReadOnly`]).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, true).await
    }

    /// Opens the database at `url` for a command that only reads: an SQLite database that does not
    /// exist is [`StoreError::Missing`] (nothing is created, not even its directory).
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, false).await
    }

    async fn open_with(url: &str, create: bool) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?;
            let path = options.get_filename().to_path_buf();
            let memory = path == Path::new(":memory:") || url.contains("mode=memory");
            if !create && !memory && !path.exists() {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                let why = match dir {
                    Some(dir) if !dir.exists() => format!(" (the state directory {} does not exist)", dir.display()),
                    _ => String::new(),
                };
                return Err(StoreError::Missing { path: path.display().to_string(), why });
            }
            let options = options
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists())
                && !memory
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Directory(dir.display().to_string(), e))?;
            }
            let read_only = |e: &dyn std::fmt::Display| StoreError::ReadOnly {
                path: path.display().to_string(),
                dir: path.parent().map(|d| d.display().to_string()).unwrap_or_default(),
                detail: e.to_string(),
            };
            let is_read_only = |e: &sqlx::Error| {
                e.as_database_error().is_some_and(|d| d.message().contains("readonly database"))
                    || e.to_string().contains("readonly database")
            };
            let pool = match SqlitePoolOptions::new().max_connections(4).connect_with(options).await {
                Ok(pool) => pool,
                Err(e) if is_read_only(&e) => return Err(read_only(&e)),
                Err(e) => return Err(e.into()),
            };
            if let Err(e) = sqlx::migrate!("migrations/sqlite").run(&pool).await {
                return Err(match &e {
                    sqlx::migrate::MigrateError::Execute(inner) if is_read_only(inner) => read_only(&e),
                    _ => e.into(),
                });
            }
            if create && !memory {
                // A write that changes nothing: SQLite refuses it on a read-only database.
                match sqlx::query("DELETE FROM _sqlx_migrations WHERE 0 = 1").execute(&pool).await {
                    Ok(_) => {}
                    Err(e) if is_read_only(&e) => {
                        pool.close().await;
                        return Err(read_only(&e));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // Fail within seconds (with the real cause) when the server cannot be reached.
            let pool =
                PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::Url(redact(url)))
        }
    }

    /// The database's clock as a stored timestamp (RFC 3339, UTC, milliseconds): leases, claims and
    /// the end of dead runs are judged by it, never by the clock of one instance.
    pub async fn now(&self) -> Result<String, StoreError> {
        let sql = format!("SELECT {}", self.now_sql());
        Ok(on_pool!(self, pool => sqlx::query_scalar(&sql).fetch_one(pool).await?))
    }

    /// SQL for the database's current time, formatted as [`timestamp`] formats it.
    pub(crate) fn now_sql(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Store::Postgres(_) => "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
        }
    }

    /// SQL for the database's current time plus the milliseconds in the parameter `param` (`$n`).
    pub(crate) fn later_sql(&self, param: &str) -> String {
        match self {
            Store::Sqlite(_) => {
                format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('%+.3f seconds', {param} / 1000.0))")
            }
            Store::Postgres(_) => format!(
                "to_char((clock_timestamp() + make_interval(secs => {param}::float8 / 1000)) AT TIME ZONE 'UTC', \
                 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            ),
        }
    }

    /// `FOR SHARE` on PostgreSQL (a row read inside a transaction that nobody may change before it
    /// commits); SQLite's write transaction (`BEGIN IMMEDIATE`) excludes every other writer anyway.
    pub(crate) fn share_lock(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "",
            Store::Postgres(_) => "FOR SHARE",
        }
    }

    /// True if the database answers.
    pub async fn ping(&self) -> bool {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// Opening a transaction that writes.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    /// On SQLite the write lock is taken up front (`BEGIN IMMEDIATE`): a transaction that reads
    /// first and then writes would otherwise fail at once with SQLITE_BUSY_SNAPSHOT when another
    /// connection wrote in between, instead of waiting its turn within `busy_timeout`.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Free text (messages, errors, reasons, names) as stored: PostgreSQL text cannot hold NUL, SQLite
/// can, so both backends store U+FFFD in its place and read back the same.
pub(crate) fn text(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains('\0') { value.replace('\0', "\u{FFFD}").into() } else { value.into() }
}

/// [`text`] for an optional value.
pub(crate) fn opt_text(value: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    value.map(text)
}

/// A database URL fit to show: the password of the userinfo and the value of every query parameter
/// that names a password (`password=`, `sslpassword=` …) become `***`. Text that does not parse
/// as a URL is shown only up to its scheme, since where its secrets are cannot be told.
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(a URL that cannot be read, hidden)"),
            None => "(a URL that cannot be read, hidden)".into(),
        };
    };
    let mut changed = false;
    if parsed.password().is_some() {
        changed |= parsed.set_password(Some("***")).is_ok();
    }
    if let Some(query) = parsed.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if names_a_secret(name) => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        let redacted = pairs.join("&");
        if redacted != query {
            parsed.set_query(Some(&redacted));
            changed = true;
        }
    }
    // Unchanged URLs are shown as written (the parser would normalise them).
    if changed { parsed.to_string() } else { url.to_owned() }
}

/// True for a query parameter (name possibly percent-encoded) that carries a password.
fn names_a_secret(name: &str) -> bool {
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy().to_ascii_lowercase();
    name.contains("password") || name.contains("passwd")
}

/// Timestamps are stored as RFC 3339 text in UTC, identical on both backends.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_in_database_urls_are_hidden() {
        assert_eq!(redact("postgres://u:secret@db:5432/bridge"), "postgres://u:***@db:5432/bridge");
        assert_eq!(redact("postgres://u@db/bridge?password=secret"), "postgres://u@db/bridge?password=***");
        assert_eq!(
            redact("postgresql://u:a@db/x?sslmode=require&PassWord=s%40cret&application_name=b"),
            "postgresql://u:***@db/x?sslmode=require&PassWord=***&application_name=b"
        );
        assert_eq!(redact("postgres://db/x?sslpassword=k&user=u"), "postgres://db/x?sslpassword=***&user=u");
        assert_eq!(redact("postgres://u@db/x?pass%77ord=s"), "postgres://u@db/x?pass%77ord=***");
        assert_eq!(redact("sqlite://var/bridge.db"), "sqlite://var/bridge.db", "nothing to hide: as written");
        assert_eq!(redact("sqlite:///tmp/a b.db?mode=rwc"), "sqlite:///tmp/a b.db?mode=rwc");
        assert_eq!(redact("postgres://u:se cret@[::1"), "postgres://(a URL that cannot be read, hidden)");
    }
}
