//! The browsers of the password login benchmark (driven by `benches/login_load.py`): each of
//! `conns` tasks signs in again and again as a browser does (`GET /oauth2/authorize`, then
//! `POST /login` with the password and the binding cookie), keeping its device cookie. After
//! a warm-up, counts completed logins (303 with a code) for the given seconds; prints JSON.
//!
//!     login_client BASE CLIENT_ID EMAIL PASSWORD CONNS SECONDS

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn cookie_pairs(resp: &reqwest::Response, jar: &mut Vec<(String, String)>) {
    for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        let pair = text.split(';').next().unwrap_or_default();
        let Some((k, val)) = pair.split_once('=') else {
            continue;
        };
        jar.retain(|(n, _)| n != k);
        if !val.is_empty() {
            jar.push((k.to_string(), val.to_string()));
        }
    }
}

fn header(jar: &[(String, String)]) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [base, client_id, email, password, conns, seconds] = a.as_slice() else {
        anyhow::bail!("usage: login_client BASE CLIENT_ID EMAIL PASSWORD CONNS SECONDS");
    };
    let conns: usize = conns.parse()?;
    let seconds: u64 = seconds.parse()?;
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("state", "s"),
        (
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        ),
        ("code_challenge_method", "S256"),
    ])?;
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (base, query, email, password) =
            (base.clone(), query.clone(), email.clone(), password.clone());
        let (counting, stop, done, failed) =
            (counting.clone(), stop.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let mut jar: Vec<(String, String)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                jar.retain(|(k, _)| k != "gh_session");
                let r = http
                    .get(format!("{base}/oauth2/authorize?{query}"))
                    .header("cookie", header(&jar))
                    .send()
                    .await?;
                cookie_pairs(&r, &mut jar);
                let loc = r
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let Some((_, request)) = loc.split_once("request=") else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let body = serde_urlencoded::to_string([
                    ("request", request),
                    ("email", email.as_str()),
                    ("password", password.as_str()),
                ])?;
                let r = http
                    .post(format!("{base}/login"))
                    .header("cookie", header(&jar))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await?;
                cookie_pairs(&r, &mut jar);
                let ok = r.status() == 303
                    && r.headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .is_some_and(|l| l.contains("code="));
                if ok {
                    if counting.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({ "logins": n, "per_second": n as f64 / secs, "failed": failed.load(Ordering::Relaxed) })
    );
    Ok(())
}
