//! Adaptive risk, the decision log, dry runs and stored entity attributes through the real
//! server, with their bad input.

use serde_json::{Value, json};

use crate::harness::{Backend, Server, for_each_backend, tk};

for_each_backend!(
    risk_signals_move_the_score_and_cedar_forbids_on_risk,
    risk_bad_input,
    decision_log_filters_pages_and_samples,
    decision_log_bad_input,
    dry_run_reports_flips_without_activating,
    entity_attributes_are_validated_and_used,
    entity_attributes_bad_input,
);

async fn seeded(backend: Backend) -> (Server, String) {
    let s = Server::start(backend).await;
    let (store, _) = s.sample_store().await;
    s.write_ok(
        &store,
        &[
            tk("user:anne", "owner", "document:1"),
            tk("user:bob", "viewer", "document:1"),
            tk("user:erin", "viewer", "document:1"),
            tk("folder:secret", "parent", "document:2"),
            tk("user:anne", "owner", "document:2"),
        ],
    )
    .await;
    (s, store)
}

async fn decide_ctx(s: &Server, store: &str, subject: &str, resource: &str, ctx: Value) -> Value {
    s.post(
        &format!("/stores/{store}/decide"),
        &json!({ "subject": subject, "action": "viewer", "resource": resource, "context": ctx }),
    )
    .await
    .ok()
}

fn signals(d: &Value) -> Vec<String> {
    d["risk"]["signals"]
        .as_array()
        .unwrap_or_else(|| panic!("no risk in {d}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `hh:mm` UTC on the day `day` days after 40 days ago (within the default retention).
fn at(day: i64, hh: u32, mm: u32) -> String {
    let date = chrono::Utc::now().date_naive() - chrono::Duration::days(40 - day);
    format!("{date}T{hh:02}:{mm:02}:00Z")
}

const PARIS: (f64, f64) = (48.8566, 2.3522);
const TOKYO: (f64, f64) = (35.6762, 139.6503);

fn ctx(device: &str, ip: &str, at: (f64, f64), time: &str) -> Value {
    json!({ "device_id": device, "ip": ip, "location": { "lat": at.0, "lon": at.1 }, "time": time })
}

async fn risk_signals_move_the_score_and_cedar_forbids_on_risk(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let policies = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };

@id("risky")
@reason("risk too high")
forbid (principal, action, resource) when { context.risk.score > 70 };
"#;
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": policies }),
    )
    .await
    .ok();
    let rules = s.get(&format!("/stores/{store}/risk/rules")).await.ok();
    assert_eq!(rules["weights"]["impossible_travel"], 50, "{rules}");
    assert_eq!(rules["weights"]["new_device"], 20, "{rules}");

    // First sight of everything: new device (20), new IP (10), new network (10).
    let t0 = &at(0, 9, 0);
    let d = decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        ctx("d1", "10.0.0.1", PARIS, t0),
    )
    .await;
    assert_eq!(signals(&d), ["new_device", "new_ip", "new_network"], "{d}");
    assert_eq!(d["risk"]["score"], 40, "{d}");
    assert_eq!(d["risk"]["level"], "medium", "{d}");
    assert_eq!(d["allowed"], true, "{d}");
    // Known device, address and place: nothing.
    let d = decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        ctx("d1", "10.0.0.1", PARIS, &at(0, 9, 5)),
    )
    .await;
    assert_eq!(
        (d["risk"]["score"].as_i64(), signals(&d).len()),
        (Some(0), 0),
        "{d}"
    );
    // Another subject has its own history.
    let d = decide_ctx(
        &s,
        &store,
        "user:bob",
        "document:1",
        ctx("d1", "10.0.0.1", PARIS, t0),
    )
    .await;
    assert_eq!(d["risk"]["score"], 40, "{d}");
    // Tokyo an hour after Paris: impossible travel (50), still allowed (not above 70).
    let d = decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        ctx("d1", "10.0.0.1", TOKYO, &at(0, 10, 0)),
    )
    .await;
    assert_eq!(signals(&d), ["impossible_travel"], "{d}");
    assert_eq!(d["risk"]["level"], "medium", "{d}");
    assert_eq!(d["allowed"], true, "{d}");
    // Five failed attempts, then Paris again minutes later on a new device: 50 + 20 + 30.
    // Recorded concurrently: none may overwrite another.
    let failures = format!("/stores/{store}/risk/failures");
    let sent = futures::future::join_all((0..5u32).map(|m| {
        let body = json!({ "subject": "user:anne", "time": at(0, 10, m) });
        let (s, failures) = (&s, &failures);
        async move { s.post(failures, &body).await }
    }))
    .await;
    for r in sent {
        r.ok();
    }
    let d = decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        ctx("d2", "10.0.0.1", PARIS, &at(0, 10, 6)),
    )
    .await;
    assert_eq!(
        signals(&d),
        ["new_device", "impossible_travel", "failed_attempts"],
        "{d}"
    );
    assert_eq!(
        (d["risk"]["score"].as_i64(), d["risk"]["level"].as_str()),
        (Some(100), Some("high")),
        "{d}"
    );
    assert_eq!(d["allowed"], false, "a forbid on risk takes effect: {d}");
    assert_eq!(d["rebac"], true, "{d}");
    assert_eq!(d["policies"][0]["id"], "risky", "{d}");
    assert_eq!(
        d["policies"][0]["annotations"]["reason"], "risk too high",
        "{d}"
    );
    // A refused request does not join the history: retried, it is just as risky.
    let again = decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        ctx("d2", "10.0.0.1", PARIS, &at(0, 10, 6)),
    )
    .await;
    assert_eq!(again["risk"]["score"], 100, "{again}");
    assert_eq!(again["allowed"], false, "{again}");

    // The store's own weights: impossible travel off, failures weigh less.
    let r = s
        .put(
            &format!("/stores/{store}/risk/rules"),
            &json!({ "weights": { "impossible_travel": 0, "failed_attempts": 10 } }),
        )
        .await
        .ok();
    assert_eq!(
        r["weights"]["new_device"], 20,
        "unnamed weights keep their defaults: {r}"
    );
    let d = decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        ctx("d3", "10.0.0.1", TOKYO, &at(0, 10, 7)),
    )
    .await;
    assert_eq!(signals(&d), ["new_device", "failed_attempts"], "{d}");
    assert_eq!(d["risk"]["score"], 30, "{d}");
    assert_eq!(d["allowed"], true, "{d}");

    // A configured geolocation source places addresses sent without a location.
    s.put(
        &format!("/stores/{store}/risk/rules"),
        &json!({ "geo": [
            { "network": "192.0.2.0/24", "lat": PARIS.0, "lon": PARIS.1 },
            { "network": "198.51.100.0/24", "lat": TOKYO.0, "lon": TOKYO.1 }
        ] }),
    )
    .await
    .ok();
    let d = decide_ctx(
        &s,
        &store,
        "user:erin",
        "document:1",
        json!({ "ip": "192.0.2.7", "time": at(1, 9, 0) }),
    )
    .await;
    assert_eq!(signals(&d), ["new_ip", "new_network"], "{d}");
    let d = decide_ctx(
        &s,
        &store,
        "user:erin",
        "document:1",
        json!({ "ip": "198.51.100.9", "time": at(1, 9, 30) }),
    )
    .await;
    assert_eq!(
        signals(&d),
        ["new_ip", "new_network", "impossible_travel"],
        "{d}"
    );

    // Usual hours: after enough (allowed) history at 09:00, 03:00 is unusual.
    for day in 10..=30 {
        decide_ctx(
            &s,
            &store,
            "user:bob",
            "document:1",
            json!({ "device_id": "c1", "time": at(day, 9, 10) }),
        )
        .await;
    }
    let d = decide_ctx(
        &s,
        &store,
        "user:bob",
        "document:1",
        json!({ "device_id": "c1", "time": at(31, 3, 0) }),
    )
    .await;
    assert_eq!(signals(&d), ["unusual_hours"], "{d}");

    // The history is readable and can be forgotten.
    let h = s
        .get(&format!("/stores/{store}/risk/history?subject=user:anne"))
        .await
        .ok();
    let devices = h["history"]["devices"].as_object().unwrap();
    assert!(
        devices.contains_key("d1") && devices.contains_key("d3"),
        "{h}"
    );
    assert!(
        !devices.contains_key("d2"),
        "refused requests are not remembered: {h}"
    );
    assert_eq!(h["history"]["failures"].as_array().unwrap().len(), 5, "{h}");
    assert!(
        h["history"]["ips"]
            .as_object()
            .unwrap()
            .contains_key("10.0.0.1"),
        "{h}"
    );
    let f = s
        .delete(&format!("/stores/{store}/risk/history?subject=user:anne"))
        .await
        .ok();
    assert_eq!(f["forgotten"], true, "{f}");
    let d = decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        ctx("d1", "10.0.0.1", PARIS, &at(3, 9, 0)),
    )
    .await;
    assert_eq!(signals(&d), ["new_device", "new_ip", "new_network"], "{d}");

    // Without signals and without policies reading risk, risk stays low and nothing is kept.
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": "permit (principal, action, resource) when { context.rebac };" }),
    )
    .await
    .ok();
    let d = decide_ctx(&s, &store, "user:dora", "document:1", json!({})).await;
    assert_eq!(d["risk"]["score"], 0, "{d}");
    let h = s
        .get(&format!("/stores/{store}/risk/history?subject=user:dora"))
        .await
        .ok();
    assert!(
        h["history"]["devices"].as_object().unwrap().is_empty(),
        "{h}"
    );
}

async fn risk_bad_input(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let rules_path = format!("/stores/{store}/risk/rules");
    let before = s.get(&rules_path).await.ok();
    for bad in [
        json!({ "medium_at": 80, "high_at": 70 }),
        json!({ "high_at": 101 }),
        json!({ "weights": { "new_device": 500 } }),
        json!({ "weights": { "teleport": 5 } }),
        json!({ "retention_days": 0 }),
        json!({ "geo": [{ "network": "10.0.0.0/33", "lat": 0.0, "lon": 0.0 }] }),
        json!({ "geo": [{ "network": "10.0.0.0/8", "lat": 95.0, "lon": 0.0 }] }),
        json!({ "geo": [{ "network": "10.0.0.0/8" }] }),
        json!({ "max_travel_kmh": -1 }),
        json!({ "failure_threshold": "five" }),
        json!([1, 2]),
    ] {
        s.put(&rules_path, &bad).await.assert_error(400, None);
    }
    assert_eq!(
        s.get(&rules_path).await.ok(),
        before,
        "bad rules change nothing"
    );
    s.get("/stores/01J00000000000000000000000/risk/rules")
        .await
        .assert_error(404, Some("store_id_not_found"));
    s.post(&rules_path, &json!({}))
        .await
        .assert_error(405, None);

    // Signals that do not parse: 400, and nothing joins the history.
    let path = format!("/stores/{store}/decide");
    for bad in [
        json!({ "ip": "300.1.1.1" }),
        json!({ "device_id": "" }),
        json!({ "device_id": 12 }),
        json!({ "location": { "lat": 95.0, "lon": 0.0 } }),
        json!({ "location": "Paris" }),
        json!({ "time": "last tuesday" }),
        json!({ "time": "2999-01-01T00:00:00Z" }),
        json!({ "device_id": "ok", "risk": { "score": 0 } }),
    ] {
        s.post(
            &path,
            &json!({ "subject": "user:anne", "action": "viewer", "resource": "document:1", "context": bad }),
        )
        .await
        .assert_error(400, Some("validation_error"));
    }
    // A well-formed request with a bad subject changes no history either.
    s.post(
        &path,
        &json!({ "subject": "user:anne", "action": "nope", "resource": "document:1", "context": { "device_id": "x" } }),
    )
    .await
    .assert_error(400, None);
    let h = s
        .get(&format!("/stores/{store}/risk/history?subject=user:anne"))
        .await
        .ok();
    assert!(
        h["history"]["devices"].as_object().unwrap().is_empty(),
        "{h}"
    );

    let failures = format!("/stores/{store}/risk/failures");
    for bad in [
        json!({}),
        json!({ "subject": "anne" }),
        json!({ "subject": "user:anne", "time": "soon" }),
        json!({ "subject": "user:anne", "time": "2999-01-01T00:00:00Z" }),
        json!({ "subject": "user:anne", "extra": 1 }),
    ] {
        s.post(&failures, &bad).await.assert_error(400, None);
    }
    s.get(&format!("/stores/{store}/risk/history"))
        .await
        .assert_error(400, Some("validation_error"));
    s.get(&format!("/stores/{store}/risk/history?subject=nobody"))
        .await
        .assert_error(400, Some("validation_error"));
    let h = s
        .get(&format!("/stores/{store}/risk/history?subject=user:anne"))
        .await
        .ok();
    assert!(
        h["history"]["failures"].as_array().unwrap().is_empty(),
        "{h}"
    );
}

async fn decisions(s: &Server, store: &str, query: &str) -> Value {
    s.get(&format!("/stores/{store}/decisions?{query}"))
        .await
        .ok()
}

fn logged(v: &Value) -> Vec<Value> {
    v["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

async fn decision_log_filters_pages_and_samples(backend: Backend) {
    let (s, store) = seeded(backend).await;
    decide_ctx(&s, &store, "user:anne", "document:1", json!({})).await;
    decide_ctx(&s, &store, "user:bob", "document:1", json!({})).await;
    decide_ctx(&s, &store, "user:carl", "document:1", json!({})).await;
    let az = s
        .post(
            &format!("/stores/{store}/access/v1/evaluation"),
            &json!({ "subject": { "type": "user", "id": "anne" }, "action": { "name": "owner" }, "resource": { "type": "document", "id": "2" } }),
        )
        .await
        .ok();
    assert_eq!(az["decision"], true, "{az}");

    let all = logged(&decisions(&s, &store, "").await);
    assert_eq!(all.len(), 4, "every decision is logged: {all:?}");
    // Newest first, with what was decided and why.
    assert_eq!(all[0]["action"], "owner");
    assert_eq!(all[3]["subject"], "user:anne");
    assert_eq!(all[3]["allowed"], true);
    assert_eq!(all[3]["policies"], json!(["baseline"]));
    assert_eq!(all[3]["policy_version"], "baseline");
    assert!(all[3]["revision"].as_u64().unwrap() > 0);
    assert!(all[3]["latency_us"].is_u64());
    assert_eq!(all[3]["risk"]["level"], "low");
    let denies = logged(&decisions(&s, &store, "decision=deny").await);
    assert_eq!(denies.len(), 1, "{denies:?}");
    assert_eq!(denies[0]["subject"], "user:carl");
    let anne = logged(&decisions(&s, &store, "subject=user:anne").await);
    assert_eq!(anne.len(), 2);
    let owner = logged(
        &decisions(
            &s,
            &store,
            "subject=user:anne&action=owner&resource=document:2",
        )
        .await,
    );
    assert_eq!(owner.len(), 1);
    let future = logged(&decisions(&s, &store, "since=2099-01-01T00:00:00Z").await);
    assert!(future.is_empty());
    let past = logged(
        &decisions(
            &s,
            &store,
            "until=2099-01-01T00:00:00Z&policy_version=baseline",
        )
        .await,
    );
    assert_eq!(past.len(), 4);

    // Pages of two, in order, without repeats.
    let p1 = decisions(&s, &store, "page_size=2").await;
    let token = p1["continuation_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    let p2 = decisions(
        &s,
        &store,
        &format!("page_size=2&continuation_token={token}"),
    )
    .await;
    let ids: Vec<Value> = logged(&p1)
        .into_iter()
        .chain(logged(&p2))
        .map(|d| d["id"].clone())
        .collect();
    let want: Vec<Value> = all.iter().map(|d| d["id"].clone()).collect();
    assert_eq!(ids, want);
    assert_eq!(p2["continuation_token"], "");

    // Sampling off: allows are no longer logged, denies still are (by default).
    let settings = format!("/stores/{store}/decision-log/settings");
    let got = s.get(&settings).await.ok();
    assert_eq!(
        got,
        json!({ "sample_rate": 1.0, "always_log_denies": true, "retention_days": 30, "redact": [] })
    );

    // Redaction: the value of a named context attribute is not kept, and a dry run does not
    // replay what it cannot know.
    s.put(&settings, &json!({ "redact": ["ip"] })).await.ok();
    decide_ctx(
        &s,
        &store,
        "user:anne",
        "document:1",
        json!({ "ip": "192.0.2.7" }),
    )
    .await;
    let entry = logged(&decisions(&s, &store, "page_size=1").await)[0].clone();
    assert_eq!(entry["context"]["ip"], "[redacted]", "{entry}");
    assert_eq!(entry["redacted"], json!(["ip"]), "{entry}");
    let dry = s
        .post(
            &format!("/stores/{store}/policies/dry-run"),
            &json!({ "policies": "permit (principal, action, resource) when { context.rebac };", "limit": 1 }),
        )
        .await
        .ok();
    assert_eq!(dry["replayed"], 0, "{dry}");
    assert_eq!(dry["skipped"][0]["decision_id"], entry["id"], "{dry}");
    assert!(
        dry["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("redacts"),
        "{dry}"
    );
    s.put(&settings, &json!({})).await.ok();
    let all = logged(&decisions(&s, &store, "").await);
    s.put(&settings, &json!({ "sample_rate": 0.0 })).await.ok();
    decide_ctx(&s, &store, "user:anne", "document:1", json!({})).await;
    decide_ctx(&s, &store, "user:carl", "document:1", json!({})).await;
    let now = logged(&decisions(&s, &store, "").await);
    assert_eq!(now.len(), all.len() + 1, "{now:?}");
    assert_eq!(now[0]["subject"], "user:carl");
    s.put(
        &settings,
        &json!({ "sample_rate": 0.0, "always_log_denies": false, "retention_days": 7 }),
    )
    .await
    .ok();
    decide_ctx(&s, &store, "user:carl", "document:1", json!({})).await;
    assert_eq!(
        logged(&decisions(&s, &store, "").await).len(),
        all.len() + 1
    );
}

async fn decision_log_bad_input(backend: Backend) {
    let (s, store) = seeded(backend).await;
    decide_ctx(&s, &store, "user:anne", "document:1", json!({})).await;
    for q in [
        "decision=maybe",
        "since=yesterday",
        "until=2026-13-01",
        "page_size=5000",
        "page_size=-1",
        "continuation_token=!!!",
        "colour=blue",
    ] {
        s.get(&format!("/stores/{store}/decisions?{q}"))
            .await
            .assert_error(400, None);
    }
    let settings = format!("/stores/{store}/decision-log/settings");
    for bad in [
        json!({ "sample_rate": 1.5 }),
        json!({ "sample_rate": -0.1 }),
        json!({ "retention_days": 0 }),
        json!({ "geo": [{ "network": "10.0.0.0/33", "lat": 0.0, "lon": 0.0 }] }),
        json!({ "geo": [{ "network": "10.0.0.0/8", "lat": 95.0, "lon": 0.0 }] }),
        json!({ "geo": [{ "network": "10.0.0.0/8" }] }),
        json!({ "retention": 3 }),
        json!({ "redact": [""] }),
        json!({ "redact": ["x".repeat(257)] }),
        json!({ "redact": (0..101).map(|i| format!("k{i}")).collect::<Vec<_>>() }),
        json!({ "redact": "ip" }),
        json!("all"),
    ] {
        s.put(&settings, &bad).await.assert_error(400, None);
    }
    assert_eq!(s.get(&settings).await.ok()["sample_rate"], 1.0, "unchanged");
    s.get("/stores/01J00000000000000000000000/decisions")
        .await
        .assert_error(404, Some("store_id_not_found"));
    // A refused decision is not logged.
    s.post(
        &format!("/stores/{store}/decide"),
        &json!({ "subject": "user:anne", "action": "viewer", "resource": "nosuchtype:1" }),
    )
    .await
    .assert_error(400, None);
    assert_eq!(logged(&decisions(&s, &store, "").await).len(), 1);
}

async fn dry_run_reports_flips_without_activating(backend: Backend) {
    let (s, store) = seeded(backend).await;
    decide_ctx(&s, &store, "user:anne", "document:1", json!({})).await;
    decide_ctx(&s, &store, "user:anne", "document:2", json!({})).await;
    decide_ctx(&s, &store, "user:carl", "document:1", json!({})).await;
    // Through AuthZEN, a context key the schema does not declare is left out, not refused:
    // the replay does the same, so the entry is replayed rather than skipped.
    let az = s
        .post(
            &format!("/stores/{store}/access/v1/evaluation"),
            &json!({
                "subject": { "type": "user", "id": "anne" },
                "action": { "name": "viewer" },
                "resource": { "type": "document", "id": "1" },
                "context": { "undeclared_key": "x" }
            }),
        )
        .await
        .ok();
    assert_eq!(az["decision"], true, "{az}");
    // The tuple that granted document:2 goes after the decision: the replay uses the
    // revision each decision was made at, so only the policy change can flip it.
    s.write(&store, &[], &[tk("user:anne", "owner", "document:2")])
        .await
        .ok();
    let candidate = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };

@id("no-secret")
@reason("secret folder")
forbid (principal, action, resource in folder::"secret");
"#;
    let path = format!("/stores/{store}/policies/dry-run");
    let r = s
        .post(&path, &json!({ "policies": candidate, "limit": 10 }))
        .await
        .ok();
    assert_eq!(r["replayed"], 4, "{r}");
    assert_eq!(r["skipped"], json!([]), "{r}");
    let flipped = r["flipped"].as_array().unwrap();
    assert_eq!(flipped.len(), 1, "{r}");
    assert_eq!(flipped[0]["resource"], "document:2");
    assert_eq!(flipped[0]["was_allowed"], true);
    assert_eq!(flipped[0]["now_allowed"], false);
    assert_eq!(flipped[0]["was_policies"], json!(["baseline"]));
    assert_eq!(flipped[0]["now_policies"][0]["id"], "no-secret");
    assert_eq!(
        flipped[0]["now_policies"][0]["annotations"]["reason"],
        "secret folder"
    );
    // `limit` replays only the newest.
    let r = s
        .post(&path, &json!({ "policies": candidate, "limit": 1 }))
        .await
        .ok();
    assert_eq!(
        (
            r["replayed"].as_u64(),
            r["flipped"].as_array().unwrap().len()
        ),
        (Some(1), 0),
        "{r}"
    );
    // Nothing was saved or activated.
    let active = s.get(&format!("/stores/{store}/policies")).await.ok();
    assert_eq!(active["id"], "baseline", "{active}");
    assert!(
        s.get(&format!("/stores/{store}/policy-versions"))
            .await
            .ok()["versions"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Bad candidates and limits: 400.
    s.post(
        &path,
        &json!({ "policies": "permit (principal, action, resource) when { context.nope };" }),
    )
    .await
    .assert_error(400, Some("invalid_policies"));
    s.post(&path, &json!({ "policies": "permit(" }))
        .await
        .assert_error(400, Some("invalid_policies"));
    for limit in [0, 1001] {
        s.post(&path, &json!({ "policies": candidate, "limit": limit }))
            .await
            .assert_error(400, Some("validation_error"));
    }
    s.post(&path, &json!({ "policies": candidate, "schema": "x" }))
        .await
        .assert_error(400, Some("validation_error"));
    s.post(&path, &json!({ "policy": candidate }))
        .await
        .assert_error(400, None);
}

/// The generated schema with attributes declared on `document` and `user`.
async fn schema_with_attributes(s: &Server, store: &str) -> Value {
    let mut schema = s.get(&format!("/stores/{store}/policy-schema")).await.ok()["schema"].clone();
    let types = schema[""]["entityTypes"].as_object_mut().unwrap();
    types.get_mut("document").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": { "classification": { "type": "String" } }
    });
    types.get_mut("user").unwrap()["shape"] = json!({
        "type": "Record",
        "attributes": {
            "clearance": { "type": "Long", "required": false },
            "office": { "type": "Extension", "name": "ipaddr", "required": false }
        }
    });
    schema
}

const CLASSIFIED: &str = r#"@id("baseline")
permit (principal, action, resource) when { context.rebac };

@id("need-clearance")
forbid (principal, action, resource is document)
when { resource has classification && resource.classification == "secret" }
unless { principal has clearance && principal.clearance >= 3 };
"#;

async fn entity_attributes_are_validated_and_used(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let schema = schema_with_attributes(&s, &store).await;
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": CLASSIFIED, "schema": schema }),
    )
    .await
    .ok();
    let path = format!("/stores/{store}/entity-attributes");
    let d = decide_ctx(&s, &store, "user:bob", "document:1", json!({})).await;
    assert_eq!(d["allowed"], true, "no attributes stored yet: {d}");
    let a = s
        .put(
            &path,
            &json!({ "entity": "document:1", "attributes": { "classification": "secret" } }),
        )
        .await
        .ok();
    assert_eq!(a["entity"], "document:1");
    assert_eq!(a["attributes"]["classification"], "secret");
    let d = decide_ctx(&s, &store, "user:bob", "document:1", json!({})).await;
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(d["policies"][0]["id"], "need-clearance", "{d}");
    s.put(
        &path,
        &json!({ "entity": "user:bob", "attributes": { "clearance": 3, "office": "10.1.0.0/16" } }),
    )
    .await
    .ok();
    let d = decide_ctx(&s, &store, "user:bob", "document:1", json!({})).await;
    assert_eq!(d["allowed"], true, "cleared: {d}");
    // Read, list (by type, in pages), delete: the decision follows.
    let got = s.get(&format!("{path}?entity=user:bob")).await.ok();
    assert_eq!(
        got["attributes"],
        json!({ "clearance": 3, "office": "10.1.0.0/16" })
    );
    s.put(
        &path,
        &json!({ "entity": "document:2", "attributes": { "classification": "public" } }),
    )
    .await
    .ok();
    let docs = s
        .get(&format!("{path}?type=document&page_size=1"))
        .await
        .ok();
    assert_eq!(docs["entities"][0]["entity"], "document:1", "{docs}");
    let token = docs["continuation_token"].as_str().unwrap();
    let docs2 = s
        .get(&format!(
            "{path}?type=document&page_size=1&continuation_token={token}"
        ))
        .await
        .ok();
    assert_eq!(docs2["entities"][0]["entity"], "document:2", "{docs2}");
    assert_eq!(docs2["continuation_token"], "");
    let all = s.get(&path).await.ok();
    assert_eq!(all["entities"].as_array().unwrap().len(), 3, "{all}");
    let r = s.delete(&format!("{path}?entity=user:bob")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let d = decide_ctx(&s, &store, "user:bob", "document:1", json!({})).await;
    assert_eq!(d["allowed"], false, "clearance gone: {d}");
    s.get(&format!("{path}?entity=user:bob"))
        .await
        .assert_error(404, Some("entity_not_found"));

    // AuthZEN `properties` are the entities' attributes for one request, over stored ones.
    let az = format!("/stores/{store}/access/v1/evaluation");
    let ask = |subject: Value, resource: Value| json!({ "subject": subject, "action": { "name": "viewer" }, "resource": resource });
    let bob = json!({ "type": "user", "id": "bob" });
    let doc = json!({ "type": "document", "id": "1" });
    let r = s.post(&az, &ask(bob.clone(), doc.clone())).await.ok();
    assert_eq!(r["decision"], false, "{r}");
    let cleared = json!({ "type": "user", "id": "bob", "properties": { "clearance": 5 } });
    let r = s.post(&az, &ask(cleared, doc.clone())).await.ok();
    assert_eq!(r["decision"], true, "{r}");
    let public =
        json!({ "type": "document", "id": "1", "properties": { "classification": "public" } });
    let r = s.post(&az, &ask(bob.clone(), public)).await.ok();
    assert_eq!(r["decision"], true, "{r}");
    let r = s.post(&az, &ask(bob.clone(), doc.clone())).await.ok();
    assert_eq!(r["decision"], false, "sent properties are not kept: {r}");
    let wrong = json!({ "type": "user", "id": "bob", "properties": { "clearance": "high" } });
    s.post(&az, &ask(wrong, doc))
        .await
        .assert_error(400, Some("validation_error"));
    // The log keeps sent properties, so a dry run replays those four decisions with them:
    // the same policies flip none (without them, the cleared and the public one would flip).
    let dry = s
        .post(
            &format!("/stores/{store}/policies/dry-run"),
            &json!({ "policies": CLASSIFIED, "schema": schema, "limit": 4 }),
        )
        .await
        .ok();
    assert_eq!(
        (
            dry["replayed"].as_u64(),
            dry["flipped"].as_array().map(Vec::len)
        ),
        (Some(4), Some(0)),
        "{dry}"
    );
    let sent = logged(&decisions(&s, &store, "page_size=4").await);
    assert!(
        sent.iter()
            .any(|d| d["attributes"]["user:bob"]["clearance"] == 5),
        "{sent:?}"
    );

    // Attributes stored under an older schema fail the decision rather than being ignored.
    s.put(
        &path,
        &json!({ "entity": "user:bob", "attributes": { "clearance": 3, "office": "10.1.0.0/16" } }),
    )
    .await
    .ok();
    let mut narrower = schema_with_attributes(&s, &store).await;
    narrower[""]["entityTypes"]["user"]["shape"]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("office");
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": CLASSIFIED, "schema": narrower }),
    )
    .await
    .ok();
    let r = s
        .post(
            &format!("/stores/{store}/decide"),
            &json!({ "subject": "user:bob", "action": "viewer", "resource": "document:1" }),
        )
        .await;
    let e = r.assert_error(400, Some("validation_error"));
    assert!(e["message"].as_str().unwrap().contains("user:bob"), "{e}");
    s.delete(&format!("{path}?entity=user:bob")).await;
    let d = decide_ctx(&s, &store, "user:bob", "document:1", json!({})).await;
    assert_eq!(
        d["allowed"], false,
        "secret, and no clearance any more: {d}"
    );
}

async fn entity_attributes_bad_input(backend: Backend) {
    let (s, store) = seeded(backend).await;
    let path = format!("/stores/{store}/entity-attributes");
    // With the generated schema no type declares attributes.
    s.put(
        &path,
        &json!({ "entity": "document:1", "attributes": { "classification": "secret" } }),
    )
    .await
    .assert_error(400, Some("validation_error"));
    let schema = schema_with_attributes(&s, &store).await;
    s.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": CLASSIFIED, "schema": schema }),
    )
    .await
    .ok();
    let big = "x".repeat(70 * 1024);
    for bad in [
        json!({ "entity": "document:1", "attributes": { "classification": 5 } }),
        json!({ "entity": "document:1", "attributes": {} }),
        json!({ "entity": "document:1", "attributes": { "classification": "a", "colour": "red" } }),
        json!({ "entity": "user:bob", "attributes": { "office": "not-an-ip" } }),
        json!({ "entity": "spaceship:1", "attributes": {} }),
        json!({ "entity": "document", "attributes": {} }),
        json!({ "entity": "document:1", "attributes": [] }),
        json!({ "entity": "document:1" }),
        json!({ "entity": "document:1", "attributes": { "classification": big } }),
    ] {
        s.put(&path, &bad).await.assert_error(400, None);
    }
    let all = s.get(&path).await.ok();
    assert!(
        all["entities"].as_array().unwrap().is_empty(),
        "nothing stored: {all}"
    );
    s.get(&format!("{path}?entity=nope"))
        .await
        .assert_error(400, Some("validation_error"));
    s.delete(&format!("{path}?entity=document:9"))
        .await
        .assert_error(404, Some("entity_not_found"));
    s.delete(&path)
        .await
        .assert_error(400, Some("validation_error"));
    s.get(&format!("{path}?page_size=0&continuation_token=zzz"))
        .await
        .assert_error(400, None);
}

/// An attribute change through node A reaches node B's decisions: at once through Redis,
/// within about a second without it.
async fn attribute_change_reaches_another_node(redis: bool) {
    let (a, b) = crate::consistency::two_nodes(redis).await;
    let store = a.create_store("attribute-nodes").await;
    a.write_model(&store, &crate::harness::sample_model()).await;
    a.write_ok(&store, &[tk("user:bob", "viewer", "document:1")])
        .await;
    let schema = schema_with_attributes(&a, &store).await;
    a.put(
        &format!("/stores/{store}/policies"),
        &json!({ "policies": CLASSIFIED, "schema": schema }),
    )
    .await
    .ok();
    let path = format!("/stores/{store}/entity-attributes");
    let limit = std::time::Duration::from_secs(if redis { 2 } else { 3 });
    for (round, classification) in ["secret", "public", "secret"].into_iter().enumerate() {
        // B has decided (and cached) before the change.
        decide_ctx(&b, &store, "user:bob", "document:1", json!({})).await;
        a.put(
            &path,
            &json!({ "entity": "document:1", "attributes": { "classification": classification } }),
        )
        .await
        .ok();
        let want = classification != "secret";
        let started = std::time::Instant::now();
        loop {
            let d = decide_ctx(&b, &store, "user:bob", "document:1", json!({})).await;
            if d["allowed"] == want {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "round {round}: node B still decides {} (redis: {redis}): {d}",
                d["allowed"]
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_change_reaches_another_node_with_redis() {
    attribute_change_reaches_another_node(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_change_reaches_another_node_without_redis() {
    attribute_change_reaches_another_node(false).await;
}

/// Two nodes on one PostgreSQL database record failures of one subject at the same time: each
/// save is a compare-and-swap on the history's version, so none overwrites another.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_failures_on_two_nodes_are_all_kept() {
    let (a, b) = crate::consistency::two_nodes(false).await;
    let store = a.create_store("risk-nodes").await;
    let failures = format!("/stores/{store}/risk/failures");
    let per_node = 40u32;
    let sent = futures::future::join_all((0..per_node * 2).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        let body = json!({ "subject": "user:anne", "time": at(0, 10, i % 60) });
        let failures = &failures;
        async move { node.post(failures, &body).await }
    }))
    .await;
    for r in sent {
        r.ok();
    }
    // Each node reads histories through a one-second cache: both show every failure within
    // about that.
    let started = std::time::Instant::now();
    for node in [&a, &b] {
        loop {
            let h = node
                .get(&format!("/stores/{store}/risk/history?subject=user:anne"))
                .await
                .ok();
            let kept = h["history"]["failures"].as_array().map_or(0, Vec::len);
            if kept == (per_node * 2) as usize {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "{kept} of {} failures kept: {h}",
                per_node * 2
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
