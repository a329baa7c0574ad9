//! Associated domains against a real DNS server on loopback: the whole
//! lifecycle, races between organizations, refusals, and what routes.

use crate::dns_server::{SilentDns, TestDns};
use crate::helpers::*;
use chrono::{Duration, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use roster::clock::ManualClock;
use roster::model::Email;
use serde_json::{json, Value};
use std::sync::Arc;

async fn app_with_dns(dns: std::net::SocketAddr, clock: &ManualClock) -> TestApp {
    TestApp::spawn_with_dns(dns, Arc::new(clock.clone())).await
}

fn clock() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap())
}

async fn add(app: &TestApp, key: &str, name: &str) -> Value {
    let (s, body) = app.post("/api/v1/domains", key, json!({ "name": name })).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body
}

async fn verify(app: &TestApp, key: &str, id: &str) -> (StatusCode, Value) {
    app.post(&format!("/api/v1/domains/{id}/verify"), key, json!({})).await
}

async fn routes_to(app: &TestApp, email: &str) -> Option<uuid::Uuid> {
    app.roster.organization_for_email(&Email::parse(email).unwrap()).await.unwrap().map(|(org, _)| org.id)
}

#[tokio::test]
async fn lifecycle_pending_verified_lapsed_and_verified_again() {
    let dns = TestDns::start().await;
    let clock = clock();
    let app = app_with_dns(dns.addr, &clock).await;
    let org = app.org("Acme", 5).await;
    let key = &org.owner_key;

    let added = add(&app, key, " Acme.COM. ").await;
    assert_eq!(added["name"], "acme.com");
    assert_eq!(added["status"], "pending");
    assert_eq!(added["record"]["type"], "TXT");
    assert_eq!(added["record"]["name"], "_roster-challenge.acme.com");
    let value = added["record"]["value"].as_str().unwrap().to_string();
    assert!(value.starts_with("roster-domain-verification="));
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(routes_to(&app, "ada@acme.com").await, None, "a pending domain routes nobody");

    // Nothing published yet: a definite failure that says so.
    let (s, check) = verify(&app, key, &id).await;
    assert_eq!(s, StatusCode::OK, "{check}");
    assert_eq!(check["result"], "no_such_name");
    assert_eq!(check["domain"]["status"], "failed");
    assert!(check["message"].as_str().unwrap().contains("_roster-challenge.acme.com"));

    // The admin publishes the record as instructed.
    dns.set_txt("_roster-challenge.acme.com", &[&[value.as_str()]]);
    let (s, check) = verify(&app, key, &id).await;
    assert_eq!(s, StatusCode::OK, "{check}");
    assert_eq!(check["result"], "verified");
    assert_eq!(check["domain"]["status"], "verified");
    assert_eq!(routes_to(&app, "Ada@ACME.com").await, Some(org.id));

    // The record disappears; the background job needs 3 failed checks in a row.
    dns.remove("_roster-challenge.acme.com");
    for round in 1..=3 {
        clock.advance(Duration::days(2));
        let checked = roster::jobs::domain_checks_tick(&app.roster, "replica-a", std::time::Duration::from_secs(60), 2)
            .await
            .unwrap();
        assert_eq!(checked, Some(1), "round {round}");
        let (_, d) = app.get(&format!("/api/v1/domains/{id}"), key).await;
        let expected = if round < 3 { "verified" } else { "lapsed" };
        assert_eq!(d["status"], expected, "round {round}: {d}");
        assert_eq!(d["failures"], round);
    }
    assert_eq!(routes_to(&app, "ada@acme.com").await, None, "a lapsed domain routes nobody");
    // The Owner is told, with what DNS showed and the record to publish again.
    assert_eq!(app.deliver_mail().await, 1);
    let notice = app.mail_files().pop().expect("a notice");
    assert!(notice.contains("To: owner@acme.example.com"), "{notice}");
    assert!(notice.contains("Subject: Acme: acme.com lapsed"), "{notice}");
    assert!(notice.contains("lapsed after 3 failed checks in a row"), "{notice}");
    assert!(notice.contains(&format!("_roster-challenge.acme.com TXT \"{value}\"")), "{notice}");

    // Published again: verified again, failures reset.
    dns.set_txt("_roster-challenge.acme.com", &[&[value.as_str()]]);
    let (_, check) = verify(&app, key, &id).await;
    assert_eq!(check["domain"]["status"], "verified");
    assert_eq!(check["domain"]["failures"], 0);

    let actions: Vec<String> = app
        .audit(key)
        .await
        .iter()
        .filter_map(|e| e["action"].as_str().filter(|a| a.starts_with("domain.")).map(String::from))
        .collect();
    assert_eq!(actions, vec!["domain.verified", "domain.lapsed", "domain.verified", "domain.failed", "domain.added"]);
    let lapsed = app.audit(key).await.into_iter().find(|e| e["action"] == "domain.lapsed").unwrap();
    assert_eq!(lapsed["actor_kind"], "system");
}

#[tokio::test]
async fn mismatches_show_what_was_found_and_split_or_cnamed_records_verify() {
    let dns = TestDns::start().await;
    let clock = clock();
    let app = app_with_dns(dns.addr, &clock).await;
    let org = app.org("Many", 5).await;
    let key = &org.owner_key;

    let a = add(&app, key, "wrong.example").await;
    dns.set_txt("_roster-challenge.wrong.example", &[&["roster-domain-verification=not-the-token"]]);
    let (s, check) = verify(&app, key, a["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(check["result"], "no_matching_record");
    assert_eq!(check["found"], json!(["roster-domain-verification=not-the-token"]));
    assert!(check["message"].as_str().unwrap().contains("not-the-token"));

    // Several TXT records, the token split into two character-strings.
    let b = add(&app, key, "split.example").await;
    let value = b["record"]["value"].as_str().unwrap();
    let (head, tail) = value.split_at(20);
    dns.set_txt("_roster-challenge.split.example", &[&["v=spf1 -all"], &[head, tail]]);
    let (_, check) = verify(&app, key, b["id"].as_str().unwrap()).await;
    assert_eq!(check["result"], "verified", "{check}");

    // A CNAME at the challenge name, to where the record lives.
    let c = add(&app, key, "alias.example").await;
    dns.set_cname("_roster-challenge.alias.example", "proofs.alias.example");
    dns.set_txt("proofs.alias.example", &[&[c["record"]["value"].as_str().unwrap()]]);
    let (_, check) = verify(&app, key, c["id"].as_str().unwrap()).await;
    assert_eq!(check["result"], "verified", "{check}");

    // An internationalized domain, stored and queried in its IDNA form.
    let d = add(&app, key, "Bücher.Example").await;
    assert_eq!(d["name"], "xn--bcher-kva.example");
    dns.set_txt("_roster-challenge.xn--bcher-kva.example", &[&[d["record"]["value"].as_str().unwrap()]]);
    let (_, check) = verify(&app, key, d["id"].as_str().unwrap()).await;
    assert_eq!(check["result"], "verified", "{check}");
    assert_eq!(routes_to(&app, "jan@xn--bcher-kva.example").await, Some(org.id));
}

#[tokio::test]
async fn an_unanswering_server_keeps_the_domain_pending() {
    let silent = SilentDns::start().await;
    let clock = clock();
    let app = app_with_dns(silent.addr, &clock).await;
    let org = app.org("Quiet", 5).await;
    let d = add(&app, &org.owner_key, "quiet.example").await;
    let before = app.audit(&org.owner_key).await.len();
    let (s, check) = verify(&app, &org.owner_key, d["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{check}");
    assert_eq!(check["result"], "transient");
    assert_eq!(check["domain"]["status"], "pending");
    assert_eq!(check["domain"]["failures"], 0);
    assert_eq!(app.audit(&org.owner_key).await.len(), before, "no status change, no audit record");
}

#[tokio::test]
async fn names_that_are_not_a_company_domain_are_refused() {
    let dns = TestDns::start().await;
    let clock = clock();
    let app = app_with_dns(dns.addr, &clock).await;
    let org = app.org("Picky", 5).await;
    for bad in
        ["com", "co.uk", "github.io", "192.168.1.10", "[::1]", "localhost", "-acme.com", "ac me.com", "", "a..b.com"]
    {
        let (s, body) = app.post("/api/v1/domains", &org.owner_key, json!({ "name": bad })).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
        assert_eq!(body["field"], "name");
    }
    let (_, list) = app.get("/api/v1/domains", &org.owner_key).await;
    assert_eq!(list, json!([]));
    add(&app, &org.owner_key, "foo.github.io").await;
    let (s, _) = app.post("/api/v1/domains", &org.owner_key, json!({ "name": "FOO.github.io" })).await;
    assert_eq!(s, StatusCode::CONFLICT, "already added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_organizations_racing_for_one_domain_one_wins() {
    let dns = TestDns::start().await;
    let clock = clock();
    let app = app_with_dns(dns.addr, &clock).await;
    let (a, b) = (app.org("Red", 5).await, app.org("Blue", 5).await);
    let da = add(&app, &a.owner_key, "contested.example").await;
    let db = add(&app, &b.owner_key, "contested.example").await;
    dns.set_txt(
        "_roster-challenge.contested.example",
        &[&[da["record"]["value"].as_str().unwrap()], &[db["record"]["value"].as_str().unwrap()]],
    );
    let (ra, rb) = tokio::join!(
        verify(&app, &a.owner_key, da["id"].as_str().unwrap()),
        verify(&app, &b.owner_key, db["id"].as_str().unwrap())
    );
    let mut statuses = vec![ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, vec![StatusCode::OK, StatusCode::CONFLICT], "{ra:?} {rb:?}");
    let winner = if ra.0 == StatusCode::OK { a.id } else { b.id };
    assert_eq!(routes_to(&app, "x@contested.example").await, Some(winner));
    // Nobody can add it anew while it is verified elsewhere.
    let c = app.org("Green", 5).await;
    let (s, body) = app.post("/api/v1/domains", &c.owner_key, json!({ "name": "contested.example" })).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_removed_domain_stops_routing_at_once() {
    let dns = TestDns::start().await;
    let clock = clock();
    let app = app_with_dns(dns.addr, &clock).await;
    let org = app.org("Gone", 5).await;
    let d = add(&app, &org.owner_key, "gone.example").await;
    dns.set_txt("_roster-challenge.gone.example", &[&[d["record"]["value"].as_str().unwrap()]]);
    verify(&app, &org.owner_key, d["id"].as_str().unwrap()).await;
    assert_eq!(routes_to(&app, "a@gone.example").await, Some(org.id));
    let (s, _) = app
        .call(Method::DELETE, &format!("/api/v1/domains/{}", d["id"].as_str().unwrap()), Some(&org.owner_key), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(routes_to(&app, "a@gone.example").await, None);
    assert_eq!(app.audit(&org.owner_key).await[0]["action"], "domain.removed");
}

#[tokio::test]
async fn one_replica_at_a_time_runs_the_background_checks() {
    let dns = TestDns::start().await;
    let clock = clock();
    let app = app_with_dns(dns.addr, &clock).await;
    let lease = std::time::Duration::from_secs(180);
    let first = roster::jobs::domain_checks_tick(&app.roster, "replica-a", lease, 2).await.unwrap();
    let second = roster::jobs::domain_checks_tick(&app.roster, "replica-b", lease, 2).await.unwrap();
    assert_eq!((first, second), (Some(0), None));
    // The holder renews; another replica takes over once the lease has run out.
    assert_eq!(roster::jobs::domain_checks_tick(&app.roster, "replica-a", lease, 2).await.unwrap(), Some(0));
    clock.advance(Duration::seconds(181));
    assert_eq!(roster::jobs::domain_checks_tick(&app.roster, "replica-b", lease, 2).await.unwrap(), Some(0));
    assert_eq!(roster::jobs::domain_checks_tick(&app.roster, "replica-a", lease, 2).await.unwrap(), None);
}
