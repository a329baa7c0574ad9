//! A real HTTP webhook receiver for the integration tests: it listens on a
//! random loopback port, records every request (method, path, headers and
//! body) in the order it arrived, and answers each with 200 unless told to
//! answer the next few with another status. It can be stopped (the port
//! refuses connections, open connections are cut) and started again on the
//! same port, to play an outage.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long [`WebhookReceiver::start`] keeps trying to bind the old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// A request as the receiver got it, with the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: StatusCode,
}

impl Received {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }

    /// The `v1,…` entries of `webhook-signature`.
    pub fn signatures(&self) -> Vec<&str> {
        self.header("webhook-signature").split(' ').filter(|s| !s.is_empty()).collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The event's type from the body.
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_else(|| panic!("no type in {}", self.json())).to_string()
    }

    /// The event's position in its organization's feed, from the body.
    pub fn event_seq(&self) -> i64 {
        self.json()["data"]["event_seq"].as_i64().unwrap_or_else(|| panic!("no data.event_seq in {}", self.json()))
    }

    /// Whether the receiver answered 2xx (the delivery counts as delivered).
    pub fn delivered(&self) -> bool {
        self.answered.is_success()
    }

    /// Checks the signature with the Standard Webhooks verifier and `secret` (`whsec_…`).
    pub fn verify(&self, secret: &str) -> Result<(), standardwebhooks::WebhookError> {
        standardwebhooks::Webhook::new(secret)?.verify(&self.body, &self.headers)
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Statuses to answer the next requests with, in order; 200 after them.
    answers: VecDeque<StatusCode>,
    /// What every request is answered once the queued answers are used up (200 unless set).
    otherwise: Option<StatusCode>,
}

type Shared = Arc<Mutex<Inner>>;

/// The running accept loop and the connections it serves.
struct Running {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Running {
    fn stop(self) {
        self.accept.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    shared: Shared,
    running: Option<Running>,
}

async fn record(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut inner = shared.lock().unwrap();
    let otherwise = inner.otherwise.unwrap_or(StatusCode::OK);
    let answered = inner.answers.pop_front().unwrap_or(otherwise);
    inner.received.push(Received { method, path: uri.path().to_string(), headers, body, answered });
    (answered, format!("receiver answered {}", answered.as_u16()))
}

fn serve(listener: tokio::net::TcpListener, shared: Shared) -> Running {
    let router = Router::new().fallback(record).with_state(shared);
    let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let tracked = connections.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let service = TowerToHyperService::new(router.clone());
            let conn = tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            let mut all = tracked.lock().unwrap();
            all.retain(|c| !c.is_finished());
            all.push(conn);
        }
    });
    Running { accept, connections }
}

impl WebhookReceiver {
    /// A receiver on a random loopback port, answering 200.
    pub async fn start_new() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("addr");
        let shared = Shared::default();
        let running = Some(serve(listener, shared.clone()));
        WebhookReceiver { addr, shared, running }
    }

    /// The URL to register: `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Stops listening: new connections are refused and open ones are cut.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let accept_done = running.accept.abort_handle();
            running.stop();
            // The listener closes when the aborted accept task is dropped.
            while !accept_done.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Listens again on the same port (and keeps what it recorded).
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "the receiver is already running");
        let deadline = tokio::time::Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "could not bind {} again: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.running = Some(serve(listener, self.shared.clone()));
    }

    /// Answers the next `n` requests with `status` (then 200 again).
    pub fn answer_next(&self, n: usize, status: StatusCode) {
        let mut inner = self.shared.lock().unwrap();
        inner.answers.extend(std::iter::repeat_n(status, n));
    }

    /// Answers every request with `status` from now on (`None`: 200 again).
    pub fn answer_all(&self, status: Option<StatusCode>) {
        let mut inner = self.shared.lock().unwrap();
        inner.answers.clear();
        inner.otherwise = status;
    }

    /// Every request so far, in the order they arrived.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.shared.lock().unwrap().received.len()
    }

    /// The requests answered 2xx, in the order they arrived.
    pub fn delivered(&self) -> Vec<Received> {
        self.received().into_iter().filter(Received::delivered).collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

// The receiver itself, checked with a plain HTTP client.
#[tokio::test]
async fn the_receiver_records_answers_as_told_and_plays_an_outage() {
    let mut receiver = WebhookReceiver::start_new().await;
    let client = reqwest::Client::new();
    let url = receiver.url();
    let post = |body: &'static str| {
        client.post(&url).header("webhook-id", "msg_1").header("content-type", "application/json").body(body)
    };
    receiver.answer_next(2, StatusCode::INTERNAL_SERVER_ERROR);
    let mut statuses = Vec::new();
    for body in [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#] {
        statuses.push(post(body).send().await.expect("request").status().as_u16());
    }
    assert_eq!(statuses, [500, 500, 200]);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got.iter().map(|r| r.json()["n"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!((got[0].method.clone(), got[0].path.as_str(), got[0].webhook_id()), (Method::POST, "/hook", "msg_1"));
    assert_eq!(receiver.delivered().len(), 1);

    receiver.stop().await;
    let down = client.post(receiver.url()).body("{}").send().await;
    assert!(down.is_err(), "a stopped receiver refuses connections: {down:?}");
    receiver.start().await;
    let status = post(r#"{"n":4}"#).send().await.expect("request after restart").status();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receiver.count(), 4, "the restarted receiver keeps its record");
}
