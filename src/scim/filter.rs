//! Filter → SQL: translates a parsed SCIM filter (RFC 7644 §3.4.2.2) and a
//! `sortBy` (RFC 7644 §3.4.2.3) into SQL over the stored resources, for
//! SQLite and PostgreSQL.
//!
//! The SQL is written over the resource table aliased `r` (`scim_users` for
//! Users, `scim_groups` for Groups). Every attribute path is resolved against
//! the schemas first; JSON paths are built from the *canonical* names the
//! schemas give (JSON key matching is exact, filters are case-insensitive),
//! never from the filter's text, and every filter value is a bind parameter.
//!
//! Where the attributes live:
//! - indexed columns for `id`, `externalId`, `userName`, `displayName`,
//!   `active` and `meta.*` (`meta.location` depends on the request's base URL
//!   and cannot be filtered);
//! - `emails.value` of Users through `scim_user_emails` (lower-cased, so only
//!   while `emails.value` is case-insensitive);
//! - User `groups` and Group `members` through `scim_group_members` (they are
//!   not in the JSON); `groups.type` is always `direct`, `members.type` always
//!   `User`;
//! - everything else in the `resource` JSON (extension attributes under their
//!   schema URN; the registry wants them URN-qualified in filters, RFC 7644
//!   §3.10), and `schemas`, which no schema defines, as a multi-valued
//!   case-insensitive reference.
//!
//! Choices where the RFC leaves room:
//! - Every comparison yields TRUE or FALSE, never NULL, so `not (…)` is the
//!   exact complement of its operand.
//! - `ne` is `not eq`: it matches when the attribute is absent, and on a
//!   multi-valued attribute it matches when *no* value is equal (`eq` matches
//!   when any value is). Inside `[…]` it applies to each value.
//! - `pr` needs a value that is not null, not `""`, not `[]` and not `{}`.
//! - A comparison on a multi-valued complex attribute without a sub-attribute
//!   (`emails co "@example.com"`) compares its `value` sub-attribute (the
//!   RFC 7643 §2.4 "value"); `emails pr` asks for at least one value. On a
//!   single-valued complex attribute (`name eq …`) it is `invalidFilter`.
//! - Case-insensitive comparisons apply `lower()` to both sides in SQL, so a
//!   value always matches itself; SQLite's `lower()` folds ASCII only. The
//!   `*_lc` columns hold Rust's `str::to_lowercase`, and the value bound
//!   against them is lowered the same way.
//! - `gt`/`ge`/`lt`/`le` and sorting order strings by code point on both
//!   backends (`COLLATE "C"` on PostgreSQL), so both answer the same.
//! - dateTime values must be RFC 3339; `meta.created`/`meta.lastModified`
//!   compare as timestamps, dateTimes inside the JSON as text. `co`/`sw`/`ew`
//!   on a dateTime, anything but `eq`/`ne`/`pr` on a boolean, `gt`…`le` on a
//!   binary, `co`/`sw`/`ew` on a number, a value of the wrong type, and any
//!   comparison with `null` (use `not (x pr)`) are `invalidFilter`.
//! - Attributes never returned (`password`) can neither filter nor sort:
//!   filtering on them would reveal them one guess at a time.
//! - A value path followed by a sub-attribute and a comparison,
//!   `emails[type eq "work"].value eq "a@x.com"` (Microsoft Entra ID
//!   queries Users so; RFC 7644's filter grammar allows `.sub` after a value
//!   path only in PATCH paths), means `emails[type eq "work" and value eq
//!   "a@x.com"]` and is read so.
//! - Filters with more than [`MAX_COMPARISONS`] comparisons or nested deeper
//!   than [`MAX_DEPTH`] are `invalidFilter` ("too complex").
//! - Sorting by a multi-valued attribute uses its primary value, else its
//!   first; resources without a value sort last ascending and first
//!   descending (RFC 7644 §3.4.2.3). An unknown `sortBy` is `invalidValue`.

use super::schema::{
    registry, AttrType, Attribute, Mutability, Registry, ResolvedAttr, ResourceKind, Returned, USER_SCHEMA,
};
use super::ScimError;
use chrono::{DateTime, Utc};
use scim_v2::filter::{
    AttrExp, AttrPath, CompValue, CompareOp, Filter, FilterActionError, ParseError, PatchPath, ValFilter, ValuePath,
};
use std::sync::OnceLock;

/// Which SQL dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a `$n` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(DateTime<Utc>),
}

/// A piece of SQL with the values for its placeholders, which are numbered
/// from the `first_param` the caller gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlFragment {
    pub sql: String,
    pub binds: Vec<SqlValue>,
}

/// Most comparisons (attribute expressions) one filter may hold.
pub const MAX_COMPARISONS: usize = 64;

/// Deepest nesting one filter may have: `not`, a change between `and` and
/// `or`, and a `[…]` value filter each add a level; a lone comparison is 1.
pub const MAX_DEPTH: usize = 16;

/// Parses a filter string; malformed or over-complex → ScimError 400 invalidFilter.
pub fn parse(raw: &str) -> Result<Filter, ScimError> {
    if raw.trim().is_empty() {
        return Err(ScimError::invalid_filter("invalid filter: the filter is empty"));
    }
    let raw = fold_value_path_comparisons(raw);
    let filter: Filter = raw.parse().map_err(|e| ScimError::invalid_filter(parse_error_detail(&e)))?;
    check_complexity(&filter)?;
    Ok(filter)
}

const OPERATORS: [&str; 10] = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr"];

/// Rewrites `attr[filter].sub op value` as `attr[(filter) and sub op value]`
/// (see the module's notes); anything else is left as it is, for the parser
/// to judge. Quoted strings are copied whole, so brackets in them count for
/// nothing.
fn fold_value_path_comparisons(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains("].") {
        return raw.into();
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len() + 16);
    // Where, in `out`, each open `[`'s filter begins.
    let mut open: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i);
                out.push_str(&raw[i..end]);
                i = end;
                continue;
            }
            b'[' => {
                out.push('[');
                open.push(out.len());
            }
            b']' => {
                let start = open.pop();
                match (start, comparison_after(raw, i + 1)) {
                    (Some(start), Some((comparison, end))) => {
                        out.insert(start, '(');
                        out.push_str(") and ");
                        out.push_str(comparison);
                        out.push(']');
                        i = end;
                        continue;
                    }
                    _ => out.push(']'),
                }
            }
            _ => {
                // Copy up to the next delimiter (keeps multi-byte characters whole).
                let next = raw[i..].find(['"', '[', ']']).map_or(raw.len(), |n| i + n);
                out.push_str(&raw[i..next]);
                i = next;
                continue;
            }
        }
        i += 1;
    }
    out.into()
}

/// The end (exclusive) of the quoted string starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// `.sub op value` (or `.sub pr`) starting at `at`: the comparison without
/// its dot, and where it ends.
fn comparison_after(raw: &str, at: usize) -> Option<(&str, usize)> {
    let bytes = raw.as_bytes();
    if bytes.get(at) != Some(&b'.') {
        return None;
    }
    let name_end = at
        + 1
        + raw[at + 1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(raw.len() - at - 1);
    if name_end == at + 1 || !bytes[at + 1].is_ascii_alphabetic() {
        return None;
    }
    let op_start = name_end + raw[name_end..].find(|c: char| c != ' ')?;
    if op_start == name_end {
        return None;
    }
    let op_end = op_start + raw[op_start..].find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(raw.len() - op_start);
    let op = raw[op_start..op_end].to_ascii_lowercase();
    if !OPERATORS.contains(&op.as_str()) {
        return None;
    }
    if op == "pr" {
        return Some((&raw[at + 1..op_end], op_end));
    }
    let value_start = op_end + raw[op_end..].find(|c: char| c != ' ')?;
    if value_start == op_end {
        return None;
    }
    let value_end = match bytes[value_start] {
        b'"' => string_end(bytes, value_start),
        _ => value_start + raw[value_start..].find([' ', ')', ']']).unwrap_or(raw.len() - value_start),
    };
    Some((&raw[at + 1..value_end], value_end))
}

/// Translates `filter` into a boolean SQL expression over the resource table aliased `r`
/// (scim_users for User, scim_groups for Group), with placeholders numbered from `first_param`.
/// The statement binds the organization's id as `$1` (so `first_param` is at least 2):
/// look-ups in side tables start from it to use their `(org_id, …)` indexes.
pub fn to_sql(
    filter: &Filter,
    kind: ResourceKind,
    dialect: Dialect,
    first_param: usize,
) -> Result<SqlFragment, ScimError> {
    to_sql_with(schemas(), filter, kind, dialect, first_param)
}

/// An ORDER BY expression (without "ORDER BY") for `sortBy`, plus its binds if any; `descending` from sortOrder.
pub fn order_by(
    sort_by: &str,
    descending: bool,
    kind: ResourceKind,
    dialect: Dialect,
    first_param: usize,
) -> Result<SqlFragment, ScimError> {
    order_by_with(schemas(), sort_by, descending, kind, dialect, first_param)
}

/// Resolves attribute paths against the schemas: the [`Registry`], or in
/// tests the registry plus a test extension.
trait Resolver {
    fn resolve(&self, kind: ResourceKind, path: &AttrPath) -> Option<ResolvedAttr<'_>>;
}

fn schemas() -> &'static dyn Resolver {
    registry()
}

impl Resolver for Registry {
    fn resolve(&self, kind: ResourceKind, path: &AttrPath) -> Option<ResolvedAttr<'_>> {
        Registry::resolve(self, kind, path)
    }
}

/// RFC 7644 §3.4.2.2 `schemas`, which is in every resource but in no schema.
fn schemas_attribute() -> &'static Attribute {
    static ATTR: OnceLock<Attribute> = OnceLock::new();
    ATTR.get_or_init(|| {
        serde_json::from_value(serde_json::json!({
            "name": "schemas", "type": "reference", "multiValued": true, "required": true, "caseExact": false,
            "mutability": "readOnly", "returned": "always", "referenceTypes": ["uri"]
        }))
        .expect("the schemas attribute")
    })
}

fn to_sql_with(
    schemas: &dyn Resolver,
    filter: &Filter,
    kind: ResourceKind,
    dialect: Dialect,
    first_param: usize,
) -> Result<SqlFragment, ScimError> {
    // Filters built by hand skip `parse`; the recursion below relies on the bound.
    check_complexity(filter)?;
    let mut w = Writer::new(schemas, kind, dialect, first_param, Purpose::Filter);
    let sql = w.filter(filter)?;
    Ok(SqlFragment { sql, binds: w.binds })
}

fn order_by_with(
    schemas: &dyn Resolver,
    sort_by: &str,
    descending: bool,
    kind: ResourceKind,
    dialect: Dialect,
    first_param: usize,
) -> Result<SqlFragment, ScimError> {
    let path = match sort_by.trim().parse::<PatchPath>() {
        Ok(PatchPath::Attr(path)) => path,
        _ => return Err(ScimError::invalid_value(format!("sortBy `{}` is not an attribute path", shorten(sort_by)))),
    };
    let mut w = Writer::new(schemas, kind, dialect, first_param, Purpose::Sort);
    let expr = w.sort_expr(&path)?;
    // RFC 7644 §3.4.2.3: resources without a value come last ascending, first descending.
    let direction = if descending { "DESC NULLS FIRST" } else { "ASC NULLS LAST" };
    Ok(SqlFragment { sql: format!("{expr} {direction}"), binds: w.binds })
}

/// The parser's complaint, without its list of expected tokens.
fn parse_error_detail(e: &ParseError) -> String {
    let detail = match e {
        ParseError::InvalidToken { location } => format!("unexpected character at offset {location}"),
        ParseError::UnrecognizedEof { .. } => "the filter ends too early".to_string(),
        ParseError::UnrecognizedToken { token: (at, token, _), .. }
        | ParseError::ExtraToken { token: (at, token, _) } => {
            format!("unexpected `{}` at offset {at}", shorten(token.trim()))
        }
        ParseError::User { error } => match error {
            FilterActionError::DepthExceeded(_) | FilterActionError::TooManyTerms(_) => {
                return format!("the filter is too complex: {error}");
            }
            other => other.to_string(),
        },
    };
    format!("invalid filter: {detail}")
}

/// At most 40 characters of user input for an error message.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn check_complexity(filter: &Filter) -> Result<(), ScimError> {
    enum Node<'a> {
        F(&'a Filter),
        V(&'a ValFilter),
    }
    // A worklist rather than recursion: a hand-built filter may be arbitrarily deep.
    let mut stack = vec![(Node::F(filter), 1usize)];
    let mut comparisons = 0usize;
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(ScimError::invalid_filter(format!(
                "the filter is too complex: it is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match node {
            Node::F(Filter::Attr(exp)) | Node::V(ValFilter::Attr(exp)) => {
                // `"a\u0000"` decodes to a NUL, which Roster refuses
                // everywhere (PostgreSQL cannot compare with it).
                if let AttrExp::Comparison(path, _, CompValue::Str(value)) = exp {
                    if value.contains('\0') {
                        return Err(ScimError::invalid_filter(format!(
                            "the value compared with `{}` contains the NUL character",
                            shorten(&path.to_string())
                        )));
                    }
                }
                comparisons += 1;
                if comparisons > MAX_COMPARISONS {
                    return Err(ScimError::invalid_filter(format!(
                        "the filter is too complex: it has more than {MAX_COMPARISONS} comparisons"
                    )));
                }
            }
            Node::F(Filter::ValuePath(vp)) => stack.push((Node::V(&vp.filter), depth + 1)),
            Node::F(Filter::Not(inner)) => stack.push((Node::F(inner), depth + 1)),
            Node::F(Filter::And(items) | Filter::Or(items)) => {
                stack.extend(items.iter().map(|i| (Node::F(i), depth + 1)))
            }
            Node::V(ValFilter::Not(inner)) => stack.push((Node::V(inner), depth + 1)),
            Node::V(ValFilter::And(items) | ValFilter::Or(items)) => {
                stack.extend(items.iter().map(|i| (Node::V(i), depth + 1)))
            }
        }
    }
    Ok(())
}

/// What the translation is for, which decides the error's `scimType`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Filter,
    Sort,
}

/// `pr`, or a comparison with its value.
#[derive(Clone, Copy)]
enum Op<'f> {
    Present,
    Compare(&'f CompareOp, &'f CompValue),
}

fn split(e: &AttrExp) -> (&AttrPath, Op<'_>) {
    match e {
        AttrExp::Present(path) => (path, Op::Present),
        AttrExp::Comparison(path, op, value) => (path, Op::Compare(op, value)),
    }
}

/// A comparison value, checked against the attribute's type.
enum Val<'f> {
    Text { value: &'f str, case_exact: bool },
    DateTime { value: &'f str, at: DateTime<Utc> },
    Bool(bool),
    Number(SqlValue),
}

/// How a text comparison treats case.
#[derive(Clone, Copy)]
enum Case {
    /// As stored.
    Exact,
    /// The column holds `to_lowercase()`; the value is lowered the same way.
    Lowered,
    /// `lower()` on both sides.
    Fold,
}

/// An attribute kept in a column of `r`.
enum Column {
    /// Text, with its lower-cased copy when there is one.
    Text {
        exact: &'static str,
        lowered: Option<&'static str>,
        nullable: bool,
    },
    Bool(&'static str),
    Timestamp(&'static str),
    /// `meta.version`, the weak ETag `W/"<version>"`.
    Version,
    /// `meta.resourceType`, the constant resource type name.
    ResourceType,
    /// `meta` itself, which is always present.
    Meta,
}

/// A multi-valued attribute kept in `scim_group_members` rather than in the JSON.
#[derive(Clone, Copy)]
enum Relation {
    /// User `groups`.
    GroupsOfUser,
    /// Group `members`.
    MembersOfGroup,
}

/// Where a JSON value is: a path of keys below the resource document, or
/// below one element of an array being iterated (the alias of its row).
enum Loc {
    Doc(Vec<String>),
    Elem(String, Vec<String>),
}

/// What the attribute expressions inside `parent[…]` are evaluated against.
struct Scope<'p> {
    parent: &'p AttrPath,
    kind: ScopeKind,
}

enum ScopeKind {
    /// A single-valued complex attribute: `name[givenName eq "x"]` is `name.givenName eq "x"`.
    Single,
    /// One element of a JSON array, by row alias.
    Elem(String),
    /// One row of `scim_group_members`.
    Relation(Relation),
    /// One row of `scim_user_emails`.
    Emails,
}

struct Writer<'s> {
    schemas: &'s dyn Resolver,
    kind: ResourceKind,
    dialect: Dialect,
    first_param: usize,
    purpose: Purpose,
    binds: Vec<SqlValue>,
    aliases: usize,
    /// Whether the relation sub-query being written needs its join (for `display`).
    join_needed: bool,
}

impl<'s> Writer<'s> {
    fn new(
        schemas: &'s dyn Resolver,
        kind: ResourceKind,
        dialect: Dialect,
        first_param: usize,
        purpose: Purpose,
    ) -> Self {
        Self { schemas, kind, dialect, first_param, purpose, binds: Vec::new(), aliases: 0, join_needed: false }
    }

    fn error(&self, detail: String) -> ScimError {
        match self.purpose {
            Purpose::Filter => ScimError::invalid_filter(detail),
            Purpose::Sort => ScimError::invalid_value(detail),
        }
    }

    fn bind(&mut self, value: SqlValue) -> String {
        self.binds.push(value);
        format!("${}", self.first_param + self.binds.len() - 1)
    }

    fn next_alias(&mut self) -> String {
        self.aliases += 1;
        format!("e{}", self.aliases)
    }

    fn resolve(&self, path: &AttrPath) -> Result<ResolvedAttr<'s>, ScimError> {
        let schemas = self.schemas;
        let resolved = schemas.resolve(self.kind, path).or_else(|| {
            let plain = path.uri.is_none() && path.sub_attr.is_none();
            (plain && path.name.eq_ignore_ascii_case("schemas")).then(|| ResolvedAttr {
                schema: USER_SCHEMA,
                attr: schemas_attribute(),
                sub: None,
            })
        });
        let Some(resolved) = resolved else {
            return Err(self.error(format!("unknown attribute `{}`", shorten(&path.to_string()))));
        };
        let hidden = |a: &Attribute| a.returned == Returned::Never || a.mutability == Mutability::WriteOnly;
        if hidden(resolved.attr) || resolved.sub.is_some_and(hidden) {
            let verb = match self.purpose {
                Purpose::Filter => "filter",
                Purpose::Sort => "sort",
            };
            return Err(self.error(format!("`{path}` is never returned, so it cannot be used to {verb}")));
        }
        Ok(resolved)
    }

    fn complex_error(&self, path: &AttrPath, attr: &Attribute) -> ScimError {
        let example = attr.sub_attributes.first().map(|s| format!(", e.g. `{path}.{}`", s.name)).unwrap_or_default();
        self.error(format!("`{path}` is a complex attribute: name one of its sub-attributes{example}"))
    }

    // ---- filters --------------------------------------------------------

    fn filter(&mut self, f: &Filter) -> Result<String, ScimError> {
        match f {
            Filter::Attr(e) => {
                let (path, op) = split(e);
                self.attr(path, op)
            }
            Filter::ValuePath(vp) => self.value_path(vp),
            Filter::Not(inner) => Ok(format!("NOT ({})", self.filter(inner)?)),
            Filter::And(items) => self.join(items, "AND", |w, f| w.filter(f)),
            Filter::Or(items) => self.join(items, "OR", |w, f| w.filter(f)),
        }
    }

    fn join<T>(
        &mut self,
        items: &[T],
        op: &str,
        mut each: impl FnMut(&mut Self, &T) -> Result<String, ScimError>,
    ) -> Result<String, ScimError> {
        let parts = items.iter().map(|item| each(self, item)).collect::<Result<Vec<_>, _>>()?;
        Ok(format!("({})", parts.join(&format!(" {op} "))))
    }

    /// An attribute expression outside any `[…]`.
    fn attr(&mut self, path: &AttrPath, op: Op<'_>) -> Result<String, ScimError> {
        if let Op::Compare(CompareOp::Ne, value) = op {
            return Ok(format!("NOT ({})", self.attr(path, Op::Compare(&CompareOp::Eq, value))?));
        }
        let r = self.resolve(path)?;
        if let Some(column) = self.column(&r, path)? {
            return self.column_compare(&column, r.leaf(), op, path);
        }
        if let Some(relation) = self.relation(&r) {
            let sub = match (r.sub, op) {
                (Some(sub), _) => Some(sub),
                (None, Op::Present) => None,
                (None, Op::Compare(..)) => Some(value_sub(r.attr).ok_or_else(|| self.complex_error(path, r.attr))?),
            };
            self.join_needed = false;
            let cond = match sub {
                Some(sub) => self.relation_compare(relation, sub, op, path)?,
                None => "TRUE".to_string(),
            };
            return Ok(self.relation_exists(relation, &cond));
        }
        let sub = match (r.sub, op) {
            (None, Op::Compare(..)) if r.attr.multi_valued => value_sub(r.attr),
            (sub, _) => sub,
        };
        if let Some(sub) = sub.filter(|sub| self.emails_fast(&r, sub)) {
            let cond = self.emails_compare(sub, op, path)?;
            return Ok(emails_exists(&cond));
        }
        self.json_attr(&r, op, path)
    }

    /// `attr[…]`.
    fn value_path(&mut self, vp: &ValuePath) -> Result<String, ScimError> {
        let path = &vp.attr;
        if path.sub_attr.is_some() {
            return Err(self
                .error(format!("`{path}[…]`: a value filter applies to a complex attribute, not to a sub-attribute")));
        }
        let r = self.resolve(path)?;
        if r.attr.kind != AttrType::Complex {
            return Err(self.error(format!("`{path}` is not a complex attribute, so it takes no `[…]` filter")));
        }
        if let Some(relation) = self.relation(&r) {
            self.join_needed = false;
            let cond = self.val_filter(&vp.filter, &Scope { parent: path, kind: ScopeKind::Relation(relation) })?;
            return Ok(self.relation_exists(relation, &cond));
        }
        if value_sub(r.attr).is_some_and(|sub| self.emails_fast(&r, sub)) && only_value(&vp.filter) {
            let cond = self.val_filter(&vp.filter, &Scope { parent: path, kind: ScopeKind::Emails })?;
            return Ok(emails_exists(&cond));
        }
        if !r.attr.multi_valued {
            return self.val_filter(&vp.filter, &Scope { parent: path, kind: ScopeKind::Single });
        }
        let keys = json_keys(&r, None)?;
        self.json_any(&Loc::Doc(keys), |w, alias| {
            w.val_filter(&vp.filter, &Scope { parent: path, kind: ScopeKind::Elem(alias.to_string()) })
        })
    }

    fn val_filter(&mut self, f: &ValFilter, scope: &Scope<'_>) -> Result<String, ScimError> {
        match f {
            ValFilter::Attr(e) => {
                let (path, op) = split(e);
                self.scoped(path, op, scope)
            }
            ValFilter::Not(inner) => Ok(format!("NOT ({})", self.val_filter(inner, scope)?)),
            ValFilter::And(items) => self.join(items, "AND", |w, f| w.val_filter(f, scope)),
            ValFilter::Or(items) => self.join(items, "OR", |w, f| w.val_filter(f, scope)),
        }
    }

    /// An attribute expression inside `parent[…]`, naming a sub-attribute of `parent`.
    fn scoped(&mut self, path: &AttrPath, op: Op<'_>, scope: &Scope<'_>) -> Result<String, ScimError> {
        let parent = scope.parent;
        if path.uri.is_some() || path.sub_attr.is_some() {
            return Err(self.error(format!("inside `{parent}[…]`, name a sub-attribute of `{parent}`, not `{path}`")));
        }
        if let Op::Compare(CompareOp::Ne, value) = op {
            return Ok(format!("NOT ({})", self.scoped(path, Op::Compare(&CompareOp::Eq, value), scope)?));
        }
        let full = AttrPath { uri: parent.uri.clone(), name: parent.name.clone(), sub_attr: Some(path.name.clone()) };
        if let ScopeKind::Single = scope.kind {
            return self.attr(&full, op);
        }
        let r = self.resolve(&full)?;
        let Some(sub) = r.sub else {
            return Err(self.error(format!("unknown attribute `{full}`")));
        };
        match &scope.kind {
            ScopeKind::Single => unreachable!("handled above"),
            ScopeKind::Elem(alias) => {
                self.json_leaf(&Loc::Elem(alias.clone(), vec![json_key(&sub.name)?]), sub, op, &full)
            }
            ScopeKind::Relation(relation) => self.relation_compare(*relation, sub, op, &full),
            ScopeKind::Emails => self.emails_compare(sub, op, &full),
        }
    }

    /// Checks a comparison's operator and value against the attribute it compares.
    fn value<'f>(
        &self,
        attr: &Attribute,
        op: &CompareOp,
        value: &'f CompValue,
        path: &AttrPath,
    ) -> Result<Val<'f>, ScimError> {
        if let CompValue::Null = value {
            return Err(self.error(format!(
                "`{path} {op} null` is not supported: use `{path} pr` or `not ({path} pr)` for presence"
            )));
        }
        let ordering = matches!(op, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le);
        let substring = matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
        let refuse = |what: &str| self.error(format!("`{op}` cannot be used with {what} attribute `{path}`"));
        let wrong_type = |what: &str| {
            self.error(format!("`{path}` is {what}, so it cannot be compared with {}", shorten(&value.to_string())))
        };
        match attr.kind {
            AttrType::String | AttrType::Reference | AttrType::Binary => {
                if attr.kind == AttrType::Binary && ordering {
                    return Err(refuse("binary"));
                }
                match value {
                    CompValue::Str(s) => {
                        Ok(Val::Text { value: s, case_exact: attr.case_exact || attr.kind == AttrType::Binary })
                    }
                    _ => Err(wrong_type("a string")),
                }
            }
            AttrType::DateTime => {
                if substring {
                    return Err(refuse("dateTime"));
                }
                let CompValue::Str(s) = value else { return Err(wrong_type("a dateTime")) };
                match DateTime::parse_from_rfc3339(s) {
                    Ok(at) => Ok(Val::DateTime { value: s, at: at.with_timezone(&Utc) }),
                    Err(_) => Err(self
                        .error(format!("`{path}` is a dateTime, and `{}` is not an RFC 3339 date-time", shorten(s)))),
                }
            }
            AttrType::Boolean => {
                if ordering || substring {
                    return Err(refuse("boolean"));
                }
                match value {
                    CompValue::True => Ok(Val::Bool(true)),
                    CompValue::False => Ok(Val::Bool(false)),
                    _ => Err(wrong_type("a boolean")),
                }
            }
            AttrType::Integer | AttrType::Decimal => {
                if substring {
                    return Err(refuse("numeric"));
                }
                let CompValue::Number(n) = value else { return Err(wrong_type("a number")) };
                match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => Ok(Val::Number(SqlValue::Int(i))),
                    (None, Some(f)) => Ok(Val::Number(SqlValue::Float(f))),
                    (None, None) => Err(wrong_type("a number")),
                }
            }
            AttrType::Complex => Err(self.complex_error(path, attr)),
        }
    }

    /// A text comparison, which may be NULL when `x` is.
    fn text_compare(&mut self, x: &str, case: Case, op: &CompareOp, value: &str) -> String {
        let (x, p) = match case {
            Case::Exact => (x.to_string(), self.bind(SqlValue::Text(value.to_string()))),
            Case::Lowered => (x.to_string(), self.bind(SqlValue::Text(value.to_lowercase()))),
            Case::Fold => (format!("lower({x})"), format!("lower({})", self.bind(SqlValue::Text(value.to_string())))),
        };
        // No LIKE: SQLite's LIKE ignores ASCII case, and `%`/`_` in the value would be wildcards.
        match (op, self.dialect) {
            (CompareOp::Co, Dialect::Sqlite) => format!("instr({x}, {p}) > 0"),
            (CompareOp::Co, Dialect::Postgres) => format!("strpos({x}, {p}) > 0"),
            (CompareOp::Sw, Dialect::Sqlite) => format!("substr({x}, 1, length({p})) = {p}"),
            (CompareOp::Sw, Dialect::Postgres) => format!("left({x}, length({p})) = {p}"),
            (CompareOp::Ew, Dialect::Sqlite) => format!("substr({x}, length({x}) - length({p}) + 1) = {p}"),
            (CompareOp::Ew, Dialect::Postgres) => format!("right({x}, length({p})) = {p}"),
            (CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le, _) => {
                format!("{} {} {p}", self.collate(&x), symbol(op))
            }
            (CompareOp::Eq | CompareOp::Ne, _) => format!("{x} = {p}"),
        }
    }

    /// Code-point order on PostgreSQL too, as SQLite's BINARY collation has.
    fn collate(&self, x: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => x.to_string(),
            Dialect::Postgres => format!("{x} COLLATE \"C\""),
        }
    }

    fn text_column_compare(
        &mut self,
        exact: &str,
        lowered: Option<&str>,
        case_exact: bool,
        op: &CompareOp,
        value: &str,
    ) -> String {
        match (case_exact, lowered) {
            (true, _) => self.text_compare(exact, Case::Exact, op, value),
            (false, Some(lowered)) => self.text_compare(lowered, Case::Lowered, op, value),
            (false, None) => self.text_compare(exact, Case::Fold, op, value),
        }
    }

    // ---- columns --------------------------------------------------------

    fn column(&self, r: &ResolvedAttr<'_>, path: &AttrPath) -> Result<Option<Column>, ScimError> {
        use ResourceKind::{Group, User};
        let sub = r.sub.map(|s| s.name.as_str());
        let core = !r.in_extension();
        Ok(Some(match (self.kind, r.attr.name.as_str(), sub) {
            _ if !core => return Ok(None),
            (_, "id", None) => Column::Text { exact: "r.id", lowered: None, nullable: false },
            (_, "externalId", None) => Column::Text { exact: "r.external_id", lowered: None, nullable: true },
            (_, "meta", None) => Column::Meta,
            (_, "meta", Some("created")) => Column::Timestamp("r.created_at"),
            (_, "meta", Some("lastModified")) => Column::Timestamp("r.updated_at"),
            (_, "meta", Some("version")) => Column::Version,
            (_, "meta", Some("resourceType")) => Column::ResourceType,
            (_, "meta", Some(_)) => {
                return Err(self.error(format!("`{path}` depends on the request's base URL and cannot be used here")))
            }
            (User, "userName", None) => {
                Column::Text { exact: "r.user_name", lowered: Some("r.user_name_lc"), nullable: false }
            }
            (User, "displayName", None) => {
                Column::Text { exact: "r.display_name", lowered: Some("r.display_name_lc"), nullable: true }
            }
            (User, "active", None) => Column::Bool("r.active"),
            (Group, "displayName", None) => {
                Column::Text { exact: "r.display_name", lowered: Some("r.display_name_lc"), nullable: false }
            }
            _ => return Ok(None),
        }))
    }

    fn resource_type(&self) -> &'static str {
        match self.kind {
            ResourceKind::User => "'User'",
            ResourceKind::Group => "'Group'",
        }
    }

    fn column_compare(
        &mut self,
        column: &Column,
        leaf: &Attribute,
        op: Op<'_>,
        path: &AttrPath,
    ) -> Result<String, ScimError> {
        let (op, value) = match op {
            Op::Present => {
                return Ok(match column {
                    Column::Text { exact, nullable: true, .. } => format!("COALESCE({exact} <> '', FALSE)"),
                    Column::Text { exact, nullable: false, .. } => format!("{exact} <> ''"),
                    _ => "TRUE".to_string(),
                })
            }
            Op::Compare(op, value) => (op, value),
        };
        if let Column::Meta = column {
            return Err(self.complex_error(path, leaf));
        }
        let val = self.value(leaf, op, value, path)?;
        Ok(match (column, val) {
            (Column::Text { exact, lowered, nullable }, Val::Text { value, case_exact }) => {
                let sql = self.text_column_compare(exact, *lowered, case_exact, op, value);
                if *nullable {
                    // False, not unknown, without a value (so that `not`
                    // holds for it), and still a condition on the column
                    // that its index serves: `COALESCE(…)` would hide it.
                    format!("({sql} AND {exact} IS NOT NULL)")
                } else {
                    sql
                }
            }
            (Column::Version, Val::Text { value, case_exact }) => {
                let case = if case_exact { Case::Exact } else { Case::Fold };
                self.text_compare("('W/\"' || r.version || '\"')", case, op, value)
            }
            (Column::ResourceType, Val::Text { value, case_exact }) => {
                let case = if case_exact { Case::Exact } else { Case::Fold };
                self.text_compare(self.resource_type(), case, op, value)
            }
            (Column::Bool(column), Val::Bool(b)) => format!("{column} = {}", self.bind(SqlValue::Bool(b))),
            (Column::Timestamp(column), Val::DateTime { at, .. }) => {
                // SQLite keeps these as text written by the same encoder the bind goes
                // through (RFC 3339, UTC), so text order is time order there.
                format!("{column} {} {}", symbol(op), self.bind(SqlValue::Timestamp(at)))
            }
            _ => return Err(self.error(format!("`{path}` cannot be compared with {value}"))),
        })
    }

    // ---- groups and members ---------------------------------------------

    fn relation(&self, r: &ResolvedAttr<'_>) -> Option<Relation> {
        if r.in_extension() {
            return None;
        }
        match (self.kind, r.attr.name.as_str()) {
            (ResourceKind::User, "groups") => Some(Relation::GroupsOfUser),
            (ResourceKind::Group, "members") => Some(Relation::MembersOfGroup),
            _ => None,
        }
    }

    /// `FROM … WHERE …` over the relation's rows of `r`, joined to the other side when needed.
    fn relation_rows(&self, relation: Relation) -> String {
        let (join, correlate) = match relation {
            Relation::GroupsOfUser => (" JOIN scim_groups g ON g.id = gm.group_id", "gm.user_id = r.id"),
            Relation::MembersOfGroup => (" JOIN scim_users u ON u.id = gm.user_id", "gm.group_id = r.id"),
        };
        let join = if self.join_needed { join } else { "" };
        format!("FROM scim_group_members gm{join} WHERE {correlate}")
    }

    fn relation_exists(&self, relation: Relation, cond: &str) -> String {
        format!("EXISTS (SELECT 1 {} AND {cond})", self.relation_rows(relation))
    }

    /// The SQL for a sub-attribute of a relation row: (text, lower-cased text, nullable).
    fn relation_column(
        &mut self,
        relation: Relation,
        sub: &Attribute,
        path: &AttrPath,
    ) -> Result<(&'static str, Option<&'static str>, bool), ScimError> {
        Ok(match (relation, sub.name.as_str()) {
            (Relation::GroupsOfUser, "value") => ("gm.group_id", None, false),
            (Relation::MembersOfGroup, "value") => ("gm.user_id", None, false),
            (Relation::GroupsOfUser, "display") => {
                self.join_needed = true;
                ("g.display_name", Some("g.display_name_lc"), false)
            }
            (Relation::MembersOfGroup, "display") => {
                self.join_needed = true;
                ("u.display_name", Some("u.display_name_lc"), true)
            }
            // Roster records direct memberships of users only.
            (Relation::GroupsOfUser, "type") => ("'direct'", None, false),
            (Relation::MembersOfGroup, "type") => ("'User'", None, false),
            _ => return Err(self.error(format!("`{path}` cannot be used here"))),
        })
    }

    fn relation_compare(
        &mut self,
        relation: Relation,
        sub: &Attribute,
        op: Op<'_>,
        path: &AttrPath,
    ) -> Result<String, ScimError> {
        let (exact, lowered, nullable) = self.relation_column(relation, sub, path)?;
        let sql = match op {
            Op::Present => format!("{exact} <> ''"),
            Op::Compare(CompareOp::Ne, value) => {
                return Ok(format!(
                    "NOT ({})",
                    self.relation_compare(relation, sub, Op::Compare(&CompareOp::Eq, value), path)?
                ))
            }
            Op::Compare(op, value) => match self.value(sub, op, value, path)? {
                Val::Text { value, case_exact } => self.text_column_compare(exact, lowered, case_exact, op, value),
                _ => return Err(self.error(format!("`{path}` cannot be compared with {value}"))),
            },
        };
        Ok(if nullable { format!("({sql} AND {exact} IS NOT NULL)") } else { sql })
    }

    // ---- emails.value through scim_user_emails ---------------------------

    /// Whether `sub` of `r` is User `emails.value`, case-insensitive as `value_lc` is.
    fn emails_fast(&self, r: &ResolvedAttr<'_>, sub: &Attribute) -> bool {
        self.kind == ResourceKind::User
            && !r.in_extension()
            && r.attr.name == "emails"
            && sub.name == "value"
            && sub.kind == AttrType::String
            && !sub.case_exact
    }

    /// `pr` or a comparison on a `scim_user_emails` row; `sub` is `emails.value`.
    fn emails_compare(&mut self, sub: &Attribute, op: Op<'_>, path: &AttrPath) -> Result<String, ScimError> {
        match op {
            Op::Present => Ok("ue.value_lc <> ''".to_string()),
            Op::Compare(CompareOp::Ne, value) => {
                Ok(format!("NOT ({})", self.emails_compare(sub, Op::Compare(&CompareOp::Eq, value), path)?))
            }
            Op::Compare(op, value) => match self.value(sub, op, value, path)? {
                Val::Text { value, .. } => Ok(self.text_compare("ue.value_lc", Case::Lowered, op, value)),
                _ => Err(self.error(format!("`{path}` cannot be compared with {value}"))),
            },
        }
    }

    // ---- JSON -----------------------------------------------------------

    /// A plain attribute path into the JSON.
    fn json_attr(&mut self, r: &ResolvedAttr<'_>, op: Op<'_>, path: &AttrPath) -> Result<String, ScimError> {
        let attr = r.attr;
        let sub = match (r.sub, op) {
            (Some(sub), _) => Some(sub),
            (None, Op::Present) => None,
            // RFC 7643 §2.4: `value` is the multi-valued attribute's value.
            (None, Op::Compare(..)) if attr.kind == AttrType::Complex && attr.multi_valued => {
                Some(value_sub(attr).ok_or_else(|| self.complex_error(path, attr))?)
            }
            (None, Op::Compare(..)) if attr.kind == AttrType::Complex => return Err(self.complex_error(path, attr)),
            (None, Op::Compare(..)) => None,
        };
        let mut keys = json_keys(r, None)?;
        match sub {
            Some(sub) if attr.multi_valued => {
                let key = json_key(&sub.name)?;
                self.json_any(&Loc::Doc(keys), |w, alias| {
                    w.json_leaf(&Loc::Elem(alias.to_string(), vec![key]), sub, op, path)
                })
            }
            Some(sub) => {
                keys.push(json_key(&sub.name)?);
                self.json_leaf(&Loc::Doc(keys), sub, op, path)
            }
            None => self.json_leaf(&Loc::Doc(keys), attr, op, path),
        }
    }

    /// `pr` or a comparison on the value at `loc`, of attribute `attr`.
    fn json_leaf(&mut self, loc: &Loc, attr: &Attribute, op: Op<'_>, path: &AttrPath) -> Result<String, ScimError> {
        match op {
            Op::Present => Ok(self.json_present(loc)),
            Op::Compare(CompareOp::Ne, value) => {
                Ok(format!("NOT ({})", self.json_leaf(loc, attr, Op::Compare(&CompareOp::Eq, value), path)?))
            }
            Op::Compare(op, value) => {
                let val = self.value(attr, op, value, path)?;
                if attr.multi_valued {
                    self.json_any(loc, |w, alias| Ok(w.json_scalar(&Loc::Elem(alias.to_string(), vec![]), op, &val)))
                } else {
                    Ok(self.json_scalar(loc, op, &val))
                }
            }
        }
    }

    /// SQLite: the JSON document and the path into it, or `None` for an element itself.
    fn sqlite_doc(&self, loc: &Loc) -> (String, Option<String>) {
        match loc {
            Loc::Doc(keys) => ("r.resource".to_string(), Some(sqlite_path(keys))),
            Loc::Elem(alias, keys) if keys.is_empty() => (alias.clone(), None),
            // json_extract() on an element that is not an object would fail on non-JSON text.
            Loc::Elem(alias, keys) => {
                (format!("CASE WHEN {alias}.type = 'object' THEN {alias}.value END"), Some(sqlite_path(keys)))
            }
        }
    }

    /// SQLite: the value (as json_extract() gives it) and its JSON type name.
    fn sqlite_value_type(&self, loc: &Loc) -> (String, String) {
        match self.sqlite_doc(loc) {
            (doc, Some(path)) => (format!("json_extract({doc}, {path})"), format!("json_type({doc}, {path})")),
            (alias, None) => (format!("{alias}.value"), format!("{alias}.type")),
        }
    }

    /// PostgreSQL: the jsonb value at `loc`.
    fn pg_json(&self, loc: &Loc) -> String {
        match loc {
            Loc::Doc(keys) => pg_chain("r.resource", keys, false),
            Loc::Elem(alias, keys) => pg_chain(&format!("{alias}.value"), keys, false),
        }
    }

    /// The value at `loc` as text.
    fn json_text(&self, loc: &Loc) -> String {
        match (self.dialect, loc) {
            (Dialect::Sqlite, _) => self.sqlite_value_type(loc).0,
            (Dialect::Postgres, Loc::Elem(alias, keys)) if keys.is_empty() => format!("({alias}.value #>> '{{}}')"),
            (Dialect::Postgres, Loc::Doc(keys)) => format!("({})", pg_chain("r.resource", keys, true)),
            (Dialect::Postgres, Loc::Elem(alias, keys)) => {
                format!("({})", pg_chain(&format!("{alias}.value"), keys, true))
            }
        }
    }

    /// RFC 7644 `pr`: there, and not null, `""`, `[]` or `{}`.
    fn json_present(&self, loc: &Loc) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let (v, t) = self.sqlite_value_type(loc);
                format!(
                    "CASE {t} WHEN 'null' THEN FALSE WHEN 'text' THEN {v} <> '' WHEN 'array' THEN {v} <> '[]' \
                     WHEN 'object' THEN {v} <> '{{}}' ELSE {t} IS NOT NULL END"
                )
            }
            Dialect::Postgres => {
                let j = self.pg_json(loc);
                format!(
                    "CASE jsonb_typeof({j}) WHEN 'null' THEN FALSE WHEN 'string' THEN {j} <> '\"\"'::jsonb \
                     WHEN 'array' THEN {j} <> '[]'::jsonb WHEN 'object' THEN {j} <> '{{}}'::jsonb \
                     ELSE {j} IS NOT NULL END"
                )
            }
        }
    }

    /// A comparison of the single value at `loc`; TRUE or FALSE.
    fn json_scalar(&mut self, loc: &Loc, op: &CompareOp, val: &Val<'_>) -> String {
        match val {
            Val::Text { value, case_exact } => {
                let case = if *case_exact { Case::Exact } else { Case::Fold };
                let x = self.json_text(loc);
                format!("COALESCE({}, FALSE)", self.text_compare(&x, case, op, value))
            }
            // dateTimes inside the JSON compare as the text they are stored as.
            Val::DateTime { value, .. } => {
                let x = self.json_text(loc);
                format!("COALESCE({}, FALSE)", self.text_compare(&x, Case::Exact, op, value))
            }
            Val::Bool(b) => {
                let p = self.bind(SqlValue::Bool(*b));
                match self.dialect {
                    Dialect::Sqlite => {
                        let (v, t) = self.sqlite_value_type(loc);
                        format!("COALESCE({t} IN ('true', 'false') AND {v} = {p}, FALSE)")
                    }
                    Dialect::Postgres => format!("COALESCE({} = to_jsonb({p}::boolean), FALSE)", self.pg_json(loc)),
                }
            }
            Val::Number(n) => {
                let p = self.bind(n.clone());
                let symbol = symbol(op);
                match self.dialect {
                    Dialect::Sqlite => {
                        let (v, t) = self.sqlite_value_type(loc);
                        format!("COALESCE({t} IN ('integer', 'real') AND {v} {symbol} {p}, FALSE)")
                    }
                    // CASE, not AND: PostgreSQL may evaluate AND's operands in any order,
                    // and the cast fails on anything but a number.
                    Dialect::Postgres => {
                        let j = self.pg_json(loc);
                        format!(
                            "COALESCE(CASE WHEN jsonb_typeof({j}) = 'number' \
                             THEN ({j})::numeric {symbol} {p} END, FALSE)"
                        )
                    }
                }
            }
        }
    }

    /// `EXISTS` over the elements of the array at `loc`, with `cond` written for an element alias.
    fn json_any(
        &mut self,
        loc: &Loc,
        cond: impl FnOnce(&mut Self, &str) -> Result<String, ScimError>,
    ) -> Result<String, ScimError> {
        let alias = self.next_alias();
        let source = match self.dialect {
            Dialect::Sqlite => match self.sqlite_doc(loc) {
                (doc, Some(path)) => format!("{} AS {alias}", sqlite_elements(&doc, &path)),
                (inner, None) => {
                    format!("json_each(CASE WHEN {inner}.type = 'array' THEN {inner}.value END) AS {alias}")
                }
            },
            Dialect::Postgres => format!("{} AS {alias}(value)", pg_elements(&self.pg_json(loc))),
        };
        let cond = cond(self, &alias)?;
        Ok(format!("EXISTS (SELECT 1 FROM {source} WHERE {cond})"))
    }

    // ---- sorting --------------------------------------------------------

    fn sort_expr(&mut self, path: &AttrPath) -> Result<String, ScimError> {
        let r = self.resolve(path)?;
        if let Some(column) = self.column(&r, path)? {
            return match column {
                Column::Text { exact, lowered, .. } => Ok(match (r.leaf().case_exact, lowered) {
                    (true, _) => self.collate(exact),
                    (false, Some(lowered)) => self.collate(lowered),
                    (false, None) => self.collate(&format!("lower({exact})")),
                }),
                Column::Bool(column) | Column::Timestamp(column) => Ok(column.to_string()),
                // Numerically, which the ETag text would not be.
                Column::Version => Ok("r.version".to_string()),
                Column::ResourceType => Ok(format!("CAST({} AS TEXT)", self.resource_type())),
                Column::Meta => Err(self.complex_error(path, r.attr)),
            };
        }
        if let Some(relation) = self.relation(&r) {
            let sub = match r.sub.or_else(|| value_sub(r.attr)) {
                Some(sub) => sub,
                None => return Err(self.complex_error(path, r.attr)),
            };
            self.join_needed = false;
            let (exact, lowered, _) = self.relation_column(relation, sub, path)?;
            let expr = match (sub.case_exact, lowered) {
                (true, _) => exact.to_string(),
                (false, Some(lowered)) => lowered.to_string(),
                (false, None) => format!("lower({exact})"),
            };
            // Members and groups have no primary: the first in order.
            let first = format!("(SELECT min({}) {})", self.collate(&expr), self.relation_rows(relation));
            return Ok(self.collate(&first));
        }
        let attr = r.attr;
        let leaf = match r.sub {
            Some(sub) => sub,
            None if attr.kind == AttrType::Complex && attr.multi_valued => {
                value_sub(attr).ok_or_else(|| self.complex_error(path, attr))?
            }
            None if attr.kind == AttrType::Complex => return Err(self.complex_error(path, attr)),
            None => attr,
        };
        if leaf.kind == AttrType::Complex || (r.sub.is_some() && leaf.multi_valued) {
            return Err(self.error(format!("cannot sort by `{path}`")));
        }
        if !attr.multi_valued {
            let keys = json_keys(&r, r.sub.map(|s| s.name.as_str()))?;
            let (expr, text) = self.sort_scalar(&Loc::Doc(keys), leaf);
            return Ok(if text { self.collate(&expr) } else { expr });
        }
        let keys = json_keys(&r, None)?;
        // Multi-valued: the primary value, else the first.
        let alias = self.next_alias();
        let elem =
            Loc::Elem(alias.clone(), if attr.kind == AttrType::Complex { vec![json_key(&leaf.name)?] } else { vec![] });
        let (expr, text) = self.sort_scalar(&elem, leaf);
        let has_primary = attr.sub_attributes.iter().any(|s| s.name == "primary" && s.kind == AttrType::Boolean);
        let subquery = match self.dialect {
            Dialect::Sqlite => {
                let primary = if has_primary {
                    format!(
                        "CASE WHEN json_type(CASE WHEN {alias}.type = 'object' THEN {alias}.value END, \
                         '$.\"primary\"') = 'true' THEN 0 ELSE 1 END, "
                    )
                } else {
                    String::new()
                };
                format!(
                    "(SELECT {expr} FROM {} AS {alias} ORDER BY {primary}{alias}.key LIMIT 1)",
                    sqlite_elements("r.resource", &sqlite_path(&keys))
                )
            }
            Dialect::Postgres => {
                let primary = if has_primary {
                    format!("CASE WHEN {alias}.value -> 'primary' = 'true'::jsonb THEN 0 ELSE 1 END, ")
                } else {
                    String::new()
                };
                format!(
                    "(SELECT {expr} FROM {} WITH ORDINALITY AS {alias}(value, n) ORDER BY {primary}{alias}.n LIMIT 1)",
                    pg_elements(&pg_chain("r.resource", &keys, false))
                )
            }
        };
        Ok(if text { self.collate(&subquery) } else { subquery })
    }

    /// A sort key for the value at `loc`, and whether it is text (to collate).
    fn sort_scalar(&self, loc: &Loc, attr: &Attribute) -> (String, bool) {
        match attr.kind {
            AttrType::String | AttrType::Reference if !attr.case_exact => {
                (format!("lower({})", self.json_text(loc)), true)
            }
            AttrType::Boolean => match self.dialect {
                Dialect::Sqlite => (self.sqlite_value_type(loc).0, false),
                Dialect::Postgres => {
                    let j = self.pg_json(loc);
                    (format!("CASE WHEN jsonb_typeof({j}) = 'boolean' THEN ({j})::boolean END"), false)
                }
            },
            AttrType::Integer | AttrType::Decimal => match self.dialect {
                Dialect::Sqlite => {
                    let (v, t) = self.sqlite_value_type(loc);
                    (format!("CASE WHEN {t} IN ('integer', 'real') THEN {v} END"), false)
                }
                Dialect::Postgres => {
                    let j = self.pg_json(loc);
                    (format!("CASE WHEN jsonb_typeof({j}) = 'number' THEN ({j})::numeric END"), false)
                }
            },
            _ => (self.json_text(loc), true),
        }
    }
}

/// The users with an email row matching `cond`, found through the
/// `(org_id, value_lc)` index rather than probed user by user.
fn emails_exists(cond: &str) -> String {
    format!("r.id IN (SELECT ue.user_id FROM scim_user_emails ue WHERE ue.org_id = $1 AND {cond})")
}

/// Whether every attribute expression in `f` names the `value` sub-attribute.
fn only_value(f: &ValFilter) -> bool {
    match f {
        ValFilter::Attr(e) => {
            let (path, _) = split(e);
            path.uri.is_none() && path.sub_attr.is_none() && path.name.eq_ignore_ascii_case("value")
        }
        ValFilter::Not(inner) => only_value(inner),
        ValFilter::And(items) | ValFilter::Or(items) => items.iter().all(only_value),
    }
}

fn value_sub(attr: &Attribute) -> Option<&Attribute> {
    attr.sub_attributes.iter().find(|s| s.name == "value")
}

fn symbol(op: &CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        // Not used for co/sw/ew, which have functions of their own.
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => "=",
    }
}

/// A canonical attribute name or schema URN as a JSON key. The names come
/// from the schemas, not from the filter; the check keeps SQL quoting trivial.
fn json_key(name: &str) -> Result<String, ScimError> {
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-' | '$'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(ScimError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("schema attribute name `{}` cannot be used as a JSON key", shorten(name)),
        ))
    }
}

/// The JSON keys of `r`'s attribute (under its URN when in an extension), and of `sub`.
fn json_keys(r: &ResolvedAttr<'_>, sub: Option<&str>) -> Result<Vec<String>, ScimError> {
    let mut keys = Vec::with_capacity(3);
    if r.in_extension() {
        keys.push(json_key(r.schema)?);
    }
    keys.push(json_key(&r.attr.name)?);
    if let Some(sub) = sub {
        keys.push(json_key(sub)?);
    }
    Ok(keys)
}

/// `'$."a"."b"'`, a quoted SQLite JSON path.
fn sqlite_path(keys: &[String]) -> String {
    let mut path = String::from("'$");
    for key in keys {
        path.push_str(".\"");
        path.push_str(key);
        path.push('"');
    }
    path.push('\'');
    path
}

/// `base -> 'a' -> 'b'`, with `->>` for the last key when `text`.
fn pg_chain(base: &str, keys: &[String], text: bool) -> String {
    let mut chain = base.to_string();
    for (i, key) in keys.iter().enumerate() {
        let arrow = if text && i + 1 == keys.len() { "->>" } else { "->" };
        chain.push_str(&format!(" {arrow} '{key}'"));
    }
    chain
}

/// `json_each` of the array at `path` in `doc`, or of nothing when it is not
/// an array, as on PostgreSQL (json_each() would make one row of a scalar).
fn sqlite_elements(doc: &str, path: &str) -> String {
    format!("json_each(CASE WHEN json_type({doc}, {path}) = 'array' THEN {doc} END, {path})")
}

/// `jsonb_array_elements` of `json`, or of nothing when it is not an array
/// (it would fail on anything else).
fn pg_elements(json: &str) -> String {
    format!("jsonb_array_elements(CASE WHEN jsonb_typeof({json}) = 'array' THEN {json} ELSE '[]'::jsonb END)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::Schema;
    use crate::scim::ScimType;
    use serde_json::{json, Value};
    use sqlx::postgres::PgPoolOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{Connection, PgPool, SqlitePool};
    use ResourceKind::{Group, User};

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    /// An extension with the attribute types the core schemas lack.
    const TEST: &str = "urn:example:params:scim:schemas:extension:roster-test:2.0:User";
    const ORG: &str = "org-1";

    // ---- schemas ----------------------------------------------------------

    /// Roster's schemas, plus the test extension.
    struct TestSchemas {
        ext: Schema,
    }

    fn test_schemas() -> &'static TestSchemas {
        static SCHEMAS: OnceLock<TestSchemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| {
            let attr = |name: &str, kind: &str, multi: bool, case_exact: bool, returned: &str| {
                json!({"name": name, "type": kind, "multiValued": multi, "required": false, "caseExact": case_exact,
                       "mutability": "readWrite", "returned": returned})
            };
            let ext = json!({"id": TEST, "name": "RosterTest", "attributes": [
                attr("level", "integer", false, false, "default"),
                attr("score", "decimal", false, false, "default"),
                attr("vip", "boolean", false, false, "default"),
                attr("hiredAt", "dateTime", false, false, "default"),
                attr("code", "string", false, true, "default"),
                attr("tags", "string", true, false, "default"),
                attr("secret", "string", false, false, "never"),
            ]});
            TestSchemas { ext: serde_json::from_value(ext).unwrap() }
        })
    }

    impl Resolver for TestSchemas {
        fn resolve(&self, kind: ResourceKind, path: &AttrPath) -> Option<ResolvedAttr<'_>> {
            if let Some(r) = schemas().resolve(kind, path) {
                return Some(r);
            }
            // URN-qualified only, as the registry wants of extension attributes (RFC 7644 §3.10).
            let ours = kind == User && path.uri.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(TEST));
            let attr = self.ext.attributes.iter().find(|a| ours && a.name.eq_ignore_ascii_case(&path.name))?;
            let sub = match &path.sub_attr {
                Some(sub) => Some(attr.sub_attributes.iter().find(|s| s.name.eq_ignore_ascii_case(sub))?),
                None => None,
            };
            Some(ResolvedAttr { schema: &self.ext.id, attr, sub })
        }
    }

    fn translate(filter: &str, kind: ResourceKind, dialect: Dialect, first_param: usize) -> SqlFragment {
        let parsed = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        to_sql_with(test_schemas(), &parsed, kind, dialect, first_param).unwrap_or_else(|e| panic!("{filter}: {e}"))
    }

    fn filter_error(filter: &str) -> ScimError {
        match parse(filter).and_then(|f| to_sql_with(test_schemas(), &f, User, Dialect::Sqlite, 1)) {
            Ok(sql) => panic!("{filter} translated to {}", sql.sql),
            Err(e) => e,
        }
    }

    fn sort_error(sort_by: &str) -> ScimError {
        match order_by_with(test_schemas(), sort_by, false, User, Dialect::Sqlite, 1) {
            Ok(sql) => panic!("{sort_by} translated to {}", sql.sql),
            Err(e) => e,
        }
    }

    fn text(s: &str) -> SqlValue {
        SqlValue::Text(s.to_string())
    }

    // ---- generated SQL ----------------------------------------------------

    #[test]
    fn user_name_uses_the_lower_cased_column() {
        let f = translate(r#"userName eq "BJensen""#, User, Dialect::Sqlite, 2);
        assert_eq!(f.sql, "r.user_name_lc = $2");
        assert_eq!(f.binds, vec![text("bjensen")]);
        let f = translate(r#"USERNAME co "%_""#, User, Dialect::Postgres, 1);
        assert_eq!(f.sql, "strpos(r.user_name_lc, $1) > 0");
        assert_eq!(f.binds, vec![text("%_")]);
    }

    #[test]
    fn json_attributes_are_read_by_canonical_name() {
        let f = translate(r#"name.FAMILYNAME sw "J""#, User, Dialect::Sqlite, 1);
        assert_eq!(
            f.sql,
            r#"COALESCE(substr(lower(json_extract(r.resource, '$."name"."familyName"')), 1, length(lower($1))) = lower($1), FALSE)"#
        );
        let f = translate(r#"name.familyName sw "J""#, User, Dialect::Postgres, 1);
        assert_eq!(
            f.sql,
            "COALESCE(left(lower((r.resource -> 'name' ->> 'familyName')), length(lower($1))) = lower($1), FALSE)"
        );
        let f = translate(&format!(r#"{ENT}:manager.value eq "u1""#), User, Dialect::Sqlite, 1);
        assert_eq!(f.sql, format!(r#"COALESCE(json_extract(r.resource, '$."{ENT}"."manager"."value"') = $1, FALSE)"#));
        let f = translate(&format!(r#"{ENT}:department eq "x""#), User, Dialect::Postgres, 1);
        assert_eq!(f.sql, format!("COALESCE(lower((r.resource -> '{ENT}' ->> 'department')) = lower($1), FALSE)"));
    }

    #[test]
    fn value_filters_become_exists_over_the_array() {
        let f = translate(r#"emails[type eq "work" and value co "@acme.com"]"#, User, Dialect::Sqlite, 3);
        assert_eq!(
            f.sql,
            "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type(r.resource, '$.\"emails\"') = 'array' \
             THEN r.resource END, '$.\"emails\"') AS e1 WHERE \
             (COALESCE(lower(json_extract(CASE WHEN e1.type = 'object' THEN e1.value END, '$.\"type\"')) = lower($3), FALSE) \
             AND COALESCE(instr(lower(json_extract(CASE WHEN e1.type = 'object' THEN e1.value END, '$.\"value\"')), lower($4)) > 0, FALSE)))"
        );
        assert_eq!(f.binds, vec![text("work"), text("@acme.com")]);
        let f = translate(r#"emails[type eq "work"]"#, User, Dialect::Postgres, 1);
        assert_eq!(
            f.sql,
            "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(r.resource -> 'emails') = 'array' \
             THEN r.resource -> 'emails' ELSE '[]'::jsonb END) AS e1(value) \
             WHERE COALESCE(lower((e1.value ->> 'type')) = lower($1), FALSE))"
        );
    }

    #[test]
    fn emails_value_uses_the_emails_table() {
        let f = translate(r#"emails.value eq "Bob@Example.com""#, User, Dialect::Sqlite, 2);
        assert_eq!(
            f.sql,
            "r.id IN (SELECT ue.user_id FROM scim_user_emails ue WHERE ue.org_id = $1 AND ue.value_lc = $2)"
        );
        assert_eq!(f.binds, vec![text("bob@example.com")]);
        // `emails` alone means its value, and a value filter on `value` alone can use the table too.
        assert_eq!(translate(r#"emails eq "Bob@Example.com""#, User, Dialect::Sqlite, 2), f);
        let f = translate(r#"emails[value sw "a" or value sw "b"]"#, User, Dialect::Postgres, 2);
        assert_eq!(
            f.sql,
            "r.id IN (SELECT ue.user_id FROM scim_user_emails ue WHERE ue.org_id = $1 AND \
             (left(ue.value_lc, length($2)) = $2 OR left(ue.value_lc, length($3)) = $3))"
        );
    }

    #[test]
    fn groups_and_members_use_the_membership_table() {
        let f = translate(r#"members[value eq "u1"]"#, Group, Dialect::Sqlite, 2);
        assert_eq!(
            f.sql,
            "EXISTS (SELECT 1 FROM scim_group_members gm WHERE gm.group_id = r.id AND lower(gm.user_id) = lower($2))"
        );
        let f = translate(r#"groups.display eq "Sales""#, User, Dialect::Sqlite, 1);
        assert_eq!(
            f.sql,
            "EXISTS (SELECT 1 FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id \
             WHERE gm.user_id = r.id AND g.display_name_lc = $1)"
        );
        assert_eq!(f.binds, vec![text("sales")]);
    }

    #[test]
    fn ne_is_not_eq_and_placeholders_count_on() {
        let f = translate(r#"title ne "x" or not (externalId eq "A") and active eq true"#, User, Dialect::Sqlite, 5);
        assert_eq!(
            f.sql,
            r#"(NOT (COALESCE(lower(json_extract(r.resource, '$."title"')) = lower($5), FALSE)) OR (NOT ((r.external_id = $6 AND r.external_id IS NOT NULL)) AND r.active = $7))"#
        );
        assert_eq!(f.binds, vec![text("x"), text("A"), SqlValue::Bool(true)]);
    }

    #[test]
    fn values_only_ever_travel_as_binds() {
        let evil = "x' OR '1'='1\" -- ]) ;";
        let quoted = serde_json::to_string(evil).unwrap();
        for filter in [
            format!("userName eq {quoted}"),
            format!("title co {quoted}"),
            format!("emails[type sw {quoted} or value ew {quoted}]"),
            format!("groups.display gt {quoted}"),
            format!("{ENT}:manager.value eq {quoted}"),
        ] {
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                let f = translate(&filter, User, dialect, 1);
                assert!(!f.sql.contains("OR '1'"), "{}", f.sql);
                assert!(f
                    .binds
                    .iter()
                    .all(|b| matches!(b, SqlValue::Text(t) if t.to_lowercase() == evil.to_lowercase())));
            }
        }
    }

    #[test]
    fn timestamps_are_bound_as_timestamps() {
        let f = translate(r#"meta.lastModified gt "2011-05-13T04:42:34+02:00""#, User, Dialect::Postgres, 1);
        assert_eq!(f.sql, "r.updated_at > $1");
        let at = DateTime::parse_from_rfc3339("2011-05-13T02:42:34Z").unwrap().with_timezone(&Utc);
        assert_eq!(f.binds, vec![SqlValue::Timestamp(at)]);
        assert_eq!(translate("meta.created pr", User, Dialect::Sqlite, 1).sql, "TRUE");
    }

    #[test]
    fn order_by_sql() {
        let o = order_by_with(test_schemas(), "userName", false, User, Dialect::Sqlite, 1).unwrap();
        assert_eq!(o, SqlFragment { sql: "r.user_name_lc ASC NULLS LAST".into(), binds: vec![] });
        let o = order_by_with(test_schemas(), "name.givenName", true, User, Dialect::Postgres, 1).unwrap();
        assert_eq!(o.sql, "lower((r.resource -> 'name' ->> 'givenName')) COLLATE \"C\" DESC NULLS FIRST");
        let o = order_by_with(test_schemas(), "meta.lastModified", true, Group, Dialect::Sqlite, 1).unwrap();
        assert_eq!(o.sql, "r.updated_at DESC NULLS FIRST");
    }

    // ---- errors -----------------------------------------------------------

    #[test]
    fn malformed_and_over_complex_filters_are_invalid_filter() {
        for raw in [
            "",
            "userName",
            "userName eq",
            r#"userName eq "x" and"#,
            r#"(userName eq "x""#,
            r#"userName regex "x""#,
            r#"userName eq 'x'"#,
            r#"emails[type eq "work""#,
        ] {
            let e = parse(raw).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{raw}");
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.detail.starts_with("invalid filter: "), "{raw}: {}", e.detail);
            assert!(!e.detail.contains("Expected one of"), "{raw}: {}", e.detail);
        }
        let e = parse(r#"userName regex "x""#).unwrap_err();
        assert!(e.detail.contains("regex"), "{}", e.detail);

        let many = (0..=MAX_COMPARISONS).map(|i| format!(r#"userName eq "u{i}""#)).collect::<Vec<_>>().join(" or ");
        assert!(parse(&many).unwrap_err().detail.contains("too complex"));
        let enough = (0..MAX_COMPARISONS).map(|i| format!(r#"userName eq "u{i}""#)).collect::<Vec<_>>().join(" or ");
        assert_eq!(translate(&enough, User, Dialect::Sqlite, 1).binds.len(), MAX_COMPARISONS);

        let deep = format!("{}userName pr{}", "not (".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&deep).unwrap_err().detail.contains("too complex"));
        let ok = format!("{}userName pr{}", "not (".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
        parse(&ok).unwrap();
        // The crate's own bound (64 levels) comes first for deeper input.
        let deeper = format!("{}userName pr{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deeper).unwrap_err().detail.contains("too complex"));

        // A filter built by hand, past the parser, is held to the same limits.
        let mut hand = Filter::Attr(AttrExp::Present(AttrPath::with_name("userName")));
        for _ in 0..1000 {
            hand = Filter::Not(Box::new(hand));
        }
        let e = to_sql(&hand, User, Dialect::Sqlite, 1).unwrap_err();
        assert!(e.detail.contains("too complex"));
        // Dropping a 1000-deep Box chain recursively is fine at this depth.
    }

    #[test]
    fn filters_the_schemas_do_not_allow_are_invalid_filter() {
        let level_co = format!(r#"{TEST}:level co "1""#);
        let level_eq_text = format!(r#"{TEST}:level eq "7""#);
        let secret_pr = format!("{TEST}:secret pr");
        let cases: &[(&str, &str)] = &[
            (r#"foo eq "x""#, "unknown attribute `foo`"),
            (r#"name.foo eq "x""#, "unknown attribute `name.foo`"),
            (r#"urn:example:nope:User:userName eq "x""#, "unknown attribute"),
            (r#"emails[foo eq "x"]"#, "unknown attribute `emails.foo`"),
            (r#"emails[type.x eq "x"]"#, "name a sub-attribute of `emails`"),
            (r#"userName[value eq "x"]"#, "not a complex attribute"),
            (r#"emails.type[value eq "x"]"#, "not to a sub-attribute"),
            ("active gt true", "`gt` cannot be used with boolean"),
            (r#"active co "t""#, "`co` cannot be used with boolean"),
            (r#"active eq "yes""#, "`active` is a boolean"),
            (r#"emails[primary eq "true"]"#, "`emails.primary` is a boolean"),
            ("userName eq 5", "`userName` is a string"),
            ("emails.value eq 5", "`emails.value` is a string"),
            ("title eq true", "`title` is a string"),
            ("title eq null", "use `title pr` or `not (title pr)`"),
            ("meta.lastModified gt 5", "is a dateTime"),
            (r#"meta.lastModified gt "yesterday""#, "not an RFC 3339 date-time"),
            (r#"meta.lastModified co "2026""#, "`co` cannot be used with dateTime"),
            (r#"meta.location eq "https://x""#, "base URL"),
            (r#"meta eq "x""#, "complex attribute"),
            (r#"name eq "x""#, "`name` is a complex attribute"),
            (r#"name gt "x""#, "`name` is a complex attribute"),
            (r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager co "x""#, "complex attribute"),
            (r#"password eq "secret""#, "never returned"),
            (&secret_pr, "never returned"),
            (r#"department eq "x""#, "unknown attribute `department`"),
            (r#"x509Certificates.value gt "a""#, "`gt` cannot be used with binary"),
            (&level_co, "`co` cannot be used with numeric"),
            (&level_eq_text, "is a number"),
            (r#"groups.type gt 1"#, "is a string"),
        ];
        for (filter, expected) in cases {
            let e = filter_error(filter);
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{filter}");
            assert!(e.detail.contains(expected), "{filter}: `{}` lacks `{expected}`", e.detail);
        }
    }

    #[test]
    fn bad_sort_by_is_invalid_value() {
        for (sort_by, expected) in [
            ("nope", "unknown attribute `nope`"),
            ("name", "complex attribute"),
            ("meta", "complex attribute"),
            ("password", "never returned"),
            (r#"emails[type eq "work"]"#, "not an attribute path"),
            ("", "not an attribute path"),
            ("userName desc", "not an attribute path"),
            ("meta.location", "base URL"),
        ] {
            let e = sort_error(sort_by);
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{sort_by}");
            assert!(e.detail.contains(expected), "{sort_by}: `{}` lacks `{expected}`", e.detail);
        }
    }

    // ---- real databases ---------------------------------------------------

    /// Drops a PostgreSQL test database, whatever way the test ends.
    struct PgDrop {
        base: String,
        name: String,
    }

    impl Drop for PgDrop {
        fn drop(&mut self) {
            let (base, name) = (self.base.clone(), self.name.clone());
            // Drop runs inside the test's runtime, so the clean-up gets a thread and runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&base).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                    }
                });
            })
            .join();
        }
    }

    enum Db {
        Sqlite(SqlitePool, #[allow(dead_code)] tempfile::TempDir),
        Postgres(PgPool, #[allow(dead_code)] PgDrop),
    }

    /// A seed statement's argument.
    enum Arg {
        Value(SqlValue),
        Json(Value),
        Null,
    }

    macro_rules! bind_args {
        ($query:expr, $args:expr) => {{
            let mut q = $query;
            for arg in $args {
                q = match arg {
                    Arg::Value(SqlValue::Text(s)) => q.bind(s.clone()),
                    Arg::Value(SqlValue::Int(i)) => q.bind(*i),
                    Arg::Value(SqlValue::Float(f)) => q.bind(*f),
                    Arg::Value(SqlValue::Bool(b)) => q.bind(*b),
                    Arg::Value(SqlValue::Timestamp(t)) => q.bind(*t),
                    Arg::Json(v) => q.bind(sqlx::types::Json(v.clone())),
                    Arg::Null => q.bind(None::<String>),
                };
            }
            q
        }};
    }

    impl Db {
        async fn sqlite() -> Db {
            let dir = tempfile::tempdir().unwrap();
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join("filter.db"))
                .create_if_missing(true)
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
            sqlx::migrate!("./migrations/sqlite").run(&pool).await.unwrap();
            let db = Db::Sqlite(pool, dir);
            db.seed().await;
            db
        }

        /// A fresh database on the PostgreSQL server of `DATABASE_URL`, if it names one.
        async fn postgres() -> Option<Db> {
            let base = std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres"))?;
            let name = format!("roster_filter_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect to DATABASE_URL");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
            admin.close().await.unwrap();
            let guard = PgDrop { base: base.clone(), name: name.clone() };
            let mut url = url::Url::parse(&base).unwrap();
            url.set_path(&name);
            let pool = PgPoolOptions::new().max_connections(2).connect(url.as_str()).await.unwrap();
            sqlx::migrate!("./migrations/postgres").run(&pool).await.unwrap();
            let db = Db::Postgres(pool, guard);
            db.seed().await;
            Some(db)
        }

        /// SQLite always; PostgreSQL too when `DATABASE_URL` names it.
        async fn all() -> Vec<Db> {
            let mut dbs = vec![Db::sqlite().await];
            dbs.extend(Db::postgres().await);
            dbs
        }

        fn dialect(&self) -> Dialect {
            match self {
                Db::Sqlite(..) => Dialect::Sqlite,
                Db::Postgres(..) => Dialect::Postgres,
            }
        }

        async fn exec(&self, sql: &str, args: &[Arg]) {
            let done = match self {
                Db::Sqlite(pool, _) => bind_args!(sqlx::query(sql), args).execute(pool).await.map(|_| ()),
                Db::Postgres(pool, _) => bind_args!(sqlx::query(sql), args).execute(pool).await.map(|_| ()),
            };
            done.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }

        /// The ids of the organization's resources matching `filter`, in `order` then id order.
        async fn ids(
            &self,
            kind: ResourceKind,
            filter: Option<&SqlFragment>,
            order: Option<&SqlFragment>,
        ) -> Result<Vec<String>, sqlx::Error> {
            let table = match kind {
                User => "scim_users",
                Group => "scim_groups",
            };
            let filter_sql = filter.map(|f| format!(" AND ({})", f.sql)).unwrap_or_default();
            let order_sql = order.map(|o| format!("{}, r.id", o.sql)).unwrap_or_else(|| "r.id".to_string());
            let sql = format!("SELECT r.id FROM {table} r WHERE r.org_id = $1{filter_sql} ORDER BY {order_sql}");
            let args: Vec<Arg> = std::iter::once(Arg::Value(text(ORG)))
                .chain(filter.into_iter().chain(order).flat_map(|f| f.binds.iter().cloned().map(Arg::Value)))
                .collect();
            match self {
                Db::Sqlite(pool, _) => bind_args!(sqlx::query_scalar::<_, String>(&sql), &args).fetch_all(pool).await,
                Db::Postgres(pool, _) => bind_args!(sqlx::query_scalar::<_, String>(&sql), &args).fetch_all(pool).await,
            }
        }

        async fn seed(&self) {
            let t0 = at("2026-01-01T00:00:00Z");
            self.exec(
                "INSERT INTO organizations (id, name, plan, purchased_seats, seat_policy, created_at, updated_at) \
                 VALUES ($1, 'Acme', 'business', 100, 'block', $2, $2)",
                &[Arg::Value(text(ORG)), Arg::Value(SqlValue::Timestamp(t0))],
            )
            .await;
            for (n, u) in users().into_iter().enumerate() {
                let n = n as i64 + 1;
                let id = format!("u{n:02}");
                self.exec(
                    "INSERT INTO users (id, email, email_normalized, created_at) VALUES ($1, $2, $2, $3)",
                    &[
                        Arg::Value(text(&id)),
                        Arg::Value(text(&format!("{id}@roster.test"))),
                        Arg::Value(SqlValue::Timestamp(t0)),
                    ],
                )
                .await;
                self.exec(
                    "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at) \
                     VALUES ($1, $2, $3, 'read', 'active', 'scim', $4, $4)",
                    &[
                        Arg::Value(text(&format!("m{n:02}"))),
                        Arg::Value(text(ORG)),
                        Arg::Value(text(&id)),
                        Arg::Value(SqlValue::Timestamp(t0)),
                    ],
                )
                .await;
                let s = |key: &str| match u.resource.get(key).and_then(Value::as_str) {
                    Some(v) => Arg::Value(text(v)),
                    None => Arg::Null,
                };
                let lower = |key: &str| match u.resource.get(key).and_then(Value::as_str) {
                    Some(v) => Arg::Value(text(&v.to_lowercase())),
                    None => Arg::Null,
                };
                self.exec(
                    "INSERT INTO scim_users (id, org_id, member_id, user_name, user_name_lc, external_id, display_name, \
                     display_name_lc, active, resource, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    &[
                        Arg::Value(text(&id)),
                        Arg::Value(text(ORG)),
                        Arg::Value(text(&format!("m{n:02}"))),
                        s("userName"),
                        lower("userName"),
                        s("externalId"),
                        s("displayName"),
                        lower("displayName"),
                        Arg::Value(SqlValue::Bool(u.resource["active"].as_bool().unwrap_or(true))),
                        Arg::Json(u.resource.clone()),
                        Arg::Value(SqlValue::Int(n)),
                        Arg::Value(SqlValue::Timestamp(at(&format!("2026-01-{n:02}T00:00:00Z")))),
                        Arg::Value(SqlValue::Timestamp(at(u.updated))),
                    ],
                )
                .await;
                // What the store keeps for `emails.value`: each value, lower-cased, once.
                let mut emails: Vec<String> = u.resource["emails"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["value"].as_str())
                    .filter(|v| !v.is_empty())
                    .map(str::to_lowercase)
                    .collect();
                emails.sort();
                emails.dedup();
                for email in emails {
                    self.exec(
                        "INSERT INTO scim_user_emails (user_id, org_id, value_lc) VALUES ($1, $2, $3)",
                        &[Arg::Value(text(&id)), Arg::Value(text(ORG)), Arg::Value(text(&email))],
                    )
                    .await;
                }
            }
            for (id, name, external_id, members) in groups() {
                self.exec(
                    "INSERT INTO scim_groups (id, org_id, display_name, display_name_lc, external_id, resource, version, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
                    &[
                        Arg::Value(text(id)),
                        Arg::Value(text(ORG)),
                        Arg::Value(text(name)),
                        Arg::Value(text(&name.to_lowercase())),
                        external_id.map(|e| Arg::Value(text(e))).unwrap_or(Arg::Null),
                        Arg::Json(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name})),
                        Arg::Value(SqlValue::Timestamp(t0)),
                    ],
                )
                .await;
                for member in members {
                    self.exec(
                        "INSERT INTO scim_group_members (group_id, user_id, org_id) VALUES ($1, $2, $3)",
                        &[Arg::Value(text(id)), Arg::Value(text(member)), Arg::Value(text(ORG))],
                    )
                    .await;
                }
            }
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    struct SeedUser {
        updated: &'static str,
        resource: Value,
    }

    /// Twelve users, `u01`…`u12` in this order, created on 2026-01-01…12 with versions 1…12.
    fn users() -> Vec<SeedUser> {
        let core = "urn:ietf:params:scim:schemas:core:2.0:User";
        let u = |updated, resource| SeedUser { updated, resource };
        vec![
            u(
                "2026-01-10T08:00:00Z",
                json!({
                    "schemas": [core, ENT, TEST], "userName": "bjensen", "externalId": "EXT-1",
                    "displayName": "Barbara Jensen", "active": true,
                    "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen III"},
                    "title": "Tour Guide", "userType": "Employee",
                    "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true},
                               {"value": "babs@jensen.org", "type": "home"}],
                    "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
                    "addresses": [{"type": "work", "locality": "Hollywood", "country": "US", "primary": true}],
                    ENT: {"employeeNumber": "701984", "department": "Tour Operations",
                          "manager": {"value": "u03", "displayName": "Alice Wong"}},
                    TEST: {"level": 3, "score": 4.5, "vip": true, "hiredAt": "2020-03-01T09:00:00Z", "code": "AbC",
                           "tags": ["blue", "Green"]}
                }),
            ),
            u(
                "2026-02-01T00:00:00.5Z",
                json!({
                    "schemas": [core, ENT, TEST], "userName": "jsmith", "externalId": "ext-1",
                    "displayName": "John Smith", "active": false,
                    "name": {"givenName": "John", "familyName": "Smith"}, "title": "CEO",
                    "emails": [{"value": "John.Smith@Acme.com", "type": "work", "primary": true}],
                    ENT: {"department": "Executive", "manager": {"value": "U03"}},
                    TEST: {"level": 10, "score": 9.25, "vip": false, "hiredAt": "2019-06-01T00:00:00Z", "code": "abc",
                           "tags": ["red"]}
                }),
            ),
            u(
                "2026-02-15T12:00:00Z",
                json!({
                    "schemas": [core, ENT, TEST], "userName": "Alice.Wong", "displayName": "Alice Wong", "active": true,
                    "name": {"givenName": "Alice", "familyName": "Wong"}, "title": "Engineer",
                    "emails": [{"value": "alice@acme.com", "type": "home"},
                               {"value": "alice.w@acme.com", "type": "work", "primary": true}],
                    "addresses": [{"type": "home", "locality": "Oakland"}, {"type": "work", "locality": "San Francisco"}],
                    ENT: {"department": "Engineering"},
                    TEST: {"level": -2, "score": 0.5, "tags": []}
                }),
            ),
            u(
                "2026-01-05T00:00:00Z",
                json!({
                    "schemas": [core, TEST], "userName": "zoe", "active": true,
                    "name": {"familyName": "Zimmer"}, "title": "", "emails": [ ],
                    // Values of the wrong JSON type must not match, nor break a query.
                    TEST: {"vip": "yes", "level": "7", "tags": "green"}
                }),
            ),
            u(
                "2026-03-01T00:00:00Z",
                json!({
                    "schemas": [core], "userName": "émile", "displayName": "Émile Zola", "active": true,
                    "name": {"givenName": "Émile", "familyName": "Zola"}, "title": null,
                    "emails": [{"value": "Emile@Example.COM", "type": "Work"}]
                }),
            ),
            u(
                "2026-01-20T00:00:00Z",
                json!({
                    "schemas": [core, ENT], "userName": "o.malley", "displayName": "Pat O'Malley", "active": false,
                    "name": {"givenName": "Pat", "familyName": "O'Malley"}, "title": "Tour Guide Assistant",
                    "emails": [{"value": "pat@omalley.ie", "type": "home", "primary": true},
                               {"value": "pat@example.com", "type": "work"}],
                    "phoneNumbers": [{"value": "+353 1 555", "type": "mobile"}],
                    ENT: {"department": "tour operations"}
                }),
            ),
            u(
                "2026-01-07T00:00:00Z",
                json!({
                    "schemas": [core], "userName": "100%_done", "displayName": "Percent Underscore", "active": true,
                    "name": {"givenName": "Percy"},
                    "emails": [{"value": "percy@x.io"}, {"value": "p2@x.io", "primary": true}]
                }),
            ),
            u(
                "2026-01-08T00:00:00Z",
                json!({
                    "schemas": [core], "userName": "ZED", "displayName": "zed", "active": true,
                    "x509Certificates": [{"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAw"}]
                }),
            ),
            u(
                "2026-01-09T00:00:00Z",
                json!({
                    "schemas": [core, ENT], "userName": "kim", "displayName": "Kim Jensen", "active": true,
                    "name": {"givenName": "Kim", "familyName": "jensen"}, "title": "Tour Guide",
                    "emails": [{"value": "kim@example.com", "type": "work"}],
                    "addresses": [{"type": "work", "locality": "Hollywood"}],
                    ENT: {"department": "Tour Operations", "manager": {"value": "u01"}}
                }),
            ),
            u(
                "2026-01-10T00:00:00Z",
                json!({
                    "schemas": [core, TEST], "userName": "bob", "active": true,
                    "name": {"givenName": "Bob", "familyName": "Builder"},
                    "emails": [{"value": "bob@acme.com", "type": "work", "primary": false},
                               {"value": "bob@home.net", "type": "home", "primary": true}],
                    "ims": [{"value": "bobIM", "type": "aim"}],
                    TEST: {"level": 7, "tags": ["green"]}
                }),
            ),
            u(
                "2026-01-11T00:00:00Z",
                json!({
                    "schemas": [core], "userName": "carol", "displayName": "Carol", "active": true, "name": {},
                    "emails": [{"value": "carol@example.com", "type": "other"}]
                }),
            ),
            u(
                "2026-01-12T00:00:00Z",
                json!({
                    "schemas": [core], "userName": "dave", "displayName": "Dave", "active": true,
                    "name": {"givenName": "Dave", "familyName": null}, "phoneNumbers": []
                }),
            ),
        ]
    }

    /// (id, displayName, externalId, members)
    fn groups() -> Vec<(&'static str, &'static str, Option<&'static str>, Vec<&'static str>)> {
        vec![
            ("g1", "Engineering", Some("G-ENG"), vec!["u01", "u03"]),
            ("g2", "Sales", None, vec!["u02"]),
            ("g3", "eng-admins", None, vec!["u03", "u09"]),
            ("g4", "Empty", None, vec![]),
        ]
    }

    fn ids(ns: &[u8]) -> Vec<String> {
        ns.iter().map(|n| format!("u{n:02}")).collect()
    }

    const ALL: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn but(ns: &[u8]) -> Vec<u8> {
        ALL.iter().copied().filter(|n| !ns.contains(n)).collect()
    }

    /// Runs each filter, and its negation, and compares the ids it selects.
    async fn check(db: &Db, kind: ResourceKind, all: &[String], cases: &[(String, Vec<String>)]) {
        let mut failures = Vec::new();
        for (filter, expected) in cases {
            let parsed = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            let negated = Filter::Not(Box::new(parsed.clone()));
            let complement: Vec<String> = all.iter().filter(|id| !expected.contains(id)).cloned().collect();
            for (f, want) in [(&parsed, expected), (&negated, &complement)] {
                let frag = match to_sql_with(test_schemas(), f, kind, db.dialect(), 2) {
                    Ok(frag) => frag,
                    Err(e) => {
                        failures.push(format!("{f}: {e}"));
                        continue;
                    }
                };
                match db.ids(kind, Some(&frag), None).await {
                    Ok(got) if &got == want => {}
                    Ok(got) => {
                        failures.push(format!("{f}\n    want {want:?}\n    got  {got:?}\n    sql  {}", frag.sql))
                    }
                    Err(e) => failures.push(format!("{f}\n    error {e}\n    sql   {}", frag.sql)),
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} checks failed on {:?}:\n{}",
            failures.len(),
            cases.len() * 2,
            db.dialect(),
            failures.join("\n")
        );
    }

    fn user_cases() -> Vec<(String, Vec<String>)> {
        let cases: Vec<(String, Vec<u8>)> = vec![
            // userName: the lower-cased column.
            (r#"userName eq "bjensen""#.into(), vec![1]),
            (r#"USERNAME Eq "BJENSEN""#.into(), vec![1]),
            (r#"userName eq "ÉMILE""#.into(), vec![5]),
            (r#"userName ne "bjensen""#.into(), but(&[1])),
            (r#"userName co "A""#.into(), vec![3, 6, 11, 12]),
            (r#"userName sw "J""#.into(), vec![2]),
            (r#"userName ew "ONG""#.into(), vec![3]),
            (r#"userName co "%""#.into(), vec![7]),
            (r#"userName co "_""#.into(), vec![7]),
            (r#"userName sw "bjensen""#.into(), vec![1]),
            (r#"userName ew "bjensen""#.into(), vec![1]),
            (r#"userName ew "xbjensen""#.into(), vec![]),
            (r#"userName co """#.into(), ALL.to_vec()),
            (r#"userName gt "o""#.into(), vec![4, 5, 6, 8]),
            (r#"userName le "bob""#.into(), vec![1, 3, 7, 10]),
            (r#"userName ge "zed""#.into(), vec![4, 5, 8]),
            (r#"userName lt "alice.wong""#.into(), vec![7]),
            ("userName pr".into(), ALL.to_vec()),
            (r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#.into(), vec![2]),
            // displayName: nullable, lower-cased column.
            (r#"displayName eq "alice wong""#.into(), vec![3]),
            ("displayName pr".into(), but(&[4, 10])),
            (r#"displayName ne "Alice Wong""#.into(), but(&[3])),
            (r#"displayName co "JENSEN""#.into(), vec![1, 9]),
            // externalId and id: case-exact columns.
            (r#"externalId eq "EXT-1""#.into(), vec![1]),
            (r#"externalId eq "ext-1""#.into(), vec![2]),
            (r#"externalId co "XT""#.into(), vec![1]),
            (r#"externalId sw "e""#.into(), vec![2]),
            (r#"externalId ew "T-1""#.into(), vec![1]),
            (r#"externalId gt "Z""#.into(), vec![2]),
            (r#"externalId lt "Z""#.into(), vec![1]),
            (r#"externalId ge "ext-1""#.into(), vec![2]),
            (r#"externalId le "EXT-1""#.into(), vec![1]),
            ("externalId pr".into(), vec![1, 2]),
            (r#"externalId ne "EXT-1""#.into(), but(&[1])),
            (r#"id eq "u05""#.into(), vec![5]),
            (r#"id eq "U05""#.into(), vec![]),
            (r#"id sw "u1""#.into(), vec![10, 11, 12]),
            // active: a boolean column.
            ("active eq true".into(), but(&[2, 6])),
            ("active eq false".into(), vec![2, 6]),
            ("active ne true".into(), vec![2, 6]),
            ("active pr".into(), ALL.to_vec()),
            // Single-valued JSON strings, case-insensitive.
            (r#"title eq "tour guide""#.into(), vec![1, 9]),
            (r#"title co "GUIDE""#.into(), vec![1, 6, 9]),
            (r#"title sw "Tour""#.into(), vec![1, 6, 9]),
            (r#"title ew "ASSISTANT""#.into(), vec![6]),
            ("title pr".into(), vec![1, 2, 3, 6, 9]),
            (r#"title ne "CEO""#.into(), but(&[2])),
            (r#"title gt "d""#.into(), vec![1, 3, 6, 9]),
            (r#"title lt "d""#.into(), vec![2, 4]),
            (r#"title eq """#.into(), vec![4]),
            (r#"title ge "TOUR GUIDE""#.into(), vec![1, 6, 9]),
            (r#"title le "ceo""#.into(), vec![2, 4]),
            // Values are bound, never spliced into the SQL.
            (r#"userName eq "x' OR '1'='1""#.into(), vec![]),
            (r#"title co "'; DROP TABLE scim_users; --""#.into(), vec![]),
            (r#"name.familyName eq "o'malley\" OR 1=1 --""#.into(), vec![]),
            (r#"userType eq "employee""#.into(), vec![1]),
            // Sub-attributes.
            (r#"name.familyName eq "jensen""#.into(), vec![1, 9]),
            (r#"name.familyName eq "O'Malley""#.into(), vec![6]),
            (r#"name.familyName co "'""#.into(), vec![6]),
            (r#"name.givenName sw "É""#.into(), vec![5]),
            (r#"name.formatted co "III""#.into(), vec![1]),
            ("name pr".into(), but(&[8, 11])),
            ("name.familyName pr".into(), vec![1, 2, 3, 4, 5, 6, 9, 10]),
            ("not (name.familyName pr)".into(), vec![7, 8, 11, 12]),
            (r#"name[givenName eq "john" or familyName eq "wong"]"#.into(), vec![2, 3]),
            // emails.value: the emails table.
            (r#"emails.value eq "JOHN.SMITH@acme.com""#.into(), vec![2]),
            (r#"emails co "@acme.com""#.into(), vec![2, 3, 10]),
            (r#"emails.value ew "example.com""#.into(), vec![1, 5, 6, 9, 11]),
            ("emails.value pr".into(), but(&[4, 8, 12])),
            (r#"emails[value eq "ALICE@acme.com" or value eq "pat@example.com"]"#.into(), vec![3, 6]),
            (r#"emails.value ne "bjensen@example.com""#.into(), but(&[1])),
            // Other sub-attributes of emails: the JSON, any element.
            (r#"emails.type eq "work""#.into(), vec![1, 2, 3, 5, 6, 9, 10]),
            (r#"EMAILS[TYPE eq "WORK" and Primary eq true]"#.into(), vec![1, 2, 3]),
            (r#"emails[type eq "work" and value co "@acme.com"]"#.into(), vec![2, 3, 10]),
            (r#"emails[type eq "home" and value co "@acme.com"]"#.into(), vec![3]),
            // Entra's form: a value path, then a sub-attribute comparison.
            (r#"emails[type eq "work"].value co "@acme.com""#.into(), vec![2, 3, 10]),
            (r#"emails[type eq "home"].value co "@acme.com" or userName eq "nobody""#.into(), vec![3]),
            (r#"not (emails[type eq "work" or type eq "home"].value pr)"#.into(), but(&[1, 2, 3, 5, 6, 9, 10])),
            (r#"emails.type eq "home" and emails.value co "@acme.com""#.into(), vec![3, 10]),
            ("emails[primary eq true]".into(), vec![1, 2, 3, 6, 7, 10]),
            ("emails[not (primary eq true)]".into(), vec![1, 3, 5, 6, 7, 9, 10, 11]),
            ("emails[primary ne true]".into(), vec![1, 3, 5, 6, 7, 9, 10, 11]),
            ("emails pr".into(), but(&[4, 8, 12])),
            ("emails.type pr".into(), vec![1, 2, 3, 5, 6, 9, 10, 11]),
            (r#"emails.type ne "work""#.into(), vec![4, 7, 8, 11, 12]),
            (r#"emails[type ne "work"]"#.into(), vec![1, 3, 6, 7, 10, 11]),
            (r#"emails[type eq "work" and (value sw "b" or value sw "k")]"#.into(), vec![1, 9, 10]),
            (r#"emails[value ew ".io" and not (primary eq true)]"#.into(), vec![7]),
            (r#"phoneNumbers.type eq "mobile""#.into(), vec![6]),
            ("phoneNumbers pr".into(), vec![1, 6]),
            (r#"addresses[type eq "work" and locality eq "hollywood"]"#.into(), vec![1, 9]),
            (r#"addresses.locality sw "San""#.into(), vec![3]),
            (r#"ims[type eq "aim"]"#.into(), vec![10]),
            (r#"x509Certificates.value co "Aqyg""#.into(), vec![8]),
            (r#"x509Certificates.value co "AQYG""#.into(), vec![]),
            // The enterprise extension, by URN.
            (format!(r#"{ENT}:department eq "tour operations""#), vec![1, 6, 9]),
            (format!(r#"{ENT}:department co "OPER""#), vec![1, 6, 9]),
            (format!(r#"{ENT}:manager.value eq "u03""#), vec![1]),
            (format!(r#"{ENT}:manager.value eq "U03""#), vec![2]),
            (format!(r#"{ENT}:manager.value sw "u""#), vec![1, 9]),
            (format!("{ENT}:manager pr"), vec![1, 2, 9]),
            (format!("{ENT}:employeeNumber pr"), vec![1]),
            (format!(r#"{ENT}:manager[value eq "u01"]"#), vec![9]),
            // meta.
            (r#"meta.lastModified gt "2026-02-01T00:00:00Z""#.into(), vec![2, 3, 5]),
            (r#"meta.lastModified ge "2026-02-01T01:00:00+01:00""#.into(), vec![2, 3, 5]),
            (r#"meta.lastModified lt "2026-01-08T00:00:00Z""#.into(), vec![4, 7]),
            (r#"meta.lastModified le "2026-01-08T00:00:00Z""#.into(), vec![4, 7, 8]),
            (r#"meta.lastModified eq "2026-01-08T00:00:00Z""#.into(), vec![8]),
            (r#"meta.created eq "2026-01-03T00:00:00Z""#.into(), vec![3]),
            (r#"meta.created gt "2026-01-10T00:00:00Z""#.into(), vec![11, 12]),
            (r#"meta[created lt "2026-01-03T00:00:00Z"]"#.into(), vec![1, 2]),
            (r#"meta.resourceType eq "User""#.into(), ALL.to_vec()),
            (r#"meta.resourceType eq "Group""#.into(), vec![]),
            (r#"meta.version eq "W/\"3\"""#.into(), vec![3]),
            ("meta.lastModified pr".into(), ALL.to_vec()),
            ("meta pr".into(), ALL.to_vec()),
            // schemas.
            (format!(r#"schemas eq "{ENT}""#), vec![1, 2, 3, 6, 9]),
            // and / or / not.
            (r#"title pr and (userName sw "b" or userName sw "k")"#.into(), vec![1, 9]),
            ("not (title pr) and not (emails pr)".into(), vec![4, 8, 12]),
            (r#"userName eq "bjensen" or userName eq "jsmith" or id eq "u10""#.into(), vec![1, 2, 10]),
            (r#"not (not (userName eq "kim"))"#.into(), vec![9]),
            (r#"(active eq false or title eq "engineer") and not (emails.type eq "home")"#.into(), vec![2]),
            (
                r#"not (meta.lastModified gt "2026-02-01T00:00:00Z" or name.familyName eq "jensen")"#.into(),
                vec![4, 6, 7, 8, 10, 11, 12],
            ),
            (r#"title eq "ceo" or active eq false and displayName co "o""#.into(), vec![2, 6]),
            // The test extension: numbers, booleans, dateTimes, case-exact and multi-valued strings.
            (format!("{TEST}:level gt 2"), vec![1, 2, 10]),
            (format!("{TEST}:level eq 10"), vec![2]),
            (format!("{TEST}:level le 3"), vec![1, 3]),
            (format!("{TEST}:level ge -2.5"), vec![1, 2, 3, 10]),
            (format!("{TEST}:level ne 7"), but(&[10])),
            (format!("{TEST}:score ge 4.5"), vec![1, 2]),
            (format!("{TEST}:score lt 1"), vec![3]),
            (format!("{TEST}:score eq 9.25"), vec![2]),
            (format!("{TEST}:vip eq true"), vec![1]),
            (format!("{TEST}:vip eq false"), vec![2]),
            (format!("{TEST}:vip ne true"), but(&[1])),
            (format!("{TEST}:vip pr"), vec![1, 2, 4]),
            (format!(r#"{TEST}:hiredAt gt "2020-01-01T00:00:00Z""#), vec![1]),
            (format!(r#"{TEST}:hiredAt le "2020-01-01T00:00:00Z""#), vec![2]),
            (format!(r#"{TEST}:code eq "abc""#), vec![2]),
            (format!(r#"{TEST}:code eq "AbC""#), vec![1]),
            (format!(r#"{TEST}:code co "C""#), vec![1]),
            (format!(r#"{TEST}:code co "b""#), vec![1, 2]),
            (format!(r#"{TEST}:code co "B""#), vec![]),
            (format!(r#"{TEST}:code sw "a""#), vec![2]),
            (format!(r#"{TEST}:code sw "A""#), vec![1]),
            (format!(r#"{TEST}:code ew "C""#), vec![1]),
            (format!(r#"{TEST}:code gt "B""#), vec![2]),
            (format!(r#"{TEST}:code ge "a""#), vec![2]),
            (format!(r#"{TEST}:code lt "a""#), vec![1]),
            (format!(r#"{TEST}:code le "AbC""#), vec![1]),
            (format!(r#"{TEST}:tags eq "green""#), vec![1, 10]),
            (format!("{TEST}:tags pr"), vec![1, 2, 4, 10]),
            (format!(r#"{TEST}:tags ne "red""#), but(&[2])),
            (format!(r#"{TEST}:level gt 5 and {TEST}:tags co "EE""#), vec![10]),
            // groups: the membership table.
            (r#"groups.value eq "g3""#.into(), vec![3, 9]),
            (r#"groups[value eq "g1"]"#.into(), vec![1, 3]),
            (r#"groups eq "G2""#.into(), vec![2]),
            (r#"groups.display eq "SALES""#.into(), vec![2]),
            (r#"groups[display sw "eng" and not (value eq "g1")]"#.into(), vec![3, 9]),
            ("groups pr".into(), vec![1, 2, 3, 9]),
            (r#"groups.type eq "direct""#.into(), vec![1, 2, 3, 9]),
            (r#"groups.value ne "g1""#.into(), but(&[1, 3])),
        ];
        cases.into_iter().map(|(f, ns)| (f, ids(&ns))).collect()
    }

    #[test]
    fn a_sub_attribute_comparison_after_a_value_path_folds_into_it() {
        let folds = [
            (r#"emails[type eq "work"].value eq "a@x.com""#, r#"emails[(type eq "work") and value eq "a@x.com"]"#),
            (
                r#"emails[type eq "work" or type eq "home"].VALUE Co "]." and active eq true"#,
                r#"emails[(type eq "work" or type eq "home") and VALUE Co "]."] and active eq true"#,
            ),
            (r#"(emails[value sw "x"].type pr)"#, r#"(emails[(value sw "x") and type pr])"#),
            (r#"emails[type eq "wo\"rk]."].display eq 7"#, r#"emails[(type eq "wo\"rk].") and display eq 7]"#),
        ];
        for (raw, folded) in folds {
            assert_eq!(fold_value_path_comparisons(raw), folded, "{raw}");
        }
        // Anything else is left for the parser to judge.
        for raw in [
            r#"userName eq "a].b eq c""#,
            r#"emails[type eq "work"].value"#,
            r#"emails[type eq "w"].value zz 1"#,
            "x].",
        ] {
            assert_eq!(fold_value_path_comparisons(raw), raw);
        }
        let e = parse(r#"emails[type eq "work"].value"#).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidFilter));
    }

    fn group_cases() -> Vec<(String, Vec<String>)> {
        let cases: Vec<(&str, &[&str])> = vec![
            (r#"displayName eq "engineering""#, &["g1"]),
            (r#"displayName sw "ENG""#, &["g1", "g3"]),
            ("displayName pr", &["g1", "g2", "g3", "g4"]),
            (r#"externalId eq "G-ENG""#, &["g1"]),
            (r#"externalId eq "g-eng""#, &[]),
            (r#"members.value eq "u01""#, &["g1"]),
            (r#"members[value eq "u03"]"#, &["g1", "g3"]),
            (r#"members eq "U09""#, &["g3"]),
            ("members pr", &["g1", "g2", "g3"]),
            ("not (members pr)", &["g4"]),
            (r#"members.type eq "User""#, &["g1", "g2", "g3"]),
            (r#"members.value ne "u01""#, &["g2", "g3", "g4"]),
            (r#"members[not (value eq "u01")]"#, &["g1", "g2", "g3"]),
            (r#"members.display co "WONG""#, &["g1", "g3"]),
            (r#"members[value eq "u09" or display eq "john smith"]"#, &["g2", "g3"]),
            ("members.display pr", &["g1", "g2", "g3"]),
            (r#"meta.resourceType eq "Group""#, &["g1", "g2", "g3", "g4"]),
            (r#"id eq "g2" or displayName ew "admins""#, &["g2", "g3"]),
        ];
        cases.into_iter().map(|(f, ids)| (f.to_string(), ids.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[tokio::test]
    async fn user_filters_select_the_right_users() {
        for db in Db::all().await {
            check(&db, User, &ids(ALL), &user_cases()).await;
        }
    }

    #[tokio::test]
    async fn group_filters_select_the_right_groups() {
        let all: Vec<String> = groups().iter().map(|g| g.0.to_string()).collect();
        for db in Db::all().await {
            check(&db, Group, &all, &group_cases()).await;
        }
    }

    #[tokio::test]
    async fn sorting() {
        let manager = format!("{ENT}:manager.value");
        let level = format!("{TEST}:level");
        let cases: Vec<(ResourceKind, &str, bool, Vec<&str>)> = vec![
            (
                User,
                "userName",
                false,
                vec!["u07", "u03", "u01", "u10", "u11", "u12", "u02", "u09", "u06", "u08", "u04", "u05"],
            ),
            (
                User,
                "USERNAME",
                true,
                vec!["u05", "u04", "u08", "u06", "u09", "u02", "u12", "u11", "u10", "u01", "u03", "u07"],
            ),
            (
                User,
                "name.familyName",
                false,
                vec!["u10", "u01", "u09", "u06", "u02", "u03", "u04", "u05", "u07", "u08", "u11", "u12"],
            ),
            (
                User,
                "name.familyName",
                true,
                vec!["u07", "u08", "u11", "u12", "u05", "u04", "u03", "u02", "u06", "u01", "u09", "u10"],
            ),
            (
                User,
                "emails",
                false,
                vec!["u03", "u01", "u10", "u11", "u05", "u02", "u09", "u07", "u06", "u04", "u08", "u12"],
            ),
            (
                User,
                "emails.value",
                true,
                vec!["u04", "u08", "u12", "u06", "u07", "u09", "u02", "u05", "u11", "u10", "u01", "u03"],
            ),
            (
                User,
                "emails.type",
                false,
                vec!["u06", "u10", "u11", "u01", "u02", "u03", "u05", "u09", "u04", "u07", "u08", "u12"],
            ),
            (
                User,
                "title",
                false,
                vec!["u04", "u02", "u03", "u01", "u09", "u06", "u05", "u07", "u08", "u10", "u11", "u12"],
            ),
            (
                User,
                "meta.lastModified",
                true,
                vec!["u05", "u03", "u02", "u06", "u12", "u11", "u01", "u10", "u09", "u08", "u07", "u04"],
            ),
            (
                User,
                "externalId",
                false,
                vec!["u01", "u02", "u03", "u04", "u05", "u06", "u07", "u08", "u09", "u10", "u11", "u12"],
            ),
            (
                User,
                "active",
                false,
                vec!["u02", "u06", "u01", "u03", "u04", "u05", "u07", "u08", "u09", "u10", "u11", "u12"],
            ),
            (
                User,
                &manager,
                false,
                // Case-exact: "U03" < "u01" < "u03".
                vec!["u02", "u09", "u01", "u03", "u04", "u05", "u06", "u07", "u08", "u10", "u11", "u12"],
            ),
            (
                User,
                &level,
                false,
                vec!["u03", "u01", "u10", "u02", "u04", "u05", "u06", "u07", "u08", "u09", "u11", "u12"],
            ),
            (
                User,
                "groups.display",
                false,
                vec!["u03", "u09", "u01", "u02", "u04", "u05", "u06", "u07", "u08", "u10", "u11", "u12"],
            ),
            (Group, "displayName", false, vec!["g4", "g3", "g1", "g2"]),
            (Group, "displayName", true, vec!["g2", "g1", "g3", "g4"]),
            (Group, "members.value", false, vec!["g1", "g2", "g3", "g4"]),
            (Group, "meta.resourceType", false, vec!["g1", "g2", "g3", "g4"]),
        ];
        for db in Db::all().await {
            for (kind, sort_by, descending, want) in &cases {
                // The order comes after a filter, so its placeholders follow the filter's.
                let filter = translate(r#"meta.resourceType pr and id ne "x""#, *kind, db.dialect(), 2);
                let order =
                    order_by_with(test_schemas(), sort_by, *descending, *kind, db.dialect(), 2 + filter.binds.len())
                        .unwrap_or_else(|e| panic!("{sort_by}: {e}"));
                let got = db
                    .ids(*kind, Some(&filter), Some(&order))
                    .await
                    .unwrap_or_else(|e| panic!("{sort_by}: {e}\n{}", order.sql));
                assert_eq!(&got, want, "{sort_by} desc={descending} on {:?}: {}", db.dialect(), order.sql);
            }
        }
    }
}
