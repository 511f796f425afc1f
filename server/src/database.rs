//! Connecting to PostgreSQL: the configured URL, or the managed cluster under `data_dir`.

use std::time::Duration;

use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    config::Config,
    managed_pg::{Durability, ManagedPgError, ManagedPostgres},
};

/// The database name used inside the managed cluster.
pub const MANAGED_DB_NAME: &str = "poststelle";

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Managed(#[from] ManagedPgError),
    #[error("invalid database.url: {0}")]
    Url(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// An open database: the pool, plus the managed cluster if we use one (kept alive with it).
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    pub managed: Option<ManagedPostgres>,
    /// Where it is, for log lines (never contains a password).
    pub description: String,
}

impl Database {
    /// Opens the configured database, starting the managed cluster when no URL is set, and
    /// applies pending migrations.
    pub async fn open(config: &Config) -> Result<Self, DatabaseError> {
        let (options, managed, description) = if config.database.url.is_empty() {
            let root = config.data_dir.join("postgres");
            let managed = tokio::task::spawn_blocking(move || ManagedPostgres::start(&root, Durability::default()))
                .await
                .map_err(|e| ManagedPgError::Start(e.to_string()))??;
            ensure_database(&managed.connect_options("postgres"), MANAGED_DB_NAME).await?;
            let description = format!(
                "managed PostgreSQL under {} ({})",
                config.data_dir.join("postgres").display(),
                if managed.is_owned() { "started by this process" } else { "shared with a running server" }
            );
            (managed.connect_options(MANAGED_DB_NAME), Some(managed), description)
        } else {
            let options: PgConnectOptions =
                config.database.url.parse().map_err(|e: sqlx::Error| DatabaseError::Url(e.to_string()))?;
            let description = format!(
                "PostgreSQL at {}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("(default)")
            );
            (options, None, description)
        };
        let pool = PgPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A connection in steady use is not pinged before each use (a round trip per query);
            // one that sat idle for a while is, so a restarted database is noticed.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            // No JIT compilation: the planner's estimates for recursive graph walks and large
            // id lists run into the millions of rows, which makes PostgreSQL spend hundreds of
            // milliseconds compiling a query that then runs in a few.
            //
            // Generic plans from a statement's first execution: by default PostgreSQL plans each
            // of a connection's first five executions of a prepared statement for its parameters,
            // which for the statements a woken `/sync` or a received event runs took longer than
            // executing them (1-3 ms against 0.2-0.8). The statements are kept prepared per
            // connection, up to `STATEMENTS_PER_CONNECTION`.
            .connect_with(
                options
                    .log_statements(tracing::log::LevelFilter::Trace)
                    .statement_cache_capacity(STATEMENTS_PER_CONNECTION)
                    .options([("jit", "off"), ("plan_cache_mode", "force_generic_plan")]),
            )
            .await
            .map_err(DatabaseError::Connect)?;
        migrate(&pool).await?;
        Ok(Self { pool, managed, description })
    }

    /// Closes the pool, then stops the managed cluster if this process started it.
    pub async fn close(mut self) {
        self.pool.close().await;
        if let Some(mut managed) = self.managed.take() {
            let _ = tokio::task::spawn_blocking(move || managed.stop()).await;
        }
    }
}

/// Prepared statements kept per pooled connection: every statement the server runs, so that none
/// is planned again after its first use on a connection.
const STATEMENTS_PER_CONNECTION: usize = 1024;

/// How long a pooled connection may sit unused before it is pinged on its next use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

/// Applies the migrations in `migrations/` (embedded at build time) that are not applied yet.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

/// Creates database `name` if it does not exist (connected through `admin`).
pub async fn ensure_database(admin: &PgConnectOptions, name: &str) -> Result<(), DatabaseError> {
    let mut conn = PgConnection::connect_with(admin).await.map_err(DatabaseError::Connect)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .map_err(DatabaseError::Connect)?;
    if !exists {
        // Identifiers cannot be bound; `name` is ours and quoted.
        let sql = format!("CREATE DATABASE \"{}\" ENCODING 'UTF8' TEMPLATE template0", name.replace('"', "\"\""));
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(_) => {}
            // Another process created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(DatabaseError::Connect(e)),
        }
    }
    conn.close().await.map_err(DatabaseError::Connect)?;
    Ok(())
}
