//! The machine's raw JWT signing rate on all cores: the floor under token issuance.
//!
//!     cargo run --release -p gatehouse-benches --bin sign_rate -- RS256 10
//!
//! Signs claims shaped like Gatehouse's access tokens with one key, through the server's own
//! signer, on one thread per core for the given seconds, and prints signatures per second
//! (JSON).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_server::oidc::keys::{parse_alg, throwaway_signing_key};
use jsonwebtoken::Header;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let alg = parse_alg(&args.next().unwrap_or_else(|| "RS256".into()))?;
    let seconds: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let key = Arc::new(throwaway_signing_key(alg)?);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (key, stop, count) = (key.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut header = Header::new(alg);
                header.kid = Some("bench".into());
                header.typ = Some("at+jwt".into());
                while !stop.load(Ordering::Relaxed) {
                    let now = 1_800_000_000i64;
                    let claims = serde_json::json!({
                        "iss": "http://127.0.0.1:8080", "sub": "svc_bench", "aud": "http://127.0.0.1:8080",
                        "client_id": "svc_bench", "iat": now, "exp": now + 3600,
                        "jti": ulid::Ulid::new().to_string(),
                    });
                    if key.sign(&header, &claims).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({ "threads": threads, "signatures": n, "per_second": n as f64 / secs })
    );
    Ok(())
}
