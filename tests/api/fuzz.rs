//! Seeded fuzzing of the SCIM endpoints over real HTTP, on SQLite by default
//! and on PostgreSQL when `DATABASE_URL` names one.
//!
//! Three kinds of generated requests, each against a fresh organization that
//! already holds a few Users (with the enterprise extension) and Groups:
//! - filters built from the RFC 7644 §3.4.2.2 grammar over real User and
//!   Group attributes (and some unknown or oddly cased ones): every operator
//!   in any case, values of every JSON kind, `and`/`or`/`not`, parentheses,
//!   value paths (also Entra ID's `emails[type eq "work"].value eq "x"`),
//!   nesting past the server's depth limit, and token-level mutations; sent
//!   as `GET /Users?filter=…` and `GET /Groups?filter=…` with random (also
//!   invalid) paging, sorting and projection parameters, and as SearchRequest
//!   bodies to `POST …/.search`;
//! - PATCH bodies (RFC 7644 §3.5.2) against existing Users and Groups: every
//!   op in any case, paths with value filters, no path with an object value,
//!   values of every type and shape, and broken envelopes;
//! - resource bodies for `POST`/`PUT` of Users and Groups, mutated from valid
//!   ones: unknown attributes, wrong types, nested arrays, long and unicode
//!   strings, keys repeated in another case, invalid members, `schemas`
//!   variations and invalid JSON.
//!
//! Every answer must be below 500; every 4xx a SCIM error (RFC 7644 §3.12)
//! as `application/scim+json`; every other answer with a body a JSON object.
//! Afterwards `/healthz` must answer and a plain User must still be created.
//!
//! The seed is fixed, so every run sends the same requests: the writes one
//! at a time and in order, the lists and searches a few at a time.
//! `ROSTER_FUZZ_SEED=<u64>` tries another seed. A failure names the seed and
//! the exact requests and answers, and
//! `ROSTER_FUZZ_SEED=<seed> cargo test --test api fuzz -- --nocapture`
//! sends them again (`--nocapture` also shows the answers by status).

use crate::helpers::*;
use crate::scim::{scim, user};
use futures::stream::{self, StreamExt};
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x5C1A_2026;
const FILTER_CASES: usize = 1_500;
const PATCH_CASES: usize = 1_000;
const BODY_CASES: usize = 1_000;
/// List and search requests in flight at once (writes go one at a time,
/// so that each sees the same state in every run).
const READ_CONCURRENCY: usize = 8;
/// Generated bodies stay below the test app's 64 KiB body limit.
const MAX_BODY: usize = 60 * 1024;
/// Generated filters are cut at this many bytes (the URL stays well below hyper's limit).
const MAX_FILTER: usize = 8 * 1024;
/// An answer later than this is a failure (a runaway query, a deadlock).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Attribute paths of Users, as filters, sorting and PATCH name them
/// (lists of names are written as one string, split on whitespace).
const USER_ATTRS: &str = "userName displayName externalId id active title nickName userType locale timezone
    profileUrl preferredLanguage name name.givenName name.familyName name.formatted name.middleName emails
    emails.value emails.type emails.primary emails.display phoneNumbers phoneNumbers.value phoneNumbers.type
    addresses.locality addresses.postalCode addresses.primary roles.value entitlements.value ims.value photos.value
    x509Certificates.value meta meta.created meta.lastModified meta.version meta.resourceType meta.location groups
    groups.value groups.display groups.type schemas password
    urn:ietf:params:scim:schemas:core:2.0:User:userName
    urn:ietf:params:scim:schemas:core:2.0:User:name.givenName
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName";

/// Attribute paths of Groups.
const GROUP_ATTRS: &str = "displayName externalId id members members.value members.display members.type
    members.$ref meta meta.created meta.lastModified meta.version meta.resourceType schemas
    urn:ietf:params:scim:schemas:core:2.0:Group:displayName urn:ietf:params:scim:schemas:core:2.0:Group:members.value";

/// Paths no schema defines, or that are not paths at all.
const UNKNOWN_ATTRS: &str = "nosuch name.nosuch emails.nosuch userName.value active.x meta.created.x
    members.value.value name..givenName emails. .value a.b.c.d $ref 9lives user-name user_name émail urn:
    urn:example:unknown:2.0:User:attr urn:ietf:params:scim:schemas:extension:enterprise:2.0:User
    urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:nosuch";

/// Sub-attributes, as a value filter (`emails[type eq "work"]`) names them.
/// Repeated names are drawn more often.
const SUB_ATTRS: &str = "value value value value type type type primary primary display $ref givenName locality
    nosuch value.x emails.value";

/// What a value path (`x[…]`) may start with: multi-valued attributes, and some that are not.
const MULTI: &str = "emails phoneNumbers addresses roles entitlements ims photos x509Certificates groups members
    name userName nosuch urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";

const OPS: &[&str] = &["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr"];
const BAD_OPS: &[&str] = &["eqq", "=", "==", "like", "in", "", "e q", "between"];

/// Dates for filters and strings: valid RFC 3339, and near misses.
#[rustfmt::skip]
const DATES: &[&str] = &[
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456789Z", "1970-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-13-45T25:61:61Z",
    "2026-01-01T00:00:60Z", "2026-01-01", "2026-01-01T00:00:00", "2026-01-01 00:00:00Z",
    "+275760-09-13T00:00:00Z", "-0001-01-01T00:00:00Z", "2026-01-01T00:00:00+99:99", "2026-W01-1", "not a date",
];

/// Numbers as filter text, some that JSON does not allow or i64 cannot hold.
#[rustfmt::skip]
const NUMBERS: &[&str] = &[
    "0", "-0", "1", "-1", "42", "3.14", "-2.5e10", "1e400", "-1e-400", "9223372036854775807",
    "-9223372036854775808", "18446744073709551616", "123456789012345678901234567890", "0x10", "1.", ".5", "+1",
    "01", "NaN", "Infinity",
];

/// Pieces of tricky strings: filter syntax, escapes, unicode whose case
/// mapping changes its length, controls, SQL and URL specials.
#[rustfmt::skip]
const TRICKY: &[&str] = &[
    "\"", "\\", "\\\"", "]", "].", "[", "(", ")", " and ", " or ", "not ", " eq ", "%", "%25", "_", "*", "'",
    "\n", "\t", "\r\n", "é", "İ", "ß", "ﬃ", "Σ", "😀", "\u{202e}", "\u{200b}", "\u{feff}", "\u{fffd}",
    "\u{0301}", "日本語", "\u{7f}", "\u{1}", "\u{0}", "';--", "$1", "?", "&", "=", "+", "#", "/", "\\u0000",
    "null", "{", "}", ",", ":", "@", "..", "urn:",
];

/// Characters long strings are made of (1 to 4 UTF-8 bytes, some with
/// lower-case forms of another length).
const LONG_CHARS: &[char] = &['a', 'Z', 'é', 'İ', 'ß', 'Σ', '😀', '日', '"', '\\', ' ', '\u{0301}'];

/// `startIndex` and `count` values, most of them out of range or not integers.
#[rustfmt::skip]
const COUNTS: &[&str] = &[
    "1", "0", "-1", "5", "100", "1000", "2147483648", "9223372036854775807", "-9223372036854775808",
    "99999999999999999999", "abc", "1.5", "", " 3 ", "1e2", "0x10",
];

const SORT_ORDERS: &[&str] = &["ascending", "descending", "ASCENDING", "Descending", "asc", "desc", "", "sideways"];

/// One request to send.
struct Case {
    method: Method,
    /// Under `/scim/v2`, with its query string.
    path: String,
    body: Option<String>,
    /// The filter before percent-encoding, for the failure message.
    filter: Option<String>,
}

impl Case {
    fn new(method: Method, path: impl Into<String>, body: Option<String>) -> Self {
        Case { method, path: path.into(), body, filter: None }
    }
}

/// A long text cut for a failure message.
fn clip(s: &str) -> String {
    const MAX: usize = 4_000;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &s[..at], s.len()),
        None => s.to_string(),
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} /scim/v2{}", self.method, clip(&self.path))?;
        if let Some(filter) = &self.filter {
            write!(f, "\n    filter: {}", clip(filter))?;
        }
        if let Some(body) = &self.body {
            write!(f, "\n    body: {}", clip(body))?;
        }
        Ok(())
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// A filter's tokens, each with the whitespace before it: quoted strings,
/// brackets and parentheses, and words.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        if c.is_whitespace() {
            continue;
        }
        if c == '"' {
            while let Some(d) = chars.next() {
                cur.push(d);
                match d {
                    '\\' => cur.extend(chars.next()),
                    '"' => break,
                    _ => {}
                }
            }
        } else if !"()[]".contains(c) {
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() || "()[]\"".contains(d) {
                    break;
                }
                cur.push(d);
                chars.next();
            }
        }
        out.push(std::mem::take(&mut cur));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Group,
}

/// Random SCIM requests from one seed.
struct Gen {
    rng: StdRng,
    /// Users and Groups that exist, for values that name them.
    users: Vec<String>,
    groups: Vec<String>,
    /// Makes generated userNames unique, so that most valid creates succeed.
    serial: usize,
    /// The resource type filters and paths are drawn for.
    target: Kind,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Gen { rng: StdRng::seed_from_u64(seed), users: Vec::new(), groups: Vec::new(), serial: 0, target: Kind::User }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.rng.gen_range(0..items.len())].clone()
    }

    /// One of the whitespace-separated names in `list`.
    fn pick_in(&mut self, list: &'static str) -> &'static str {
        let names: Vec<&'static str> = list.split_whitespace().collect();
        self.pick(&names)
    }

    fn odd_case(&mut self, s: &str) -> String {
        s.chars()
            .map(|c| if self.rng.gen_bool(0.5) { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect()
    }

    /// `word` as is, or now and then in another case.
    fn keyword(&mut self, word: &str) -> String {
        if self.chance(0.2) {
            self.odd_case(word)
        } else {
            word.to_string()
        }
    }

    fn word(&mut self) -> String {
        let n = self.rng.gen_range(1..=10);
        (0..n).map(|_| char::from(self.rng.sample(Alphanumeric))).collect()
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid().to_string()
    }

    /// The id of an existing User or Group, or one that is not.
    fn some_id(&mut self) -> String {
        match self.rng.gen_range(0..10) {
            0..=4 if !self.users.is_empty() => self.pick_id(Kind::User),
            5..=6 if !self.groups.is_empty() => self.pick_id(Kind::Group),
            7 => self.uuid(),
            8 => self.uuid().to_uppercase(),
            _ => self.pick(&["", "not-a-uuid", "00000000-0000-0000-0000-000000000000", "{x}", "1"]).to_string(),
        }
    }

    fn pick_id(&mut self, kind: Kind) -> String {
        let ids = if kind == Kind::User { &self.users } else { &self.groups };
        ids[self.rng.gen_range(0..ids.len())].clone()
    }

    /// A string: plain, tricky, long, unicode, date-like or an id.
    fn text(&mut self) -> String {
        match self.rng.gen_range(0..12) {
            0..=3 => self.word(),
            4 => format!("{}@{}.example.com", self.word(), self.word()),
            5 | 6 => {
                let n = self.rng.gen_range(1..=6);
                (0..n).map(|_| if self.chance(0.7) { self.pick(TRICKY).to_string() } else { self.word() }).collect()
            }
            7 => self.long(),
            8 => self.pick(DATES).to_string(),
            9 => self.some_id(),
            10 => self.pick(&["", " ", "  x  "]).to_string(),
            _ => {
                let n = self.rng.gen_range(1..=10);
                (0..n).map(|_| self.rng.gen::<char>()).collect()
            }
        }
    }

    /// 500 to 600 characters, some over the 512 of indexed attributes.
    fn long(&mut self) -> String {
        let n = if self.chance(0.3) { self.pick(&[511, 512, 513]) } else { self.rng.gen_range(500..=600) };
        let c = self.pick(LONG_CHARS);
        let mut s: String = std::iter::repeat_n(c, n).collect();
        if self.chance(0.3) {
            s.replace_range(..c.len_utf8(), "x");
        }
        s
    }

    /// A random JSON value of any kind and shape.
    fn value(&mut self) -> Value {
        self.value_at(2)
    }

    fn value_at(&mut self, depth: usize) -> Value {
        let kinds = if depth == 0 { 6 } else { 9 };
        match self.rng.gen_range(0..kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(0.5)),
            2 => json!(self.rng.gen_range(-1000..1000)),
            3 => self.pick(&[
                json!(0),
                json!(-1),
                json!(1.5),
                json!(i64::MAX),
                json!(i64::MIN),
                json!(u64::MAX),
                json!(1e300),
            ]),
            4 | 5 => Value::String(self.text()),
            6 => {
                let n = self.rng.gen_range(0..4);
                Value::Array((0..n).map(|_| self.value_at(depth - 1)).collect())
            }
            7 => {
                let n = self.rng.gen_range(0..4);
                let mut obj = Map::new();
                for _ in 0..n {
                    let key = if self.chance(0.6) { self.pick_in(SUB_ATTRS).to_string() } else { self.word() };
                    obj.insert(key, self.value_at(depth - 1));
                }
                Value::Object(obj)
            }
            _ => {
                json!([{ "value": self.text(), "type": self.pick(&["work", "home", "other", "WORK"]), "primary": self.chance(0.5) }])
            }
        }
    }

    // ---- Filters ------------------------------------------------------------------

    /// An attribute path of the resource type `target`, now and then of the
    /// other one or unknown, and sometimes oddly cased.
    fn attr(&mut self) -> String {
        let (own, other) = match self.target {
            Kind::User => (USER_ATTRS, GROUP_ATTRS),
            Kind::Group => (GROUP_ATTRS, USER_ATTRS),
        };
        let list = match self.rng.gen_range(0..20) {
            0 => UNKNOWN_ATTRS,
            1 => other,
            _ => own,
        };
        let path = self.pick_in(list);
        self.sometimes_odd_case(path)
    }

    fn sub_attr(&mut self) -> String {
        let path = self.pick_in(SUB_ATTRS);
        self.sometimes_odd_case(path)
    }

    fn sometimes_odd_case(&mut self, s: &str) -> String {
        if self.chance(0.1) {
            self.odd_case(s)
        } else {
            s.to_string()
        }
    }

    fn op(&mut self) -> String {
        let op = if self.chance(0.03) { self.pick(BAD_OPS) } else { self.pick(OPS) };
        self.keyword(op)
    }

    /// A comparison value as filter text: JSON strings, numbers, booleans,
    /// null, dates, ids, and some that are not values at all.
    fn literal(&mut self) -> String {
        match self.rng.gen_range(0..20) {
            0..=8 => Value::String(self.text()).to_string(),
            9 => Value::String(self.some_id()).to_string(),
            10 => Value::String(self.pick(DATES).to_string()).to_string(),
            11 => self.pick(NUMBERS).to_string(),
            12 => self.rng.gen::<i64>().to_string(),
            13 => {
                let word = self.pick(&["true", "false", "null"]);
                self.keyword(word)
            }
            14 => {
                let t = self.word();
                self.pick(&[format!("\"{t}"), format!("'{t}'"), format!("\"{t}\"\""), format!("\"a\"{t}\""), t])
            }
            15 => self.value().to_string(),
            16 => Value::String(format!("W/\"{}\"", self.rng.gen_range(0..20))).to_string(),
            _ => Value::String(format!("{}@fuzz.example.com", self.word())).to_string(),
        }
    }

    /// A date a filter can compare `meta.created` with.
    fn date(&mut self) -> String {
        let (y, m, d) = (self.rng.gen_range(2000..=2100), self.rng.gen_range(1..=12), self.rng.gen_range(1..=28));
        let (h, min, sec) = (self.rng.gen_range(0..24), self.rng.gen_range(0..60), self.rng.gen_range(0..60));
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{sec:02}Z")
    }

    /// `attr op value`, or `attr pr`: mostly with an operator and value that
    /// fit the attribute's type, so that the filter reaches the database.
    fn comparison(&mut self, inside: bool) -> String {
        let attr = if inside { self.sub_attr() } else { self.attr() };
        if self.chance(0.8) {
            let lower = attr.to_ascii_lowercase();
            let (ops, value): (&[&str], String) = if lower.ends_with("active") || lower.ends_with("primary") {
                (&["eq", "ne", "pr"], self.pick(&["true", "false"]).to_string())
            } else if lower.ends_with("created") || lower.ends_with("lastmodified") {
                (&["eq", "ne", "gt", "ge", "lt", "le", "pr"], Value::String(self.date()).to_string())
            } else if lower == "id" || (lower.ends_with("value") && !lower.starts_with("emails")) {
                (OPS, Value::String(self.some_id()).to_string())
            } else {
                (OPS, Value::String(self.text()).to_string())
            };
            let op = self.pick(ops);
            let op = self.keyword(op);
            return match op.eq_ignore_ascii_case("pr") {
                true => format!("{attr} {op}"),
                false => format!("{attr} {op} {value}"),
            };
        }
        let op = self.op();
        let with_value = if op.eq_ignore_ascii_case("pr") { self.chance(0.1) } else { !self.chance(0.03) };
        match with_value {
            true => format!("{attr} {op} {}", self.literal()),
            false => format!("{attr} {op}"),
        }
    }

    /// A filter nested at most `depth` levels (RFC 7644 §3.4.2.2).
    fn filter(&mut self, depth: usize) -> String {
        self.filter_in(depth, false)
    }

    /// A filter, or inside `[…]` a value filter over sub-attributes.
    fn filter_in(&mut self, depth: usize, inside: bool) -> String {
        if depth == 0 || self.chance(0.1) {
            return self.comparison(inside);
        }
        // Value paths do not nest, so inside one they are rare (and refused).
        let value_path = !inside || self.chance(0.1);
        match self.rng.gen_range(0..10) {
            0..=3 => {
                // One side deep, the other shallow: the size grows with the depth, not exponentially.
                let deep = self.filter_in(depth - 1, inside);
                let shallow = self.filter_in((depth - 1).min(2), inside);
                let (left, right) = if self.chance(0.5) { (deep, shallow) } else { (shallow, deep) };
                let logic = if self.chance(0.5) { "and" } else { "or" };
                format!("{left} {} {right}", self.keyword(logic))
            }
            4 | 5 => format!("{} ({})", self.keyword("not"), self.filter_in(depth - 1, inside)),
            6 | 7 => format!("({})", self.filter_in(depth - 1, inside)),
            8 if value_path => format!("{}[{}]", self.multi(), self.filter_in(depth - 1, true)),
            9 if value_path => {
                // Microsoft Entra ID's `emails[type eq "work"].value eq "x"`.
                let (attr, inner, sub, op) =
                    (self.multi(), self.filter_in(depth - 1, true), self.sub_attr(), self.op());
                format!("{attr}[{inner}].{sub} {op} {}", self.literal())
            }
            _ => self.comparison(inside),
        }
    }

    fn multi(&mut self) -> String {
        let attr = match (self.target, self.chance(0.8)) {
            (Kind::User, true) => self.pick(&["emails", "emails", "phoneNumbers", "addresses", "groups"]),
            (Kind::Group, true) => "members",
            (_, false) => self.pick_in(MULTI),
        };
        self.sometimes_odd_case(attr)
    }

    /// A filter nested 14 to 40 levels, around the server's limit.
    fn deep_filter(&mut self) -> String {
        let mut filter = self.comparison(false);
        for _ in 0..self.rng.gen_range(14..=40) {
            filter = match self.rng.gen_range(0..5) {
                0 => format!("not ({filter})"),
                1 => format!("({filter})"),
                2 => format!("{} and ({filter})", self.comparison(false)),
                3 => format!("({filter}) or {}", self.comparison(false)),
                _ => format!("emails[{}] and ({filter})", self.comparison(true)),
            };
        }
        filter
    }

    /// `filter` with one to three tokens dropped, repeated, swapped, broken by
    /// a character, or cut off.
    fn mutate(&mut self, filter: &str) -> String {
        let mut tokens = tokens(filter);
        for _ in 0..self.rng.gen_range(1..=3) {
            if tokens.is_empty() {
                break;
            }
            let i = self.rng.gen_range(0..tokens.len());
            match self.rng.gen_range(0..5) {
                0 => {
                    tokens.remove(i);
                }
                1 => tokens.insert(i, tokens[i].clone()),
                2 => {
                    let j = self.rng.gen_range(0..tokens.len());
                    tokens.swap(i, j);
                }
                3 => {
                    let c = match self.chance(0.8) {
                        true => {
                            self.pick(&['"', '\\', '(', ')', '[', ']', '.', ' ', ':', '\'', '=', 'x', '😀', '\u{0}'])
                        }
                        false => self.rng.gen(),
                    };
                    let token = &mut tokens[i];
                    let mut at = self.rng.gen_range(0..=token.len());
                    while !token.is_char_boundary(at) {
                        at -= 1;
                    }
                    token.insert(at, c);
                }
                _ => {
                    tokens.truncate(i + 1);
                    let last = &mut tokens[i];
                    let keep = self.rng.gen_range(0..=last.len());
                    cut(last, keep);
                }
            }
        }
        tokens.concat()
    }

    /// A value for the list parameter `name`: `sortBy`, `sortOrder`,
    /// `startIndex`, `count`, `attributes` or `excludedAttributes`.
    fn param(&mut self, name: &str) -> String {
        match name {
            "sortBy" => match self.chance(0.9) {
                true => self.attr(),
                false => self.text(),
            },
            "sortOrder" => self.pick(SORT_ORDERS).to_string(),
            "startIndex" | "count" => match self.chance(0.8) {
                true => self.pick(COUNTS).to_string(),
                false => self.rng.gen::<i64>().to_string(),
            },
            _ => match self.rng.gen_range(0..10) {
                // More names than the server takes.
                0 => (0..=100).map(|i| format!("a{i}")).collect::<Vec<_>>().join(","),
                1 => self.pick(&[",,,", "", " , ", "emails[type eq \"work\"]"]).to_string(),
                _ => {
                    let n = self.rng.gen_range(1..=5);
                    (0..n).map(|_| self.attr()).collect::<Vec<_>>().join(",")
                }
            },
        }
    }

    /// A list request (`GET` with a query string) or a search (`POST …/.search`).
    fn filter_case(&mut self) -> Case {
        let search = self.chance(0.15);
        let path = match search {
            true => self.pick(&["/Users/.search", "/Users/.search", "/Groups/.search", "/.search"]),
            false => self.pick(&["/Users", "/Users", "/Users", "/Groups", "/Groups"]),
        };
        self.target = if path.starts_with("/Groups") { Kind::Group } else { Kind::User };
        let mut filter = match self.rng.gen_range(0..20) {
            0 => self.deep_filter(),
            n => {
                let depth = match n {
                    1..=13 => self.rng.gen_range(0..=4),
                    14..=17 => self.rng.gen_range(5..=12),
                    _ => self.rng.gen_range(13..=26),
                };
                self.filter(depth)
            }
        };
        if self.chance(0.2) {
            filter = self.mutate(&filter);
        }
        cut(&mut filter, MAX_FILTER);
        let names = ["sortBy", "sortOrder", "startIndex", "count", "attributes", "excludedAttributes"];
        let mut case = if search {
            let schemas = match self.chance(0.95) {
                true => json!([SEARCH_REQUEST]),
                false => self.pick(&[json!([]), json!(SEARCH_REQUEST), json!(["urn:bogus"]), Value::Null]),
            };
            let mut body = json!({ "schemas": schemas, "filter": filter });
            for name in names {
                if self.chance(0.2) {
                    let value = match self.rng.gen_range(0..4) {
                        0 => self.value(),
                        1 if name.ends_with("ttributes") => {
                            Value::Array(self.param(name).split(',').map(|a| json!(a)).collect())
                        }
                        2 if matches!(name, "startIndex" | "count") => json!(self.rng.gen_range(-5..200)),
                        _ => json!(self.param(name)),
                    };
                    body[name] = value;
                }
            }
            if self.chance(0.05) {
                body["filter"] = self.value();
            }
            Case::new(Method::POST, path, Some(body.to_string()))
        } else {
            let mut query = Vec::new();
            if !self.chance(0.03) {
                let name = self.keyword("filter");
                query.push(format!("{name}={}", encode(&filter)));
            }
            for name in names {
                if self.chance(0.12) {
                    let key = self.keyword(name);
                    let value = self.param(name);
                    query.push(format!("{key}={}", encode(&value)));
                }
            }
            Case::new(Method::GET, format!("{path}?{}", query.join("&")), None)
        };
        case.filter = Some(filter);
        case
    }

    // ---- PATCH --------------------------------------------------------------------

    /// A PATCH path for `kind`: plain, with a value filter, in the enterprise
    /// extension, oddly cased, or broken.
    fn patch_path(&mut self, kind: Kind) -> String {
        let plain = match kind {
            Kind::User => {
                "userName displayName externalId active title nickName name name.givenName name.familyName emails
                emails.value emails.type emails.primary phoneNumbers phoneNumbers.value addresses roles groups id
                meta.version schemas password"
            }
            Kind::Group => "displayName externalId members members.value members.display id meta",
        };
        match self.rng.gen_range(0..10) {
            0..=4 => match self.chance(0.85) {
                true => self.pick_in(plain).to_string(),
                false => self.attr(),
            },
            5 | 6 => match kind {
                Kind::User => {
                    let filter = match self.chance(0.5) {
                        true => format!("type eq \"{}\"", self.pick(&["work", "home", "mobile"])),
                        false => {
                            let depth = self.rng.gen_range(0..=2);
                            self.filter_in(depth, true)
                        }
                    };
                    let attr = self.pick(&["emails", "emails", "phoneNumbers", "addresses", "roles", "name"]);
                    let sub = match self.rng.gen_range(0..4) {
                        0 => String::new(),
                        1 => format!(".{}", self.sub_attr()),
                        _ => ".value".to_string(),
                    };
                    format!("{attr}[{filter}]{sub}")
                }
                Kind::Group => {
                    let filter = match self.chance(0.7) {
                        true => format!("value eq {}", Value::String(self.some_id())),
                        false => {
                            let depth = self.rng.gen_range(0..=2);
                            self.filter_in(depth, true)
                        }
                    };
                    let sub = self.pick(&["", "", ".display", ".value", ".type"]);
                    format!("members[{filter}]{sub}")
                }
            },
            7 => match kind == Kind::User || self.chance(0.1) {
                true => {
                    let attr = self.pick_in("employeeNumber manager manager.value department x");
                    format!("{ENTERPRISE}:{attr}")
                }
                false => self.pick_in(plain).to_string(),
            },
            8 => {
                let path = self.pick_in(plain);
                self.odd_case(path)
            }
            _ => match self.chance(0.5) {
                true => self
                    .pick(&[
                        "",
                        " ",
                        "[",
                        "]",
                        "..",
                        "emails[",
                        "emails[type eq \"work\"",
                        "emails[type eq \"work\"].value.x",
                        "members[value eq]",
                        "members[value eq \"x\"]].value",
                        "name.givenName.x",
                        "urn:",
                        ENTERPRISE,
                    ])
                    .to_string(),
                false => {
                    let path = self.patch_path(kind);
                    self.mutate(&path)
                }
            },
        }
    }

    /// A value that fits `path` (or `key` of a no-path object) more or less.
    fn value_for(&mut self, path: &str) -> Value {
        let lower = path.to_ascii_lowercase();
        if self.chance(0.2) {
            return self.value();
        }
        if lower.starts_with("members") {
            let n = self.rng.gen_range(0..=4);
            return Value::Array((0..n).map(|_| json!({ "value": self.some_id() })).collect());
        }
        if lower.ends_with("active") || lower.ends_with("primary") {
            return self.pick(&[json!(true), json!(false), json!("True"), json!("false"), json!("yes")]);
        }
        if lower == "emails" {
            let email = format!("{}@fuzz.example.com", self.word());
            return json!([{ "value": email, "type": self.pick(&["work", "home"]), "primary": self.chance(0.5) }]);
        }
        if lower.ends_with("manager") {
            return json!({ "value": self.some_id() });
        }
        if lower == "name" {
            return json!({ "givenName": self.text(), "familyName": self.text() });
        }
        if lower == ENTERPRISE.to_ascii_lowercase() {
            return json!({ "employeeNumber": self.text(), "manager": { "value": self.some_id() } });
        }
        Value::String(self.text())
    }

    /// The value of an operation without a path: attributes by name.
    fn attributes_object(&mut self, kind: Kind) -> Value {
        let names = match kind {
            Kind::User => {
                "userName displayName externalId active title name name.givenName emails phoneNumbers roles nosuch
                urn:ietf:params:scim:schemas:extension:enterprise:2.0:User
                urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
            }
            Kind::Group => "displayName externalId members id nosuch",
        };
        let mut obj = Map::new();
        for _ in 0..self.rng.gen_range(1..=4) {
            let name = self.pick_in(names);
            let key = if self.chance(0.1) { self.odd_case(name) } else { name.to_string() };
            obj.insert(key, self.value_for(name));
        }
        Value::Object(obj)
    }

    /// One operation: mostly well-formed, with a value that fits its path.
    fn patch_op(&mut self, kind: Kind) -> Value {
        let mut op = Map::new();
        let path = match self.rng.gen_range(0..100) {
            0..=79 => Some(self.patch_path(kind)),
            80..=82 => {
                op.insert("path".into(), self.value());
                None
            }
            _ => None,
        };
        // A Group's `members[value eq "…"]` can only be removed.
        let filtered_member = path.as_deref().is_some_and(|p| p.to_ascii_lowercase().starts_with("members["));
        let name = match self.rng.gen_range(0..20) {
            0 => self.pick(&[json!("delete"), json!(""), json!("move"), json!(1), Value::Null, json!(["add"])]),
            1..=12 if filtered_member => json!(self.keyword("remove")),
            1..=18 if path.is_none() => {
                let name = self.pick(&["add", "replace"]);
                json!(self.keyword(name))
            }
            _ => {
                let name = self.pick(&["add", "replace", "remove"]);
                json!(self.keyword(name))
            }
        };
        let removes = name.as_str().is_some_and(|n| n.eq_ignore_ascii_case("remove"));
        if !self.chance(0.03) {
            let key = self.keyword("op");
            op.insert(key, name);
        }
        let value = match &path {
            _ if removes => self.chance(0.1).then(|| self.value()),
            Some(path) => Some(self.value_for(path)),
            None if self.chance(0.8) => Some(self.attributes_object(kind)),
            None => Some(self.value()),
        };
        if let Some(path) = path {
            op.insert("path".into(), json!(path));
        }
        if let Some(value) = value {
            if !self.chance(0.03) {
                op.insert("value".into(), value);
            }
        }
        if self.chance(0.05) {
            op.insert(self.word(), self.value());
        }
        Value::Object(op)
    }

    /// A PatchOp body for a resource of `kind`, its envelope broken now and then.
    fn patch_body(&mut self, kind: Kind) -> Value {
        let n = match self.rng.gen_range(0..20) {
            0..=11 => 1,
            12..=18 => self.rng.gen_range(2..=4),
            _ => self.rng.gen_range(0..=40),
        };
        let ops: Vec<Value> = (0..n).map(|_| self.patch_op(kind)).collect();
        let mut body = json!({ "schemas": [PATCH_OP], "Operations": ops });
        if self.chance(0.1) {
            match self.rng.gen_range(0..9) {
                0 => {
                    body.as_object_mut().unwrap().remove("schemas");
                }
                1 => body["schemas"] = self.pick(&[json!([]), json!(PATCH_OP), json!(["urn:bogus"]), json!([5])]),
                2 => body["schemas"] = json!([self.odd_case(PATCH_OP)]),
                3 => {
                    body.as_object_mut().unwrap().remove("Operations");
                }
                4 => body["Operations"] = self.value_at(1),
                5 => {
                    let ops = body.as_object_mut().unwrap().remove("Operations").unwrap();
                    body["operations"] = ops;
                }
                6 => body["Operations"] = json!([]),
                7 => body[self.word()] = self.value(),
                _ => body = self.value(),
            }
        }
        body
    }

    fn patch_case(&mut self) -> Case {
        let kind = if self.chance(0.45) { Kind::Group } else { Kind::User };
        self.target = kind;
        let id = if self.chance(0.03) { self.some_id() } else { self.pick_id(kind) };
        let resource = if kind == Kind::User { "Users" } else { "Groups" };
        let body = self.sized(|g| g.patch_body(kind));
        Case::new(Method::PATCH, format!("/{resource}/{id}{}", self.write_query()), Some(body))
    }

    // ---- Resources ----------------------------------------------------------------

    /// A valid User, with a new userName and some optional attributes, then mutated.
    fn user_body(&mut self) -> Value {
        self.serial += 1;
        let (serial, word) = (self.serial, self.word().to_lowercase());
        let mut body = user(&format!("f{serial}-{word}@fuzz.example.com"));
        if self.chance(0.5) {
            body["displayName"] = json!(self.text());
        }
        if self.chance(0.3) {
            body["externalId"] = json!(self.word());
        }
        if self.chance(0.3) {
            body["phoneNumbers"] = json!([{ "value": "+1 555 0100", "type": "work" }]);
        }
        if self.chance(0.3) && !self.users.is_empty() {
            body["schemas"] = json!([USER_SCHEMA, ENTERPRISE]);
            body[ENTERPRISE] =
                json!({ "employeeNumber": self.word(), "manager": { "value": self.pick_id(Kind::User) } });
        }
        for _ in 0..self.rng.gen_range(0..=3) {
            self.mutate_resource(&mut body, Kind::User);
        }
        body
    }

    /// A valid Group with some existing Users as members, then mutated.
    fn group_body(&mut self) -> Value {
        self.serial += 1;
        let n = self.rng.gen_range(0..=3).min(self.users.len());
        let members: Vec<Value> = (0..n).map(|_| json!({ "value": self.pick_id(Kind::User) })).collect();
        let (serial, word) = (self.serial, self.word());
        let mut body = json!({
            "schemas": [GROUP_SCHEMA],
            "displayName": format!("Group {serial} {word}"),
            "members": members,
        });
        for _ in 0..self.rng.gen_range(0..=3) {
            self.mutate_resource(&mut body, Kind::Group);
        }
        body
    }

    /// A Group's `members`: Users, Groups, unknown and invalid ids, other
    /// shapes, and now and then hundreds of them.
    fn members(&mut self) -> Value {
        let n = match self.rng.gen_range(0..10) {
            0 => self.rng.gen_range(200..=1_000),
            _ => self.rng.gen_range(0..=30),
        };
        let members = (0..n).map(|_| match self.rng.gen_range(0..10) {
            0..=5 => json!({ "value": self.some_id() }),
            6 => json!({ "value": self.some_id(), "type": self.pick(&["User", "Group", "x"]) }),
            7 => json!({ "$ref": format!("https://example.com/scim/v2/Users/{}", self.uuid()) }),
            8 => json!({ "value": self.some_id(), "display": self.text() }),
            _ => self.value(),
        });
        Value::Array(members.collect())
    }

    /// One change to a resource body: random attributes, wrong types, nesting,
    /// long strings, keys repeated in another case, schemas, members.
    fn mutate_resource(&mut self, body: &mut Value, kind: Kind) {
        let known = match kind {
            Kind::User => {
                "userName displayName externalId active title name emails phoneNumbers addresses roles entitlements
                x509Certificates password locale timezone profileUrl
                urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
            }
            Kind::Group => "displayName externalId members",
        };
        let schema = if kind == Kind::User { USER_SCHEMA } else { GROUP_SCHEMA };
        let Some(obj) = body.as_object_mut() else { return };
        match self.rng.gen_range(0..12) {
            0 => {
                let key = self.pick_in(known);
                obj.insert(key.to_string(), self.value_for(key));
            }
            1 => {
                let key = match self.chance(0.7) {
                    true => self.word(),
                    false => format!("urn:example:params:scim:schemas:extension:{}:2.0:User", self.word()),
                };
                obj.insert(key, self.value());
            }
            2 => {
                if !obj.is_empty() {
                    let i = self.rng.gen_range(0..obj.len());
                    let key = obj.keys().nth(i).cloned().unwrap();
                    obj.remove(&key);
                }
            }
            3 => {
                let long = self.long();
                match self.rng.gen_range(0..4) {
                    0 if kind == Kind::User => obj.insert("userName".into(), json!(long)),
                    1 if kind == Kind::User => obj.insert("emails".into(), json!([{ "value": long, "type": "work" }])),
                    2 => obj.insert("externalId".into(), json!(long)),
                    _ => obj.insert("displayName".into(), json!(long)),
                };
            }
            4 => {
                // The same attribute again, its name in another case.
                if !obj.is_empty() {
                    let i = self.rng.gen_range(0..obj.len());
                    let key = obj.keys().nth(i).cloned().unwrap();
                    let other = self.odd_case(&key);
                    let value = if self.chance(0.5) { obj[&key].clone() } else { self.value_for(&key) };
                    obj.insert(other, value);
                }
            }
            5 => {
                let schemas = match self.rng.gen_range(0..10) {
                    0 => None,
                    1 => Some(json!([])),
                    2 => Some(json!(schema)),
                    3 => Some(json!([if kind == Kind::User { GROUP_SCHEMA } else { USER_SCHEMA }])),
                    4 => Some(json!([schema, ENTERPRISE])),
                    5 => Some(json!([ENTERPRISE])),
                    6 => Some(json!(["urn:bogus"])),
                    7 => Some(json!([schema, schema, "urn:ietf:params:scim:schemas:extension:unknown:2.0:User"])),
                    8 => Some(json!([self.odd_case(schema)])),
                    _ => Some(self.value()),
                };
                match schemas {
                    Some(schemas) => obj.insert("schemas".into(), schemas),
                    None => obj.remove("schemas"),
                };
            }
            6 => {
                let (key, value) = match self.rng.gen_range(0..4) {
                    0 => ("id", json!(self.some_id())),
                    1 => ("meta", json!({ "resourceType": "Group", "version": "W/\"1\"", "created": self.text() })),
                    2 => ("groups", json!([{ "value": self.some_id() }])),
                    _ => ("schemas", json!([schema])),
                };
                obj.insert(key.into(), value);
            }
            7 => {
                // An attribute nested in arrays or objects it does not belong in.
                let key = self.pick_in(known);
                let inner = obj.get(key).cloned().unwrap_or_else(|| self.value_for(key));
                let wrapped = match self.rng.gen_range(0..3) {
                    0 => json!([inner]),
                    1 => json!([[inner]]),
                    _ => json!({ "value": inner }),
                };
                obj.insert(key.into(), wrapped);
            }
            8 => {
                let key = self.pick_in(known);
                let wrong =
                    self.pick(&[json!(5), json!(true), json!([]), json!({}), json!("str"), Value::Null, json!([[1]])]);
                obj.insert(key.into(), wrong);
            }
            9 => match kind {
                Kind::User => {
                    // Emails: many (over the 100 a list may hold), several primaries, no values.
                    let n = if self.chance(0.2) { self.rng.gen_range(95..=120) } else { self.rng.gen_range(0..=5) };
                    let emails: Vec<Value> = (0..n)
                        .map(|i| match self.rng.gen_range(0..6) {
                            0 => json!({ "type": "work" }),
                            1 => json!({ "value": self.text(), "primary": true }),
                            2 => json!(self.text()),
                            _ => json!({ "value": format!("e{i}-{}@fuzz.example.com", self.serial), "primary": self.chance(0.3) }),
                        })
                        .collect();
                    obj.insert("emails".into(), Value::Array(emails));
                }
                Kind::Group => {
                    let members = self.members();
                    obj.insert("members".into(), members);
                }
            },
            10 => match kind {
                Kind::User => {
                    let ext = match self.rng.gen_range(0..4) {
                        0 => json!({ "manager": self.some_id() }),
                        1 => json!({ "manager": { "value": self.some_id(), "displayName": self.text() } }),
                        2 => json!({ "employeeNumber": self.value(), "department": self.text() }),
                        _ => self.value(),
                    };
                    obj.insert(ENTERPRISE.into(), ext);
                }
                Kind::Group => {
                    obj.insert("externalId".into(), Value::String(self.text()));
                }
            },
            _ => match kind {
                Kind::User => {
                    let key = self.pick(&["givenName", "familyName", "formatted", "GIVENNAME", "nosuch"]);
                    let mut name = Map::new();
                    name.insert(key.into(), self.value());
                    obj.insert("name".into(), Value::Object(name));
                }
                Kind::Group => {
                    obj.insert("displayName".into(), Value::String(self.text()));
                }
            },
        }
    }

    /// A query string for a write: mostly none, sometimes a projection.
    fn write_query(&mut self) -> String {
        match self.chance(0.05) {
            true => {
                let name = self.pick(&["attributes", "excludedAttributes"]);
                format!("?{name}={}", encode(&self.param(name)))
            }
            false => String::new(),
        }
    }

    /// `body` as sent: its JSON, now and then with a key given twice,
    /// cut off, or followed by garbage.
    fn raw(&mut self, body: &Value) -> String {
        let text = body.to_string();
        if !self.chance(0.05) || !text.starts_with('{') || text.len() < 3 {
            return text;
        }
        match self.rng.gen_range(0..3) {
            0 => {
                let key = self.pick(&["userName", "displayName", "schemas", "members", "Operations"]);
                format!("{{{}:{},{}", json!(key), self.value(), &text[1..])
            }
            1 => {
                let mut text = text;
                let keep = self.rng.gen_range(0..text.len());
                cut(&mut text, keep);
                text
            }
            _ => format!("{text}{}", self.pick(&["}", ",", " x", "{}", "\u{0}"])),
        }
    }

    /// A body from `make`, made again until it fits the body limit.
    fn sized(&mut self, mut make: impl FnMut(&mut Self) -> Value) -> String {
        loop {
            let body = make(self);
            let text = self.raw(&body);
            if text.len() <= MAX_BODY {
                return text;
            }
        }
    }

    fn body_case(&mut self) -> Case {
        let (method, path, body) = match self.rng.gen_range(0..20) {
            0..=7 => (Method::POST, "/Users".to_string(), self.sized(Self::user_body)),
            8..=11 => (Method::PUT, format!("/Users/{}", self.pick_id(Kind::User)), self.sized(Self::user_body)),
            12..=16 => (Method::POST, "/Groups".to_string(), self.sized(Self::group_body)),
            _ => (Method::PUT, format!("/Groups/{}", self.pick_id(Kind::Group)), self.sized(Self::group_body)),
        };
        let query = self.write_query();
        Case::new(method, format!("{path}{query}"), Some(body))
    }
}

/// The seed: `ROSTER_FUZZ_SEED`, or the fixed default.
fn seed() -> u64 {
    match std::env::var("ROSTER_FUZZ_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("ROSTER_FUZZ_SEED must be a u64, got {s:?}")),
        Err(_) => DEFAULT_SEED,
    }
}

/// Sends `case`; `Err` says how the answer broke the rules.
async fn send(app: &TestApp, token: &str, case: &Case) -> Result<StatusCode, String> {
    let mut req =
        app.client.request(case.method.clone(), app.url(&format!("/scim/v2{}", case.path))).bearer_auth(token);
    if let Some(body) = &case.body {
        req = req.header("content-type", "application/scim+json").body(body.clone());
    }
    let answer = async {
        let res = req.send().await?;
        let status = res.status();
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        Ok::<_, reqwest::Error>((status, content_type, res.text().await?))
    };
    let (status, content_type, text) = match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Err(_) => return Err(format!("no answer within {ANSWER_WITHIN:?}")),
        Ok(Err(e)) => return Err(format!("the request failed: {e}")),
        Ok(Ok(answer)) => answer,
    };
    let body: Option<Value> = serde_json::from_str(&text).ok();
    let broken = if status.is_server_error() {
        Some("a server error")
    } else if status.is_client_error() {
        let body = body.unwrap_or_default();
        if content_type != "application/scim+json" {
            Some("an error that is not application/scim+json")
        } else if body["schemas"][0] != ERROR {
            Some("an error without the SCIM Error schema")
        } else if body["status"].as_str() != Some(status.as_str()) {
            Some("an error whose status is not the HTTP status as a string")
        } else {
            None
        }
    } else if status.is_success() && status != StatusCode::NO_CONTENT {
        match body.is_some_and(|b| b.is_object()) && content_type.starts_with("application/scim+json") {
            true => None,
            false => Some("a success that is not a SCIM JSON object"),
        }
    } else {
        None
    };
    match broken {
        Some(what) => Err(format!("{what}: {status} ({content_type}) {}", clip(&text))),
        None => Ok(status),
    }
}

/// Creates Users (with the enterprise extension, managers, several emails)
/// and Groups of them, and hands their ids to `gen`.
async fn populate(app: &TestApp, token: &str, gen: &mut Gen, seed: u64) {
    for i in 0..12 {
        let mut body = user(&format!("seed{i}@fuzz.example.com"));
        body["schemas"] = json!([USER_SCHEMA, ENTERPRISE]);
        body["displayName"] = json!(format!("Seed User {i}"));
        body["externalId"] = json!(format!("ext-{i}"));
        body["title"] = json!(["Engineer", "Manager", "Ünïcödé 日本"][i % 3]);
        body["active"] = json!(i % 5 != 4);
        body["emails"] = json!([
            { "value": format!("seed{i}@fuzz.example.com"), "type": "work", "primary": true },
            { "value": format!("home{i}@example.org"), "type": "home" },
        ]);
        body["phoneNumbers"] = json!([{ "value": format!("+1 555 01{i:02}"), "type": "mobile" }]);
        let mut ext = json!({ "employeeNumber": format!("{i:04}"), "department": "R&D" });
        if let Some(manager) = gen.users.last() {
            ext["manager"] = json!({ "value": manager });
        }
        body[ENTERPRISE] = ext;
        let (s, _, created) = scim(app, token, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "seed {seed}: creating seed user {i}: {created}");
        gen.users.push(id_of(&created));
    }
    for i in 0..4 {
        let members: Vec<Value> = gen.users[i * 3..i * 3 + 3].iter().map(|id| json!({ "value": id })).collect();
        let body = json!({
            "schemas": [GROUP_SCHEMA],
            "displayName": format!("Fuzz group {i}"),
            "externalId": format!("g-{i}"),
            "members": members,
        });
        let (s, _, created) = scim(app, token, Method::POST, "/Groups", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "seed {seed}: creating seed group {i}: {created}");
        gen.groups.push(id_of(&created));
    }
}

/// A fresh Roster with an organization of ample seats, populated, and a
/// generator seeded for the test's `kind`.
async fn start(kind: &str) -> (TestApp, String, Gen, u64) {
    let seed = seed();
    println!("fuzz {kind}: seed {seed} (ROSTER_FUZZ_SEED={seed} sends the same requests)");
    let app = TestApp::spawn().await;
    let org = app.org("Fuzz", 100_000).await;
    let token = scim_token(&app, &org).await;
    // Each kind draws from its own stream, so one kind can change without changing the others.
    let salt = kind.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut gen = Gen::new(seed ^ salt);
    populate(&app, &token, &mut gen, seed).await;
    (app, token, gen, seed)
}

/// Sends `cases`, `concurrency` at a time, then checks that Roster still
/// serves; fails with every broken answer and the seed.
async fn run(app: &TestApp, token: &str, seed: u64, kind: &str, cases: Vec<Case>, concurrency: usize) {
    let started = Instant::now();
    let results: Vec<(usize, Result<StatusCode, String>)> = stream::iter(cases.iter().enumerate())
        .map(|(i, case)| async move { (i, send(app, token, case).await) })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut statuses = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, result) in results {
        match result {
            Ok(status) => *statuses.entry(status.as_u16()).or_insert(0) += 1,
            Err(broken) => failures.push(format!("case {i}: {}\n  → {broken}", cases[i])),
        }
    }
    failures.sort();
    println!("fuzz {kind}: {} cases in {:.1?}, answers by status {statuses:?}", cases.len(), started.elapsed());

    // Still healthy, and still doing its job.
    let health = app.client.get(app.url("/healthz")).send().await.map(|r| r.status());
    if !matches!(health, Ok(StatusCode::OK)) {
        failures.push(format!("GET /healthz after the run: {health:?}"));
    }
    let (s, _, created) = scim(app, token, Method::POST, "/Users", Some(user("after@fuzz.example.com"))).await;
    if s != StatusCode::CREATED {
        failures.push(format!("a plain POST /Users after the run: {s} {created}"));
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {} {kind} requests broke the rules (reproduce with ROSTER_FUZZ_SEED={seed}):\n\n{}",
        failures.len(),
        cases.len(),
        failures.iter().take(25).cloned().collect::<Vec<_>>().join("\n\n"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_filters_and_searches_never_break_a_list() {
    let (app, token, mut gen, seed) = start("filters").await;
    let cases: Vec<Case> = (0..FILTER_CASES).map(|_| gen.filter_case()).collect();
    run(&app, &token, seed, "filters", cases, READ_CONCURRENCY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_patch_bodies_never_break_a_user_or_group() {
    let (app, token, mut gen, seed) = start("patches").await;
    let cases: Vec<Case> = (0..PATCH_CASES).map(|_| gen.patch_case()).collect();
    run(&app, &token, seed, "patches", cases, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_resource_bodies_never_break_a_create_or_replace() {
    let (app, token, mut gen, seed) = start("bodies").await;
    let cases: Vec<Case> = (0..BODY_CASES).map(|_| gen.body_case()).collect();
    run(&app, &token, seed, "bodies", cases, 1).await;
}
