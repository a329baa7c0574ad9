//! The OpenID Connect relying party: provider discovery and JWKS with a
//! cache, the authorization request, and the code exchange with full ID
//! token verification.
//!
//! Discovery documents and key sets are cached per issuer. A token signed
//! by a key the cached set lacks triggers one key-set refresh (at most one
//! per [`JWKS_REFRESH_MIN_INTERVAL`] per issuer, shared by concurrent
//! logins), never one fetch per login.

pub mod http;

use crate::clock::Clock;
use crate::model::TenantId;
use crate::secrets::Secret;
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IdTokenVerifier, IssuerUrl, JsonWebKeySet, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use self::http::OidcHttp;
use crate::telemetry::with_causes;

/// The shortest time between two key-set fetches of one issuer.
pub const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// The signing algorithms an ID token may use: asymmetric only, so neither
/// `none` nor a client-secret HMAC (key confusion) is ever accepted.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Claims beyond the standard ones, kept as JSON so the tenant claim's name can be configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

/// Discovery fields openidconnect's core set lacks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogoutMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<url::Url>,
}
impl AdditionalProviderMetadata for LogoutMetadata {}

type Metadata = ProviderMetadata<
    LogoutMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;
type TokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<TokenFields, CoreTokenType>;
type RpClient = openidconnect::Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;
type KeySet = JsonWebKeySet<CoreJsonWebKey>;

/// Which kind of connection a login goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    /// The deployment's tenant-routing provider, with the organization's tenant ID.
    Tenant,
    /// The organization's own OpenID provider.
    Direct,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Tenant => "tenant",
            ConnectionKind::Direct => "direct",
        }
    }
}

/// Everything one login needs to know about its OpenID provider.
#[derive(Debug, Clone)]
pub struct Connection {
    pub kind: ConnectionKind,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub require_email_verified: bool,
    /// For tenant connections: the organization's tenant ID, the authorization
    /// parameter that carries it and the ID-token claim that must list it.
    pub tenant: Option<TenantRouting>,
}

#[derive(Debug, Clone)]
pub struct TenantRouting {
    pub tenant_id: TenantId,
    pub param: String,
    pub claim: String,
}

/// Who the provider says signed in, after every check passed.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub name: Option<String>,
    /// The roles the tenant claim lists for the organization's tenant (tenant connections).
    pub tenant_roles: Vec<String>,
    /// The raw ID token, kept for the provider's logout (`id_token_hint`).
    pub id_token: String,
}

/// What can go wrong talking to a provider or checking what it returned.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense (discovery, JWKS, token endpoint).
    #[error("the identity provider could not be used: {0}")]
    Provider(String),
    /// The provider refused the code (expired, replayed, wrong client).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The ID token failed a check.
    #[error("the identity provider's ID token was not accepted: {0}")]
    InvalidToken(String),
    /// The token is valid but does not say what Roster needs; `code` names which.
    #[error("{message}")]
    Claims { code: &'static str, message: String },
}

struct ProviderEntry {
    metadata: Metadata,
    fetched: Instant,
    keys: RwLock<Arc<KeySet>>,
    last_key_fetch: tokio::sync::Mutex<Instant>,
}

/// The relying party: a cache of providers over one HTTP client.
#[derive(Clone)]
pub struct RelyingParty {
    http: OidcHttp,
    clock: Arc<dyn Clock>,
    metadata_ttl: Duration,
    skew: chrono::Duration,
    providers: Arc<Mutex<HashMap<String, Arc<ProviderEntry>>>>,
}

impl RelyingParty {
    pub fn new(http: OidcHttp, clock: Arc<dyn Clock>, metadata_ttl: Duration, skew: Duration) -> Self {
        Self {
            http,
            clock,
            metadata_ttl,
            skew: chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::seconds(60)),
            providers: Arc::default(),
        }
    }

    pub fn http(&self) -> &OidcHttp {
        &self.http
    }

    /// Fetches `issuer`'s discovery document once and answers the issuer it
    /// names, which must equal `issuer` exactly (a trailing `/` included)
    /// for any sign-in through it to work.
    pub async fn advertised_issuer(&self, issuer: &str) -> Result<String, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let request = openidconnect::http::Request::builder()
            .method(openidconnect::http::Method::GET)
            .uri(&url)
            .header(openidconnect::http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?;
        let response = openidconnect::AsyncHttpClient::call(&self.http, request)
            .await
            .map_err(|e| OidcError::Provider(with_causes(&e)))?;
        if !response.status().is_success() {
            return Err(OidcError::Provider(format!("{url} answered {}", response.status())));
        }
        let document: serde_json::Value = serde_json::from_slice(response.body())
            .map_err(|e| OidcError::Provider(format!("{url} is not a JSON discovery document: {e}")))?;
        document
            .get("issuer")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| OidcError::Provider(format!("{url} names no issuer")))
    }

    /// Fetches (or finds cached) the issuer's discovery document and keys:
    /// proof that a provider answers as the issuer it claims to be.
    pub async fn discover(&self, issuer: &str) -> Result<(), OidcError> {
        self.provider(issuer).await.map(|_| ())
    }

    /// The provider's discovery document and keys, from the cache while fresh.
    async fn provider(&self, issuer: &str) -> Result<Arc<ProviderEntry>, OidcError> {
        let cached = self.providers.lock().ok().and_then(|m| m.get(issuer).cloned());
        if let Some(entry) = &cached {
            if entry.fetched.elapsed() < self.metadata_ttl {
                return Ok(entry.clone());
            }
        }
        let issuer_url = IssuerUrl::new(issuer.to_string()).map_err(|e| OidcError::Provider(e.to_string()))?;
        let fetched = match Metadata::discover_async(issuer_url, &self.http).await {
            Ok(m) => m,
            // A provider that is briefly unreachable keeps working from the stale copy.
            Err(e) => match cached {
                Some(entry) => {
                    tracing::warn!(issuer, error = %with_causes(&e), "discovery refresh failed; keeping the cached document");
                    return Ok(entry);
                }
                None => return Err(OidcError::Provider(format!("discovery of {issuer} failed: {}", with_causes(&e)))),
            },
        };
        let keys = Arc::new(fetched.jwks().clone());
        let entry = Arc::new(ProviderEntry {
            metadata: fetched,
            fetched: Instant::now(),
            keys: RwLock::new(keys),
            last_key_fetch: tokio::sync::Mutex::new(Instant::now()),
        });
        if let Ok(mut map) = self.providers.lock() {
            map.insert(issuer.to_string(), entry.clone());
        }
        Ok(entry)
    }

    fn client(&self, entry: &ProviderEntry, conn: &Connection, redirect_uri: &str) -> Result<RpClient, OidcError> {
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|e| OidcError::Provider(e.to_string()))?;
        let mut client = RpClient::from_provider_metadata(
            entry.metadata.clone(),
            ClientId::new(conn.client_id.clone()),
            Some(ClientSecret::new(conn.client_secret.expose().to_string())),
        )
        .set_redirect_uri(redirect);
        // Providers that only take the secret in the body say so in discovery.
        if let Some(methods) = entry.metadata.token_endpoint_auth_methods_supported() {
            if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
            {
                client = client.set_auth_type(AuthType::RequestBody);
            }
        }
        Ok(client)
    }

    /// The provider's authorization URL for a new login, with PKCE S256, the
    /// nonce, `login_hint` and (tenant connections) the tenant parameter.
    pub async fn authorization_url(
        &self,
        conn: &Connection,
        callback: &str,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        login_hint: Option<&str>,
    ) -> Result<url::Url, OidcError> {
        let entry = self.provider(&conn.issuer).await?;
        let client = self.client(&entry, conn, callback)?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(pkce_verifier.to_string()));
        let (state, nonce) = (state.to_string(), nonce.to_string());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in conn.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(hint) = login_hint {
            request = request.add_extra_param("login_hint", hint.to_string());
        }
        if let Some(t) = &conn.tenant {
            request = request.add_extra_param(t.param.clone(), t.tenant_id.as_str().to_string());
        }
        let (url, _, _) = request.url();
        self.http.check_url(url.as_str()).map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(url)
    }

    /// Exchanges `code` (with the PKCE verifier) and verifies the ID token:
    /// signature by the issuer's keys with an allowed algorithm, `iss`, `aud`,
    /// `azp`, `exp`/`iat` within the allowed skew, the nonce; then the email
    /// (and `email_verified` when the connection requires it) and, for tenant
    /// connections, the organization's tenant in the tenant claim.
    pub async fn finish(
        &self,
        conn: &Connection,
        callback: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let entry = self.provider(&conn.issuer).await?;
        let client = self.client(&entry, conn, callback)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => OidcError::Refused(match r.error_description() {
                    Some(d) => format!("{} ({d})", r.error()),
                    None => r.error().to_string(),
                }),
                other => OidcError::Provider(format!("token request failed: {other}")),
            })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| OidcError::InvalidToken("the token response has no id_token".into()))?
            .clone();
        let nonce = Nonce::new(nonce.to_string());
        let claims = match self.verify(&entry, conn, &id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                self.refresh_keys(&conn.issuer, &entry).await?;
                self.verify(&entry, conn, &id_token, &nonce)
            }
            other => other,
        }
        .map_err(|e| OidcError::InvalidToken(e.to_string()))?;

        // azp: when present it must be us; with several audiences it must be present.
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != conn.client_id => {
                return Err(OidcError::InvalidToken(format!("azp `{}` is not this client", azp.as_str())))
            }
            None if claims.audiences().len() > 1 => {
                return Err(OidcError::InvalidToken("several audiences and no azp".into()))
            }
            _ => {}
        }
        let subject = claims.subject().to_string();
        let mut email = claims.email().map(|e| e.to_string());
        let mut email_verified = claims.email_verified();
        let mut name = claims.name().and_then(|n| n.get(None)).map(|n| n.to_string());
        let mut extra = claims.additional_claims().claims.clone();

        // Providers that keep profile claims out of the ID token serve them at userinfo.
        let tenant_claim_missing = conn.tenant.as_ref().is_some_and(|t| !extra.contains_key(&t.claim));
        if email.is_none() || tenant_claim_missing {
            if let Ok(request) = client.user_info(tokens.access_token().clone(), Some(claims.subject().clone())) {
                let info: openidconnect::UserInfoClaims<ExtraClaims, CoreGenderClaim> = request
                    .request_async(&self.http)
                    .await
                    .map_err(|e| OidcError::Provider(format!("userinfo request failed: {e}")))?;
                email = email.or_else(|| info.email().map(|e| e.to_string()));
                email_verified = email_verified.or(info.email_verified());
                name = name.or_else(|| info.name().and_then(|n| n.get(None)).map(|n| n.to_string()));
                for (k, v) in info.additional_claims().claims.iter() {
                    extra.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        let email = email.ok_or_else(|| OidcError::Claims {
            code: "no_email",
            message: "The identity provider did not send an email address.".into(),
        })?;
        if conn.require_email_verified && email_verified != Some(true) {
            return Err(OidcError::Claims {
                code: "email_not_verified",
                message: format!(
                    "The identity provider has not verified the email address {email}. Verify it there, then sign in again."
                ),
            });
        }
        let tenant_roles = match &conn.tenant {
            Some(t) => tenant_roles(&extra, t)?,
            None => Vec::new(),
        };
        Ok(Identity { issuer: conn.issuer.clone(), subject, email, name, tenant_roles, id_token: id_token.to_string() })
    }

    fn verify(
        &self,
        entry: &ProviderEntry,
        conn: &Connection,
        id_token: &openidconnect::IdToken<
            ExtraClaims,
            CoreGenderClaim,
            CoreJweContentEncryptionAlgorithm,
            CoreJwsSigningAlgorithm,
        >,
        nonce: &Nonce,
    ) -> Result<openidconnect::IdTokenClaims<ExtraClaims, CoreGenderClaim>, ClaimsVerificationError> {
        let keys = entry.keys.read().map(|k| k.as_ref().clone()).unwrap_or_else(|_| KeySet::new(Vec::new()));
        let issuer =
            IssuerUrl::new(conn.issuer.clone()).map_err(|e| ClaimsVerificationError::Other(format!("issuer: {e}")))?;
        // A public-client verifier holds no client secret, so HMAC-signed tokens cannot verify.
        let clock = self.clock.clone();
        let skew = self.skew;
        let now = clock.now();
        let verifier = IdTokenVerifier::new_public_client(ClientId::new(conn.client_id.clone()), issuer, keys)
            .set_allowed_algs(ALLOWED_ALGS)
            .set_time_fn(move || clock.now() - skew)
            .set_issue_time_verifier_fn(move |iat: DateTime<Utc>| {
                if iat > now + skew {
                    Err(format!("issued in the future ({iat})"))
                } else if iat < now - chrono::Duration::minutes(10) - skew {
                    Err(format!("issued too long ago ({iat})"))
                } else {
                    Ok(())
                }
            });
        id_token.claims(&verifier, nonce).cloned()
    }

    /// Fetches the issuer's keys again, unless another login just did.
    async fn refresh_keys(&self, issuer: &str, entry: &ProviderEntry) -> Result<(), OidcError> {
        let mut last = entry.last_key_fetch.lock().await;
        if last.elapsed() < JWKS_REFRESH_MIN_INTERVAL {
            return Ok(());
        }
        let keys = KeySet::fetch_async(entry.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| OidcError::Provider(format!("JWKS refresh for {issuer} failed: {e}")))?;
        metrics::counter!("roster_sso_jwks_refreshes_total").increment(1);
        if let Ok(mut k) = entry.keys.write() {
            *k = Arc::new(keys);
        }
        *last = Instant::now();
        Ok(())
    }

    /// Where to send the browser to end the provider's session, when the provider offers it.
    pub async fn end_session_url(
        &self,
        issuer: &str,
        client_id: &str,
        id_token_hint: Option<&str>,
        post_logout_redirect: Option<&str>,
    ) -> Option<url::Url> {
        let entry = self.provider(issuer).await.ok()?;
        let mut url = entry.metadata.additional_metadata().end_session_endpoint.clone()?;
        self.http.check_url(url.as_str()).ok()?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", client_id);
            if let Some(hint) = id_token_hint {
                q.append_pair("id_token_hint", hint);
            }
            if let Some(to) = post_logout_redirect {
                q.append_pair("post_logout_redirect_uri", to);
            }
        }
        Some(url)
    }
}

/// The roles the tenant claim lists for the connection's tenant; refuses a
/// token whose tenant claim does not name the tenant.
fn tenant_roles(
    extra: &serde_json::Map<String, serde_json::Value>,
    t: &TenantRouting,
) -> Result<Vec<String>, OidcError> {
    let missing = || OidcError::Claims {
        code: "tenant_mismatch",
        message: format!(
            "The identity provider's `{}` claim does not include this organization's tenant `{}`: your account \
             there does not belong to this organization.",
            t.claim,
            t.tenant_id.as_str()
        ),
    };
    let entry = match extra.get(&t.claim) {
        // Descope's shape: an object keyed by tenant ID.
        Some(serde_json::Value::Object(tenants)) => tenants.get(t.tenant_id.as_str()).ok_or_else(missing)?,
        // A plain list of tenant IDs carries no roles.
        Some(serde_json::Value::Array(ids)) if ids.iter().any(|v| v.as_str() == Some(t.tenant_id.as_str())) => {
            return Ok(Vec::new())
        }
        _ => return Err(missing()),
    };
    Ok(entry
        .get("roles")
        .and_then(|r| r.as_array())
        .map(|roles| roles.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn routing() -> TenantRouting {
        TenantRouting { tenant_id: TenantId::parse("T-acme").unwrap(), param: "tenant".into(), claim: "tenants".into() }
    }

    #[test]
    fn tenant_claim_must_name_the_tenant() {
        let ok = json!({"tenants": {"T-acme": {"roles": ["admin", "Viewer"]}, "T-other": {}}});
        let roles = tenant_roles(ok.as_object().unwrap(), &routing()).unwrap();
        assert_eq!(roles, vec!["admin".to_string(), "Viewer".to_string()]);

        let listed = json!({"tenants": ["T-x", "T-acme"]});
        assert_eq!(tenant_roles(listed.as_object().unwrap(), &routing()).unwrap(), Vec::<String>::new());

        for bad in
            [json!({"tenants": {"T-other": {}}}), json!({}), json!({"tenants": "T-acme"}), json!({"tenants": ["T-x"]})]
        {
            let err = tenant_roles(bad.as_object().unwrap(), &routing()).unwrap_err();
            assert!(err.to_string().contains("T-acme"), "{err}");
        }
    }
}
