//! The SCIM schemas Roster serves (RFC 7643): loaded from `schemas/*.json`,
//! they drive validation, `returned`/`mutability`/`caseExact`/`uniqueness`
//! behaviour, filter translation, PATCH, and what `/Schemas` and
//! `/ResourceTypes` answer.
//!
//! The files are RFC 7643 §8.7.1 with these corrections:
//!
//! - Group `displayName` is `required` (§4.2 says REQUIRED; the definition
//!   says `false`).
//! - Group `members` gains `display` (`readOnly`: Roster fills it in), and
//!   `members.value` is `required` within each member: a member is its id.
//! - User `groups.$ref` references `Group` only (errata 8471); Enterprise
//!   `manager.value` is `caseExact` like the `id` it holds (errata 8472);
//!   `x509Certificates.value`, binary, is `caseExact` with no `uniqueness`
//!   (§2.3.6, errata 8470).
//! - User `addresses` gains `primary`, which §4.1.2 and the §8.2 example use.
//!
//! Where the RFCs leave room, this module decides:
//!
//! - Unqualified attribute names resolve against the core schema and the
//!   common attributes only; extension attributes need their URN.
//! - Unknown names in `attributes`/`excludedAttributes` are ignored; when
//!   both lists are given, both apply.
//! - Validation refuses unknown attributes (`invalidSyntax`) rather than
//!   ignoring them, and drops `readOnly` ones (RFC 7643 §7 says they are
//!   ignored); `writeOnly` ones (`password`) are checked and not stored.
//!   An unknown URN in `schemas` is left out when the body holds nothing
//!   under it (Entra ID's ADSCIM Group URN), refused otherwise.

use scim_v2::filter::{AttrPath, PatchPath};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::scim::ScimError;

/// The two SCIM resource types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

/// URNs of the schemas Roster knows.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

/// RFC 7643 §7 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

/// RFC 7643 §7 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

/// RFC 7643 §7 `uniqueness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

/// One attribute definition (RFC 7643 §7), as in `schemas/*.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AttrType,
    pub multi_valued: bool,
    #[serde(default)]
    pub description: String,
    pub required: bool,
    #[serde(default)]
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    #[serde(default = "no_uniqueness")]
    pub uniqueness: Uniqueness,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canonical_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_attributes: Vec<Attribute>,
}

fn no_uniqueness() -> Uniqueness {
    Uniqueness::None
}

/// A schema (RFC 7643 §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schema {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub attributes: Vec<Attribute>,
}

/// An attribute path resolved against the schemas: which schema, which
/// attribute, and which sub-attribute when the path names one.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedAttr<'a> {
    pub schema: &'a str,
    pub attr: &'a Attribute,
    pub sub: Option<&'a Attribute>,
}

impl ResolvedAttr<'_> {
    /// The attribute the path ends at (the sub-attribute when there is one).
    pub fn leaf(&self) -> &Attribute {
        self.sub.unwrap_or(self.attr)
    }

    /// Whether the attribute lives in an extension schema (stored under its URN).
    pub fn in_extension(&self) -> bool {
        self.schema != USER_SCHEMA && self.schema != GROUP_SCHEMA
    }
}

impl ResourceKind {
    /// Both resource types, in the order discovery lists them.
    pub const ALL: [ResourceKind; 2] = [ResourceKind::User, ResourceKind::Group];

    /// The resource type's name: its `ResourceType` id and `meta.resourceType`.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }

    /// The endpoint relative to the SCIM base URL (RFC 7644 §3.2).
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "/Users",
            ResourceKind::Group => "/Groups",
        }
    }

    /// The URN of the resource type's core schema.
    pub fn core_urn(self) -> &'static str {
        match self {
            ResourceKind::User => USER_SCHEMA,
            ResourceKind::Group => GROUP_SCHEMA,
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Attribute {
    /// The sub-attribute called `name`, whatever its case (RFC 7643 §2.1).
    pub fn sub_attribute(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    fn simple(name: &str, kind: AttrType, case_exact: bool, mutability: Mutability, description: &str) -> Self {
        Attribute {
            name: name.to_string(),
            kind,
            multi_valued: false,
            description: description.to_string(),
            required: false,
            case_exact,
            mutability,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: Vec::new(),
            reference_types: Vec::new(),
            sub_attributes: Vec::new(),
        }
    }
}

impl Schema {
    /// The attribute called `name`, whatever its case (RFC 7643 §2.1).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// URNs of the RFC 7644 messages and RFC 7643 §5–7 resources discovery answers.
const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SERVICE_PROVIDER_CONFIG_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// The common attributes every resource carries outside any schema (RFC 7643
/// §3.1): `id`, `externalId` and `meta`. `schemas` is not among them: it is
/// the resource's envelope, handled apart by validation and projection.
pub fn common_attributes() -> &'static [Attribute] {
    static COMMON: std::sync::LazyLock<Vec<Attribute>> = std::sync::LazyLock::new(|| {
        use Mutability::{ReadOnly, ReadWrite};
        let id = Attribute {
            returned: Returned::Always,
            uniqueness: Uniqueness::Server,
            ..Attribute::simple(
                "id",
                AttrType::String,
                true,
                ReadOnly,
                "A unique identifier for a SCIM resource as defined by the service provider.",
            )
        };
        let external_id = Attribute::simple(
            "externalId",
            AttrType::String,
            true,
            ReadWrite,
            "A String that is an identifier for the resource as defined by the provisioning client.",
        );
        let meta_sub = |name: &str, kind: AttrType, description: &str| {
            Attribute::simple(name, kind, kind != AttrType::DateTime, ReadOnly, description)
        };
        let meta = Attribute {
            sub_attributes: vec![
                meta_sub("resourceType", AttrType::String, "The name of the resource type of the resource."),
                meta_sub("created", AttrType::DateTime, "The date and time the resource was added."),
                meta_sub("lastModified", AttrType::DateTime, "The date and time the resource was last updated."),
                meta_sub("location", AttrType::String, "The URI of the resource being returned."),
                meta_sub("version", AttrType::String, "The version (ETag) of the resource being returned."),
            ],
            ..Attribute::simple("meta", AttrType::Complex, false, ReadOnly, "Resource metadata.")
        };
        vec![id, external_id, meta]
    });
    &COMMON
}

/// The common attribute called `name`, whatever its case.
fn common_attribute(name: &str) -> Option<&'static Attribute> {
    common_attributes().iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// What a write request is: `POST` (create) or `PUT` (replace).
///
/// Both are validated the same way here. What differs between them, that an
/// `immutable` attribute already set must keep its value on `PUT` (RFC 7644
/// §3.5.1), needs the stored resource, which the caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Create,
    Replace,
}

impl WriteMode {
    fn verb(self) -> &'static str {
        match self {
            WriteMode::Create => "created",
            WriteMode::Replace => "replaced",
        }
    }
}

/// What one resource or request may hold, the same on both backends: they
/// keep every stored value indexable (PostgreSQL refuses a B-tree entry over
/// 2,704 bytes) and every check on a request linear and bounded. Advertised
/// in `/ServiceProviderConfig` under [`RESOURCE_LIMITS_URN`].
pub mod resource_limits {
    /// Characters of a value Roster looks resources up by: `userName`,
    /// `externalId`, `displayName` and `emails.value`.
    pub const MAX_INDEXED_CHARS: usize = 512;
    /// Characters of any other string or binary (base64) value.
    pub const MAX_STRING_CHARS: usize = 8_192;
    /// Values of one multi-valued attribute (`emails`, `roles`, …) other
    /// than a Group's `members`.
    pub const MAX_VALUES: usize = 100;
    /// Member ids one request may name: in a Group's `members`, or in all
    /// the operations of one PATCH together.
    pub const MAX_MEMBERS: usize = 10_000;
    /// Names in `attributes` or `excludedAttributes`.
    pub const MAX_ATTRIBUTE_NAMES: usize = 100;
    /// The attributes held to [`MAX_INDEXED_CHARS`], as validation paths
    /// name them.
    pub(super) const INDEXED: [&str; 4] = ["userName", "externalId", "displayName", "emails.value"];
}

/// The `/ServiceProviderConfig` extension that states [`resource_limits`].
pub const RESOURCE_LIMITS_URN: &str = "urn:roster:params:scim:ServiceProviderConfig:limits";

/// The limits `/ServiceProviderConfig` advertises (RFC 7643 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScimLimits {
    /// `filter.maxResults`: the most resources one query answers.
    pub max_results: usize,
    /// `bulk.maxOperations`.
    pub max_operations: usize,
    /// `bulk.maxPayloadSize`, in bytes.
    pub max_payload_size: usize,
}

/// The schemas Roster serves, parsed once from `schemas/*.json`.
#[derive(Debug)]
pub struct Registry {
    user: &'static Schema,
    group: &'static Schema,
    user_extensions: Vec<&'static Schema>,
    all: Vec<&'static Schema>,
}

/// The registry, parsed from the embedded `schemas/*.json` at first use.
pub fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| match Registry::load() {
        Ok(registry) => registry,
        // The files are compiled in and a unit test parses them: this cannot
        // happen in a build that passed its tests.
        Err(e) => panic!("embedded SCIM schemas are invalid: {e}"),
    })
}

const USER_JSON: &str = include_str!("../../schemas/user.json");
const GROUP_JSON: &str = include_str!("../../schemas/group.json");
const ENTERPRISE_USER_JSON: &str = include_str!("../../schemas/enterprise_user.json");

impl Registry {
    /// Parses and checks the embedded schema files. The schemas live as long
    /// as the process (the registry is built once), so they are leaked to
    /// hand out `&'static` references.
    fn load() -> Result<Self, String> {
        let parse = |file: &str, json: &str, urn: &str| -> Result<&'static Schema, String> {
            let schema: Schema = serde_json::from_str(json).map_err(|e| format!("{file}: {e}"))?;
            if schema.id != urn {
                return Err(format!("{file}: id is `{}`, expected `{urn}`", schema.id));
            }
            check_attributes(&schema.attributes, false).map_err(|e| format!("{file}: {e}"))?;
            Ok(Box::leak(Box::new(schema)))
        };
        let user = parse("schemas/user.json", USER_JSON, USER_SCHEMA)?;
        let group = parse("schemas/group.json", GROUP_JSON, GROUP_SCHEMA)?;
        let enterprise = parse("schemas/enterprise_user.json", ENTERPRISE_USER_JSON, ENTERPRISE_USER_SCHEMA)?;
        Ok(Registry { user, group, user_extensions: vec![enterprise], all: vec![user, group, enterprise] })
    }

    /// Every schema, core schemas first.
    pub fn schemas(&self) -> &[&Schema] {
        &self.all
    }

    /// The schema with this URN, whatever its case.
    pub fn schema(&self, urn: &str) -> Option<&Schema> {
        self.all.iter().copied().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// The core schema of a resource type.
    pub fn core(&self, kind: ResourceKind) -> &Schema {
        match kind {
            ResourceKind::User => self.user,
            ResourceKind::Group => self.group,
        }
    }

    /// The schema extensions of a resource type; none of them is required.
    /// User: the Enterprise User extension. Group: none.
    pub fn extensions(&self, kind: ResourceKind) -> &[&Schema] {
        match kind {
            ResourceKind::User => &self.user_extensions,
            ResourceKind::Group => &[],
        }
    }

    /// The extension of `kind` with this URN, whatever its case.
    pub fn extension(&self, kind: ResourceKind, urn: &str) -> Option<&Schema> {
        self.extensions(kind).iter().copied().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Resolves an attribute path against a resource type's schemas.
    ///
    /// Without a URI the name is looked up among the common attributes (`id`,
    /// `externalId`, `meta`) and the core schema: extension attributes must be
    /// URN-qualified (RFC 7644 §3.10). With a URI, it must be the core schema
    /// or one of the resource type's extensions (any case); the core URI
    /// qualifies core and common attributes alike. Names and sub-attribute
    /// names match whatever their case (RFC 7643 §2.1). Anything else, or a
    /// sub-attribute of a simple attribute, resolves to `None`.
    pub fn resolve(&self, kind: ResourceKind, path: &AttrPath) -> Option<ResolvedAttr<'_>> {
        let core = self.core(kind);
        let schema = match path.uri.as_deref() {
            None => core,
            Some(uri) if uri.eq_ignore_ascii_case(&core.id) => core,
            Some(uri) => self.extension(kind, uri)?,
        };
        let attr = if std::ptr::eq(schema, core) {
            common_attribute(&path.name).or_else(|| core.attribute(&path.name))?
        } else {
            schema.attribute(&path.name)?
        };
        let sub = match path.sub_attr.as_deref() {
            None => None,
            Some(sub) => Some(attr.sub_attribute(sub)?),
        };
        Some(ResolvedAttr { schema: &schema.id, attr, sub })
    }

    /// [`Registry::resolve`] for a plain attribute path written as text,
    /// `name.givenName` or
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
    pub fn resolve_str(&self, kind: ResourceKind, path: &str) -> Option<ResolvedAttr<'_>> {
        self.resolve(kind, &parse_attr_path(path)?)
    }
}

/// Parses a plain attribute path (RFC 7644 §3.10: `[URI ":"] name ["." sub]`).
///
/// `scim_v2`'s PATCH path grammar does the work; its `ATTRNAME` rule refuses
/// `$ref`, which RFC 7643 §2.1 allows as a sub-attribute name, so a path it
/// refuses is split by hand: the URI is everything before the last `:`.
/// Value paths (`emails[type eq "work"]`) are not plain paths: `None`.
pub fn parse_attr_path(path: &str) -> Option<AttrPath> {
    let path = path.trim();
    match path.parse::<PatchPath>() {
        Ok(PatchPath::Attr(attr)) => Some(attr),
        Ok(PatchPath::Value(_)) => None,
        Err(_) => split_attr_path(path),
    }
}

fn split_attr_path(path: &str) -> Option<AttrPath> {
    let (uri, rest) = match path.rsplit_once(':') {
        Some((uri, rest)) if !uri.is_empty() => (Some(uri), rest),
        Some(_) => return None,
        None => (None, path),
    };
    let (name, sub_attr) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    };
    let valid = |s: &str| {
        s == "$ref" || {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
    };
    if !valid(name) || sub_attr.is_some_and(|s| !valid(s)) {
        return None;
    }
    Some(AttrPath { uri: uri.map(str::to_string), name: name.to_string(), sub_attr: sub_attr.map(str::to_string) })
}

/// Checks what the code relies on: unique names, sub-attributes exactly on
/// complex attributes, and no complex sub-attributes (RFC 7643 §2.3.8).
fn check_attributes(attributes: &[Attribute], nested: bool) -> Result<(), String> {
    for (i, attr) in attributes.iter().enumerate() {
        if attributes[..i].iter().any(|a| a.name.eq_ignore_ascii_case(&attr.name)) {
            return Err(format!("attribute `{}` is defined twice", attr.name));
        }
        match (attr.kind, nested) {
            (AttrType::Complex, true) => return Err(format!("sub-attribute `{}` is complex", attr.name)),
            (AttrType::Complex, false) if attr.sub_attributes.is_empty() => {
                return Err(format!("complex attribute `{}` has no subAttributes", attr.name))
            }
            (AttrType::Complex, false) => {
                check_attributes(&attr.sub_attributes, true).map_err(|e| format!("{}: {e}", attr.name))?
            }
            _ if !attr.sub_attributes.is_empty() => {
                return Err(format!("attribute `{}` has subAttributes but is not complex", attr.name))
            }
            _ => {}
        }
    }
    Ok(())
}

// --- Projection: `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9).

/// One entry of `attributes` or `excludedAttributes`, resolved to canonical names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selector<'a> {
    /// A whole schema named by its URN: every attribute it defines.
    Schema(&'a str),
    /// An attribute, or one of its sub-attributes.
    Attr { schema: &'a str, attr: &'a str, sub: Option<&'a str> },
}

/// A resolved list of selectors.
#[derive(Debug, Default)]
struct Selection<'a> {
    /// Whether the list named anything at all (even names that resolve to nothing).
    given: bool,
    items: Vec<Selector<'a>>,
}

impl<'a> Selection<'a> {
    /// Whether the list names `attr` of `schema` as a whole.
    fn whole(&self, schema: &str, attr: &str) -> bool {
        self.items.iter().any(|s| match *s {
            Selector::Schema(urn) => urn == schema,
            Selector::Attr { schema: s, attr: a, sub: None } => s == schema && a == attr,
            Selector::Attr { .. } => false,
        })
    }

    /// The sub-attributes of `attr` the list names.
    fn subs(&self, schema: &str, attr: &str) -> Vec<&'a str> {
        self.items
            .iter()
            .filter_map(|s| match *s {
                Selector::Attr { schema: s, attr: a, sub: Some(sub) } if s == schema && a == attr => Some(sub),
                _ => None,
            })
            .collect()
    }
}

impl Registry {
    /// Resolves `attributes`/`excludedAttributes` entries. Each entry may
    /// itself be a comma-separated list (the query parameter's raw form).
    /// Names that resolve to nothing are ignored.
    fn selection(&self, kind: ResourceKind, names: &[String]) -> Selection<'_> {
        let mut selection = Selection::default();
        for name in names.iter().flat_map(|n| n.split(',')).map(str::trim).filter(|n| !n.is_empty()) {
            selection.given = true;
            let core = self.core(kind);
            if name.eq_ignore_ascii_case(&core.id) {
                selection.items.push(Selector::Schema(&core.id));
            } else if let Some(ext) = self.extension(kind, name) {
                selection.items.push(Selector::Schema(&ext.id));
            } else if let Some(r) = self.resolve_str(kind, name) {
                let sub = r.sub.map(|s| s.name.as_str());
                selection.items.push(Selector::Attr { schema: r.schema, attr: &r.attr.name, sub });
            }
        }
        selection
    }

    /// Applies the `returned` characteristic and a request's `attributes` and
    /// `excludedAttributes` to a stored resource (canonical key spelling,
    /// extension attributes under their URN) and answers what to send.
    ///
    /// - `returned: never` attributes are never sent (`password`);
    ///   `always` ones always are (`id`, `schemas`), whatever the lists say.
    /// - With `attributes`, only the named attributes (and `always` ones)
    ///   are sent; a named sub-attribute (`name.givenName`, `emails.value`)
    ///   sends its parent with only the named sub-attributes; a schema URN
    ///   names all of that schema's attributes.
    /// - Without `attributes`, `default` attributes are sent and `request`
    ///   ones are not.
    /// - `excludedAttributes` then removes attributes or sub-attributes that
    ///   are not `always`; when both lists are given both apply.
    /// - Complex values and extension objects left empty are dropped;
    ///   `schemas` is sent unchanged.
    pub fn project(&self, kind: ResourceKind, resource: &Value, attributes: &[String], excluded: &[String]) -> Value {
        let Some(object) = resource.as_object() else {
            return resource.clone();
        };
        let include = self.selection(kind, attributes);
        let exclude = self.selection(kind, excluded);
        let core = self.core(kind);
        let mut out = Map::new();
        for (key, value) in object {
            if key.eq_ignore_ascii_case("schemas") {
                out.insert(key.clone(), value.clone());
            } else if let Some(ext) = self.extension(kind, key) {
                if let Some(ext_object) = value.as_object() {
                    let projected = project_object(ext, ext_object, &include, &exclude, false);
                    if !projected.is_empty() {
                        out.insert(ext.id.clone(), Value::Object(projected));
                    }
                }
            } else {
                if let Some(v) = project_entry(core, true, key, value, &include, &exclude) {
                    out.insert(key.clone(), v);
                }
            }
        }
        Value::Object(out)
    }
}

/// Projects the attributes of one schema held in `object`; with `core`, the
/// common attributes are looked up too.
fn project_object(
    schema: &Schema,
    object: &Map<String, Value>,
    include: &Selection<'_>,
    exclude: &Selection<'_>,
    core: bool,
) -> Map<String, Value> {
    object
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), project_entry(schema, core, key, value, include, exclude)?)))
        .collect()
}

/// Projects one attribute of `schema` (or, with `core`, a common attribute).
fn project_entry(
    schema: &Schema,
    core: bool,
    key: &str,
    value: &Value,
    include: &Selection<'_>,
    exclude: &Selection<'_>,
) -> Option<Value> {
    let attr = if core { common_attribute(key).or_else(|| schema.attribute(key)) } else { schema.attribute(key) };
    match attr {
        Some(attr) => project_attr(&schema.id, attr, value, include, exclude),
        // Not in the schema (the store put it there): treated as `default`.
        None => (!include.given).then(|| value.clone()),
    }
}

fn project_attr(
    schema: &str,
    attr: &Attribute,
    value: &Value,
    include: &Selection<'_>,
    exclude: &Selection<'_>,
) -> Option<Value> {
    let named_whole = include.whole(schema, &attr.name);
    let named_subs = include.subs(schema, &attr.name);
    match attr.returned {
        Returned::Never => return None,
        Returned::Always => {}
        returned => {
            if exclude.whole(schema, &attr.name) {
                return None;
            }
            if include.given && !named_whole && named_subs.is_empty() {
                return None;
            }
            if !include.given && returned == Returned::Request {
                return None;
            }
        }
    }
    if attr.kind != AttrType::Complex {
        return Some(value.clone());
    }
    // Only the named sub-attributes when the request named some and not the whole.
    let restrict = include.given && !named_whole && !named_subs.is_empty();
    let excluded_subs = exclude.subs(schema, &attr.name);
    let keep_sub = |key: &str| match attr.sub_attribute(key) {
        None => !restrict,
        Some(sub) => match sub.returned {
            Returned::Never => false,
            Returned::Always => true,
            returned => {
                let named = named_subs.contains(&sub.name.as_str());
                !excluded_subs.contains(&sub.name.as_str()) && (named || (!restrict && returned != Returned::Request))
            }
        },
    };
    let project_element = |element: &Value| match element {
        Value::Object(o) => {
            let kept: Map<String, Value> =
                o.iter().filter(|(k, _)| keep_sub(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => Some(other.clone()),
    };
    match value {
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(project_element).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => project_element(other),
    }
}

// --- Validation of POST and PUT bodies (RFC 7643 §2, §7; RFC 7644 §3.3, §3.5.1).

impl Registry {
    /// Checks a client's `POST`/`PUT` body and answers the normalized
    /// resource to store:
    ///
    /// - keys in the schema's spelling (RFC 7643 §2.1: names are
    ///   case-insensitive), extension attributes in an object under the
    ///   extension's canonical URN; a URN-qualified top-level key
    ///   (`"urn:…:enterprise:2.0:User:department"`) is moved there too;
    /// - `schemas` must be an array of strings (`invalidSyntax`) listing the
    ///   core URN (`invalidValue`); another resource type's schema, or an
    ///   unknown URN with an object of attributes under it, is refused
    ///   (`invalidValue`); an unknown URN with nothing under it is left out
    ///   (Entra ID adds its ADSCIM URN to groups). It is written back
    ///   canonical, core URN first, plus the URN of any extension object
    ///   present;
    /// - unknown attributes and sub-attributes, and a name given twice in
    ///   different cases: `invalidSyntax`;
    /// - values must match the attribute's type and plurality
    ///   (`invalidValue`); booleans sent as the strings `"true"`/`"false"` in
    ///   any case (Microsoft Entra ID sends `"False"`) become JSON booleans;
    ///   `canonicalValues` are not enforced;
    /// - `null`, `""`, `[]` and complex values left empty mean unassigned and
    ///   are removed;
    /// - `readOnly` attributes and sub-attributes (`id`, `meta`, `groups`,
    ///   `members.display`, `manager.displayName`) are ignored (RFC 7643 §7);
    /// - `writeOnly` attributes (`password`) are type-checked, then dropped:
    ///   Roster stores no credentials;
    /// - multi-valued attributes: elements with the same `value` and `type`
    ///   collapse into the first (which becomes primary if any of them was);
    ///   then at most one may be `primary: true` (RFC 7643 §2.4);
    /// - `required` attributes must be present (`userName`, Group
    ///   `displayName`), and `required` sub-attributes in every complex value
    ///   given (Group `members.value`): `invalidValue`.
    ///
    /// The answer never contains `id` or `meta`.
    pub fn validate(&self, kind: ResourceKind, input: &Value, mode: WriteMode) -> Result<Value, ScimError> {
        let object =
            input.as_object().ok_or_else(|| ScimError::invalid_syntax(format!("a {kind} must be a JSON object")))?;
        let core = self.core(kind);
        let mut schemas = self.declared_schemas(kind, object)?;

        let mut parts = Parts { parts: vec![(core, Map::new())], seen: Vec::new() };
        for (key, value) in object {
            if key.eq_ignore_ascii_case("schemas") {
                continue;
            }
            if let Some(ext) = self.extension(kind, key) {
                match value {
                    Value::Null => {}
                    Value::Object(ext_object) => {
                        for (name, v) in ext_object {
                            let attr = ext.attribute(name).ok_or_else(|| {
                                ScimError::invalid_syntax(format!("`{name}` is not an attribute of {}", ext.id))
                            })?;
                            parts.put(ext, attr, v)?;
                        }
                    }
                    _ => {
                        return Err(ScimError::invalid_syntax(format!(
                            "`{}` must be an object holding the extension's attributes",
                            ext.id
                        )))
                    }
                }
                continue;
            }
            if let Some(attr) = common_attribute(key).or_else(|| core.attribute(key)) {
                parts.put(core, attr, value)?;
                continue;
            }
            // `urn:…:User:userName` or `urn:…:enterprise:2.0:User:department` as a key.
            let qualified = parse_attr_path(key)
                .filter(|p| p.uri.is_some() && p.sub_attr.is_none())
                .and_then(|p| self.resolve(kind, &p));
            match qualified {
                Some(r) => {
                    let schema = self.schema(r.schema).unwrap_or(core);
                    parts.put(schema, r.attr, value)?;
                }
                None => {
                    return Err(ScimError::invalid_syntax(format!("`{key}` is not an attribute of a {kind}")));
                }
            }
        }

        for (schema, part) in &parts.parts {
            let present = std::ptr::eq(*schema, core) || !part.is_empty();
            for attr in schema.attributes.iter().filter(|a| a.required && a.mutability != Mutability::ReadOnly) {
                if present && !part.contains_key(&attr.name) {
                    return Err(ScimError::invalid_value(format!(
                        "attribute `{}` is required: a {kind} cannot be {} without it",
                        attr.name,
                        mode.verb()
                    )));
                }
            }
        }

        let mut parts = parts.parts.into_iter();
        let mut out = parts.next().map(|(_, m)| m).unwrap_or_default();
        for (schema, part) in parts {
            if part.is_empty() {
                continue;
            }
            if !schemas.contains(&schema.id.as_str()) {
                schemas.push(&schema.id);
            }
            out.insert(schema.id.clone(), Value::Object(part));
        }
        out.insert("schemas".into(), Value::Array(schemas.into_iter().map(|s| Value::String(s.into())).collect()));
        Ok(Value::Object(out))
    }

    /// The body's `schemas`, canonical, core URN first.
    fn declared_schemas(&self, kind: ResourceKind, object: &Map<String, Value>) -> Result<Vec<&str>, ScimError> {
        let core = self.core(kind);
        let mut found = object.iter().filter(|(k, _)| k.eq_ignore_ascii_case("schemas")).map(|(_, v)| v);
        let declared = found.next();
        if found.next().is_some() {
            return Err(ScimError::invalid_syntax("attribute `schemas` is given more than once"));
        }
        let missing = || ScimError::invalid_value(format!("`schemas` must list {}", core.id));
        let list = match declared {
            None | Some(Value::Null) => return Err(missing()),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(ScimError::invalid_syntax("`schemas` must be an array of schema URNs")),
        };
        let mut schemas = vec![core.id.as_str()];
        let mut has_core = false;
        for item in list {
            let urn =
                item.as_str().ok_or_else(|| ScimError::invalid_syntax("`schemas` must be an array of schema URNs"))?;
            if urn.eq_ignore_ascii_case(&core.id) {
                has_core = true;
            } else if let Some(ext) = self.extension(kind, urn) {
                if !schemas.contains(&ext.id.as_str()) {
                    schemas.push(&ext.id);
                }
            } else if self.schema(urn).is_some() || object.keys().any(|k| k.eq_ignore_ascii_case(urn)) {
                // Another resource type's schema, or an unknown extension
                // that carries attributes Roster would have to drop.
                return Err(ScimError::invalid_value(format!("`{urn}` is not a schema of the {kind} resource type")));
            }
            // An unknown URN with no attributes under it declares nothing
            // Roster would lose: Entra ID lists its ADSCIM Group URN on every
            // group it creates (fixtures/entra/02_groups.json). It is not kept.
        }
        if !has_core {
            return Err(missing());
        }
        Ok(schemas)
    }
}

/// The validated attributes of each schema of a resource, core first.
struct Parts<'r> {
    parts: Vec<(&'r Schema, Map<String, Value>)>,
    /// `(schema, attribute)` pairs given so far, kept or not.
    seen: Vec<(&'r str, &'r str)>,
}

impl<'r> Parts<'r> {
    fn put(&mut self, schema: &'r Schema, attr: &'r Attribute, value: &Value) -> Result<(), ScimError> {
        if self.seen.contains(&(schema.id.as_str(), attr.name.as_str())) {
            return Err(ScimError::invalid_syntax(format!("attribute `{}` is given more than once", attr.name)));
        }
        self.seen.push((&schema.id, &attr.name));
        let Some(value) = validate_attr(attr, value, &attr.name)? else {
            return Ok(());
        };
        if attr.mutability == Mutability::WriteOnly {
            return Ok(());
        }
        let index = match self.parts.iter().position(|(s, _)| std::ptr::eq(*s, schema)) {
            Some(i) => i,
            None => {
                self.parts.push((schema, Map::new()));
                self.parts.len() - 1
            }
        };
        self.parts[index].1.insert(attr.name.clone(), value);
        Ok(())
    }
}

/// Validates one attribute's value; `None` means unassigned (or ignored).
fn validate_attr(attr: &Attribute, value: &Value, path: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() || attr.mutability == Mutability::ReadOnly {
        return Ok(None);
    }
    if !attr.multi_valued {
        if value.is_array() {
            return Err(ScimError::invalid_value(format!(
                "attribute `{path}` is single-valued: an array is not allowed"
            )));
        }
        return validate_single(attr, value, path);
    }
    let Value::Array(items) = value else {
        return Err(ScimError::invalid_value(format!(
            "attribute `{path}` is multi-valued: its value must be an array"
        )));
    };
    let most = if attr.name == "members" { resource_limits::MAX_MEMBERS } else { resource_limits::MAX_VALUES };
    values_within(path, items.len(), most)?;
    let mut values: Vec<Value> = Vec::with_capacity(items.len());
    let mut index: HashMap<ElementKey, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.is_array() {
            return Err(ScimError::invalid_value(format!("`{path}[{i}]` must not be an array")));
        }
        let Some(item) = validate_single(attr, item, &format!("{path}[{i}]"))? else {
            continue;
        };
        match index.entry(ElementKey::of(attr, &item)) {
            Entry::Occupied(kept) => {
                if let (true, Some(kept)) = (is_primary(&item), values[*kept.get()].as_object_mut()) {
                    kept.insert("primary".into(), Value::Bool(true));
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(values.len());
                values.push(item);
            }
        }
    }
    if values.iter().filter(|v| is_primary(v)).count() > 1 {
        return Err(ScimError::invalid_value(format!("attribute `{path}`: at most one value may have `primary` true")));
    }
    Ok((!values.is_empty()).then_some(Value::Array(values)))
}

/// A multi-valued attribute at `path` holding `count` values, at most `most`.
pub(crate) fn values_within(path: &str, count: usize, most: usize) -> Result<(), ScimError> {
    match count > most {
        true => {
            Err(ScimError::invalid_value(format!("attribute `{path}` holds {count} values: at most {most} are taken")))
        }
        false => Ok(()),
    }
}

/// What makes two elements of a multi-valued attribute the same value, as a
/// hash key (checking a list for duplicates is linear): complex ones by
/// `value` (per its `caseExact`) and `type` (any case), others (or complex
/// ones without `value`) by equality.
#[derive(Debug, PartialEq, Eq, Hash)]
enum ElementKey {
    /// A complex element's `value` (folded when not `caseExact`) and `type` (folded).
    ValueAndType(String, Option<String>),
    /// Any other element, whole.
    Whole(String),
}

impl ElementKey {
    fn of(attr: &Attribute, element: &Value) -> Self {
        let scalar = |case_exact: bool, v: &Value| match v.as_str() {
            Some(s) if !case_exact => s.to_lowercase(),
            _ => v.to_string(),
        };
        match (element.get("value"), attr.sub_attribute("value")) {
            (Some(value), Some(value_attr)) => ElementKey::ValueAndType(
                scalar(value_attr.case_exact, value),
                element.get("type").and_then(Value::as_str).map(str::to_lowercase),
            ),
            _ if attr.kind != AttrType::Complex => ElementKey::Whole(scalar(attr.case_exact, element)),
            _ => ElementKey::Whole(element.to_string()),
        }
    }
}

/// The most characters a string at `path` (`emails[2].value`) may hold.
fn max_chars(path: &str) -> usize {
    let segments = path.split('.').map(|s| s.split_once('[').map_or(s, |(name, _)| name));
    match resource_limits::INDEXED.iter().any(|indexed| indexed.split('.').eq(segments.clone())) {
        true => resource_limits::MAX_INDEXED_CHARS,
        false => resource_limits::MAX_STRING_CHARS,
    }
}

/// A string value within its attribute's limit.
fn bounded_text(s: &str, path: &str) -> Result<(), ScimError> {
    let most = max_chars(path);
    // Characters are at most 4 bytes: only long strings need counting.
    if s.len() > most && s.chars().count() > most {
        return Err(ScimError::invalid_value(format!("attribute `{path}` is longer than {most} characters")));
    }
    if s.contains('\0') {
        return Err(ScimError::invalid_value(format!("attribute `{path}` contains the NUL character")));
    }
    Ok(())
}

fn is_primary(value: &Value) -> bool {
    value.get("primary") == Some(&Value::Bool(true))
}

/// Validates one value (an element, for a multi-valued attribute).
fn validate_single(attr: &Attribute, value: &Value, path: &str) -> Result<Option<Value>, ScimError> {
    let wrong = |expected: &str| ScimError::invalid_value(format!("attribute `{path}` must be {expected}"));
    let text = |expected: &str| value.as_str().ok_or_else(|| wrong(expected));
    match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        _ => {}
    }
    let valid = match attr.kind {
        AttrType::String | AttrType::Reference => {
            bounded_text(text("a string")?, path)?;
            value.clone()
        }
        AttrType::Binary => {
            let s = text("a base64-encoded string")?;
            bounded_text(s, path)?;
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s)
                .map_err(|_| wrong("a base64-encoded string"))?;
            value.clone()
        }
        AttrType::Boolean => match value {
            Value::Bool(_) => value.clone(),
            // Microsoft Entra ID sends "True" and "False".
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(wrong("a boolean")),
        },
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
            _ => return Err(wrong("an integer")),
        },
        AttrType::Decimal => match value {
            Value::Number(_) => value.clone(),
            _ => return Err(wrong("a number")),
        },
        AttrType::DateTime => {
            let s = text("a date and time (RFC 3339)")?;
            chrono::DateTime::parse_from_rfc3339(s).map_err(|_| wrong("a date and time (RFC 3339)"))?;
            value.clone()
        }
        AttrType::Complex => {
            let Value::Object(object) = value else {
                return Err(wrong("an object"));
            };
            let mut out = Map::new();
            let mut seen: Vec<&str> = Vec::with_capacity(object.len());
            for (key, v) in object {
                let sub = attr.sub_attribute(key).ok_or_else(|| {
                    ScimError::invalid_syntax(format!("`{key}` is not a sub-attribute of `{}`", attr.name))
                })?;
                if seen.contains(&sub.name.as_str()) {
                    return Err(ScimError::invalid_syntax(format!(
                        "sub-attribute `{path}.{}` is given more than once",
                        sub.name
                    )));
                }
                seen.push(&sub.name);
                if let Some(v) = validate_attr(sub, v, &format!("{path}.{}", sub.name))? {
                    if sub.mutability != Mutability::WriteOnly {
                        out.insert(sub.name.clone(), v);
                    }
                }
            }
            if let Some(missing) = attr
                .sub_attributes
                .iter()
                .find(|s| s.required && s.mutability != Mutability::ReadOnly && !out.contains_key(&s.name))
            {
                return Err(ScimError::invalid_value(format!("`{path}` needs a `{}`", missing.name)));
            }
            if out.is_empty() {
                return Ok(None);
            }
            Value::Object(out)
        }
    };
    Ok(Some(valid))
}

// --- Discovery (RFC 7644 §4, RFC 7643 §5–7).

/// A `ListResponse` holding every resource at once, as discovery answers.
fn list_response(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    })
}

impl Registry {
    /// `GET /Schemas`: every schema, as a `ListResponse`.
    pub fn schemas_document(&self, base_url: &str) -> Value {
        list_response(self.all.iter().map(|s| schema_resource(s, base_url)).collect())
    }

    /// `GET /Schemas/{urn}` (any case).
    pub fn schema_document(&self, urn: &str, base_url: &str) -> Option<Value> {
        self.schema(urn).map(|s| schema_resource(s, base_url))
    }

    /// `GET /ResourceTypes`: `User` and `Group`, as a `ListResponse`.
    pub fn resource_types_document(&self, base_url: &str) -> Value {
        list_response(ResourceKind::ALL.iter().map(|&k| self.resource_type(k, base_url)).collect())
    }

    /// `GET /ResourceTypes/{id}` (`User` or `Group`, any case).
    pub fn resource_type_document(&self, id: &str, base_url: &str) -> Option<Value> {
        let kind = ResourceKind::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(id))?;
        Some(self.resource_type(kind, base_url))
    }

    fn resource_type(&self, kind: ResourceKind, base_url: &str) -> Value {
        let core = self.core(kind);
        let extensions: Vec<Value> =
            self.extensions(kind).iter().map(|s| json!({ "schema": s.id, "required": false })).collect();
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": kind.name(),
            "name": kind.name(),
            "endpoint": kind.endpoint(),
            "description": core.description,
            "schema": core.id,
            "schemaExtensions": extensions,
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{base_url}/ResourceTypes/{}", kind.name()),
            },
        })
    }

    /// `GET /ServiceProviderConfig` (RFC 7643 §5): PATCH, bulk, filter,
    /// sort and ETags supported, password change not; OAuth bearer tokens.
    pub fn service_provider_config(&self, limits: &ScimLimits, base_url: &str) -> Value {
        json!({
            "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA, RESOURCE_LIMITS_URN],
            "patch": { "supported": true },
            "bulk": {
                "supported": true,
                "maxOperations": limits.max_operations,
                "maxPayloadSize": limits.max_payload_size,
            },
            "filter": { "supported": true, "maxResults": limits.max_results },
            "changePassword": { "supported": false },
            "sort": { "supported": true },
            "etag": { "supported": true },
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A SCIM token issued by Roster, sent as an OAuth 2.0 Bearer Token (RFC 6750).",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": true,
            }],
            RESOURCE_LIMITS_URN: {
                "maxCharacters": {
                    "indexed": resource_limits::MAX_INDEXED_CHARS,
                    "indexedAttributes": resource_limits::INDEXED,
                    "other": resource_limits::MAX_STRING_CHARS,
                },
                "maxValuesPerAttribute": resource_limits::MAX_VALUES,
                "maxMembersPerRequest": resource_limits::MAX_MEMBERS,
                "maxAttributeNames": resource_limits::MAX_ATTRIBUTE_NAMES,
            },
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base_url}/ServiceProviderConfig"),
            },
        })
    }
}

/// A schema as a `Schema` resource (RFC 7643 §7).
fn schema_resource(schema: &Schema, base_url: &str) -> Value {
    let mut value = serde_json::to_value(schema).unwrap_or_else(|_| json!({}));
    if let Value::Object(object) = &mut value {
        object.insert("schemas".into(), json!([SCHEMA_SCHEMA]));
        object.insert(
            "meta".into(),
            json!({ "resourceType": "Schema", "location": format!("{base_url}/Schemas/{}", schema.id) }),
        );
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::ScimType;

    const ENT: &str = ENTERPRISE_USER_SCHEMA;

    #[test]
    fn embedded_schemas_parse_and_hold_together() {
        let r = Registry::load().expect("schemas/*.json parse");
        assert_eq!(r.schemas().len(), 3);
        let user = r.core(ResourceKind::User);
        assert_eq!(user.id, USER_SCHEMA);
        assert!(user.attribute("id").is_none(), "id is a common attribute, not a User one");
        let user_name = user.attribute("userName").unwrap();
        assert!(user_name.required && !user_name.case_exact);
        assert_eq!(user_name.uniqueness, Uniqueness::Server);
        let password = user.attribute("password").unwrap();
        assert_eq!((password.mutability, password.returned), (Mutability::WriteOnly, Returned::Never));
        let groups = user.attribute("groups").unwrap();
        assert_eq!(groups.mutability, Mutability::ReadOnly);
        assert_eq!(groups.sub_attribute("$ref").unwrap().reference_types, ["Group"]);
        assert!(user.attribute("addresses").unwrap().sub_attribute("primary").is_some());

        let group = r.core(ResourceKind::Group);
        assert!(group.attribute("displayName").unwrap().required);
        let members = group.attribute("members").unwrap();
        let sub = |n: &str| members.sub_attribute(n).unwrap();
        assert_eq!(sub("value").mutability, Mutability::Immutable);
        assert_eq!(sub("display").mutability, Mutability::ReadOnly);
        // Groups hold Users only: the schema says so to clients.
        assert_eq!(sub("type").canonical_values, ["User"]);
        assert_eq!(sub("$ref").kind, AttrType::Reference);
        assert_eq!(sub("$ref").reference_types, ["User"]);

        let manager = r.schema(ENT).unwrap().attribute("manager").unwrap();
        assert!(manager.sub_attribute("value").unwrap().case_exact);
        assert_eq!(manager.sub_attribute("displayName").unwrap().mutability, Mutability::ReadOnly);
    }

    #[test]
    fn schema_lookup_and_extensions() {
        let r = registry();
        assert_eq!(r.schema(&USER_SCHEMA.to_uppercase()).unwrap().id, USER_SCHEMA);
        assert!(r.schema("urn:ietf:params:scim:schemas:core:2.0:Nope").is_none());
        let ids: Vec<&str> = r.extensions(ResourceKind::User).iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, [ENT]);
        assert!(r.extensions(ResourceKind::Group).is_empty());
        assert!(r.extension(ResourceKind::Group, ENT).is_none());
    }

    #[test]
    fn resolution() {
        use ResourceKind::{Group, User};
        let ent_manager_value = format!("{ENT}:manager.value");
        let ent_dept_upper = format!("{}:DEPARTMENT", ENT.to_uppercase());
        let core_user_name = format!("{USER_SCHEMA}:userName");
        let core_meta = format!("{USER_SCHEMA}:meta.created");
        let ent_on_group = format!("{ENT}:department");
        let group_urn_on_user = format!("{GROUP_SCHEMA}:displayName");
        // (kind, path, expected (schema, attr, sub))
        // (schema, attribute, sub-attribute) a path resolves to.
        type Resolved<'a> = Option<(&'a str, &'a str, Option<&'a str>)>;
        let cases: Vec<(ResourceKind, &str, Resolved)> = vec![
            (User, "userName", Some((USER_SCHEMA, "userName", None))),
            (User, "USERNAME", Some((USER_SCHEMA, "userName", None))),
            (User, "name.givenName", Some((USER_SCHEMA, "name", Some("givenName")))),
            (User, "Name.GIVENNAME", Some((USER_SCHEMA, "name", Some("givenName")))),
            (User, "emails.value", Some((USER_SCHEMA, "emails", Some("value")))),
            (User, "groups.$ref", Some((USER_SCHEMA, "groups", Some("$ref")))),
            (User, "id", Some((USER_SCHEMA, "id", None))),
            (User, "externalid", Some((USER_SCHEMA, "externalId", None))),
            (User, "meta.lastModified", Some((USER_SCHEMA, "meta", Some("lastModified")))),
            (User, "meta.resourcetype", Some((USER_SCHEMA, "meta", Some("resourceType")))),
            (User, &core_user_name, Some((USER_SCHEMA, "userName", None))),
            (User, &core_meta, Some((USER_SCHEMA, "meta", Some("created")))),
            (User, &ent_manager_value, Some((ENT, "manager", Some("value")))),
            (User, &ent_dept_upper, Some((ENT, "department", None))),
            (Group, "displayname", Some((GROUP_SCHEMA, "displayName", None))),
            (Group, "members.value", Some((GROUP_SCHEMA, "members", Some("value")))),
            (Group, "members.$ref", Some((GROUP_SCHEMA, "members", Some("$ref")))),
            (Group, "id", Some((GROUP_SCHEMA, "id", None))),
            // Unknown, misplaced or malformed.
            (User, "nope", None),
            (User, "department", None), // extension attributes need their URN
            (User, "name.nope", None),
            (User, "userName.value", None),
            (User, "meta.nope", None),
            (User, "name.givenName.x", None),
            (User, &group_urn_on_user, None),
            (Group, "userName", None),
            (Group, &ent_on_group, None),
            (User, "urn:example:unknown:1.0:User:foo", None),
            (User, "emails[type eq \"work\"].value", None),
            (User, "", None),
        ];
        for (kind, path, expected) in cases {
            let got = registry().resolve_str(kind, path);
            let got = got.map(|r| (r.schema, r.attr.name.as_str(), r.sub.map(|s| s.name.as_str())));
            assert_eq!(got, expected, "{kind} {path:?}");
        }
        let r = registry().resolve_str(User, "meta.lastModified").unwrap();
        assert_eq!(r.leaf().kind, AttrType::DateTime);
        assert!(!r.in_extension());
        assert!(registry().resolve_str(User, &ent_manager_value).unwrap().in_extension());
        let id = registry().resolve_str(User, "id").unwrap().attr;
        assert_eq!((id.case_exact, id.returned, id.uniqueness), (true, Returned::Always, Uniqueness::Server));
    }

    #[test]
    fn resolve_takes_scim_v2_paths() {
        let path = AttrPath { uri: Some(ENT.to_lowercase()), name: "Manager".into(), sub_attr: Some("VALUE".into()) };
        let r = registry().resolve(ResourceKind::User, &path).unwrap();
        assert_eq!((r.schema, r.attr.name.as_str(), r.sub.unwrap().name.as_str()), (ENT, "manager", "value"));
    }

    fn full_user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENT],
            "id": "2819c223",
            "externalId": "ext-1",
            "meta": {
                "resourceType": "User",
                "created": "2026-01-01T00:00:00Z",
                "lastModified": "2026-01-02T00:00:00Z"
            },
            "userName": "bjensen@example.com",
            "name": { "givenName": "Barbara", "familyName": "Jensen" },
            "password": "hunter2",
            "active": true,
            "emails": [
                { "value": "bjensen@example.com", "type": "work", "primary": true },
                { "value": "babs@example.org", "type": "home" }
            ],
            "groups": [{ "value": "g1", "display": "Admins" }],
            ENT: {
                "department": "Tour Operations",
                "manager": { "value": "26118915", "displayName": "John Smith" }
            }
        })
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn projection() {
        let dept = format!("{ENT}:department");
        let manager_value = format!("{ENT}:manager.value");
        let ent_upper = ENT.to_uppercase();
        // (attributes, excludedAttributes, expected)
        let cases: Vec<(Vec<String>, Vec<String>, Value)> = vec![
            // Defaults: everything but `never` (password).
            (vec![], vec![], {
                let mut all = full_user();
                all.as_object_mut().unwrap().remove("password");
                all
            }),
            // `attributes`: the named ones plus `always` (id, schemas).
            (
                strings(&["userName"]),
                vec![],
                json!({ "schemas": [USER_SCHEMA, ENT], "id": "2819c223", "userName": "bjensen@example.com" }),
            ),
            // Case-insensitive names, sub-attributes, `never` stays out even when named.
            (
                strings(&["USERNAME", "name.givenName", "emails.value", "password"]),
                vec![],
                json!({
                    "schemas": [USER_SCHEMA, ENT], "id": "2819c223", "userName": "bjensen@example.com",
                    "name": { "givenName": "Barbara" },
                    "emails": [{ "value": "bjensen@example.com" }, { "value": "babs@example.org" }]
                }),
            ),
            // One comma-separated entry works like several.
            (
                strings(&["userName,meta.lastModified"]),
                vec![],
                json!({
                    "schemas": [USER_SCHEMA, ENT], "id": "2819c223", "userName": "bjensen@example.com",
                    "meta": { "lastModified": "2026-01-02T00:00:00Z" }
                }),
            ),
            // Extension attributes by full path, and a whole extension by its URN.
            (
                vec![dept.clone(), manager_value],
                vec![],
                json!({
                    "schemas": [USER_SCHEMA, ENT], "id": "2819c223",
                    ENT: { "department": "Tour Operations", "manager": { "value": "26118915" } }
                }),
            ),
            (
                vec![ent_upper.clone()],
                vec![],
                json!({
                    "schemas": [USER_SCHEMA, ENT], "id": "2819c223",
                    ENT: {
                        "department": "Tour Operations",
                        "manager": { "value": "26118915", "displayName": "John Smith" }
                    }
                }),
            ),
            // Unknown names only: the minimal resource.
            (strings(&["nope"]), vec![], json!({ "schemas": [USER_SCHEMA, ENT], "id": "2819c223" })),
            // `excludedAttributes`: never removes `always` (id, schemas).
            (
                vec![],
                strings(&["emails", "name.familyName", "meta", "groups", "id", "schemas", "externalId", "active"]),
                {
                    json!({
                        "schemas": [USER_SCHEMA, ENT], "id": "2819c223", "userName": "bjensen@example.com",
                        "name": { "givenName": "Barbara" },
                        ENT: {
                            "department": "Tour Operations",
                            "manager": { "value": "26118915", "displayName": "John Smith" }
                        }
                    })
                },
            ),
            // A whole extension excluded; an extension attribute excluded.
            (
                vec![],
                vec![ENT.to_string(), "emails".into(), "groups".into(), "meta".into(), "name".into()],
                json!({
                    "schemas": [USER_SCHEMA, ENT], "id": "2819c223", "externalId": "ext-1",
                    "userName": "bjensen@example.com", "active": true
                }),
            ),
            (
                strings(&[ENT]),
                vec![dept, format!("{ENT}:manager.displayName")],
                json!({ "schemas": [USER_SCHEMA, ENT], "id": "2819c223", ENT: { "manager": { "value": "26118915" } } }),
            ),
            // Both lists: attributes, then exclusions.
            (
                strings(&["emails"]),
                strings(&["emails.type", "emails.primary"]),
                json!({
                    "schemas": [USER_SCHEMA, ENT], "id": "2819c223",
                    "emails": [{ "value": "bjensen@example.com" }, { "value": "babs@example.org" }]
                }),
            ),
        ];
        for (i, (attributes, excluded, expected)) in cases.into_iter().enumerate() {
            let got = registry().project(ResourceKind::User, &full_user(), &attributes, &excluded);
            assert_eq!(got, expected, "case {i}: attributes={attributes:?} excluded={excluded:?}");
        }
    }

    #[test]
    fn projection_of_request_attributes() {
        // No standard attribute is `returned: request`; build a schema that has one.
        let schema = Schema {
            id: "urn:example:test".into(),
            name: "Test".into(),
            description: String::new(),
            attributes: vec![Attribute {
                returned: Returned::Request,
                ..Attribute::simple("secretish", AttrType::String, false, Mutability::ReadWrite, "")
            }],
        };
        let object = json!({ "secretish": "x" });
        let object = object.as_object().unwrap();
        let none = Selection::default();
        assert!(project_object(&schema, object, &none, &none, false).is_empty());
        let named = Selection {
            given: true,
            items: vec![Selector::Attr { schema: "urn:example:test", attr: "secretish", sub: None }],
        };
        assert_eq!(project_object(&schema, object, &named, &none, false).len(), 1);
        let whole = Selection { given: true, items: vec![Selector::Schema("urn:example:test")] };
        assert_eq!(project_object(&schema, object, &whole, &none, false).len(), 1);
    }

    #[test]
    fn projection_of_groups() {
        let group = json!({
            "schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Admins",
            "members": [{ "value": "u1", "display": "Ada", "$ref": "https://h/scim/v2/Users/u1" }],
            "meta": { "resourceType": "Group" }
        });
        let got = registry().project(ResourceKind::Group, &group, &[], &strings(&["members"]));
        assert_eq!(
            got,
            json!({
                "schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Admins", "meta": { "resourceType": "Group" }
            })
        );
        let got = registry().project(ResourceKind::Group, &group, &strings(&["members.value", "members.$ref"]), &[]);
        assert_eq!(
            got,
            json!({
                "schemas": [GROUP_SCHEMA], "id": "g1",
                "members": [{ "value": "u1", "$ref": "https://h/scim/v2/Users/u1" }]
            })
        );
    }

    /// The SCIM answers skip projecting when a request names no attributes:
    /// what `validate` stores, with what the answers add (`id`, `meta`, a
    /// user's `groups`, a group's `members`), must be what the default
    /// projection returns.
    #[test]
    fn default_projection_keeps_a_stored_resource_whole() {
        let odd_case_extension = json!({
            "schemas": [USER_SCHEMA, ENT.to_uppercase()], "USERNAME": "ada", "Password": "hunter2",
            ENT.to_lowercase(): { "Department": "Ops", "manager": { "value": "m1" } },
            format!("{ENT}:employeeNumber"): "7"
        });
        let group = json!({
            "schemas": [GROUP_SCHEMA], "displayName": "Admins", "members": [{ "value": "u1", "display": "Ada" }]
        });
        let answers = [
            (
                ResourceKind::User,
                full_user(),
                json!({ "value": "g1", "display": "Admins", "$ref": "/Groups/g1", "type": "direct" }),
            ),
            (
                ResourceKind::User,
                odd_case_extension,
                json!({ "value": "g1", "display": "Admins", "$ref": "/Groups/g1", "type": "direct" }),
            ),
            (
                ResourceKind::Group,
                group,
                json!({ "value": "u1", "display": "Ada", "$ref": "/Users/u1", "type": "User" }),
            ),
        ];
        for (kind, body, link) in answers {
            for mode in [WriteMode::Create, WriteMode::Replace] {
                let mut answer = registry().validate(kind, &body, mode).unwrap();
                let links = if kind == ResourceKind::User { "groups" } else { "members" };
                answer["id"] = json!("2819c223");
                answer[links] = json!([link.clone()]);
                answer["meta"] = json!({
                    "resourceType": kind.to_string(), "created": "2026-01-01T00:00:00.000Z",
                    "lastModified": "2026-01-01T00:00:00.000Z", "location": "https://h/scim/v2/x", "version": "W/\"1\""
                });
                assert_eq!(registry().project(kind, &answer, &[], &[]), answer, "{kind} {mode:?}");
            }
        }
    }

    fn user_body(extra: Value) -> Value {
        let mut body = json!({ "schemas": [USER_SCHEMA], "userName": "bjensen" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    #[test]
    fn validation_normalizes() {
        // (kind, input, expected output)
        let cases: Vec<(ResourceKind, Value, Value)> = vec![
            // Canonical key spelling, schemas canonical, core first.
            (
                ResourceKind::User,
                json!({
                    "SCHEMAS": [ENT.to_uppercase(), USER_SCHEMA.to_lowercase()],
                    "USERNAME": "bjensen", "Name": { "GIVENNAME": "Barbara" },
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": { "Department": "Ops" }
                }),
                json!({
                    "schemas": [USER_SCHEMA, ENT], "userName": "bjensen", "name": { "givenName": "Barbara" },
                    ENT: { "department": "Ops" }
                }),
            ),
            // Entra's string booleans.
            (
                ResourceKind::User,
                user_body(json!({ "active": "False", "emails": [{ "value": "b@example.com", "primary": "True" }] })),
                json!({
                    "schemas": [USER_SCHEMA], "userName": "bjensen", "active": false,
                    "emails": [{ "value": "b@example.com", "primary": true }]
                }),
            ),
            // readOnly dropped, id/meta dropped, null and "" removed, password not stored.
            (
                ResourceKind::User,
                user_body(json!({
                    "id": "abc", "meta": { "version": "W/\"1\"" }, "groups": [{ "value": "g" }],
                    "displayName": null, "nickName": "", "title": "Boss", "password": "hunter2",
                    "name": { "givenName": null, "familyName": "" }, "emails": [], "phoneNumbers": [null],
                    ENT: { "manager": { "value": "m1", "displayName": "Mgr" }, "costCenter": null }
                })),
                json!({
                    "schemas": [USER_SCHEMA, ENT], "userName": "bjensen", "title": "Boss",
                    ENT: { "manager": { "value": "m1" } }
                }),
            ),
            // Duplicates (same value, same type; value per caseExact) collapse, keeping primary.
            (
                ResourceKind::User,
                user_body(json!({ "emails": [
                    { "value": "b@example.com", "type": "work" },
                    { "value": "B@EXAMPLE.COM", "type": "Work", "primary": true },
                    { "value": "b@example.com", "type": "home" }
                ] })),
                json!({
                    "schemas": [USER_SCHEMA], "userName": "bjensen",
                    "emails": [
                        { "value": "b@example.com", "type": "work", "primary": true },
                        { "value": "b@example.com", "type": "home" }
                    ]
                }),
            ),
            // URN-qualified top-level keys land in their schema; extension listed in schemas.
            (
                ResourceKind::User,
                json!({
                    "schemas": [USER_SCHEMA],
                    format!("{USER_SCHEMA}:userName"): "bjensen",
                    format!("{ENT}:employeeNumber"): "42"
                }),
                json!({ "schemas": [USER_SCHEMA, ENT], "userName": "bjensen", ENT: { "employeeNumber": "42" } }),
            ),
            // Types other than strings; canonicalValues not enforced; externalId kept.
            (
                ResourceKind::User,
                user_body(json!({
                    "externalId": "e-1", "profileUrl": "https://example.com/b",
                    "phoneNumbers": [{ "value": "tel:+1-201-555-0123", "type": "satellite" }],
                    "x509Certificates": [{ "value": "MIIB" }]
                })),
                json!({
                    "schemas": [USER_SCHEMA], "userName": "bjensen", "externalId": "e-1",
                    "profileUrl": "https://example.com/b",
                    "phoneNumbers": [{ "value": "tel:+1-201-555-0123", "type": "satellite" }],
                    "x509Certificates": [{ "value": "MIIB" }]
                }),
            ),
            // Entra's group create: an unknown schema URN with nothing under it is left out.
            (
                ResourceKind::Group,
                json!({
                    "schemas": [
                        GROUP_SCHEMA,
                        "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
                    ],
                    "externalId": "8aa1a0c0", "displayName": "displayName", "meta": { "resourceType": "Group" }
                }),
                json!({ "schemas": [GROUP_SCHEMA], "externalId": "8aa1a0c0", "displayName": "displayName" }),
            ),
            // Groups: members.display is readOnly; duplicate members collapse.
            (
                ResourceKind::Group,
                json!({
                    "schemas": [GROUP_SCHEMA], "DisplayName": "Admins", "id": "x",
                    "members": [
                        { "value": "u1", "display": "Ada" }, { "value": "u1" }, { "value": "u2", "type": "User" }
                    ]
                }),
                json!({
                    "schemas": [GROUP_SCHEMA], "displayName": "Admins",
                    "members": [{ "value": "u1" }, { "value": "u2", "type": "User" }]
                }),
            ),
        ];
        for (i, (kind, input, expected)) in cases.into_iter().enumerate() {
            for mode in [WriteMode::Create, WriteMode::Replace] {
                let got = registry().validate(kind, &input, mode);
                assert_eq!(got.as_ref(), Ok(&expected), "case {i} ({mode:?}): {input}");
            }
        }
    }

    #[test]
    fn validation_refuses() {
        use ScimType::{InvalidSyntax, InvalidValue};
        // (kind, input, scimType, words the detail must contain)
        let cases: Vec<(ResourceKind, Value, ScimType, &str)> = vec![
            (ResourceKind::User, json!([]), InvalidSyntax, "JSON object"),
            (ResourceKind::User, json!({ "userName": "b" }), InvalidValue, "schemas"),
            (ResourceKind::User, json!({ "schemas": USER_SCHEMA, "userName": "b" }), InvalidSyntax, "schemas"),
            (ResourceKind::User, json!({ "schemas": [ENT], "userName": "b" }), InvalidValue, USER_SCHEMA),
            (
                ResourceKind::User,
                json!({ "schemas": [USER_SCHEMA, "urn:example:custom"], "userName": "b", "urn:example:custom": {} }),
                InvalidValue,
                "urn:example:custom",
            ),
            (
                ResourceKind::User,
                json!({ "schemas": [USER_SCHEMA, GROUP_SCHEMA], "userName": "b" }),
                InvalidValue,
                GROUP_SCHEMA,
            ),
            (ResourceKind::Group, json!({ "schemas": [GROUP_SCHEMA, ENT], "displayName": "g" }), InvalidValue, ENT),
            (ResourceKind::User, json!({ "schemas": [USER_SCHEMA] }), InvalidValue, "userName"),
            (ResourceKind::User, user_body(json!({ "userName": "" })), InvalidValue, "userName"),
            (ResourceKind::User, user_body(json!({ "userName": null })), InvalidValue, "userName"),
            (ResourceKind::Group, json!({ "schemas": [GROUP_SCHEMA] }), InvalidValue, "displayName"),
            (ResourceKind::User, user_body(json!({ "favouriteColour": "blue" })), InvalidSyntax, "favouriteColour"),
            (ResourceKind::User, user_body(json!({ "name": { "nick": "B" } })), InvalidSyntax, "nick"),
            (ResourceKind::User, user_body(json!({ ENT: { "shoeSize": 42 } })), InvalidSyntax, "shoeSize"),
            (ResourceKind::User, user_body(json!({ ENT: "Ops" })), InvalidSyntax, ENT),
            (ResourceKind::User, user_body(json!({ "USERNAME": "other" })), InvalidSyntax, "more than once"),
            (
                ResourceKind::User,
                user_body(json!({ "emails": [
                    { "value": "a@example.com", "primary": true },
                    { "value": "b@example.com", "primary": "true" }
                ] })),
                InvalidValue,
                "primary",
            ),
            (ResourceKind::User, user_body(json!({ "active": "yes" })), InvalidValue, "active"),
            (ResourceKind::User, user_body(json!({ "active": 1 })), InvalidValue, "boolean"),
            (ResourceKind::User, user_body(json!({ "userName": 42 })), InvalidValue, "userName"),
            (ResourceKind::User, user_body(json!({ "name": "Barbara" })), InvalidValue, "name"),
            (ResourceKind::User, user_body(json!({ "emails": { "value": "b@example.com" } })), InvalidValue, "emails"),
            (ResourceKind::User, user_body(json!({ "emails": ["b@example.com"] })), InvalidValue, "emails[0]"),
            (ResourceKind::User, user_body(json!({ "title": ["a"] })), InvalidValue, "title"),
            (
                ResourceKind::User,
                user_body(json!({ "x509Certificates": [{ "value": "not base64!" }] })),
                InvalidValue,
                "x509",
            ),
            (ResourceKind::User, user_body(json!({ "password": 1234 })), InvalidValue, "password"),
            (
                ResourceKind::Group,
                json!({ "schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{ "display": "Ada" }] }),
                InvalidValue,
                "value",
            ),
            (
                ResourceKind::Group,
                json!({ "schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{ "value": "" }] }),
                InvalidValue,
                "members[0]",
            ),
        ];
        for (i, (kind, input, scim_type, words)) in cases.into_iter().enumerate() {
            let err = registry().validate(kind, &input, WriteMode::Create).expect_err(&format!("case {i}: {input}"));
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "case {i}");
            assert_eq!(err.scim_type, Some(scim_type), "case {i}: {}", err.detail);
            assert!(err.detail.contains(words), "case {i}: {:?} lacks {words:?}", err.detail);
        }
    }

    #[test]
    fn validation_holds_values_to_the_limits_on_every_backend() {
        let long = |n: usize, c: char| std::iter::repeat_n(c, n).collect::<String>();
        let accepted = |kind, body: Value| registry().validate(kind, &body, WriteMode::Create).map(|_| ());
        let refused = |kind, body: Value, words: &str| {
            let err = registry().validate(kind, &body, WriteMode::Create).expect_err(words);
            assert_eq!(
                (err.status, err.scim_type),
                (axum::http::StatusCode::BAD_REQUEST, Some(ScimType::InvalidValue))
            );
            assert!(err.detail.contains(words), "{:?} lacks {words:?}", err.detail);
        };
        let user = ResourceKind::User;
        // 512 four-byte characters are 2,048 bytes: still indexable.
        accepted(user, user_body(json!({ "userName": long(512, '𝔘') }))).unwrap();
        refused(user, user_body(json!({ "userName": long(513, 'a') })), "longer than 512 characters");
        refused(user, user_body(json!({ "externalId": long(513, 'a') })), "`externalId`");
        refused(user, user_body(json!({ "displayName": long(513, 'a') })), "`displayName`");
        refused(user, user_body(json!({ "emails": [{ "value": long(513, 'a') }] })), "`emails[0].value`");
        let group = |extra: Value| {
            let mut body = json!({ "schemas": [GROUP_SCHEMA], "displayName": "g" });
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            body
        };
        refused(ResourceKind::Group, group(json!({ "displayName": long(513, 'g') })), "`displayName`");
        // Other strings may be longer, up to 8,192.
        accepted(user, user_body(json!({ "title": long(8_192, 't'), "phoneNumbers": [{ "value": long(600, '1') }] })))
            .unwrap();
        refused(user, user_body(json!({ "title": long(8_193, 't') })), "longer than 8192 characters");
        refused(user, user_body(json!({ ENT: { "department": long(8_193, 'd') } })), "`department`");
        refused(user, user_body(json!({ "name": { "givenName": "a\u{0}b" } })), "NUL");

        let emails = |n: usize| (0..n).map(|i| json!({ "value": format!("u{i}@example.com") })).collect::<Vec<_>>();
        accepted(user, user_body(json!({ "emails": emails(100) }))).unwrap();
        refused(user, user_body(json!({ "emails": emails(101) })), "at most 100");
        let members =
            |n: usize| (0..n).map(|_| json!({ "value": uuid::Uuid::new_v4().to_string() })).collect::<Vec<_>>();
        accepted(ResourceKind::Group, group(json!({ "members": members(10_000) }))).unwrap();
        refused(ResourceKind::Group, group(json!({ "members": members(10_001) })), "at most 10000");
    }

    #[test]
    fn duplicates_collapse_in_one_pass_over_a_long_list() {
        // 5,000 members, each sent twice: a quadratic check compares 50
        // million pairs.
        let ids: Vec<String> = (0..5_000).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let members: Vec<Value> = ids.iter().chain(&ids).map(|id| json!({ "value": id })).collect();
        let body = json!({ "schemas": [GROUP_SCHEMA], "displayName": "g", "members": members });
        let valid = registry().validate(ResourceKind::Group, &body, WriteMode::Create).unwrap();
        let kept: Vec<&str> =
            valid["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
        assert_eq!(kept, ids);

        // Emails fold by case; a duplicate's `primary` moves to the kept value.
        let twice: Vec<Value> = ids[..50]
            .iter()
            .enumerate()
            .flat_map(|(i, id)| {
                [
                    json!({ "value": format!("{id}@Example.com") }),
                    json!({ "value": format!("{id}@example.COM"), "primary": i == 7 }),
                ]
            })
            .collect();
        let valid =
            registry().validate(ResourceKind::User, &user_body(json!({ "emails": twice })), WriteMode::Create).unwrap();
        let emails = valid["emails"].as_array().unwrap();
        assert_eq!(emails.len(), 50);
        assert_eq!(emails[7], json!({ "value": format!("{}@Example.com", ids[7]), "primary": true }));
        assert_eq!(emails.iter().filter(|e| e.get("primary").is_some()).count(), 1);
    }

    #[test]
    fn validation_types() {
        // Type checks per attribute type, on a schema that has them all.
        let attr = |name: &str, kind| Attribute::simple(name, kind, false, Mutability::ReadWrite, "");
        let cases: Vec<(AttrType, Value, Option<Value>)> = vec![
            (AttrType::Integer, json!(3), Some(json!(3))),
            (AttrType::Integer, json!(3.5), None),
            (AttrType::Integer, json!("3"), None),
            (AttrType::Decimal, json!(3.5), Some(json!(3.5))),
            (AttrType::Decimal, json!(3), Some(json!(3))),
            (AttrType::Decimal, json!("3.5"), None),
            (AttrType::DateTime, json!("2026-11-23T10:00:00Z"), Some(json!("2026-11-23T10:00:00Z"))),
            (AttrType::DateTime, json!("2026-11-23T10:00:00.123+01:00"), Some(json!("2026-11-23T10:00:00.123+01:00"))),
            (AttrType::DateTime, json!("23/11/2026"), None),
            (AttrType::Boolean, json!("TRUE"), Some(json!(true))),
            (AttrType::Reference, json!("https://example.com"), Some(json!("https://example.com"))),
            (AttrType::Reference, json!(false), None),
            (AttrType::Binary, json!("aGVsbG8="), Some(json!("aGVsbG8="))),
        ];
        for (kind, value, expected) in cases {
            let got = validate_single(&attr("x", kind), &value, "x");
            match expected {
                Some(v) => assert_eq!(got, Ok(Some(v)), "{kind:?} {value}"),
                None => assert_eq!(got.map_err(|e| e.scim_type), Err(Some(ScimType::InvalidValue)), "{kind:?} {value}"),
            }
        }
    }

    #[test]
    fn validated_resources_validate_again_unchanged() {
        // PATCH re-validates a stored resource: validation is idempotent.
        let first = registry().validate(ResourceKind::User, &full_user(), WriteMode::Create).unwrap();
        assert!(first.get("id").is_none() && first.get("meta").is_none() && first.get("password").is_none());
        let again = registry().validate(ResourceKind::User, &first, WriteMode::Replace).unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn discovery_documents() {
        let base = "https://roster.example/scim/v2";
        let r = registry();

        let schemas = r.schemas_document(base);
        assert_eq!(schemas["schemas"], json!([LIST_RESPONSE]));
        assert_eq!(schemas["totalResults"], 3);
        assert_eq!(schemas["startIndex"], 1);
        let resources = schemas["Resources"].as_array().unwrap();
        let ids: Vec<&str> = resources.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [USER_SCHEMA, GROUP_SCHEMA, ENT]);
        for s in resources {
            assert_eq!(s["schemas"], json!([SCHEMA_SCHEMA]));
            assert_eq!(s["meta"]["resourceType"], "Schema");
            assert_eq!(s["meta"]["location"], format!("{base}/Schemas/{}", s["id"].as_str().unwrap()));
            assert!(s["attributes"].as_array().is_some_and(|a| !a.is_empty()));
        }
        let user = r.schema_document(&USER_SCHEMA.to_lowercase(), base).unwrap();
        assert_eq!(user["id"], USER_SCHEMA);
        let user_name = &user["attributes"][0];
        assert_eq!(user_name["name"], "userName");
        assert_eq!(user_name["multiValued"], false);
        assert_eq!(user_name["caseExact"], false);
        assert_eq!(user_name["uniqueness"], "server");
        assert_eq!(user_name["mutability"], "readWrite");
        assert!(user["attributes"].as_array().unwrap().iter().any(|a| a["name"] == "emails"
            && a["subAttributes"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["canonicalValues"] == json!(["work", "home", "other"])))));
        assert!(r.schema_document("urn:example:none", base).is_none());

        let types = r.resource_types_document(base);
        assert_eq!(types["schemas"], json!([LIST_RESPONSE]));
        assert_eq!(types["totalResults"], 2);
        assert_eq!(
            types["Resources"][0],
            json!({
                "schemas": [RESOURCE_TYPE_SCHEMA], "id": "User", "name": "User", "endpoint": "/Users",
                "description": "User Account", "schema": USER_SCHEMA,
                "schemaExtensions": [{ "schema": ENT, "required": false }],
                "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") }
            })
        );
        assert_eq!(types["Resources"][1]["schema"], GROUP_SCHEMA);
        assert_eq!(types["Resources"][1]["endpoint"], "/Groups");
        assert_eq!(types["Resources"][1]["schemaExtensions"], json!([]));
        assert_eq!(r.resource_type_document("group", base), Some(types["Resources"][1].clone()));
        assert!(r.resource_type_document("Device", base).is_none());

        let limits = ScimLimits { max_results: 200, max_operations: 100, max_payload_size: 1_048_576 };
        let config = r.service_provider_config(&limits, base);
        assert_eq!(config["schemas"], json!([SERVICE_PROVIDER_CONFIG_SCHEMA, RESOURCE_LIMITS_URN]));
        assert_eq!(
            config[RESOURCE_LIMITS_URN],
            json!({
                "maxCharacters": {
                    "indexed": 512,
                    "indexedAttributes": ["userName", "externalId", "displayName", "emails.value"],
                    "other": 8192,
                },
                "maxValuesPerAttribute": 100,
                "maxMembersPerRequest": 10_000,
                "maxAttributeNames": 100,
            })
        );
        assert_eq!(config["patch"], json!({ "supported": true }));
        assert_eq!(config["bulk"], json!({ "supported": true, "maxOperations": 100, "maxPayloadSize": 1_048_576 }));
        assert_eq!(config["filter"], json!({ "supported": true, "maxResults": 200 }));
        assert_eq!(config["changePassword"], json!({ "supported": false }));
        assert_eq!(config["sort"], json!({ "supported": true }));
        assert_eq!(config["etag"], json!({ "supported": true }));
        let scheme = &config["authenticationSchemes"][0];
        assert_eq!(
            (scheme["type"].as_str(), scheme["name"].as_str(), scheme["primary"].as_bool()),
            (Some("oauthbearertoken"), Some("OAuth Bearer Token"), Some(true))
        );
        assert!(scheme["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(config.get("documentationUri").is_none());
        assert_eq!(
            config["meta"],
            json!({ "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") })
        );
    }
}
