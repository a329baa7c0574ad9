//! The `roster` command line: `serve`, `migrate` and the operator verbs.
//! Human output by default, `--json` for scripts; bad input is a clear
//! message on stderr and exit code 2.

use crate::config::Config;
use crate::domains::DomainName;
use crate::http::AppState;
use crate::model::*;
use crate::service::{
    Actor, CheckKind, DirectConnectionInput, DomainView, NewCredential, NewOrganization, NewRoleMapping, NewSsoClient,
    PlannedChange, ReconcilePlan, Roster, ServiceError, SsoSettingsChange,
};
use crate::service::{CreatedWebhook, NewWebhook, Operator, WebhookChange, WebhookScope};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "roster",
    version,
    about = "Identity provisioning gateway: SCIM, SSO and an admin API for your product's organizations"
)]
pub struct Cli {
    /// TOML configuration file; `ROSTER_*` environment variables override it.
    #[arg(long, global = true, env = "ROSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Write a consistent copy of the SQLite database while it serves.
    Backup {
        /// The new file to write.
        #[arg(long)]
        to: PathBuf,
    },
    /// Replace the SQLite database with a backup (stop `roster serve` first);
    /// the replaced file is kept as `<database>.before-restore`.
    Restore {
        /// The backup to restore.
        #[arg(long)]
        from: PathBuf,
    },
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage admin API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(CredentialCommand),
    /// Manage SCIM tokens.
    #[command(subcommand, name = "scim-token")]
    ScimToken(CredentialCommand),
    /// Manage an organization's email domains and their DNS verification.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Invite people (each gets an email with the accept link) and follow their invitations.
    #[command(subcommand)]
    Invitation(InvitationCommand),
    /// The organization portal (`/portal`).
    #[command(subcommand)]
    Portal(PortalCommand),
    /// Register a product that starts single sign-on logins and redeems their codes.
    #[command(subcommand, name = "sso-client")]
    SsoClient(SsoClientCommand),
    /// Set an organization's own OpenID connection (an Okta or Entra OIDC app).
    #[command(subcommand, name = "sso-connection")]
    SsoConnection(SsoConnectionCommand),
    /// Map SCIM groups and IdP roles to roles.
    #[command(subcommand, name = "role-mapping")]
    RoleMapping(RoleMappingCommand),
    /// Plan and apply what brings seats and roles back in line: expired
    /// invitations, role drift, seat overage, sessions of suspended members.
    Reconcile {
        /// Only this organization (default: every organization).
        #[arg(long)]
        org: Option<String>,
        /// Print the plan without applying it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Organizations' OpenID client secrets and webhook signing secrets, sealed at rest with `secrets_key_file`.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Webhook endpoints: an organization's, or deployment-wide (every organization's events).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Keys of the deployment's operator (the product's back office and
    /// billing): the operator API and every admin route on behalf of any organization.
    #[command(subcommand, name = "operator-key")]
    OperatorKey(OperatorKeyCommand),
    /// Setup links for an organization's IT admin: the single sign-on, SCIM
    /// and domain set-up pages of that organization, and nothing else.
    #[command(subcommand, name = "setup-link")]
    SetupLink(SetupLinkCommand),
}

#[derive(Debug, Subcommand)]
pub enum SetupLinkCommand {
    /// Create a link; prints its URL once.
    Create {
        #[arg(long)]
        org: String,
        /// What the link may set up: sso, scim, domains (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<String>,
        /// Expire after this many hours (1 to 168); default 24.
        #[arg(long)]
        expires_in_hours: Option<u32>,
    },
    /// List the organization's links (never their URLs).
    List {
        #[arg(long)]
        org: String,
    },
    /// Revoke a link; it stops working at once.
    Revoke {
        #[arg(long)]
        org: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorKeyCommand {
    /// Create a key; prints its secret once.
    Create {
        #[arg(long)]
        name: String,
        /// Expire after this many days (1 to 3650); default: never.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List the keys (never their secrets).
    List,
    /// Revoke a key; it stops working at once.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add an endpoint; prints its signing secret once.
    Add {
        /// Where events are POSTed.
        #[arg(long)]
        url: String,
        /// Organization id; without it the endpoint hears every organization.
        #[arg(long)]
        org: Option<String>,
        /// Event types or families, comma-separated (`member.*,seats.updated`); default: every event.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the organization's endpoints, or the deployment-wide ones.
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Give an endpoint a new secret; the previous one keeps signing during the overlap.
    Rotate {
        #[arg(long)]
        id: String,
        #[arg(long)]
        org: Option<String>,
        /// Hours the previous secret keeps signing (0 to 168, default 24).
        #[arg(long)]
        overlap_hours: Option<i64>,
    },
    /// Enable an endpoint (its held events go out at once).
    Enable {
        #[arg(long)]
        id: String,
        #[arg(long)]
        org: Option<String>,
    },
    /// Disable an endpoint (its events are held until it is enabled).
    Disable {
        #[arg(long)]
        id: String,
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete an endpoint and its delivery log.
    Remove {
        #[arg(long)]
        id: String,
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Count the secrets sealed with the current key, with an older one, and in clear.
    Status,
    /// Reseal every secret with the current key (the first in secrets_key_file).
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum RoleMappingCommand {
    /// List the organization's mappings.
    List {
        /// Organization id.
        #[arg(long)]
        org: String,
    },
    /// Map a group or IdP role to a role (read, write or admin).
    Add {
        /// Organization id.
        #[arg(long)]
        org: String,
        /// `group` (displayName or externalId) or `idp_role` (SCIM roles, SSO tenant roles).
        #[arg(long)]
        source: String,
        /// The group or role name.
        #[arg(long)]
        value: String,
        #[arg(long)]
        role: String,
    },
    /// Remove a mapping.
    Remove {
        /// Organization id.
        #[arg(long)]
        org: String,
        /// Mapping id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SsoClientCommand {
    /// Create a client; prints its secret once.
    Create {
        /// Organization id; without it the client serves every organization of the deployment.
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        name: String,
        /// An exact URL Roster may send the browser back to (repeatable).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SsoConnectionCommand {
    /// Set (or replace) the organization's connection; the provider's discovery document must answer.
    Set {
        /// Organization id.
        #[arg(long)]
        org: String,
        /// The provider's issuer, exactly as its discovery document states it.
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        client_id: String,
        /// A file holding the client secret (kept out of the shell history and process list).
        #[arg(long)]
        client_secret_file: PathBuf,
        /// Scopes to request (default: openid email profile).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Accept ID tokens without `email_verified=true`.
        #[arg(long)]
        allow_unverified_email: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive a SCIM server: create users, look them up, page, add them to a group, deactivate, delete.
    Scim {
        /// The SCIM base URL, e.g. http://127.0.0.1:8080/scim/v2.
        #[arg(long)]
        url: String,
        /// The SCIM bearer token.
        #[arg(long, env = "ROSTER_BENCH_TOKEN")]
        token: String,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Look-ups and GETs to send (default: as many as users).
        #[arg(long)]
        reads: Option<usize>,
        /// Members per group PATCH.
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// The server's process id on this machine: each phase then reports
        /// the server's CPU time per request.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Users the organization already holds: list pages start anywhere among them too.
        #[arg(long, default_value_t = 0)]
        existing: usize,
    },
    /// Webhook delivery lag under a steady SCIM create load: a receiver of
    /// its own hears the `member.added` webhooks (add an endpoint pointing
    /// at `--listen` first).
    Webhooks {
        /// The SCIM base URL, e.g. http://127.0.0.1:8080/scim/v2.
        #[arg(long)]
        url: String,
        #[arg(long, env = "ROSTER_BENCH_TOKEN")]
        token: String,
        /// SCIM creates a second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Where the receiver listens.
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: std::net::SocketAddr,
        /// No endpoint points at the receiver: measure the creates alone.
        #[arg(long)]
        no_webhooks: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Add a domain and print the TXT record that proves it.
    Add(DomainArgs),
    /// Check the domain's TXT record now.
    Verify(DomainArgs),
    /// List the organization's domains.
    List {
        /// Organization id.
        #[arg(long)]
        org: String,
    },
    /// Remove a domain; it stops routing at once.
    Remove(DomainArgs),
}

#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// Print a one-time link that signs a member in to the portal (15
    /// minutes, single use, in any browser): for operators and local
    /// development.
    Link {
        /// Organization id.
        #[arg(long)]
        org: String,
        /// An active member's email.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InvitationCommand {
    /// Invite one person; the invitation email goes out at once.
    Create {
        /// Organization id.
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        /// owner, admin, write or read.
        #[arg(long)]
        role: String,
    },
    /// Invite everyone in a CSV file of `email,role` lines (all or none).
    Import {
        /// Organization id.
        #[arg(long)]
        org: String,
        /// The CSV file.
        file: PathBuf,
    },
    /// List invitations with their email's delivery.
    List {
        /// Organization id.
        #[arg(long)]
        org: String,
        /// pending, accepted, revoked or expired.
        #[arg(long)]
        status: Option<String>,
    },
    /// Send an invitation again (a new link; the old one stops working).
    Resend(InvitationArgs),
    /// Revoke a pending invitation; frees its seat.
    Revoke(InvitationArgs),
}

#[derive(Debug, Args)]
pub struct InvitationArgs {
    /// Organization id.
    #[arg(long)]
    org: String,
    /// Invitation id.
    id: String,
}

#[derive(Debug, Args)]
pub struct DomainArgs {
    /// Organization id.
    #[arg(long)]
    org: String,
    /// The domain, e.g. acme.com.
    name: String,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization with its first Owner; prints an Owner API key once.
    Create {
        #[arg(long)]
        name: String,
        /// Purchased seats (the Owner takes one).
        #[arg(long)]
        seats: i64,
        #[arg(long)]
        owner_email: String,
        #[arg(long, default_value = "enterprise_seat_yearly")]
        plan: String,
        #[arg(long)]
        contact_email: Option<String>,
    },
    /// List organizations.
    List,
    /// Show or change an organization's single sign-on settings.
    #[command(subcommand)]
    Sso(OrgSsoCommand),
}

#[derive(Debug, Subcommand)]
pub enum OrgSsoCommand {
    /// Show the settings.
    Show {
        /// Organization id.
        #[arg(long)]
        org: String,
    },
    /// Change the settings named; the others stay as they are.
    Set {
        /// Organization id.
        #[arg(long)]
        org: String,
        /// The tenant ID the deployment's tenant connection signs the organization in with.
        #[arg(long, conflicts_with = "clear_tenant_id")]
        tenant_id: Option<String>,
        /// Remove the tenant ID.
        #[arg(long)]
        clear_tenant_id: bool,
        /// Members may sign in only through SSO (true or false).
        #[arg(long)]
        enforce: Option<bool>,
        /// New users of a verified domain join on first sign-in (true or false).
        #[arg(long)]
        auto_assign: Option<bool>,
        /// Role of members who join through SSO: admin, write or read.
        #[arg(long)]
        default_role: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Create a credential; prints its secret once.
    Create(CredentialArgs),
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// Organization id.
    #[arg(long)]
    org: String,
    #[arg(long)]
    name: String,
    /// Role for an API key: owner, admin, write or read.
    #[arg(long)]
    role: Option<String>,
    #[arg(long)]
    expires_in_days: Option<u32>,
}

/// A command-line failure: bad input (exit 2) or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<ServiceError> for CliError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(s) => CliError::Other(anyhow::Error::from(s).context("storage failure")),
            other => CliError::Input(other.to_string()),
        }
    }
}

fn input<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, CliError> {
    r.map_err(|e| CliError::Input(format!("--{what}: {e}")))
}

/// The domain argument (`roster domain add --org ID acme.com`).
fn domain_arg(raw: &str) -> Result<DomainName, CliError> {
    DomainName::parse(raw).map_err(|e| CliError::Input(format!("domain `{raw}`: {e}")))
}

/// `--org`: an organization's id.
fn org_id(raw: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        CliError::Input(format!(
            "--org: `{raw}` is not an organization id; an id is a UUID such as \
             0192f6a0-7c1e-7d55-9e2b-5b8a3c1d2e4f (`roster org list` shows them)"
        ))
    })
}

/// Parses the process arguments and runs the command.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Input(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(CliError::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Bench(BenchCommand::Scim { url, token, users, concurrency, reads, batch, server_pid, existing }) =
        cli.command
    {
        // The load generator needs no configuration or database of its own.
        let opts = crate::bench::BenchOptions {
            url,
            token,
            users,
            concurrency,
            reads: reads.unwrap_or(users),
            batch,
            server_pid,
            existing,
            run_id: Uuid::new_v4().simple().to_string()[..8].to_string(),
        };
        let as_json = cli.json;
        let reports = crate::bench::run(opts, |r| {
            if !as_json {
                println!("{r}");
            }
        })
        .await?;
        if as_json {
            println!("{}", serde_json::to_string(&reports).map_err(anyhow::Error::from)?);
        }
        return Ok(());
    }
    if let Command::Bench(BenchCommand::Webhooks { url, token, rate, seconds, listen, no_webhooks }) = cli.command {
        if !(rate > 0.0 && seconds > 0.0) {
            return Err(CliError::Input("rate and seconds must be greater than 0".into()));
        }
        let run_id = Uuid::new_v4().simple().to_string()[..8].to_string();
        let report = crate::bench::webhook_lag(crate::bench::LagOptions {
            url,
            token,
            rate,
            seconds,
            listen,
            run_id,
            expect_webhooks: !no_webhooks,
        })
        .await?;
        if cli.json {
            println!("{}", serde_json::to_string(&report).map_err(anyhow::Error::from)?);
        } else {
            println!("{report}");
        }
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref()).map_err(|e| CliError::Input(e.to_string()))?;
    let serving = matches!(cli.command, Command::Serve);
    crate::telemetry::init(config.log_format, if serving { "info" } else { "warn" });
    let unknown = Config::unknown_variables();
    if !unknown.is_empty() {
        tracing::warn!(variables = ?unknown, "ignoring ROSTER_* environment variables that name no setting");
    }
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = crate::store::connect(config.database_url.expose(), 1).await.map_err(anyhow::Error::from)?;
            store.migrate().await.map_err(anyhow::Error::from)?;
            println!("{}", if cli.json { json!({"migrated": true}).to_string() } else { "migrations applied".into() });
            Ok(())
        }
        Command::Backup { to } => {
            let report = crate::store::backup::backup(config.database_url.expose(), &to).await.map_err(refused)?;
            print_backup(&report, "Backed up to", cli.json);
            Ok(())
        }
        Command::Restore { from } => {
            let url = config.database_url.expose();
            let report = crate::store::backup::restore(url, &from).await.map_err(refused)?;
            print_backup(&report, "Restored", cli.json);
            Ok(())
        }
        Command::Org(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            org(&roster, cmd, cli.json).await
        }
        Command::ApiKey(CredentialCommand::Create(args)) => {
            let roster = AppState::from_config(config).await?.roster;
            credential(&roster, CredentialKind::ApiKey, args, cli.json).await
        }
        Command::ScimToken(CredentialCommand::Create(args)) => {
            let roster = AppState::from_config(config).await?.roster;
            credential(&roster, CredentialKind::ScimToken, args, cli.json).await
        }
        Command::Domain(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            domain(&roster, cmd, cli.json).await
        }
        Command::Invitation(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            invitation(&roster, cmd, cli.json).await
        }
        Command::Portal(PortalCommand::Link { org, email }) => {
            let roster = AppState::from_config(config).await?.roster;
            let org = org_id(&org)?;
            let email = input("email", Email::parse(&email))?;
            let who = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            let link = roster.portal_link(org, &email, &format!("cli:{who}")).await?;
            if cli.json {
                println!("{}", json!({ "url": link, "expires_in_minutes": crate::service::SIGN_IN_LINK_TTL_MINUTES }));
            } else {
                println!("{link}");
            }
            Ok(())
        }
        Command::OperatorKey(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            operator_key(&roster, cmd, cli.json).await
        }
        Command::SetupLink(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            setup_link(&roster, cmd, cli.json).await
        }
        Command::Webhook(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            webhook(&roster, cmd, cli.json).await
        }
        Command::SsoClient(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            sso_client(&roster, cmd, cli.json).await
        }
        Command::SsoConnection(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            sso_connection(&roster, cmd, cli.json).await
        }
        Command::Secrets(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            let report = match cmd {
                SecretsCommand::Status => roster.check_sealed_secrets().await?,
                SecretsCommand::Rotate => {
                    let resealed = roster.reseal_secrets().await?;
                    if !cli.json {
                        println!("Resealed {resealed} secrets with the current key.");
                    }
                    roster.check_sealed_secrets().await?
                }
            };
            if cli.json {
                println!("{}", serde_json::to_string(&report).map_err(anyhow::Error::from)?);
            } else {
                println!("sealed with the current key: {}", report.current);
                println!("sealed with an older key:    {}", report.stale);
                println!("in clear:                    {}", report.clear);
            }
            Ok(())
        }
        Command::RoleMapping(cmd) => {
            let roster = AppState::from_config(config).await?.roster;
            role_mapping(&roster, cmd, cli.json).await
        }
        Command::Reconcile { org, dry_run } => {
            let roster = AppState::from_config(config).await?.roster;
            reconcile(&roster, org.as_deref(), dry_run, cli.json).await
        }
        Command::Bench(_) => unreachable!("handled before configuration is loaded"),
    }
}

async fn role_mapping(roster: &Roster, cmd: RoleMappingCommand, as_json: bool) -> Result<(), CliError> {
    let print = |m: &crate::roles::RoleMapping| println!("{}  {:<8}  {} → {}", m.id, m.source, m.value, m.role);
    match cmd {
        RoleMappingCommand::List { org } => {
            let mappings = roster.role_mappings(&Actor::cli(org_id(&org)?)).await?;
            if as_json {
                println!("{}", serde_json::to_string(&mappings).map_err(anyhow::Error::from)?);
            } else if mappings.is_empty() {
                println!("No role mappings.");
            } else {
                mappings.iter().for_each(print);
            }
        }
        RoleMappingCommand::Add { org, source, value, role } => {
            let new =
                NewRoleMapping { source: input("source", source.parse())?, value, role: input("role", role.parse())? };
            let m = roster.create_role_mapping(&Actor::cli(org_id(&org)?), new).await?;
            if as_json {
                println!("{}", serde_json::to_string(&m).map_err(anyhow::Error::from)?);
            } else {
                print(&m);
                println!(
                    "Members follow when the reconcile plan is applied: `roster reconcile --org {org} --dry-run`."
                );
            }
        }
        RoleMappingCommand::Remove { org, id } => {
            let id = input("id", Uuid::parse_str(&id))?;
            let m = roster.delete_role_mapping(&Actor::cli(org_id(&org)?), id).await?;
            if as_json {
                println!("{}", serde_json::to_string(&m).map_err(anyhow::Error::from)?);
            } else {
                println!("Removed the mapping of {} `{}`.", m.source, m.value);
            }
        }
    }
    Ok(())
}

/// A planned change's member in words: its email, or its id.
fn who(email: &Option<Email>, member: &Uuid) -> String {
    email.as_ref().map_or_else(|| format!("member {member}"), |e| e.to_string())
}

/// Prints a plan for people: one line per change with its reason.
fn print_plan(name: &str, plan: &ReconcilePlan, applied: bool) {
    let s = &plan.seats;
    println!(
        "{name} ({}): {} seats used of {} ({} policy, {} enforcement); {} after",
        plan.organization, s.used, s.purchased, s.policy, s.enforcement, s.used_after
    );
    if plan.changes.is_empty() {
        println!("  nothing to change");
    }
    for c in &plan.changes {
        let (what, reason) = match c {
            PlannedChange::ExpireInvitation { email, reason, .. } => (format!("expire invitation of {email}"), reason),
            PlannedChange::RevokeInvitation { email, reason, .. } => (format!("revoke invitation of {email}"), reason),
            PlannedChange::SuspendMember { member, email, role, reason } => {
                (format!("suspend {} ({role})", who(email, member)), reason)
            }
            PlannedChange::ChangeRole { member, email, from, to, reason, .. } => {
                (format!("change role of {}: {from} → {to}", who(email, member)), reason)
            }
            PlannedChange::EndSessions { member, email, sessions, reason } => {
                (format!("end {sessions} session(s) of {}", who(email, member)), reason)
            }
        };
        println!("  {} {what}\n      {reason}", if applied { "done:" } else { "plan:" });
    }
    for k in &plan.kept {
        println!("  kept: {k}");
    }
}

async fn reconcile(roster: &Roster, org: Option<&str>, dry_run: bool, as_json: bool) -> Result<(), CliError> {
    let orgs = match org {
        Some(id) => {
            let id = input("org", Uuid::parse_str(id))?;
            vec![roster.organization(&Actor::cli(id)).await?]
        }
        None => roster.list_organizations().await?,
    };
    let mut out = Vec::new();
    for o in orgs {
        let actor = Actor::cli(o.id);
        let plan = if dry_run {
            roster.reconcile_plan(&actor).await?
        } else {
            roster.reconcile_apply(&actor, None).await?.applied
        };
        if !as_json {
            print_plan(&o.name, &plan, !dry_run);
        }
        out.push(plan);
    }
    if as_json {
        println!("{}", serde_json::to_string(&out).map_err(anyhow::Error::from)?);
    }
    Ok(())
}

fn print_domain(d: &DomainView) {
    println!("{}  {}", d.domain.name, d.domain.status);
    if let Some(result) = &d.domain.last_result {
        println!("  last check: {result}");
    }
}

async fn invitation(roster: &Roster, cmd: InvitationCommand, as_json: bool) -> Result<(), CliError> {
    let print_created = |created: &[crate::service::CreatedInvitation]| -> Result<(), CliError> {
        if as_json {
            let items: Vec<_> =
                created.iter().map(|c| json!({"invitation": c.invitation, "token": c.token.expose()})).collect();
            println!("{}", serde_json::to_string(&items).map_err(anyhow::Error::from)?);
        } else {
            for c in created {
                println!(
                    "Invited {} as {} ({}); the email is queued. Expires {}.",
                    c.invitation.email, c.invitation.role, c.invitation.id, c.invitation.expires_at
                );
            }
        }
        Ok(())
    };
    match cmd {
        InvitationCommand::Create { org, email, role } => {
            let actor = Actor::cli(org_id(&org)?);
            let email = input("email", Email::parse(&email))?;
            let role = input("role", role.parse::<Role>())?;
            let created = roster.invite(&actor, email, role).await?;
            print_created(std::slice::from_ref(&created))?;
        }
        InvitationCommand::Import { org, file } => {
            let actor = Actor::cli(org_id(&org)?);
            let bytes =
                std::fs::read(&file).map_err(|e| CliError::Input(format!("cannot read {}: {e}", file.display())))?;
            let created = roster.invite_csv(&actor, &bytes).await?;
            print_created(&created)?;
        }
        InvitationCommand::List { org, status } => {
            let actor = Actor::cli(org_id(&org)?);
            let status = status.map(|s| input("status", s.parse::<InvitationStatus>())).transpose()?;
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let q = crate::service::InvitationQuery { status, cursor, limit: Some(crate::service::MAX_PAGE_SIZE) };
                let page = roster.list_invitations(&actor, q).await?;
                all.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if as_json {
                println!("{}", serde_json::to_string(&all).map_err(anyhow::Error::from)?);
            } else if all.is_empty() {
                println!("No invitations.");
            } else {
                for i in &all {
                    let email = match &i.email_delivery {
                        None => "no email".to_string(),
                        Some(d) => match &d.reply {
                            Some(reply) => format!("email {} ({reply})", d.status.as_str()),
                            None => format!("email {}", d.status.as_str()),
                        },
                    };
                    println!("{}  {}  {}  {}  expires {}  {}", i.id, i.email, i.role, i.status, i.expires_at, email);
                }
            }
        }
        InvitationCommand::Resend(args) => {
            let actor = Actor::cli(org_id(&args.org)?);
            let id = invitation_id(&args.id)?;
            let created = roster.resend_invitation(&actor, id).await?;
            print_created(std::slice::from_ref(&created))?;
        }
        InvitationCommand::Revoke(args) => {
            let actor = Actor::cli(org_id(&args.org)?);
            let id = invitation_id(&args.id)?;
            let inv = roster.revoke_invitation(&actor, id).await?;
            if as_json {
                println!("{}", serde_json::to_string(&inv).map_err(anyhow::Error::from)?);
            } else {
                println!("Revoked the invitation of {}.", inv.email);
            }
        }
    }
    Ok(())
}

/// An invitation id argument.
fn invitation_id(raw: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| CliError::Input(format!("`{raw}` is not an invitation id (`roster invitation list` shows them)")))
}

async fn domain(roster: &Roster, cmd: DomainCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        DomainCommand::Add(args) => {
            let actor = Actor::cli(org_id(&args.org)?);
            let name = domain_arg(&args.name)?;
            let d = roster.add_domain(&actor, name).await?;
            if as_json {
                println!("{}", serde_json::to_string(&d).map_err(anyhow::Error::from)?);
            } else {
                println!("Added {} (pending verification).", d.domain.name);
                println!("To prove you control it, publish this DNS record:");
                println!("  name:  {}", d.record.name);
                println!("  type:  {}", d.record.kind);
                println!("  value: {}", d.record.value);
                println!("then run: roster domain verify --org {} {}", args.org.trim(), d.domain.name);
            }
        }
        DomainCommand::Verify(args) => {
            let actor = Actor::cli(org_id(&args.org)?);
            let name = domain_arg(&args.name)?;
            let id = roster.domain_by_name(&actor, &name).await?.domain.id;
            let check = roster.verify_domain(&actor, id).await?;
            if as_json {
                println!("{}", serde_json::to_string(&check).map_err(anyhow::Error::from)?);
            } else {
                println!("{}: {}", check.domain.domain.name, check.domain.domain.status);
                println!("  {}", check.message);
                if check.result != CheckKind::Verified {
                    println!("  expected: {} TXT \"{}\"", check.domain.record.name, check.domain.record.value);
                }
            }
            if check.result != CheckKind::Verified {
                return Err(CliError::Input(format!("{} is not verified", check.domain.domain.name)));
            }
        }
        DomainCommand::List { org } => {
            let actor = Actor::cli(org_id(&org)?);
            let domains = roster.list_domains(&actor).await?;
            if as_json {
                println!("{}", serde_json::to_string(&domains).map_err(anyhow::Error::from)?);
            } else if domains.is_empty() {
                println!("No domains.");
            } else {
                domains.iter().for_each(print_domain);
            }
        }
        DomainCommand::Remove(args) => {
            let actor = Actor::cli(org_id(&args.org)?);
            let name = domain_arg(&args.name)?;
            let id = roster.domain_by_name(&actor, &name).await?.domain.id;
            roster.remove_domain(&actor, id).await?;
            println!(
                "{}",
                if as_json { json!({"removed": name.as_str()}).to_string() } else { format!("Removed {name}.") }
            );
        }
    }
    Ok(())
}

async fn serve(config: Config) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| CliError::Input(format!("listen: cannot bind {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(anyhow::Error::from)?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| CliError::Input(format!("metrics_listen: cannot bind {at}: {e}")))?,
        ),
        None => None,
    };
    let jobs = config.background_jobs.then_some(crate::jobs::Schedule {
        tick: Duration::from_secs(config.job_tick_secs),
        concurrency: config.job_concurrency,
        reconcile_interval: Duration::from_secs(config.reconcile_interval_secs),
    });
    let shutdown = shutdown_signal();
    let state = AppState::from_config(config).await?;
    // Every sealed secret must open, or those organizations could not sign in.
    let sealed = state.roster.check_sealed_secrets().await?;
    if sealed.clear > 0 && !state.config.sealing_keys.is_configured() {
        tracing::warn!(
            count = sealed.clear,
            "OpenID client secrets and webhook secrets are stored in clear: set secrets_key_file and run `roster secrets rotate`"
        );
    } else if sealed.clear + sealed.stale > 0 && state.config.sealing_keys.is_configured() {
        tracing::warn!(
            clear = sealed.clear,
            older_key = sealed.stale,
            "some OpenID client or webhook secrets are not sealed with the current key: run `roster secrets rotate`"
        );
    }
    match state.roster.check_tenant_connection().await {
        Ok(()) => {}
        Err(e @ crate::service::TenantConnectionProblem::WrongIssuer { .. }) => {
            return Err(CliError::Input(e.to_string()))
        }
        // A provider that is down does not keep SCIM and the admin API from serving.
        Err(e) => tracing::warn!(error = %e, "sign-ins through the tenant connection fail until its provider answers"),
    }
    let jobs = jobs.map(|schedule| {
        let sender =
            crate::mail::spawn_sender(state.roster.clone(), state.mailer.clone(), state.config.mail.poll_interval);
        let webhooks = crate::webhooks::spawn_dispatcher(
            state.roster.clone(),
            state.webhooks.clone(),
            state.config.webhooks.poll_interval,
        );
        (crate::jobs::spawn(state.roster.clone(), schedule), sender, webhooks)
    });
    match state.mailer.folder() {
        Some(dir) => tracing::info!(
            folder = %dir.display(),
            "no smtp_url: email is written as .eml files into the mail folder"
        ),
        None => tracing::info!(transport = %state.mailer.describe(), "email goes out through the SMTP relay"),
    }
    if jobs.is_none() {
        tracing::warn!("background_jobs is off: this replica sends no email or webhooks (another replica must)");
    }
    if let Some(listener) = metrics_listener {
        let at = listener.local_addr().map_err(anyhow::Error::from)?;
        tracing::info!(%at, "metrics served on their own address");
        let app = crate::http::metrics_app(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    tracing::info!(%addr, backend = state.roster.store().backend(), "roster listening");
    // One line on stdout that scripts (and the test suite) wait for.
    println!("roster listening on http://{addr}");
    crate::http::serve(listener, state, shutdown).await.map_err(anyhow::Error::from)?;
    if let Some((jobs, sender, webhooks)) = jobs {
        jobs.abort();
        sender.abort();
        webhooks.abort();
    }
    tracing::info!("roster stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM sent as soon as
/// the server says it listens still stops it gracefully.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (term, interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = wait(term) => {}, _ = wait(interrupt) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing requests in flight");
    }
}

async fn org(roster: &Roster, cmd: OrgCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        OrgCommand::Create { name, seats, owner_email, plan, contact_email } => {
            let new = NewOrganization {
                name: input("name", Name::parse(&name))?,
                seats,
                owner_email: input("owner-email", Email::parse(&owner_email))?,
                plan: input("plan", plan.parse::<Plan>())?,
                contact_email: contact_email.map(|e| input("contact-email", Email::parse(&e))).transpose()?,
            };
            let created = roster.create_organization(new, &Operator::cli()).await?;
            let org = &created.organization;
            if as_json {
                let out = json!({
                    "organization": org,
                    "owner": created.owner,
                    "api_key": { "id": created.api_key.id, "secret": created.api_key_secret.expose() },
                });
                println!("{out}");
            } else {
                println!("Created organization {} ({})", org.name, org.id);
                println!("Owner: {} ({} seats purchased)", created.owner.label(), org.purchased_seats);
                println!("Owner API key (shown once, store it now):");
                println!("  {}", created.api_key_secret.expose());
            }
            Ok(())
        }
        OrgCommand::Sso(cmd) => org_sso(roster, cmd, as_json).await,
        OrgCommand::List => {
            let orgs = roster.list_organizations().await?;
            if as_json {
                println!("{}", serde_json::to_string(&orgs).map_err(anyhow::Error::from)?);
            } else if orgs.is_empty() {
                println!("No organizations.");
            } else {
                println!("{:<36}  {:>5}  {:<26}  NAME", "ID", "SEATS", "PLAN");
                for o in orgs {
                    println!("{:<36}  {:>5}  {:<26}  {}", o.id, o.purchased_seats, o.plan, o.name);
                }
            }
            Ok(())
        }
    }
}

/// The endpoints `--org` names the organization of, or the deployment's.
fn webhook_scope(org: Option<&str>) -> Result<WebhookScope, CliError> {
    Ok(match org {
        Some(org) => WebhookScope::Org(Actor::cli(org_id(org)?)),
        None => WebhookScope::Deployment(Operator::cli()),
    })
}

fn print_created_webhook(created: &CreatedWebhook, verb: &str, as_json: bool) {
    if as_json {
        println!("{}", json!(created));
    } else {
        println!("{verb} webhook endpoint {} ({})", created.endpoint.id, created.endpoint.url);
        println!("Signing secret (shown once; the receiver verifies webhook-signature with it):");
        println!("  {}", created.secret);
    }
}

/// A refused backup or restore is the operator's input to fix (exit 2).
fn refused(e: anyhow::Error) -> CliError {
    match e.downcast::<crate::store::backup::Refused>() {
        Ok(refused) => CliError::Input(refused.0),
        Err(other) => CliError::Other(other),
    }
}

fn print_backup(report: &crate::store::backup::BackupReport, what: &str, as_json: bool) {
    if as_json {
        println!("{}", json!(report));
        return;
    }
    println!("{what} {} ({} bytes, migration {})", report.file.display(), report.bytes, report.migration);
    if let Some(previous) = &report.previous {
        println!("The replaced database is kept as {}", previous.display());
    }
}

async fn operator_key(roster: &Roster, cmd: OperatorKeyCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        OperatorKeyCommand::Create { name, expires_in_days } => {
            let name = input("name", Name::parse(&name))?;
            let created = roster.create_operator_key(&Operator::cli(), &name, expires_in_days).await?;
            if as_json {
                let mut out = json!(created.key);
                out["secret"] = json!(created.secret.expose());
                println!("{out}");
            } else {
                println!("Created operator key {} ({})", created.key.name, created.key.id);
                println!("Secret (shown once, store it now):");
                println!("  {}", created.secret.expose());
            }
        }
        OperatorKeyCommand::List => {
            let keys = roster.list_operator_keys().await?;
            if as_json {
                println!("{}", json!(keys));
            }
            for k in keys.iter().filter(|_| !as_json) {
                let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{}  {state:8}  {}", k.id, k.name);
            }
        }
        OperatorKeyCommand::Revoke { id } => {
            let id = Uuid::parse_str(&id).map_err(|_| CliError::Input(format!("id: `{id}` is not a UUID")))?;
            let key = roster.revoke_operator_key(&Operator::cli(), id).await?;
            if as_json {
                println!("{}", json!(key));
            } else {
                println!("Revoked operator key {} ({})", key.name, key.id);
            }
        }
    }
    Ok(())
}

async fn setup_link(roster: &Roster, cmd: SetupLinkCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        SetupLinkCommand::Create { org, scope, expires_in_hours } => {
            let scopes =
                scope.iter().map(|s| input("scope", s.parse::<SetupScope>())).collect::<Result<Vec<_>, _>>()?;
            let new = crate::service::NewSetupLink { scopes, expires_in_hours };
            let created = roster.create_setup_link(&Actor::cli(org_id(&org)?), new).await?;
            if as_json {
                println!("{}", json!(created));
            } else {
                let scopes: Vec<&str> = created.view.link.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "Created setup link {} ({}), until {}",
                    created.view.link.id,
                    scopes.join(", "),
                    created.view.link.expires_at
                );
                println!("Send this URL to the organization's IT admin (shown once):");
                println!("  {}", created.url);
            }
        }
        SetupLinkCommand::List { org } => {
            let links = roster.list_setup_links(&Actor::cli(org_id(&org)?)).await?;
            if as_json {
                println!("{}", json!(links));
            }
            for l in links.iter().filter(|_| !as_json) {
                let scopes: Vec<&str> = l.link.scopes.iter().map(|s| s.as_str()).collect();
                println!("{}  {:8}  {}  until {}", l.link.id, l.status, scopes.join(","), l.link.expires_at);
            }
        }
        SetupLinkCommand::Revoke { org, id } => {
            let id = Uuid::parse_str(&id).map_err(|_| CliError::Input(format!("--id: `{id}` is not a UUID")))?;
            roster.revoke_setup_link(&Actor::cli(org_id(&org)?), id).await?;
            if as_json {
                println!("{}", json!({ "id": id, "status": "revoked" }));
            } else {
                println!("Revoked setup link {id}");
            }
        }
    }
    Ok(())
}

async fn webhook(roster: &Roster, cmd: WebhookCommand, as_json: bool) -> Result<(), CliError> {
    let id = |raw: &str| Uuid::parse_str(raw).map_err(|_| CliError::Input(format!("id: `{raw}` is not a UUID")));
    match cmd {
        WebhookCommand::Add { url, org, events, description } => {
            let new = NewWebhook { url, events, description };
            let created = roster.create_webhook(&webhook_scope(org.as_deref())?, new).await?;
            print_created_webhook(&created, "Added", as_json);
        }
        WebhookCommand::Rotate { id: raw, org, overlap_hours } => {
            let scope = webhook_scope(org.as_deref())?;
            let created = roster.rotate_webhook_secret(&scope, id(&raw)?, overlap_hours).await?;
            print_created_webhook(&created, "Rotated the secret of", as_json);
        }
        WebhookCommand::List { org } => {
            let endpoints = roster.list_webhooks(&webhook_scope(org.as_deref())?).await?;
            if as_json {
                println!("{}", json!(endpoints));
            }
            for e in endpoints.iter().filter(|_| !as_json) {
                let state = if e.enabled { "enabled" } else { "disabled" };
                let events = if e.event_types.is_empty() { "*".to_string() } else { e.event_types.join(",") };
                println!("{}  {state:8}  {events}  {}", e.id, e.url);
            }
        }
        WebhookCommand::Enable { id: raw, org } => {
            let change = WebhookChange { enabled: Some(true), ..Default::default() };
            let e = roster.update_webhook(&webhook_scope(org.as_deref())?, id(&raw)?, change).await?;
            print_webhook_state(&e, as_json);
        }
        WebhookCommand::Disable { id: raw, org } => {
            let change = WebhookChange { enabled: Some(false), ..Default::default() };
            let e = roster.update_webhook(&webhook_scope(org.as_deref())?, id(&raw)?, change).await?;
            print_webhook_state(&e, as_json);
        }
        WebhookCommand::Remove { id: raw, org } => {
            roster.delete_webhook(&webhook_scope(org.as_deref())?, id(&raw)?).await?;
            if as_json {
                println!("{}", json!({ "deleted": raw }));
            } else {
                println!("Deleted webhook endpoint {raw}");
            }
        }
    }
    Ok(())
}

fn print_webhook_state(e: &crate::store::WebhookEndpoint, as_json: bool) {
    if as_json {
        println!("{}", json!(e));
    } else {
        println!("Webhook endpoint {} is {}", e.id, if e.enabled { "enabled" } else { "disabled" });
    }
}

async fn sso_client(roster: &Roster, cmd: SsoClientCommand, as_json: bool) -> Result<(), CliError> {
    let SsoClientCommand::Create { org, name, redirect_uris } = cmd;
    let name = input("name", Name::parse(&name))?;
    let created = match org {
        Some(org) => {
            let actor = Actor::cli(org_id(&org)?);
            roster.create_sso_client(&actor, NewSsoClient { name, redirect_uris }).await?
        }
        None => roster.create_deployment_sso_client(&name, &redirect_uris, &Actor::cli(Uuid::nil()).id).await?,
    };
    if as_json {
        println!("{}", json!({ "client": created.client, "client_secret": created.secret.expose() }));
    } else {
        println!("Created SSO client {} ({})", created.client.name, created.client.id);
        println!("Client secret (shown once; the product's backend sends it to POST /sso/token):");
        println!("  {}", created.secret.expose());
    }
    Ok(())
}

async fn org_sso(roster: &Roster, cmd: OrgSsoCommand, as_json: bool) -> Result<(), CliError> {
    let settings = match cmd {
        OrgSsoCommand::Show { org } => roster.organization(&Actor::cli(org_id(&org)?)).await?.sso,
        OrgSsoCommand::Set { org, tenant_id, clear_tenant_id, enforce, auto_assign, default_role } => {
            let actor = Actor::cli(org_id(&org)?);
            let tenant_id = match (tenant_id, clear_tenant_id) {
                (Some(t), _) => Some(Some(input("tenant-id", TenantId::parse(&t))?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let default_role = default_role.map(|r| input("default-role", r.parse::<Role>())).transpose()?;
            let change = SsoSettingsChange { tenant_id, enforce, auto_assign, default_role };
            roster.set_sso(&actor, change).await?.sso
        }
    };
    if as_json {
        println!("{}", serde_json::to_string(&settings).map_err(anyhow::Error::from)?);
    } else {
        let tenant = settings.tenant_id.as_ref().map_or("none", |t| t.as_str());
        println!("tenant ID:    {tenant}");
        println!("enforce:      {}", settings.enforce);
        println!("auto-assign:  {}", settings.auto_assign);
        println!("default role: {}", settings.default_role);
    }
    Ok(())
}

async fn sso_connection(roster: &Roster, cmd: SsoConnectionCommand, as_json: bool) -> Result<(), CliError> {
    let SsoConnectionCommand::Set { org, issuer, client_id, client_secret_file, scopes, allow_unverified_email } = cmd;
    let actor = Actor::cli(org_id(&org)?);
    let secret = std::fs::read_to_string(&client_secret_file).map_err(|e| {
        CliError::Input(format!("client-secret-file: cannot read {}: {e}", client_secret_file.display()))
    })?;
    let connection = DirectConnectionInput {
        issuer,
        client_id,
        client_secret: crate::secrets::Secret::new(secret.trim()),
        scopes: if scopes.is_empty() { None } else { Some(scopes) },
        require_email_verified: Some(!allow_unverified_email),
    };
    let view = roster.set_sso_connection(&actor, connection).await?;
    if as_json {
        println!("{}", serde_json::to_string(&view).map_err(anyhow::Error::from)?);
    } else {
        println!("The organization now signs in through {} (client {}).", view.issuer, view.client_id);
    }
    Ok(())
}

async fn credential(
    roster: &Roster,
    kind: CredentialKind,
    args: CredentialArgs,
    as_json: bool,
) -> Result<(), CliError> {
    let org_id = input("org", Uuid::parse_str(&args.org))?;
    let role = args.role.as_deref().map(|r| input("role", r.parse::<Role>())).transpose()?;
    let new = NewCredential {
        kind,
        name: input("name", Name::parse(&args.name))?,
        role,
        expires_in_days: args.expires_in_days,
    };
    let created = roster.create_credential(&Actor::cli(org_id), new).await?;
    if as_json {
        let out = json!({ "credential": created.credential, "secret": created.secret.expose() });
        println!("{out}");
    } else {
        let what = match kind {
            CredentialKind::ApiKey => "API key",
            CredentialKind::ScimToken => "SCIM token",
        };
        println!("Created {what} {} ({})", created.credential.name, created.credential.id);
        println!("Secret (shown once, store it now):");
        println!("  {}", created.secret.expose());
    }
    Ok(())
}
