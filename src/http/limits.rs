//! Rate limits on what an attacker can repeat cheaply and Roster pays for:
//! failed authentications (a database look-up each) and sign-in starts (a
//! row each). Token buckets per key (a client address, an SSO client),
//! kept in memory by each replica.
//!
//! A limiter can be asked whether a key may go on without spending from
//! its bucket ([`RateLimiter::check`]): a failed authentication spends, and
//! once an address has spent its allowance every authentication from it
//! waits, valid or not, before any look-up is made.

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys a limiter remembers before it forgets those whose buckets refilled.
const PRUNE_AT: usize = 10_000;

/// A token bucket per key: `per_minute` requests a minute, in bursts of up
/// to `per_minute`. Zero means no limit.
#[derive(Debug)]
pub struct RateLimiter {
    /// The limit's name in metrics and answers.
    name: &'static str,
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(name: &'static str, per_minute: u32) -> Self {
        Self { name, per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether `key` may go on now; `Err` holds how long it must wait.
    pub fn check(&self, key: &str) -> Result<(), Limited> {
        self.with_bucket(key, false)
    }

    /// Spends one request of `key`'s allowance; `Err` when none is left.
    pub fn take(&self, key: &str) -> Result<(), Limited> {
        self.with_bucket(key, true)
    }

    fn with_bucket(&self, key: &str, spend: bool) -> Result<(), Limited> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A key that never spent has a full bucket: checking it stores nothing.
        if !spend && !buckets.contains_key(key) {
            return Ok(());
        }
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(key) {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < capacity);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket { tokens: capacity, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            if spend {
                bucket.tokens -= 1.0;
            }
            return Ok(());
        }
        metrics::counter!("roster_rate_limited_total", "limit" => self.name).increment(1);
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
        Err(Limited { limit: self.name, retry_after: wait })
    }
}

/// A refusal: which limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: &'static str,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds to wait, at least one.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }

    pub fn detail(&self) -> String {
        format!("too many requests ({}); try again in {} s", self.limit.replace('_', " "), self.retry_after_secs())
    }

    /// Adds `Retry-After` to a 429 answer built in the route's dialect.
    pub fn answer(&self, body: impl IntoResponse) -> Response {
        let mut res = body.into_response();
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(value) = HeaderValue::from_str(&self.retry_after_secs().to_string()) {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
        }
        res
    }
}

/// The limits one Roster process keeps.
#[derive(Debug)]
pub struct RateLimits {
    /// Failed authentications (SCIM tokens, API keys, SSO client secrets) per client address and per SSO client.
    pub failed_auth: RateLimiter,
    /// Sign-ins started or finished (`/sso/authorize`, `/sso/callback`) per client address.
    pub sign_in: RateLimiter,
    /// Sign-in links asked for, per email address (whoever asks).
    pub sign_in_links: RateLimiter,
    /// Whose `X-Forwarded-For` is believed.
    pub proxies: TrustedProxies,
}

impl RateLimits {
    /// The address a request comes from, as a limiter key.
    pub fn client(&self, parts: &Parts) -> String {
        self.proxies.client_address(&parts.headers, parts.extensions.get::<ConnectInfo<SocketAddr>>())
    }
}

/// Whose `X-Forwarded-For` Roster believes.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    /// Proxies by address: a request from one of them is attributed to the
    /// last address in `X-Forwarded-For` that is not one of them.
    pub nets: Vec<ipnet::IpNet>,
    /// `trust_forwarded_for`: whatever the peer, the last entry.
    pub any_peer_one_hop: bool,
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. A peer that is not a trusted proxy is the
    /// client, whatever it sends. A trusted proxy's `X-Forwarded-For` is
    /// read from the end (each proxy appends the address it saw): the first
    /// address that is not a trusted proxy is the client; the entries
    /// before it are the client's own to write, and never believed.
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<&ConnectInfo<SocketAddr>>) -> String {
        let peer = peer.map(|info| info.0.ip().to_canonical());
        let entries = || {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|a| a.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
                .collect::<Vec<_>>()
        };
        let client = match peer {
            Some(peer) if self.trusts(peer) => {
                let mut client = peer;
                for entry in entries().into_iter().rev() {
                    // A malformed entry ends what can be believed.
                    let Some(ip) = entry else { break };
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                Some(client)
            }
            _ if self.any_peer_one_hop => entries().last().copied().flatten().or(peer),
            _ => peer,
        };
        client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(proxies: &TrustedProxies, peer: &str, forwarded: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        let peer = ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 40000));
        proxies.client_address(&headers, Some(&peer))
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only_and_read_from_the_end() {
        let none = TrustedProxies::default();
        assert_eq!(client(&none, "198.51.100.1", &["203.0.113.9"]), "198.51.100.1");
        let proxies = TrustedProxies {
            nets: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            any_peer_one_hop: false,
        };
        assert_eq!(client(&proxies, "10.0.0.2", &["203.0.113.9"]), "203.0.113.9");
        assert_eq!(client(&proxies, "10.0.0.2", &["6.6.6.6, 203.0.113.9, 10.9.9.9"]), "203.0.113.9");
        assert_eq!(client(&proxies, "10.0.0.2", &["6.6.6.6", "203.0.113.9"]), "203.0.113.9", "across header lines");
        assert_eq!(client(&proxies, "10.0.0.2", &[]), "10.0.0.2", "nothing forwarded: the proxy");
        assert_eq!(client(&proxies, "10.0.0.2", &["10.0.0.7"]), "10.0.0.7", "only proxies: the farthest");
        assert_eq!(client(&proxies, "10.0.0.2", &["203.0.113.9, garbage"]), "10.0.0.2", "a malformed entry ends it");
        assert_eq!(client(&proxies, "198.51.100.1", &["203.0.113.9"]), "198.51.100.1", "not a proxy");
        assert_eq!(client(&proxies, "::ffff:10.0.0.2", &["2001:db8::1"]), "2001:db8::1", "IPv4-mapped peer");
        let one_hop = TrustedProxies { nets: Vec::new(), any_peer_one_hop: true };
        assert_eq!(client(&one_hop, "198.51.100.1", &["6.6.6.6, 203.0.113.9"]), "203.0.113.9");
        assert_eq!(client(&one_hop, "198.51.100.1", &[]), "198.51.100.1");
    }

    #[test]
    fn a_bucket_spends_checks_without_spending_and_refills() {
        let limiter = RateLimiter::new("failed_auth", 3);
        for _ in 0..5 {
            limiter.check("a").unwrap();
        }
        for _ in 0..3 {
            limiter.take("a").unwrap();
        }
        let limited = limiter.take("a").unwrap_err();
        assert_eq!(limiter.check("a").unwrap_err().limit, "failed_auth");
        // Three a minute: one comes back every 20 s.
        assert!(limited.retry_after <= Duration::from_secs(20) && limited.retry_after > Duration::from_secs(19));
        assert_eq!(limited.retry_after_secs(), 20);
        limiter.take("b").unwrap();

        let mut buckets = limiter.buckets.lock().unwrap();
        buckets.get_mut("a").unwrap().at -= Duration::from_secs(21);
        drop(buckets);
        limiter.take("a").unwrap();
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn zero_is_no_limit_and_full_buckets_are_forgotten() {
        let off = RateLimiter::new("sign_in", 0);
        for _ in 0..1000 {
            off.take("a").unwrap();
        }
        let limiter = RateLimiter::new("sign_in", 60);
        for i in 0..PRUNE_AT {
            limiter.check(&i.to_string()).unwrap();
        }
        assert_eq!(limiter.buckets.lock().unwrap().len(), 0, "checking a key that never spent stores nothing");
        for i in 0..PRUNE_AT {
            limiter.take(&i.to_string()).unwrap();
        }
        // Make them full again, as they are a minute later.
        for bucket in limiter.buckets.lock().unwrap().values_mut() {
            bucket.at -= Duration::from_secs(60);
        }
        limiter.take("spent").unwrap();
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.len(), 1, "full buckets are forgotten once the limiter holds {PRUNE_AT} keys");
    }
}
