//! The `gatehouse` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::identity::OPERATOR;

/// Gatehouse: relationship-based authorization with an OpenFGA-compatible API.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version)]
pub struct Cli {
    /// A TOML configuration file (the environment overrides it).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Run database migrations and exit.
    Migrate,
    /// Work with authorization models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Work with Cedar policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage organizations (prints JSON).
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Manage services, the OIDC clients of organizations (prints JSON).
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Manage service API keys (prints JSON).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Manage users (prints JSON).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage tiers, the limits organizations are held to (prints JSON).
    Tier {
        #[command(subcommand)]
        command: TierCommand,
    },
    /// Work with login plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Check a plugin directory (`plugin.toml` and `plugin.wasm`) as the server would at
    /// start, and print what the plugin is.
    Check { dir: std::path::PathBuf },
    /// Run one step of the plugin in a directory on the real host, the server's side played by
    /// a state file (accounts, key-value space, credential records, messages sent) kept from
    /// step to step; prints what the step answered, as JSON.
    Run {
        dir: std::path::PathBuf,
        #[arg(value_enum)]
        step: crate::identity::harness::Step,
        /// The organization's configuration of the plugin (JSON), checked against its schema.
        #[arg(long = "plugin-config", default_value = "{}")]
        plugin_config: String,
        /// A form field or callback parameter, `NAME=VALUE` (repeatable).
        #[arg(long = "param", value_parser = parse_pair)]
        params: Vec<(String, String)>,
        /// The login flow's id (the same for a `begin` and its `complete`).
        #[arg(long, default_value = "harness-flow")]
        flow: String,
        /// The callback URL the step is told.
        #[arg(long, default_value = "http://localhost:8080/login/callback/plugin")]
        callback: String,
        /// The user signed in so far (a second-factor step).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "harness-org")]
        organization: String,
        /// The harness's state (created if missing).
        #[arg(long, default_value = "plugin-harness.json")]
        state: std::path::PathBuf,
        /// An account to add to the state: `EMAIL` or `EMAIL=ID` (repeatable).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// Let the plugin reach loopback over plain HTTP (a provider running locally).
        #[arg(long)]
        allow_loopback: bool,
    },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

#[derive(Debug, Subcommand)]
pub enum TierCommand {
    /// List the tiers and their limits.
    List,
    /// Add a tier or change its limits.
    Set {
        name: String,
        #[arg(long)]
        max_users: i64,
        #[arg(long)]
        max_services: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key for a service; prints it (shown this once, stored as SHA-256).
    Create {
        /// The service's client_id.
        #[arg(long)]
        service: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, optionally a member of an organization.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Read the password from the first line of standard input (never from the command
        /// line, where other users of the machine could see it).
        #[arg(long)]
        password_stdin: bool,
        /// Mark the email address verified.
        #[arg(long)]
        verified: bool,
        /// Make the user a member of this organization (by slug)…
        #[arg(long)]
        org: Option<String>,
        /// …with this role: owner, admin, member or viewer.
        #[arg(long, default_value = "member", requires = "org")]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Register an organization (pending until approved).
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        tier: Option<String>,
    },
    /// Approve a pending organization.
    Approve { slug: String },
    /// Reject a pending organization.
    Reject { slug: String },
    /// Suspend an organization: its services refuse every sign-in and token.
    Suspend { slug: String },
    /// Lift an organization's suspension.
    Unsuspend { slug: String },
    /// Move an organization to another tier (what it has must fit the tier's limits).
    Tier {
        slug: String,
        #[arg(long)]
        tier: String,
    },
    /// Set the branding of an organization's login pages.
    Brand {
        slug: String,
        /// An https URL of the logo.
        #[arg(long)]
        logo_url: Option<String>,
        /// The primary color, `#rrggbb`.
        #[arg(long)]
        primary_color: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Add a service to an active organization; prints its client_id and, for a confidential
    /// client, its secret (shown this once).
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        /// A grant type (repeatable): authorization_code, client_credentials, refresh_token,
        /// urn:ietf:params:oauth:grant-type:device_code.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// An exact redirect URI (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client (no secret; PKCE required).
        #[arg(long)]
        public: bool,
        /// The organization's own application: its members sign in without a consent page.
        #[arg(long)]
        first_party: bool,
    },
    /// Give a confidential service a new secret; prints it (shown this once). The old one
    /// stops working.
    RotateSecret { client_id: String },
    /// Delete a service: it signs nobody in, its API keys are revoked, its tokens die.
    Delete { client_id: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate Cedar policies in strict mode against a Cedar schema (JSON) or the schema
    /// generated from a model.
    Validate {
        file: PathBuf,
        /// The authorization model (`.fga`, `.json` or `fga.mod`) to generate the schema from.
        #[arg(long)]
        model: Option<PathBuf>,
        /// A Cedar schema in JSON form.
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Run policy test files (model, tuples, policies, expected decisions) in-process.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Parse and type-check a model (`.fga` DSL, `.json`, or `fga.mod`); print its JSON form.
    Validate { file: PathBuf },
    /// Run a `.fga.yaml` store test file in-process, as `fga model test` does.
    Test {
        /// One or more store test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the command line and returns the process exit code.
pub async fn main(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            let config = Config::load(cli.config.as_deref())?;
            init_tracing(config.log_json);
            crate::serve::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Org { command } => {
            let config = Config::load(cli.config.as_deref())?;
            let id = crate::serve::identity(&config).await?;
            let out = match command {
                OrgCommand::Create { slug, name, tier } => serde_json::to_value(
                    id.create_organization(OPERATOR, &slug, &name, tier.as_deref())
                        .await?,
                )?,
                OrgCommand::Approve { slug } => {
                    serde_json::to_value(id.decide_organization(OPERATOR, &slug, true).await?)?
                }
                OrgCommand::Reject { slug } => {
                    serde_json::to_value(id.decide_organization(OPERATOR, &slug, false).await?)?
                }
                OrgCommand::Suspend { slug } => serde_json::json!({
                    "organization": id.suspend_organization(OPERATOR, &slug, true).await?,
                    "suspended": true,
                }),
                OrgCommand::Unsuspend { slug } => serde_json::json!({
                    "organization": id.suspend_organization(OPERATOR, &slug, false).await?,
                    "suspended": false,
                }),
                OrgCommand::Tier { slug, tier } => {
                    serde_json::to_value(id.change_tier(OPERATOR, &slug, &tier).await?)?
                }
                OrgCommand::Brand {
                    slug,
                    logo_url,
                    primary_color,
                } => serde_json::to_value(
                    id.brand_organization(
                        OPERATOR,
                        &slug,
                        logo_url.as_deref(),
                        primary_color.as_deref(),
                    )
                    .await?,
                )?,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Service { command } => {
            let config = Config::load(cli.config.as_deref())?;
            let id = crate::serve::identity(&config).await?;
            let out = match command {
                ServiceCommand::Create {
                    org,
                    name,
                    grants,
                    redirect_uris,
                    public,
                    first_party,
                } => serde_json::to_value(
                    id.create_service(
                        OPERATOR,
                        &org,
                        &name,
                        grants,
                        redirect_uris,
                        public,
                        first_party,
                    )
                    .await?,
                )?,
                ServiceCommand::RotateSecret { client_id } => {
                    serde_json::to_value(id.rotate_service_secret(OPERATOR, &client_id).await?)?
                }
                ServiceCommand::Delete { client_id } => serde_json::json!({
                    "service": id.delete_service(OPERATOR, &client_id).await?,
                    "deleted": true,
                }),
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command: PluginCommand::Check { dir },
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let out = crate::identity::plugins::check_dir(&dir, config.third_party_capabilities()?)
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command:
                PluginCommand::Run {
                    dir,
                    step,
                    plugin_config,
                    params,
                    flow,
                    callback,
                    user,
                    organization,
                    state,
                    accounts,
                    allow_loopback,
                },
        } => {
            let out = crate::identity::harness::run(&crate::identity::harness::Run {
                dir,
                step,
                config: plugin_config,
                params,
                flow,
                callback,
                user,
                organization,
                state,
                accounts,
                allow_loopback,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tier { command } => {
            let config = Config::load(cli.config.as_deref())?;
            let id = crate::serve::identity(&config).await?;
            if let TierCommand::Set {
                name,
                max_users,
                max_services,
            } = &command
            {
                id.set_tier(
                    OPERATOR,
                    name,
                    crate::db::tenancy::TierLimits {
                        max_users: *max_users,
                        max_services: *max_services,
                    },
                )
                .await?;
            }
            let tiers: Vec<_> = id
                .store
                .tiers()
                .await?
                .into_iter()
                .map(|(name, l)| serde_json::json!({ "name": name, "max_users": l.max_users, "max_services": l.max_services }))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "tiers": tiers }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    name,
                    password_stdin,
                    verified,
                    org,
                    role,
                },
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(zeroize::Zeroizing::new(
                    line.trim_end_matches(['\r', '\n']).to_string(),
                ))
            } else {
                None
            };
            let config = Config::load(cli.config.as_deref())?;
            let id = crate::serve::identity(&config).await?;
            if let Some(slug) = &org {
                // Checked before the user exists, so that a bad organization or role creates
                // nothing.
                id.organization_by_slug(slug).await?;
                if crate::identity::users::role_rank(&role).is_none() {
                    anyhow::bail!(
                        "role `{role}` is not one of {}",
                        crate::identity::users::ROLES.join(", ")
                    );
                }
            }
            let user = id
                .create_user(
                    OPERATOR,
                    &email,
                    &name,
                    password.as_deref().map(|p| p.as_str()),
                    verified,
                )
                .await?;
            let membership = match &org {
                Some(slug) => Some(id.add_member(OPERATOR, slug, &user.id, &role).await?),
                None => None,
            };
            let out = serde_json::json!({ "user": user, "membership": membership });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Apikey {
            command: ApikeyCommand::Create { service, name },
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let id = crate::serve::identity(&config).await?;
            let (k, key) = id.create_api_key(OPERATOR, &service, &name).await?;
            let mut out = serde_json::to_value(&k)?;
            out["key"] = serde_json::json!(key);
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = Config::load(cli.config.as_deref())?;
            init_tracing(config.log_json);
            if config.database_url.is_none() {
                std::fs::create_dir_all(&config.data_dir)?;
            }
            crate::db::SqlStore::connect(&config.database()).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Model {
            command: ModelCommand::Validate { file },
        } => match gatehouse_engine::testfile::load_model_file(&file) {
            Ok(m) => {
                println!("{}", serde_json::to_string_pretty(&m)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Policy {
            command:
                PolicyCommand::Validate {
                    file,
                    model,
                    schema,
                },
        } => match gatehouse_engine::policy::testfile::validate_file(
            &file,
            model.as_deref(),
            schema.as_deref(),
        ) {
            Ok(n) => {
                println!("{}: {n} policies valid", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(gatehouse_engine::Error::InvalidPolicies(issues)) => {
                for i in issues {
                    eprintln!("{}:{i}", file.display());
                }
                Ok(ExitCode::FAILURE)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Policy {
            command: PolicyCommand::Test { files },
        } => run_tests(&files, true).await,
        Command::Model {
            command: ModelCommand::Test { files },
        } => run_tests(&files, false).await,
    }
}

/// Runs model (`policies` false) or policy test files; non-zero exit on any failure.
async fn run_tests(files: &[PathBuf], policies: bool) -> Result<ExitCode> {
    let mut failed = 0usize;
    let mut passed = 0usize;
    for f in files {
        let report = if policies {
            gatehouse_engine::policy::testfile::run_file(f).await
        } else {
            gatehouse_engine::testfile::run_file(f).await
        };
        match report {
            Ok(report) => {
                print!("{report}");
                failed += report.failed();
                passed += report.passed();
            }
            Err(e) => {
                println!("# {}\nERROR {e}", f.display());
                failed += 1;
            }
        }
    }
    if files.len() > 1 {
        println!("total: {passed} passed, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
