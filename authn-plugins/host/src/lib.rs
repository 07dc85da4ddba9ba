//! The Gatehouse plugin host: runs login plugins, WebAssembly components of the world
//! `gatehouse:authn/authn-plugin` (`authn-plugins/wit`), in wasmtime.
//!
//! A plugin gets no ambient authority. It can call only the host interfaces its manifest
//! declares and the platform grants; a component that imports anything else is refused when
//! it is loaded, before any of its code runs. Each step (`describe`, `begin`, `complete`) runs
//! in a fresh instance from a pre-instantiated component in the pooling allocator, under a
//! memory cap, a budget of guest time (enforced by epoch interruption) and a deadline for the
//! whole step that also covers time spent in host calls. A plugin that traps, loops, exhausts
//! its memory or answers too much fails that step with a [`PluginError`]; the server and other
//! steps carry on.

mod capabilities;
pub mod embedded;
mod http;
mod jwt;
pub mod manifest;
pub mod saml;
mod webauthn;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};

pub use capabilities::{Account, Services};
pub use http::HttpPolicy;
pub use manifest::{Capability, Manifest, PluginKind};
pub use webauthn::RelyingParty;

/// The generated bindings of the world (host side).
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gatehouse:authn/authn-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

pub use bindings::gatehouse::authn::types::{
    Assertion, BeginResult, Description, Failure, Field, Kind, StepRequest,
};

use bindings::gatehouse::authn as wit;
use capabilities::StepState;

/// How long an epoch lasts; guest code is checked against its budget once per epoch.
const EPOCH: Duration = Duration::from_millis(5);

/// The platform's limits on every plugin step.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory per step (a manifest may ask for less, not more).
    pub memory_bytes: usize,
    /// Time the guest's own code may run per step.
    pub guest_time: Duration,
    /// Wall-clock time for a whole step, host calls included.
    pub step_time: Duration,
    /// The largest answer a step may give (strings and lists, in bytes).
    pub output_bytes: usize,
    /// Steps running at once, over all plugins; more are refused as busy.
    pub concurrent_steps: u32,
    /// Log lines a step may write.
    pub log_lines: u32,
    /// The rules of the `http` capability.
    pub http: HttpPolicy,
    /// The relying party of the `webauthn` capability (the platform's issuer); without one,
    /// its ceremonies are refused.
    pub relying_party: Option<RelyingParty>,
    /// A directory to keep compiled components in (wasmtime's cache, keyed by the component
    /// and the engine's settings), so that a restart loads them without compiling; `None`
    /// compiles every time.
    pub compile_cache: Option<std::path::PathBuf>,
    /// The capabilities a plugin the binary was not built with (from a directory, or
    /// uploaded) may declare; one that declares another is refused. Built-in plugins get
    /// every capability the host grants.
    pub third_party_capabilities: Vec<Capability>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            guest_time: Duration::from_secs(1),
            step_time: Duration::from_secs(10),
            output_bytes: 64 << 10,
            concurrent_steps: 128,
            log_lines: 100,
            http: HttpPolicy::default(),
            relying_party: None,
            compile_cache: None,
            third_party_capabilities: Capability::ALL.to_vec(),
        }
    }
}

/// Why a plugin step or a plugin load failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no plugin `{0}` is installed")]
    Unknown(String),
    #[error("plugin refused: {0}")]
    Rejected(String),
    #[error("plugin `{plugin}` ran past its budget of {limit:?} of guest time")]
    GuestTime { plugin: String, limit: Duration },
    #[error("plugin `{plugin}` did not finish its step within {limit:?}")]
    StepTime { plugin: String, limit: Duration },
    #[error("plugin `{plugin}` went over its memory limit of {limit} bytes")]
    Memory { plugin: String, limit: usize },
    #[error("plugin `{plugin}` answered {size} bytes, more than the {limit} allowed")]
    OutputTooLarge {
        plugin: String,
        size: usize,
        limit: usize,
    },
    #[error("plugin `{plugin}` failed: {message}")]
    Trap { plugin: String, message: String },
    #[error("the plugin host is running as many steps as it may; try again")]
    Busy,
}

impl PluginError {
    /// A short stable name for metrics and audit events.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Unknown(_) => "unknown",
            PluginError::Rejected(_) => "rejected",
            PluginError::GuestTime { .. } => "guest_time",
            PluginError::StepTime { .. } => "step_time",
            PluginError::Memory { .. } => "memory",
            PluginError::OutputTooLarge { .. } => "output_too_large",
            PluginError::Trap { .. } => "trap",
            PluginError::Busy => "busy",
        }
    }
}

/// A loaded plugin: its manifest, what it says it is, and its pre-instantiated component.
pub struct Plugin {
    pub manifest: Manifest,
    pub description: Description,
    /// SHA-256 of the component (hex): which build of the plugin this is.
    pub sha256: String,
    pre: bindings::AuthnPluginPre<StepState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// An installed plugin: loaded, or registered to be loaded when first used.
struct Entry {
    /// The manifest and component of a plugin not loaded yet.
    source: Option<(String, &'static [u8])>,
    loaded: tokio::sync::OnceCell<Arc<Plugin>>,
}

/// Runs plugins. One per process; cheap to share (`Arc`).
pub struct Host {
    engine: Engine,
    limits: Limits,
    /// Capabilities the platform grants at all; a plugin gets the intersection with its
    /// manifest's.
    granted: Vec<Capability>,
    services: Arc<dyn Services>,
    outbound: http::Outbound,
    plugins: RwLock<HashMap<String, Arc<Entry>>>,
    stop: Arc<AtomicBool>,
    /// The compiled-component cache, when there is one (for its counts).
    cache: Option<wasmtime::Cache>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The step to run.
enum Call {
    Describe,
    Begin(StepRequest),
    Complete(StepRequest),
}

enum Answer {
    Describe(Description),
    Begin(Result<BeginResult, Failure>),
    Complete(Result<Assertion, Failure>),
}

impl Host {
    /// A host with these limits, granting these capabilities, calling back into `services`.
    pub fn new(
        limits: Limits,
        granted: &[Capability],
        services: Arc<dyn Services>,
    ) -> Result<Host, PluginError> {
        let mut pool = PoolingAllocationConfig::new();
        let n = limits.concurrent_steps.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_core_instances_per_component(16)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_memory_size(limits.memory_bytes)
            // On Linux 6.7 and later, a reused slot is reset by finding the pages the last step
            // dirtied (PAGEMAP_SCAN) and zeroing only those, up to 2 MiB (a Rust guest's
            // stack, data and early heap), instead of unmapping them and taking page faults
            // on the next step.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            .decommit_batch_size(16);
        let mut cfg = Config::new();
        let mut kept = None;
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20);
        if let Some(dir) = &limits.compile_cache {
            std::fs::create_dir_all(dir).map_err(|e| {
                PluginError::Rejected(format!(
                    "cannot use `{}` for compiled plugins: {e}",
                    dir.display()
                ))
            })?;
            // wasmtime takes only an absolute directory; the embedded default's data dir is
            // `./data`.
            let dir = std::path::absolute(dir).map_err(|e| {
                PluginError::Rejected(format!(
                    "cannot use `{}` for compiled plugins: {e}",
                    dir.display()
                ))
            })?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache).map_err(|e| {
                PluginError::Rejected(format!("cannot use the compiled plugin cache: {e}"))
            })?;
            cfg.cache(Some(cache.clone()));
            kept = Some(cache);
        }
        let engine = Engine::new(&cfg)
            .map_err(|e| PluginError::Rejected(format!("cannot start the plugin engine: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("plugin-epochs".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| {
                    PluginError::Rejected(format!("cannot start the epoch ticker: {e}"))
                })?;
        }
        let outbound = http::Outbound::new(limits.http.clone());
        Ok(Host {
            engine,
            outbound,
            limits,
            granted: granted.to_vec(),
            services,
            plugins: RwLock::new(HashMap::new()),
            stop,
            cache: kept,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Components this host found compiled in its cache, and components it compiled and
    /// stored there, since it started; `None` without a cache.
    pub fn compile_cache_counts(&self) -> Option<(usize, usize)> {
        self.cache
            .as_ref()
            .map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// The ids of the installed plugins, in order.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// The installed plugins, by id (loading those registered and not used yet).
    pub async fn plugins(&self) -> Result<BTreeMap<String, Arc<Plugin>>, PluginError> {
        let mut out = BTreeMap::new();
        for id in self.ids() {
            out.insert(id.clone(), self.plugin(&id).await?);
        }
        Ok(out)
    }

    /// An installed plugin, loaded on first use if it was registered.
    pub async fn plugin(&self, id: &str) -> Result<Arc<Plugin>, PluginError> {
        let entry = self
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| PluginError::Unknown(id.into()))?;
        entry
            .loaded
            .get_or_try_init(|| async {
                match &entry.source {
                    Some((manifest, wasm)) => {
                        Ok(Arc::new(self.load_as(manifest, wasm, true).await?))
                    }
                    None => Err(PluginError::Unknown(id.into())),
                }
            })
            .await
            .cloned()
    }

    /// Checks a plugin (manifest, component, imports, exports, what it says it is) and
    /// installs it, replacing one with the same id. Nothing is installed if any check fails.
    pub async fn install(&self, manifest: &str, wasm: &[u8]) -> Result<Arc<Plugin>, PluginError> {
        Ok(self.install_loaded(self.load(manifest, wasm).await?))
    }

    /// Installs a plugin [`Host::load`] checked already (without compiling it again),
    /// replacing one with the same id.
    pub fn install_loaded(&self, plugin: Plugin) -> Arc<Plugin> {
        let plugin = Arc::new(plugin);
        let entry = Entry {
            source: None,
            loaded: tokio::sync::OnceCell::new_with(Some(plugin.clone())),
        };
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.manifest.id.clone(), Arc::new(entry));
        plugin
    }

    /// The SHA-256 of the component installed under `id`, if it is installed and loaded (a
    /// registered first-party plugin not used yet has none).
    pub fn installed_sha256(&self, id: &str) -> Option<String> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .and_then(|e| e.loaded.get().map(|p| p.sha256.clone()))
    }

    /// Removes an installed plugin; false if there was none. Steps already running finish.
    pub fn uninstall(&self, id: &str) -> bool {
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some()
    }

    /// Installs a plugin built into the binary, to be compiled and checked when it is first
    /// used: a server that nobody signs in to never runs the compiler, which keeps its start
    /// fast and its memory small. Only the manifest is checked now.
    pub fn register(&self, manifest: &str, wasm: &'static [u8]) -> Result<(), PluginError> {
        let m = Manifest::parse(manifest).map_err(PluginError::Rejected)?;
        let entry = Entry {
            source: Some((manifest.to_string(), wasm)),
            loaded: tokio::sync::OnceCell::new(),
        };
        self.plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.id, Arc::new(entry));
        Ok(())
    }

    /// Checks a plugin the binary was not built with, without installing it.
    pub async fn load(&self, manifest: &str, wasm: &[u8]) -> Result<Plugin, PluginError> {
        self.load_as(manifest, wasm, false).await
    }

    async fn load_as(
        &self,
        manifest: &str,
        wasm: &[u8],
        built_in: bool,
    ) -> Result<Plugin, PluginError> {
        let manifest = Manifest::parse(manifest).map_err(PluginError::Rejected)?;
        if !built_in
            && let Some(cap) = manifest
                .capabilities
                .iter()
                .find(|c| !self.limits.third_party_capabilities.contains(c))
        {
            return Err(PluginError::Rejected(format!(
                "`{}` declares the capability `{cap}`, which this platform does not grant to plugins it was not built with",
                manifest.id
            )));
        }
        let engine = self.engine.clone();
        let bytes = wasm.to_vec();
        let component =
            tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                .await
                .map_err(|e| PluginError::Rejected(format!("compiling stopped: {e}")))?
                .map_err(|e| {
                    PluginError::Rejected(format!(
                        "`{}` is not a valid WebAssembly component: {}",
                        manifest.id,
                        root_cause(&e)
                    ))
                })?;
        let linker = self.linker_for(&manifest, &component)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            PluginError::Rejected(format!("`{}` cannot be linked: {}", manifest.id, chain(&e)))
        })?;
        let pre = bindings::AuthnPluginPre::new(pre).map_err(|e| {
            PluginError::Rejected(format!(
                "`{}` does not implement the world gatehouse:authn/authn-plugin: {}",
                manifest.id,
                chain(&e)
            ))
        })?;
        let sha256 = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(wasm))
        };
        let mut plugin = Plugin {
            sha256,
            description: Description {
                id: manifest.id.clone(),
                version: manifest.version.clone(),
                kind: Kind::Strategy,
                display_name: manifest.display_name.clone(),
                config_schema: String::new(),
            },
            manifest,
            pre,
        };
        let d = match self.step(&plugin, "", Call::Describe).await? {
            Answer::Describe(d) => d,
            _ => {
                return Err(PluginError::Rejected(
                    "describe answered something else".into(),
                ));
            }
        };
        let m = &plugin.manifest;
        let kind_matches = matches!(
            (m.kind, d.kind),
            (PluginKind::Strategy, Kind::Strategy) | (PluginKind::Provider, Kind::Provider)
        );
        if d.id != m.id || d.version != m.version || !kind_matches {
            return Err(PluginError::Rejected(format!(
                "the component describes itself as `{}` {} ({:?}), its manifest as `{}` {} ({:?})",
                d.id, d.version, d.kind, m.id, m.version, m.kind
            )));
        }
        let mut d = d;
        d.config_schema = config_schema(m, &d.config_schema)?.to_string();
        plugin.description = d;
        Ok(plugin)
    }

    /// A linker holding exactly the capabilities this plugin declared and the platform
    /// grants, after checking every import of the component against them.
    fn linker_for(
        &self,
        manifest: &Manifest,
        component: &Component,
    ) -> Result<Linker<StepState>, PluginError> {
        let id = &manifest.id;
        let mut used = Vec::new();
        let mut wasi = Vec::new();
        for (name, _) in component.component_type().imports(&self.engine) {
            if let Some(rest) = name.strip_prefix("gatehouse:authn/") {
                let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
                if !version.starts_with("0.1.") {
                    return Err(PluginError::Rejected(format!(
                        "`{id}` imports `{name}`: this host implements gatehouse:authn 0.1"
                    )));
                }
                if iface == "types" {
                    continue;
                }
                let cap: Capability = iface.parse().map_err(|_| {
                    PluginError::Rejected(format!(
                        "`{id}` imports `{name}`, which no host provides"
                    ))
                })?;
                if !manifest.capabilities.contains(&cap) {
                    return Err(PluginError::Rejected(format!(
                        "`{id}` imports the capability `{cap}` but its manifest does not declare it"
                    )));
                }
                if !self.granted.contains(&cap) {
                    return Err(PluginError::Rejected(format!(
                        "`{id}` needs the capability `{cap}`, which this platform does not grant"
                    )));
                }
                used.push(cap);
            } else if WASI_BAGGAGE.iter().any(|p| name.starts_with(p)) {
                wasi.push(name.to_string());
            } else {
                return Err(PluginError::Rejected(format!(
                    "`{id}` imports `{name}`; plugins get no files, sockets or other system access"
                )));
            }
        }
        let mut linker = Linker::<StepState>::new(&self.engine);
        let link = |e: wasmtime::Error| PluginError::Rejected(format!("cannot link `{id}`: {e}"));
        wit::types::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
            .map_err(link)?;
        for cap in used {
            match cap {
                Capability::Log => {
                    wit::log::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Clock => {
                    wit::clock::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Random => {
                    wit::random::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Kv => {
                    wit::kv::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Accounts => {
                    wit::accounts::add_to_linker::<StepState, HasSelf<StepState>>(
                        &mut linker,
                        |s| s,
                    )
                }
                Capability::Credentials => wit::credentials::add_to_linker::<
                    StepState,
                    HasSelf<StepState>,
                >(&mut linker, |s| s),
                Capability::Argon2 => {
                    wit::argon2::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Http => {
                    wit::http::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Jwt => {
                    wit::jwt::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Email => {
                    wit::email::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
                Capability::Webauthn => {
                    wit::webauthn::add_to_linker::<StepState, HasSelf<StepState>>(
                        &mut linker,
                        |s| s,
                    )
                }
                Capability::Saml => {
                    wit::saml::add_to_linker::<StepState, HasSelf<StepState>>(&mut linker, |s| s)
                }
            }
            .map_err(link)?;
        }
        capabilities::link_wasi_baggage(&mut linker, &wasi).map_err(link)?;
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(link)?;
        Ok(linker)
    }

    /// Calls `describe` in a fresh instance (what [`Plugin::description`] keeps from load).
    pub async fn describe(&self, plugin: &str) -> Result<Description, PluginError> {
        let p = self.plugin(plugin).await?;
        match self.step(&p, "", Call::Describe).await? {
            Answer::Describe(d) => Ok(d),
            _ => Err(PluginError::Rejected(
                "describe answered something else".into(),
            )),
        }
    }

    /// Runs `begin` of `plugin` for `organization`.
    pub async fn begin(
        &self,
        plugin: &str,
        organization: &str,
        request: StepRequest,
    ) -> Result<Result<BeginResult, Failure>, PluginError> {
        let p = self.plugin(plugin).await?;
        match self.step(&p, organization, Call::Begin(request)).await? {
            Answer::Begin(r) => Ok(r),
            _ => Err(PluginError::Rejected(
                "begin answered something else".into(),
            )),
        }
    }

    /// Runs `complete` of `plugin` for `organization`.
    pub async fn complete(
        &self,
        plugin: &str,
        organization: &str,
        request: StepRequest,
    ) -> Result<Result<Assertion, Failure>, PluginError> {
        let p = self.plugin(plugin).await?;
        match self.step(&p, organization, Call::Complete(request)).await? {
            Answer::Complete(r) => Ok(r),
            _ => Err(PluginError::Rejected(
                "complete answered something else".into(),
            )),
        }
    }

    async fn step(
        &self,
        plugin: &Plugin,
        organization: &str,
        call: Call,
    ) -> Result<Answer, PluginError> {
        let id = plugin.manifest.id.clone();
        let memory = plugin
            .manifest
            .memory_mib
            .map_or(self.limits.memory_bytes, |m| {
                (m as usize * (1 << 20)).min(self.limits.memory_bytes)
            });
        let mut hosts = plugin.manifest.allowed_hosts.clone();
        if let Call::Begin(r) | Call::Complete(r) = &call {
            hosts.extend(http::config_hosts(&r.config, &plugin.manifest.config_hosts));
        }
        let state = StepState::new(
            id.clone(),
            organization.to_string(),
            self.services.clone(),
            memory,
            self.limits.guest_time,
            self.limits.log_lines,
            http::StepHttp {
                outbound: self.outbound.clone(),
                hosts,
                sent: 0,
            },
            self.limits.relying_party.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().guest_time_spent() > ctx.data().guest_budget {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let run = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            Ok::<_, wasmtime::Error>(match call {
                Call::Describe => Answer::Describe(instance.call_describe(&mut store).await?),
                Call::Begin(r) => Answer::Begin(instance.call_begin(&mut store, &r).await?),
                Call::Complete(r) => {
                    Answer::Complete(instance.call_complete(&mut store, &r).await?)
                }
            })
        };
        let outcome = tokio::time::timeout(self.limits.step_time, run).await;
        let answer = match outcome {
            Err(_) => {
                return Err(PluginError::StepTime {
                    plugin: id,
                    limit: self.limits.step_time,
                });
            }
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let data = store.data();
                if data.limiter.exceeded {
                    return Err(PluginError::Memory {
                        plugin: id,
                        limit: memory,
                    });
                }
                if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    return Err(PluginError::GuestTime {
                        plugin: id,
                        limit: self.limits.guest_time,
                    });
                }
                if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
                    return Err(PluginError::Busy);
                }
                let mut message = chain(&e);
                if let Some(p) = &data.panic {
                    message = format!("{p} ({message})");
                }
                return Err(PluginError::Trap {
                    plugin: id,
                    message,
                });
            }
        };
        let size = answer_size(&answer);
        if size > self.limits.output_bytes {
            return Err(PluginError::OutputTooLarge {
                plugin: id,
                size,
                limit: self.limits.output_bytes,
            });
        }
        Ok(answer)
    }
}

/// WASI interfaces that Rust's standard library links into every wasm32-wasip2 component
/// whether it uses them or not. They are stubbed: the harmless ones (an empty environment, a
/// hash seed) answer; the rest (files, standard streams, exit) trap when called.
const WASI_BAGGAGE: [&str; 5] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:random/",
];

/// The configuration schema the host keeps for a plugin: what `describe` answered (`described`),
/// or the manifest's when `describe` answered nothing; the two must agree when both are
/// there. The manifest's `secret-fields` are marked `writeOnly` in it.
fn config_schema(m: &Manifest, described: &str) -> Result<serde_json::Value, PluginError> {
    let reject = |why: String| PluginError::Rejected(format!("`{}`'s {why}", m.id));
    let mut schema = if described.trim().is_empty() {
        m.config_schema.clone().ok_or_else(|| {
            reject("describe answers no configuration schema, and its manifest has none".into())
        })?
    } else {
        let d = serde_json::from_str::<serde_json::Value>(described)
            .map_err(|_| reject("configuration schema is not a JSON object".into()))?;
        if let Some(own) = &m.config_schema
            && *own != d
        {
            return Err(reject(
                "describe answers a configuration schema other than its manifest's config-schema"
                    .into(),
            ));
        }
        d
    };
    if !schema.is_object() {
        return Err(reject("configuration schema is not a JSON object".into()));
    }
    for f in &m.secret_fields {
        match schema
            .get_mut("properties")
            .and_then(|p| p.get_mut(f.as_str()))
            .and_then(|p| p.as_object_mut())
        {
            Some(p) => {
                p.insert("writeOnly".into(), serde_json::Value::Bool(true));
            }
            None => {
                return Err(reject(format!(
                    "secret field `{f}` is not a property of its configuration schema"
                )));
            }
        }
    }
    Ok(schema)
}

fn answer_size(a: &Answer) -> usize {
    fn failure(f: &Failure) -> usize {
        match f {
            Failure::InvalidCredentials(u) => u.as_ref().map_or(0, String::len),
            Failure::BadRequest(m) | Failure::Unavailable(m) => m.len(),
        }
    }
    match a {
        Answer::Describe(d) => {
            d.id.len() + d.version.len() + d.display_name.len() + d.config_schema.len()
        }
        Answer::Begin(Ok(BeginResult::Form(fields))) => fields
            .iter()
            .map(|f| {
                f.name.len()
                    + f.label.len()
                    + f.input_type.len()
                    + f.autocomplete.as_ref().map_or(0, String::len)
            })
            .sum(),
        Answer::Begin(Ok(
            BeginResult::Redirect(s) | BeginResult::Challenge(s) | BeginResult::Message(s),
        )) => s.len(),
        Answer::Complete(Ok(a)) => {
            a.provider.len()
                + a.subject.len()
                + a.email.as_ref().map_or(0, String::len)
                + a.claims.len()
                + a.methods.iter().map(String::len).sum::<usize>()
        }
        Answer::Begin(Err(f)) | Answer::Complete(Err(f)) => failure(f),
    }
}

/// An error with its causes, on one line.
fn chain(e: &wasmtime::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        s.push_str(": ");
        s.push_str(&c.to_string());
    }
    s
}

fn root_cause(e: &wasmtime::Error) -> String {
    e.chain()
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests;
