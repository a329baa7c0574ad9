//! `roster bench scim`: a load generator that drives any SCIM 2.0 server
//! through the phases an identity provider's provisioning goes through, and
//! reports per phase the requests, errors (any unexpected status), throughput
//! and latency percentiles.

use futures::stream::{self, StreamExt};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The SCIM base URL, e.g. `http://127.0.0.1:8080/scim/v2`.
    pub url: String,
    pub token: String,
    pub users: usize,
    pub concurrency: usize,
    /// How many `userName eq` look-ups, GETs and list pages to send.
    pub reads: usize,
    /// Members added per group PATCH.
    pub batch: usize,
    /// A prefix that keeps this run's userNames apart from earlier runs'.
    pub run_id: String,
    /// The server's process on this machine, whose CPU time each phase
    /// reports per request (Linux).
    pub server_pid: Option<u32>,
    /// Users the organization held before the run: list pages start
    /// anywhere among them and this run's, as a full listing's pages do.
    pub existing: usize,
}

/// The figures of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    pub phase: String,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The server process's CPU time (user and system) per request, when
    /// its pid was given.
    pub server_cpu_ms: Option<f64>,
}

impl std::fmt::Display for PhaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<22} {:>8} req {:>6} err {:>9.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            self.phase, self.requests, self.errors, self.per_second, self.p50_ms, self.p99_ms, self.max_ms
        )?;
        match self.server_cpu_ms {
            Some(cpu) => write!(f, "  server cpu {cpu:>6.3} ms/req"),
            None => Ok(()),
        }
    }
}

struct Target {
    client: Client,
    url: String,
    token: String,
}

impl Target {
    /// Sends one request; returns the status, body and latency.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (Option<StatusCode>, Value, Duration) {
        let start = Instant::now();
        let mut req = self.client.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status();
                let body = res.json::<Value>().await.unwrap_or(Value::Null);
                (Some(status), body, start.elapsed())
            }
            Err(_) => (None, Value::Null, start.elapsed()),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// The CPU time, user and system, process `pid` has used so far: fields 14
/// and 15 of `/proc/<pid>/stat`, in clock ticks of 1/100 s (Linux's
/// `USER_HZ`).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it don't.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Runs `n` requests made by `make`, `concurrency` at a time; a request
/// whose status is not `expected` is an error. With `server_pid`, reports
/// that process's CPU time per request.
async fn phase<F, Fut>(
    name: &str,
    n: usize,
    concurrency: usize,
    server_pid: Option<u32>,
    make: F,
) -> (PhaseReport, Vec<Value>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (bool, Value, Duration)>,
{
    let errors = AtomicUsize::new(0);
    let cpu_before = server_pid.and_then(process_cpu);
    let start = Instant::now();
    let results: Vec<(Value, Duration)> = stream::iter(0..n)
        .map(|i| {
            let fut = make(i);
            let errors = &errors;
            async move {
                let (ok, body, latency) = fut.await;
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                (body, latency)
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_after = server_pid.and_then(process_cpu);
    let server_cpu_ms = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if n > 0 => Some((after - before).as_secs_f64() * 1000.0 / n as f64),
        _ => None,
    };
    let mut latencies: Vec<Duration> = results.iter().map(|(_, l)| *l).collect();
    latencies.sort();
    let report = PhaseReport {
        phase: name.to_string(),
        requests: n,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        per_second: if seconds > 0.0 { n as f64 / seconds } else { 0.0 },
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |l| l.as_secs_f64() * 1000.0),
        server_cpu_ms,
    };
    (report, results.into_iter().map(|(b, _)| b).collect())
}

/// Runs every phase and returns their reports, printing each as it ends.
pub async fn run(opts: BenchOptions, print: impl Fn(&PhaseReport)) -> anyhow::Result<Vec<PhaseReport>> {
    let client =
        Client::builder().pool_max_idle_per_host(opts.concurrency.max(1)).timeout(Duration::from_secs(60)).build()?;
    let target =
        Arc::new(Target { client, url: opts.url.trim_end_matches('/').to_string(), token: opts.token.clone() });
    let n = opts.users;
    let c = opts.concurrency;
    let pid = opts.server_pid;
    let name = |i: usize| format!("bench-{}-{i}@bench.example", opts.run_id);
    let mut reports = Vec::new();
    let ok = |s: Option<StatusCode>, want: StatusCode| s == Some(want);

    let (r, created) = phase("create users", n, c, pid, |i| {
        let t = target.clone();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name(i),
            "name": {"givenName": "Bench", "familyName": format!("User {i}")},
            "emails": [{"value": name(i), "type": "work", "primary": true}],
            "active": true
        });
        async move {
            let (s, b, l) = t.send(Method::POST, "/Users", Some(&body)).await;
            (ok(s, StatusCode::CREATED), b, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);
    let ids: Vec<String> = created.iter().filter_map(|b| b["id"].as_str().map(str::to_string)).collect();
    if ids.is_empty() {
        anyhow::bail!("no user was created; check the URL, the token and the seats");
    }

    let reads = opts.reads;
    let (r, _) = phase("userName eq lookups", reads, c, pid, |i| {
        let t = target.clone();
        let path = format!("/Users?filter=userName%20eq%20%22{}%22", urlencode(&name(i % n)));
        async move {
            let (s, b, l) = t.send(Method::GET, &path, None).await;
            (ok(s, StatusCode::OK) && b["totalResults"] == 1, Value::Null, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);

    let (r, _) = phase("get by id", reads, c, pid, |i| {
        let t = target.clone();
        let path = format!("/Users/{}", ids[i % ids.len()]);
        async move {
            let (s, _, l) = t.send(Method::GET, &path, None).await;
            (ok(s, StatusCode::OK), Value::Null, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);

    let pages = (reads / 10).max(1);
    let (r, _) = phase("list pages of 100", pages, c, pid, |i| {
        let t = target.clone();
        // Spread over every User (a prime stride), not only the first pages.
        let start = (i * 100 * 7919) % (ids.len() + opts.existing).max(1) + 1;
        let path = format!("/Users?startIndex={start}&count=100");
        async move {
            let (s, _, l) = t.send(Method::GET, &path, None).await;
            (ok(s, StatusCode::OK), Value::Null, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);

    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": format!("bench-{}", opts.run_id)});
    let (s, g, _) = target.send(Method::POST, "/Groups", Some(&group)).await;
    if !ok(s, StatusCode::CREATED) {
        anyhow::bail!("could not create the bench group: {s:?} {g}");
    }
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    let batches: Vec<Vec<String>> = ids.chunks(opts.batch.max(1)).map(|c| c.to_vec()).collect();
    // Batches go one at a time, as a provider pushes one group's members.
    let (r, _) = phase(&format!("group add x{}", opts.batch), batches.len(), 1, pid, |i| {
        let t = target.clone();
        let members: Vec<Value> = batches[i].iter().map(|id| json!({"value": id})).collect();
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": members}]});
        let path = format!("/Groups/{gid}?excludedAttributes=members");
        async move {
            let (s, _, l) = t.send(Method::PATCH, &path, Some(&body)).await;
            (ok(s, StatusCode::OK), Value::Null, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);

    // The whole group, every member listed: usable at any size.
    let (r, _) = phase("get the group with its members", 10, 1, pid, |_| {
        let t = target.clone();
        let path = format!("/Groups/{gid}");
        let want = ids.len();
        async move {
            let (s, body, l) = t.send(Method::GET, &path, None).await;
            let listed = body["members"].as_array().map_or(0, Vec::len);
            (ok(s, StatusCode::OK) && listed == want, Value::Null, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);

    let r = health_under_largest_requests(&target, &gid, pid).await;
    print(&r);
    reports.push(r);

    let (r, _) = phase("deactivate", ids.len(), c, pid, |i| {
        let t = target.clone();
        let path = format!("/Users/{}", ids[i]);
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false}}]});
        async move {
            let (s, _, l) = t.send(Method::PATCH, &path, Some(&body)).await;
            (ok(s, StatusCode::OK), Value::Null, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);

    let (r, _) = phase("delete", ids.len(), c, pid, |i| {
        let t = target.clone();
        let path = format!("/Users/{}", ids[i]);
        async move {
            let (s, _, l) = t.send(Method::DELETE, &path, None).await;
            (ok(s, StatusCode::NO_CONTENT), Value::Null, l)
        }
    })
    .await;
    print(&r);
    reports.push(r);
    let _ = target.send(Method::DELETE, &format!("/Groups/{gid}"), None).await;
    Ok(reports)
}

/// `/healthz`, polled every 20 ms while two clients send the largest bodies
/// a server with the default 1 MiB limit takes, over and over: a new Group
/// naming 10,000 members that do not exist and a PATCH of 10,000 operations
/// each adding one (both refused with 400 once checked). The latency of the
/// probes is the phase's; its errors are probes that failed.
async fn health_under_largest_requests(target: &Arc<Target>, gid: &str, pid: Option<u32>) -> PhaseReport {
    let origin = target.url.trim_end_matches("/scim/v2").to_string();
    let members: Vec<Value> = (0..10_000).map(|_| json!({ "value": uuid::Uuid::new_v4() })).collect();
    // Serialized once: the load tool's own work stays out of the figures.
    let create = bytes::Bytes::from(
        json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "bench-largest",
            "members": members })
        .to_string(),
    );
    let ops: Vec<Value> = (0..10_000)
        .map(|_| json!({ "op": "add", "path": "members", "value": [{ "value": uuid::Uuid::new_v4() }] }))
        .collect();
    let patch = bytes::Bytes::from(
        json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops }).to_string(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (method, path, body) in
        [(Method::POST, "/Groups".to_string(), create), (Method::PATCH, format!("/Groups/{gid}"), patch)]
    {
        let (t, stop) = (target.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = t
                    .client
                    .request(method.clone(), format!("{}{path}", t.url))
                    .bearer_auth(&t.token)
                    .header("content-type", "application/scim+json")
                    .body(body.clone())
                    .send()
                    .await;
            }
        }));
    }
    // Let both large requests get under way first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The probe is a client of its own, as a health checker is: it never
    // reuses a connection the large requests used.
    let probe = Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
    let (report, _) = phase("healthz under 1 MiB load", 200, 1, pid, |_| {
        let (client, url) = (probe.clone(), format!("{origin}/healthz"));
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let start = Instant::now();
            let ok = client.get(&url).send().await.is_ok_and(|r| r.status() == StatusCode::OK);
            (ok, Value::Null, start.elapsed())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    report
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// What `roster bench webhooks` runs: SCIM creates at a steady rate while
/// a receiver of its own hears the resulting `member.added` webhooks.
#[derive(Debug, Clone)]
pub struct LagOptions {
    /// The SCIM base URL.
    pub url: String,
    pub token: String,
    /// Creates a second, sent on a fixed schedule (open loop).
    pub rate: f64,
    pub seconds: f64,
    /// Where the receiver listens (the endpoint's URL points here).
    pub listen: std::net::SocketAddr,
    pub run_id: String,
    /// Whether an endpoint points at the receiver (without one: the creates' cost alone).
    pub expect_webhooks: bool,
}

/// Delivery lag: from the event's time (taken in its transaction, just
/// before the commit) to its arrival at the receiver.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LagReport {
    pub creates: usize,
    pub create_errors: usize,
    /// Creates a second actually sent.
    pub create_rate: f64,
    pub create_p50_ms: f64,
    pub create_p99_ms: f64,
    pub received: usize,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
}

impl std::fmt::Display for LagReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} creates ({} errors) at {:.0}/s, p50 {:.1} ms p99 {:.1} ms; {} webhooks received; \
             lag p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            self.creates,
            self.create_errors,
            self.create_rate,
            self.create_p50_ms,
            self.create_p99_ms,
            self.received,
            self.lag_p50_ms,
            self.lag_p99_ms,
            self.lag_max_ms
        )
    }
}

/// Runs the creates and waits (up to a minute after the last) for their
/// webhooks; with no endpoint set up, it waits for none.
pub async fn webhook_lag(opts: LagOptions) -> anyhow::Result<LagReport> {
    use crate::clock::Clock as _;
    let lags: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let heard = lags.clone();
    let receiver = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(move |body: axum::body::Bytes| {
            let heard = heard.clone();
            async move {
                let now = crate::clock::SystemClock.now();
                let at = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["timestamp"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()));
                if let Some(at) = at {
                    let lag = (now - at.with_timezone(&chrono::Utc)).to_std().unwrap_or_default();
                    heard.lock().unwrap_or_else(|e| e.into_inner()).push(lag);
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let client = Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(60)).build()?;
    let target = Arc::new(Target { client, url: opts.url.trim_end_matches('/').to_string(), token: opts.token });
    let total = (opts.rate * opts.seconds).round() as usize;
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / opts.rate)).into()).await;
        let (t, errors) = (target.clone(), errors.clone());
        let name = format!("lag-{}-{i}@bench.example", opts.run_id);
        sends.push(tokio::spawn(async move {
            let body = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": name,
                "emails": [{"value": name, "primary": true}],
                "active": true
            });
            let (s, _, latency) = t.send(Method::POST, "/Users", Some(&body)).await;
            if s != Some(StatusCode::CREATED) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            latency
        }));
    }
    let mut create_latencies = Vec::with_capacity(total);
    for s in sends {
        create_latencies.push(s.await?);
    }
    create_latencies.sort();
    let sent_for = start.elapsed().as_secs_f64();
    let created = total - errors.load(Ordering::Relaxed);
    let deadline = Instant::now() + if opts.expect_webhooks { Duration::from_secs(60) } else { Duration::ZERO };
    while lags.lock().unwrap_or_else(|e| e.into_inner()).len() < created && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.abort();
    let mut lags = lags.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lags.sort();
    Ok(LagReport {
        creates: total,
        create_errors: errors.load(Ordering::Relaxed),
        create_rate: total as f64 / sent_for.max(f64::EPSILON),
        create_p50_ms: percentile(&create_latencies, 0.50),
        create_p99_ms: percentile(&create_latencies, 0.99),
        received: lags.len(),
        lag_p50_ms: percentile(&lags, 0.50),
        lag_p99_ms: percentile(&lags, 0.99),
        lag_max_ms: lags.last().map_or(0.0, |l| l.as_secs_f64() * 1000.0),
    })
}
