//! A plugin that misbehaves on request, for the host's sandbox tests. `complete` does what the
//! `do` parameter says; `begin` answers a form (so that a well-behaved step can be compared),
//! and, once the form is posted, sends the browser to the callback with the form's fields, so
//! that the server's sign-in pages run `complete` as they would for a real method.

use gatehouse_pdk::*;

struct Hostile;

impl Plugin for Hostile {
    fn describe() -> Description {
        Description::strategy("hostile", env!("CARGO_PKG_VERSION"), "Hostile")
    }

    fn begin(request: Request) -> Result<BeginResult, Failure> {
        let Some(what) = request.param("do") else {
            return Ok(BeginResult::Form(vec![
                Field::new("do", "What to do", "text"),
                Field::new("arg", "With what", "text"),
            ]));
        };
        let arg = request.param("arg").unwrap_or_default();
        Ok(BeginResult::Redirect(format!(
            "{}?do={}&arg={}",
            request.callback_url(),
            escape(what),
            escape(arg)
        )))
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let arg = request.param("arg").unwrap_or_default().to_string();
        match request.param("do").unwrap_or_default() {
            // Guest code that never ends.
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            // Memory until there is none.
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("asked to panic"),
            // Vouches for the account `arg` (and, when it is an address, for that verified
            // address) and claims every factor there is: a third-party plugin's word neither
            // names a Gatehouse user nor skips a user's second factor.
            "claim" => Ok(Assertion {
                provider: "hostile".into(),
                email: arg.contains('@').then(|| arg.clone()),
                subject: arg,
                email_verified: true,
                claims: "{}".into(),
                methods: ["pwd", "hwk", "otp", "mfa"].map(String::from).to_vec(),
            }),
            // An answer far larger than any login needs.
            "flood" => Err(Failure::BadRequest("x".repeat(8 << 20))),
            "kv-set" => {
                kv::set("shared", arg.as_bytes(), 60).map_err(Failure::Unavailable)?;
                Err(Failure::BadRequest("set".into()))
            }
            "kv-get" => {
                let v = kv::get("shared").map_err(Failure::Unavailable)?;
                Err(Failure::BadRequest(match v {
                    Some(v) => format!("found {}", String::from_utf8_lossy(&v)),
                    None => "nothing".into(),
                }))
            }
            "kv-take" => {
                let v = kv::take("shared").map_err(Failure::Unavailable)?;
                Err(Failure::BadRequest(match v {
                    Some(v) => format!("took {}", String::from_utf8_lossy(&v)),
                    None => "nothing".into(),
                }))
            }
            "time" => {
                let t = clock::now_millis();
                let r = random::bytes(16);
                log::info("told the time");
                Err(Failure::BadRequest(format!("{t} {}", r.len())))
            }
            // Uses what a std guest may use without asking: a hash map (seeded through WASI).
            "std" => {
                let mut m = std::collections::HashMap::new();
                m.insert("k", 1);
                Err(Failure::BadRequest(format!("std {}", m.len())))
            }
            // Tries the environment and a file (WASI), which a plugin is never given.
            "env" => Err(Failure::BadRequest(format!(
                "env {:?}",
                std::env::var("HOME").ok()
            ))),
            "file" => Err(Failure::BadRequest(format!(
                "file {:?}",
                std::fs::read_to_string("/etc/passwd").map(|s| s.len()).ok()
            ))),
            // An HTTP request as the caller describes it: `arg` is the URL, `header` an
            // optional `name: value`, `method` the method.
            "fetch" => {
                let mut headers = Vec::new();
                if let Some((k, v)) = request.param("header").and_then(|h| h.split_once(':')) {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
                let r = http::fetch(&http::Request {
                    method: request.param("method").unwrap_or("GET").into(),
                    url: arg,
                    headers,
                    body: Vec::new(),
                });
                Err(Failure::BadRequest(match r {
                    Ok(r) => format!("status {} body {}", r.status, r.text()),
                    Err(e) => format!("refused: {e}"),
                }))
            }
            // Mail as the caller describes it: to the user `arg`, `n` messages with `subject`.
            "mail" => {
                let n: u32 = request.param("n").and_then(|n| n.parse().ok()).unwrap_or(1);
                let subject = request.param("subject").unwrap_or("Hello");
                let outcomes: Vec<String> = (0..n)
                    .map(|_| match email::send(&arg, subject, "plain text") {
                        Ok(()) => "sent".to_string(),
                        Err(e) => format!("refused: {e}"),
                    })
                    .collect();
                Err(Failure::BadRequest(outcomes.join("; ")))
            }
            other => Err(Failure::BadRequest(format!("unknown: {other}"))),
        }
    }
}

gatehouse_pdk::plugin!(Hostile);

/// Percent-encodes a query parameter's value (unreserved characters kept).
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
