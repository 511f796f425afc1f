//! The storage layer: the only place with SQL. One repository struct per domain, each holding
//! a pool handle; queries are compile-time checked (`sqlx::query!`) against the offline cache.

pub mod account_data;
pub mod device_lists;
pub mod devices;
pub mod e2ee;
pub mod ephemeral;
pub mod federation;
pub mod key_backup;
pub mod keys;
pub mod media;
pub mod mls;
pub mod presence;
pub mod push;
pub mod room_writer;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod sliding_sync;
pub mod uiaa;
pub mod users;

use sqlx::PgPool;

pub use self::{
    account_data::AccountDataStore, devices::DeviceStore, e2ee::E2eeStore, ephemeral::EphemeralStore,
    federation::FederationStore, key_backup::KeyBackupStore, keys::KeyStore, media::MediaStore,
    presence::PresenceStore, push::PushStore, rooms::RoomStore, search::SearchStore, server_keys::ServerKeyStore,
    sliding_sync::SlidingSyncStore, uiaa::UiaaStore, users::UserStore,
};

/// Errors of the storage layer. Constraint violations that carry domain meaning are named;
/// everything else is an internal error for the layers above.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique or primary-key constraint was violated (the constraint's name).
    #[error("unique constraint {0} violated")]
    Conflict(String),
    /// A check or foreign-key constraint was violated (the constraint's name).
    #[error("constraint {0} violated")]
    Constraint(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let name = db.constraint().unwrap_or_default().to_owned();
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => return Self::Conflict(name),
                sqlx::error::ErrorKind::CheckViolation
                | sqlx::error::ErrorKind::ForeignKeyViolation
                | sqlx::error::ErrorKind::NotNullViolation => return Self::Constraint(name),
                _ => {}
            }
        }
        Self::Database(e)
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Held by the one process that runs a background duty (push delivery, the federation sender):
/// a session-level advisory lock on a connection of its own, released when the process (or the
/// connection) ends.
#[derive(Debug)]
pub struct LeaderLock {
    conn: sqlx::PgConnection,
}

impl LeaderLock {
    /// Takes the advisory lock `key` unless another process holds it.
    pub async fn try_take(pool: &PgPool, key: (i32, i32)) -> StorageResult<Option<Self>> {
        use sqlx::Connection;
        let mut conn = pool.acquire().await?.detach();
        let got = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1, $2) AS "got!""#, key.0, key.1)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Self { conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Takes the advisory lock `key`, waiting while another session holds it.
    pub async fn take(pool: &PgPool, key: (i32, i32)) -> StorageResult<Self> {
        let mut conn = pool.acquire().await?.detach();
        sqlx::query!("SELECT pg_advisory_lock($1, $2)", key.0, key.1).execute(&mut conn).await?;
        Ok(Self { conn })
    }

    /// Resolves when the lock's connection is gone (and so, possibly, the lock).
    pub async fn lost(mut self) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            if sqlx::query!("SELECT 1 AS one").fetch_one(&mut self.conn).await.is_err() {
                return;
            }
        }
    }
}

/// All repositories, built once from one pool.
#[derive(Clone, Debug)]
pub struct Storage {
    pub pool: PgPool,
    pub users: UserStore,
    pub devices: DeviceStore,
    pub uiaa: UiaaStore,
    pub account_data: AccountDataStore,
    pub keys: KeyStore,
    pub rooms: RoomStore,
    pub ephemeral: EphemeralStore,
    pub federation: FederationStore,
    pub e2ee: E2eeStore,
    pub device_lists: device_lists::DeviceListStore,
    pub key_backup: KeyBackupStore,
    pub media: MediaStore,
    pub mls: mls::MlsStore,
    pub search: SearchStore,
    pub server_keys: ServerKeyStore,
    pub push: PushStore,
    pub presence: PresenceStore,
    pub sliding_sync: SlidingSyncStore,
}

impl Storage {
    pub fn new(pool: PgPool) -> Self {
        Self {
            users: UserStore::new(pool.clone()),
            devices: DeviceStore::new(pool.clone()),
            uiaa: UiaaStore::new(pool.clone()),
            account_data: AccountDataStore::new(pool.clone()),
            keys: KeyStore::new(pool.clone()),
            rooms: RoomStore::new(pool.clone()),
            ephemeral: EphemeralStore::new(pool.clone()),
            federation: FederationStore::new(pool.clone()),
            e2ee: E2eeStore::new(pool.clone()),
            device_lists: device_lists::DeviceListStore::new(pool.clone()),
            key_backup: KeyBackupStore::new(pool.clone()),
            media: MediaStore::new(pool.clone()),
            mls: mls::MlsStore::new(pool.clone()),
            search: SearchStore::new(pool.clone()),
            server_keys: ServerKeyStore::new(pool.clone()),
            push: PushStore::new(pool.clone()),
            presence: PresenceStore::new(pool.clone()),
            sliding_sync: SlidingSyncStore::new(pool.clone()),
            pool,
        }
    }

    /// `SELECT 1`: whether the database answers (for `/health`).
    pub async fn ping(&self) -> StorageResult<()> {
        sqlx::query!("SELECT 1 AS one").fetch_one(&self.pool).await?;
        Ok(())
    }
}

/// Where a consumer of a stream (`stream_consumers`) stands.
async fn consumer_position(pool: &PgPool, name: &str) -> StorageResult<i64> {
    Ok(sqlx::query_scalar!("SELECT position FROM stream_consumers WHERE name = $1", name)
        .fetch_optional(pool)
        .await?
        .unwrap_or(0))
}

/// Moves a stream consumer from `from` to `to` inside the transaction that does its work;
/// `false` if another process moved it first.
async fn advance_consumer(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
    from: i64,
    to: i64,
) -> StorageResult<bool> {
    let moved =
        sqlx::query!("UPDATE stream_consumers SET position = $3 WHERE name = $1 AND position = $2", name, from, to)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    Ok(moved > 0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
