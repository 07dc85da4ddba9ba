//! Runner for `.fga.yaml` store test files, as `fga model test` reads them: a model (inline or
//! from a file, modular manifests included), tuples (inline or from files), and tests with
//! `check`, `list_objects` and `list_users` assertions. Each test runs on a fresh in-memory store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::graph::{self, CompiledModel, ListUsersFilter, Query};
use crate::model::{self, AuthorizationModel};
use crate::store::memory::MemoryStore;
use crate::store::{Datastore, StoreInfo, WriteOptions};
use crate::tuple::{ContextMap, TupleKey};

/// A store test file.
#[derive(Debug, Deserialize)]
pub struct StoreFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub model_file: Option<String>,
    #[serde(default)]
    pub tuples: Vec<TupleKey>,
    #[serde(default)]
    pub tuple_file: Option<String>,
    #[serde(default)]
    pub tuple_files: Vec<String>,
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// One named test: extra tuples and assertions.
#[derive(Debug, Deserialize)]
pub struct TestCase {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tuples: Vec<TupleKey>,
    #[serde(default)]
    pub tuple_file: Option<String>,
    #[serde(default)]
    pub check: Vec<CheckCase>,
    #[serde(default)]
    pub list_objects: Vec<ListObjectsCase>,
    #[serde(default)]
    pub list_users: Vec<ListUsersCase>,
}

/// One or several strings (`user: x` or `users: [x, y]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn all(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CheckCase {
    #[serde(alias = "users")]
    pub user: OneOrMany,
    #[serde(alias = "objects")]
    pub object: OneOrMany,
    #[serde(default)]
    pub context: Option<ContextMap>,
    #[serde(default)]
    pub contextual_tuples: Vec<TupleKey>,
    pub assertions: BTreeMap<String, bool>,
}

#[derive(Debug, Deserialize)]
pub struct ListObjectsCase {
    pub user: String,
    #[serde(rename = "type")]
    pub object_type: String,
    #[serde(default)]
    pub context: Option<ContextMap>,
    #[serde(default)]
    pub contextual_tuples: Vec<TupleKey>,
    pub assertions: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct ListUsersCase {
    pub object: String,
    pub user_filter: Vec<ListUsersFilter>,
    #[serde(default)]
    pub context: Option<ContextMap>,
    #[serde(default)]
    pub contextual_tuples: Vec<TupleKey>,
    pub assertions: BTreeMap<String, ListUsersExpectation>,
}

#[derive(Debug, Deserialize)]
pub struct ListUsersExpectation {
    #[serde(default)]
    pub users: Vec<String>,
}

/// The result of one assertion.
#[derive(Debug, Clone)]
pub struct AssertionResult {
    pub description: String,
    pub passed: bool,
    /// What was found instead, for failures.
    pub detail: String,
}

/// The results of one test.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub name: String,
    pub assertions: Vec<AssertionResult>,
}

/// The results of a whole file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub file: PathBuf,
    pub tests: Vec<TestReport>,
}

impl FileReport {
    pub fn passed(&self) -> usize {
        self.tests
            .iter()
            .flat_map(|t| &t.assertions)
            .filter(|a| a.passed)
            .count()
    }

    pub fn failed(&self) -> usize {
        self.tests
            .iter()
            .flat_map(|t| &t.assertions)
            .filter(|a| !a.passed)
            .count()
    }
}

impl std::fmt::Display for FileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "# {}", self.file.display())?;
        for t in &self.tests {
            let failed = t.assertions.iter().filter(|a| !a.passed).count();
            let status = if failed == 0 { "PASS" } else { "FAIL" };
            writeln!(
                f,
                "{status} {} ({}/{} passing)",
                t.name,
                t.assertions.len() - failed,
                t.assertions.len()
            )?;
            for a in t.assertions.iter().filter(|a| !a.passed) {
                writeln!(f, "  ✗ {}: {}", a.description, a.detail)?;
            }
        }
        writeln!(
            f,
            "summary: {} passed, {} failed",
            self.passed(),
            self.failed()
        )
    }
}

/// The model a test file names: inline DSL (`model`) or a file (`model_file`, relative to `dir`).
pub(crate) fn load_model(
    inline: Option<&str>,
    file: Option<&str>,
    dir: &Path,
) -> Result<AuthorizationModel> {
    match (inline, file) {
        (Some(dsl), _) => model::parse_dsl(dsl),
        (None, Some(f)) => load_model_file(&dir.join(f)),
        (None, None) => Err(Error::Validation(
            "the file names no `model` or `model_file`".into(),
        )),
    }
}

/// Inline tuples and those of `tuple_file` and `tuple_files` (relative to `dir`).
pub(crate) fn load_tuples(
    inline: &[TupleKey],
    file: Option<&String>,
    files: &[String],
    dir: &Path,
) -> Result<Vec<TupleKey>> {
    let mut tuples = inline.to_vec();
    for f in file.into_iter().chain(files) {
        tuples.extend(load_tuple_file(&dir.join(f))?);
    }
    Ok(tuples)
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Validation(format!("cannot read `{}`: {e}", path.display())))
}

/// Loads a model from a DSL file, a JSON file or an `fga.mod` manifest, type-checks it and
/// compiles its conditions.
pub fn load_model_file(path: &Path) -> Result<AuthorizationModel> {
    let m = load_model_file_unchecked(path)?;
    crate::condition::compile_all(&m)?;
    Ok(m)
}

fn load_model_file_unchecked(path: &Path) -> Result<AuthorizationModel> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "fga.mod" {
        return model::modular::load_modular(path);
    }
    let text = read(path)?;
    if path.extension().is_some_and(|e| e == "json") {
        let m: AuthorizationModel = serde_json::from_str(&text).map_err(|e| {
            Error::Validation(format!("`{}` is not a JSON model: {e}", path.display()))
        })?;
        model::validate_model(&m)?;
        return Ok(m);
    }
    model::parse_dsl(&text)
}

/// Loads tuples from a YAML, JSON or CSV tuple file.
pub fn load_tuple_file(path: &Path) -> Result<Vec<TupleKey>> {
    let text = read(path)?;
    let bad =
        |e: String| Error::Validation(format!("cannot parse tuples in `{}`: {e}", path.display()));
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text).map_err(|e| bad(e.to_string())),
        Some("csv") => {
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let header: Vec<&str> = lines
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .collect();
            let col = |name: &str| header.iter().position(|h| *h == name);
            let (ut, ui, ur, r, ot, oi) = (
                col("user_type"),
                col("user_id"),
                col("user_relation"),
                col("relation"),
                col("object_type"),
                col("object_id"),
            );
            let mut out = Vec::new();
            for line in lines {
                let cells: Vec<&str> = line.split(',').map(str::trim).collect();
                let get = |i: Option<usize>| i.and_then(|i| cells.get(i)).copied().unwrap_or("");
                let mut user = format!("{}:{}", get(ut), get(ui));
                if !get(ur).is_empty() {
                    user = format!("{user}#{}", get(ur));
                }
                out.push(TupleKey::new(
                    user,
                    get(r),
                    format!("{}:{}", get(ot), get(oi)),
                ));
            }
            Ok(out)
        }
        _ => serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string())),
    }
}

/// Parses and runs one store test file.
pub async fn run_file(path: &Path) -> Result<FileReport> {
    let text = read(path)?;
    let file: StoreFile = serde_yaml_ng::from_str(&text)
        .map_err(|e| Error::Validation(format!("cannot parse `{}`: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut model = load_model(file.model.as_deref(), file.model_file.as_deref(), dir)?;
    model.id = ulid::Ulid::new().to_string();
    let compiled = CompiledModel::new(model)?;
    let tuples = load_tuples(
        &file.tuples,
        file.tuple_file.as_ref(),
        &file.tuple_files,
        dir,
    )?;
    let mut tests = Vec::new();
    for (i, t) in file.tests.iter().enumerate() {
        let mut test_tuples = tuples.clone();
        test_tuples.extend(t.tuples.iter().cloned());
        if let Some(f) = &t.tuple_file {
            test_tuples.extend(load_tuple_file(&dir.join(f))?);
        }
        let name = if t.name.is_empty() {
            format!("test {}", i + 1)
        } else {
            t.name.clone()
        };
        tests.push(run_test(&compiled, &test_tuples, t, name).await?);
    }
    Ok(FileReport {
        file: path.to_path_buf(),
        tests,
    })
}

async fn run_test(
    model: &CompiledModel,
    tuples: &[TupleKey],
    t: &TestCase,
    name: String,
) -> Result<TestReport> {
    let ds = MemoryStore::new();
    let now = chrono::Utc::now();
    let store = ulid::Ulid::new().to_string();
    ds.create_store(&StoreInfo {
        id: store.clone(),
        name: name.clone(),
        created_at: now,
        updated_at: now,
    })
    .await?;
    ds.write_model(&store, &model.model).await?;
    for tk in tuples {
        model.validate_tuple(tk)?;
    }
    let opts = WriteOptions {
        ignore_duplicates: true,
        ignore_missing: false,
    };
    let rev = ds.write_tuples(&store, &[], tuples, opts).await?;
    let mut assertions = Vec::new();

    for c in &t.check {
        for user in c.user.all() {
            for object in c.object.all() {
                for (relation, expected) in &c.assertions {
                    let q = Query::new(
                        &store,
                        model,
                        &ds,
                        rev,
                        &c.contextual_tuples,
                        c.context.as_ref(),
                    );
                    let got = graph::check(&q, &object, relation, &user).await;
                    let description = format!("check {user} {relation} {object} is {expected}");
                    assertions.push(match got {
                        Ok(v) => AssertionResult {
                            description,
                            passed: v == *expected,
                            detail: format!("got {v}"),
                        },
                        Err(e) => AssertionResult {
                            description,
                            passed: false,
                            detail: format!("error: {e}"),
                        },
                    });
                }
            }
        }
    }
    for c in &t.list_objects {
        for (relation, expected) in &c.assertions {
            let q = Query::new(
                &store,
                model,
                &ds,
                rev,
                &c.contextual_tuples,
                c.context.as_ref(),
            );
            let got = graph::list_objects(&q, &c.object_type, relation, &c.user).await;
            let description = format!("list_objects {} {relation} {}", c.user, c.object_type);
            let got = got.map(|v| v.into_iter().collect());
            assertions.push(same_set(description, got, expected));
        }
    }
    for c in &t.list_users {
        for (relation, expected) in &c.assertions {
            let q = Query::new(
                &store,
                model,
                &ds,
                rev,
                &c.contextual_tuples,
                c.context.as_ref(),
            );
            let got = graph::list_users(&q, &c.object, relation, &c.user_filter).await;
            let description = format!("list_users {relation} {}", c.object);
            let got = got.map(|v| v.into_iter().map(|u| u.0).collect());
            assertions.push(same_set(description, got, &expected.users));
        }
    }
    Ok(TestReport { name, assertions })
}

/// Compares a list answer with the expected one as sets (order does not matter).
fn same_set(
    description: String,
    got: Result<BTreeSet<String>>,
    want: &[String],
) -> AssertionResult {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    match got {
        Ok(got) => AssertionResult {
            description,
            passed: got == want,
            detail: format!("got {got:?}, want {want:?}"),
        },
        Err(e) => AssertionResult {
            description,
            passed: false,
            detail: format!("error: {e}"),
        },
    }
}
