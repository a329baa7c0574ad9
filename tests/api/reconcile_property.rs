//! A property test of seats and roles reconciliation through the real doors:
//! random sequences of admin, invitation, SCIM, mapping, seat and SSO-role
//! operations, then one reconcile, after which the organization must be in
//! line with its rules and a second reconcile must find nothing to do.
//!
//! The sequences come from a fixed list of seeds, so every run is the same;
//! a failure names the seed and the operations that led to it.
//!
//! Real SSO logins are not driven here (they need the OpenID provider
//! process; `sso.rs` covers the SSO door and its role derivation). The SSO
//! role input is simulated by saving tenant-claim roles on a member the way a
//! login saves them, straight in the store, leaving the re-derivation to the
//! reconciler.

use crate::helpers::*;
use crate::scim::scim_token;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use roster::clock::{Clock, ManualClock, SystemClock};
use roster::model::{Role, RoleMappingSource};
use roster::roles::{derive_role, scim_role_values, GroupRef, RoleInputs, RoleMapping, RoleSource};
use roster::service::Actor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The seeds every run goes through. `RECONCILE_PROPERTY_SEEDS=N` runs seeds
/// 0..N instead, to explore.
const SEEDS: [u64; 24] = [
    1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946, 17711, 28657, 46368,
    75025,
];
const OPS_PER_SEED: usize = 35;
/// Operations of the setup and drift phases (see [`Phase`]).
const SETUP_OPS: usize = 10;
const DRIFT_OPS: usize = 6;

/// People the operations are about; the last one is the organization's Owner.
const PEOPLE: usize = 8;
const GROUP_NAMES: [(&str, Option<&str>); 4] =
    [("eng-admins", None), ("Writers", Some("grp-w")), ("Readers", Some("GRP-R")), ("Sales", None)];
/// SCIM `roles` and SSO tenant roles: role names, mapped names, and names nobody maps.
const IDP_ROLES: [&str; 6] = ["Admin", "Writer", "read", "owner", "Engineer", "Tenant Admin"];
/// Mapping values: group names, group externalIds and IdP role names, in other cases.
const MAPPING_VALUES: [(RoleMappingSource, &str); 7] = [
    (RoleMappingSource::Group, "ENG-ADMINS"),
    (RoleMappingSource::Group, "grp-w"),
    (RoleMappingSource::Group, "readers"),
    (RoleMappingSource::Group, "sales"),
    (RoleMappingSource::IdpRole, "writer"),
    (RoleMappingSource::IdpRole, "ENGINEER"),
    (RoleMappingSource::IdpRole, "admin"),
];
const ROLES: [Role; 4] = [Role::Read, Role::Write, Role::Admin, Role::Owner];

/// One operation; indexes pick among what exists when it runs.
#[derive(Debug, Clone)]
enum Op {
    AddMember { person: usize, role: Role, as_admin: bool },
    AssignRole { member: usize, role: Option<Role>, idp: bool, as_admin: bool },
    Suspend { member: usize, as_admin: bool },
    Reactivate { member: usize },
    Remove { member: usize, as_admin: bool },
    Invite { person: usize, role: Role },
    Revoke { invitation: usize },
    Resend { invitation: usize },
    ScimCreate { person: usize, roles: Vec<&'static str>, active: bool },
    ScimActive { user: usize, active: bool },
    ScimRoles { user: usize, roles: Vec<&'static str> },
    ScimDelete { user: usize },
    GroupCreate { name: usize, users: Vec<usize> },
    GroupAdd { group: usize, users: Vec<usize> },
    GroupRemove { group: usize, users: Vec<usize> },
    GroupDelete { group: usize },
    GroupRename { group: usize, name: usize },
    MapCreate { mapping: usize, role: Role },
    MapDelete { mapping: usize },
    Seats { purchased: i64, policy: Option<&'static str> },
    DefaultRole { role: Role },
    SsoRoles { member: usize, roles: Vec<&'static str> },
    AdvanceDays { days: i64 },
    ReconcileOverHttp { with_fingerprint: bool },
}

fn some_roles(rng: &mut StdRng) -> Vec<&'static str> {
    IDP_ROLES.iter().copied().filter(|_| rng.gen_bool(0.25)).collect()
}

fn some_indexes(rng: &mut StdRng) -> Vec<usize> {
    (0..rng.gen_range(1..4)).map(|_| rng.gen_range(0..16)).collect()
}

/// Where an operation falls in a sequence: the first ones mostly create
/// people, groups and mappings so the rest has something to act on; the last
/// ones mostly move role sources and seats, so the final reconcile has work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Mixed,
    Drift,
}

fn random_op(rng: &mut StdRng, phase: Phase) -> Op {
    let pick = rng.gen_range(0..16usize);
    let role = ROLES[rng.gen_range(0..ROLES.len())];
    // The draws below select the operations in the `match`.
    let allowed: Vec<u32> = match phase {
        Phase::Setup => (0..=9).chain(26..=32).chain(36..=47).chain(36..=47).chain(60..=63).chain(72..=78).collect(),
        Phase::Mixed => (0..=105).collect(),
        Phase::Drift => (10..=15).chain(20..=22).chain(48..=53).chain(72..=95).chain(103..=105).collect(),
    };
    let draw = allowed[rng.gen_range(0..allowed.len())];
    match draw {
        0..=9 => Op::AddMember { person: rng.gen_range(0..=PEOPLE), role, as_admin: rng.gen_bool(0.2) },
        10..=15 => Op::AssignRole {
            member: pick,
            role: if rng.gen_bool(0.8) { Some(role) } else { None },
            idp: rng.gen_bool(0.5),
            as_admin: rng.gen_bool(0.2),
        },
        16..=19 => Op::Suspend { member: pick, as_admin: rng.gen_bool(0.2) },
        20..=22 => Op::Reactivate { member: pick },
        23..=25 => Op::Remove { member: pick, as_admin: rng.gen_bool(0.2) },
        26..=32 => Op::Invite { person: rng.gen_range(0..PEOPLE), role },
        33..=35 => Op::Revoke { invitation: pick },
        36..=47 => Op::ScimCreate {
            person: rng.gen_range(0..=PEOPLE),
            roles: if rng.gen_bool(0.5) { some_roles(rng) } else { Vec::new() },
            active: rng.gen_bool(0.85),
        },
        48..=53 => Op::ScimActive { user: pick, active: rng.gen_bool(0.5) },
        54..=57 => Op::ScimRoles { user: pick, roles: some_roles(rng) },
        58..=59 => Op::ScimDelete { user: pick },
        60..=63 => Op::GroupCreate { name: rng.gen_range(0..GROUP_NAMES.len()), users: some_indexes(rng) },
        64..=68 => Op::GroupAdd { group: pick, users: some_indexes(rng) },
        69..=70 => Op::GroupRemove { group: pick, users: some_indexes(rng) },
        71 => Op::GroupDelete { group: pick },
        72..=78 => Op::MapCreate { mapping: rng.gen_range(0..MAPPING_VALUES.len()), role },
        79..=80 => Op::MapDelete { mapping: pick },
        81..=86 => Op::Seats {
            purchased: rng.gen_range(0..8),
            policy: [None, Some("strict"), Some("overage")][rng.gen_range(0..3)],
        },
        87..=88 => Op::DefaultRole { role: ROLES[rng.gen_range(0..3)] },
        89..=93 => Op::SsoRoles { member: pick, roles: some_roles(rng) },
        94..=95 => Op::AdvanceDays { days: [1, 8, 15][rng.gen_range(0..3)] },
        96..=99 => Op::ReconcileOverHttp { with_fingerprint: rng.gen_bool(0.5) },
        100..=102 => Op::Resend { invitation: pick },
        _ => Op::GroupRename { group: pick, name: rng.gen_range(0..GROUP_NAMES.len()) },
    }
}

/// One seed's organization and what the operations created in it.
struct Run<'a> {
    app: &'a TestApp,
    clock: ManualClock,
    seed: u64,
    org: TestOrg,
    admin_key: String,
    scim_token: String,
    scim_users: Vec<String>,
    groups: Vec<String>,
    mappings: Vec<String>,
    log: Vec<String>,
}

impl Run<'_> {
    fn person(&self, i: usize) -> String {
        if i >= PEOPLE {
            // The Owner the organization was created with (`TestApp::org`).
            format!("owner@prop{}.example.com", self.seed)
        } else {
            format!("p{i}@s{}.example.com", self.seed)
        }
    }

    /// Fails with the seed and every operation so far.
    #[track_caller]
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "seed {} failed: {what}\noperations ({}):\n  {}\nreproduce: cargo test --test api reconcile_property (the same seeds run the same operations)",
            self.seed,
            self.log.len(),
            self.log.join("\n  ")
        )
    }

    #[track_caller]
    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    fn key(&self, as_admin: bool) -> &str {
        if as_admin {
            &self.admin_key
        } else {
            &self.org.owner_key
        }
    }

    async fn admin(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.app.call(method, path, Some(key), body).await
    }

    async fn scim(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req =
            self.app.client.request(method, self.app.url(&format!("/scim/v2{path}"))).bearer_auth(&self.scim_token);
        if let Some(body) = body {
            req = req.header("content-type", "application/scim+json").body(body.to_string());
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Every member of the organization, whatever its status.
    async fn members(&self) -> Vec<Value> {
        let (status, body) = self.admin(Method::GET, "/api/v1/members?limit=200", &self.org.owner_key, None).await;
        self.check(status == StatusCode::OK, || format!("list members: {status} {body}"));
        self.check(body["next_cursor"].is_null(), || "more than 200 members".into());
        body["items"].as_array().cloned().unwrap_or_default()
    }

    async fn pick_member(&self, i: usize) -> Option<(String, String)> {
        let members = self.members().await;
        let m = members.get(i % members.len().max(1))?;
        Some((m["id"].as_str()?.to_string(), format!("{} ({} {})", m["email"], m["status"], m["role"])))
    }

    fn pick(list: &[String], i: usize) -> Option<&String> {
        (!list.is_empty()).then(|| &list[i % list.len()])
    }

    fn picks(list: &[String], indexes: &[usize]) -> Vec<Value> {
        indexes.iter().filter_map(|i| Self::pick(list, *i)).map(|id| json!({"value": id})).collect()
    }

    /// Runs one operation; returns what it was about and the answer's status.
    async fn run(&mut self, op: &Op) -> (String, StatusCode) {
        let patch =
            |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        let entra_roles = |roles: &[&str]| -> Value {
            roles
                .iter()
                .map(|r| json!({"primary": false, "type": "WindowsAzureActiveDirectoryRole", "value": r}))
                .collect()
        };
        match op {
            Op::AddMember { person, role, as_admin } => {
                let body = json!({"email": self.person(*person), "role": role});
                let (s, _) = self.admin(Method::POST, "/api/v1/members", self.key(*as_admin), Some(body)).await;
                (self.person(*person), s)
            }
            Op::AssignRole { member, role, idp, as_admin } => {
                let Some((id, who)) = self.pick_member(*member).await else { return ("nobody".into(), StatusCode::OK) };
                let mut body = json!({});
                if let Some(role) = role {
                    body["role"] = json!(role);
                }
                if *idp || role.is_none() {
                    body["role_managed_by"] = json!(if *idp { "idp" } else { "admin" });
                }
                let (s, _) =
                    self.admin(Method::PATCH, &format!("/api/v1/members/{id}"), self.key(*as_admin), Some(body)).await;
                (who, s)
            }
            Op::Suspend { member, as_admin } | Op::Remove { member, as_admin } => {
                let Some((id, who)) = self.pick_member(*member).await else { return ("nobody".into(), StatusCode::OK) };
                let (method, path) = match op {
                    Op::Suspend { .. } => (Method::POST, format!("/api/v1/members/{id}/suspend")),
                    _ => (Method::DELETE, format!("/api/v1/members/{id}")),
                };
                let (s, _) = self.admin(method, &path, self.key(*as_admin), None).await;
                (who, s)
            }
            Op::Reactivate { member } => {
                let Some((id, who)) = self.pick_member(*member).await else { return ("nobody".into(), StatusCode::OK) };
                let path = format!("/api/v1/members/{id}/reactivate");
                let (s, _) = self.admin(Method::POST, &path, &self.org.owner_key, None).await;
                (who, s)
            }
            Op::Invite { person, role } => {
                let body = json!({"email": self.person(*person), "role": role});
                let (s, _) = self.admin(Method::POST, "/api/v1/invitations", &self.org.owner_key, Some(body)).await;
                (self.person(*person), s)
            }
            Op::Revoke { invitation } => {
                let path = "/api/v1/invitations?status=pending&limit=200";
                let (_, list) = self.admin(Method::GET, path, &self.org.owner_key, None).await;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let Some(inv) = items.get(invitation % items.len().max(1)) else {
                    return ("no invitation".into(), StatusCode::OK);
                };
                let path = format!("/api/v1/invitations/{}", inv["id"].as_str().unwrap());
                let (s, _) = self.admin(Method::DELETE, &path, &self.org.owner_key, None).await;
                (inv["email"].to_string(), s)
            }
            Op::Resend { invitation } => {
                let (_, list) =
                    self.admin(Method::GET, "/api/v1/invitations?limit=200", &self.org.owner_key, None).await;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let Some(inv) = items.get(invitation % items.len().max(1)) else {
                    return ("no invitation".into(), StatusCode::OK);
                };
                let path = format!("/api/v1/invitations/{}/resend", inv["id"].as_str().unwrap());
                let (s, _) = self.admin(Method::POST, &path, &self.org.owner_key, None).await;
                (format!("{} ({})", inv["email"], inv["status"]), s)
            }
            Op::ScimCreate { person, roles, active } => {
                let email = self.person(*person);
                let mut user = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": email,
                    "emails": [{"value": email, "type": "work", "primary": true}],
                    "active": active,
                });
                if !roles.is_empty() {
                    user["roles"] = entra_roles(roles);
                }
                let (s, body) = self.scim(Method::POST, "/Users", Some(user)).await;
                if s == StatusCode::CREATED {
                    self.scim_users.push(body["id"].as_str().unwrap().to_string());
                }
                (email, s)
            }
            Op::ScimActive { user, active } => {
                let Some(id) = Self::pick(&self.scim_users, *user).cloned() else {
                    return ("no user".into(), StatusCode::OK);
                };
                let body = patch(json!([{"op": "replace", "value": {"active": active}}]));
                let (s, _) = self.scim(Method::PATCH, &format!("/Users/{id}"), Some(body)).await;
                (format!("user {id}"), s)
            }
            Op::ScimRoles { user, roles } => {
                let Some(id) = Self::pick(&self.scim_users, *user).cloned() else {
                    return ("no user".into(), StatusCode::OK);
                };
                let body = patch(json!([{"op": "replace", "path": "roles", "value": entra_roles(roles)}]));
                let (s, _) = self.scim(Method::PATCH, &format!("/Users/{id}"), Some(body)).await;
                (format!("user {id}"), s)
            }
            Op::ScimDelete { user } => {
                let Some(id) = Self::pick(&self.scim_users, *user).cloned() else {
                    return ("no user".into(), StatusCode::OK);
                };
                let (s, _) = self.scim(Method::DELETE, &format!("/Users/{id}"), None).await;
                (format!("user {id}"), s)
            }
            Op::GroupCreate { name, users } => {
                let (display_name, external_id) = GROUP_NAMES[*name];
                let mut group = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": display_name,
                    "members": Self::picks(&self.scim_users, users),
                });
                if let Some(ext) = external_id {
                    group["externalId"] = json!(ext);
                }
                let (s, body) = self.scim(Method::POST, "/Groups", Some(group)).await;
                if s == StatusCode::CREATED {
                    self.groups.push(body["id"].as_str().unwrap().to_string());
                }
                (display_name.to_string(), s)
            }
            Op::GroupAdd { group, users } | Op::GroupRemove { group, users } => {
                let Some(id) = Self::pick(&self.groups, *group).cloned() else {
                    return ("no group".into(), StatusCode::OK);
                };
                let members = Self::picks(&self.scim_users, users);
                let verb = if matches!(op, Op::GroupAdd { .. }) { "add" } else { "remove" };
                let body = patch(json!([{"op": verb, "path": "members", "value": members}]));
                let (s, _) = self.scim(Method::PATCH, &format!("/Groups/{id}"), Some(body)).await;
                (format!("group {id} {members:?}"), s)
            }
            Op::GroupDelete { group } => {
                let Some(id) = Self::pick(&self.groups, *group).cloned() else {
                    return ("no group".into(), StatusCode::OK);
                };
                let (s, _) = self.scim(Method::DELETE, &format!("/Groups/{id}"), None).await;
                (format!("group {id}"), s)
            }
            Op::GroupRename { group, name } => {
                let Some(id) = Self::pick(&self.groups, *group).cloned() else {
                    return ("no group".into(), StatusCode::OK);
                };
                let (display_name, external_id) = GROUP_NAMES[*name];
                let mut value = json!({"displayName": display_name});
                if let Some(ext) = external_id {
                    value["externalId"] = json!(ext);
                }
                let body = patch(json!([{"op": "replace", "value": value}]));
                let (s, _) = self.scim(Method::PATCH, &format!("/Groups/{id}"), Some(body)).await;
                (format!("group {id} -> {display_name}"), s)
            }
            Op::MapCreate { mapping, role } => {
                let (source, value) = MAPPING_VALUES[*mapping];
                let body = json!({"source": source, "value": value, "role": role});
                let (s, body) =
                    self.admin(Method::POST, "/api/v1/role-mappings", &self.org.owner_key, Some(body)).await;
                if s == StatusCode::CREATED {
                    self.mappings.push(body["id"].as_str().unwrap().to_string());
                }
                (format!("{source} {value}"), s)
            }
            Op::MapDelete { mapping } => {
                let Some(id) = Self::pick(&self.mappings, *mapping).cloned() else {
                    return ("no mapping".into(), StatusCode::OK);
                };
                let (s, _) =
                    self.admin(Method::DELETE, &format!("/api/v1/role-mappings/{id}"), &self.org.owner_key, None).await;
                (format!("mapping {id}"), s)
            }
            Op::Seats { purchased, policy } => {
                let mut body = json!({"purchased": purchased});
                if let Some(policy) = policy {
                    body["policy"] = json!(policy);
                }
                // Seats are sold: the deployment's billing sets them.
                let (s, _) = self.app.set_seats(&self.org, body).await;
                (String::new(), s)
            }
            Op::DefaultRole { role } => {
                let body = json!({"tenant_id": null, "enforce": false, "auto_assign": false, "default_role": role});
                let (s, _) = self.admin(Method::PUT, "/api/v1/organization/sso", &self.org.owner_key, Some(body)).await;
                (String::new(), s)
            }
            Op::SsoRoles { member, roles } => {
                // What an SSO login saves from the tenant claim; the role follows at the next reconcile.
                let Some((id, who)) = self.pick_member(*member).await else { return ("nobody".into(), StatusCode::OK) };
                let id = Uuid::parse_str(&id).unwrap();
                let mut tx = self.app.roster.store().begin().await.expect("begin");
                let mut m = tx.get_member(self.org.id, id).await.expect("get member").expect("member");
                m.sso_roles = roles.iter().map(|r| r.to_string()).collect();
                tx.update_member(&m).await.expect("update member");
                tx.commit().await.expect("commit");
                (who, StatusCode::OK)
            }
            Op::AdvanceDays { days } => {
                self.clock.advance(chrono::Duration::days(*days));
                (String::new(), StatusCode::OK)
            }
            Op::ReconcileOverHttp { with_fingerprint } => {
                let body = if *with_fingerprint {
                    let (s, plan) = self.admin(Method::GET, "/api/v1/reconcile/plan", &self.org.owner_key, None).await;
                    self.check(s == StatusCode::OK, || format!("GET plan: {s} {plan}"));
                    Some(json!({"fingerprint": plan["fingerprint"]}))
                } else {
                    None
                };
                let (s, outcome) = self.admin(Method::POST, "/api/v1/reconcile/apply", &self.org.owner_key, body).await;
                self.check(s == StatusCode::OK, || format!("reconcile apply over HTTP: {s} {outcome}"));
                (format!("{} changes", outcome["applied"]["changes"].as_array().map_or(0, Vec::len)), s)
            }
        }
    }

    /// The organization's role mappings as the derivation takes them.
    async fn role_mappings(&self) -> Vec<RoleMapping> {
        let (s, list) = self.admin(Method::GET, "/api/v1/role-mappings", &self.org.owner_key, None).await;
        self.check(s == StatusCode::OK, || format!("list mappings: {s} {list}"));
        list.as_array()
            .unwrap()
            .iter()
            .map(|m| RoleMapping {
                id: Uuid::parse_str(m["id"].as_str().unwrap()).unwrap(),
                org_id: self.org.id,
                source: m["source"].as_str().unwrap().parse().unwrap(),
                value: m["value"].as_str().unwrap().to_string(),
                role: m["role"].as_str().unwrap().parse().unwrap(),
                created_by: String::new(),
                created_at: self.clock.now(),
            })
            .collect()
    }

    /// After the final reconcile: the rules hold and nothing is left to do.
    async fn check_invariants(&self) {
        let owner = &self.org.owner_key;
        let seats = self.app.seats(owner).await;
        let members = self.members().await;
        let active: Vec<&Value> = members.iter().filter(|m| m["status"] == "active").collect();

        // Seats: the view adds up, and strict seats are within the limit but
        // for Owners, who are never suspended.
        let (purchased, used, pending) = (
            seats["purchased"].as_i64().unwrap(),
            seats["used"].as_i64().unwrap(),
            seats["pending_invitations"].as_i64().unwrap(),
        );
        self.check(seats["active_members"] == json!(active.len()), || format!("seats {seats} vs members {members:?}"));
        self.check(used == active.len() as i64 + pending, || format!("seats {seats}"));
        if seats["policy"] == "strict" {
            let only_owners = pending == 0 && active.iter().all(|m| m["role"] == "owner");
            self.check(used <= purchased || only_owners, || {
                format!("strict seats over the limit: {seats}\n{members:#?}")
            });
        }
        self.check(active.iter().any(|m| m["role"] == "owner"), || format!("no active Owner: {members:#?}"));

        // No pending invitation is past its expiry.
        let (_, invitations) =
            self.admin(Method::GET, "/api/v1/invitations?status=pending&limit=200", owner, None).await;
        let now = self.clock.now();
        for inv in invitations["items"].as_array().unwrap() {
            let expires: chrono::DateTime<chrono::Utc> = serde_json::from_value(inv["expires_at"].clone()).unwrap();
            self.check(expires > now, || format!("pending invitation past expiry after reconcile: {inv}"));
        }

        // Every member's role is what its sources give, computed here from
        // what the admin API and SCIM show.
        let mappings = self.role_mappings().await;
        let (s, sso) = self.admin(Method::GET, "/api/v1/organization/sso", owner, None).await;
        self.check(s == StatusCode::OK, || format!("sso settings: {s}"));
        let default_role: Role = sso["default_role"].as_str().unwrap().parse().unwrap();
        let (s, groups) = self.scim(Method::GET, "/Groups?count=200&excludedAttributes=members", None).await;
        self.check(s == StatusCode::OK, || format!("list groups: {s} {groups}"));
        let groups: HashMap<String, GroupRef> = groups["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let r = GroupRef {
                    display_name: g["displayName"].as_str().unwrap().to_string(),
                    external_id: g["externalId"].as_str().map(String::from),
                };
                (g["id"].as_str().unwrap().to_string(), r)
            })
            .collect();
        let (s, users) = self.scim(Method::GET, "/Users?count=200", None).await;
        self.check(s == StatusCode::OK, || format!("list users: {s} {users}"));
        // userName is the member's email in every operation here.
        let users: HashMap<String, &Value> = users["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["userName"].as_str().unwrap().to_lowercase(), u))
            .collect();
        let plan = self.app.roster.reconcile_plan(&Actor::cli(self.org.id)).await.expect("plan");
        for m in members.iter().filter(|m| m["status"] != "deprovisioned") {
            let email = m["email"].as_str().unwrap().to_lowercase();
            let user = users.get(&email);
            let member_groups: Vec<GroupRef> = user
                .and_then(|u| u["groups"].as_array())
                .map(|gs| gs.iter().map(|g| groups[g["value"].as_str().unwrap()].clone()).collect())
                .unwrap_or_default();
            let scim_roles = scim_role_values(user.map(|u| &u["roles"]));
            let sso_roles: Vec<String> = serde_json::from_value(m["sso_roles"].clone()).unwrap();
            let inputs = RoleInputs {
                manual: m["manual_role"].as_str().map(|r| r.parse().unwrap()),
                pinned: m["role_pinned"].as_bool().unwrap(),
                groups: &member_groups,
                scim_roles: &scim_roles,
                sso_roles: &sso_roles,
            };
            let d = derive_role(&inputs, &mappings, default_role);
            let role: Role = m["role"].as_str().unwrap().parse().unwrap();
            let source: RoleSource = serde_json::from_value(m["role_source"].clone()).unwrap();
            let kept_owner = role == Role::Owner
                && m["status"] == "active"
                && plan.kept.iter().any(|k| k.starts_with(&format!("{} stays Owner", m["email"].as_str().unwrap())));
            self.check((role, &source) == (d.role, &d.source) || kept_owner, || {
                format!("{email} is {role} by {source:?}, its sources give {d:?} (inputs {inputs:?}): {m}")
            });
            self.check(m["role_reason"] == json!(source.explain(role)), || format!("role_reason of {m}"));
            // The identity provider deactivated it: not active here (but the last Owner).
            if user.is_some_and(|u| u["active"] == false) && m["status"] == "active" {
                self.check(plan.kept.iter().any(|k| k.contains("is deactivated")), || format!("{email} active: {m}"));
            }
        }

        // Nothing left to do, and the plan counts the seats the view shows.
        let summary = |p: &roster::service::ReconcilePlan| serde_json::to_string_pretty(&p.changes).unwrap();
        self.check(plan.is_empty(), || format!("planned again after reconcile: {}", summary(&plan)));
        self.check(plan.seats.used == used && plan.seats.used_after == used, || {
            format!("plan seats {:?} vs {seats}", plan.seats)
        });
        let again = self.app.roster.reconcile_apply(&Actor::cli(self.org.id), None).await.expect("second apply");
        self.check(again.applied.changes.is_empty(), || format!("second apply changed: {}", summary(&again.applied)));

        // The events outbox is gapless: 1, 2, 3…
        let mut after = 0;
        loop {
            let (s, page) =
                self.admin(Method::GET, &format!("/api/v1/events?after={after}&limit=1000"), owner, None).await;
            self.check(s == StatusCode::OK, || format!("events: {s} {page}"));
            let events = page["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            for e in events {
                after += 1;
                self.check(e["seq"] == json!(after), || format!("event out of sequence, expected {after}: {e}"));
            }
        }
    }
}

#[tokio::test]
async fn random_operations_then_reconcile_leave_the_organization_in_line() {
    let seeds: Vec<u64> = match std::env::var("RECONCILE_PROPERTY_SEEDS") {
        Ok(n) => (0..n.parse::<u64>().expect("RECONCILE_PROPERTY_SEEDS is a number")).collect(),
        Err(_) => SEEDS.to_vec(),
    };
    // One server and database for all seeds (each seed has its own
    // organization and people), on a clock only the operations move.
    let clock = ManualClock::new(SystemClock.now());
    let app = TestApp::spawn_with(TestDb::new().await, |_| {}, Arc::new(clock.clone())).await;
    for seed in seeds {
        let org = app.org(&format!("Prop{seed}"), 6).await;
        let admin_key = app.key(&org, Role::Admin).await;
        let scim_token = scim_token(&app, &org).await;
        let mut run = Run {
            app: &app,
            clock: clock.clone(),
            seed,
            org,
            admin_key,
            scim_token,
            scim_users: Vec::new(),
            groups: Vec::new(),
            mappings: Vec::new(),
            log: Vec::new(),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        for i in 0..OPS_PER_SEED {
            let phase = match i {
                i if i < SETUP_OPS => Phase::Setup,
                i if i >= OPS_PER_SEED - DRIFT_OPS => Phase::Drift,
                _ => Phase::Mixed,
            };
            let op = random_op(&mut rng, phase);
            let (about, status) = run.run(&op).await;
            run.log.push(format!("{op:?} [{about}] -> {}", status.as_u16()));
            run.check(!status.is_server_error(), || format!("{op:?} answered {status}"));
        }
        let outcome = app.roster.reconcile_apply(&Actor::cli(run.org.id), None).await;
        let applied = match outcome {
            Ok(o) => serde_json::to_value(&o.applied.changes).unwrap(),
            Err(e) => run.fail(format!("reconcile failed: {e:?}")),
        };
        let actions: Vec<&str> = applied.as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
        run.log.push(format!("final reconcile: {actions:?}"));
        run.check_invariants().await;
        // Shown with --nocapture: what the seed did.
        println!("seed {seed}:\n  {}", run.log.join("\n  "));
    }
}
