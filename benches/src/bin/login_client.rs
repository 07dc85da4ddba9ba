//! The browsers of the password login benchmark (driven by `benches/login_load.py`): each of
//! `conns` browsers signs in again and again as a browser does (`GET /oauth2/authorize`, then
//! `POST /login` with the password and the binding cookie), keeping its device cookie. After
//! a warm-up, counts completed logins (303 with a code) for the given seconds; prints JSON.
//!
//!     login_client BASE CLIENT_ID EMAIL PASSWORD CONNS SECONDS
//!
//! The browsers share the server's cores, so they are made to cost little: every browser is a
//! task on one thread, each with one kept-alive HTTP/1.1 connection driven by hyper's
//! connection API (no pool, no URL parsing, no cross-thread wake-ups). What they send and
//! check is what a browser sends and what the login answers.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use hyper::{Request, Response, StatusCode};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The cookies a response sets, kept in `jar` (a cookie set empty is removed).
fn cookie_pairs<B>(resp: &Response<B>, jar: &mut Vec<(String, String)>) {
    for v in resp.headers().get_all(SET_COOKIE) {
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

fn location<B>(resp: &Response<B>) -> &str {
    resp.headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
}

/// One browser: signs in until `stop`, counting successes in `done` while `counting`.
struct Browser {
    host: String,
    authorize: String,
    email: String,
    password: String,
    counting: Rc<Cell<bool>>,
    stop: Rc<Cell<bool>>,
    done: Rc<Cell<u64>>,
    failed: Rc<Cell<u64>>,
}

impl Browser {
    async fn run(self) -> anyhow::Result<()> {
        let stream = tokio::net::TcpStream::connect(&self.host).await?;
        stream.set_nodelay(true)?;
        let (mut http, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::task::spawn_local(conn);
        let mut jar: Vec<(String, String)> = Vec::new();
        while !self.stop.get() {
            jar.retain(|(k, _)| k != "gh_session");
            let r = http
                .send_request(
                    Request::get(self.authorize.as_str())
                        .header(HOST, self.host.as_str())
                        .header(COOKIE, header(&jar))
                        .body(Full::new(Bytes::new()))?,
                )
                .await?;
            cookie_pairs(&r, &mut jar);
            let request = location(&r)
                .split_once("request=")
                .map(|(_, id)| id.to_string());
            r.into_body().collect().await?;
            let Some(request) = request else {
                self.failed.set(self.failed.get() + 1);
                continue;
            };
            let body = serde_urlencoded::to_string([
                ("request", request.as_str()),
                ("email", self.email.as_str()),
                ("password", self.password.as_str()),
            ])?;
            let r = http
                .send_request(
                    Request::post("/login")
                        .header(HOST, self.host.as_str())
                        .header(COOKIE, header(&jar))
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(Full::new(Bytes::from(body)))?,
                )
                .await?;
            cookie_pairs(&r, &mut jar);
            let ok = r.status() == StatusCode::SEE_OTHER && location(&r).contains("code=");
            r.into_body().collect().await?;
            if !ok {
                self.failed.set(self.failed.get() + 1);
            } else if self.counting.get() && !self.stop.get() {
                self.done.set(self.done.get() + 1);
            }
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [base, client_id, email, password, conns, seconds] = a.as_slice() else {
        anyhow::bail!("usage: login_client BASE CLIENT_ID EMAIL PASSWORD CONNS SECONDS");
    };
    let Some(host) = base.strip_prefix("http://") else {
        anyhow::bail!("BASE must be http://HOST:PORT");
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let (counting, stop) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let (done, failed) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
    let secs = local.block_on(&runtime, async {
        let browsers: Vec<_> = (0..conns)
            .map(|_| {
                tokio::task::spawn_local(
                    Browser {
                        host: host.to_string(),
                        authorize: format!("/oauth2/authorize?{query}"),
                        email: email.clone(),
                        password: password.clone(),
                        counting: counting.clone(),
                        stop: stop.clone(),
                        done: done.clone(),
                        failed: failed.clone(),
                    }
                    .run(),
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        counting.set(true);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.set(true);
        let secs = started.elapsed().as_secs_f64();
        for b in browsers {
            b.await??;
        }
        anyhow::Ok(secs)
    })?;
    let n = done.get();
    println!(
        "{}",
        serde_json::json!({ "logins": n, "per_second": n as f64 / secs, "failed": failed.get() })
    );
    Ok(())
}
