//! Configuration: built-in defaults, overlaid by an optional TOML file
//! (`--config`), overlaid by `ROSTER_*` environment variables.
//!
//! Secrets can also come from files: `database_url_file` (or
//! `ROSTER_DATABASE_URL_FILE`) names a file whose contents are the URL.
//! Secrets are held in [`Secret`] and never reach `Debug` or the logs.

use crate::secrets::Secret;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use url::Url;

/// The settings as written by an operator, before secrets are resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    public_base_url: Option<Url>,
    database_url: Option<String>,
    database_url_file: Option<PathBuf>,
    database_max_connections: u32,
    auto_migrate: bool,
    log_format: LogFormat,
    request_body_limit_bytes: usize,
    request_timeout_secs: u64,
    header_read_timeout_secs: u64,
    max_connections: usize,
    rate_limit_failed_auth_per_minute: u32,
    rate_limit_sign_in_per_minute: u32,
    trust_forwarded_for: bool,
    trusted_proxies: Vec<String>,
    invitation_ttl_days: u32,
    dns_name_servers: Vec<SocketAddr>,
    dns_timeout_ms: u64,
    dns_attempts: usize,
    domain_challenge_prefix: String,
    domain_reverify_interval_secs: u64,
    domain_retry_interval_secs: u64,
    domain_lapse_after_failures: u32,
    background_jobs: bool,
    job_tick_secs: u64,
    job_concurrency: usize,
    reconcile_interval_secs: u64,
    sso_dev_mode: bool,
    sso_attempt_ttl_secs: u64,
    sso_code_ttl_secs: u64,
    sso_session_ttl_secs: u64,
    sso_clock_skew_secs: u64,
    sso_http_timeout_ms: u64,
    sso_metadata_ttl_secs: u64,
    tenant_connection: Option<RawTenantConnection>,
    secrets_key_file: Option<PathBuf>,
    smtp_url: Option<String>,
    smtp_username: Option<String>,
    smtp_password_file: Option<PathBuf>,
    smtp_ca_file: Option<PathBuf>,
    smtp_timeout_secs: u64,
    mail_from: String,
    mail_dir: Option<PathBuf>,
    mail_retry_hours: u64,
    mail_poll_interval_ms: u64,
    portal_idle_timeout_secs: u64,
    portal_resources: Vec<PortalResource>,
    webhook_allow_private_addresses: bool,
    webhook_timeout_secs: u64,
    webhook_retry_for_secs: u64,
    webhook_first_retry_ms: u64,
    webhook_poll_interval_ms: u64,
    billing: BillingConfig,
    metrics_listen: Option<SocketAddr>,
}

/// Who changes what an organization buys (`[billing]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Owners and Admins set purchased seats, the seat policy and the plan
    /// themselves; off (the default), their changes are requests that the
    /// operator approves or rejects through the operator API.
    pub self_serve_seats: bool,
}

/// A link the portal's Home shows under Resources (`[[portal_resources]]`
/// with `title` and `url`): the product's help center, a status page….
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalResource {
    pub title: String,
    pub url: Url,
}

/// The deployment's tenant-routing OpenID provider, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantConnection {
    /// Kept as written: an issuer is compared as an exact string.
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default = "default_tenant_param")]
    tenant_param: String,
    #[serde(default = "default_tenant_claim")]
    tenant_claim: String,
    #[serde(default = "default_true")]
    require_email_verified: bool,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_tenant_param() -> String {
    "tenant".into()
}
fn default_tenant_claim() -> String {
    "tenants".into()
}
fn default_true() -> bool {
    true
}

/// The deployment's tenant-routing OpenID provider (Descope-style): every
/// organization with a tenant ID signs in through it.
#[derive(Debug, Clone)]
pub struct TenantConnection {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    /// The authorization request parameter that carries the tenant ID.
    pub tenant_param: String,
    /// The ID-token claim that lists the user's tenants.
    pub tenant_claim: String,
    pub require_email_verified: bool,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            database_url: None,
            database_url_file: None,
            database_max_connections: 10,
            auto_migrate: true,
            log_format: LogFormat::Text,
            request_body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            max_connections: 1024,
            rate_limit_failed_auth_per_minute: 30,
            rate_limit_sign_in_per_minute: 60,
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
            invitation_ttl_days: 14,
            dns_name_servers: Vec::new(),
            dns_timeout_ms: 5000,
            dns_attempts: 2,
            domain_challenge_prefix: "_roster-challenge".into(),
            domain_reverify_interval_secs: 24 * 60 * 60,
            domain_retry_interval_secs: 15 * 60,
            domain_lapse_after_failures: 3,
            background_jobs: true,
            job_tick_secs: 60,
            job_concurrency: 4,
            reconcile_interval_secs: 5 * 60,
            sso_dev_mode: false,
            sso_attempt_ttl_secs: 600,
            sso_code_ttl_secs: 60,
            sso_session_ttl_secs: 8 * 60 * 60,
            sso_clock_skew_secs: 60,
            sso_http_timeout_ms: 10_000,
            sso_metadata_ttl_secs: 60 * 60,
            tenant_connection: None,
            secrets_key_file: None,
            smtp_url: None,
            smtp_username: None,
            smtp_password_file: None,
            smtp_ca_file: None,
            smtp_timeout_secs: 30,
            mail_from: "Roster <roster@localhost>".into(),
            mail_dir: None,
            mail_retry_hours: 48,
            mail_poll_interval_ms: 1000,
            portal_idle_timeout_secs: 30 * 60,
            portal_resources: Vec::new(),
            webhook_allow_private_addresses: false,
            webhook_timeout_secs: 10,
            webhook_retry_for_secs: 3 * 24 * 60 * 60,
            webhook_first_retry_ms: 10_000,
            webhook_poll_interval_ms: 1000,
            billing: BillingConfig::default(),
            metrics_listen: None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Roster's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// The URL clients reach Roster at; derived from `listen` when unset.
    pub public_base_url: Url,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: Secret,
    pub database_max_connections: u32,
    /// Apply pending migrations when `serve` starts.
    pub auto_migrate: bool,
    pub log_format: LogFormat,
    pub request_body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// How long a connection may take to send a request's headers, from
    /// opening or from its last answer (idle keep-alive connections too).
    pub header_read_timeout_secs: u64,
    /// Connections served at once (a few more are kept for health checks).
    pub max_connections: usize,
    /// Failed authentications a client address (or SSO client) may make a minute; 0: no limit.
    pub rate_limit_failed_auth_per_minute: u32,
    /// Sign-ins a client address may start or finish a minute; 0: no limit.
    pub rate_limit_sign_in_per_minute: u32,
    /// Take the client address from the last `X-Forwarded-For` entry
    /// whatever the peer (one proxy in front, which sets it); prefer
    /// `trusted_proxies`.
    pub trust_forwarded_for: bool,
    /// The proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is
    /// believed: the client is the last address in it that is not one of them.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub invitation_ttl_days: u32,
    /// DNS servers for domain verification (`ip:port`); empty means the system's.
    pub dns_name_servers: Vec<SocketAddr>,
    pub dns_timeout_ms: u64,
    pub dns_attempts: usize,
    /// The label in front of a domain where its TXT challenge is published.
    pub domain_challenge_prefix: String,
    /// How often verified domains are checked again.
    pub domain_reverify_interval_secs: u64,
    /// How soon pending, failed and lapsed domains (and transient errors) are checked again.
    pub domain_retry_interval_secs: u64,
    /// Consecutive definite failures after which a verified domain lapses.
    pub domain_lapse_after_failures: u32,
    /// Run background jobs (domain re-verification) in this process.
    pub background_jobs: bool,
    /// How often a background job looks for due work.
    pub job_tick_secs: u64,
    /// How many checks a background job runs at once.
    pub job_concurrency: usize,
    /// How often the background reconciler runs (once per interval across all replicas).
    pub reconcile_interval_secs: u64,
    /// Allows `http://` OpenID providers and drops `Secure` from cookies: local development and tests only.
    pub sso_dev_mode: bool,
    /// How long a login may take at the provider.
    pub sso_attempt_ttl_secs: u64,
    /// How long the product has to redeem a sign-in code.
    pub sso_code_ttl_secs: u64,
    /// How long Roster's own browser session lasts.
    pub sso_session_ttl_secs: u64,
    /// Clock difference tolerated on ID token times.
    pub sso_clock_skew_secs: u64,
    /// Timeout of each request to an OpenID provider.
    pub sso_http_timeout_ms: u64,
    /// How long a provider's discovery document and keys are cached.
    pub sso_metadata_ttl_secs: u64,
    pub tenant_connection: Option<TenantConnection>,
    /// Keys that seal organizations' OpenID client secrets at rest (from
    /// `secrets_key_file`); none: they are stored in clear.
    pub sealing_keys: crate::secrets::SealingKeys,
    /// How Roster sends email.
    pub mail: MailConfig,
    /// A portal session unused this long ends (its absolute limit is `sso_session_ttl_secs`).
    pub portal_idle_timeout_secs: u64,
    /// Links the portal's Home shows under Resources.
    pub portal_resources: Vec<PortalResource>,
    /// How webhooks are delivered.
    pub webhooks: WebhookConfig,
    pub billing: BillingConfig,
    /// Where `/metrics` is served instead of `listen` (an address the
    /// monitoring network reaches and the public does not); `None`: beside the rest.
    pub metrics_listen: Option<SocketAddr>,
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Deliver to loopback, private and link-local addresses too (a receiver
    /// inside the deployment's own network); off, such URLs are refused and
    /// host names resolving to them are not connected to (SSRF).
    pub allow_private_addresses: bool,
    /// Each delivery's whole exchange, connection included.
    pub timeout: std::time::Duration,
    /// How long an endpoint may keep failing before it is disabled and its organization's admins are told.
    pub retry_for: std::time::Duration,
    /// The wait before the first retry; each next one doubles, up to an hour.
    pub first_retry: std::time::Duration,
    /// How often a replica looks for events other replicas committed (its own wake it at once).
    pub poll_interval: std::time::Duration,
}

/// How Roster sends email: over SMTP when `smtp_url` is set, otherwise as
/// `.eml` files in a folder (zero configuration: next to the SQLite database).
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// The `From` of every message: `Name <address>` or an address.
    pub from: String,
    /// How long a message that fails for a temporary reason is retried.
    pub retry_for: std::time::Duration,
    /// How often the sender looks for due messages (it is also woken when this replica queues one).
    pub poll_interval: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum MailTransport {
    Smtp(SmtpSettings),
    /// Each message is written as an `.eml` file into this folder.
    Folder(PathBuf),
}

/// An SMTP relay: `smtp_url` with its credentials and trust.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM certificates trusted besides the public roots (a relay with a private CA).
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: std::time::Duration,
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte (port 465).
    ImplicitTls,
    /// `smtp://` (the default): STARTTLS, required.
    StartTls,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `smtp://…?tls=none`: plain text, for a relay on the same host.
    None,
}

impl SmtpSettings {
    /// Parses `smtp_url`: `smtps://host[:465]` or `smtp://host[:587][?tls=starttls|opportunistic|none]`.
    fn parse_url(raw: &str) -> Result<(String, u16, SmtpSecurity), String> {
        let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("`{raw}` has no host"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("put credentials in smtp_username and smtp_password_file, not in the URL".into());
        }
        if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(format!("`{raw}` must be scheme://host[:port][?tls=…]"));
        }
        let mut tls = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "tls" if tls.is_none() => tls = Some(v.into_owned()),
                other => return Err(format!("unknown parameter `{other}` (only `tls`)")),
            }
        }
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => (SmtpSecurity::ImplicitTls, 465),
            ("smtp", None | Some("starttls") | Some("required")) => (SmtpSecurity::StartTls, 587),
            ("smtp", Some("opportunistic")) => (SmtpSecurity::Opportunistic, 587),
            ("smtp", Some("none")) => (SmtpSecurity::None, 25),
            ("smtps", Some(_)) => return Err("smtps:// is always TLS; `tls` applies to smtp:// only".into()),
            ("smtp", Some(other)) => {
                return Err(format!("tls=`{other}`: use starttls, opportunistic or none"));
            }
            (other, _) => return Err(format!("scheme `{other}`: use smtp:// or smtps://")),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok((host, url.port().unwrap_or(default_port), security))
    }
}

/// `ROSTER_*` variables that are not settings: the configuration file and
/// the load tool's token.
pub const OWN_VARIABLES: [&str; 2] = ["ROSTER_CONFIG", "ROSTER_BENCH_TOKEN"];

/// Settings whose values are text, taken from the environment exactly as
/// written even when they look like numbers or booleans.
const TEXT_KEYS: [&str; 18] = [
    "smtp_url",
    "smtp_username",
    "smtp_password_file",
    "smtp_ca_file",
    "mail_from",
    "mail_dir",
    "listen",
    "secrets_key_file",
    "public_base_url",
    "database_url",
    "database_url_file",
    "domain_challenge_prefix",
    "tenant_connection.issuer",
    "tenant_connection.client_id",
    "tenant_connection.client_secret",
    "tenant_connection.client_secret_file",
    "tenant_connection.tenant_param",
    "tenant_connection.tenant_claim",
];

/// Every setting's key (`tenant_connection.client_id`), from the settings' own fields.
fn setting_keys() -> std::collections::HashSet<String> {
    let mut keys = std::collections::HashSet::new();
    if let Ok(serde_json::Value::Object(top)) = serde_json::to_value(RawConfig::default()) {
        keys.extend(top.keys().cloned());
    }
    let tenant = RawTenantConnection {
        issuer: String::new(),
        client_id: String::new(),
        client_secret: None,
        client_secret_file: None,
        scopes: default_scopes(),
        tenant_param: default_tenant_param(),
        tenant_claim: default_tenant_claim(),
        require_email_verified: true,
    };
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(tenant) {
        keys.extend(fields.keys().map(|k| format!("tenant_connection.{k}")));
    }
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(BillingConfig::default()) {
        keys.extend(fields.keys().map(|k| format!("billing.{k}")));
    }
    keys
}

/// `ROSTER_*` environment variables, each with the setting key it would
/// name (`ROSTER_TENANT_CONNECTION__CLIENT_ID` → `tenant_connection.client_id`).
fn roster_variables() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(name, _)| {
        let name = name.into_string().ok()?;
        let key = name.strip_prefix("ROSTER_")?.to_ascii_lowercase().replace("__", ".");
        Some((name, key))
    })
}

/// The text settings set in the environment, with their values as written.
fn settings_in_environment() -> Vec<(String, String)> {
    let keys = setting_keys();
    roster_variables()
        .filter(|(_, key)| keys.contains(key.as_str()))
        .filter_map(|(name, key)| Some((key, std::env::var(&name).ok()?)))
        .collect()
}

/// The embedded default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://roster.db?mode=rwc";

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Loads defaults ← `file` ← `ROSTER_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("file {} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Text settings are taken as written (`…CLIENT_ID=012345` stays a
        // string with its zero); the others are parsed as TOML values.
        for (key, value) in settings_in_environment() {
            if TEXT_KEYS.contains(&key.as_str()) {
                figment = figment.merge((key, value));
            }
        }
        let keys = setting_keys();
        figment = figment.merge(Env::prefixed("ROSTER_").split("__").filter(move |key| {
            let key = key.as_str().to_ascii_lowercase();
            keys.contains(&key) && !TEXT_KEYS.contains(&key.as_str())
        }));
        let raw: RawConfig = figment.extract().map_err(Box::new)?;
        Self::resolve(raw)
    }

    /// `ROSTER_*` environment variables that are neither settings nor
    /// Roster's own (see [`OWN_VARIABLES`]): ignored, and worth a warning,
    /// as a misspelt setting is. (An orchestrator may set some: Kubernetes
    /// sets `ROSTER_PORT` for a service named `roster`.)
    pub fn unknown_variables() -> Vec<String> {
        let keys = setting_keys();
        let mut unknown: Vec<String> = roster_variables()
            .filter(|(name, key)| !OWN_VARIABLES.contains(&name.as_str()) && !keys.contains(key.as_str()))
            .map(|(name, _)| name)
            .collect();
        unknown.sort();
        unknown
    }

    fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let database_url = match (raw.database_url.clone(), raw.database_url_file.clone()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "database_url_file",
                    message: "set either database_url or database_url_file, not both".into(),
                })
            }
            (Some(url), None) => url,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::Invalid {
                    key: "database_url_file",
                    message: format!("cannot read {}: {e}", path.display()),
                })?
                .trim()
                .to_string(),
            (None, None) => DEFAULT_DATABASE_URL.to_string(),
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "database_url",
                message: "must start with sqlite:, postgres:// or postgresql://".into(),
            });
        }
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(
                    |_| ConfigError::Invalid {
                        key: "trusted_proxies",
                        message: format!("`{p}` is not an IP address or CIDR range (10.0.0.0/8, fd00::/8)"),
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let public_base_url = match raw.public_base_url.clone() {
            Some(url) => {
                if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                    return Err(ConfigError::Invalid {
                        key: "public_base_url",
                        message: format!("`{url}` is not an http(s) base URL"),
                    });
                }
                url
            }
            None => base_url_for(raw.listen),
        };
        let positive = |key: &'static str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid { key, message: "must be greater than 0".into() })
            } else {
                Ok(())
            }
        };
        positive("database_max_connections", raw.database_max_connections.into())?;
        positive("request_body_limit_bytes", raw.request_body_limit_bytes as u64)?;
        positive("request_timeout_secs", raw.request_timeout_secs)?;
        positive("header_read_timeout_secs", raw.header_read_timeout_secs)?;
        positive("max_connections", raw.max_connections as u64)?;
        positive("invitation_ttl_days", raw.invitation_ttl_days.into())?;
        positive("dns_timeout_ms", raw.dns_timeout_ms)?;
        positive("dns_attempts", raw.dns_attempts as u64)?;
        positive("domain_reverify_interval_secs", raw.domain_reverify_interval_secs)?;
        positive("domain_retry_interval_secs", raw.domain_retry_interval_secs)?;
        positive("domain_lapse_after_failures", raw.domain_lapse_after_failures.into())?;
        positive("job_tick_secs", raw.job_tick_secs)?;
        positive("job_concurrency", raw.job_concurrency as u64)?;
        positive("reconcile_interval_secs", raw.reconcile_interval_secs)?;
        positive("sso_attempt_ttl_secs", raw.sso_attempt_ttl_secs)?;
        positive("sso_code_ttl_secs", raw.sso_code_ttl_secs)?;
        positive("sso_session_ttl_secs", raw.sso_session_ttl_secs)?;
        positive("sso_http_timeout_ms", raw.sso_http_timeout_ms)?;
        positive("sso_metadata_ttl_secs", raw.sso_metadata_ttl_secs)?;
        positive("smtp_timeout_secs", raw.smtp_timeout_secs)?;
        positive("mail_retry_hours", raw.mail_retry_hours)?;
        positive("mail_poll_interval_ms", raw.mail_poll_interval_ms)?;
        positive("portal_idle_timeout_secs", raw.portal_idle_timeout_secs)?;
        positive("webhook_timeout_secs", raw.webhook_timeout_secs)?;
        positive("webhook_retry_for_secs", raw.webhook_retry_for_secs)?;
        positive("webhook_first_retry_ms", raw.webhook_first_retry_ms)?;
        positive("webhook_poll_interval_ms", raw.webhook_poll_interval_ms)?;
        if let Some(r) = raw
            .portal_resources
            .iter()
            .find(|r| r.title.trim().is_empty() || !matches!(r.url.scheme(), "http" | "https"))
        {
            return Err(ConfigError::Invalid {
                key: "portal_resources",
                message: format!("`{}` needs a title and an http(s) url", r.url),
            });
        }
        let mail = resolve_mail(&raw, &database_url)?;

        let tenant_connection = match raw.tenant_connection {
            None => None,
            Some(t) => Some(resolve_tenant_connection(t, raw.sso_dev_mode)?),
        };
        let sealing_keys = match &raw.secrets_key_file {
            None => crate::secrets::SealingKeys::default(),
            Some(path) => crate::secrets::SealingKeys::from_file(path)
                .map_err(|message| ConfigError::Invalid { key: "secrets_key_file", message })?,
        };
        let prefix_ok = !raw.domain_challenge_prefix.is_empty()
            && raw.domain_challenge_prefix.len() <= 63
            && raw.domain_challenge_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(ConfigError::Invalid {
                key: "domain_challenge_prefix",
                message: "must be one DNS label of letters, digits, `-` and `_`".into(),
            });
        }
        Ok(Self {
            listen: raw.listen,
            public_base_url,
            database_url: Secret::new(database_url),
            database_max_connections: raw.database_max_connections,
            auto_migrate: raw.auto_migrate,
            log_format: raw.log_format,
            request_body_limit_bytes: raw.request_body_limit_bytes,
            request_timeout_secs: raw.request_timeout_secs,
            header_read_timeout_secs: raw.header_read_timeout_secs,
            max_connections: raw.max_connections,
            rate_limit_failed_auth_per_minute: raw.rate_limit_failed_auth_per_minute,
            rate_limit_sign_in_per_minute: raw.rate_limit_sign_in_per_minute,
            trust_forwarded_for: raw.trust_forwarded_for,
            trusted_proxies,
            invitation_ttl_days: raw.invitation_ttl_days,
            dns_name_servers: raw.dns_name_servers,
            dns_timeout_ms: raw.dns_timeout_ms,
            dns_attempts: raw.dns_attempts,
            domain_challenge_prefix: raw.domain_challenge_prefix,
            domain_reverify_interval_secs: raw.domain_reverify_interval_secs,
            domain_retry_interval_secs: raw.domain_retry_interval_secs,
            domain_lapse_after_failures: raw.domain_lapse_after_failures,
            background_jobs: raw.background_jobs,
            job_tick_secs: raw.job_tick_secs,
            job_concurrency: raw.job_concurrency,
            reconcile_interval_secs: raw.reconcile_interval_secs,
            sso_dev_mode: raw.sso_dev_mode,
            sso_attempt_ttl_secs: raw.sso_attempt_ttl_secs,
            sso_code_ttl_secs: raw.sso_code_ttl_secs,
            sso_session_ttl_secs: raw.sso_session_ttl_secs,
            sso_clock_skew_secs: raw.sso_clock_skew_secs,
            sso_http_timeout_ms: raw.sso_http_timeout_ms,
            sso_metadata_ttl_secs: raw.sso_metadata_ttl_secs,
            tenant_connection,
            sealing_keys,
            mail,
            portal_idle_timeout_secs: raw.portal_idle_timeout_secs,
            portal_resources: raw.portal_resources.clone(),
            webhooks: WebhookConfig {
                allow_private_addresses: raw.webhook_allow_private_addresses,
                timeout: std::time::Duration::from_secs(raw.webhook_timeout_secs),
                retry_for: std::time::Duration::from_secs(raw.webhook_retry_for_secs),
                first_retry: std::time::Duration::from_millis(raw.webhook_first_retry_ms),
                poll_interval: std::time::Duration::from_millis(raw.webhook_poll_interval_ms),
            },
            billing: raw.billing.clone(),
            metrics_listen: raw.metrics_listen,
        })
    }

    /// The zero-configuration defaults (what `load` gives with no file and no environment).
    pub fn defaults() -> Self {
        Self::resolve(RawConfig::default()).expect("the defaults are valid")
    }
}

/// The mail settings: SMTP when `smtp_url` is set, else the `.eml` folder.
fn resolve_mail(raw: &RawConfig, database_url: &str) -> Result<MailConfig, ConfigError> {
    let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };

    if raw.mail_from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(invalid("mail_from", format!("`{}` is not `Name <address>` or an address", raw.mail_from)));
    }
    let transport = match &raw.smtp_url {
        Some(url) => {
            let (host, port, security) = SmtpSettings::parse_url(url).map_err(|m| invalid("smtp_url", m))?;
            let password = raw
                .smtp_password_file
                .as_ref()
                .map(|path| {
                    std::fs::read_to_string(path)
                        .map(|p| Secret::new(p.trim_end_matches(['\r', '\n'])))
                        .map_err(|e| invalid("smtp_password_file", format!("cannot read {}: {e}", path.display())))
                })
                .transpose()?;
            if password.is_some() != raw.smtp_username.is_some() {
                return Err(invalid("smtp_username", "set smtp_username and smtp_password_file together".into()));
            }
            if password.is_some() && security == SmtpSecurity::None {
                return Err(invalid("smtp_url", "credentials are not sent over a plain connection (tls=none)".into()));
            }
            let ca_pem = raw
                .smtp_ca_file
                .as_ref()
                .map(|path| {
                    std::fs::read(path)
                        .map_err(|e| invalid("smtp_ca_file", format!("cannot read {}: {e}", path.display())))
                })
                .transpose()?;
            MailTransport::Smtp(SmtpSettings {
                host,
                port,
                security,
                username: raw.smtp_username.clone(),
                password,
                ca_pem,
                timeout: std::time::Duration::from_secs(raw.smtp_timeout_secs),
            })
        }
        None => {
            for (key, set) in [
                ("smtp_username", raw.smtp_username.is_some()),
                ("smtp_password_file", raw.smtp_password_file.is_some()),
                ("smtp_ca_file", raw.smtp_ca_file.is_some()),
            ] {
                if set {
                    return Err(invalid(key, "applies only with smtp_url".into()));
                }
            }
            MailTransport::Folder(raw.mail_dir.clone().unwrap_or_else(|| default_mail_dir(database_url)))
        }
    };
    Ok(MailConfig {
        transport,
        from: raw.mail_from.clone(),
        retry_for: std::time::Duration::from_secs(raw.mail_retry_hours * 3600),
        poll_interval: std::time::Duration::from_millis(raw.mail_poll_interval_ms),
    })
}

/// Where `.eml` files go without SMTP: `mail/` beside the SQLite database
/// file, or in the working directory for PostgreSQL and in-memory SQLite.
fn default_mail_dir(database_url: &str) -> PathBuf {
    let file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(""))
        .filter(|path| !path.is_empty() && !path.starts_with(':'));
    match file.and_then(|f| Path::new(f).parent()) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("mail"),
        _ => PathBuf::from("mail"),
    }
}

fn resolve_tenant_connection(t: RawTenantConnection, dev_mode: bool) -> Result<TenantConnection, ConfigError> {
    check_issuer(&t.issuer, dev_mode)
        .map_err(|message| ConfigError::Invalid { key: "tenant_connection.issuer", message })?;
    let client_secret = match (t.client_secret, t.client_secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "tenant_connection.client_secret_file",
                message: "set either client_secret or client_secret_file, not both".into(),
            })
        }
        (Some(s), None) => s,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Invalid {
                key: "tenant_connection.client_secret_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?
            .trim()
            .to_string(),
        (None, None) => {
            return Err(ConfigError::Invalid {
                key: "tenant_connection.client_secret",
                message: "a tenant connection needs a client secret (or client_secret_file)".into(),
            })
        }
    };
    let nonempty = |key: &'static str, v: &str| {
        if v.trim().is_empty() {
            Err(ConfigError::Invalid { key, message: "must not be empty".into() })
        } else {
            Ok(())
        }
    };
    nonempty("tenant_connection.client_id", &t.client_id)?;
    nonempty("tenant_connection.client_secret", &client_secret)?;
    nonempty("tenant_connection.tenant_param", &t.tenant_param)?;
    nonempty("tenant_connection.tenant_claim", &t.tenant_claim)?;
    let mut scopes = t.scopes;
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    Ok(TenantConnection {
        issuer: t.issuer,
        client_id: t.client_id,
        client_secret: Secret::new(client_secret),
        scopes,
        tenant_param: t.tenant_param,
        tenant_claim: t.tenant_claim,
        require_email_verified: t.require_email_verified,
    })
}

/// An OpenID issuer must be an `https` URL without query or fragment (`http` only in dev mode).
pub fn check_issuer(raw: &str, dev_mode: bool) -> Result<(), String> {
    let issuer = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    match issuer.scheme() {
        "https" => {}
        "http" if dev_mode => {}
        "http" => return Err(format!("`{issuer}` must be https (http is allowed only with sso_dev_mode = true)")),
        _ => return Err(format!("`{issuer}` is not an https URL")),
    }
    if issuer.query().is_some() || issuer.fragment().is_some() || issuer.cannot_be_a_base() {
        return Err(format!("`{issuer}` must not have a query or fragment"));
    }
    Ok(())
}

/// `http://<listen>/`, with an unspecified address shown as loopback.
pub fn base_url_for(listen: SocketAddr) -> Url {
    let host =
        if listen.ip().is_unspecified() { SocketAddr::new([127, 0, 0, 1].into(), listen.port()) } else { listen };
    Url::parse(&format!("http://{host}/")).expect("a socket address makes a valid URL")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_zero_config() {
        let c = Config::defaults();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_base_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(c.database_url.expose(), DEFAULT_DATABASE_URL);
        assert!(c.auto_migrate);
        assert!(!format!("{c:?}").contains("roster.db"), "database URL must not be printed");
    }

    #[test]
    fn file_then_environment_and_secret_files() {
        Jail::expect_with(|jail| {
            jail.create_file("roster.toml", "listen = \"0.0.0.0:9000\"\nrequest_timeout_secs = 5\n")?;
            jail.create_file("db-url", "postgres://u:pw@db/roster\n")?;
            jail.set_env("ROSTER_REQUEST_TIMEOUT_SECS", "7");
            jail.set_env("ROSTER_DATABASE_URL_FILE", "db-url");
            let c = Config::load(Some(Path::new("roster.toml"))).expect("loads");
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.public_base_url.as_str(), "http://127.0.0.1:9000/");
            assert_eq!(c.request_timeout_secs, 7);
            assert_eq!(c.database_url.expose(), "postgres://u:pw@db/roster");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("ROSTER_REQUEST_TIMEOUT_SECS", "soon");
            let err = Config::load(None).unwrap_err().to_string().to_lowercase();
            assert!(err.contains("request_timeout_secs"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("roster.toml", "listne = \"0.0.0.0:9000\"\n")?;
            let err = Config::load(Some(Path::new("roster.toml"))).unwrap_err().to_string();
            assert!(err.contains("listne"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ROSTER_DATABASE_URL", "mysql://x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("database_url"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn roster_variables_that_are_not_settings_are_ignored_and_text_stays_text() {
        Jail::expect_with(|jail| {
            jail.create_file("roster.toml", "[tenant_connection]\nissuer = \"https://idp.example.com\"\n")?;
            jail.set_env("ROSTER_BENCH_TOKEN", "roster_scim_x");
            jail.set_env("ROSTER_CONFIG", "elsewhere.toml");
            jail.set_env("ROSTER_PORT", "tcp://10.0.0.1:8080");
            jail.set_env("ROSTER_REQUEST_TIMEOUT_SEC", "7");
            jail.set_env("ROSTER_TENANT_CONNECTION__CLIENT_ID", "012345");
            jail.set_env("ROSTER_TENANT_CONNECTION__CLIENT_SECRET", "true");
            jail.set_env("ROSTER_DOMAIN_CHALLENGE_PREFIX", "2024");
            jail.set_env("ROSTER_REQUEST_TIMEOUT_SECS", "9");
            let c = Config::load(Some(Path::new("roster.toml"))).expect("loads");
            let t = c.tenant_connection.expect("a tenant connection");
            assert_eq!(t.client_id, "012345");
            assert_eq!(t.client_secret.expose(), "true");
            assert_eq!(c.domain_challenge_prefix, "2024");
            assert_eq!(c.request_timeout_secs, 9);
            assert_eq!(Config::unknown_variables(), ["ROSTER_PORT", "ROSTER_REQUEST_TIMEOUT_SEC"]);
            Ok(())
        });
    }

    #[test]
    fn the_example_file_loads() {
        // Inside a jail: other tests set ROSTER_* variables in their jails.
        Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/roster.example.toml");
            let c = Config::load(Some(&path)).expect("the example configuration is valid");
            assert!(!c.sso_dev_mode);
            assert!(c.tenant_connection.is_none());
            assert!(!c.billing.self_serve_seats);
            Ok(())
        });
    }

    #[test]
    fn self_serve_seats_from_file_or_environment() {
        Jail::expect_with(|jail| {
            assert!(!Config::load(None).expect("defaults").billing.self_serve_seats, "requests by default");
            jail.create_file("roster.toml", "[billing]\nself_serve_seats = true\n")?;
            assert!(Config::load(Some(Path::new("roster.toml"))).expect("loads").billing.self_serve_seats);
            jail.set_env("ROSTER_BILLING__SELF_SERVE_SEATS", "false");
            assert!(!Config::load(Some(Path::new("roster.toml"))).expect("loads").billing.self_serve_seats);
            assert!(Config::unknown_variables().is_empty(), "a known setting");
            jail.create_file("typo.toml", "[billing]\nself_serve = true\n")?;
            assert!(Config::load(Some(Path::new("typo.toml"))).is_err(), "an unknown billing key is refused");
            Ok(())
        });
    }

    #[test]
    fn tenant_connection_from_file_and_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("secret", "s3cret\n")?;
            jail.create_file(
                "roster.toml",
                "[tenant_connection]\nissuer = \"https://api.descope.com/P2abc\"\nclient_id = \"P2abc\"\n",
            )?;
            jail.set_env("ROSTER_TENANT_CONNECTION__CLIENT_SECRET_FILE", "secret");
            let c = Config::load(Some(Path::new("roster.toml"))).expect("loads");
            assert!(!format!("{c:?}").contains("s3cret"));
            let t = c.tenant_connection.expect("a tenant connection");
            assert_eq!(t.issuer, "https://api.descope.com/P2abc");
            assert_eq!(t.client_secret.expose(), "s3cret");
            assert_eq!((t.tenant_param.as_str(), t.tenant_claim.as_str()), ("tenant", "tenants"));
            assert!(t.require_email_verified);
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file(
                "roster.toml",
                "[tenant_connection]\nissuer = \"http://idp.internal\"\nclient_id = \"x\"\nclient_secret = \"y\"\n",
            )?;
            let err = Config::load(Some(Path::new("roster.toml"))).unwrap_err().to_string();
            assert!(err.contains("tenant_connection.issuer") && err.contains("https"), "{err}");
            jail.set_env("ROSTER_SSO_DEV_MODE", "true");
            assert!(Config::load(Some(Path::new("roster.toml"))).is_ok());
            Ok(())
        });
    }
}
