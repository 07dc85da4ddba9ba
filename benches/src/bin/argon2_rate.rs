//! The machine's raw Argon2id verification rate on all cores, with the parameters Gatehouse
//! stores passwords with: the ceiling of password logins per second.
//!
//!     cargo run --release -p gatehouse-benches --bin argon2_rate -- 10
//!
//! Verifies one password against its hash (made by Gatehouse's own hashing function) on one
//! thread per core for the given seconds, and prints verifications per second (JSON).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_server::identity::users::{hash_password_blocking, verify_password_blocking};

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(10), |s| s.parse())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let password = b"correct horse battery";
    let hash = Arc::new(hash_password_blocking(password)?);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (hash, stop, count) = (hash.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if verify_password_blocking(password, &hash) {
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
        serde_json::json!({ "threads": threads, "verifications": n, "per_second": n as f64 / secs, "hash": hash.split('$').take(4).collect::<Vec<_>>().join("$") })
    );
    Ok(())
}
