//! Roster's own share of a single sign-on login: the callback request
//! (attempt check, code exchange, ID token verification, membership, code
//! and session) minus the time Roster waited for the provider, measured
//! against the real test OpenID provider (`tests/oidc-provider`, installed
//! by `scripts/test.sh`) on loopback, with Roster on its embedded SQLite.
//!
//! `cargo bench --bench sso_login [-- LOGINS]` prints p50/p99 of Roster's
//! share, the whole callback, and the JWKS fetches the logins caused.
//! Under `cargo test` it does nothing.

#[allow(dead_code, unused_imports, clippy::unwrap_used)]
#[path = "../tests/api/oidc_provider.rs"]
mod oidc_provider;

use oidc_provider::{query_param, tenant_connection, Browser, OidcProvider, ProviderClient, ProviderConfig};
use roster::clock::SystemClock;
use roster::config::Config;
use roster::http::AppState;
use roster::model::{Email, Name, Plan, TenantId};
use roster::secrets::Secret;
use roster::service::{Actor, NewOrganization, NewSsoClient};
use roster::store::SsoSettings;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PRODUCT: &str = "http://127.0.0.1:9/app/callback";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("sso_login: a benchmark; run it with `cargo bench --bench sso_login`");
        return;
    }
    let logins = args.iter().skip(1).find_map(|a| a.parse::<usize>().ok()).unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(logins));
}

async fn run(logins: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let callback = format!("http://{addr}/sso/callback");
    let idp = OidcProvider::start(
        &ProviderConfig::new().client(ProviderClient::new("roster", "roster-secret", &callback)).account(
            "owner",
            json!({"email": "owner@acme.example.com", "email_verified": true, "tenants": {"T-acme": {"roles": []}}}),
        ),
    )
    .await;

    let mut config = Config::defaults();
    config.database_url = Secret::new(format!("sqlite://{}?mode=rwc", dir.path().join("roster.db").display()));
    config.listen = addr;
    config.public_base_url = roster::config::base_url_for(addr);
    config.sso_dev_mode = true;
    config.background_jobs = false;
    config.tenant_connection = Some(tenant_connection(idp.issuer.clone()));
    let state = AppState::with_clock(config, Arc::new(SystemClock)).await.expect("app state");
    let roster = state.roster.clone();
    tokio::spawn(roster::http::serve(listener, state, std::future::pending()));

    let org = roster
        .create_organization(
            NewOrganization {
                name: Name::parse("Acme").expect("name"),
                seats: 10,
                owner_email: Email::parse("owner@acme.example.com").expect("email"),
                plan: Plan::EnterpriseSeatYearly,
                contact_email: None,
            },
            &roster::service::Operator::cli_as("cli:bench"),
        )
        .await
        .expect("organization");
    let actor = Actor::cli(org.organization.id);
    let sso = SsoSettings { tenant_id: Some(TenantId::parse("T-acme").expect("tenant")), ..SsoSettings::default() };
    roster.set_sso(&actor, sso.into()).await.expect("sso settings");
    roster
        .create_sso_client(
            &actor,
            NewSsoClient { name: Name::parse("Product").expect("name"), redirect_uris: vec![PRODUCT.into()] },
        )
        .await
        .expect("client");
    let rp = roster.relying_party().expect("SSO is set up").clone();

    let authorize = format!("http://{addr}/sso/authorize?tenant=T-acme&redirect_uri={PRODUCT}&state=s");
    // The first login fetches discovery and keys; it is not counted.
    let warm = Browser::new();
    let at_callback = warm.follow(&authorize, "owner", &callback).await.expect("first login");
    let _ = warm.get(&at_callback).await;
    let jwks_before = idp.stats().await["jwks_fetches"].as_u64().unwrap_or(0);

    let mut own = Vec::with_capacity(logins);
    let mut whole = Vec::with_capacity(logins);
    let browser = Browser::new();
    for _ in 0..logins {
        let at_callback = browser.follow(&authorize, "owner", &callback).await.expect("login");
        let waited = rp.http().time_waiting();
        let started = Instant::now();
        let res = browser.get(&at_callback).await;
        let took = started.elapsed();
        let provider = rp.http().time_waiting() - waited;
        assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER, "login failed");
        let to = res.headers()["location"].to_str().expect("location").to_string();
        assert!(query_param(&to, "code").is_some());
        whole.push(took);
        own.push(took.saturating_sub(provider));
    }
    let jwks_after = idp.stats().await["jwks_fetches"].as_u64().unwrap_or(0);
    println!("sso_login: {logins} logins, Roster on SQLite, provider on loopback");
    println!("  Roster's share of the callback  p50 {:>8.2?}  p99 {:>8.2?}", pct(&mut own, 50), pct(&mut own, 99));
    println!("  whole callback (with provider)  p50 {:>8.2?}  p99 {:>8.2?}", pct(&mut whole, 50), pct(&mut whole, 99));
    println!("  JWKS fetches during the timed logins: {}", jwks_after - jwks_before);
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[((v.len() * p).div_ceil(100)).saturating_sub(1).min(v.len() - 1)]
}
