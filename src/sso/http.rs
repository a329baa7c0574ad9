//! The outbound HTTP client the OpenID relying party speaks through: reqwest
//! with timeouts, no redirects, a cap on response size, and `https` required
//! unless the deployment runs in SSO dev mode.

use futures::StreamExt;
use openidconnect::{HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why an outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{0}` is not https (allowed only in SSO dev mode)")]
    NotHttps(String),
    #[error("response of {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("request to {url} failed: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("bad request: {0}")]
    Build(String),
}

/// reqwest behind the limits a relying party needs; cheap to clone.
#[derive(Clone)]
pub struct OidcHttp {
    client: reqwest::Client,
    allow_http: bool,
    max_bytes: usize,
    waited_nanos: Arc<AtomicU64>,
}

impl OidcHttp {
    pub fn new(timeout: Duration, allow_http: bool, max_bytes: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("roster/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, allow_http, max_bytes, waited_nanos: Arc::default() })
    }

    /// Refuses a URL Roster must not talk to.
    pub fn check_url(&self, url: &str) -> Result<(), HttpError> {
        let parsed = url::Url::parse(url).map_err(|e| HttpError::Build(format!("`{url}`: {e}")))?;
        match parsed.scheme() {
            "https" => Ok(()),
            "http" if self.allow_http => Ok(()),
            _ => Err(HttpError::NotHttps(url.to_string())),
        }
    }

    /// Time spent waiting for providers so far: what a login's latency owes to them.
    pub fn time_waiting(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let started = std::time::Instant::now();
        let result = self.exchange(request).await;
        self.waited_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = request.uri().to_string();
        self.check_url(&url)?;
        let (parts, body) = request.into_parts();
        let mut builder = self.client.request(parts.method, &url).body(body);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(|source| HttpError::Request { url: url.clone(), source })?;
        let status = response.status();
        let headers = response.headers().clone();
        if response.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(HttpError::TooLarge { url, limit: self.max_bytes });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| HttpError::Request { url: url.clone(), source })?;
            if body.len() + chunk.len() > self.max_bytes {
                return Err(HttpError::TooLarge { url, limit: self.max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = openidconnect::http::Response::builder().status(status);
        if let Some(h) = out.headers_mut() {
            *h = headers;
        }
        out.body(body).map_err(|e| HttpError::Build(e.to_string()))
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
