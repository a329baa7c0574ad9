//! The portal's templates (`templates/portal/`) and how a page, a refusal
//! or a service error becomes a response.

use super::{Signed, CONTENT_SECURITY_POLICY};
use crate::service::{role_title, LineError, ServiceError};
use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

/// What every page around its content shows: the sidebar with the
/// organization switcher and the sections the member may open, and the
/// outcome of the last action.
pub(super) struct Frame {
    pub title: String,
    pub section: &'static str,
    pub org_name: String,
    pub email: String,
    pub role: &'static str,
    pub admin: bool,
    pub csrf: String,
    pub orgs: Vec<OrgOption>,
    pub notice: Option<String>,
    pub problem: Option<String>,
    /// Per-line reasons of a refused upload or invitation list.
    pub problem_lines: Vec<String>,
}

pub(super) struct OrgOption {
    pub id: String,
    pub label: String,
    pub current: bool,
}

impl Frame {
    pub fn new(signed: &Signed, section: &'static str, title: &str) -> Self {
        let current = signed.session.org.id;
        Frame {
            title: title.to_string(),
            section,
            org_name: signed.session.org.name.clone(),
            email: signed.session.member.label(),
            role: role_title(signed.session.actor.role),
            admin: signed.admin(),
            csrf: signed.csrf.clone(),
            orgs: signed
                .session
                .memberships
                .iter()
                .map(|m| OrgOption {
                    id: m.org_id.to_string(),
                    label: super::membership_label(m),
                    current: m.org_id == current,
                })
                .collect(),
            notice: None,
            problem: None,
            problem_lines: Vec::new(),
        }
    }

    pub fn notice(mut self, notice: Option<String>) -> Self {
        self.notice = notice;
        self
    }

    /// The frame showing why an action was refused.
    pub fn problem(mut self, e: &ServiceError) -> Self {
        let (_, message, lines) = problem_of(e);
        self.problem = Some(message);
        self.problem_lines = lines;
        self
    }
}

/// The outcome of an action to show on the page that follows.
#[derive(Default)]
pub(super) struct Outcome {
    pub notice: Option<String>,
    pub error: Option<ServiceError>,
}

impl Outcome {
    pub fn done(notice: impl Into<String>) -> Self {
        Outcome { notice: Some(notice.into()), error: None }
    }

    pub fn failed(e: ServiceError) -> Self {
        Outcome { notice: None, error: Some(e) }
    }

    pub fn status(&self) -> StatusCode {
        self.error.as_ref().map_or(StatusCode::OK, |e| problem_of(e).0)
    }

    pub fn frame(&self, signed: &Signed, section: &'static str, title: &str) -> Frame {
        let frame = Frame::new(signed, section, title).notice(self.notice.clone());
        match &self.error {
            Some(e) => frame.problem(e),
            None => frame,
        }
    }
}

/// The status and the words for a refusal, and its per-line reasons.
pub(in crate::http) fn problem_of(e: &ServiceError) -> (StatusCode, String, Vec<String>) {
    let lines = |errors: &[LineError]| errors.iter().map(|l| format!("Line {}: {}", l.line, l.message)).collect();
    match e {
        ServiceError::Forbidden { needed, .. } => (
            StatusCode::FORBIDDEN,
            format!("This needs the {} role; ask an Owner or Admin of the organization.", role_title(*needed)),
            Vec::new(),
        ),
        ServiceError::NotFound(what) => (StatusCode::NOT_FOUND, format!("There is no such {what} here."), Vec::new()),
        ServiceError::Invalid { field, message } => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("Check {}: {message}.", field.replace('_', " ")), Vec::new())
        }
        ServiceError::SeatLimitReached { purchased, used, requested } => (
            StatusCode::CONFLICT,
            format!(
                "Not enough seats: the organization has {purchased} purchased and {used} in use, and this needs \
                 {requested} more. Nothing was changed. Add seats on the Billing page, or free some first."
            ),
            Vec::new(),
        ),
        ServiceError::LastOwner => (
            StatusCode::CONFLICT,
            "An organization must keep at least one active Owner. Make another member Owner first.".into(),
            Vec::new(),
        ),
        ServiceError::Conflict(message) => (StatusCode::CONFLICT, capitalized(message), Vec::new()),
        ServiceError::OperatorOnly(message) => (StatusCode::FORBIDDEN, capitalized(message), Vec::new()),
        ServiceError::BulkRejected(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{} cannot be accepted, so nothing was sent:", line_count(errors.len())),
            lines(errors),
        ),
        ServiceError::Scim(e) => (StatusCode::BAD_REQUEST, capitalized(&e.detail), Vec::new()),
        ServiceError::PreconditionFailed(_) => {
            (StatusCode::CONFLICT, "Someone changed this meanwhile; reload the page.".into(), Vec::new())
        }
        ServiceError::Store(cause) => {
            tracing::error!(error = ?cause, "a portal action failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side; nothing was changed. Try again in a moment.".into(),
                Vec::new(),
            )
        }
    }
}

/// `1 line`, `2 lines`.
pub(super) fn line_count(n: usize) -> String {
    match n {
        1 => "1 line".into(),
        n => format!("{n} lines"),
    }
}

pub(super) fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A rendered portal page with the headers every page carries.
pub(super) fn render(status: StatusCode, body: askama::Result<String>) -> Response {
    crate::http::pages::html_with(status, body, CONTENT_SECURITY_POLICY)
}

/// A page with a title, one message and a way back, outside the frame.
#[derive(Template)]
#[template(path = "portal/message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    link: Option<(&'a str, &'a str)>,
}

/// A refusal as a page of its own (nothing was changed).
pub(super) fn refused(status: StatusCode, title: &str, message: &str) -> Response {
    let page = MessagePage { title, message, link: Some(("/portal", "Back to the portal")) };
    render(status, page.render())
}

/// A page with a title and one message, and no way on (the set-up pages'
/// refusals), rendered in the portal's style.
pub(in crate::http) fn message_page(title: &str, message: &str) -> askama::Result<String> {
    MessagePage { title, message, link: None }.render()
}

/// A service error as a page of its own.
pub(super) fn failure(e: &ServiceError) -> Response {
    let (status, message, _) = problem_of(e);
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_server_error() => "Something went wrong",
        _ => "This cannot be done",
    };
    refused(status, title, &message)
}

pub(super) fn signed_out() -> Response {
    let page = MessagePage {
        title: "Signed out",
        message: "You are signed out of the portal.",
        link: Some(("/portal/signin", "Sign in again")),
    };
    render(StatusCode::OK, page.render())
}

/// The chosen organization signs in only through its SSO: a link there.
pub(super) fn continue_to_sso(signed: &Signed, url: &str) -> Response {
    let message = format!(
        "The organization you chose signs in only through its single sign-on. Continue there as {}.",
        signed.session.member.label()
    );
    let page = MessagePage { title: "Single sign-on required", message: &message, link: Some((url, "Continue")) };
    render(StatusCode::OK, page.render())
}

/// Sections a Read or Write member may not open.
pub(super) fn admins_only() -> Response {
    refused(
        StatusCode::FORBIDDEN,
        "Not allowed",
        "This page is for the organization's Owners and Admins. Ask one of them if you need a change here.",
    )
}
