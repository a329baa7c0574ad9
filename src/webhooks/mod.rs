//! Webhook delivery: the events outbox POSTed to each endpoint as Standard
//! Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! Each endpoint has a queue per organization it hears, which a replica
//! claims for a while before sending, so one event never goes to one
//! endpoint twice at once and several replicas share the queues. A queue
//! goes in feed order: its head event is retried (exponential backoff with
//! jitter) until it is delivered, holding the organization's later events
//! for that endpoint while other queues proceed. Progress is recorded after
//! sending, so a replica that stops between the two sends the same
//! `webhook-id` again (at least once). Requests never follow redirects,
//! time out, read at most a few KiB of the answer, and (unless the
//! deployment allows it) never reach loopback, private or link-local
//! addresses, by literal or by DNS.

use crate::config::WebhookConfig;
use crate::service::{hears, Roster};
use crate::store::{DeliveryOutcome, Event, WebhookDelivery, WebhookEndpoint, WebhookProgress, WebhookQueue};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use rand::RngCore;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How many queues one claim takes at most.
const CLAIM_BATCH: i64 = 32;
/// Queues delivered at once by one replica.
const CONCURRENCY: usize = 8;
/// How long a claim keeps other replicas off a queue: longer than a round.
const CLAIM_FOR: Duration = Duration::from_secs(120);
/// A round stops starting new sends after this long, or this many, and records its progress.
const ROUND_BUDGET: Duration = Duration::from_secs(30);
const ROUND_SENDS: usize = 100;
/// Events read from the feed at a time.
const FEED_PAGE: i64 = 100;
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How much of an answer is read, and how much of it is logged.
const RESPONSE_READ: usize = 16 * 1024;
const RESPONSE_LOGGED: usize = 1024;
/// What the secret shown to a receiver starts with (Standard Webhooks).
const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> crate::secrets::Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    crate::secrets::Secret::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The HMAC key a `whsec_…` secret stands for.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok().filter(|k| !k.is_empty())
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` per key, space-separated.
pub fn signature(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else { continue };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        out.push(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())));
    }
    out.join(" ")
}

/// Whether an address is on the public internet: not loopback, private,
/// link-local, shared (CGNAT), unspecified, multicast, documentation or
/// otherwise reserved (an IPv4-mapped IPv6 address as its IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// Resolves host names to their public addresses only: a name that
/// resolves to nothing else is not connected to (DNS cannot point a
/// delivery at the deployment's own network).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What one POST came to.
#[derive(Debug, Clone)]
pub struct Answer {
    pub delivered: bool,
    pub status: Option<u16>,
    pub latency: Duration,
    /// The start of the answer's body, or why there was no answer.
    pub response: String,
}

/// Sends webhooks: the HTTP client and the delivery knobs.
pub struct Dispatcher {
    client: reqwest::Client,
    allow_private_addresses: bool,
    first_retry: Duration,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("allow_private_addresses", &self.allow_private_addresses).finish()
    }
}

impl Dispatcher {
    pub fn from_config(config: &WebhookConfig) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            // A proxy from the environment would connect where the guard did not look.
            .no_proxy()
            .pool_max_idle_per_host(4)
            .user_agent(concat!("roster-webhooks/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            client: builder.build()?,
            allow_private_addresses: config.allow_private_addresses,
            first_retry: config.first_retry,
        })
    }

    /// How long to wait before attempt `failed + 1`: the first retry's
    /// wait doubled per failure up to an hour, spread by ±20%.
    pub fn backoff(&self, failed: i64) -> Duration {
        let doublings = failed.saturating_sub(1).clamp(0, 20) as u32;
        let base = self.first_retry.saturating_mul(1u32 << doublings).min(MAX_BACKOFF.max(self.first_retry));
        base.mul_f64(0.8 + rand::random::<f64>() * 0.4)
    }

    /// POSTs one body, signed at `timestamp` (Unix seconds).
    pub async fn post(&self, url: &str, id: &str, timestamp: i64, body: &[u8], keys: &[Vec<u8>]) -> Answer {
        let started = Instant::now();
        let failed = |response: String| Answer { delivered: false, status: None, latency: started.elapsed(), response };
        let Ok(parsed) = url::Url::parse(url) else { return failed(format!("`{url}` is not a URL")) };
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.allow_private_addresses && !is_public(*ip)) {
            return failed(format!("{ip} is not a public address (webhook_allow_private_addresses is off)"));
        }
        let request = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(keys, id, timestamp, body))
            .body(body.to_vec());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return failed(crate::telemetry::with_causes(&e)),
        };
        let status = response.status();
        let mut excerpt = Vec::new();
        while excerpt.len() < RESPONSE_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let mut text = String::from_utf8_lossy(&excerpt).into_owned();
        if text.len() > RESPONSE_LOGGED {
            let mut end = RESPONSE_LOGGED;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        let response = if status.is_redirection() {
            let to = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("-");
            format!("redirect to {to} not followed")
        } else {
            text
        };
        Answer { delivered: status.is_success(), status: Some(status.as_u16()), latency: started.elapsed(), response }
    }
}

/// The JSON body of an event's webhook.
pub fn body(org_id: Uuid, event: &Event) -> Vec<u8> {
    let payload = serde_json::json!({
        "type": event.kind,
        "timestamp": event.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {
            "organization_id": org_id,
            "event_seq": event.seq,
            "subject": event.subject,
            "object": event.data,
        },
    });
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Delivers what is due now as `holder`; returns how many attempts it made.
pub async fn deliver_due(roster: &Roster, dispatcher: &Dispatcher, holder: &str) -> anyhow::Result<usize> {
    let now = roster.now();
    if !roster.store().read().await?.webhooks_due(now).await? {
        return Ok(0);
    }
    let until = now + chrono::Duration::from_std(CLAIM_FOR)?;
    let mut tx = roster.store().begin().await?;
    let claimed = tx.claim_webhook_queues(holder, now, until, CLAIM_BATCH).await?;
    tx.commit().await?;
    let attempts = futures::stream::iter(claimed)
        .map(|queue| async move {
            match deliver_queue(roster, dispatcher, holder, &queue).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, endpoint = %queue.endpoint_id, org = %queue.org_id, "webhook round failed");
                    0
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .fold(0, |sum, n| async move { sum + n })
        .await;
    Ok(attempts)
}

/// One round of a claimed queue: its replays, then its feed from the head on.
async fn deliver_queue(
    roster: &Roster,
    dispatcher: &Dispatcher,
    holder: &str,
    queue: &WebhookQueue,
) -> anyhow::Result<usize> {
    let Some(endpoint) = roster.store().lookup().await?.get_webhook_endpoint(queue.endpoint_id).await? else {
        return Ok(0);
    };
    let keys = roster.webhook_signing_keys(&endpoint, roster.now())?;
    let mut deliveries = Vec::new();
    let mut progress = WebhookProgress {
        delivered_seq: queue.delivered_seq,
        attempts: queue.attempts,
        failing_since: queue.failing_since,
        next_attempt_at: roster.now(),
        replays_done: Vec::new(),
    };
    let started = Instant::now();
    for &seq in &queue.replays {
        if let Some(event) = roster.store().lookup().await?.get_event(queue.org_id, seq).await? {
            let answer = send(roster, dispatcher, &endpoint, queue.org_id, &event, &keys).await;
            deliveries.push(delivery(roster, &endpoint, queue.org_id, &event, 1, true, &answer));
        }
        progress.replays_done.push(seq);
    }
    'feed: while deliveries.len() < ROUND_SENDS && started.elapsed() < ROUND_BUDGET {
        let events =
            roster.store().lookup().await?.list_events(queue.org_id, progress.delivered_seq, FEED_PAGE).await?;
        if events.is_empty() {
            break;
        }
        for event in events {
            if !hears(&endpoint.event_types, &event.kind) {
                progress.delivered_seq = event.seq;
                continue;
            }
            let answer = send(roster, dispatcher, &endpoint, queue.org_id, &event, &keys).await;
            progress.attempts += 1;
            deliveries.push(delivery(roster, &endpoint, queue.org_id, &event, progress.attempts, false, &answer));
            if answer.delivered {
                progress.delivered_seq = event.seq;
                progress.attempts = 0;
                progress.failing_since = None;
            } else {
                let now = roster.now();
                progress.failing_since.get_or_insert(now);
                progress.next_attempt_at = now
                    + chrono::Duration::from_std(dispatcher.backoff(progress.attempts))
                        .unwrap_or(chrono::Duration::MAX);
                break 'feed;
            }
            if deliveries.len() >= ROUND_SENDS || started.elapsed() >= ROUND_BUDGET {
                break 'feed;
            }
        }
    }
    let n = deliveries.len();
    if !roster.record_webhook_round(&endpoint, queue, holder, &deliveries, &progress).await? {
        tracing::warn!(endpoint = %endpoint.id, org = %queue.org_id, "a webhook queue's claim lapsed during its round");
    }
    Ok(n)
}

/// POSTs an event to the endpoint, signed now.
async fn send(
    roster: &Roster,
    dispatcher: &Dispatcher,
    endpoint: &WebhookEndpoint,
    org_id: Uuid,
    event: &Event,
    keys: &[Vec<u8>],
) -> Answer {
    let body = body(org_id, event);
    dispatcher.post(&endpoint.url, &event.id.to_string(), roster.now().timestamp(), &body, keys).await
}

fn delivery(
    roster: &Roster,
    endpoint: &WebhookEndpoint,
    org_id: Uuid,
    event: &Event,
    attempt: i64,
    replay: bool,
    answer: &Answer,
) -> WebhookDelivery {
    WebhookDelivery {
        id: Uuid::now_v7(),
        endpoint_id: endpoint.id,
        org_id,
        event_id: event.id,
        event_seq: event.seq,
        event_type: event.kind.clone(),
        attempt,
        replay,
        outcome: if answer.delivered { DeliveryOutcome::Delivered } else { DeliveryOutcome::Failed },
        status_code: answer.status.map(i64::from),
        latency_ms: answer.latency.as_millis().min(i64::MAX as u128) as i64,
        response: answer.response.clone(),
        at: roster.now(),
    }
}

/// Starts this replica's dispatcher: it delivers at once when this replica
/// commits events, and every `poll_interval` for other replicas' events and
/// retries coming due.
pub fn spawn_dispatcher(
    roster: Roster,
    dispatcher: Arc<Dispatcher>,
    poll_interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let holder = Arc::new(format!("webhooks-{}", Uuid::new_v4()));
    let wake = roster.store().events_committed();
    tokio::spawn(crate::jobs::woken_or_polled(wake, poll_interval, move || {
        let (roster, dispatcher, holder) = (roster.clone(), dispatcher.clone(), holder.clone());
        async move {
            match deliver_due(&roster, &dispatcher, &holder).await {
                // Sends were made: more may have come due meanwhile.
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery tick failed");
                    false
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's test vectors.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(std::slice::from_ref(&key), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let two = signature(&[key.clone(), key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(two.split(' ').count(), 2);
        let fresh = generate_secret();
        assert!(fresh.expose().starts_with("whsec_"));
        assert_eq!(secret_key(fresh.expose()).unwrap().len(), 32);
        assert!(secret_key("nope").is_none());
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_first_retry_up_to_an_hour() {
        let config = WebhookConfig {
            allow_private_addresses: false,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(3 * 86_400),
            first_retry: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        };
        let d = Dispatcher::from_config(&config).unwrap();
        for (failed, base) in [(1, 10.0), (2, 20.0), (4, 80.0), (20, 3600.0)] {
            let wait = d.backoff(failed).as_secs_f64();
            assert!(wait >= base * 0.8 && wait <= base * 1.2, "after {failed}: {wait}");
        }
    }
}
