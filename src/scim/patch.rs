//! SCIM PATCH (RFC 7644 §3.5.2): parses a `PatchOp` request body the way real
//! identity providers send it (Okta, Microsoft Entra ID) and applies its
//! operations, in memory and all or nothing, to a stored resource (canonical
//! attribute names, extensions under their URN, no `id` and no `meta`).
//!
//! Group membership is not part of the stored JSON: operations on a Group's
//! `members` are reported in [`MemberChanges`] for the service to apply.
//!
//! Where the RFC leaves room, this module decides as follows:
//!
//! - `replace` of a single-valued complex attribute merges the given
//!   sub-attributes into the existing value (§3.5.2.3: "Sub-attributes that
//!   are not specified in the "value" parameter are left unchanged").
//! - `replace` of `attr[filter]` replaces each matching element with the given
//!   object; `add` of `attr[filter]` merges the object into each match.
//! - `add`/`replace` of `attr[filter]` or `attr[filter].sub` matching nothing
//!   creates a new element when the filter is a conjunction of `eq`
//!   comparisons (`type eq "work"`, `type eq "work" and primary eq true`): the
//!   element gets those sub-attributes plus the value. Entra sends
//!   `emails[type eq "work"].value` for users that have no work email yet.
//!   Other filters matching nothing answer `noTarget`.
//! - `remove` of `attr[filter]` matching nothing is not an error.
//! - `remove` of a multi-valued attribute *with* a `value` removes only the
//!   listed elements (Entra removes group members this way), not all of them.
//! - A `null` value: `replace` removes the target, `add` does nothing.
//! - In a path-less value object, the keys `id` and `schemas` are ignored:
//!   Okta renames a group with `{"op":"replace","value":{"id":…,"displayName":…}}`.
//!   An explicit `path` naming `id` answers `mutability`.
//! - Read-only sub-attributes inside a given value (`manager.displayName`) are
//!   dropped; a path naming a read-only attribute answers `mutability`.
//! - Immutable sub-attributes of multi-valued attributes are not checked (the
//!   standard schemas have them only on Group `members`, handled apart).
//! - `members[filter]` is resolved only for `value eq "…"` filters (or several
//!   joined by `or`) into [`MemberChanges::remove`]; other member filters
//!   answer `invalidFilter`, since the member rows do not hold the JSON a
//!   filter would be evaluated against.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use axum::http::StatusCode;
use chrono::DateTime;
use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, PatchPath, ValFilter};
use serde_json::{Map, Value};

use super::error::ScimError;
use super::schema::{
    parse_attr_path, registry, resource_limits, values_within, AttrType, Attribute, Mutability, Registry, ResolvedAttr,
    ResourceKind,
};

/// The URN a PATCH body's `schemas` must contain (RFC 7644 §3.5.2).
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A PATCH request body (RFC 7644 §3.5.2), parsed leniently as real providers send it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    pub operations: Vec<PatchOperation>,
}

/// One entry of `Operations`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOp,
    /// The parsed `path`; `None` when the operation targets the resource itself.
    pub path: Option<PatchPath>,
    /// The `path` as sent, for messages and logs.
    pub raw_path: Option<String>,
    /// The `value` as sent; `Some(Value::Null)` when it was an explicit `null`.
    pub value: Option<Value>,
}

/// The three PATCH operations (RFC 7644 §3.5.2.1–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp {
    Add,
    Replace,
    Remove,
}

impl PatchOp {
    /// The operation named `name`, whatever its case (Entra sends `Replace`).
    fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        [PatchOp::Add, PatchOp::Replace, PatchOp::Remove].into_iter().find(|op| op.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchOp::Add => "add",
            PatchOp::Replace => "replace",
            PatchOp::Remove => "remove",
        }
    }
}

impl std::fmt::Display for PatchOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PatchRequest {
    /// Parses a PATCH body. `schemas` must contain the PatchOp URN (any case)
    /// and `Operations` (or `operations`) must be an array, possibly empty
    /// (Okta sends empty ones). Each operation's `op` is case-insensitive;
    /// a `path` that does not parse answers `invalidPath`, a `remove` without
    /// a path `noTarget`, an `add`/`replace` without a value `invalidValue`.
    pub fn parse(body: &Value) -> Result<Self, ScimError> {
        let Some(body) = body.as_object() else {
            return Err(ScimError::invalid_syntax("the PATCH body must be a JSON object"));
        };
        let is_patch = match get_ci(body, "schemas") {
            Some(Value::Array(urns)) => {
                urns.iter().any(|urn| urn.as_str().is_some_and(|urn| urn.trim().eq_ignore_ascii_case(PATCH_OP_SCHEMA)))
            }
            _ => false,
        };
        if !is_patch {
            return Err(ScimError::invalid_syntax(format!("schemas must contain \"{PATCH_OP_SCHEMA}\"")));
        }
        let operations = match get_ci(body, "Operations") {
            Some(Value::Array(operations)) => operations,
            Some(_) => return Err(ScimError::invalid_syntax("Operations must be an array")),
            None => return Err(ScimError::invalid_syntax("the PATCH body has no Operations")),
        };
        let operations = operations
            .iter()
            .enumerate()
            .map(|(i, op)| PatchOperation::parse(op).map_err(|e| at_operation(e, i)))
            .collect::<Result<_, _>>()?;
        Ok(Self { operations })
    }
}

impl PatchOperation {
    fn parse(operation: &Value) -> Result<Self, ScimError> {
        let Some(operation) = operation.as_object() else {
            return Err(ScimError::invalid_syntax("an operation must be a JSON object"));
        };
        let op = match get_ci(operation, "op") {
            Some(Value::String(name)) => PatchOp::from_name(name).ok_or_else(|| {
                ScimError::invalid_syntax(format!("unknown op {name:?}; expected add, replace or remove"))
            })?,
            Some(_) => return Err(ScimError::invalid_syntax("op must be a string")),
            None => return Err(ScimError::invalid_syntax("the operation has no op")),
        };
        // A null or blank path is the same as none: some clients always send the member.
        let raw_path = match get_ci(operation, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(path)) if path.trim().is_empty() => None,
            Some(Value::String(path)) => Some(path.clone()),
            Some(_) => return Err(ScimError::invalid_path("path must be a string")),
        };
        let path = raw_path.as_deref().map(parse_path).transpose()?;
        let value = get_ci(operation, "value").cloned();
        match op {
            // RFC 7644 §3.5.2.2: "If "path" is unspecified, the operation fails
            // with HTTP status code 400 and a "scimType" error code of "noTarget"."
            PatchOp::Remove if path.is_none() => Err(ScimError::no_target("remove needs a path")),
            // RFC 7644 §3.5.2.1/3: the operation MUST contain a "value" member.
            PatchOp::Add | PatchOp::Replace if value.is_none() => {
                Err(ScimError::invalid_value(format!("{op} needs a value")))
            }
            _ => Ok(Self { op, path, raw_path, value }),
        }
    }
}

/// What a PATCH did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchOutcome {
    /// Whether the stored JSON differs from what it was (membership aside):
    /// when false the server need not bump the version.
    pub changed: bool,
    pub members: MemberChanges,
}

/// Group membership is stored outside the JSON; PATCH reports it instead of
/// writing `members` into the resource.
///
/// The operations fold, in order, into one change: when `replace_all` is
/// `Some`, the group's members become exactly that list and `add` and
/// `remove` are empty; otherwise the members become
/// `(current − remove) ∪ add`, and no id is in both lists. Ids are the
/// members' `value`s as sent, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChanges {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub replace_all: Option<Vec<String>>,
}

impl MemberChanges {
    /// Whether the request touched membership at all.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.replace_all.is_none()
    }
}

/// [`MemberChanges`] as the operations build it: each id named so far,
/// whether it ends added or removed, and when that last changed (the order
/// the lists keep). Each operation costs what it names, however many came
/// before it.
#[derive(Debug, Default)]
struct MemberFold {
    /// A `replace` (or a `remove` of all members) came: the members become
    /// exactly the ids left added.
    replace_all: bool,
    ids: HashMap<String, (bool, u64)>,
    next: u64,
}

impl MemberFold {
    fn add(&mut self, ids: Vec<String>) -> Result<(), ScimError> {
        ids.into_iter().try_for_each(|id| self.set(id, true))
    }

    fn remove(&mut self, ids: Vec<String>) -> Result<(), ScimError> {
        ids.into_iter().try_for_each(|id| self.set(id, false))
    }

    fn replace(&mut self, ids: Vec<String>) -> Result<(), ScimError> {
        self.ids.clear();
        self.replace_all = true;
        self.add(ids)
    }

    /// An id already in the state asked keeps its place; one that changes
    /// state moves to the end.
    fn set(&mut self, id: String, added: bool) -> Result<(), ScimError> {
        let next = self.next;
        match self.ids.entry(id) {
            Entry::Occupied(e) if e.get().0 == added => return Ok(()),
            Entry::Occupied(mut e) => {
                e.insert((added, next));
            }
            Entry::Vacant(e) => {
                e.insert((added, next));
            }
        }
        self.next += 1;
        match self.ids.len() > resource_limits::MAX_MEMBERS {
            true => Err(too_many_members()),
            false => Ok(()),
        }
    }

    fn finish(self) -> MemberChanges {
        let mut named: Vec<(u64, bool, String)> =
            self.ids.into_iter().map(|(id, (added, at))| (at, added, id)).collect();
        named.sort_unstable_by_key(|(at, _, _)| *at);
        let (added, removed): (Vec<_>, Vec<_>) = named.into_iter().partition(|(_, added, _)| *added);
        let ids = |list: Vec<(u64, bool, String)>| list.into_iter().map(|(_, _, id)| id).collect::<Vec<_>>();
        match self.replace_all {
            true => MemberChanges { add: Vec::new(), remove: Vec::new(), replace_all: Some(ids(added)) },
            false => MemberChanges { add: ids(added), remove: ids(removed), replace_all: None },
        }
    }
}

fn too_many_members() -> ScimError {
    ScimError::invalid_value(format!(
        "a request may name at most {} members; send the rest in another request",
        resource_limits::MAX_MEMBERS
    ))
}

/// Applies the operations, in order, to `resource` (a stored representation of
/// `kind`). All or nothing: on error `resource` is left unchanged.
///
/// Group `members` are never written into `resource`: they come back in
/// [`PatchOutcome::members`]. The result is not re-validated as a whole
/// beyond what the operations touched (types, mutability, `required`).
pub fn apply(kind: ResourceKind, resource: &mut Value, request: &PatchRequest) -> Result<PatchOutcome, ScimError> {
    apply_with(registry(), kind, resource, request)
}

/// What PATCH needs to know about the schemas: the [`Registry`], or in tests
/// a registry with an extra extension.
trait AttrLookup {
    /// The attribute `path` names for `kind`, resolved case-insensitively.
    fn resolve(&self, kind: ResourceKind, path: &AttrPath) -> Option<ResolvedAttr<'_>>;
    /// The canonical URN of the schema of `kind` that `urn` names (any case).
    fn schema_urn(&self, kind: ResourceKind, urn: &str) -> Option<&str>;
}

impl AttrLookup for Registry {
    fn resolve(&self, kind: ResourceKind, path: &AttrPath) -> Option<ResolvedAttr<'_>> {
        Registry::resolve(self, kind, path)
    }

    fn schema_urn(&self, kind: ResourceKind, urn: &str) -> Option<&str> {
        let core = self.core(kind);
        if core.id.eq_ignore_ascii_case(urn) {
            return Some(&core.id);
        }
        self.extension(kind, urn).map(|ext| ext.id.as_str())
    }
}

fn apply_with<L: AttrLookup + ?Sized>(
    lookup: &L,
    kind: ResourceKind,
    resource: &mut Value,
    request: &PatchRequest,
) -> Result<PatchOutcome, ScimError> {
    let Value::Object(original) = &*resource else {
        return Err(ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the stored resource is not a JSON object",
        ));
    };
    let mut doc = original.clone();
    let mut patcher = Patcher { lookup, kind, members: MemberFold::default(), touched: Vec::new() };
    for (i, operation) in request.operations.iter().enumerate() {
        patcher.operation(&mut doc, operation).map_err(|e| at_operation(e, i))?;
    }
    patcher.finish(original, &mut doc)?;
    let changed = doc != *original;
    if changed {
        *resource = Value::Object(doc);
    }
    Ok(PatchOutcome { changed, members: patcher.members.finish() })
}

/// Applies operations to one working copy of a resource.
struct Patcher<'l, L: ?Sized> {
    lookup: &'l L,
    kind: ResourceKind,
    members: MemberFold,
    /// Attributes written or removed, tidied and checked at the end.
    touched: Vec<Touched<'l>>,
}

#[derive(Clone, Copy)]
struct Touched<'l> {
    ext: Option<&'l str>,
    attr: &'l Attribute,
}

/// Where an operation lands: an attribute, optionally a filter over its
/// values, optionally one of its sub-attributes.
struct Target<'l, 'p> {
    /// The extension URN the attribute is stored under; `None` for core ones.
    ext: Option<&'l str>,
    attr: &'l Attribute,
    filter: Option<&'p ValFilter>,
    sub: Option<&'l Attribute>,
}

impl<'l, L: AttrLookup + ?Sized> Patcher<'l, L> {
    fn operation(&mut self, doc: &mut Map<String, Value>, operation: &PatchOperation) -> Result<(), ScimError> {
        let op = operation.op;
        let Some(path) = &operation.path else {
            if op == PatchOp::Remove {
                return Err(ScimError::no_target("remove needs a path"));
            }
            // RFC 7644 §3.5.2.1/3: without a path, the value holds the
            // attributes to add or replace. Each key is read as a path, which
            // also covers Entra's `"name.givenName"` and
            // `"emails[type eq \"work\"].value"` keys.
            let Some(Value::Object(attrs)) = &operation.value else {
                return Err(ScimError::invalid_value(format!("{op} without a path needs an object of attributes")));
            };
            for (key, value) in attrs {
                self.pathless(doc, op, key, value)?;
            }
            return Ok(());
        };
        self.at_path(doc, op, path, operation.value.as_ref())
    }

    /// One key of a path-less value object.
    fn pathless(
        &mut self,
        doc: &mut Map<String, Value>,
        op: PatchOp,
        key: &str,
        value: &Value,
    ) -> Result<(), ScimError> {
        let key = key.trim();
        if key.eq_ignore_ascii_case("id") || key.eq_ignore_ascii_case("schemas") {
            return Ok(());
        }
        if let Some(urn) = self.lookup.schema_urn(self.kind, key) {
            return self.whole_schema(doc, op, urn, Some(value));
        }
        let path = parse_path(key)?;
        self.at_path(doc, op, &path, Some(value))
    }

    fn at_path(
        &mut self,
        doc: &mut Map<String, Value>,
        op: PatchOp,
        path: &PatchPath,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let target = match self.resolve(path) {
            Ok(target) => target,
            Err(e) => {
                // A path naming a whole schema (`urn:…:enterprise:2.0:User`)
                // parses as attribute `User` of schema `urn:…:2.0`.
                if let PatchPath::Attr(AttrPath { uri: Some(uri), name, sub_attr: None }) = path {
                    if let Some(urn) = self.lookup.schema_urn(self.kind, &format!("{uri}:{name}")) {
                        return self.whole_schema(doc, op, urn, value);
                    }
                }
                return Err(e);
            }
        };
        if target.attr.mutability == Mutability::ReadOnly
            || target.sub.is_some_and(|sub| sub.mutability == Mutability::ReadOnly)
        {
            return Err(ScimError::mutability(format!("{path} is read-only")));
        }
        if self.kind == ResourceKind::Group && target.ext.is_none() && target.attr.name.eq_ignore_ascii_case("members")
        {
            return self.members_op(op, &target, value);
        }
        if !self.touched.iter().any(|t| std::ptr::eq(t.attr, target.attr) && t.ext == target.ext) {
            self.touched.push(Touched { ext: target.ext, attr: target.attr });
        }
        match (op, value) {
            (PatchOp::Add | PatchOp::Replace, None) => Err(ScimError::invalid_value(format!("{op} needs a value"))),
            (PatchOp::Add, Some(Value::Null)) => Ok(()),
            (PatchOp::Add, Some(value)) => add(doc, &target, value),
            (PatchOp::Replace, Some(Value::Null)) => remove(doc, &target, None),
            (PatchOp::Replace, Some(value)) => replace(doc, &target, value),
            (PatchOp::Remove, value) => remove(doc, &target, value.filter(|v| !v.is_null())),
        }
    }

    /// An operation whose path (or path-less key) names a whole schema.
    fn whole_schema(
        &mut self,
        doc: &mut Map<String, Value>,
        op: PatchOp,
        urn: &str,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let value = value.filter(|v| !v.is_null());
        match (op, value) {
            (PatchOp::Add | PatchOp::Replace, Some(Value::Object(attrs))) => {
                for (name, value) in attrs {
                    // Clients that model an extension as a resource of its own
                    // repeat its `schemas` inside it; like a top-level
                    // `schemas`, it names no attribute to change.
                    if name.trim().eq_ignore_ascii_case("schemas") {
                        continue;
                    }
                    let path = parse_path(&format!("{urn}:{}", name.trim()))?;
                    self.at_path(doc, op, &path, Some(value))?;
                }
                Ok(())
            }
            (PatchOp::Add | PatchOp::Replace, Some(_)) => {
                Err(ScimError::invalid_value(format!("the value of {urn} must be an object of its attributes")))
            }
            (PatchOp::Add, None) => Ok(()),
            (PatchOp::Replace | PatchOp::Remove, _) => {
                if urn.eq_ignore_ascii_case(self.kind.core_urn()) {
                    return Err(ScimError::invalid_path(format!("the core schema {urn} cannot be removed")));
                }
                let names: Vec<String> = doc
                    .get(urn)
                    .and_then(Value::as_object)
                    .map(|ext| ext.keys().cloned().collect())
                    .unwrap_or_default();
                for name in names {
                    let path = parse_path(&format!("{urn}:{name}"))?;
                    self.at_path(doc, PatchOp::Remove, &path, None)?;
                }
                Ok(())
            }
        }
    }

    fn resolve<'p>(&self, path: &'p PatchPath) -> Result<Target<'l, 'p>, ScimError> {
        let lookup: &'l L = self.lookup;
        let unknown = || ScimError::invalid_path(format!("{path} names no attribute of a {:?}", self.kind));
        match path {
            PatchPath::Attr(attr_path) => {
                let resolved = lookup.resolve(self.kind, attr_path).ok_or_else(unknown)?;
                Ok(Target { ext: extension_of(&resolved), attr: resolved.attr, filter: None, sub: resolved.sub })
            }
            PatchPath::Value(value_path) => {
                let resolved = lookup.resolve(self.kind, &value_path.attr).ok_or_else(unknown)?;
                if resolved.sub.is_some() {
                    return Err(ScimError::invalid_path(format!("{path}: a [filter] follows an attribute name")));
                }
                let attr = resolved.attr;
                if !attr.multi_valued || attr.kind != AttrType::Complex {
                    return Err(ScimError::invalid_path(format!(
                        "{path}: a [filter] needs a multi-valued complex attribute"
                    )));
                }
                check_filter(&value_path.filter, attr)?;
                let sub = match &value_path.sub_attr {
                    Some(name) => Some(find_sub(attr, name).ok_or_else(|| {
                        ScimError::invalid_path(format!("{path}: {} has no sub-attribute {name}", attr.name))
                    })?),
                    None => None,
                };
                Ok(Target { ext: extension_of(&resolved), attr, filter: Some(&value_path.filter), sub })
            }
        }
    }

    /// Group `members`: reported in [`MemberChanges`], never written.
    fn members_op(&mut self, op: PatchOp, target: &Target<'_, '_>, value: Option<&Value>) -> Result<(), ScimError> {
        let value = value.filter(|v| !v.is_null());
        match (op, target.filter, target.sub) {
            (PatchOp::Add, None, None) => {
                if let Some(value) = value {
                    self.members.add(member_ids(value)?)?;
                }
            }
            (PatchOp::Replace, None, None) => {
                self.members.replace(value.map(member_ids).transpose()?.unwrap_or_default())?
            }
            // Entra removes members with `"path":"members","value":[{"value":id}]`:
            // only those go. Without a value, all members go (RFC 7644 §3.5.2.2).
            (PatchOp::Remove, None, None) => match value {
                Some(value) => self.members.remove(member_ids(value)?)?,
                None => self.members.replace(Vec::new())?,
            },
            (PatchOp::Remove, Some(filter), None) => {
                let ids = member_ids_in_filter(filter).ok_or_else(|| {
                    ScimError::invalid_filter(format!(
                        "members[{filter}]: only members[value eq \"…\"] filters are supported"
                    ))
                })?;
                self.members.remove(ids)?;
            }
            _ => {
                return Err(ScimError::invalid_path(
                    "members are added, replaced or removed whole, or removed with members[value eq \"…\"]",
                ))
            }
        }
        Ok(())
    }

    /// Tidies what the operations touched, keeps `schemas` in step with the
    /// extensions present, and enforces `required` and `immutable`.
    fn finish(&self, original: &Map<String, Value>, doc: &mut Map<String, Value>) -> Result<(), ScimError> {
        for touched in &self.touched {
            if let Some(container) = container_opt(doc, touched.ext) {
                if let Some(value) = container.get_mut(&touched.attr.name) {
                    prune(value);
                    if is_unassigned(value) {
                        container.remove(&touched.attr.name);
                    }
                }
            }
        }
        let mut extensions: Vec<&str> = Vec::new();
        for urn in self.touched.iter().filter_map(|t| t.ext) {
            if !extensions.contains(&urn) {
                extensions.push(urn);
            }
        }
        for urn in extensions {
            sync_extension(doc, self.kind, urn);
        }
        for touched in &self.touched {
            let name = &touched.attr.name;
            let before = container_ref(original, touched.ext).and_then(|c| c.get(name)).filter(|v| !v.is_null());
            let after = container_ref(doc, touched.ext).and_then(|c| c.get(name)).filter(|v| !v.is_null());
            // RFC 7644 §3.5.2.2: "If an attribute is removed or becomes
            // unassigned and is defined as a required attribute …, the server
            // SHALL return … a "scimType" error code of "mutability"."
            if touched.attr.required && before.is_some() && after.is_none() {
                return Err(ScimError::mutability(format!("{name} is required and cannot be removed")));
            }
            check_immutable(touched.attr, before, after)?;
        }
        Ok(())
    }
}

/// RFC 7644 §3.5.2: "a client MAY "add" a value to an "immutable" attribute
/// if the attribute had no previous value", and never change it after.
fn check_immutable(attr: &Attribute, before: Option<&Value>, after: Option<&Value>) -> Result<(), ScimError> {
    if attr.mutability == Mutability::Immutable {
        if before.is_some() && after != before {
            return Err(ScimError::mutability(format!("{} is immutable", attr.name)));
        }
    } else if attr.kind == AttrType::Complex && !attr.multi_valued {
        for sub in attr.sub_attributes.iter().filter(|s| s.mutability == Mutability::Immutable) {
            let was = before.and_then(|v| v.get(&sub.name)).filter(|v| !v.is_null());
            let is = after.and_then(|v| v.get(&sub.name)).filter(|v| !v.is_null());
            if was.is_some() && is != was {
                return Err(ScimError::mutability(format!("{}.{} is immutable", attr.name, sub.name)));
            }
        }
    }
    Ok(())
}

fn extension_of<'l>(resolved: &ResolvedAttr<'l>) -> Option<&'l str> {
    resolved.in_extension().then_some(resolved.schema)
}

// ---------------------------------------------------------------------------
// add / replace / remove on a resolved target
// ---------------------------------------------------------------------------

/// RFC 7644 §3.5.2.1.
fn add(doc: &mut Map<String, Value>, target: &Target<'_, '_>, value: &Value) -> Result<(), ScimError> {
    let attr = target.attr;
    let container = container_mut(doc, target.ext);
    match (target.filter, target.sub) {
        (Some(filter), sub) => set_filtered(container, attr, filter, sub, value, PatchOp::Add),
        (None, Some(sub)) => set_sub(container, attr, sub, value),
        (None, None) if attr.multi_valued => {
            let incoming = normalize_multi(attr, value)?;
            let elements = array_slot(container, &attr.name);
            let touched = merge_elements(attr, elements, incoming)?;
            enforce_primary(attr, elements, &touched)
        }
        (None, None) if attr.kind == AttrType::Complex => {
            let incoming = normalize_complex(attr, value)?;
            merge_into(object_slot(container, &attr.name), incoming);
            Ok(())
        }
        (None, None) => {
            container.insert(attr.name.clone(), normalize_one(attr, value)?);
            Ok(())
        }
    }
}

/// RFC 7644 §3.5.2.3.
fn replace(doc: &mut Map<String, Value>, target: &Target<'_, '_>, value: &Value) -> Result<(), ScimError> {
    let attr = target.attr;
    let container = container_mut(doc, target.ext);
    match (target.filter, target.sub) {
        (Some(filter), sub) => set_filtered(container, attr, filter, sub, value, PatchOp::Replace),
        (None, Some(sub)) => set_sub(container, attr, sub, value),
        // "If the target location is a multi-valued attribute and no filter
        // is specified, the attribute and all values are replaced."
        (None, None) if attr.multi_valued => {
            let incoming = normalize_multi(attr, value)?;
            let mut elements = Vec::new();
            let touched = merge_elements(attr, &mut elements, incoming)?;
            enforce_primary(attr, &mut elements, &touched)?;
            container.insert(attr.name.clone(), Value::Array(elements));
            Ok(())
        }
        // "Sub-attributes that are not specified in the "value" parameter are
        // left unchanged."
        (None, None) if attr.kind == AttrType::Complex => {
            let incoming = normalize_complex(attr, value)?;
            merge_into(object_slot(container, &attr.name), incoming);
            Ok(())
        }
        (None, None) => {
            container.insert(attr.name.clone(), normalize_one(attr, value)?);
            Ok(())
        }
    }
}

/// RFC 7644 §3.5.2.2. `value`, when given for a multi-valued attribute
/// without a filter, lists the elements to remove.
fn remove(doc: &mut Map<String, Value>, target: &Target<'_, '_>, value: Option<&Value>) -> Result<(), ScimError> {
    let attr = target.attr;
    let Some(container) = container_opt(doc, target.ext) else {
        return Ok(());
    };
    match (target.filter, target.sub) {
        (None, None) => match value {
            Some(value) if attr.multi_valued => {
                let doomed = normalize_multi(attr, value)?;
                if let Some(Value::Array(elements)) = container.get_mut(&attr.name) {
                    elements.retain(|e| !doomed.iter().any(|d| same_element(attr, e, d)));
                }
            }
            _ => {
                container.remove(&attr.name);
            }
        },
        (None, Some(sub)) => match container.get_mut(&attr.name) {
            Some(Value::Object(object)) => {
                object.remove(&sub.name);
            }
            Some(Value::Array(elements)) => {
                for element in elements.iter_mut().filter_map(Value::as_object_mut) {
                    element.remove(&sub.name);
                }
            }
            _ => {}
        },
        (Some(filter), sub) => {
            if let Some(Value::Array(elements)) = container.get_mut(&attr.name) {
                match sub {
                    None => elements.retain(|e| !matches(filter, e, attr)),
                    Some(sub) => {
                        for element in elements.iter_mut().filter(|e| matches(filter, e, attr)) {
                            if let Some(element) = element.as_object_mut() {
                                element.remove(&sub.name);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// `attr.sub` without a filter: the sub-attribute of a single-valued complex
/// attribute, or of every element of a multi-valued one (a new element when
/// there is none).
fn set_sub(
    container: &mut Map<String, Value>,
    attr: &Attribute,
    sub: &Attribute,
    value: &Value,
) -> Result<(), ScimError> {
    let value = normalize_value(sub, value)?;
    if !attr.multi_valued {
        object_slot(container, &attr.name).insert(sub.name.clone(), value);
        return Ok(());
    }
    let elements = array_slot(container, &attr.name);
    if elements.is_empty() {
        elements.push(Value::Object(Map::from_iter([(sub.name.clone(), value)])));
    } else {
        for element in elements.iter_mut().filter_map(Value::as_object_mut) {
            element.insert(sub.name.clone(), value.clone());
        }
    }
    let touched: Vec<usize> = (0..elements.len()).collect();
    enforce_primary(attr, elements, &touched)
}

/// `attr[filter]` and `attr[filter].sub` for add and replace.
fn set_filtered(
    container: &mut Map<String, Value>,
    attr: &Attribute,
    filter: &ValFilter,
    sub: Option<&Attribute>,
    value: &Value,
    op: PatchOp,
) -> Result<(), ScimError> {
    let incoming = match sub {
        Some(sub) => Map::from_iter([(sub.name.clone(), normalize_value(sub, value)?)]),
        None => normalize_complex(attr, value)?,
    };
    let elements = array_slot(container, &attr.name);
    let hits: Vec<usize> = (0..elements.len()).filter(|&i| matches(filter, &elements[i], attr)).collect();
    if hits.is_empty() {
        // Entra sends `emails[type eq "work"].value` for a user without a
        // work email and expects one to be created: a conjunction of `eq`
        // comparisons describes the element to create.
        let Some(mut element) = seed_from_filter(filter, attr) else {
            return Err(ScimError::no_target(format!("{}[{filter}] matches no value", attr.name)));
        };
        merge_into(&mut element, incoming);
        elements.push(Value::Object(element));
        let new = elements.len() - 1;
        return enforce_primary(attr, elements, &[new]);
    }
    for &i in &hits {
        match (op, sub) {
            // "all matching record values SHALL be replaced": the element
            // becomes the given value, keeping what the filter pinned down.
            (PatchOp::Replace, None) => {
                let mut element = seed_from_filter(filter, attr).unwrap_or_default();
                merge_into(&mut element, incoming.clone());
                elements[i] = Value::Object(element);
            }
            _ => {
                if !elements[i].is_object() {
                    elements[i] = Value::Object(Map::new());
                }
                if let Some(element) = elements[i].as_object_mut() {
                    merge_into(element, incoming.clone());
                }
            }
        }
    }
    enforce_primary(attr, elements, &hits)
}

/// Appends `incoming` to `elements`, merging each into an existing element
/// it duplicates (see [`same_element`]). Returns the indices written.
/// Both lists are bounded by [`resource_limits::MAX_VALUES`], and so is the
/// result: the search for duplicates stays small.
fn merge_elements(attr: &Attribute, elements: &mut Vec<Value>, incoming: Vec<Value>) -> Result<Vec<usize>, ScimError> {
    let mut touched = Vec::new();
    for new in incoming {
        let i = match elements.iter().position(|e| same_element(attr, e, &new)) {
            Some(i) => {
                if let (Some(existing), Value::Object(new)) = (elements[i].as_object_mut(), new) {
                    merge_duplicate(attr, existing, new);
                }
                i
            }
            None => {
                elements.push(new);
                elements.len() - 1
            }
        };
        if !touched.contains(&i) {
            touched.push(i);
        }
    }
    values_within(&attr.name, elements.len(), resource_limits::MAX_VALUES)?;
    Ok(touched)
}

/// RFC 7643 §2.4: "The primary attribute value "true" MUST appear no more
/// than once." When one of the elements just written is primary, the others
/// stop being; two written primaries are an error.
fn enforce_primary(attr: &Attribute, elements: &mut [Value], touched: &[usize]) -> Result<(), ScimError> {
    let Some(primary) = find_sub(attr, "primary") else {
        return Ok(());
    };
    let is_primary = |e: &Value| e.get(&primary.name) == Some(&Value::Bool(true));
    let chosen: Vec<usize> = touched.iter().copied().filter(|&i| is_primary(&elements[i])).collect();
    match chosen.as_slice() {
        [] => Ok(()),
        [chosen] => {
            for (i, element) in elements.iter_mut().enumerate() {
                if i != *chosen && is_primary(element) {
                    if let Some(element) = element.as_object_mut() {
                        element.insert(primary.name.clone(), Value::Bool(false));
                    }
                }
            }
            Ok(())
        }
        _ => Err(ScimError::invalid_value(format!("at most one value of {} may be primary", attr.name))),
    }
}

/// Whether two values of multi-valued `attr` are the same value: equal
/// `value` sub-attributes (and equal `type`s when both have one), honouring
/// caseExact; complex values without a `value` must be equal as a whole.
fn same_element(attr: &Attribute, a: &Value, b: &Value) -> bool {
    if attr.kind != AttrType::Complex {
        return scalar_eq(attr, a, b);
    }
    let (Some(a_obj), Some(b_obj)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let Some(value) = find_sub(attr, "value") else {
        return a == b;
    };
    match (a_obj.get(&value.name), b_obj.get(&value.name)) {
        (Some(x), Some(y)) if !x.is_null() && !y.is_null() => {
            scalar_eq(value, x, y)
                && match find_sub(attr, "type") {
                    Some(kind) => match (a_obj.get(&kind.name), b_obj.get(&kind.name)) {
                        (Some(x), Some(y)) if !x.is_null() && !y.is_null() => scalar_eq(kind, x, y),
                        _ => true,
                    },
                    None => true,
                }
        }
        _ => a == b,
    }
}

fn scalar_eq(attr: &Attribute, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if attr.kind == AttrType::DateTime {
                if let (Ok(x), Ok(y)) = (DateTime::parse_from_rfc3339(x), DateTime::parse_from_rfc3339(y)) {
                    return x == y;
                }
            }
            fold(attr, x) == fold(attr, y)
        }
        _ => a == b,
    }
}

/// Merges a duplicate's sub-attributes into the element it duplicates,
/// keeping the stored spelling of values equal under caseExact rules.
fn merge_duplicate(attr: &Attribute, existing: &mut Map<String, Value>, new: Map<String, Value>) {
    for (name, value) in new {
        let same = match (existing.get(&name), find_sub(attr, &name)) {
            (Some(old), Some(sub)) => scalar_eq(sub, old, &value),
            _ => false,
        };
        if !same {
            existing.insert(name, value);
        }
    }
}

/// Merges `incoming` sub-attributes into `object`; a null removes one.
fn merge_into(object: &mut Map<String, Value>, incoming: Map<String, Value>) {
    for (name, value) in incoming {
        if value.is_null() {
            object.remove(&name);
        } else {
            object.insert(name, value);
        }
    }
}

// ---------------------------------------------------------------------------
// Value normalization
// ---------------------------------------------------------------------------

/// A value for `attr` as a whole: an array when multi-valued.
fn normalize_value(attr: &Attribute, value: &Value) -> Result<Value, ScimError> {
    if attr.multi_valued {
        Ok(Value::Array(normalize_multi(attr, value)?))
    } else {
        normalize_one(attr, value)
    }
}

/// The values of multi-valued `attr`; a lone value counts as a list of one.
fn normalize_multi(attr: &Attribute, value: &Value) -> Result<Vec<Value>, ScimError> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    values_within(&attr.name, items.len(), resource_limits::MAX_VALUES)?;
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        let mut item = normalize_one(attr, item)?;
        prune(&mut item);
        if !is_unassigned(&item) {
            values.push(item);
        }
    }
    Ok(values)
}

/// One value of `attr` (one element when multi-valued), in canonical form:
/// sub-attribute names as in the schema, Entra's `"True"`/`"False"` strings
/// as booleans. Other type mismatches answer `invalidValue`.
fn normalize_one(attr: &Attribute, value: &Value) -> Result<Value, ScimError> {
    let mismatch = || ScimError::invalid_value(format!("{} must be {}", attr.name, type_name(attr.kind)));
    match (attr.kind, value) {
        (_, Value::Null) => Ok(Value::Null),
        (AttrType::Complex, _) => normalize_complex(attr, value).map(Value::Object),
        (AttrType::String | AttrType::Reference | AttrType::Binary, Value::String(_)) => Ok(value.clone()),
        (AttrType::DateTime, Value::String(s)) if DateTime::parse_from_rfc3339(s).is_ok() => Ok(value.clone()),
        (AttrType::Boolean, Value::Bool(_)) => Ok(value.clone()),
        (AttrType::Boolean, Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        (AttrType::Boolean, Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        (AttrType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        (AttrType::Decimal, Value::Number(_)) => Ok(value.clone()),
        _ => Err(mismatch()),
    }
}

/// A value of complex `attr` as its sub-attributes (nulls kept, to remove on
/// merge). Read-only sub-attributes are dropped; a bare scalar stands for
/// `{"value": scalar}` (Entra sends `manager` as the manager's id).
fn normalize_complex(attr: &Attribute, value: &Value) -> Result<Map<String, Value>, ScimError> {
    let object = match value {
        Value::Object(object) => object,
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            return match find_sub(attr, "value") {
                Some(sub) => Ok(Map::from_iter([(sub.name.clone(), normalize_one(sub, value)?)])),
                None => Err(ScimError::invalid_value(format!("{} must be an object", attr.name))),
            };
        }
        _ => return Err(ScimError::invalid_value(format!("{} must be an object", attr.name))),
    };
    let mut normalized = Map::new();
    for (name, value) in object {
        let Some(sub) = find_sub(attr, name) else {
            return Err(ScimError::invalid_value(format!("{} has no sub-attribute {name}", attr.name)));
        };
        if sub.mutability == Mutability::ReadOnly {
            continue;
        }
        normalized.insert(sub.name.clone(), normalize_value(sub, value)?);
    }
    Ok(normalized)
}

fn type_name(kind: AttrType) -> &'static str {
    match kind {
        AttrType::String => "a string",
        AttrType::Boolean => "a boolean",
        AttrType::Decimal => "a number",
        AttrType::Integer => "an integer",
        AttrType::DateTime => "an RFC 3339 date-time string",
        AttrType::Binary => "a base64 string",
        AttrType::Reference => "a reference string",
        AttrType::Complex => "an object",
    }
}

/// Drops null sub-attributes and empty elements.
fn prune(value: &mut Value) {
    match value {
        Value::Object(object) => object.retain(|_, v| !v.is_null()),
        Value::Array(items) => {
            items.iter_mut().for_each(prune);
            items.retain(|v| !is_unassigned(v));
        }
        _ => {}
    }
}

/// RFC 7643 §2.5: null and an empty array are the same as no value; so,
/// here, is an empty complex value.
fn is_unassigned(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(object) => object.is_empty(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Value filters
// ---------------------------------------------------------------------------

/// Whether `element`, one value of multi-valued `attr`, satisfies `filter`
/// (the `[…]` of a value path, RFC 7644 §3.4.2.2). Sub-attribute names match
/// case-insensitively; string comparisons honour the sub-attribute's
/// `caseExact`; `dateTime`s compare as instants; `gt`/`ge`/`lt`/`le` never
/// match booleans or binaries; a filter naming no sub-attribute matches nothing.
pub fn matches(filter: &ValFilter, element: &Value, attr: &Attribute) -> bool {
    match filter {
        ValFilter::Attr(exp) => matches_exp(exp, element, attr),
        ValFilter::Not(inner) => !matches(inner, element, attr),
        ValFilter::And(items) => items.iter().all(|f| matches(f, element, attr)),
        ValFilter::Or(items) => items.iter().any(|f| matches(f, element, attr)),
    }
}

fn matches_exp(exp: &AttrExp, element: &Value, attr: &Attribute) -> bool {
    let path = match exp {
        AttrExp::Present(path) | AttrExp::Comparison(path, _, _) => path,
    };
    let Some((def, value)) = operand(path, element, attr) else {
        return false;
    };
    let value = value.filter(|v| !v.is_null());
    match exp {
        AttrExp::Present(_) => value.is_some_and(|v| match v {
            Value::String(s) => !s.is_empty(),
            other => !is_unassigned(other),
        }),
        AttrExp::Comparison(_, op, expected) => compare(def, value, op, expected),
    }
}

/// The sub-attribute `path` names in `element` and its value; for a simple
/// multi-valued attribute, `value` is the element itself.
fn operand<'a>(path: &AttrPath, element: &'a Value, attr: &'a Attribute) -> Option<(&'a Attribute, Option<&'a Value>)> {
    if path.uri.is_some() || path.sub_attr.is_some() {
        return None;
    }
    if attr.kind == AttrType::Complex {
        let sub = find_sub(attr, &path.name)?;
        Some((sub, element.as_object().and_then(|object| get_ci(object, &sub.name))))
    } else if path.name.eq_ignore_ascii_case("value") {
        Some((attr, Some(element)))
    } else {
        None
    }
}

fn compare(def: &Attribute, value: Option<&Value>, op: &CompareOp, expected: &CompValue) -> bool {
    if let Some(Value::Array(items)) = value {
        return match op {
            CompareOp::Ne => !items.iter().any(|v| compare(def, Some(v), &CompareOp::Eq, expected)),
            _ => items.iter().any(|v| compare(def, Some(v), op, expected)),
        };
    }
    match op {
        CompareOp::Eq => equals(def, value, expected),
        CompareOp::Ne => !equals(def, value, expected),
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => match (value, expected) {
            (Some(Value::String(s)), CompValue::Str(pattern)) => {
                let (s, pattern) = (fold(def, s), fold(def, pattern));
                match op {
                    CompareOp::Co => s.contains(pattern.as_ref()),
                    CompareOp::Sw => s.starts_with(pattern.as_ref()),
                    _ => s.ends_with(pattern.as_ref()),
                }
            }
            _ => false,
        },
        CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
            if matches!(def.kind, AttrType::Boolean | AttrType::Binary) {
                return false;
            }
            let Some(ordering) = value.and_then(|v| order(def, v, expected)) else {
                return false;
            };
            match op {
                CompareOp::Gt => ordering == Ordering::Greater,
                CompareOp::Ge => ordering != Ordering::Less,
                CompareOp::Lt => ordering == Ordering::Less,
                _ => ordering != Ordering::Greater,
            }
        }
    }
}

/// `eq`; `eq null` matches an absent value.
fn equals(def: &Attribute, value: Option<&Value>, expected: &CompValue) -> bool {
    match (value, expected) {
        (None, CompValue::Null) => true,
        (None, _) | (Some(_), CompValue::Null) => false,
        (Some(value), expected) => order(def, value, expected) == Some(Ordering::Equal),
    }
}

/// How `value` orders against `expected`, when they are comparable.
fn order(def: &Attribute, value: &Value, expected: &CompValue) -> Option<Ordering> {
    match (value, expected) {
        (Value::String(s), CompValue::Str(e)) => {
            if def.kind == AttrType::DateTime {
                if let (Ok(s), Ok(e)) = (DateTime::parse_from_rfc3339(s), DateTime::parse_from_rfc3339(e)) {
                    return Some(s.cmp(&e));
                }
            }
            Some(fold(def, s).cmp(&fold(def, e)))
        }
        (Value::Bool(b), CompValue::True) => Some(b.cmp(&true)),
        (Value::Bool(b), CompValue::False) => Some(b.cmp(&false)),
        // Entra writes `primary eq "True"` as readily as `primary eq true`.
        (Value::Bool(b), CompValue::Str(e)) => parse_bool(e).map(|e| b.cmp(&e)),
        (Value::Number(n), CompValue::Number(e)) => match (n.as_i64(), e.as_i64()) {
            (Some(n), Some(e)) => Some(n.cmp(&e)),
            _ => n.as_f64()?.partial_cmp(&e.as_f64()?),
        },
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        s if s.eq_ignore_ascii_case("true") => Some(true),
        s if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `s` as compared for `def`: lower-cased unless `caseExact`.
fn fold<'s>(def: &Attribute, s: &'s str) -> Cow<'s, str> {
    if def.case_exact {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// Refuses filters naming something other than a sub-attribute of `attr`,
/// and ordering comparisons on booleans and binaries (RFC 7644 §3.4.2.2).
fn check_filter(filter: &ValFilter, attr: &Attribute) -> Result<(), ScimError> {
    match filter {
        ValFilter::Attr(exp) => {
            let (path, op) = match exp {
                AttrExp::Present(path) => (path, None),
                AttrExp::Comparison(path, op, _) => (path, Some(op)),
            };
            let Some((def, _)) = operand(path, &Value::Null, attr) else {
                return Err(ScimError::invalid_filter(format!("{} has no sub-attribute {path}", attr.name)));
            };
            if matches!(op, Some(CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le))
                && matches!(def.kind, AttrType::Boolean | AttrType::Binary)
            {
                return Err(ScimError::invalid_filter(format!("{path} cannot be ordered")));
            }
            Ok(())
        }
        ValFilter::Not(inner) => check_filter(inner, attr),
        ValFilter::And(items) | ValFilter::Or(items) => items.iter().try_for_each(|f| check_filter(f, attr)),
    }
}

/// The element a conjunction of `eq` comparisons describes, if `filter` is one.
fn seed_from_filter(filter: &ValFilter, attr: &Attribute) -> Option<Map<String, Value>> {
    fn seed(filter: &ValFilter, attr: &Attribute, element: &mut Map<String, Value>) -> Option<()> {
        match filter {
            ValFilter::Attr(AttrExp::Comparison(path, CompareOp::Eq, expected)) => {
                let (sub, _) = operand(path, &Value::Null, attr)?;
                let value = match expected {
                    CompValue::Str(s) => Value::String(s.clone()),
                    CompValue::True => Value::Bool(true),
                    CompValue::False => Value::Bool(false),
                    CompValue::Number(n) => Value::Number(n.clone()),
                    CompValue::Null => return None,
                };
                let value = normalize_one(sub, &value).ok()?;
                if element.insert(sub.name.clone(), value).is_some() {
                    return None;
                }
                Some(())
            }
            ValFilter::And(items) => items.iter().try_for_each(|f| seed(f, attr, element)),
            _ => None,
        }
    }
    if attr.kind != AttrType::Complex {
        return None;
    }
    let mut element = Map::new();
    seed(filter, attr, &mut element)?;
    Some(element)
}

/// The ids a `members` value lists: `[{"value": id}, …]`, a lone object, or
/// bare id strings.
fn member_ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    if items.len() > resource_limits::MAX_MEMBERS {
        return Err(too_many_members());
    }
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    let mut seen: HashSet<&str> = HashSet::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::String(id) => id,
            Value::Object(member) => match get_ci(member, "value") {
                Some(Value::String(id)) => id,
                _ => return Err(ScimError::invalid_value("each member needs a string value")),
            },
            _ => return Err(ScimError::invalid_value("members must be objects with a value")),
        };
        let id = id.trim();
        if id.is_empty() {
            return Err(ScimError::invalid_value("a member value is empty"));
        }
        if seen.insert(id) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// The ids of `value eq "id"` (or several joined by `or`).
fn member_ids_in_filter(filter: &ValFilter) -> Option<Vec<String>> {
    match filter {
        ValFilter::Attr(AttrExp::Comparison(path, CompareOp::Eq, CompValue::Str(id)))
            if path.uri.is_none() && path.sub_attr.is_none() && path.name.eq_ignore_ascii_case("value") =>
        {
            Some(vec![id.clone()])
        }
        ValFilter::Or(items) => {
            let mut ids: Vec<String> = Vec::new();
            let mut seen: HashSet<String> = HashSet::new();
            for item in items.iter() {
                for id in member_ids_in_filter(item)? {
                    if seen.insert(id.clone()) {
                        ids.push(id);
                    }
                }
            }
            Some(ids)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

/// Parses a PATCH path. `scim_v2`'s grammar refuses `$ref` (RFC 7643 §2.1
/// allows it as a sub-attribute name): a plain path it refuses gets a second
/// chance through [`parse_attr_path`].
fn parse_path(path: &str) -> Result<PatchPath, ScimError> {
    let path = path.trim();
    path.parse()
        .or_else(|e| parse_attr_path(path).map(PatchPath::Attr).ok_or(e))
        .map_err(|e| ScimError::invalid_path(format!("{path:?} is not a valid path: {e}")))
}

fn at_operation(mut e: ScimError, index: usize) -> ScimError {
    e.detail = format!("Operations[{index}]: {}", e.detail);
    e
}

/// `object[key]`, trying the exact key first and then any case.
fn get_ci<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn find_sub<'a>(attr: &'a Attribute, name: &str) -> Option<&'a Attribute> {
    attr.sub_attribute(name)
}

/// The object holding the attributes of `ext` (the resource itself for core
/// attributes), created when missing.
fn container_mut<'d>(doc: &'d mut Map<String, Value>, ext: Option<&str>) -> &'d mut Map<String, Value> {
    let Some(urn) = ext else {
        return doc;
    };
    let slot = doc.entry(urn.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(object) => object,
        _ => unreachable!("made an object just above"),
    }
}

fn container_opt<'d>(doc: &'d mut Map<String, Value>, ext: Option<&str>) -> Option<&'d mut Map<String, Value>> {
    match ext {
        None => Some(doc),
        Some(urn) => doc.get_mut(urn).and_then(Value::as_object_mut),
    }
}

fn container_ref<'d>(doc: &'d Map<String, Value>, ext: Option<&str>) -> Option<&'d Map<String, Value>> {
    match ext {
        None => Some(doc),
        Some(urn) => doc.get(urn).and_then(Value::as_object),
    }
}

fn object_slot<'c>(container: &'c mut Map<String, Value>, name: &str) -> &'c mut Map<String, Value> {
    let slot = container.entry(name.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(object) => object,
        _ => unreachable!("made an object just above"),
    }
}

fn array_slot<'c>(container: &'c mut Map<String, Value>, name: &str) -> &'c mut Vec<Value> {
    let slot = container.entry(name.to_string()).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        let single = std::mem::take(slot);
        *slot = Value::Array(if single.is_null() { Vec::new() } else { vec![single] });
    }
    match slot {
        Value::Array(items) => items,
        _ => unreachable!("made an array just above"),
    }
}

/// An extension's URN is in `schemas` exactly when the resource holds some of
/// its attributes; an emptied extension object goes away.
fn sync_extension(doc: &mut Map<String, Value>, kind: ResourceKind, urn: &str) {
    let present = doc.get(urn).is_some_and(|ext| !is_unassigned(ext));
    if !present {
        doc.remove(urn);
    }
    let listed = doc
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|urns| urns.iter().any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(urn))));
    if present && !listed {
        let core = kind.core_urn().to_string();
        let schemas = doc.entry("schemas").or_insert_with(|| Value::Array(vec![Value::String(core)]));
        if let Value::Array(urns) = schemas {
            urns.push(Value::String(urn.to_string()));
        }
    } else if !present && listed {
        if let Some(Value::Array(urns)) = doc.get_mut("schemas") {
            urns.retain(|u| !u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(urn)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{Schema, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use crate::scim::ScimType;
    use serde_json::json;

    const ENT: &str = ENTERPRISE_USER_SCHEMA;
    use ResourceKind::{Group, User};

    fn body(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
    }

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
            "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "postalCode": "91608"}]
        })
    }

    fn group() -> Value {
        json!({"schemas": [GROUP_SCHEMA], "displayName": "Engineering"})
    }

    /// `user()` with `f` applied to it: expected results say only what changed.
    fn user_with(f: impl FnOnce(&mut Value)) -> Value {
        let mut u = user();
        f(&mut u);
        u
    }

    fn run(kind: ResourceKind, before: &Value, operations: Value) -> Result<(Value, PatchOutcome), ScimError> {
        let request = PatchRequest::parse(&body(operations))?;
        let mut resource = before.clone();
        let outcome = apply(kind, &mut resource, &request)?;
        Ok((resource, outcome))
    }

    struct Case {
        name: &'static str,
        kind: ResourceKind,
        before: Value,
        ops: Value,
        after: Value,
    }

    fn check(cases: Vec<Case>) {
        for case in cases {
            let (after, outcome) =
                run(case.kind, &case.before, case.ops).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(after, case.after, "{}", case.name);
            assert_eq!(outcome.changed, case.before != case.after, "{}: changed", case.name);
            assert!(outcome.members.is_empty(), "{}: members", case.name);
        }
    }

    #[test]
    fn add() {
        check(vec![
            Case {
                name: "add a simple attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "title", "value": "Tour Guide"}]),
                after: user_with(|u| u["title"] = json!("Tour Guide")),
            },
            Case {
                name: "add without path",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "value": {"title": "Tour Guide", "NICKNAME": "Babs"}}]),
                after: user_with(|u| {
                    u["title"] = json!("Tour Guide");
                    u["nickName"] = json!("Babs");
                }),
            },
            Case {
                name: "add to a complex attribute merges sub-attributes",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "name", "value": {"middleName": "Jane", "GivenName": "Babs"}}]),
                after: user_with(|u| {
                    u["name"] = json!({"givenName": "Babs", "familyName": "Jensen", "middleName": "Jane"})
                }),
            },
            Case {
                name: "add a sub-attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "name.middleName", "value": "Jane"}]),
                after: user_with(|u| u["name"]["middleName"] = json!("Jane")),
            },
            Case {
                name: "add appends to a multi-valued attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]}]),
                after: user_with(|u| {
                    u["emails"].as_array_mut().unwrap().push(json!({"value": "babs@jensen.org", "type": "home"}))
                }),
            },
            Case {
                name: "add skips a value already there (emails.value is not caseExact)",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "emails", "value": [{"value": "BJensen@Example.com", "type": "WORK"}]}]),
                after: user(),
            },
            Case {
                name: "add merges into the duplicate and collapses duplicates it brings",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "emails", "value": [
                    {"value": "bjensen@example.com", "display": "Work"},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "babs@jensen.org", "type": "home"}
                ]}]),
                after: user_with(|u| {
                    u["emails"] = json!([
                        {"value": "bjensen@example.com", "type": "work", "primary": true, "display": "Work"},
                        {"value": "babs@jensen.org", "type": "home"}
                    ])
                }),
            },
            Case {
                name: "same value with another type is another value",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "emails", "value": {"value": "bjensen@example.com", "type": "home"}}]),
                after: user_with(|u| {
                    u["emails"].as_array_mut().unwrap().push(json!({"value": "bjensen@example.com", "type": "home"}))
                }),
            },
            Case {
                name: "a new primary value takes primary from the others",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home", "primary": true}]}]),
                after: user_with(|u| {
                    u["emails"] = json!([
                        {"value": "bjensen@example.com", "type": "work", "primary": false},
                        {"value": "babs@jensen.org", "type": "home", "primary": true}
                    ])
                }),
            },
            Case {
                name: "add to value path sets the sub-attribute on matches (Entra)",
                kind: User,
                before: user(),
                ops: json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "barbara@example.com"}]),
                after: user_with(|u| u["emails"][0]["value"] = json!("barbara@example.com")),
            },
            Case {
                name: "add to value path creates the element when nothing matches (Entra)",
                kind: User,
                before: user(),
                ops: json!([{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"}]),
                after: user_with(|u| u["phoneNumbers"] = json!([{"type": "mobile", "value": "+1 555 0100"}])),
            },
            Case {
                name: "add of a whole element at a value path merges into matches",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "addresses[type eq \"work\"]", "value": {"locality": "Hollywood"}}]),
                after: user_with(|u| u["addresses"][0]["locality"] = json!("Hollywood")),
            },
            Case {
                name: "add null does nothing",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": "title", "value": null}]),
                after: user(),
            },
        ]);
    }

    #[test]
    fn replace() {
        check(vec![
            Case {
                name: "replace a simple attribute (names are case-insensitive)",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "USERNAME", "value": "babs"}]),
                after: user_with(|u| u["userName"] = json!("babs")),
            },
            Case {
                name: "replace with the same value changes nothing",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "userName", "value": "bjensen"}]),
                after: user(),
            },
            Case {
                name: "replace of a complex attribute leaves other sub-attributes (RFC 7644 §3.5.2.3)",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs"}}]),
                after: user_with(|u| u["name"]["givenName"] = json!("Babs")),
            },
            Case {
                name: "replace a sub-attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "name.familyName", "value": "Jensen-Smith"}]),
                after: user_with(|u| u["name"]["familyName"] = json!("Jensen-Smith")),
            },
            Case {
                name: "replace a multi-valued attribute replaces all its values",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]}]),
                after: user_with(|u| u["emails"] = json!([{"value": "babs@jensen.org", "type": "home"}])),
            },
            Case {
                name: "replace with an empty array removes the attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "emails", "value": []}]),
                after: user_with(|u| {
                    u.as_object_mut().unwrap().remove("emails");
                }),
            },
            Case {
                name: "replace null removes",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "name.givenName", "value": null}]),
                after: user_with(|u| u["name"] = json!({"familyName": "Jensen"})),
            },
            Case {
                name: "replace at a value path with a sub-attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "barbara@example.com"}]),
                after: user_with(|u| u["emails"][0]["value"] = json!("barbara@example.com")),
            },
            Case {
                name: "replace of a work email on a user without one creates it (Entra)",
                kind: User,
                before: user_with(|u| {
                    u["emails"] = json!([{"value": "babs@jensen.org", "type": "home", "primary": true}])
                }),
                ops: json!([{"op": "Replace", "path": "emails[type eq \"work\" and primary eq true].value", "value": "bjensen@example.com"}]),
                after: user_with(|u| {
                    u["emails"] = json!([
                        {"value": "babs@jensen.org", "type": "home", "primary": false},
                        {"value": "bjensen@example.com", "type": "work", "primary": true}
                    ])
                }),
            },
            Case {
                name: "replace of a whole element at a value path replaces it, keeping what the filter says",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": {"streetAddress": "1 Main St", "locality": "Springfield"}}]),
                after: user_with(|u| {
                    u["addresses"] = json!([{"type": "work", "streetAddress": "1 Main St", "locality": "Springfield"}])
                }),
            },
            Case {
                name: "setting primary through a value path clears the others",
                kind: User,
                before: user_with(|u| {
                    u["emails"].as_array_mut().unwrap().push(json!({"value": "babs@jensen.org", "type": "home"}))
                }),
                ops: json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": "True"}]),
                after: user_with(|u| {
                    u["emails"] = json!([
                        {"value": "bjensen@example.com", "type": "work", "primary": false},
                        {"value": "babs@jensen.org", "type": "home", "primary": true}
                    ])
                }),
            },
            Case {
                name: "Okta deactivation: path-less replace",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "value": {"active": false}}]),
                after: user_with(|u| u["active"] = json!(false)),
            },
            Case {
                name: "Entra: capitalized op and \"False\"",
                kind: User,
                before: user(),
                ops: json!([{"op": "Replace", "path": "active", "value": "False"}]),
                after: user_with(|u| u["active"] = json!(false)),
            },
            Case {
                name: "Entra: dotted and value-path keys without path",
                kind: User,
                before: user_with(|u| {
                    u.as_object_mut().unwrap().remove("emails");
                }),
                ops: json!([{"op": "Add", "value": {
                    "name.givenName": "Jane",
                    "emails[type eq \"work\"].value": "jane@example.com",
                    "externalId": "00u1"
                }}]),
                after: user_with(|u| {
                    u["name"]["givenName"] = json!("Jane");
                    u["emails"] = json!([{"type": "work", "value": "jane@example.com"}]);
                    u["externalId"] = json!("00u1");
                }),
            },
        ]);
    }

    #[test]
    fn remove() {
        check(vec![
            Case {
                name: "remove an attribute",
                kind: User,
                before: user_with(|u| u["title"] = json!("Tour Guide")),
                ops: json!([{"op": "remove", "path": "title"}]),
                after: user(),
            },
            Case {
                name: "remove an absent attribute changes nothing",
                kind: User,
                before: user(),
                ops: json!([{"op": "remove", "path": "nickName"}]),
                after: user(),
            },
            Case {
                name: "remove a sub-attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "remove", "path": "name.givenName"}]),
                after: user_with(|u| u["name"] = json!({"familyName": "Jensen"})),
            },
            Case {
                name: "removing the last sub-attribute removes the attribute",
                kind: User,
                before: user_with(|u| u["name"] = json!({"givenName": "Barbara"})),
                ops: json!([{"op": "remove", "path": "name.givenName"}]),
                after: user_with(|u| {
                    u.as_object_mut().unwrap().remove("name");
                }),
            },
            Case {
                name: "remove matching values",
                kind: User,
                before: user_with(|u| {
                    u["emails"].as_array_mut().unwrap().push(json!({"value": "babs@jensen.org", "type": "home"}))
                }),
                ops: json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
                after: user(),
            },
            Case {
                name: "remove a sub-attribute of matching values",
                kind: User,
                before: user(),
                ops: json!([{"op": "remove", "path": "emails[value ew \"@EXAMPLE.COM\"].primary"}]),
                after: user_with(|u| u["emails"] = json!([{"value": "bjensen@example.com", "type": "work"}])),
            },
            Case {
                name: "remove at a value path matching nothing changes nothing",
                kind: User,
                before: user(),
                ops: json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
                after: user(),
            },
            Case {
                name: "remove the last value removes the attribute",
                kind: User,
                before: user(),
                ops: json!([{"op": "remove", "path": "addresses[type eq \"work\"]"}]),
                after: user_with(|u| {
                    u.as_object_mut().unwrap().remove("addresses");
                }),
            },
            Case {
                name: "remove with a value removes only the values listed",
                kind: User,
                before: user_with(|u| {
                    u["emails"].as_array_mut().unwrap().push(json!({"value": "babs@jensen.org", "type": "home"}))
                }),
                ops: json!([{"op": "Remove", "path": "emails", "value": [{"value": "babs@jensen.org"}]}]),
                after: user(),
            },
        ]);
    }

    #[test]
    fn extensions() {
        let with_ent = |ent: Value| {
            user_with(|u| {
                u["schemas"] = json!([USER_SCHEMA, ENT]);
                u[ENT] = ent;
            })
        };
        check(vec![
            Case {
                name: "add an extension attribute by URN path adds the URN to schemas",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": format!("{ENT}:employeeNumber"), "value": "701984"}]),
                after: with_ent(json!({"employeeNumber": "701984"})),
            },
            Case {
                name: "Entra: manager given as the manager's id",
                kind: User,
                before: user(),
                ops: json!([{"op": "Add", "path": format!("{ENT}:manager"), "value": "26118915-6090-4610-87e4-49d8ca9f808d"}]),
                after: with_ent(json!({"manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}})),
            },
            Case {
                name: "extension sub-attribute path",
                kind: User,
                before: with_ent(json!({"manager": {"value": "m1", "displayName": "John Smith"}})),
                ops: json!([{"op": "replace", "path": format!("{ENT}:manager.value"), "value": "m2"}]),
                after: with_ent(json!({"manager": {"value": "m2", "displayName": "John Smith"}})),
            },
            Case {
                name: "a $ref sub-attribute path",
                kind: User,
                before: with_ent(json!({"manager": {"value": "m1"}})),
                ops: json!([{"op": "add", "path": format!("{ENT}:manager.$ref"), "value": "../Users/m1"}]),
                after: with_ent(json!({"manager": {"value": "m1", "$ref": "../Users/m1"}})),
            },
            Case {
                name: "read-only sub-attributes in a value are dropped",
                kind: User,
                before: user(),
                ops: json!([{"op": "add", "path": format!("{ENT}:manager"), "value": {"value": "m1", "displayName": "Forged"}}]),
                after: with_ent(json!({"manager": {"value": "m1"}})),
            },
            Case {
                name: "URN-qualified keys without path",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "value": {
                    format!("{ENT}:department"): "Tour Operations",
                    format!("{USER_SCHEMA}:title"): "Guide"
                }}]),
                after: user_with(|u| {
                    u["schemas"] = json!([USER_SCHEMA, ENT]);
                    u[ENT] = json!({"department": "Tour Operations"});
                    u["title"] = json!("Guide");
                }),
            },
            Case {
                name: "extension object key without path (URN in any case)",
                kind: User,
                before: with_ent(json!({"department": "Sales"})),
                ops: json!([{"op": "add", "value": {ENT.to_uppercase(): {"costCenter": "4130", "Department": "Tours"}}}]),
                after: with_ent(json!({"department": "Tours", "costCenter": "4130"})),
            },
            Case {
                name: "a whole-extension value that repeats its schemas",
                kind: User,
                before: user(),
                ops: json!([{"op": "replace", "path": ENT, "value": {"schemas": [ENT], "employeeNumber": "42"}}]),
                after: with_ent(json!({"employeeNumber": "42"})),
            },
            Case {
                name: "removing an extension's last attribute removes it and its URN",
                kind: User,
                before: with_ent(json!({"department": "Sales"})),
                ops: json!([{"op": "remove", "path": format!("{ENT}:department")}]),
                after: user(),
            },
            Case {
                name: "removing one of several extension attributes keeps the extension",
                kind: User,
                before: with_ent(json!({"department": "Sales", "costCenter": "4130"})),
                ops: json!([{"op": "remove", "path": format!("{ENT}:department")}]),
                after: with_ent(json!({"costCenter": "4130"})),
            },
            Case {
                name: "remove a whole extension by its URN",
                kind: User,
                before: with_ent(json!({"department": "Sales", "manager": {"value": "m1"}})),
                ops: json!([{"op": "remove", "path": ENT}]),
                after: user(),
            },
            Case {
                name: "replace of an extension sub-attribute with null",
                kind: User,
                before: with_ent(json!({"manager": {"value": "m1"}})),
                ops: json!([{"op": "replace", "path": format!("{ENT}:manager.value"), "value": null}]),
                after: user(),
            },
        ]);
    }

    #[test]
    fn group_members() {
        let members = |add: &[&str], remove: &[&str], replace_all: Option<&[&str]>| MemberChanges {
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
            replace_all: replace_all.map(|ids| ids.iter().map(|s| s.to_string()).collect()),
        };
        let cases: Vec<(&str, Value, MemberChanges)> = vec![
            (
                "add members (duplicates collapsed)",
                json!([{"op": "add", "path": "members", "value": [{"value": "u1", "display": "Babs"}, {"value": "u2"}, {"value": "u1"}]}]),
                members(&["u1", "u2"], &[], None),
            ),
            (
                "add members without path",
                json!([{"op": "Add", "value": {"members": [{"value": "u1"}]}}]),
                members(&["u1"], &[], None),
            ),
            (
                "replace members",
                json!([{"op": "replace", "path": "members", "value": [{"value": "u3"}]}]),
                members(&[], &[], Some(&["u3"])),
            ),
            (
                "Okta: replace members without path",
                json!([{"op": "replace", "value": {"members": []}}]),
                members(&[], &[], Some(&[])),
            ),
            (
                "remove a member by filter",
                json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]),
                members(&[], &["u1"], None),
            ),
            (
                "remove members by an or of value filters",
                json!([{"op": "remove", "path": "members[value eq \"u1\" or VALUE eq \"u2\"]"}]),
                members(&[], &["u1", "u2"], None),
            ),
            (
                "Entra: remove members listed in value, not all",
                json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}]),
                members(&[], &["u1"], None),
            ),
            ("remove all members", json!([{"op": "remove", "path": "members"}]), members(&[], &[], Some(&[]))),
            (
                "remove all then add (RFC 7644 §3.5.2.2)",
                json!([{"op": "remove", "path": "members"}, {"op": "add", "path": "members", "value": [{"value": "u9"}]}]),
                members(&[], &[], Some(&["u9"])),
            ),
            (
                "add then remove the same member",
                json!([
                    {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
                    {"op": "remove", "path": "members[value eq \"u1\"]"}
                ]),
                members(&["u2"], &["u1"], None),
            ),
            (
                "replace then remove",
                json!([
                    {"op": "replace", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
                    {"op": "remove", "path": "members", "value": [{"value": "u2"}]}
                ]),
                members(&[], &[], Some(&["u1"])),
            ),
        ];
        for (name, ops, expected) in cases {
            let (after, outcome) = run(Group, &group(), ops).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(after, group(), "{name}: members are never written");
            assert!(!outcome.changed, "{name}");
            assert_eq!(outcome.members, expected, "{name}");
        }
    }

    #[test]
    fn member_operations_cost_what_they_name_up_to_the_limit() {
        // 10,000 operations, each adding one member and removing the one
        // added before: folding them one list scan at a time is quadratic.
        let ids: Vec<String> = (0..10_000).map(|i| format!("u{i}")).collect();
        let ops: Vec<Value> = ids
            .iter()
            .enumerate()
            .flat_map(|(i, id)| {
                let add = json!({"op": "add", "path": "members", "value": [{"value": id}]});
                match i {
                    0 => vec![add],
                    _ => vec![add, json!({"op": "remove", "path": format!("members[value eq \"{}\"]", ids[i - 1])})],
                }
            })
            .collect();
        let (_, outcome) = run(Group, &group(), Value::Array(ops)).unwrap();
        assert_eq!(outcome.members.add, [ids[9_999].clone()]);
        assert_eq!(outcome.members.remove, ids[..9_999]);

        // One more id, in any operation, is too many.
        let mut ops = vec![
            json!({"op": "add", "path": "members", "value": ids.iter().map(|id| json!({"value": id})).collect::<Vec<_>>()}),
        ];
        ops.push(json!({"op": "remove", "path": "members[value eq \"u10000\"]"}));
        let err = run(Group, &group(), Value::Array(ops)).unwrap_err();
        assert_eq!((err.status, err.scim_type), (StatusCode::BAD_REQUEST, Some(ScimType::InvalidValue)));
        assert!(err.detail.contains("at most 10000 members"), "{}", err.detail);
        let all: Vec<Value> = (0..=10_000).map(|i| json!({"value": format!("u{i}")})).collect();
        let err = run(Group, &group(), json!([{"op": "replace", "path": "members", "value": all}])).unwrap_err();
        assert!(err.detail.contains("at most 10000 members"), "{}", err.detail);
    }

    #[test]
    fn multi_valued_attributes_stay_within_the_limit() {
        let emails = |from: usize, n: usize| -> Vec<Value> {
            (from..from + n).map(|i| json!({"value": format!("u{i}@example.com")})).collect()
        };
        let (after, _) =
            run(User, &user(), json!([{"op": "replace", "path": "emails", "value": emails(0, 100)}])).unwrap();
        assert_eq!(after["emails"].as_array().map(Vec::len), Some(100));
        let err = run(User, &after, json!([{"op": "add", "path": "emails", "value": emails(100, 1)}])).unwrap_err();
        assert!(err.detail.contains("at most 100"), "{}", err.detail);
        let err = run(User, &user(), json!([{"op": "add", "path": "emails", "value": emails(0, 101)}])).unwrap_err();
        assert!(err.detail.contains("at most 100"), "{}", err.detail);
        // A duplicate of a value held is not one more.
        let (again, _) = run(User, &after, json!([{"op": "add", "path": "emails", "value": emails(99, 1)}])).unwrap();
        assert_eq!(again, after);
    }

    #[test]
    fn okta_group_rename_sends_the_id() {
        let ops = json!([{"op": "replace", "value": {"id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b", "displayName": "Test SCIMv2"}}]);
        let (after, outcome) = run(Group, &group(), ops).unwrap();
        assert_eq!(after, json!({"schemas": [GROUP_SCHEMA], "displayName": "Test SCIMv2"}));
        assert!(outcome.changed);
    }

    #[test]
    fn empty_operations_change_nothing() {
        for raw in [
            json!({"schemas": [PATCH_OP_SCHEMA], "Operations": []}),
            json!({"schemas": [PATCH_OP_SCHEMA.to_uppercase()], "operations": []}),
        ] {
            let request = PatchRequest::parse(&raw).unwrap();
            let mut resource = user();
            let outcome = apply(User, &mut resource, &request).unwrap();
            assert_eq!(outcome, PatchOutcome::default());
            assert_eq!(resource, user());
        }
    }

    #[test]
    fn parse_keeps_what_was_sent() {
        let request = PatchRequest::parse(&json!({
            "schemas": [PATCH_OP_SCHEMA],
            "Operations": [
                {"op": "REPLACE", "path": "emails[type eq \"work\"].value", "value": "x@example.com"},
                {"Op": "remove", "Path": "title"},
                {"op": "add", "path": null, "value": {"title": "x"}}
            ]
        }))
        .unwrap();
        let [first, second, third] = request.operations.as_slice() else { panic!("three operations") };
        assert_eq!(first.op, PatchOp::Replace);
        assert_eq!(first.raw_path.as_deref(), Some("emails[type eq \"work\"].value"));
        assert!(matches!(&first.path, Some(PatchPath::Value(vp)) if vp.sub_attr.as_deref() == Some("value")));
        assert_eq!(first.value, Some(json!("x@example.com")));
        assert_eq!((second.op, second.value.is_none()), (PatchOp::Remove, true));
        assert!(matches!(&second.path, Some(PatchPath::Attr(a)) if a.name == "title"));
        assert_eq!((third.op, third.path.is_none()), (PatchOp::Add, true));
    }

    #[test]
    fn parse_errors() {
        let cases: Vec<(&str, Value, ScimType)> = vec![
            ("not an object", json!([]), ScimType::InvalidSyntax),
            ("no schemas", json!({"Operations": []}), ScimType::InvalidSyntax),
            ("wrong schema", json!({"schemas": [USER_SCHEMA], "Operations": []}), ScimType::InvalidSyntax),
            ("no Operations", json!({"schemas": [PATCH_OP_SCHEMA]}), ScimType::InvalidSyntax),
            (
                "Operations not an array",
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": {}}),
                ScimType::InvalidSyntax,
            ),
            ("operation not an object", body(json!(["add"])), ScimType::InvalidSyntax),
            ("no op", body(json!([{"path": "title", "value": "x"}])), ScimType::InvalidSyntax),
            ("unknown op", body(json!([{"op": "merge", "path": "title", "value": "x"}])), ScimType::InvalidSyntax),
            (
                "malformed path",
                body(json!([{"op": "add", "path": "emails[type eq", "value": "x"}])),
                ScimType::InvalidPath,
            ),
            ("path not a string", body(json!([{"op": "add", "path": 3, "value": "x"}])), ScimType::InvalidPath),
            ("remove without path", body(json!([{"op": "remove"}])), ScimType::NoTarget),
            ("add without value", body(json!([{"op": "add", "path": "title"}])), ScimType::InvalidValue),
            ("replace without value", body(json!([{"op": "replace"}])), ScimType::InvalidValue),
        ];
        for (name, raw, expected) in cases {
            let err = PatchRequest::parse(&raw).err().unwrap_or_else(|| panic!("{name}: parsed"));
            assert_eq!(err.scim_type, Some(expected), "{name}: {err}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{name}");
        }
    }

    #[test]
    fn apply_errors_leave_the_resource_alone() {
        let cases: Vec<(&str, ResourceKind, Value, ScimType)> = vec![
            ("unknown attribute", User, json!([{"op": "add", "path": "fooBar", "value": "x"}]), ScimType::InvalidPath),
            ("unknown key without path", User, json!([{"op": "add", "value": {"fooBar": "x"}}]), ScimType::InvalidPath),
            (
                "unknown sub-attribute",
                User,
                json!([{"op": "replace", "path": "name.nickname", "value": "x"}]),
                ScimType::InvalidPath,
            ),
            (
                "extension attribute without URN",
                User,
                json!([{"op": "add", "path": "department", "value": "x"}]),
                ScimType::InvalidPath,
            ),
            (
                "members on a User",
                User,
                json!([{"op": "add", "path": "members", "value": [{"value": "u1"}]}]),
                ScimType::InvalidPath,
            ),
            (
                "filter on a single-valued attribute",
                User,
                json!([{"op": "replace", "path": "name[givenName eq \"Barbara\"]", "value": {}}]),
                ScimType::InvalidPath,
            ),
            (
                "unknown sub-attribute after the filter",
                User,
                json!([{"op": "replace", "path": "emails[type eq \"work\"].nope", "value": "x"}]),
                ScimType::InvalidPath,
            ),
            (
                "unknown sub-attribute in the filter",
                User,
                json!([{"op": "remove", "path": "emails[kind eq \"work\"]"}]),
                ScimType::InvalidFilter,
            ),
            (
                "ordering a boolean",
                User,
                json!([{"op": "remove", "path": "emails[primary gt true]"}]),
                ScimType::InvalidFilter,
            ),
            (
                "replace at a value path matching nothing",
                User,
                json!([{"op": "replace", "path": "emails[value co \"@nowhere\"].display", "value": "x"}]),
                ScimType::NoTarget,
            ),
            ("remove without path", User, json!([{"op": "remove", "path": ""}]), ScimType::NoTarget),
            ("path-less value not an object", User, json!([{"op": "replace", "value": "x"}]), ScimType::InvalidValue),
            (
                "boolean that is no boolean",
                User,
                json!([{"op": "replace", "path": "active", "value": "yes"}]),
                ScimType::InvalidValue,
            ),
            (
                "string that is a number",
                User,
                json!([{"op": "replace", "path": "userName", "value": 5}]),
                ScimType::InvalidValue,
            ),
            ("object for a string", User, json!([{"op": "add", "value": {"title": {"x": 1}}}]), ScimType::InvalidValue),
            (
                "unknown sub-attribute in a value",
                User,
                json!([{"op": "add", "path": "emails", "value": [{"value": "x@example.com", "kind": "work"}]}]),
                ScimType::InvalidValue,
            ),
            (
                "two primaries",
                User,
                json!([{"op": "add", "path": "emails", "value": [{"value": "a@x.org", "primary": true}, {"value": "b@x.org", "primary": true}]}]),
                ScimType::InvalidValue,
            ),
            (
                "member without value",
                Group,
                json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}]),
                ScimType::InvalidValue,
            ),
            ("id", User, json!([{"op": "replace", "path": "id", "value": "x"}]), ScimType::Mutability),
            ("remove id", User, json!([{"op": "remove", "path": "id"}]), ScimType::Mutability),
            (
                "meta",
                User,
                json!([{"op": "replace", "path": "meta.lastModified", "value": "2020-01-01T00:00:00Z"}]),
                ScimType::Mutability,
            ),
            (
                "meta without path",
                User,
                json!([{"op": "replace", "value": {"meta": {"version": "W/\"1\""}}}]),
                ScimType::Mutability,
            ),
            (
                "groups",
                User,
                json!([{"op": "add", "path": "groups", "value": [{"value": "g1"}]}]),
                ScimType::Mutability,
            ),
            (
                "read-only sub-attribute",
                User,
                json!([{"op": "replace", "path": format!("{ENT}:manager.displayName"), "value": "x"}]),
                ScimType::Mutability,
            ),
            (
                "members.display",
                Group,
                json!([{"op": "remove", "path": "members[value eq \"u1\"].display"}]),
                ScimType::Mutability,
            ),
            ("remove a required attribute", User, json!([{"op": "remove", "path": "userName"}]), ScimType::Mutability),
            (
                "replace a required attribute with null",
                Group,
                json!([{"op": "replace", "value": {"displayName": null}}]),
                ScimType::Mutability,
            ),
            (
                "members filter other than value eq",
                Group,
                json!([{"op": "remove", "path": "members[type eq \"User\"]"}]),
                ScimType::InvalidFilter,
            ),
            (
                "add at a members filter",
                Group,
                json!([{"op": "add", "path": "members[value eq \"u1\"]", "value": {}}]),
                ScimType::InvalidPath,
            ),
            ("remove the core schema", User, json!([{"op": "remove", "path": USER_SCHEMA}]), ScimType::InvalidPath),
        ];
        for (name, kind, ops, expected) in cases {
            let before = match kind {
                ResourceKind::User => user(),
                ResourceKind::Group => group(),
            };
            let mut resource = before.clone();
            let err = PatchRequest::parse(&body(ops))
                .and_then(|request| apply(kind, &mut resource, &request))
                .err()
                .unwrap_or_else(|| panic!("{name}: applied"));
            assert_eq!(err.scim_type, Some(expected), "{name}: {err}");
            assert_eq!(resource, before, "{name}: resource changed");
        }
    }

    #[test]
    fn an_error_in_the_third_operation_undoes_the_first_two() {
        let ops = json!([
            {"op": "replace", "path": "title", "value": "Tour Guide"},
            {"op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]},
            {"op": "replace", "path": "id", "value": "other"}
        ]);
        let request = PatchRequest::parse(&body(ops)).unwrap();
        let mut resource = user();
        let err = apply(User, &mut resource, &request).unwrap_err();
        assert_eq!(err.scim_type, Some(ScimType::Mutability));
        assert!(err.detail.starts_with("Operations[2]: "), "{}", err.detail);
        assert_eq!(resource, user());
    }

    /// The registry plus an extension with immutable attributes (the real
    /// schemas have none outside Group `members`).
    struct WithBadges {
        badges: Schema,
    }

    const BADGES: &str = "urn:example:params:scim:schemas:extension:badges:2.0:User";

    impl WithBadges {
        fn new() -> Self {
            let badges = serde_json::from_value(json!({
                "id": BADGES,
                "name": "Badges",
                "attributes": [
                    {"name": "badgeId", "type": "string", "multiValued": false, "required": false,
                     "mutability": "immutable", "returned": "default"},
                    {"name": "card", "type": "complex", "multiValued": false, "required": false,
                     "mutability": "readWrite", "returned": "default", "subAttributes": [
                        {"name": "serial", "type": "string", "multiValued": false, "required": false,
                         "mutability": "immutable", "returned": "default"},
                        {"name": "color", "type": "string", "multiValued": false, "required": false,
                         "mutability": "readWrite", "returned": "default"}
                    ]}
                ]
            }))
            .unwrap();
            Self { badges }
        }
    }

    impl AttrLookup for WithBadges {
        fn resolve(&self, kind: ResourceKind, path: &AttrPath) -> Option<ResolvedAttr<'_>> {
            if kind == User && path.uri.as_deref().is_some_and(|uri| uri.eq_ignore_ascii_case(BADGES)) {
                let attr = self.badges.attribute(&path.name)?;
                let sub = match &path.sub_attr {
                    Some(sub) => Some(attr.sub_attribute(sub)?),
                    None => None,
                };
                return Some(ResolvedAttr { schema: &self.badges.id, attr, sub });
            }
            registry().resolve(kind, path)
        }

        fn schema_urn(&self, kind: ResourceKind, urn: &str) -> Option<&str> {
            if kind == User && urn.eq_ignore_ascii_case(BADGES) {
                return Some(&self.badges.id);
            }
            AttrLookup::schema_urn(registry(), kind, urn)
        }
    }

    #[test]
    fn immutable_attributes_may_be_set_once() {
        let lookup = WithBadges::new();
        let badged = json!({"schemas": [USER_SCHEMA, BADGES], "userName": "b", BADGES: {"badgeId": "B1", "card": {"serial": "S1"}}});
        let cases: Vec<(&str, Value, Value, Result<Value, ScimType>)> = vec![
            (
                "set when absent",
                json!({"schemas": [USER_SCHEMA], "userName": "b"}),
                json!([{"op": "add", "path": format!("{BADGES}:badgeId"), "value": "B1"}]),
                Ok(json!({"schemas": [USER_SCHEMA, BADGES], "userName": "b", BADGES: {"badgeId": "B1"}})),
            ),
            (
                "same value again",
                badged.clone(),
                json!([{"op": "replace", "path": format!("{BADGES}:badgeId"), "value": "B1"}]),
                Ok(badged.clone()),
            ),
            (
                "changed",
                badged.clone(),
                json!([{"op": "replace", "path": format!("{BADGES}:badgeId"), "value": "B2"}]),
                Err(ScimType::Mutability),
            ),
            (
                "removed",
                badged.clone(),
                json!([{"op": "remove", "path": format!("{BADGES}:badgeId")}]),
                Err(ScimType::Mutability),
            ),
            (
                "immutable sub-attribute changed",
                badged.clone(),
                json!([{"op": "add", "value": {BADGES: {"card": {"serial": "S2"}}}}]),
                Err(ScimType::Mutability),
            ),
            (
                "other sub-attribute of it changed",
                badged.clone(),
                json!([{"op": "replace", "path": format!("{BADGES}:card.color"), "value": "red"}]),
                Ok(
                    json!({"schemas": [USER_SCHEMA, BADGES], "userName": "b", BADGES: {"badgeId": "B1", "card": {"serial": "S1", "color": "red"}}}),
                ),
            ),
        ];
        for (name, before, ops, expected) in cases {
            let request = PatchRequest::parse(&body(ops)).unwrap();
            let mut resource = before.clone();
            match (apply_with(&lookup, User, &mut resource, &request), expected) {
                (Ok(_), Ok(after)) => assert_eq!(resource, after, "{name}"),
                (Err(e), Err(scim_type)) => {
                    assert_eq!(e.scim_type, Some(scim_type), "{name}: {e}");
                    assert_eq!(resource, before, "{name}");
                }
                (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn value_filters() {
        let reg = registry();
        let emails = reg.resolve_str(User, "emails").unwrap().attr;
        let x509 = reg.resolve_str(User, "x509Certificates").unwrap().attr;
        let email = json!({"value": "Babs@Example.com", "type": "work", "primary": true, "display": ""});
        let cert = json!({"value": "MIIDQzCC", "type": "Work"});
        let cases: Vec<(&str, &Attribute, &Value, bool)> = vec![
            ("type eq \"work\"", emails, &email, true),
            ("TYPE EQ \"WORK\"", emails, &email, true),
            ("value eq \"babs@example.com\"", emails, &email, true),
            ("value ne \"babs@example.com\"", emails, &email, false),
            ("value co \"@EXAMPLE\"", emails, &email, true),
            ("value sw \"babs\"", emails, &email, true),
            ("value ew \".org\"", emails, &email, false),
            ("value gt \"a\"", emails, &email, true),
            ("value ge \"babs@example.com\"", emails, &email, true),
            ("value lt \"babs\"", emails, &email, false),
            ("value le \"c\"", emails, &email, true),
            ("primary eq true", emails, &email, true),
            ("primary eq false", emails, &email, false),
            ("primary eq \"True\"", emails, &email, true),
            ("type pr", emails, &email, true),
            ("display pr", emails, &email, false),
            ("type eq null", emails, &email, false),
            ("display eq \"\"", emails, &email, true),
            ("type eq \"work\" and primary eq true", emails, &email, true),
            ("type eq \"home\" or primary eq true", emails, &email, true),
            ("type eq \"home\" and primary eq true", emails, &email, false),
            ("not (type eq \"home\")", emails, &email, true),
            ("not (type eq \"work\" or type eq \"home\")", emails, &email, false),
            ("nope eq \"x\"", emails, &email, false),
            // x509Certificates.value is caseExact; type is not.
            ("value eq \"miidqzcc\"", x509, &cert, false),
            ("value eq \"MIIDQzCC\"", x509, &cert, true),
            ("value sw \"miid\"", x509, &cert, false),
            ("type eq \"work\"", x509, &cert, true),
        ];
        for (filter, attr, element, expected) in cases {
            let PatchPath::Value(path) = format!("{}[{filter}]", attr.name).parse::<PatchPath>().unwrap() else {
                panic!("{filter}: not a value path")
            };
            assert_eq!(matches(&path.filter, element, attr), expected, "{filter}");
        }
    }

    #[test]
    fn value_filters_on_dates_and_numbers() {
        let attr: Attribute = serde_json::from_value(json!({
            "name": "logins", "type": "complex", "multiValued": true, "required": false,
            "mutability": "readWrite", "returned": "default", "subAttributes": [
                {"name": "at", "type": "dateTime", "multiValued": false, "required": false, "mutability": "readWrite", "returned": "default"},
                {"name": "count", "type": "integer", "multiValued": false, "required": false, "mutability": "readWrite", "returned": "default"},
                {"name": "score", "type": "decimal", "multiValued": false, "required": false, "mutability": "readWrite", "returned": "default"}
            ]
        }))
        .unwrap();
        let element = json!({"at": "2024-05-01T12:00:00+02:00", "count": 7, "score": 2.5});
        let cases = [
            ("at eq \"2024-05-01T10:00:00Z\"", true),
            ("at gt \"2024-05-01T09:59:59Z\"", true),
            ("at lt \"2024-05-01T10:00:00Z\"", false),
            ("count ge 7", true),
            ("count gt 7", false),
            ("count lt 10", true),
            ("score le 2.5", true),
            ("score gt 2", true),
            ("count eq \"7\"", false),
        ];
        for (filter, expected) in cases {
            let PatchPath::Value(path) = format!("logins[{filter}]").parse::<PatchPath>().unwrap() else {
                panic!("{filter}: not a value path")
            };
            assert_eq!(matches(&path.filter, &element, &attr), expected, "{filter}");
        }
    }
}
