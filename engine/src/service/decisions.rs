//! The decision log (sampled, buffered, written in batches, kept for a retention period) and
//! the dry run that replays logged decisions against a candidate policy set.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::policies::{ActivePolicies, Decision, DecisionRequest};
use super::{Consistency, Engine};
use crate::error::{Error, Result};
use crate::graph::CompiledModel;
use crate::policy::DeterminingPolicy;
use crate::store::{DecisionFilter, LoggedDecision, Page, Paged, TemplateLink};

/// The settings kind of a store's decision log.
pub const LOG_SETTINGS: &str = "decision_log";
/// Most entries waiting to be written; beyond it new entries are dropped (and counted).
pub const MAX_BUFFERED: usize = 50_000;
/// Most context attributes a store's log redacts.
pub const MAX_REDACTED: usize = 100;
/// What a redacted value is logged as.
pub const REDACTED: &str = "[redacted]";
/// Most logged decisions one dry run replays.
pub const MAX_DRY_RUN: usize = 1_000;

/// Most expired tuples one sweep removes.
pub const MAX_SWEEP: u64 = 100_000;

/// How a store's decisions are logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionLogSettings {
    /// The share of decisions recorded, 0.0 to 1.0.
    pub sample_rate: f64,
    /// Whether every deny is recorded whatever the sample rate.
    pub always_log_denies: bool,
    /// Days an entry is kept.
    pub retention_days: u32,
    /// Context attributes (top-level names) whose values the log does not keep (tokens,
    /// personal data): each is logged as `"[redacted]"`, and a dry run skips the entry.
    pub redact: Vec<String>,
}

impl Default for DecisionLogSettings {
    fn default() -> Self {
        Self {
            sample_rate: 1.0,
            always_log_denies: true,
            retention_days: 30,
            redact: Vec::new(),
        }
    }
}

impl DecisionLogSettings {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(format!(
                "`sample_rate` ({}) must be between 0 and 1",
                self.sample_rate
            ));
        }
        if self.retention_days == 0 || self.retention_days > 3650 {
            return Err("`retention_days` must be between 1 and 3650".into());
        }
        if self.redact.len() > MAX_REDACTED {
            return Err(format!(
                "`redact` names {} attributes; at most {MAX_REDACTED} are accepted",
                self.redact.len()
            ));
        }
        if let Some(bad) = self.redact.iter().find(|n| n.is_empty() || n.len() > 256) {
            return Err(format!(
                "`redact` names must be 1 to 256 bytes, got `{bad}`"
            ));
        }
        Ok(())
    }
}

/// One logged decision a candidate policy set decides differently.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    pub decision_id: String,
    pub subject: String,
    pub action: String,
    pub resource: String,
    pub was_allowed: bool,
    pub was_policies: Vec<String>,
    pub now_allowed: bool,
    /// The candidate's determining policies (why it flips).
    pub now_policies: Vec<Arc<DeterminingPolicy>>,
    pub now_errors: Vec<String>,
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// Logged decisions replayed.
    pub replayed: usize,
    pub flipped: Vec<Flip>,
    /// Logged decisions that could not be replayed (e.g. a type the model no longer has).
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub decision_id: String,
    pub reason: String,
}

impl Engine {
    /// How a store's decisions are logged (the defaults until it sets its own).
    pub async fn decision_log_settings(&self, store: &str) -> Result<Arc<DecisionLogSettings>> {
        if let Some(s) = self.log_settings.get(store) {
            return Ok(s);
        }
        self.get_store_fresh(store, false).await?;
        let s = match self.ds.read_setting(store, LOG_SETTINGS).await? {
            Some(v) => serde_json::from_value(v).map_err(|e| {
                Error::Storage(format!("stored decision log settings do not parse: {e}"))
            })?,
            None => DecisionLogSettings::default(),
        };
        let s = Arc::new(s);
        self.log_settings.insert(store.to_string(), s.clone());
        Ok(s)
    }

    pub async fn set_decision_log_settings(
        &self,
        store: &str,
        settings: DecisionLogSettings,
    ) -> Result<Arc<DecisionLogSettings>> {
        settings.validate().map_err(Error::Validation)?;
        self.get_store_fresh(store, false).await?;
        let json = serde_json::to_value(&settings)
            .map_err(|e| Error::Storage(format!("cannot serialize log settings: {e}")))?;
        self.ds.write_setting(store, LOG_SETTINGS, &json).await?;
        self.log_settings.invalidate(store);
        Ok(Arc::new(settings))
    }

    /// Queues a decision for the log if the store's sampling picks it.
    pub(super) async fn log_decision(
        &self,
        store: &str,
        req: &DecisionRequest,
        context: Option<serde_json::Map<String, serde_json::Value>>,
        d: &Decision,
        latency: std::time::Duration,
    ) -> Result<()> {
        let settings = self.decision_log_settings(store).await?;
        let draw: f64 = rand::random();
        let sampled = draw < settings.sample_rate || (!d.allowed && settings.always_log_denies);
        if !sampled {
            return Ok(());
        }
        // Monotonic within the millisecond; past its 2^80 ids in one (never), a fresh one.
        let id = match self.decision_ids.lock() {
            Ok(mut g) => g.generate().unwrap_or_else(|_| ulid::Ulid::new()),
            Err(_) => ulid::Ulid::new(),
        };
        let mut context = context;
        let mut redacted = Vec::new();
        if let Some(ctx) = context.as_mut() {
            for name in &settings.redact {
                if let Some(v) = ctx.get_mut(name) {
                    *v = serde_json::Value::String(REDACTED.into());
                    redacted.push(name.clone());
                }
            }
        }
        let now = chrono::Utc::now();
        let entry = LoggedDecision {
            id: id.to_string(),
            store_id: store.to_string(),
            decided_at: now,
            subject: req.subject.clone(),
            action: req.action.clone(),
            resource: req.resource.clone(),
            context,
            allowed: d.allowed,
            policies: d.policies.iter().map(|p| p.id.clone()).collect(),
            errors: d.errors.clone(),
            rebac: d.rebac,
            risk: d.risk.clone(),
            revision: d.revision,
            policy_version: d.policy_version.clone(),
            lean: req.lean,
            ignore_undeclared: req.ignore_undeclared,
            attributes_sent: !req.attributes.is_empty(),
            attributes: req.attributes.clone(),
            redacted,
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            expires_at: now + chrono::Duration::days(i64::from(settings.retention_days)),
        };
        match self.decision_buffer.lock() {
            Ok(mut b) if b.len() < MAX_BUFFERED => b.push(entry),
            _ => {
                self.decisions_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Writes the queued log entries; returns how many. The server calls this periodically;
    /// reads of the log call it first so they see every decision made before them.
    pub async fn flush_decision_log(&self) -> Result<usize> {
        let _one_writer = self.flush_lock.lock().await;
        let batch = match self.decision_buffer.lock() {
            Ok(mut b) => std::mem::take(&mut *b),
            Err(_) => return Err(Error::Storage("decision log buffer lock poisoned".into())),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        if let Err(e) = self.ds.append_decisions(&batch).await {
            // Put them back (in front of newer ones) for the next flush, within the bound.
            if let Ok(mut b) = self.decision_buffer.lock() {
                let room = MAX_BUFFERED.saturating_sub(b.len());
                let mut keep: Vec<_> = batch.into_iter().take(room).collect();
                keep.append(&mut b);
                *b = keep;
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Decisions the log dropped because the buffer was full.
    pub fn decisions_dropped(&self) -> u64 {
        self.decisions_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logged decisions of a store, newest first.
    pub async fn decisions(
        &self,
        store: &str,
        filter: &DecisionFilter,
        page: &Page,
    ) -> Result<Paged<LoggedDecision>> {
        self.get_store_fresh(store, false).await?;
        if let Err(e) = self.flush_decision_log().await {
            tracing::warn!(error = %e, "cannot write the decision log before reading it");
        }
        self.ds.read_decisions(store, filter, page).await
    }

    /// Removes what retention ended (log entries, risk histories).
    pub async fn prune_expired(&self) -> Result<u64> {
        self.ds.prune_expired(chrono::Utc::now()).await
    }

    /// Removes tuples whose expiry has passed, in batches, at most [`MAX_SWEEP`] a call (the
    /// next call goes on). No query counts them any more: this only frees their rows.
    pub async fn remove_expired_tuples(&self) -> Result<u64> {
        const BATCH: usize = 1_000;
        let now = chrono::Utc::now();
        let mut removed = 0;
        while removed < MAX_SWEEP {
            let n = self.ds.remove_expired_tuples(now, BATCH).await?;
            removed += n;
            if n < BATCH as u64 {
                break;
            }
        }
        Ok(removed)
    }

    /// Replays the store's last `limit` logged decisions against a candidate policy set (at
    /// the revision each was made at, with the context and risk it had) and reports which
    /// would flip. Nothing is saved.
    pub async fn dry_run(
        &self,
        store: &str,
        text: &str,
        schema: Option<serde_json::Value>,
        links: Vec<TemplateLink>,
        limit: usize,
    ) -> Result<DryRun> {
        if limit == 0 || limit > MAX_DRY_RUN {
            return Err(Error::Validation(format!(
                "`limit` must be between 1 and {MAX_DRY_RUN}"
            )));
        }
        self.get_store_fresh(store, false).await?;
        let model = self.latest_model_opt(store).await?;
        // A version id of its own: entity sets cached for one candidate are not another's.
        let id = format!("candidate-{}", ulid::Ulid::new());
        let candidate: ActivePolicies =
            Self::compile_policies(&id, text, &links, schema.as_ref(), model.as_deref())?;
        let logged = self
            .decisions(
                store,
                &DecisionFilter::default(),
                &Page {
                    size: limit,
                    token: None,
                },
            )
            .await?;
        let mut out = DryRun {
            replayed: 0,
            flipped: vec![],
            skipped: vec![],
        };
        let mut versions: HashMap<String, Option<Arc<ActivePolicies>>> = HashMap::new();
        for entry in logged.items {
            let unreplayable = if !entry.redacted.is_empty() {
                Some(format!(
                    "the log redacts the context attributes it depends on ({})",
                    entry.redacted.join(", ")
                ))
            } else if entry.attributes_sent && entry.attributes.is_empty() {
                Some("the request sent entity attributes, which the log did not keep".into())
            } else {
                None
            };
            if let Some(reason) = unreplayable {
                out.skipped.push(Skipped {
                    decision_id: entry.id,
                    reason,
                });
                continue;
            }
            let req = DecisionRequest {
                subject: entry.subject.clone(),
                action: entry.action.clone(),
                resource: entry.resource.clone(),
                context: entry.context.clone(),
                consistency: Consistency::AtRevision(entry.revision),
                explain: false,
                lean: entry.lean,
                attributes: entry.attributes.clone(),
                // As the request was decided: through AuthZEN, keys the candidate's schema does
                // not declare are left out; otherwise they are an error, and the entry skipped.
                ignore_undeclared: entry.ignore_undeclared,
                quiet: false,
            };
            match self.replay(store, &req, &candidate, &entry.risk).await {
                Ok(now) if now.allowed != entry.allowed => {
                    // A flip the candidate did not cause: the policies that made the decision
                    // no longer make it either (a relationship it rested on has expired since,
                    // or stored attributes changed). Reported as such, not as a flip.
                    let logged = self
                        .logged_policies(
                            store,
                            &entry.policy_version,
                            model.as_deref(),
                            &mut versions,
                        )
                        .await?;
                    let unchanged = match logged {
                        Some(p) => self
                            .replay(store, &req, &p, &entry.risk)
                            .await
                            .map(|d| d.allowed == entry.allowed)
                            // Undecidable under its own policies: the flip stands.
                            .unwrap_or(true),
                        None => true,
                    };
                    if !unchanged {
                        out.skipped.push(Skipped {
                            decision_id: entry.id,
                            reason: "its own policies now decide it differently too: a \
                                     relationship it rested on has expired, or stored \
                                     attributes changed"
                                .into(),
                        });
                        continue;
                    }
                    out.replayed += 1;
                    out.flipped.push(Flip {
                        decision_id: entry.id,
                        subject: entry.subject,
                        action: entry.action,
                        resource: entry.resource,
                        was_allowed: entry.allowed,
                        was_policies: entry.policies,
                        now_allowed: now.allowed,
                        now_policies: now.policies,
                        now_errors: now.errors,
                    });
                }
                Ok(_) => out.replayed += 1,
                Err(e) => out.skipped.push(Skipped {
                    decision_id: entry.id,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// The policies of a logged decision's version, compiled once per dry run; `None` when
    /// the version is gone or no longer compiles.
    async fn logged_policies(
        &self,
        store: &str,
        version: &str,
        model: Option<&CompiledModel>,
        seen: &mut HashMap<String, Option<Arc<ActivePolicies>>>,
    ) -> Result<Option<Arc<ActivePolicies>>> {
        if let Some(p) = seen.get(version) {
            return Ok(p.clone());
        }
        let active = self.active_for(store, model).await?;
        let p = if active.version == version {
            Some(active)
        } else {
            self.ds
                .read_policy_version(store, version)
                .await?
                .and_then(|v| {
                    Self::compile_policies(&v.id, &v.policies, &v.links, v.schema.as_ref(), model)
                        .ok()
                })
                .map(Arc::new)
        };
        seen.insert(version.to_string(), p.clone());
        Ok(p)
    }
}
