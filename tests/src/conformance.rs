//! Runs every `*.fga.yaml` of OpenFGA's sample stores, as `gatehouse model test` does, and
//! reports assertions passed / failed per file.

use std::path::{Path, PathBuf};

fn sample_stores() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/openfga-sample-stores/stores")
}

fn store_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            store_files(&p, out);
        } else if p.to_string_lossy().ends_with(".fga.yaml") {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn openfga_sample_stores_pass() {
    let mut files = Vec::new();
    store_files(&sample_stores(), &mut files);
    assert!(
        files.len() >= 20,
        "expected the sample stores, found {} files",
        files.len()
    );
    let (mut total_pass, mut total_fail) = (0, 0);
    let mut failures = Vec::new();
    for f in &files {
        let name = f
            .strip_prefix(sample_stores())
            .unwrap()
            .display()
            .to_string();
        match gatehouse_engine::testfile::run_file(f).await {
            Ok(report) => {
                println!(
                    "{name}: {} passed, {} failed",
                    report.passed(),
                    report.failed()
                );
                total_pass += report.passed();
                total_fail += report.failed();
                if report.failed() > 0 {
                    failures.push(report.to_string());
                }
                assert!(report.passed() > 0, "{name} ran no assertions");
            }
            Err(e) => {
                println!("{name}: error {e}");
                total_fail += 1;
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    println!(
        "all sample stores: {total_pass} passed, {total_fail} failed in {} files",
        files.len()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
