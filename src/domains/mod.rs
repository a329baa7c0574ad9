//! Associated email domains: the normalized [`DomainName`] an organization
//! claims, the TXT record that proves the claim, and ([`dns`]) the DNS look-up
//! that checks it.

pub mod dns;

use crate::model::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use utoipa::ToSchema;

/// What a TXT record at the challenge name must hold, before the token.
pub const TXT_VALUE_PREFIX: &str = "roster-domain-verification=";

/// The TXT value that proves ownership for `token`: `roster-domain-verification=<token>`.
pub fn txt_value(token: &str) -> String {
    format!("{TXT_VALUE_PREFIX}{token}")
}

/// A registrable email domain in its canonical ASCII form: lower case, no
/// trailing dot, internationalized labels in their `xn--` (IDNA) form.
///
/// Public suffixes (`com`, `co.uk`, `github.io`), single labels and IP
/// addresses are refused: nobody can prove ownership of them for a whole
/// organization's email.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "acme.com")]
pub struct DomainName(String);

impl DomainName {
    /// Normalizes and checks a domain typed by a person or sent by a client.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let trimmed = raw.trim();
        let lowered = trimmed.to_lowercase();
        let s = lowered.strip_suffix('.').unwrap_or(&lowered);
        if s.is_empty() {
            return Err(ParseError("domain must not be empty".into()));
        }
        let refuse = |why: &str| Err(ParseError(format!("`{trimmed}` is not a usable domain: {why}")));
        if is_ip_address(s) {
            return refuse("it is an IP address, not a domain name");
        }
        // UTS #46 processing (RFC 5891 for the wire form): maps case and compatibility forms,
        // then Punycode-encodes each non-ASCII label. Nothing ASCII is denied here so the checks
        // below can say exactly what is wrong.
        let ascii = idna::domain_to_ascii(s)
            .map_err(|_| ParseError(format!("`{trimmed}` is not a valid internationalized domain name")))?;
        let name = ascii.strip_suffix('.').unwrap_or(&ascii);
        if name.is_empty() {
            return Err(ParseError("domain must not be empty".into()));
        }
        if is_ip_address(name) {
            return refuse("it is an IP address, not a domain name");
        }
        // RFC 1035 §2.3.4: 255 octets on the wire, which is 253 characters in text form.
        if name.len() > 253 {
            return refuse("it is longer than 253 characters");
        }
        if let Some(why) = name.split('.').find_map(check_label) {
            return refuse(&why);
        }
        // The Public Suffix List: `com`, `co.uk`, `github.io`, … A name not on it gets its
        // last label as suffix (the list's default `*` rule).
        let suffix = psl::suffix(name.as_bytes()).map(|s| s.trim());
        let is_public_suffix = suffix.is_none_or(|s| s.as_bytes() == name.as_bytes());
        let public_suffix = "it is a public suffix, under which anyone can register names";
        if is_public_suffix && suffix.is_some_and(|s| s.is_known()) {
            return refuse(public_suffix);
        }
        let Some((_, tld)) = name.rsplit_once('.') else {
            return refuse("it has a single label; use the full domain, like `acme.com`");
        };
        if tld.bytes().all(|b| b.is_ascii_digit()) {
            return refuse("its last label is all digits, which reads as an IP address");
        }
        if is_public_suffix {
            return refuse(public_suffix);
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the challenge TXT record: `<prefix>.<domain>`, e.g. `_roster-challenge.acme.com`.
    pub fn challenge_name(&self, prefix: &str) -> String {
        format!("{}.{}", prefix.trim_end_matches('.'), self.0)
    }
}

/// Why a label (after IDNA) is not a host name label (RFC 1123 §2.1), if it is not.
fn check_label(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("it has an empty label (two dots in a row, or a leading dot)".into());
    }
    if label.len() > 63 {
        return Some(format!("the label `{label}` is longer than 63 characters"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some(format!("the label `{label}` starts or ends with `-`"));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Some(format!("the label `{label}` contains `{c}`; only letters, digits and `-` are allowed"));
    }
    None
}

/// `1.2.3.4`, `::1` or `[::1]`.
fn is_ip_address(s: &str) -> bool {
    let unbracketed = s.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(s);
    unbracketed.parse::<IpAddr>().is_ok()
}

impl TryFrom<String> for DomainName {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, ParseError> {
        DomainName::parse(&value)
    }
}

impl From<DomainName> for String {
    fn from(value: DomainName) -> Self {
        value.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        let cases = [
            ("acme.com", "acme.com"),
            ("  Acme.COM.  ", "acme.com"),
            ("mail.acme.com", "mail.acme.com"),
            ("acme.co.uk", "acme.co.uk"),
            ("foo.github.io", "foo.github.io"),
            ("a-b.example", "a-b.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("Bücher.Example", "xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
            // A full-width dot (U+3002) is a label separator under UTS #46.
            ("bücher。example", "xn--bcher-kva.example"),
            ("münchen.de", "xn--mnchen-3ya.de"),
            ("例え.jp", "xn--r8jz45g.jp"),
            ("123.example", "123.example"),
        ];
        for (raw, want) in cases {
            let got = DomainName::parse(raw).unwrap_or_else(|e| panic!("`{raw}` refused: {e}"));
            assert_eq!(got.as_str(), want, "{raw}");
            assert_eq!(got.to_string(), want, "{raw}");
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            (".", "must not be empty"),
            ("com", "public suffix"),
            ("co.uk", "public suffix"),
            ("github.io", "public suffix"),
            ("COM.", "public suffix"),
            ("foo.ck", "public suffix"),
            ("s3.amazonaws.com", "public suffix"),
            ("localhost", "single label"),
            ("acme", "single label"),
            ("1.2.3.4", "IP address"),
            ("::1", "IP address"),
            ("[::1]", "IP address"),
            ("[2001:db8::1]", "IP address"),
            ("127.1", "all digits"),
            (&long_label, "longer than 63"),
            (&long_name, "longer than 253"),
            ("acme..com", "empty label"),
            (".acme.com", "empty label"),
            ("-acme.com", "starts or ends with `-`"),
            ("acme-.com", "starts or ends with `-`"),
            ("ac_me.com", "contains `_`"),
            ("acme.com/x", "contains `/`"),
            ("ac me.com", "contains ` `"),
            ("user@acme.com", "contains `@`"),
            ("xn--zz.com", "not a valid internationalized domain name"),
        ];
        for (raw, why) in cases {
            let err = DomainName::parse(raw).expect_err(raw);
            assert!(err.0.contains(why), "`{raw}`: `{err}` does not say `{why}`");
        }
    }

    #[test]
    fn serde_is_a_string_and_validates() {
        let d: DomainName = serde_json::from_str("\"Bücher.Example\"").unwrap();
        assert_eq!(d.as_str(), "xn--bcher-kva.example");
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"xn--bcher-kva.example\"");
        assert!(serde_json::from_str::<DomainName>("\"co.uk\"").is_err());
    }

    #[test]
    fn challenge_name_and_value() {
        let d = DomainName::parse("acme.com").unwrap();
        assert_eq!(d.challenge_name("_roster-challenge"), "_roster-challenge.acme.com");
        assert_eq!(d.challenge_name("_x."), "_x.acme.com");
        assert_eq!(txt_value("tok"), "roster-domain-verification=tok");
    }
}
