//! Risk of a store's decisions: its rules, its subjects' histories, and the signals a request
//! carries in its context (`device_id`, `ip`, `location`, `time`).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Engine;
use crate::error::{Error, Result};
use crate::risk::{self, Assessment, Location, RiskProfile, RiskRules, Signals};

/// The settings kind of a store's risk rules.
pub const RISK_SETTINGS: &str = "risk";

/// Context attributes the risk engine consumes and Cedar does not see: `location` (numbers
/// Cedar cannot hold) and `time` (the request's time; now when absent).
const CONSUMED: [&str; 2] = ["location", "time"];

/// Reads a time in any RFC 3339 form: `T`, `t` or a space between date and time, `Z`, `z` or
/// an offset, optional fractional seconds, and (as AuthZEN callers send it) optional seconds,
/// e.g. `2025-06-27T18:03-07:00`; a bare date is its midnight in UTC.
pub fn parse_time(s: &str) -> Option<DateTime<chrono::FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    if s.len() > 64 {
        return None;
    }
    let mut t = s.trim().to_ascii_uppercase();
    if let Ok(date) = chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d") {
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().fixed_offset());
    }
    if t.ends_with('Z') {
        t.pop();
        t.push_str("+00:00");
    }
    if t.as_bytes().get(10) == Some(&b' ') {
        t.replace_range(10..11, "T");
    }
    ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M:%S%.f%:z"]
        .iter()
        .find_map(|f| DateTime::parse_from_str(&t, f).ok())
}

/// Reads the risk signals from a caller's context, removing those only the risk engine reads.
/// `ip` and `device_id` stay: policies may read them (the generated schema declares both).
pub fn take_signals(
    context: &mut Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<Signals> {
    let mut s = Signals {
        time: Utc::now(),
        ..Signals::default()
    };
    let Some(ctx) = context.as_mut() else {
        return Ok(s);
    };
    let bad = |m: String| Error::Validation(m);
    if let Some(v) = ctx.get("device_id") {
        let d = v
            .as_str()
            .filter(|d| !d.is_empty() && d.len() <= 256)
            .ok_or_else(|| bad("context `device_id` must be a string of 1 to 256 bytes".into()))?;
        s.device_id = Some(d.to_string());
    }
    if let Some(v) = ctx.get("ip") {
        let ip: IpAddr = v
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad(format!("context `ip` must be an IP address, not {v}")))?;
        s.ip = Some(ip);
    }
    if let Some(v) = ctx.get("location") {
        let loc: Location = serde_json::from_value(v.clone()).map_err(|e| {
            bad(format!(
                "context `location` must be {{\"lat\": number, \"lon\": number}}: {e}"
            ))
        })?;
        loc.validate()
            .map_err(|e| bad(format!("context `location`: {e}")))?;
        s.location = Some(loc);
    }
    if let Some(v) = ctx.get("time") {
        s.time = v
            .as_str()
            .and_then(parse_time)
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| {
                bad(format!(
                    "context `time` must be an RFC 3339 timestamp, not {v}"
                ))
            })?;
        not_in_future(s.time).map_err(|e| bad(format!("context `time`: {e}")))?;
    }
    for k in CONSUMED {
        ctx.remove(k);
    }
    if ctx.is_empty() {
        *context = None;
    }
    Ok(s)
}

/// How far ahead of this node's clock a caller's time may be (clock skew).
const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Refuses a time in the future beyond clock skew: it would freeze a subject's history (its
/// hours and last location would never be passed).
pub fn not_in_future(t: DateTime<Utc>) -> std::result::Result<(), String> {
    if t > Utc::now() + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECS) {
        return Err(format!(
            "{} is more than {MAX_CLOCK_SKEW_SECS} s in the future",
            t.to_rfc3339()
        ));
    }
    Ok(())
}

/// Updates of one subject's history are serialized on a node by one of these locks (by hash).
const RISK_LOCK_STRIPES: usize = 64;

/// How often a save of a risk history is tried again after losing a compare-and-swap.
const RISK_SAVE_ATTEMPTS: u32 = 32;

/// The locks that serialize read-modify-write of risk histories on this node.
#[derive(Debug)]
pub struct RiskLocks(Vec<tokio::sync::Mutex<()>>);

impl Default for RiskLocks {
    fn default() -> Self {
        Self(
            (0..RISK_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        )
    }
}

impl RiskLocks {
    fn of(&self, store: &str, subject: &str) -> &tokio::sync::Mutex<()> {
        super::stripe_of(&self.0, &(store, subject))
    }
}

/// A subject's history as loaded for one request, to be saved after the decision.
#[derive(Debug)]
pub struct LoadedRisk {
    pub assessment: Assessment,
    profile: Arc<RiskProfile>,
    rules: Arc<RiskRules>,
}

impl Engine {
    /// A store's risk rules (the defaults until it sets its own).
    pub async fn risk_rules(&self, store: &str) -> Result<Arc<RiskRules>> {
        if let Some(r) = self.risk_rules.get(store) {
            return Ok(r);
        }
        self.get_store_fresh(store, false).await?;
        let rules = match self.ds.read_setting(store, RISK_SETTINGS).await? {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Error::Storage(format!("stored risk rules do not parse: {e}")))?,
            None => RiskRules::default(),
        };
        let rules = Arc::new(rules.prepared());
        self.risk_rules.insert(store.to_string(), rules.clone());
        Ok(rules)
    }

    /// Replaces a store's risk rules after checking them.
    pub async fn set_risk_rules(&self, store: &str, rules: RiskRules) -> Result<Arc<RiskRules>> {
        rules.validate().map_err(Error::Validation)?;
        self.get_store_fresh(store, false).await?;
        let json = serde_json::to_value(&rules)
            .map_err(|e| Error::Storage(format!("cannot serialize risk rules: {e}")))?;
        self.ds.write_setting(store, RISK_SETTINGS, &json).await?;
        self.risk_rules.invalidate(store);
        Ok(Arc::new(rules.prepared()))
    }

    async fn risk_profile(&self, store: &str, subject: &str) -> Result<Arc<RiskProfile>> {
        let key = (store.to_string(), subject.to_string());
        if let Some(p) = self.risk_profiles.get(&key) {
            return Ok(p);
        }
        let p = Arc::new(self.stored_profile(store, subject).await?.0);
        self.risk_profiles.insert(key, p.clone());
        Ok(p)
    }

    /// The history as stored now (no cache) and its version: what a read-modify-write starts
    /// from.
    async fn stored_profile(
        &self,
        store: &str,
        subject: &str,
    ) -> Result<(RiskProfile, Option<i64>)> {
        match self.ds.read_risk_profile(store, subject).await? {
            Some(s) => Ok((
                serde_json::from_value(s.profile).map_err(|e| {
                    Error::Storage(format!("stored risk history does not parse: {e}"))
                })?,
                Some(s.version),
            )),
            None => Ok((RiskProfile::default(), None)),
        }
    }

    /// Applies `change` to the subject's stored history and saves it, by compare-and-swap on
    /// its version: when another node saved in between, the change is applied again to what
    /// it saved, so that no update is lost. `change` returns whether anything changed.
    async fn update_profile(
        &self,
        store: &str,
        subject: &str,
        rules: &RiskRules,
        change: impl Fn(&mut RiskProfile) -> bool,
    ) -> Result<RiskProfile> {
        // Serialized per subject on this node; between nodes the version decides.
        let _one = self.risk_locks.of(store, subject).lock().await;
        let key = (store.to_string(), subject.to_string());
        for attempt in 0..RISK_SAVE_ATTEMPTS {
            let (mut profile, version) = self.stored_profile(store, subject).await?;
            if !change(&mut profile) {
                return Ok(profile);
            }
            let now = Utc::now();
            profile.prune(now, rules);
            let json = serde_json::to_value(&profile)
                .map_err(|e| Error::Storage(format!("cannot serialize risk history: {e}")))?;
            let expires = now + chrono::Duration::days(i64::from(rules.retention_days));
            self.risk_profiles.invalidate(&key);
            if self
                .ds
                .write_risk_profile(store, subject, &json, expires, version)
                .await?
            {
                self.risk_profiles.insert(key, Arc::new(profile.clone()));
                return Ok(profile);
            }
            // Another node saved in between: back off a little (randomly, so that two nodes
            // do not keep colliding) and start again from what it saved.
            let ms = rand::random::<u64>() % (2u64 << attempt.min(5));
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Err(Error::Unavailable(format!(
            "the risk history of `{subject}` is being updated concurrently; try again"
        )))
    }

    /// Scores a request against the subject's history (reads only). A request with an address
    /// and no location is placed by the store's geolocation source, if it has one.
    pub(super) async fn load_risk(
        &self,
        store: &str,
        subject: &str,
        signals: &mut Signals,
    ) -> Result<LoadedRisk> {
        let rules = self.risk_rules(store).await?;
        if signals.location.is_none() {
            signals.location = signals.ip.and_then(|ip| rules.locate(ip));
        }
        let profile = self.risk_profile(store, subject).await?;
        Ok(LoadedRisk {
            assessment: risk::assess(&profile, signals, &rules),
            profile,
            rules,
        })
    }

    /// Adds a decided request to the subject's history, saving it when something a later
    /// assessment reads changed.
    pub(super) async fn record_risk(
        &self,
        store: &str,
        subject: &str,
        signals: &Signals,
        loaded: LoadedRisk,
    ) -> Result<()> {
        if !loaded.profile.would_change(signals) {
            return Ok(());
        }
        self.update_profile(store, subject, &loaded.rules, |p| p.record(signals))
            .await?;
        Ok(())
    }

    /// Records a failed attempt of `subject` (a failed login, a rejected credential) at `at`.
    pub async fn record_failure(
        &self,
        store: &str,
        subject: &str,
        at: DateTime<Utc>,
    ) -> Result<RiskProfile> {
        not_in_future(at).map_err(Error::Validation)?;
        let rules = self.risk_rules(store).await?;
        self.update_profile(store, subject, &rules, |p| {
            p.record_failure(at);
            true
        })
        .await
    }

    /// A subject's history in a store (empty when none is kept).
    pub async fn subject_risk(&self, store: &str, subject: &str) -> Result<Arc<RiskProfile>> {
        self.get_store_fresh(store, false).await?;
        self.risk_profile(store, subject).await
    }

    /// Forgets a subject's history.
    pub async fn forget_subject_risk(&self, store: &str, subject: &str) -> Result<bool> {
        self.get_store_fresh(store, false).await?;
        let _one = self.risk_locks.of(store, subject).lock().await;
        let existed = self.ds.delete_risk_profile(store, subject).await?;
        self.risk_profiles
            .invalidate(&(store.to_string(), subject.to_string()));
        Ok(existed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_every_rfc_3339_form() {
        let utc = |s: &str| parse_time(s).map(|t| t.with_timezone(&Utc).to_rfc3339());
        for (s, want) in [
            ("2025-06-28T01:03:00Z", "2025-06-28T01:03:00+00:00"),
            ("2025-06-27T18:03-07:00", "2025-06-28T01:03:00+00:00"),
            (
                "2025-06-27t18:03:00.5-07:00",
                "2025-06-28T01:03:00.500+00:00",
            ),
            ("2025-06-28 01:03:00z", "2025-06-28T01:03:00+00:00"),
            ("2025-06-28T01:03Z", "2025-06-28T01:03:00+00:00"),
            ("2025-06-28", "2025-06-28T00:00:00+00:00"),
        ] {
            assert_eq!(utc(s).as_deref(), Some(want), "{s}");
        }
        for bad in [
            "yesterday",
            "2025-06-28T01",
            "2025-13-01T00:00Z",
            "2025-06-28T01:03",
            "",
        ] {
            assert_eq!(utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn signals_are_read_and_location_and_time_leave_the_context() {
        let mut ctx = Some(
            serde_json::json!({
                "ip": "10.1.2.3", "device_id": "d1",
                "location": {"lat": 1.5, "lon": 2.0}, "time": "2026-01-01T00:00:00Z"
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        let s = take_signals(&mut ctx).unwrap();
        assert_eq!(s.device_id.as_deref(), Some("d1"));
        assert_eq!(s.ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(s.location, Some(Location { lat: 1.5, lon: 2.0 }));
        assert_eq!(s.time.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let ctx = ctx.unwrap();
        assert!(ctx.contains_key("ip") && ctx.contains_key("device_id"));
        assert!(!ctx.contains_key("location") && !ctx.contains_key("time"));
    }

    #[test]
    fn malformed_signals_are_rejected() {
        for bad in [
            serde_json::json!({"ip": "not-an-ip"}),
            serde_json::json!({"ip": 7}),
            serde_json::json!({"device_id": ""}),
            serde_json::json!({"location": {"lat": 91.0, "lon": 0.0}}),
            serde_json::json!({"location": {"lat": "x", "lon": 0.0}}),
            serde_json::json!({"time": "yesterday"}),
        ] {
            let mut ctx = bad.as_object().cloned();
            let err = take_signals(&mut ctx).unwrap_err();
            assert!(matches!(err, Error::Validation(_)), "{bad}: {err:?}");
        }
    }
}
