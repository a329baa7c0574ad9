//! The organization model's vocabulary: identifiers, roles, statuses and the
//! parsed newtypes every door hands to the services ("parse, don't validate").

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Why a value could not be parsed; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(ParseError(format!(
                        concat!("unknown ", stringify!($name), " `{}` (expected one of: {})"),
                        other,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// A member's role in an organization, lowest to highest.
    Role { Read = "read", Write = "write", Admin = "admin", Owner = "owner" }
}

impl Role {
    /// The role's name as a sentence starts it: `Admin`.
    pub fn title(self) -> &'static str {
        match self {
            Role::Read => "Read",
            Role::Write => "Write",
            Role::Admin => "Admin",
            Role::Owner => "Owner",
        }
    }

    /// Rank for comparisons: a higher rank can do everything a lower one can.
    pub fn rank(self) -> u8 {
        match self {
            Role::Read => 0,
            Role::Write => 1,
            Role::Admin => 2,
            Role::Owner => 3,
        }
    }

    pub fn at_least(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }
}

string_enum! {
    /// Where a member is in its lifecycle: `invited → active ⇄ suspended → deprovisioned`.
    MemberStatus { Invited = "invited", Active = "active", Suspended = "suspended", Deprovisioned = "deprovisioned" }
}

string_enum! {
    /// Which door created a membership.
    MemberSource { Invite = "invite", Scim = "scim", Sso = "sso", Admin = "admin" }
}

string_enum! {
    /// The organization's billing plan.
    Plan {
        EnterpriseSeatYearly = "enterprise_seat_yearly",
        EnterpriseSeatQuarterly = "enterprise_seat_quarterly",
        EnterpriseSeatMonthly = "enterprise_seat_monthly",
    }
}

string_enum! {
    /// What happens when a change would need more seats than were purchased.
    SeatPolicy { Strict = "strict", Overage = "overage" }
}

string_enum! {
    /// The state of an invitation.
    InvitationStatus { Pending = "pending", Accepted = "accepted", Revoked = "revoked", Expired = "expired" }
}

string_enum! {
    /// Whether seat cuts of a reconcile plan wait for an admin (`manual`) or
    /// are applied by the background reconciler (`automatic`).
    SeatEnforcement { Manual = "manual", Automatic = "automatic" }
}

string_enum! {
    /// What a role mapping matches: a SCIM group (by `displayName` or
    /// `externalId`) or a role the identity provider names (SCIM `roles`, the
    /// roles of the tenant claim at SSO login).
    RoleMappingSource { Group = "group", IdpRole = "idp_role" }
}

string_enum! {
    /// The two kinds of bearer credential an organization issues.
    CredentialKind { ApiKey = "api_key", ScimToken = "scim_token" }
}

string_enum! {
    /// Who made a change, as recorded in the audit log.
    /// `email_link`: a person who proved their address by following a link Roster emailed;
    /// `portal`: a member signed in to the portal (the actor id is their email);
    /// `operator`: the product's back office with an operator key (the actor id is the key's id);
    /// `setup_link`: whoever holds a setup link (the actor id is the link's id).
    ActorKind {
        ApiKey = "api_key",
        Cli = "cli",
        Scim = "scim",
        Sso = "sso",
        EmailLink = "email_link",
        Portal = "portal",
        Operator = "operator",
        SetupLink = "setup_link",
        System = "system",
    }
}

string_enum! {
    /// What a setup link may set up: single sign-on, SCIM provisioning, domains.
    SetupScope { Sso = "sso", Scim = "scim", Domains = "domains" }
}

string_enum! {
    /// Where a billing request stands: waiting for the operator, answered,
    /// or withdrawn (by its requester, or superseded by a newer request).
    BillingRequestStatus { Pending = "pending", Approved = "approved", Rejected = "rejected", Cancelled = "cancelled" }
}

string_enum! {
    /// The verification state of an associated domain.
    DomainStatus { Pending = "pending", Verified = "verified", Failed = "failed", Lapsed = "lapsed" }
}

/// An email address, trimmed; compared and stored case-insensitively through
/// [`Email::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, format = "email")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        if s.len() > 254 {
            return Err(ParseError("email address is longer than 254 characters".into()));
        }
        let parsed = email_address::EmailAddress::from_str(s)
            .map_err(|e| ParseError(format!("`{s}` is not a valid email address: {e}")))?;
        // Display names ("Jane <jane@x>") are valid RFC 5322 but not an address to store.
        if parsed.email() != s || !parsed.domain().contains('.') && parsed.domain() != "localhost" {
            return Err(ParseError(format!("`{s}` is not a valid email address")));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased form used for uniqueness and look-ups.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }

    /// The domain part, lower-cased.
    pub fn domain(&self) -> String {
        self.0.rsplit_once('@').map(|(_, d)| d.to_lowercase()).unwrap_or_default()
    }
}

impl TryFrom<String> for Email {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, ParseError> {
        Email::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-readable name (organization, credential): trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\x00-\x1F\x7F-\x9F]{0,198}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ParseError("name must not be empty".into()));
        }
        if s.chars().count() > 200 {
            return Err(ParseError("name is longer than 200 characters".into()));
        }
        if s.chars().any(char::is_control) {
            return Err(ParseError("name must not contain control characters".into()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, ParseError> {
        Name::parse(&value)
    }
}

impl From<Name> for String {
    fn from(value: Name) -> Self {
        value.0
    }
}

/// A Descope-style SSO tenant ID: 1 to 128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[A-Za-z0-9._:-]{1,128}[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if !ok {
            return Err(ParseError(format!(
                "`{s}` is not a valid tenant ID (1 to 128 characters of letters, digits, `.`, `_`, `:`, `-`)"
            )));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, ParseError> {
        TenantId::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

/// A purchased seat count: 0 to 1,000,000.
pub fn parse_seats(n: i64) -> Result<i64, ParseError> {
    if (0..=1_000_000).contains(&n) {
        Ok(n)
    } else {
        Err(ParseError(format!("seats must be between 0 and 1000000, got {n}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_parsed_and_normalized() {
        let e = Email::parse("  Jane.Doe@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Jane.Doe@Example.COM");
        assert_eq!(e.normalized(), "jane.doe@example.com");
        assert_eq!(e.domain(), "example.com");
        for bad in ["", "jane", "jane@", "@x.com", "Jane <jane@x.com>", "a b@x.com", "jane@nodot"] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn roles_parse_case_insensitively_and_rank() {
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("superuser".parse::<Role>().is_err());
        assert!(Role::Owner.at_least(Role::Admin));
        assert!(!Role::Write.at_least(Role::Admin));
    }

    #[test]
    fn names_and_tenants_are_checked() {
        assert!(Name::parse("  ").is_err());
        assert!(Name::parse("a\u{7}b").is_err());
        assert_eq!(Name::parse(" Acme ").unwrap().as_str(), "Acme");
        assert!(TenantId::parse("T2abc_def-1").is_ok());
        assert!(TenantId::parse("has space").is_err());
    }
}

/// For `#[serde(default, deserialize_with = "crate::model::present")]`: a
/// field left out is `None`, a field given is `Some` of its value. With
/// `T = Option<U>` that tells `null` (clear it) from absent (keep it); with a
/// plain `T`, `null` is refused.
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Integers as JSON Schema counts them: `403` and `403.0` alike (a number
/// whose fraction is zero), for the admin API's integer fields.
pub mod whole_number {
    use serde::de::{Deserializer, Error, Visitor};
    use std::fmt;

    struct Whole;

    impl Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            // 2^63 as f64; every whole f64 below it in magnitude fits an i64.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && v.abs() < LIMIT {
                Ok(v as i64)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
    }

    fn integer<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        let n = d.deserialize_any(Whole)?;
        T::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        integer(d)
    }

    /// For optional fields: `null` or absent is `None`.
    pub mod option {
        use serde::Deserializer;

        pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
            struct Inner<T>(T);
            impl<'de, T: TryFrom<i64>> serde::Deserialize<'de> for Inner<T> {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    super::integer(d).map(Inner)
                }
            }
            Ok(<Option<Inner<T>> as serde::Deserialize>::deserialize(d)?.map(|Inner(v)| v))
        }
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(with = "super")]
            n: i64,
            #[serde(default, with = "super::option")]
            days: Option<u32>,
        }

        #[test]
        fn whole_floats_are_integers_and_fractions_are_not() {
            let t: T = serde_json::from_str(r#"{"n": 403.0, "days": 7}"#).unwrap();
            assert_eq!((t.n, t.days), (403, Some(7)));
            let t: T = serde_json::from_str(r#"{"n": -2, "days": null}"#).unwrap();
            assert_eq!((t.n, t.days), (-2, None));
            assert!(serde_json::from_str::<T>(r#"{"n": 1.5}"#).is_err());
            assert!(serde_json::from_str::<T>(r#"{"n": 1e300}"#).is_err());
            assert!(serde_json::from_str::<T>(r#"{"n": 1, "days": -1}"#).is_err());
            assert!(serde_json::from_str::<T>(r#"{"n": "1"}"#).is_err());
        }
    }
}
