//! Assembling and running the server.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::{Context, Result};
use gatehouse_engine::service::{Engine, EngineConfig};
use rand::RngCore;

use crate::api::{self, AppState, Metrics, hash_key};
use crate::cache::ephemeral::{Ephemeral, InProcess, InRedis};
use crate::config::Config;
use crate::db::SqlStore;
use crate::identity::Identity;
use crate::oidc::keys::{KeyRing, RotationPolicy, parse_alg};
use crate::oidc::sessions::Sessions;
use crate::secrets::MasterKey;

/// Opens the configured database (running migrations): the engine on it, the backend's name
/// and the store itself (for what lives beside the engine: signing keys, tenancy).
async fn open(config: &Config) -> Result<(Arc<Engine>, &'static str, Arc<SqlStore>)> {
    let url = config.database();
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    if backend == "sqlite" {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir `{}`", config.data_dir.display()))?;
    }
    let store = Arc::new(
        SqlStore::connect(&url)
            .await
            .context("cannot open the database")?,
    );
    let cfg = EngineConfig {
        max_depth: config.max_depth,
        cache_enabled: config.check_cache,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(store.clone(), cfg));
    if let Some(redis_url) = &config.redis_url {
        let prefix = std::env::var("GATEHOUSE_REDIS_PREFIX").unwrap_or_else(|_| "gatehouse".into());
        crate::cache::redis::connect(redis_url, &prefix, engine.clone()).await?;
    }
    Ok((engine, backend, store))
}

/// The platform's tenancy on the configured database (the admin commands use it).
pub async fn identity(config: &Config) -> Result<Identity> {
    let (engine, _, store) = open(config).await?;
    Identity::bootstrap(store, engine).await
}

/// The platform owner from `PLATFORM_OWNER_EMAIL` and `PLATFORM_OWNER_PASSWORD`, when both
/// are set: created on first start, made owner of the platform on every start.
async fn bootstrap_owner(identity: &Identity) -> Result<()> {
    let email = std::env::var("PLATFORM_OWNER_EMAIL").unwrap_or_default();
    let password = std::env::var("PLATFORM_OWNER_PASSWORD").unwrap_or_default();
    match (email.trim().is_empty(), password.is_empty()) {
        (true, true) => Ok(()),
        (false, false) => {
            let owner = identity
                .bootstrap_owner(&email, &password)
                .await
                .context("cannot set up the platform owner (PLATFORM_OWNER_EMAIL)")?;
            tracing::info!(user = %owner.id, "platform owner ready");
            Ok(())
        }
        _ => anyhow::bail!("set both PLATFORM_OWNER_EMAIL and PLATFORM_OWNER_PASSWORD, or neither"),
    }
}

/// Outgoing mail: SMTP at `GATEHOUSE_SMTP_URL`, else the outbox in the data dir.
fn mailer(config: &Config) -> Result<crate::mail::Mailer> {
    let url = std::env::var("GATEHOUSE_SMTP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let from = std::env::var("GATEHOUSE_MAIL_FROM")
        .unwrap_or_else(|_| "Gatehouse <no-reply@localhost>".into());
    let m = crate::mail::Mailer::new(url.as_deref(), &config.data_dir, &from)?;
    if let Some(dir) = m.outbox() {
        tracing::info!(outbox = %dir.display(), "no GATEHOUSE_SMTP_URL: outgoing mail goes to the outbox");
    }
    Ok(m)
}

/// How often the key ring checks its rotation schedule.
const ROTATE_EVERY: Duration = Duration::from_secs(600);

/// The signing keys: loaded (and created on first start) before the server listens, then
/// rotated on schedule.
async fn key_ring(
    store: Arc<SqlStore>,
    master: Arc<MasterKey>,
    config: &Config,
) -> Result<Arc<KeyRing>> {
    let ring = Arc::new(KeyRing::new(
        store,
        master,
        parse_alg(&config.signing_alg)?,
        RotationPolicy::default(),
    ));
    ring.rotate(chrono::Utc::now())
        .await
        .context("cannot prepare the signing keys")?;
    let r = ring.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ROTATE_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = r.rotate(chrono::Utc::now()).await {
                tracing::warn!(error = %e, "signing key rotation failed; will retry");
            }
            if let Err(e) = r.store().prune_revocations(chrono::Utc::now()).await {
                tracing::warn!(error = %e, "cannot forget expired revocations; will retry");
            }
            if let Err(e) = r.store().prune_families(chrono::Utc::now()).await {
                tracing::warn!(error = %e, "cannot forget expired refresh tokens; will retry");
            }
        }
    });
    Ok(ring)
}

/// How often queued decision log entries are written.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often retention removes expired log entries and risk histories.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Writes the decision log in batches, applies retention and removes expired tuples, until
/// the server stops. The sweep runs on its own task: a large backlog of expired tuples never
/// holds up the decision log's writes.
fn spawn_upkeep(engine: Arc<Engine>, sweep_every: Duration) {
    let sweeper = engine.clone();
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            sweep.tick().await;
            match sweeper.remove_expired_tuples().await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "removed tuples past their expiry"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expired tuple sweep failed"),
            }
        }
    });
    tokio::spawn(async move {
        let mut flush = tokio::time::interval(LOG_FLUSH_EVERY);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Err(e) = engine.flush_decision_log().await {
                        tracing::warn!(error = %e, "cannot write the decision log; will retry");
                    }
                }
                _ = prune.tick() => match engine.prune_expired().await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "retention removed expired decisions and risk histories"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
                },
            }
        }
    });
}

/// The accepted API key digests: configured keys, or the key generated on first start.
fn api_keys(config: &Config) -> Result<Vec<[u8; 32]>> {
    if !config.api_keys.is_empty() {
        return Ok(config.api_keys.iter().map(|k| hash_key(k)).collect());
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir `{}`", config.data_dir.display()))?;
    let path = config.data_dir.join("api-key.sha256");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex::decode(text.trim()).context("the stored API key digest is corrupt")?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the stored API key digest is corrupt"))?;
        return Ok(vec![digest]);
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let key = format!("gh_{}", hex::encode(raw));
    let digest = hash_key(&key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    writeln!(f, "{}", hex::encode(digest))?;
    // Printed once, to the terminal only: the data dir keeps just its digest.
    println!(
        "Generated an API key (shown once, only its SHA-256 digest is stored in {}):\n\n    {key}\n",
        path.display()
    );
    Ok(vec![digest])
}

/// Runs the HTTP server until it is stopped.
pub async fn run(config: Config) -> Result<()> {
    if let Some(n) = config.password_hash_slots {
        crate::identity::users::set_hash_slots(n);
    }
    let keys = api_keys(&config)?;
    let (engine, backend, store) = open(&config).await?;
    let env_key = std::env::var("GATEHOUSE_MASTER_KEY").ok();
    let master = Arc::new(MasterKey::load(
        env_key.as_deref().filter(|k| !k.trim().is_empty()),
        &config.data_dir,
    )?);
    engine.set_page_token_key(*master.derive("continuation tokens"));
    let ring = key_ring(store.clone(), master.clone(), &config).await?;
    let identity = Arc::new(Identity::bootstrap(store, engine.clone()).await?);
    bootstrap_owner(&identity).await?;
    identity
        .ensure_console(&config.console_redirect_uris)
        .await?;
    identity.spawn_refresh();
    let kv: Arc<dyn Ephemeral> = match &config.redis_url {
        Some(url) => {
            let prefix =
                std::env::var("GATEHOUSE_REDIS_PREFIX").unwrap_or_else(|_| "gatehouse".into());
            Arc::new(InRedis::connect(url, &format!("{prefix}:kv")).await?)
        }
        None => Arc::new(InProcess::default()),
    };
    let mailer = Arc::new(mailer(&config)?);
    let (plugins, upload_sync) = crate::identity::plugins::host(
        crate::identity::plugins::ServerServices {
            store: identity.store.clone(),
            kv: kv.clone(),
            master: master.clone(),
            mailer: Some(mailer.clone()),
        },
        config.plugin_dir.as_deref(),
        config.plugin_http_loopback,
        config.third_party_capabilities()?,
        &config.issuer(),
        config
            .plugin_cache
            .then(|| config.data_dir.join("plugin-cache")),
    )
    .await?;
    let plugins = Arc::new(plugins);
    upload_sync.spawn(plugins.clone());
    spawn_upkeep(
        engine.clone(),
        Duration::from_secs(config.expired_tuple_sweep_secs),
    );
    let service_plugins = Arc::new(crate::identity::providers::ServicePlugins {
        store: identity.store.clone(),
        master: master.clone(),
    });
    let state = web::Data::new(AppState {
        engine: engine.clone(),
        api_key_hashes: keys,
        metrics: Metrics::new()?,
        backend,
        keys: Some(ring),
        identity: Some(identity),
        issuer: config.issuer(),
        sessions: Some(Sessions::new(kv).with_code_ttl(Duration::from_secs(config.code_ttl_secs))),
        token_rate_per_ip: config.token_rate_per_ip,
        reauth_secs: config.reauth_secs,
        key_rate: crate::cache::limits::KeyRate::new(config.api_key_rate),
        trusted_proxies: config.trusted_proxies.clone(),
        login_rate_per_ip: config.login_rate_per_ip,
        signup: config.signup,
        search_budget: Duration::from_millis(config.search_budget_ms),
        store_owners: moka::sync::Cache::builder().max_capacity(100_000).build(),
        mailer: Some(mailer),
        plugins: Some(plugins),
        service_plugins: Some(service_plugins),
    });
    let max_body = config.max_body_bytes;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(api::observe))
            .configure(|c| api::configure(c, max_body))
    })
    .keep_alive(Duration::from_secs(75))
    // SQLite runs on each worker's blocking pool. Every extra blocking thread keeps its own C
    // heap arena of SQLite pages; a few threads serve two cores as fast and keep memory flat.
    .worker_max_blocking_threads(4)
    .shutdown_timeout(10);
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server
        .bind(config.addr)
        .with_context(|| format!("cannot listen on `{}`", config.addr))?;
    tracing::info!(addr = %config.addr, backend, "gatehouse listening");
    server.run().await?;
    // What the log still holds is written before the process ends.
    if let Err(e) = engine.flush_decision_log().await {
        tracing::warn!(error = %e, "cannot write the last decision log entries");
    }
    Ok(())
}
