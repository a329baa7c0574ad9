//! Role derivation: the one pure function that decides a member's role from
//! its sources, used by every door (admin API, SCIM, SSO) and by the
//! reconciler.
//!
//! The rules, in order:
//! 1. A manual Owner assignment decides: Owner only ever comes from an admin.
//! 2. A pinned manual assignment decides.
//! 3. Otherwise the role is managed by the identity provider: every SCIM
//!    group the member belongs to, every SCIM `roles` value and every role of
//!    the tenant claim at the last SSO login is looked up in the
//!    organization's mappings, and the highest mapped role wins, capped at
//!    Admin. An IdP role nobody mapped that is itself a role name (`read`,
//!    `write`, `admin`; `owner` and `tenant admin` count as Admin) maps to
//!    that role.
//! 4. When no IdP source maps to a role: the manual assignment if there is
//!    one, else the organization's default role.
//!
//! Ties between sources granting the same role are broken by source (group,
//! then SCIM role, then SSO role) and then by name, so the same inputs
//! always give the same answer and the same explanation.

use crate::model::{Role, RoleMappingSource};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The highest role an identity provider can grant.
pub const IDP_ROLE_CAP: Role = Role::Admin;

/// Which source decided a member's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoleSource {
    /// Assigned by an admin.
    Manual,
    /// A mapping of the SCIM group with this `displayName`.
    Group { name: String },
    /// A SCIM `roles` value (Entra app roles).
    ScimRole { value: String },
    /// A role of the IdP's tenant claim at the last SSO login.
    SsoRole { value: String },
    /// Nothing applied: the organization's default role.
    Default,
}

impl RoleSource {
    /// The decision in words: `Admin, from group eng-admins`.
    pub fn explain(&self, role: Role) -> String {
        let role = role.title();
        match self {
            RoleSource::Manual => format!("{role}, assigned by an admin"),
            RoleSource::Group { name } => format!("{role}, from group {name}"),
            RoleSource::ScimRole { value } => format!("{role}, from SCIM role {value}"),
            RoleSource::SsoRole { value } => format!("{role}, from SSO tenant role {value}"),
            RoleSource::Default => format!("{role}, the organization's default role"),
        }
    }

    /// Order among sources granting the same role.
    fn order(&self) -> u8 {
        match self {
            RoleSource::Manual => 0,
            RoleSource::Group { .. } => 1,
            RoleSource::ScimRole { .. } => 2,
            RoleSource::SsoRole { .. } => 3,
            RoleSource::Default => 4,
        }
    }

    fn name(&self) -> &str {
        match self {
            RoleSource::Group { name } => name,
            RoleSource::ScimRole { value } | RoleSource::SsoRole { value } => value,
            RoleSource::Manual | RoleSource::Default => "",
        }
    }
}

/// One configured mapping: a group or IdP role that grants `role`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RoleMapping {
    pub id: Uuid,
    pub org_id: Uuid,
    pub source: RoleMappingSource,
    /// The group's `displayName` or `externalId`, or the IdP role's name;
    /// matched case-insensitively.
    pub value: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A SCIM group a member belongs to, as mappings can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub display_name: String,
    pub external_id: Option<String>,
}

/// Everything a member's role depends on.
#[derive(Debug, Clone, Default)]
pub struct RoleInputs<'a> {
    pub manual: Option<Role>,
    pub pinned: bool,
    pub groups: &'a [GroupRef],
    pub scim_roles: &'a [String],
    pub sso_roles: &'a [String],
}

/// The derived role and the source that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    pub role: Role,
    pub source: RoleSource,
}

impl Derivation {
    pub fn explain(&self) -> String {
        self.source.explain(self.role)
    }
}

/// The role an IdP role name grants when no mapping names it.
fn builtin_idp_role(value: &str) -> Option<Role> {
    match value.trim().to_ascii_lowercase().as_str() {
        "tenant admin" | "owner" => Some(Role::Admin),
        other => other.parse::<Role>().ok(),
    }
}

fn mapped(mappings: &[RoleMapping], source: RoleMappingSource, names: &[&str]) -> Option<Role> {
    mappings
        .iter()
        .filter(|m| m.source == source && names.iter().any(|n| m.value.eq_ignore_ascii_case(n.trim())))
        .map(|m| m.role)
        .max_by_key(|r| r.rank())
}

/// Derives a member's role. Pure: the same inputs always give the same role
/// and the same source.
pub fn derive_role(inputs: &RoleInputs<'_>, mappings: &[RoleMapping], default_role: Role) -> Derivation {
    if let Some(manual) = inputs.manual {
        if inputs.pinned || manual == Role::Owner {
            return Derivation { role: manual, source: RoleSource::Manual };
        }
    }
    let mut candidates: Vec<Derivation> = Vec::new();
    for g in inputs.groups {
        let mut names = vec![g.display_name.as_str()];
        names.extend(g.external_id.as_deref());
        if let Some(role) = mapped(mappings, RoleMappingSource::Group, &names) {
            candidates.push(Derivation { role, source: RoleSource::Group { name: g.display_name.clone() } });
        }
    }
    let idp = |value: &String| {
        mapped(mappings, RoleMappingSource::IdpRole, &[value.as_str()]).or_else(|| builtin_idp_role(value))
    };
    for value in inputs.scim_roles {
        if let Some(role) = idp(value) {
            candidates.push(Derivation { role, source: RoleSource::ScimRole { value: value.trim().to_string() } });
        }
    }
    for value in inputs.sso_roles {
        if let Some(role) = idp(value) {
            candidates.push(Derivation { role, source: RoleSource::SsoRole { value: value.trim().to_string() } });
        }
    }
    let best = candidates.into_iter().min_by(|a, b| {
        b.role
            .rank()
            .cmp(&a.role.rank())
            .then(a.source.order().cmp(&b.source.order()))
            .then_with(|| a.source.name().cmp(b.source.name()))
    });
    match (best, inputs.manual) {
        (Some(mut d), _) => {
            if d.role.rank() > IDP_ROLE_CAP.rank() {
                d.role = IDP_ROLE_CAP;
            }
            d
        }
        (None, Some(manual)) => Derivation { role: manual, source: RoleSource::Manual },
        (None, None) => Derivation { role: default_role, source: RoleSource::Default },
    }
}

/// The `value`s of a SCIM User's `roles` (Entra app roles): trimmed, sorted,
/// without blanks or repeats.
pub fn scim_role_values(roles: Option<&serde_json::Value>) -> Vec<String> {
    let Some(serde_json::Value::Array(list)) = roles else { return Vec::new() };
    let mut values: Vec<String> = list
        .iter()
        .filter_map(|r| r.get("value").and_then(serde_json::Value::as_str))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    values.sort();
    values.dedup();
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: RoleMappingSource = RoleMappingSource::Group;
    const IDP: RoleMappingSource = RoleMappingSource::IdpRole;

    fn group(display_name: &str) -> GroupRef {
        GroupRef { display_name: display_name.to_string(), external_id: None }
    }

    fn group_ext(display_name: &str, external_id: &str) -> GroupRef {
        GroupRef { display_name: display_name.to_string(), external_id: Some(external_id.to_string()) }
    }

    fn mapping(source: RoleMappingSource, value: &str, role: Role) -> RoleMapping {
        RoleMapping {
            id: Uuid::from_u128(value.len() as u128),
            org_id: Uuid::from_u128(1),
            source,
            value: value.to_string(),
            role,
            created_by: "test".into(),
            created_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn grp(name: &str) -> RoleSource {
        RoleSource::Group { name: name.into() }
    }

    fn scim(value: &str) -> RoleSource {
        RoleSource::ScimRole { value: value.into() }
    }

    fn sso(value: &str) -> RoleSource {
        RoleSource::SsoRole { value: value.into() }
    }

    struct Case {
        name: &'static str,
        manual: Option<Role>,
        pinned: bool,
        groups: Vec<GroupRef>,
        scim_roles: &'static [&'static str],
        sso_roles: &'static [&'static str],
        mappings: Vec<RoleMapping>,
        default_role: Role,
        role: Role,
        source: RoleSource,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                name: "",
                manual: None,
                pinned: false,
                groups: Vec::new(),
                scim_roles: &[],
                sso_roles: &[],
                mappings: Vec::new(),
                default_role: Role::Read,
                role: Role::Read,
                source: RoleSource::Default,
            }
        }
    }

    fn cases() -> Vec<Case> {
        use Role::*;
        vec![
            // Rule 1 and 2: manual assignments that decide.
            Case {
                name: "pinned manual wins over a higher group mapping",
                manual: Some(Write),
                pinned: true,
                groups: vec![group("eng-admins")],
                sso_roles: &["admin"],
                mappings: vec![mapping(GROUP, "eng-admins", Admin)],
                role: Write,
                source: RoleSource::Manual,
                ..Case::default()
            },
            Case {
                name: "pinned manual wins over a lower group mapping too",
                manual: Some(Admin),
                pinned: true,
                groups: vec![group("readers")],
                mappings: vec![mapping(GROUP, "readers", Read)],
                role: Admin,
                source: RoleSource::Manual,
                ..Case::default()
            },
            Case {
                name: "manual Owner wins even unpinned",
                manual: Some(Owner),
                pinned: false,
                groups: vec![group("eng-admins")],
                scim_roles: &["Admin"],
                mappings: vec![mapping(GROUP, "eng-admins", Admin)],
                role: Owner,
                source: RoleSource::Manual,
                ..Case::default()
            },
            Case {
                name: "manual Owner pinned",
                manual: Some(Owner),
                pinned: true,
                role: Owner,
                source: RoleSource::Manual,
                ..Case::default()
            },
            Case {
                name: "pinned without a manual role is managed by the IdP",
                manual: None,
                pinned: true,
                groups: vec![group("eng-admins")],
                mappings: vec![mapping(GROUP, "eng-admins", Admin)],
                role: Admin,
                source: grp("eng-admins"),
                ..Case::default()
            },
            // Rule 4: the unpinned manual role is only the fallback.
            Case {
                name: "unpinned manual loses to a lower mapped group",
                manual: Some(Admin),
                pinned: false,
                groups: vec![group("readers")],
                mappings: vec![mapping(GROUP, "readers", Read)],
                role: Read,
                source: grp("readers"),
                ..Case::default()
            },
            Case {
                name: "unpinned manual is the fallback when no source maps",
                manual: Some(Write),
                pinned: false,
                groups: vec![group("unmapped-group")],
                scim_roles: &["Engineer"],
                sso_roles: &["viewer"],
                mappings: vec![mapping(GROUP, "eng-admins", Admin), mapping(IDP, "Architect", Admin)],
                default_role: Admin,
                role: Write,
                source: RoleSource::Manual,
            },
            // Groups: displayName or externalId, case-insensitively.
            Case {
                name: "group matched by displayName, case-insensitive",
                groups: vec![group("ENG-Admins")],
                mappings: vec![mapping(GROUP, "eng-admins", Admin)],
                role: Admin,
                source: grp("ENG-Admins"),
                ..Case::default()
            },
            Case {
                name: "group matched by externalId, case-insensitive; named by displayName",
                groups: vec![group_ext("Engineering Admins", "GRP-42")],
                mappings: vec![mapping(GROUP, "grp-42", Write)],
                role: Write,
                source: grp("Engineering Admins"),
                ..Case::default()
            },
            Case {
                name: "a group's displayName and externalId mapped differently: the higher",
                groups: vec![group_ext("Staff", "grp-7")],
                mappings: vec![mapping(GROUP, "staff", Read), mapping(GROUP, "GRP-7", Write)],
                role: Write,
                source: grp("Staff"),
                ..Case::default()
            },
            Case {
                name: "a group mapping does not match an IdP role of that name",
                scim_roles: &["eng-admins"],
                sso_roles: &["eng-admins"],
                mappings: vec![mapping(GROUP, "eng-admins", Admin)],
                default_role: Write,
                role: Write,
                source: RoleSource::Default,
                ..Case::default()
            },
            Case {
                name: "an idp_role mapping does not match a group of that name",
                groups: vec![group("Architect")],
                mappings: vec![mapping(IDP, "architect", Admin)],
                role: Read,
                source: RoleSource::Default,
                ..Case::default()
            },
            // The highest role wins.
            Case {
                name: "highest mapped group wins",
                groups: vec![group("readers"), group("eng-admins"), group("writers")],
                mappings: vec![
                    mapping(GROUP, "readers", Read),
                    mapping(GROUP, "writers", Write),
                    mapping(GROUP, "eng-admins", Admin),
                ],
                role: Admin,
                source: grp("eng-admins"),
                ..Case::default()
            },
            Case {
                name: "highest wins across sources: builtin SCIM role over a group",
                groups: vec![group("writers")],
                scim_roles: &["Admin"],
                sso_roles: &["read"],
                mappings: vec![mapping(GROUP, "writers", Write)],
                role: Admin,
                source: scim("Admin"),
                ..Case::default()
            },
            Case {
                name: "highest wins across sources: SSO role over group and SCIM",
                groups: vec![group("readers")],
                scim_roles: &["Writer"],
                sso_roles: &["Architect"],
                mappings: vec![
                    mapping(GROUP, "readers", Read),
                    mapping(IDP, "writer", Write),
                    mapping(IDP, "architect", Admin),
                ],
                role: Admin,
                source: sso("Architect"),
                ..Case::default()
            },
            // Builtin IdP role names and the Admin cap.
            Case {
                name: "builtin owner is capped at Admin (SCIM)",
                scim_roles: &["owner"],
                role: Admin,
                source: scim("owner"),
                ..Case::default()
            },
            Case {
                name: "builtin Tenant Admin is Admin (SSO), case-insensitive",
                sso_roles: &["Tenant Admin"],
                role: Admin,
                source: sso("Tenant Admin"),
                ..Case::default()
            },
            Case {
                name: "builtin role names case-insensitive: WRITE",
                sso_roles: &["WRITE"],
                role: Write,
                source: sso("WRITE"),
                ..Case::default()
            },
            Case {
                name: "builtin read over the default role when it is the only source",
                scim_roles: &["Read"],
                default_role: Admin,
                role: Read,
                source: scim("Read"),
                ..Case::default()
            },
            Case {
                name: "a mapping to Owner (never created by the API) is capped at Admin",
                scim_roles: &["boss"],
                mappings: vec![mapping(IDP, "boss", Owner)],
                role: Admin,
                source: scim("boss"),
                ..Case::default()
            },
            Case {
                name: "an IdP role value is trimmed",
                scim_roles: &["  admin "],
                role: Admin,
                source: scim("admin"),
                ..Case::default()
            },
            // A mapping of the IdP role beats its builtin meaning.
            Case {
                name: "idp_role mapping beats builtin (admin mapped to read)",
                scim_roles: &["admin"],
                mappings: vec![mapping(IDP, "ADMIN", Read)],
                default_role: Write,
                role: Read,
                source: scim("admin"),
                ..Case::default()
            },
            Case {
                name: "idp_role mapping beats builtin (owner mapped to write, SSO)",
                sso_roles: &["Owner"],
                mappings: vec![mapping(IDP, "owner", Write)],
                role: Write,
                source: sso("Owner"),
                ..Case::default()
            },
            // Names nobody mapped that are not role names are ignored.
            Case {
                name: "unmapped non-role names ignored",
                groups: vec![group("everyone")],
                scim_roles: &["Engineer", "superuser"],
                sso_roles: &["member", "owners"],
                default_role: Write,
                role: Write,
                source: RoleSource::Default,
                ..Case::default()
            },
            // Ties: Group < ScimRole < SsoRole, then by name.
            Case {
                name: "tie: group before SCIM role before SSO role",
                groups: vec![group("eng-admins")],
                scim_roles: &["Admin"],
                sso_roles: &["admin"],
                mappings: vec![mapping(GROUP, "eng-admins", Admin)],
                role: Admin,
                source: grp("eng-admins"),
                ..Case::default()
            },
            Case {
                name: "tie: SCIM role before SSO role",
                scim_roles: &["write"],
                sso_roles: &["a-writer"],
                mappings: vec![mapping(IDP, "a-writer", Write)],
                role: Write,
                source: scim("write"),
                ..Case::default()
            },
            Case {
                name: "tie between groups: name ascending",
                groups: vec![group("zeta"), group("Beta"), group("alpha")],
                mappings: vec![
                    mapping(GROUP, "zeta", Write),
                    mapping(GROUP, "alpha", Write),
                    mapping(GROUP, "beta", Write),
                ],
                role: Write,
                // Byte order: "Beta" < "alpha" < "zeta".
                source: grp("Beta"),
                ..Case::default()
            },
            Case {
                name: "tie between SSO roles: name ascending",
                sso_roles: &["tenant admin", "admin", "owner"],
                role: Admin,
                source: sso("admin"),
                ..Case::default()
            },
            Case {
                name: "a lower role never wins a tie-break",
                groups: vec![group("a-readers")],
                sso_roles: &["z-admins"],
                mappings: vec![mapping(GROUP, "a-readers", Read), mapping(IDP, "z-admins", Admin)],
                role: Admin,
                source: sso("z-admins"),
                ..Case::default()
            },
            // Nothing applies.
            Case { name: "default when nothing applies", default_role: Read, ..Case::default() },
            Case {
                name: "default role is the organization's",
                default_role: Admin,
                role: Admin,
                source: RoleSource::Default,
                ..Case::default()
            },
        ]
    }

    #[test]
    fn derivation_table() {
        let mut failures = Vec::new();
        for case in cases() {
            let scim_roles = strings(case.scim_roles);
            let sso_roles = strings(case.sso_roles);
            let inputs = RoleInputs {
                manual: case.manual,
                pinned: case.pinned,
                groups: &case.groups,
                scim_roles: &scim_roles,
                sso_roles: &sso_roles,
            };
            let got = derive_role(&inputs, &case.mappings, case.default_role);
            let want = Derivation { role: case.role, source: case.source.clone() };
            if got != want {
                failures.push(format!("{}: expected {want:?}, got {got:?}", case.name));
            }
        }
        assert!(failures.is_empty(), "derivation cases failed:\n{}", failures.join("\n"));
    }

    #[test]
    fn explanations() {
        let cases = [
            (RoleSource::Group { name: "eng-admins".into() }, Role::Admin, "Admin, from group eng-admins"),
            (RoleSource::Manual, Role::Write, "Write, assigned by an admin"),
            (RoleSource::Default, Role::Read, "Read, the organization's default role"),
            (RoleSource::ScimRole { value: "Admin".into() }, Role::Admin, "Admin, from SCIM role Admin"),
            (RoleSource::SsoRole { value: "admin".into() }, Role::Admin, "Admin, from SSO tenant role admin"),
            (RoleSource::Manual, Role::Owner, "Owner, assigned by an admin"),
        ];
        for (source, role, want) in cases {
            assert_eq!(source.explain(role), want);
            assert_eq!(Derivation { role, source: source.clone() }.explain(), want);
        }
        // The explanation of a real derivation names the deciding source.
        let groups = [group("eng-admins")];
        let d = derive_role(
            &RoleInputs { groups: &groups, ..RoleInputs::default() },
            &[mapping(GROUP, "ENG-ADMINS", Role::Admin)],
            Role::Read,
        );
        assert_eq!(d.explain(), "Admin, from group eng-admins");
    }

    #[test]
    fn role_sources_serialize_as_the_api_documents() {
        let cases = [
            (RoleSource::Manual, serde_json::json!({"kind": "manual"})),
            (RoleSource::Default, serde_json::json!({"kind": "default"})),
            (RoleSource::Group { name: "g".into() }, serde_json::json!({"kind": "group", "name": "g"})),
            (RoleSource::ScimRole { value: "v".into() }, serde_json::json!({"kind": "scim_role", "value": "v"})),
            (RoleSource::SsoRole { value: "v".into() }, serde_json::json!({"kind": "sso_role", "value": "v"})),
        ];
        for (source, json) in cases {
            assert_eq!(serde_json::to_value(&source).unwrap(), json);
            assert_eq!(serde_json::from_value::<RoleSource>(json).unwrap(), source);
        }
    }

    /// Every order of the same groups and IdP roles gives the same role and
    /// the same source: the database returns groups in no particular order.
    #[test]
    fn derivation_does_not_depend_on_input_order() {
        let groups = vec![
            group("zeta-admins"),
            group_ext("Alpha Admins", "grp-1"),
            group("writers"),
            group("unmapped"),
            group_ext("beta", "GRP-2"),
        ];
        let mappings = vec![
            mapping(GROUP, "ZETA-admins", Role::Admin),
            mapping(GROUP, "grp-1", Role::Admin),
            mapping(GROUP, "writers", Role::Write),
            mapping(GROUP, "grp-2", Role::Admin),
            mapping(IDP, "boss", Role::Admin),
        ];
        let scim_roles = strings(&["boss", "Admin", "read"]);
        let sso_roles = strings(&["admin", "tenant admin"]);
        let derive = |groups: &[GroupRef], scim_roles: &[String], sso_roles: &[String]| {
            derive_role(
                &RoleInputs { manual: Some(Role::Read), pinned: false, groups, scim_roles, sso_roles },
                &mappings,
                Role::Read,
            )
        };
        let want = derive(&groups, &scim_roles, &sso_roles);
        assert_eq!(want, Derivation { role: Role::Admin, source: grp("Alpha Admins") });

        let mut group_orders = Vec::new();
        permutations(&mut groups.clone(), groups.len(), &mut group_orders);
        assert_eq!(group_orders.len(), 120);
        let mut scim_orders = Vec::new();
        permutations(&mut scim_roles.clone(), scim_roles.len(), &mut scim_orders);
        let mut sso_orders = Vec::new();
        permutations(&mut sso_roles.clone(), sso_roles.len(), &mut sso_orders);
        for (i, g) in group_orders.iter().enumerate() {
            let s = &scim_orders[i % scim_orders.len()];
            let o = &sso_orders[i % sso_orders.len()];
            assert_eq!(derive(g, s, o), want, "groups {g:?}, scim roles {s:?}, sso roles {o:?}");
        }
        // Without groups the SCIM roles decide, whatever their order.
        for s in &scim_orders {
            for o in &sso_orders {
                assert_eq!(derive(&[], s, o), Derivation { role: Role::Admin, source: scim("Admin") }, "{s:?} {o:?}");
            }
        }
        // Mappings in another order change nothing either.
        let mut reversed = mappings.clone();
        reversed.reverse();
        let inputs = RoleInputs { manual: None, pinned: false, groups: &groups, scim_roles: &[], sso_roles: &[] };
        assert_eq!(derive_role(&inputs, &reversed, Role::Read), derive_role(&inputs, &mappings, Role::Read));
    }

    /// Heap's algorithm: every permutation of `items[..k]`.
    fn permutations<T: Clone>(items: &mut Vec<T>, k: usize, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            permutations(items, k - 1, out);
            if k.is_multiple_of(2) {
                items.swap(i, k - 1);
            } else {
                items.swap(0, k - 1);
            }
        }
    }

    #[test]
    fn scim_role_values_are_trimmed_sorted_and_deduplicated() {
        let roles = serde_json::json!([
            {"primary": false, "type": "WindowsAzureActiveDirectoryRole", "value": " Writer "},
            {"value": "Admin"},
            {"value": "Writer"},
            {"value": "  "},
            {"display": "no value"},
        ]);
        assert_eq!(scim_role_values(Some(&roles)), strings(&["Admin", "Writer"]));
        assert!(scim_role_values(None).is_empty());
        assert!(scim_role_values(Some(&serde_json::json!("Admin"))).is_empty());
    }
}
