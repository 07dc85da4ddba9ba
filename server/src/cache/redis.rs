//! Redis pub/sub of committed revisions: every node learns of every write at once, so its
//! `MINIMIZE_LATENCY` queries move to the new revision (and miss the old cache entries)
//! without waiting for the staleness bound.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use gatehouse_engine::service::{ChangeNotifier, Engine, StoreEvent};
use gatehouse_engine::store::Revision;

/// Publishes `<store> rev <n>`, `<store> model`, `<store> policies` or `<store> deleted` on
/// `<prefix>:revisions`.
pub struct RedisNotifier {
    conn: redis::aio::ConnectionManager,
    channel: String,
}

impl ChangeNotifier for RedisNotifier {
    fn published(&self, store: &str, event: StoreEvent) {
        let mut conn = self.conn.clone();
        let channel = self.channel.clone();
        let msg = match event {
            StoreEvent::Revision(rev) => format!("{store} rev {rev}"),
            StoreEvent::ModelWritten => format!("{store} model"),
            StoreEvent::Deleted => format!("{store} deleted"),
            StoreEvent::PoliciesChanged => format!("{store} policies"),
            StoreEvent::AttributesChanged => format!("{store} attributes"),
        };
        tokio::spawn(async move {
            let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&msg)
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot publish a revision to redis");
            }
        });
    }
}

/// Connects to Redis, installs the notifier on the engine and starts the subscriber task.
pub async fn connect(url: &str, prefix: &str, engine: Arc<Engine>) -> Result<()> {
    let client = redis::Client::open(url).context("invalid `REDIS_URL`")?;
    let conn = redis::aio::ConnectionManager::new(client.clone())
        .await
        .context("cannot connect to redis")?;
    let channel = format!("{prefix}:revisions");
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("cannot open a redis subscription")?;
    pubsub
        .subscribe(&channel)
        .await
        .context("cannot subscribe to the revision channel")?;
    engine.set_notifier(Arc::new(RedisNotifier {
        conn,
        channel: channel.clone(),
    }));
    let engine2 = engine.clone();
    tokio::spawn(async move {
        let mut pubsub = pubsub;
        loop {
            {
                let mut stream = pubsub.on_message();
                while let Some(msg) = stream.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some((store, event)) = parse_event(&text) {
                        engine2.apply_event(store, event);
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

/// Parses a message of [`RedisNotifier`].
fn parse_event(text: &str) -> Option<(&str, StoreEvent)> {
    let mut parts = text.split(' ');
    let store = parts.next()?;
    let event = match (parts.next()?, parts.next()) {
        ("rev", Some(n)) => StoreEvent::Revision(n.parse::<Revision>().ok()?),
        ("model", None) => StoreEvent::ModelWritten,
        ("deleted", None) => StoreEvent::Deleted,
        ("policies", None) => StoreEvent::PoliciesChanged,
        ("attributes", None) => StoreEvent::AttributesChanged,
        _ => return None,
    };
    Some((store, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        assert_eq!(
            parse_event("S rev 42"),
            Some(("S", StoreEvent::Revision(42)))
        );
        assert_eq!(
            parse_event("S model"),
            Some(("S", StoreEvent::ModelWritten))
        );
        assert_eq!(parse_event("S deleted"), Some(("S", StoreEvent::Deleted)));
        assert_eq!(parse_event("S rev x"), None);
        assert_eq!(parse_event("S"), None);
        assert_eq!(parse_event("S model extra"), None);
    }
}
