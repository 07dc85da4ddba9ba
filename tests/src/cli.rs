//! The `gatehouse` command line: `model test`, `model validate`, `migrate`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{PgDatabase, TempDir, binary};

fn sample_store(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/openfga-sample-stores/stores")
        .join(name)
}

/// Runs `gatehouse <args>` with a clean environment (plus `env`).
pub(crate) async fn gatehouse(args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = tokio::task::spawn_blocking(binary).await.unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `summary: <passed> passed, <failed> failed` of a `model test` run.
fn summary(stdout: &str) -> Option<(usize, usize)> {
    let re = regex::Regex::new(r"(?m)^summary: (\d+) passed, (\d+) failed$").unwrap();
    let c = re.captures(stdout)?;
    Some((c[1].parse().unwrap(), c[2].parse().unwrap()))
}

/// A copy of a sample store directory in a scratch dir.
fn copy_store(name: &str) -> (TempDir, PathBuf) {
    let tmp = TempDir::new("cli");
    let dst = tmp.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(sample_store(name)).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    (tmp, dst)
}

#[tokio::test(flavor = "multi_thread")]
async fn model_test_passes_a_sample_store() {
    let file = sample_store("github").join("store.fga.yaml");
    let out = gatehouse(&["model", "test", file.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "model test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let (passed, failed) =
        summary(&stdout).unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(passed >= 10, "{stdout}");
    assert_eq!(failed, 0, "{stdout}");

    // Several files: one summary each and a total.
    let other = sample_store("gdrive").join("store.fga.yaml");
    let out = gatehouse(
        &[
            "model",
            "test",
            file.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "model test of two files failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("total: ") && l.ends_with(" 0 failed")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_test_fails_on_a_wrong_expectation() {
    let (_tmp, dir) = copy_store("github");
    let file = dir.join("store.fga.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let broken = original.replacen("reader: true", "reader: false", 1);
    assert_ne!(
        broken, original,
        "the sample store changed: no `reader: true` to break"
    );
    std::fs::write(&file, broken).unwrap();
    let out = gatehouse(&["model", "test", file.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a wrong expectation passed:\n{stdout}\n{stderr}"
    );
    let (_, failed) =
        summary(&stdout).unwrap_or_else(|| panic!("no summary line in:\n{stdout}\n{stderr}"));
    assert_eq!(failed, 1, "{stdout}");
    assert!(
        stdout.contains("check user:anne reader repo:openfga/openfga"),
        "the failure is named:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_test_fails_on_a_broken_file() {
    let (_tmp, dir) = copy_store("github");
    // The model file is missing.
    std::fs::remove_file(dir.join("model.fga")).unwrap();
    let file = dir.join("store.fga.yaml");
    let out = gatehouse(&["model", "test", file.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a store without its model passed:\n{stdout}\n{stderr}"
    );
    // Not YAML at all.
    std::fs::write(&file, "tests: [unclosed\n  - :\n").unwrap();
    let out = gatehouse(&["model", "test", file.to_str().unwrap()], &[]).await;
    assert!(
        !out.status.success(),
        "an unparsable store file passed:\n{:?}",
        text(&out)
    );
    // A file that does not exist.
    let out = gatehouse(
        &["model", "test", dir.join("nope.fga.yaml").to_str().unwrap()],
        &[],
    )
    .await;
    assert!(
        !out.status.success(),
        "a missing file passed:\n{:?}",
        text(&out)
    );
    // A model with an undefined relation.
    std::fs::write(dir.join("model.fga"), "model\n  schema 1.1\n\ntype user\n\ntype repo\n  relations\n    define reader: [user] or writer\n").unwrap();
    std::fs::write(&file, "model_file: ./model.fga\ntests:\n  - name: t\n    check:\n      - user: user:a\n        object: repo:r\n        assertions:\n          reader: false\n").unwrap();
    let out = gatehouse(&["model", "test", file.to_str().unwrap()], &[]).await;
    assert!(
        !out.status.success(),
        "a store with an invalid model passed:\n{:?}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_validate_reports_line_and_column() {
    let tmp = TempDir::new("validate");
    let bad = tmp.path().join("bad.fga");
    // `editor` is used on line 8 but never defined; it starts at column 30.
    std::fs::write(&bad, "model\n  schema 1.1\n\ntype user\n\ntype document\n  relations\n    define viewer: [user] or editor\n").unwrap();
    let out = gatehouse(&["model", "validate", bad.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "an undefined relation validated:\n{stdout}\n{stderr}"
    );
    let all = format!("{stdout}{stderr}");
    let re = regex::Regex::new(r"\b8:(\d+)\b").unwrap();
    let col: usize = re
        .captures(&all)
        .unwrap_or_else(|| panic!("no `8:<column>` in:\n{all}"))[1]
        .parse()
        .unwrap();
    assert_eq!(col, 30, "column of `editor`:\n{all}");
    assert!(
        all.contains("editor"),
        "the message names the relation:\n{all}"
    );

    // A syntax error has a position too.
    let syntax = tmp.path().join("syntax.fga");
    std::fs::write(
        &syntax,
        "model\n  schema 1.1\n\ntype user\n  relations\n    define owner [user]\n",
    )
    .unwrap();
    let out = gatehouse(&["model", "validate", syntax.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a syntax error validated:\n{stdout}\n{stderr}"
    );
    assert!(
        regex::Regex::new(r"\b6:\d+\b")
            .unwrap()
            .is_match(&format!("{stdout}{stderr}")),
        "no `6:<column>` in:\n{stdout}{stderr}"
    );

    // A good model validates and prints its JSON form.
    let good = sample_store("github").join("model.fga");
    let out = gatehouse(&["model", "validate", good.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "the github model failed to validate:\n{stdout}\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("validate printed no JSON ({e}):\n{stdout}"));
    assert_eq!(v["schema_version"], "1.1");
    assert_eq!(
        v["type_definitions"].as_array().map(Vec::len),
        Some(4),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_prepares_a_fresh_postgres_database() {
    let db = tokio::task::spawn_blocking(PgDatabase::create)
        .await
        .unwrap();
    let tmp = TempDir::new("migrate");
    let data = tmp.path().to_str().unwrap().to_string();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("GATEHOUSE_DATA_DIR", data.as_str()),
    ];
    let out = gatehouse(&["migrate"], &env).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "migrate failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let tables =
        db.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'");
    assert!(
        tables.parse::<u32>().unwrap() >= 3,
        "migrate created {tables} tables"
    );
    // Running it again changes nothing and succeeds.
    let out = gatehouse(&["migrate"], &env).await;
    assert!(
        out.status.success(),
        "a second migrate failed:\n{:?}",
        text(&out)
    );
    let again =
        db.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'");
    assert_eq!(tables, again);
    // A database that cannot be reached is an error, not a hang or a success.
    let out = gatehouse(
        &["migrate"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nope")],
    )
    .await;
    assert!(
        !out.status.success(),
        "migrate against nothing succeeded:\n{:?}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_prepares_sqlite_in_the_data_dir() {
    let tmp = TempDir::new("migrate-sqlite");
    let data = tmp.path().join("data");
    let out = gatehouse(
        &["migrate"],
        &[("GATEHOUSE_DATA_DIR", data.to_str().unwrap())],
    )
    .await;
    assert!(
        out.status.success(),
        "migrate on SQLite failed:\n{:?}",
        text(&out)
    );
    assert!(
        data.join("gatehouse.db").is_file(),
        "no gatehouse.db in the data dir"
    );
}

fn examples() -> PathBuf {
    crate::harness::workspace_dir().join("policies/examples")
}

#[tokio::test]
async fn policy_test_passes_the_examples() {
    let file = examples().join("documents.policy.yaml");
    let out = gatehouse(&["policy", "test", file.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(summary(&stdout), Some((12, 0)), "{stdout}");
}

#[tokio::test]
async fn policy_test_fails_on_a_wrong_expectation() {
    let tmp = TempDir::new("policy-test");
    for f in ["documents.fga", "documents.cedar"] {
        std::fs::copy(examples().join(f), tmp.path().join(f)).unwrap();
    }
    let yaml = std::fs::read_to_string(examples().join("documents.policy.yaml")).unwrap();
    // The secret folder is sealed: expecting anne to read her key document there is wrong.
    let wrong = yaml.replace(
        "{ subject: user:anne, action: viewer, resource: document:keys, expect: deny, policies: [no-secret] }",
        "{ subject: user:anne, action: viewer, resource: document:keys, expect: allow }",
    );
    assert_ne!(wrong, yaml);
    let file = tmp.path().join("wrong.policy.yaml");
    std::fs::write(&file, wrong).unwrap();
    let out = gatehouse(&["policy", "test", file.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a wrong expectation passed:\n{stdout}\n{stderr}"
    );
    assert_eq!(summary(&stdout), Some((11, 1)), "{stdout}");
    assert!(stdout.contains("got deny by [\"no-secret\"]"), "{stdout}");
}

#[tokio::test]
async fn policy_validate_reports_policy_and_position() {
    let model = examples().join("documents.fga");
    let good = examples().join("documents.cedar");
    let out = gatehouse(
        &[
            "policy",
            "validate",
            good.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("4 policies valid"), "{stdout}");

    let tmp = TempDir::new("policy-validate");
    let bad = tmp.path().join("bad.cedar");
    // Line 4 names an action the model does not have.
    std::fs::write(
        &bad,
        "@id(\"ok\")\npermit (principal, action, resource) when { context.rebac };\n@id(\"fly\")\npermit (principal, action == Action::\"fly\", resource);\n",
    )
    .unwrap();
    let out = gatehouse(
        &[
            "policy",
            "validate",
            bad.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "an unknown action validated:\n{stdout}\n{stderr}"
    );
    assert!(
        regex::Regex::new(r"bad\.cedar:4:\d+: policy `fly`")
            .unwrap()
            .is_match(&stderr),
        "no `bad.cedar:4:<column>: policy `fly`` in:\n{stderr}"
    );
    // Neither a model nor a schema: nothing to validate against.
    let out = gatehouse(&["policy", "validate", good.to_str().unwrap()], &[]).await;
    assert!(!out.status.success());
}

/// A policy directory's Cedar validates against its schema and its test file passes whole.
async fn policy_dir_passes(dir: &str, cedar: &str, tests: &str, policies: usize, decisions: usize) {
    let dir = crate::harness::workspace_dir().join(dir);
    let (cedar, schema) = (dir.join(cedar), dir.join("schema.json"));
    let out = gatehouse(
        &[
            "policy",
            "validate",
            cedar.to_str().unwrap(),
            "--schema",
            schema.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{policies} policies valid")),
        "{stdout}"
    );
    let file = dir.join(tests);
    let out = gatehouse(&["policy", "test", file.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(summary(&stdout), Some((decisions, 0)), "{stdout}");
}

#[tokio::test]
async fn policy_library_validates_and_passes_its_tests() {
    policy_dir_passes(
        "policies/library",
        "templates.cedar",
        "templates.policy.yaml",
        9,
        20,
    )
    .await;
}

#[tokio::test]
async fn platform_policies_validate_and_pass_their_tests() {
    policy_dir_passes(
        "policies/platform",
        "platform.cedar",
        "platform.policy.yaml",
        6,
        62,
    )
    .await;
}

/// Bad settings stop `gatehouse serve` before it listens, with a message naming the setting.
#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_stop_the_server_with_a_clear_message() {
    let dir = TempDir::new("settings");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    for (name, value, says) in [
        ("GATEHOUSE_PASSWORD_HASH_SLOTS", "0", "password_hash_slots"),
        (
            "GATEHOUSE_PASSWORD_HASH_SLOTS",
            "many",
            "GATEHOUSE_PASSWORD_HASH_SLOTS",
        ),
        ("GATEHOUSE_SIGNUP", "maybe", "GATEHOUSE_SIGNUP"),
        ("GATEHOUSE_CODE_TTL_SECS", "0", "code_ttl_secs"),
        (
            "GATEHOUSE_CONSOLE_REDIRECT_URIS",
            "http://console.example.com/cb",
            "GATEHOUSE_CONSOLE_REDIRECT_URIS",
        ),
    ] {
        let out = gatehouse(
            &["serve"],
            &[
                ("GATEHOUSE_DATA_DIR", data),
                ("GATEHOUSE_ADDR", "127.0.0.1:0"),
                (name, value),
            ],
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{name}={value} started: {stdout}");
        assert!(stderr.contains(says), "{name}={value}: {stderr}");
    }
}
