//! Redis pub/sub of committed revisions: every node learns of every write at once, so its
//! `MINIMIZE_LATENCY` queries move to the new revision (and miss the old cache entries)
//! without waiting for the staleness bound.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use gatehouse_engine::service::{ChangeNotifier, Engine};
use gatehouse_engine::store::Revision;

/// Publishes `store revision` on the channel `<prefix>:revisions`.
pub struct RedisNotifier {
    conn: redis::aio::ConnectionManager,
    channel: String,
}

impl ChangeNotifier for RedisNotifier {
    fn published(&self, store: &str, revision: Revision) {
        let mut conn = self.conn.clone();
        let channel = self.channel.clone();
        let msg = format!("{store} {revision}");
        tokio::spawn(async move {
            let r: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg(&channel).arg(&msg).query_async(&mut conn).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot publish a revision to redis");
            }
        });
    }
}

/// Connects to Redis, installs the notifier on the engine and starts the subscriber task.
pub async fn connect(url: &str, prefix: &str, engine: Arc<Engine>) -> Result<()> {
    let client = redis::Client::open(url).context("invalid `REDIS_URL`")?;
    let conn = redis::aio::ConnectionManager::new(client.clone()).await.context("cannot connect to redis")?;
    let channel = format!("{prefix}:revisions");
    let mut pubsub = client.get_async_pubsub().await.context("cannot open a redis subscription")?;
    pubsub.subscribe(&channel).await.context("cannot subscribe to the revision channel")?;
    engine.set_notifier(Arc::new(RedisNotifier { conn, channel: channel.clone() }));
    let engine2 = engine.clone();
    tokio::spawn(async move {
        let mut pubsub = pubsub;
        loop {
            {
                let mut stream = pubsub.on_message();
                while let Some(msg) = stream.next().await {
                    let Ok(text) = msg.get_payload::<String>() else { continue };
                    if let Some((store, rev)) = text.split_once(' ')
                        && let Ok(rev) = rev.parse::<Revision>()
                    {
                        engine2.observe_revision(store, rev);
                        // A write may follow a new model; let the latest-model lookup refresh.
                        engine2.forget_store(store);
                    }
                }
            }
            tracing::warn!("redis subscription closed; reconnecting");
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Ok(mut p) = client.get_async_pubsub().await
                    && p.subscribe(&channel).await.is_ok()
                {
                    pubsub = p;
                    break;
                }
            }
        }
    });
    Ok(())
}
