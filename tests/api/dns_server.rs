//! A real DNS server for the integration tests, and the tests of the TXT
//! check against it.
//!
//! [`TestDns`] is `hickory-server` answering UDP and TCP on one random
//! loopback port, authoritatively for every name: records can be changed
//! while it runs, unknown names get NXDOMAIN, names that exist without the
//! asked type get NODATA (with an SOA, as RFC 2308 §2 asks), and a CNAME is
//! chased inside the answer as a recursive resolver would return it.
//! [`SilentDns`] binds the same sockets and never answers.

use async_trait::async_trait;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, CNAME, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The TTL of every record served. Not zero, so that a caching resolver
/// would keep answers and the no-caching tests would catch it.
const TTL: u32 = 300;

/// The records, by lower-case fully qualified name.
type Records = Arc<Mutex<HashMap<String, Vec<RData>>>>;

/// Names answered with an error code instead, by lower-case fully qualified name.
type Failures = Arc<Mutex<HashMap<String, ResponseCode>>>;

/// An authoritative DNS server on `addr` (UDP and TCP), empty at start.
pub struct TestDns {
    pub addr: SocketAddr,
    records: Records,
    failures: Failures,
    // Dropping the server aborts its tasks.
    _server: Server<Handler>,
}

impl TestDns {
    /// Binds UDP and TCP on one loopback port and starts answering; the
    /// sockets are bound before this returns, so no wait is needed.
    pub async fn start() -> Self {
        let (udp, tcp) = bind_udp_and_tcp().await;
        let addr = udp.local_addr().unwrap();
        let (records, failures) = (Records::default(), Failures::default());
        let mut server =
            Server::new(Handler { records: records.clone(), failures: failures.clone(), soa: soa_record() });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 32);
        TestDns { addr, records, failures, _server: server }
    }

    /// Replaces every TXT record at `name`; each inner slice is one record's
    /// character-strings (each at most 255 bytes). A CNAME there is removed.
    pub fn set_txt(&self, name: &str, values: &[&[&str]]) {
        let mut records = self.records.lock().unwrap();
        let at = records.entry(key(name)).or_default();
        at.retain(|r| !matches!(r, RData::TXT(_) | RData::CNAME(_)));
        at.extend(values.iter().map(|strings| RData::TXT(TXT::new(strings.iter().map(|s| s.to_string()).collect()))));
    }

    /// Makes `name` an alias of `target`, replacing everything at `name`.
    pub fn set_cname(&self, name: &str, target: &str) {
        let target = Name::from_ascii(key(target)).unwrap();
        self.records.lock().unwrap().insert(key(name), vec![RData::CNAME(CNAME(target))]);
    }

    /// Adds an A record at `name` (a name that exists without TXT).
    pub fn set_a(&self, name: &str, ip: Ipv4Addr) {
        let mut records = self.records.lock().unwrap();
        let at = records.entry(key(name)).or_default();
        at.retain(|r| !matches!(r, RData::A(_) | RData::CNAME(_)));
        at.push(RData::A(A(ip)));
    }

    /// Removes every record at `name` (and any failure set there).
    pub fn remove(&self, name: &str) {
        self.records.lock().unwrap().remove(&key(name));
        self.failures.lock().unwrap().remove(&key(name));
    }

    /// Answers every question about `name` with `code` (e.g. `SERVFAIL`, `REFUSED`)
    /// until [`remove`](Self::remove)d.
    pub fn set_failure(&self, name: &str, code: ResponseCode) {
        self.failures.lock().unwrap().insert(key(name), code);
    }
}

/// Binds UDP and TCP on loopback and never answers.
pub struct SilentDns {
    pub addr: SocketAddr,
    _udp: tokio::net::UdpSocket,
    // The kernel completes TCP handshakes into the backlog; nothing ever reads.
    _tcp: tokio::net::TcpListener,
}

impl SilentDns {
    pub async fn start() -> Self {
        let (udp, tcp) = bind_udp_and_tcp().await;
        SilentDns { addr: udp.local_addr().unwrap(), _udp: udp, _tcp: tcp }
    }
}

/// A UDP socket and a TCP listener on the same random loopback port.
async fn bind_udp_and_tcp() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    // The port the kernel picks for UDP may be taken for TCP; try again then.
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// `Name`s and `&str`s to the map's key: lower case with one trailing dot.
fn key(name: &str) -> String {
    format!("{}.", name.trim().trim_end_matches('.').to_ascii_lowercase())
}

/// The SOA sent with negative answers: the server plays the root zone.
fn soa_record() -> Record {
    let soa = SOA::new(
        Name::from_ascii("ns.roster.test.").unwrap(),
        Name::from_ascii("hostmaster.roster.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        TTL,
    );
    Record::from_rdata(Name::root(), TTL, RData::SOA(soa))
}

struct Handler {
    records: Records,
    failures: Failures,
    soa: Record,
}

/// What the server says to one question.
struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
}

impl Handler {
    fn answer(&self, qname: Name, qtype: RecordType) -> Answer {
        if let Some(&code) = self.failures.lock().unwrap().get(&key(&qname.to_ascii())) {
            return Answer { code, answers: vec![], authorities: vec![] };
        }
        let records = self.records.lock().unwrap();
        let mut answers = Vec::new();
        let mut name = qname;
        // Follow CNAMEs inside the data, as a recursive resolver returns the whole chain.
        for _ in 0..8 {
            let k = key(&name.to_ascii());
            let at = records.get(&k).filter(|at| !at.is_empty());
            let Some(at) = at else {
                // RFC 8020: a name with names below it exists (an empty non-terminal).
                let exists = records.iter().any(|(other, at)| !at.is_empty() && other.ends_with(&format!(".{k}")));
                let code = if exists { ResponseCode::NoError } else { ResponseCode::NXDomain };
                return Answer { code, answers, authorities: vec![self.soa.clone()] };
            };
            let matching: Vec<Record> = at
                .iter()
                .filter(|data| data.record_type() == qtype)
                .map(|data| Record::from_rdata(name.clone(), TTL, data.clone()))
                .collect();
            if !matching.is_empty() {
                answers.extend(matching);
                return Answer { code: ResponseCode::NoError, answers, authorities: vec![] };
            }
            match at.iter().find_map(|data| if let RData::CNAME(CNAME(target)) = data { Some(target) } else { None }) {
                Some(target) => {
                    answers.push(Record::from_rdata(name.clone(), TTL, RData::CNAME(CNAME(target.clone()))));
                    name = target.clone();
                }
                // NODATA: the name exists, without the asked type.
                None => return Answer { code: ResponseCode::NoError, answers, authorities: vec![self.soa.clone()] },
            }
        }
        Answer { code: ResponseCode::ServFail, answers: vec![], authorities: vec![] }
    }
}

#[async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let query = match request.request_info() {
            Ok(info) if request.metadata.message_type == MessageType::Query => info.query,
            _ => return send(&mut response, builder.error_msg(&request.metadata, ResponseCode::FormErr)).await,
        };
        if request.metadata.op_code != OpCode::Query {
            return send(&mut response, builder.error_msg(&request.metadata, ResponseCode::NotImp)).await;
        }
        let answer = self.answer(Name::from(query.name().clone()), query.query_type());
        metadata.response_code = answer.code;
        let message = builder.build(metadata, &answer.answers, &answer.authorities, [], []);
        send(&mut response, message).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let id = message.metadata().id;
    response.send_response(message).await.unwrap_or_else(|_| {
        let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
        metadata.response_code = ResponseCode::ServFail;
        ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
    })
}

mod txt_check {
    //! `TxtChecker` against the real server above.

    use super::*;
    use roster::domains::dns::{CheckOutcome, DnsSettings, TxtChecker};

    const NAME: &str = "_roster-challenge.acme.example";
    const VALUE: &str = "roster-domain-verification=tok3n";

    /// Patient enough for a loaded 2-core machine; the server answers at once.
    fn checker(dns: &TestDns) -> TxtChecker {
        TxtChecker::new(&DnsSettings { name_servers: vec![dns.addr], timeout: Duration::from_secs(5), attempts: 2 })
            .unwrap()
    }

    fn no_match(found: &[&str]) -> CheckOutcome {
        CheckOutcome::NoMatchingRecord { found: found.iter().map(|s| s.to_string()).collect() }
    }

    #[tokio::test]
    async fn the_right_token_verifies() {
        let dns = TestDns::start().await;
        dns.set_txt(NAME, &[&[VALUE]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, CheckOutcome::Verified);
        // A trailing dot, upper case and surrounding whitespace change nothing.
        dns.set_txt(NAME, &[&[&format!("  {VALUE} ")]]);
        assert_eq!(checker(&dns).check("_ROSTER-challenge.Acme.example.", VALUE).await, CheckOutcome::Verified);
    }

    #[tokio::test]
    async fn a_wrong_token_shows_what_was_found() {
        let dns = TestDns::start().await;
        dns.set_txt(NAME, &[&["roster-domain-verification=other"]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, no_match(&["roster-domain-verification=other"]));
    }

    #[tokio::test]
    async fn any_one_of_several_records_may_match() {
        let dns = TestDns::start().await;
        dns.set_txt(NAME, &[&["v=spf1 -all"], &[VALUE], &["roster-domain-verification=old"]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, CheckOutcome::Verified);

        dns.set_txt(NAME, &[&["v=spf1 -all"], &["roster-domain-verification=old"]]);
        match checker(&dns).check(NAME, VALUE).await {
            CheckOutcome::NoMatchingRecord { mut found } => {
                found.sort();
                assert_eq!(found, ["roster-domain-verification=old", "v=spf1 -all"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn character_strings_are_joined() {
        let dns = TestDns::start().await;
        dns.set_txt(NAME, &[&["roster-domain-verification=", "tok3n"]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, CheckOutcome::Verified);
        // Joined with nothing in between, so a space inside does not vanish.
        dns.set_txt(NAME, &[&["roster-domain-verification= ", "tok3n"]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, no_match(&["roster-domain-verification= tok3n"]));
    }

    #[tokio::test]
    async fn a_cname_is_followed() {
        let dns = TestDns::start().await;
        dns.set_cname(NAME, "acme.verify.example");
        dns.set_txt("acme.verify.example", &[&[VALUE]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, CheckOutcome::Verified);
        // Two hops.
        dns.set_cname("acme.verify.example", "final.verify.example");
        dns.set_txt("final.verify.example", &[&["something else"]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, no_match(&["something else"]));
        // A CNAME to nowhere.
        dns.remove("final.verify.example");
        assert_eq!(checker(&dns).check(NAME, VALUE).await, CheckOutcome::NoSuchName);
    }

    #[tokio::test]
    async fn an_unknown_name_is_no_such_name() {
        let dns = TestDns::start().await;
        dns.set_txt("_roster-challenge.other.example", &[&[VALUE]]);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, CheckOutcome::NoSuchName);
    }

    #[tokio::test]
    async fn a_name_without_txt_is_no_matching_record_with_nothing_found() {
        let dns = TestDns::start().await;
        dns.set_a(NAME, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(checker(&dns).check(NAME, VALUE).await, no_match(&[]));
        // An empty non-terminal exists too (RFC 8020): NODATA, not NXDOMAIN.
        dns.set_txt("deeper._roster-challenge.xyz.example", &[&[VALUE]]);
        assert_eq!(checker(&dns).check("_roster-challenge.xyz.example", VALUE).await, no_match(&[]));
    }

    #[tokio::test]
    async fn a_silent_server_is_transient() {
        let silent = SilentDns::start().await;
        let checker = TxtChecker::new(&DnsSettings {
            name_servers: vec![silent.addr],
            timeout: Duration::from_millis(300),
            attempts: 1,
        })
        .unwrap();
        let started = std::time::Instant::now();
        match checker.check(NAME, VALUE).await {
            CheckOutcome::Transient { reason } => assert!(reason.contains("300 ms"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn servfail_and_refused_are_transient() {
        let dns = TestDns::start().await;
        dns.set_txt(NAME, &[&[VALUE]]);
        for (code, says) in [(ResponseCode::ServFail, "SERVFAIL"), (ResponseCode::Refused, "REFUSED")] {
            dns.set_failure(NAME, code);
            match checker(&dns).check(NAME, VALUE).await {
                CheckOutcome::Transient { reason } => assert!(reason.contains(says), "{reason}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn nothing_is_cached_between_checks() {
        let dns = TestDns::start().await;
        let checker = checker(&dns);
        // No negative caching: the record published after an NXDOMAIN counts at once.
        assert_eq!(checker.check(NAME, VALUE).await, CheckOutcome::NoSuchName);
        dns.set_txt(NAME, &[&[VALUE]]);
        assert_eq!(checker.check(NAME, VALUE).await, CheckOutcome::Verified);
        // No positive caching: a removed record stops counting at once.
        dns.remove(NAME);
        assert_eq!(checker.check(NAME, VALUE).await, CheckOutcome::NoSuchName);
        dns.set_txt(NAME, &[&["changed"]]);
        assert_eq!(checker.check(NAME, VALUE).await, no_match(&["changed"]));
    }

    #[tokio::test]
    async fn an_internationalized_domain_in_its_ascii_form() {
        let dns = TestDns::start().await;
        let domain = roster::domains::DomainName::parse("Bücher.Example").unwrap();
        let name = domain.challenge_name("_roster-challenge");
        assert_eq!(name, "_roster-challenge.xn--bcher-kva.example");
        dns.set_txt(&name, &[&[VALUE]]);
        assert_eq!(checker(&dns).check(&name, VALUE).await, CheckOutcome::Verified);
    }

    #[tokio::test]
    async fn an_answer_too_big_for_udp_comes_over_tcp() {
        let dns = TestDns::start().await;
        // About 6 KB of TXT: truncated over UDP, so the resolver asks again over TCP.
        let filler: Vec<String> = (0..30).map(|i| format!("filler-{i}-{}", "x".repeat(190))).collect();
        let mut records: Vec<[&str; 1]> = filler.iter().map(|s| [s.as_str()]).collect();
        records.push([VALUE]);
        let records: Vec<&[&str]> = records.iter().map(|r| r.as_slice()).collect();
        dns.set_txt(NAME, &records);
        assert_eq!(checker(&dns).check(NAME, VALUE).await, CheckOutcome::Verified);
    }
}
