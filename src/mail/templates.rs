//! Roster's emails and the pages a person opens from them, as compile-checked
//! templates (`templates/`): HTML escapes every value, text does not.

use askama::Template;

/// An invitation (or its resend): who invited, to what, until when, and the link.
#[derive(Debug, Clone)]
pub struct InvitationMail<'a> {
    pub org_name: &'a str,
    pub role: &'a str,
    pub inviter: &'a str,
    pub email: &'a str,
    pub expires: String,
    pub link: &'a str,
    pub resent: bool,
    pub sso_enforced: bool,
}

#[derive(Template)]
#[template(path = "mail/invitation.txt")]
struct InvitationText<'a, 'b> {
    m: &'b InvitationMail<'a>,
}

#[derive(Template)]
#[template(path = "mail/invitation.html")]
struct InvitationHtml<'a, 'b> {
    m: &'b InvitationMail<'a>,
}

/// A rendered message: subject, text part, HTML part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl InvitationMail<'_> {
    pub fn render(&self) -> askama::Result<Rendered> {
        let text = InvitationText { m: self }.render()?;
        let html = InvitationHtml { m: self }.render()?;
        Ok(Rendered { subject: format!("Join {} as {}", self.org_name, self.role), text, html })
    }
}

/// The page an invitation link opens.
#[derive(Template)]
#[template(path = "pages/invitation.html")]
pub struct InvitationPage<'a> {
    pub org_name: &'a str,
    pub role: &'a str,
    pub email: &'a str,
    pub expires: String,
    pub sso_enforced: bool,
    /// Where the organization's SSO login starts, when it enforces SSO.
    pub sso_login: Option<&'a str>,
    /// Where the accept form posts.
    pub action: &'a str,
    pub token: &'a str,
}

/// A page with a title and one message: an outcome, or why something was refused.
#[derive(Template)]
#[template(path = "pages/message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// A machine-readable reason, for a refusal.
    pub code: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<script>alert(1)</script>";

    #[test]
    fn html_parts_show_names_as_text() {
        let m = InvitationMail {
            org_name: HOSTILE,
            role: "Write",
            inviter: HOSTILE,
            email: "ada@example.com",
            expires: "2026-12-17 10:00 UTC".into(),
            link: "https://roster.example/invitations/accept?token=roster_inv_x&a=1",
            resent: false,
            sso_enforced: false,
        };
        let r = m.render().unwrap();
        assert!(!r.html.contains(HOSTILE), "{}", r.html);
        assert!(r.html.contains("&#60;script&#62;alert(1)&#60;/script&#62;") || r.html.contains("&lt;script&gt;"));
        assert!(r.html.contains("token=roster_inv_x&#38;a=1") || r.html.contains("token=roster_inv_x&amp;a=1"));
        // The text part is text: the name as written, the link as it is.
        assert!(r.text.contains(HOSTILE));
        assert!(r.text.contains("https://roster.example/invitations/accept?token=roster_inv_x&a=1"));
        let page = InvitationPage {
            org_name: HOSTILE,
            role: "Write",
            email: "ada@example.com",
            expires: String::new(),
            sso_enforced: false,
            sso_login: None,
            action: "/invitations/accept",
            token: "t\"><script>",
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>"), "{page}");
        let r = SignInLinkMail { org_name: HOSTILE, email: "a@example.com", link: "https://r.example/x", minutes: 15 }
            .render()
            .unwrap();
        assert!(!r.html.contains("<script>"), "{}", r.html);
        let page = SignInPage {
            email: HOSTILE,
            problem: Some(HOSTILE),
            redirect_uri: HOSTILE,
            state: Some(HOSTILE),
            client_id: Some(HOSTILE),
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>"), "{page}");
        let lines = vec![HOSTILE.to_string()];
        let r = NoticeMail { org_name: HOSTILE, headline: HOSTILE, lines: &lines }.render().unwrap();
        assert!(!r.html.contains("<script>"), "{}", r.html);
        let page = SignInLinkPage { org_name: HOSTILE, token: HOSTILE }.render().unwrap();
        assert!(!page.contains("<script>"), "{page}");
        let page = MessagePage { title: HOSTILE, message: HOSTILE, code: Some(HOSTILE) }.render().unwrap();
        assert!(!page.contains("<script>"), "{page}");
    }
}

/// A sign-in link: the organization, the address, the link and how long it works.
#[derive(Debug, Clone)]
pub struct SignInLinkMail<'a> {
    pub org_name: &'a str,
    pub email: &'a str,
    pub link: &'a str,
    pub minutes: i64,
}

#[derive(Template)]
#[template(path = "mail/sign_in_link.txt")]
struct SignInLinkText<'a, 'b> {
    m: &'b SignInLinkMail<'a>,
}

#[derive(Template)]
#[template(path = "mail/sign_in_link.html")]
struct SignInLinkHtml<'a, 'b> {
    m: &'b SignInLinkMail<'a>,
}

impl SignInLinkMail<'_> {
    pub fn render(&self) -> askama::Result<Rendered> {
        Ok(Rendered {
            subject: format!("Sign in to {}", self.org_name),
            text: SignInLinkText { m: self }.render()?,
            html: SignInLinkHtml { m: self }.render()?,
        })
    }
}

/// The sign-in page: one email field, and the product's request carried along.
#[derive(Template)]
#[template(path = "pages/signin.html")]
pub struct SignInPage<'a> {
    pub email: &'a str,
    pub problem: Option<&'a str>,
    pub redirect_uri: &'a str,
    pub state: Option<&'a str>,
    pub client_id: Option<&'a str>,
}

/// The page a sign-in link opens: one button (opening the link changes nothing).
#[derive(Template)]
#[template(path = "pages/signin_link.html")]
pub struct SignInLinkPage<'a> {
    pub org_name: &'a str,
    pub token: &'a str,
}

/// A notice to an organization's Owners and Admins: a headline and what to know.
#[derive(Debug, Clone)]
pub struct NoticeMail<'a> {
    pub org_name: &'a str,
    pub headline: &'a str,
    pub lines: &'a [String],
}

#[derive(Template)]
#[template(path = "mail/notice.txt")]
struct NoticeText<'a, 'b> {
    m: &'b NoticeMail<'a>,
}

#[derive(Template)]
#[template(path = "mail/notice.html")]
struct NoticeHtml<'a, 'b> {
    m: &'b NoticeMail<'a>,
}

impl NoticeMail<'_> {
    pub fn render(&self) -> askama::Result<Rendered> {
        Ok(Rendered {
            subject: format!("{}: {}", self.org_name, self.headline),
            text: NoticeText { m: self }.render()?,
            html: NoticeHtml { m: self }.render()?,
        })
    }
}
