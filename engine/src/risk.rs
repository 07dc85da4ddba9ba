//! Adaptive risk: request signals against a subject's history -> `context.risk`
//! (`{score, level, signals}`), fed to Cedar (DESIGN.md, "Cedar policies"; the same engine
//! scores logins).
//!
//! Signals, each with a per-store weight:
//! - `new_device`: the request's device id was never seen for this subject;
//! - `new_ip`: its IP address was never seen; `new_network`: nor its network (/24, /48);
//! - `impossible_travel`: the speed from the last known location exceeds a threshold;
//! - `failed_attempts`: at least N failures were recorded within a window;
//! - `unusual_hours`: the hour of day is one the subject is rarely seen at.
//!
//! [`assess`] scores a request against the history before it; [`RiskProfile::record`] then adds
//! the request to the history. Both are pure: the service loads and saves profiles.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The signal names, as they appear in `context.risk.signals`.
pub const NEW_DEVICE: &str = "new_device";
pub const NEW_IP: &str = "new_ip";
pub const NEW_NETWORK: &str = "new_network";
pub const IMPOSSIBLE_TRAVEL: &str = "impossible_travel";
pub const FAILED_ATTEMPTS: &str = "failed_attempts";
pub const UNUSUAL_HOURS: &str = "unusual_hours";

/// Most devices, addresses or networks remembered per subject (the least recently seen go).
const MAX_REMEMBERED: usize = 200;
/// Most failures remembered per subject.
const MAX_FAILURES: usize = 1_000;

/// The weight each signal adds to the score (0 turns a signal off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub new_device: u32,
    pub new_ip: u32,
    pub new_network: u32,
    pub impossible_travel: u32,
    pub failed_attempts: u32,
    pub unusual_hours: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            new_device: 20,
            new_ip: 10,
            new_network: 10,
            impossible_travel: 50,
            failed_attempts: 30,
            unusual_hours: 10,
        }
    }
}

/// A store's risk rules: weights, thresholds and how long history is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskRules {
    pub weights: Weights,
    /// A score at or above this is `medium`.
    pub medium_at: u32,
    /// A score at or above this is `high`.
    pub high_at: u32,
    /// Travel faster than this between consecutive locations is impossible.
    pub max_travel_kmh: f64,
    /// `failed_attempts` fires at this many failures within `failure_window_secs`.
    pub failure_threshold: u32,
    pub failure_window_secs: u64,
    /// `unusual_hours` needs at least this many observed hours of history…
    pub usual_hours_min_history: u32,
    /// …and fires for an hour of day holding at most this share (percent) of them.
    pub unusual_hour_max_percent: u32,
    /// Devices, addresses and locations not seen for this long are forgotten, and so is a
    /// subject's whole history.
    pub retention_days: u32,
    /// A geolocation source: where the networks a store knows are. A request with an `ip`
    /// and no `location` is placed at the most specific network holding its address.
    pub geo: Vec<GeoNetwork>,
    /// Whether a subject never seen before scores as new on every count (`new_device`,
    /// `new_ip`, `new_network`). With false, the first sighting is the baseline the later
    /// ones are compared with (the platform's sign-ins: a new account's first login is not
    /// suspicious for being first).
    pub score_first_sighting: bool,
    #[serde(skip)]
    geo_index: GeoIndex,
}

/// Most networks in a store's geolocation source.
pub const MAX_GEO_NETWORKS: usize = 10_000;

/// A network (CIDR) and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoNetwork {
    pub network: String,
    pub lat: f64,
    pub lon: f64,
}

/// The geolocation source by prefix length, longest first: a lookup masks the address once
/// per length present.
#[derive(Debug, Clone, Default, PartialEq)]
struct GeoIndex(Vec<(u8, bool, std::collections::HashMap<ipnet::IpNet, Location>)>);

impl GeoIndex {
    fn build(geo: &[GeoNetwork]) -> Self {
        let mut by_len: BTreeMap<(u8, bool), std::collections::HashMap<ipnet::IpNet, Location>> =
            BTreeMap::new();
        for g in geo {
            if let Ok(net) = g.network.parse::<ipnet::IpNet>() {
                let net = net.trunc();
                let v4 = matches!(net, ipnet::IpNet::V4(_));
                by_len.entry((net.prefix_len(), v4)).or_default().insert(
                    net,
                    Location {
                        lat: g.lat,
                        lon: g.lon,
                    },
                );
            }
        }
        Self(
            by_len
                .into_iter()
                .rev()
                .map(|((len, v4), m)| (len, v4, m))
                .collect(),
        )
    }

    fn locate(&self, ip: IpAddr) -> Option<Location> {
        self.0.iter().find_map(|(len, v4, nets)| {
            if *v4 != ip.is_ipv4() {
                return None;
            }
            let net = ipnet::IpNet::new(ip, *len).ok()?.trunc();
            nets.get(&net).copied()
        })
    }
}

impl Default for RiskRules {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            medium_at: 30,
            high_at: 70,
            max_travel_kmh: 900.0,
            failure_threshold: 5,
            failure_window_secs: 900,
            usual_hours_min_history: 20,
            unusual_hour_max_percent: 2,
            retention_days: 90,
            geo: Vec::new(),
            score_first_sighting: true,
            geo_index: GeoIndex::default(),
        }
    }
}

impl RiskRules {
    /// Builds what lookups need (the geolocation index); call once after deserializing.
    pub fn prepared(mut self) -> Self {
        self.geo_index = GeoIndex::build(&self.geo);
        self
    }

    /// Where the configured geolocation source places an address, if anywhere.
    pub fn locate(&self, ip: IpAddr) -> Option<Location> {
        self.geo_index.locate(ip)
    }

    /// Checks the rules make sense; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.medium_at == 0 || self.medium_at > self.high_at {
            return Err(format!(
                "`medium_at` ({}) must be at least 1 and at most `high_at` ({})",
                self.medium_at, self.high_at
            ));
        }
        if self.high_at > 100 {
            return Err(format!("`high_at` ({}) must be at most 100", self.high_at));
        }
        if !(self.max_travel_kmh.is_finite() && self.max_travel_kmh > 0.0) {
            return Err("`max_travel_kmh` must be a positive number".into());
        }
        if self.failure_threshold == 0 {
            return Err("`failure_threshold` must be at least 1".into());
        }
        if self.failure_window_secs == 0 || self.failure_window_secs > 30 * 86_400 {
            return Err("`failure_window_secs` must be between 1 and 2592000 (30 days)".into());
        }
        if self.unusual_hour_max_percent > 100 {
            return Err("`unusual_hour_max_percent` must be at most 100".into());
        }
        if self.retention_days == 0 || self.retention_days > 3650 {
            return Err("`retention_days` must be between 1 and 3650".into());
        }
        if self.geo.len() > MAX_GEO_NETWORKS {
            return Err(format!(
                "`geo` has {} networks; at most {MAX_GEO_NETWORKS} are accepted",
                self.geo.len()
            ));
        }
        for (i, g) in self.geo.iter().enumerate() {
            g.network
                .parse::<ipnet::IpNet>()
                .map_err(|_| format!("`geo[{i}].network` `{}` is not a CIDR network", g.network))?;
            Location {
                lat: g.lat,
                lon: g.lon,
            }
            .validate()
            .map_err(|e| format!("`geo[{i}]`: {e}"))?;
        }
        let w = &self.weights;
        for (name, v) in [
            ("new_device", w.new_device),
            ("new_ip", w.new_ip),
            ("new_network", w.new_network),
            ("impossible_travel", w.impossible_travel),
            ("failed_attempts", w.failed_attempts),
            ("unusual_hours", w.unusual_hours),
        ] {
            if v > 100 {
                return Err(format!("weight `{name}` ({v}) must be at most 100"));
            }
        }
        Ok(())
    }
}

/// A point on Earth, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

impl Location {
    /// Checks the coordinates are on Earth.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.lat.is_finite() && (-90.0..=90.0).contains(&self.lat)) {
            return Err(format!("latitude {} is not within -90..90", self.lat));
        }
        if !(self.lon.is_finite() && (-180.0..=180.0).contains(&self.lon)) {
            return Err(format!("longitude {} is not within -180..180", self.lon));
        }
        Ok(())
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(&self, other: &Location) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }
}

/// What a request says about where it comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    pub device_id: Option<String>,
    pub ip: Option<IpAddr>,
    pub location: Option<Location>,
    /// When the request happened (now, unless the caller says).
    pub time: DateTime<Utc>,
}

impl Signals {
    /// Whether the request carries anything to remember.
    pub fn is_empty(&self) -> bool {
        self.device_id.is_none() && self.ip.is_none() && self.location.is_none()
    }
}

/// The network an address belongs to for `new_network`: its /24 (IPv4) or /48 (IPv6).
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// When something was first and last seen, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub count: u64,
}

/// A location at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocatedAt {
    #[serde(flatten)]
    pub location: Location,
    pub at: DateTime<Utc>,
}

/// A subject's history in one store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RiskProfile {
    pub devices: BTreeMap<String, Seen>,
    pub ips: BTreeMap<String, Seen>,
    pub networks: BTreeMap<String, Seen>,
    pub last_location: Option<LocatedAt>,
    /// Recorded failures, oldest first.
    pub failures: Vec<DateTime<Utc>>,
    /// Observed hours per hour of day (UTC); each clock hour counts once.
    pub hours: [u64; 24],
    /// The last clock hour counted in `hours` (hours since the epoch).
    pub last_hour: Option<i64>,
}

/// The risk of one request, as Cedar sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assessment {
    pub score: i64,
    pub level: String,
    pub signals: Vec<String>,
}

impl Default for Assessment {
    fn default() -> Self {
        Self {
            score: 0,
            level: "low".into(),
            signals: vec![],
        }
    }
}

/// Scores a request against the history before it.
pub fn assess(profile: &RiskProfile, s: &Signals, rules: &RiskRules) -> Assessment {
    let w = &rules.weights;
    let mut fired: Vec<(&'static str, u32)> = Vec::new();
    let novelty = rules.score_first_sighting
        || !(profile.devices.is_empty() && profile.ips.is_empty() && profile.networks.is_empty());
    if let Some(d) = &s.device_id
        && novelty
        && !profile.devices.contains_key(d)
    {
        fired.push((NEW_DEVICE, w.new_device));
    }
    if let Some(ip) = s.ip
        && novelty
    {
        if !profile.ips.contains_key(&ip.to_string()) {
            fired.push((NEW_IP, w.new_ip));
        }
        if !profile.networks.contains_key(&network_of(ip)) {
            fired.push((NEW_NETWORK, w.new_network));
        }
    }
    let here = s.location.or_else(|| s.ip.and_then(|ip| rules.locate(ip)));
    if let (Some(here), Some(last)) = (&here, &profile.last_location) {
        let km = last.location.distance_km(here);
        let hours = (s.time - last.at).num_milliseconds() as f64 / 3_600_000.0;
        // Within a kilometre is the same place, whatever the clock says.
        let impossible = km > 1.0 && (hours <= 0.0 || km / hours > rules.max_travel_kmh);
        if impossible {
            fired.push((IMPOSSIBLE_TRAVEL, w.impossible_travel));
        }
    }
    let window = chrono::Duration::seconds(rules.failure_window_secs as i64);
    let recent = profile
        .failures
        .iter()
        .filter(|t| **t <= s.time && s.time - **t <= window)
        .count();
    if recent >= rules.failure_threshold as usize {
        fired.push((FAILED_ATTEMPTS, w.failed_attempts));
    }
    let observed: u64 = profile.hours.iter().sum();
    if observed >= u64::from(rules.usual_hours_min_history) && observed > 0 {
        let at_this_hour = profile.hours[s.time.hour() as usize];
        if at_this_hour * 100 <= observed * u64::from(rules.unusual_hour_max_percent) {
            fired.push((UNUSUAL_HOURS, w.unusual_hours));
        }
    }
    let score: u32 = fired.iter().map(|(_, w)| *w).sum::<u32>().min(100);
    let level = if score >= rules.high_at {
        "high"
    } else if score >= rules.medium_at {
        "medium"
    } else {
        "low"
    };
    Assessment {
        score: i64::from(score),
        level: level.to_string(),
        signals: fired
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(n, _)| n.to_string())
            .collect(),
    }
}

fn remember(map: &mut BTreeMap<String, Seen>, key: String, at: DateTime<Utc>) -> bool {
    match map.get_mut(&key) {
        Some(seen) => {
            seen.count += 1;
            // Only a later sighting moves `last_seen`; it is what retention looks at.
            if at > seen.last_seen {
                seen.last_seen = at;
            }
            false
        }
        None => {
            if map.len() >= MAX_REMEMBERED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
            map.insert(
                key,
                Seen {
                    first_seen: at,
                    last_seen: at,
                    count: 1,
                },
            );
            true
        }
    }
}

impl RiskProfile {
    /// Whether [`RiskProfile::record`] would change anything a later assessment reads.
    pub fn would_change(&self, s: &Signals) -> bool {
        let new_device = s
            .device_id
            .as_ref()
            .is_some_and(|d| !self.devices.contains_key(d));
        let new_ip = s.ip.is_some_and(|ip| {
            !self.ips.contains_key(&ip.to_string()) || !self.networks.contains_key(&network_of(ip))
        });
        let moved = s.location.is_some_and(|loc| {
            self.last_location.as_ref().is_none_or(|l| {
                l.location.distance_km(&loc) > 1.0 || s.time - l.at > chrono::Duration::minutes(10)
            })
        });
        let hour = s.time.timestamp().div_euclid(3600);
        new_device || new_ip || moved || self.last_hour.is_none_or(|h| hour > h)
    }

    /// Adds a request to the history. Returns whether something a later assessment reads
    /// changed (a new device, address, network, location or clock hour), i.e. whether the
    /// profile is worth saving now.
    pub fn record(&mut self, s: &Signals) -> bool {
        let mut changed = false;
        if let Some(d) = &s.device_id {
            changed |= remember(&mut self.devices, d.clone(), s.time);
        }
        if let Some(ip) = s.ip {
            changed |= remember(&mut self.ips, ip.to_string(), s.time);
            changed |= remember(&mut self.networks, network_of(ip), s.time);
        }
        if let Some(loc) = s.location {
            let moved = self.last_location.as_ref().is_none_or(|l| {
                l.location.distance_km(&loc) > 1.0 || s.time - l.at > chrono::Duration::minutes(10)
            });
            if moved {
                self.last_location = Some(LocatedAt {
                    location: loc,
                    at: s.time,
                });
                changed = true;
            }
        }
        let hour = s.time.timestamp().div_euclid(3600);
        if self.last_hour.is_none_or(|h| hour > h) {
            self.hours[s.time.hour() as usize] += 1;
            self.last_hour = Some(hour);
            changed = true;
        }
        changed
    }

    /// Adds a failed attempt (a failed login, a rejected credential).
    pub fn record_failure(&mut self, at: DateTime<Utc>) {
        let pos = self.failures.partition_point(|t| *t <= at);
        self.failures.insert(pos, at);
        if self.failures.len() > MAX_FAILURES {
            let extra = self.failures.len() - MAX_FAILURES;
            self.failures.drain(..extra);
        }
    }

    /// Forgets what is older than the retention (failures: older than the failure window
    /// or the retention, whichever is longer).
    pub fn prune(&mut self, now: DateTime<Utc>, rules: &RiskRules) {
        let keep_from = now - chrono::Duration::days(i64::from(rules.retention_days));
        for map in [&mut self.devices, &mut self.ips, &mut self.networks] {
            map.retain(|_, s| s.last_seen >= keep_from);
        }
        if self
            .last_location
            .as_ref()
            .is_some_and(|l| l.at < keep_from)
        {
            self.last_location = None;
        }
        let window = chrono::Duration::seconds(rules.failure_window_secs as i64);
        let failures_from = keep_from.min(now - window);
        self.failures.retain(|t| *t >= failures_from);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn signals(device: &str, ip: &str, time: &str) -> Signals {
        Signals {
            device_id: Some(device.into()),
            ip: Some(ip.parse().unwrap()),
            location: None,
            time: at(time),
        }
    }

    #[test]
    fn without_first_sighting_scoring_the_first_sighting_is_the_baseline() {
        let rules = RiskRules {
            score_first_sighting: false,
            ..RiskRules::default()
        };
        let mut p = RiskProfile::default();
        let first = signals("d1", "10.0.0.1", "2026-01-05T10:00:00Z");
        assert_eq!(assess(&p, &first, &rules), Assessment::default());
        p.record(&first);
        let other = signals("d2", "192.168.0.1", "2026-01-05T10:05:00Z");
        let a = assess(&p, &other, &rules);
        assert_eq!(a.signals, vec![NEW_DEVICE, NEW_IP, NEW_NETWORK]);
        assert_eq!(a.level, "medium");
    }

    #[test]
    fn a_known_device_and_address_score_zero_and_new_ones_add_their_weights() {
        let rules = RiskRules::default();
        let mut p = RiskProfile::default();
        let first = signals("d1", "10.0.0.1", "2026-01-05T10:00:00Z");
        let a = assess(&p, &first, &rules);
        assert_eq!(a.signals, vec![NEW_DEVICE, NEW_IP, NEW_NETWORK]);
        assert_eq!(a.score, 40);
        assert_eq!(a.level, "medium");
        p.record(&first);
        let again = signals("d1", "10.0.0.1", "2026-01-05T10:05:00Z");
        assert_eq!(assess(&p, &again, &rules), Assessment::default());
        // A new address in a known network: only `new_ip`.
        let same_net = signals("d1", "10.0.0.2", "2026-01-05T10:06:00Z");
        let a = assess(&p, &same_net, &rules);
        assert_eq!((a.score, a.signals), (10, vec![NEW_IP.to_string()]));
    }

    #[test]
    fn travel_faster_than_the_threshold_is_impossible() {
        let rules = RiskRules::default();
        let mut p = RiskProfile::default();
        let paris = Location {
            lat: 48.8566,
            lon: 2.3522,
        };
        let tokyo = Location {
            lat: 35.6762,
            lon: 139.6503,
        };
        let km = paris.distance_km(&tokyo);
        assert!((9600.0..9800.0).contains(&km), "{km}");
        let mut s = Signals {
            location: Some(paris),
            time: at("2026-01-05T10:00:00Z"),
            ..Signals::default()
        };
        p.record(&s);
        // One hour later in Tokyo: ~9700 km/h.
        s.location = Some(tokyo);
        s.time = at("2026-01-05T11:00:00Z");
        let a = assess(&p, &s, &rules);
        assert_eq!(a.signals, vec![IMPOSSIBLE_TRAVEL]);
        assert_eq!((a.score, a.level.as_str()), (50, "medium"));
        // Fourteen hours later: ~690 km/h, a flight.
        s.time = at("2026-01-06T00:00:00Z");
        assert_eq!(assess(&p, &s, &rules).score, 0);
    }

    #[test]
    fn a_configured_geo_source_places_addresses_by_the_most_specific_network() {
        let rules = RiskRules {
            geo: vec![
                GeoNetwork {
                    network: "10.0.0.0/8".into(),
                    lat: 48.8566,
                    lon: 2.3522,
                },
                GeoNetwork {
                    network: "10.9.0.0/16".into(),
                    lat: 35.6762,
                    lon: 139.6503,
                },
            ],
            ..RiskRules::default()
        }
        .prepared();
        assert!(rules.validate().is_ok());
        let paris = rules.locate("10.1.2.3".parse().unwrap()).unwrap();
        assert!((paris.lat - 48.8566).abs() < 1e-9);
        let tokyo = rules.locate("10.9.2.3".parse().unwrap()).unwrap();
        assert!((tokyo.lon - 139.6503).abs() < 1e-9);
        assert_eq!(rules.locate("192.168.0.1".parse().unwrap()), None);
        assert_eq!(rules.locate("::1".parse().unwrap()), None);
        // Paris then, minutes later, an address the source puts in Tokyo.
        let mut p = RiskProfile::default();
        let first = Signals {
            ip: Some("10.1.2.3".parse().unwrap()),
            location: rules.locate("10.1.2.3".parse().unwrap()),
            time: at("2026-01-05T10:00:00Z"),
            ..Signals::default()
        };
        p.record(&first);
        let s = Signals {
            ip: Some("10.9.2.3".parse().unwrap()),
            time: at("2026-01-05T10:05:00Z"),
            ..Signals::default()
        };
        assert!(
            assess(&p, &s, &rules)
                .signals
                .contains(&IMPOSSIBLE_TRAVEL.to_string())
        );
        let bad = RiskRules {
            geo: vec![GeoNetwork {
                network: "10.0.0.0/33".into(),
                lat: 0.0,
                lon: 0.0,
            }],
            ..RiskRules::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn failures_within_the_window_fire_and_older_ones_do_not() {
        let rules = RiskRules::default();
        let mut p = RiskProfile::default();
        for m in 0..5 {
            p.record_failure(at(&format!("2026-01-05T10:0{m}:00Z")));
        }
        let s = Signals {
            time: at("2026-01-05T10:06:00Z"),
            ..Signals::default()
        };
        assert_eq!(assess(&p, &s, &rules).signals, vec![FAILED_ATTEMPTS]);
        let later = Signals {
            time: at("2026-01-05T10:20:00Z"),
            ..Signals::default()
        };
        assert!(assess(&p, &later, &rules).signals.is_empty());
    }

    #[test]
    fn an_hour_the_subject_is_never_seen_at_is_unusual_once_there_is_history() {
        let rules = RiskRules::default();
        let mut p = RiskProfile::default();
        for day in 1..=25 {
            let s = Signals {
                time: at(&format!("2026-01-{day:02}T09:30:00Z")),
                ..Signals::default()
            };
            assert!(p.record(&s));
            // The same clock hour counts once.
            assert!(!p.record(&s));
        }
        assert_eq!(p.hours[9], 25);
        let night = Signals {
            time: at("2026-01-26T03:00:00Z"),
            ..Signals::default()
        };
        assert_eq!(assess(&p, &night, &rules).signals, vec![UNUSUAL_HOURS]);
        let morning = Signals {
            time: at("2026-01-26T09:10:00Z"),
            ..Signals::default()
        };
        assert!(assess(&p, &morning, &rules).signals.is_empty());
    }

    #[test]
    fn weights_and_thresholds_are_the_stores() {
        let rules = RiskRules {
            weights: Weights {
                new_device: 80,
                new_ip: 0,
                new_network: 0,
                ..Weights::default()
            },
            ..RiskRules::default()
        };
        let a = assess(
            &RiskProfile::default(),
            &signals("d", "10.0.0.1", "2026-01-05T10:00:00Z"),
            &rules,
        );
        assert_eq!((a.score, a.level.as_str()), (80, "high"));
        assert_eq!(a.signals, vec![NEW_DEVICE], "zero weights are off");
        assert!(
            RiskRules {
                medium_at: 80,
                high_at: 70,
                ..RiskRules::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn retention_forgets_old_sightings() {
        let rules = RiskRules {
            retention_days: 30,
            ..RiskRules::default()
        };
        let mut p = RiskProfile::default();
        p.record(&signals("old", "10.0.0.1", "2026-01-01T10:00:00Z"));
        p.record(&signals("new", "10.0.0.1", "2026-02-20T10:00:00Z"));
        p.record_failure(at("2026-01-01T10:00:00Z"));
        p.prune(at("2026-02-21T00:00:00Z"), &rules);
        assert!(!p.devices.contains_key("old"));
        assert!(p.devices.contains_key("new"));
        assert!(
            p.ips.contains_key("10.0.0.1"),
            "seen again within retention"
        );
        assert!(p.failures.is_empty());
    }
}
