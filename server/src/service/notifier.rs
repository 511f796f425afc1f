//! Wake-ups for waiting `/sync` calls. Writers `NOTIFY poststelle_streams` inside their
//! transaction (delivered at commit); one `LISTEN` connection per process turns notifications
//! from every process on the database into a bump of a watch channel. Local writers also bump
//! it directly after commit, so a waiting sync in the same process wakes without the round trip.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;

use super::typing::TypingService;

#[derive(Debug)]
pub struct Notifier {
    tx: watch::Sender<u64>,
}

impl Notifier {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { tx: watch::channel(0).0 })
    }

    /// Something changed: wake every waiter.
    pub fn bump(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Listens for notifications until the process ends, reconnecting after errors.
    pub fn spawn_listener(self: &Arc<Self>, pool: PgPool, typing: Arc<TypingService>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.listen(&pool, &typing).await {
                    tracing::warn!(error = %e, "stream listener lost its connection; reconnecting");
                }
                // Anything may have happened while we were not listening.
                this.bump();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn listen(&self, pool: &PgPool, typing: &TypingService) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen("poststelle_streams").await?;
        loop {
            let n = listener.recv().await?;
            if let Some(rest) = n.payload().strip_prefix("typing ") {
                typing.apply_remote(rest);
            }
            self.bump();
        }
    }
}
