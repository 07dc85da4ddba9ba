//! Runner for policy test files (`gatehouse policy test FILE.yaml`): a model, tuples, a Cedar
//! policy set (and optionally a schema), and decisions with the expected outcome. Each test runs
//! on a fresh in-memory store through [`Engine::decide`], the code path of the decide endpoint.
//!
//! ```yaml
//! model: |            # or model_file
//!   model
//!     schema 1.1
//!   type user
//!   type doc
//!     relations
//!       define viewer: [user]
//! policies: |         # or policies_file
//!   permit (principal, action, resource) when { context.rebac };
//! schema_file: schema.json   # optional Cedar schema (JSON); generated from the model if absent
//! tuples:             # or tuple_file / tuple_files
//!   - { user: user:anne, relation: viewer, object: doc:1 }
//! entities:           # stored attributes (the schema must declare them)
//!   - { entity: doc:1, attributes: { classification: public } }
//! tests:
//!   - name: anne reads
//!     tuples: []      # extra tuples for this test
//!     entities: []    # extra attributes for this test
//!     decisions:
//!       - { subject: user:anne, action: viewer, resource: doc:1, expect: allow, policies: [policy0] }
//!       - { subject: user:bob, action: viewer, resource: doc:1, context: {}, expect: deny }
//!       # risk signals (device_id, ip, location, time) build the subject's history in order
//!       - { subject: user:anne, action: viewer, resource: doc:1, context: { device_id: d1 }, expect: allow, risk_level: medium }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::service::{DecisionRequest, Engine, EngineConfig};
use crate::store::WriteOptions;
use crate::store::memory::MemoryStore;
use crate::testfile::{
    AssertionResult, FileReport, TestReport, load_model, load_model_file, load_tuples, read,
};
use crate::tuple::TupleKey;

/// A policy test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub model_file: Option<String>,
    #[serde(default)]
    pub policies: Option<String>,
    #[serde(default)]
    pub policies_file: Option<String>,
    #[serde(default)]
    pub schema_file: Option<String>,
    /// Policies linked from templates.
    #[serde(default)]
    pub links: Vec<crate::store::TemplateLink>,
    #[serde(default)]
    pub tuples: Vec<TupleKey>,
    #[serde(default)]
    pub tuple_file: Option<String>,
    #[serde(default)]
    pub tuple_files: Vec<String>,
    /// Stored entity attributes.
    #[serde(default)]
    pub entities: Vec<EntityCase>,
    #[serde(default)]
    pub tests: Vec<PolicyTest>,
}

/// Attributes stored for one entity before the decisions run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityCase {
    pub entity: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// One named test: extra tuples and decisions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tuples: Vec<TupleKey>,
    #[serde(default)]
    pub entities: Vec<EntityCase>,
    #[serde(default)]
    pub decisions: Vec<DecisionCase>,
}

/// The outcome a decision should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

/// One decision and what it should be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCase {
    pub subject: String,
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    pub expect: Expect,
    /// The determining policy ids, when the test pins them (in any order).
    #[serde(default)]
    pub policies: Option<Vec<String>>,
    /// The risk level the decision should see, when the test pins it.
    #[serde(default)]
    pub risk_level: Option<String>,
    /// The risk signals that should fire (in any order), when the test pins them.
    #[serde(default)]
    pub risk_signals: Option<Vec<String>>,
}

/// Loads a policy text and, if given, a schema, relative to `dir`.
fn sources(file: &PolicyFile, dir: &Path) -> Result<(String, Option<serde_json::Value>)> {
    let text = match (&file.policies, &file.policies_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read(&dir.join(f))?,
        (None, None) => {
            return Err(Error::Validation(
                "the file names no `policies` or `policies_file`".into(),
            ));
        }
    };
    let schema = file
        .schema_file
        .as_ref()
        .map(|f| {
            let p = dir.join(f);
            serde_json::from_str(&read(&p)?)
                .map_err(|e| Error::Validation(format!("cannot parse `{}`: {e}", p.display())))
        })
        .transpose()?;
    Ok((text, schema))
}

/// Parses and runs one policy test file.
pub async fn run_file(path: &Path) -> Result<FileReport> {
    let file: PolicyFile = serde_yaml_ng::from_str(&read(path)?)
        .map_err(|e| Error::Validation(format!("cannot parse `{}`: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let model = load_model(file.model.as_deref(), file.model_file.as_deref(), dir)?;
    let (policies, schema) = sources(&file, dir)?;
    let tuples = load_tuples(
        &file.tuples,
        file.tuple_file.as_ref(),
        &file.tuple_files,
        dir,
    )?;
    let mut tests = Vec::new();
    for (i, t) in file.tests.iter().enumerate() {
        let name = if t.name.is_empty() {
            format!("test {}", i + 1)
        } else {
            t.name.clone()
        };
        let engine = Engine::new(Arc::new(MemoryStore::new()), EngineConfig::default());
        let store = engine.create_store(&name).await?.id;
        engine.write_model(&store, model.clone()).await?;
        let mut all = tuples.clone();
        all.extend(t.tuples.iter().cloned());
        let opts = WriteOptions {
            ignore_duplicates: true,
            ignore_missing: false,
        };
        for chunk in all.chunks(engine.config().max_tuples_per_write) {
            engine.write(&store, None, chunk, &[], opts).await?;
        }
        engine
            .write_policies(&store, &policies, schema.clone(), file.links.clone(), true)
            .await?;
        for e in file.entities.iter().chain(&t.entities) {
            engine
                .set_entity_attributes(&store, &e.entity, e.attributes.clone())
                .await?;
        }
        let mut assertions = Vec::new();
        for d in &t.decisions {
            let req = DecisionRequest {
                subject: d.subject.clone(),
                action: d.action.clone(),
                resource: d.resource.clone(),
                context: d.context.clone(),
                ..DecisionRequest::default()
            };
            let description = format!(
                "{} {} {} → {}",
                d.subject,
                d.action,
                d.resource,
                if d.expect == Expect::Allow {
                    "allow"
                } else {
                    "deny"
                }
            );
            let (passed, detail) = match engine.decide(&store, &req).await {
                Err(e) => (false, format!("error: {e}")),
                Ok(got) => {
                    let mut ids: Vec<String> = got.policies.iter().map(|p| p.id.clone()).collect();
                    ids.sort();
                    let outcome_ok = got.allowed == (d.expect == Expect::Allow);
                    let ids_ok = d.policies.as_ref().is_none_or(|want| {
                        let mut want = want.clone();
                        want.sort();
                        want == ids
                    });
                    let level_ok = d.risk_level.as_ref().is_none_or(|l| *l == got.risk.level);
                    let signals_ok = d.risk_signals.as_ref().is_none_or(|want| {
                        let (mut want, mut got) = (want.clone(), got.risk.signals.clone());
                        want.sort();
                        got.sort();
                        want == got
                    });
                    (
                        outcome_ok && ids_ok && level_ok && signals_ok,
                        format!(
                            "got {} by {ids:?}, risk {} {} {:?}{}",
                            if got.allowed { "allow" } else { "deny" },
                            got.risk.score,
                            got.risk.level,
                            got.risk.signals,
                            if got.errors.is_empty() {
                                String::new()
                            } else {
                                format!(", errors {:?}", got.errors)
                            }
                        ),
                    )
                }
            };
            assertions.push(AssertionResult {
                description,
                passed,
                detail,
            });
        }
        tests.push(TestReport { name, assertions });
    }
    Ok(FileReport {
        file: PathBuf::from(path),
        tests,
    })
}

/// Validates a policy file against a schema file or the schema generated from a model file;
/// returns the number of policies and templates.
pub fn validate_file(
    policies: &Path,
    model: Option<&Path>,
    schema: Option<&Path>,
) -> Result<usize> {
    let text = read(policies)?;
    let schema_json = match (schema, model) {
        (Some(s), _) => serde_json::from_str(&read(s)?)
            .map_err(|e| Error::Validation(format!("cannot parse `{}`: {e}", s.display())))?,
        (None, Some(m)) => super::schema::generate(&load_model_file(m)?),
        (None, None) => {
            return Err(Error::Validation(
                "give the model (`--model`) or a Cedar schema (`--schema`) to validate against"
                    .into(),
            ));
        }
    };
    let schema = Arc::new(super::parse_schema(&schema_json)?);
    let compiled = super::CompiledPolicies::compile(&text, &[], schema)?;
    Ok(compiled.set.policies().count() + compiled.set.templates().count())
}
