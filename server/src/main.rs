//! The `gatehouse` binary.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: request handling allocates many small short-lived buffers, which it serves faster
/// than the system allocator (see benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = gatehouse_server::cli::Cli::parse();
    match gatehouse_server::cli::main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
