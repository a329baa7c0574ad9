//! SCIM 2.0 (RFC 7643, RFC 7644): schemas, errors, filter→SQL translation
//! and PATCH application. The HTTP endpoints live in `http/scim.rs`, the use
//! cases in `service/scim.rs`.

pub mod error;
pub mod schema;

pub use error::{ScimError, ScimType};
pub mod filter;
pub mod patch;
