//! The DNS half of domain verification: ask the configured name servers for
//! the TXT records at a challenge name and say whether one of them holds the
//! expected value.
//!
//! Every check is a fresh look-up: a resolver is built for the check and
//! dropped after it, so no answer, positive or negative, is ever served from
//! a cache (an admin who just published the record must see it at once, and a
//! removed record must stop counting at the next re-check).

use anyhow::Context;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::Resolver;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where and how patiently to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Recursive resolvers to ask, each over UDP with TCP for truncated
    /// answers; empty means the system's (`/etc/resolv.conf`).
    pub name_servers: Vec<SocketAddr>,
    /// How long to wait for one try.
    pub timeout: Duration,
    /// How many tries in all before the check is called transient (0 counts as 1).
    pub attempts: usize,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// A TXT record at the name holds the expected value.
    Verified,
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The name exists but no TXT record holds the expected value. `found` is
    /// every TXT value seen there (character-strings joined), so the admin can
    /// see what was published; empty when the name has no TXT record at all.
    NoMatchingRecord { found: Vec<String> },
    /// DNS did not answer usefully (timeout, SERVFAIL, REFUSED, network
    /// error). Proves nothing either way: try again later.
    Transient { reason: String },
}

/// Checks challenge TXT records. Cheap to clone.
#[derive(Clone)]
pub struct TxtChecker {
    inner: Arc<Inner>,
}

struct Inner {
    config: ResolverConfig,
    options: ResolverOpts,
    timeout: Duration,
    attempts: usize,
}

impl std::fmt::Debug for TxtChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<_> = self.inner.config.name_servers().iter().map(|ns| ns.ip).collect();
        f.debug_struct("TxtChecker")
            .field("name_servers", &servers)
            .field("timeout", &self.inner.timeout)
            .field("attempts", &self.inner.attempts)
            .finish()
    }
}

impl TxtChecker {
    /// Prepares the checker. With no name servers configured this reads the
    /// system's resolver configuration once, now, and fails if there is none.
    pub fn new(settings: &DnsSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(!settings.timeout.is_zero(), "the DNS timeout must be positive");
        let name_servers = if settings.name_servers.is_empty() {
            let (system, _) = hickory_resolver::system_conf::read_system_conf()
                .context("reading the system's DNS configuration (set the DNS name servers explicitly instead)")?;
            // Keep only the servers: the search list, ndots and timeouts of resolv.conf do not apply.
            system.name_servers().to_vec()
        } else {
            settings.name_servers.iter().map(|addr| name_server(*addr)).collect()
        };
        // Challenge names are always fully qualified: no domain, no search list.
        let config = ResolverConfig::from_parts(None, vec![], name_servers);

        let attempts = settings.attempts.max(1);
        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout;
        // hickory counts retries after the first try.
        options.attempts = attempts - 1;
        // A fresh resolver per check already means no cache; these keep it so within one check.
        options.cache_size = 0;
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        // /etc/hosts holds addresses, never a TXT record worth trusting here.
        options.use_hosts_file = ResolveHosts::Never;
        Ok(Self { inner: Arc::new(Inner { config, options, timeout: settings.timeout, attempts }) })
    }

    /// Looks up the TXT records at `record_name` (taken as fully qualified)
    /// and compares each with `expected`.
    ///
    /// A CNAME at the name is followed. The character-strings of one TXT
    /// record are joined with nothing between them (as RFC 7208 §3.3 does for
    /// SPF) before comparing; surrounding whitespace is ignored.
    #[tracing::instrument(skip_all, fields(record = %record_name))]
    pub async fn check(&self, record_name: &str, expected: &str) -> CheckOutcome {
        let outcome = self.lookup(record_name, expected.trim()).await;
        tracing::debug!(?outcome, "TXT check");
        outcome
    }

    async fn lookup(&self, record_name: &str, expected: &str) -> CheckOutcome {
        let name = match fully_qualified(record_name) {
            Ok(name) => name,
            Err(reason) => return CheckOutcome::Transient { reason },
        };
        let resolver = Resolver::builder_with_config(self.inner.config.clone(), TokioRuntimeProvider::default())
            .with_options(self.inner.options.clone())
            .build();
        let resolver = match resolver {
            Ok(resolver) => resolver,
            Err(e) => return CheckOutcome::Transient { reason: format!("could not set up the DNS resolver: {e}") },
        };
        match resolver.txt_lookup(name).await {
            Ok(lookup) => {
                // The answers also hold the CNAME chain, if any; only TXT data counts.
                let found: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => Some(joined(txt)),
                        _ => None,
                    })
                    .collect();
                if found.iter().any(|value| value.trim() == expected) {
                    CheckOutcome::Verified
                } else {
                    CheckOutcome::NoMatchingRecord { found }
                }
            }
            Err(e) => self.classify(e),
        }
    }

    /// Sorts a failed look-up into "the name is not there", "nothing at the
    /// name" and "DNS did not answer".
    fn classify(&self, err: NetError) -> CheckOutcome {
        let transient = |reason: String| CheckOutcome::Transient { reason };
        match err {
            NetError::Dns(DnsError::NoRecordsFound(no_records)) => match no_records.response_code {
                ResponseCode::NXDomain => CheckOutcome::NoSuchName,
                // A referral (NS without SOA) is a delegation, not an answer: the server asked
                // is not a recursive resolver.
                ResponseCode::NoError if no_records.soa.is_none() && no_records.ns.is_some() => transient(
                    "the name server answered with a referral, not an answer; configure a recursive resolver".into(),
                ),
                // NODATA (RFC 2308 §2.2): the name exists without a TXT record.
                ResponseCode::NoError => CheckOutcome::NoMatchingRecord { found: vec![] },
                code => transient(format!("the name server answered {}", mnemonic(code))),
            },
            NetError::Dns(DnsError::ResponseCode(code)) => {
                transient(format!("the name server answered {}", mnemonic(code)))
            }
            NetError::Timeout => transient(format!(
                "no answer from the name server within {} ms ({} attempt{})",
                self.inner.timeout.as_millis(),
                self.inner.attempts,
                if self.inner.attempts == 1 { "" } else { "s" }
            )),
            NetError::Io(e) => transient(format!("could not reach the name server: {e}")),
            NetError::NoConnections => transient("no name server could be reached".into()),
            other => transient(format!("DNS look-up failed: {other}")),
        }
    }
}

/// UDP and TCP to `addr`, port included.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
    for connection in &mut server.connections {
        connection.port = addr.port();
    }
    server
}

/// `name` with exactly one trailing dot, so no search domain is ever appended.
fn fully_qualified(name: &str) -> Result<Name, String> {
    let bare = name.trim().trim_end_matches('.');
    if bare.is_empty() {
        return Err("the record name is empty".into());
    }
    Name::from_ascii(format!("{bare}.")).map_err(|e| format!("`{bare}` is not a valid DNS name: {e}"))
}

/// One TXT record's character-strings, joined with nothing in between.
fn joined(txt: &TXT) -> String {
    txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect()
}

/// `SERVFAIL`, `REFUSED`, … as dig prints them.
fn mnemonic(code: ResponseCode) -> String {
    format!("{code:?}").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_fully_qualified() {
        for (raw, want) in [
            ("_roster-challenge.acme.com", "_roster-challenge.acme.com."),
            ("_roster-challenge.acme.com.", "_roster-challenge.acme.com."),
            (" _x.xn--bcher-kva.example ", "_x.xn--bcher-kva.example."),
        ] {
            let name = fully_qualified(raw).unwrap();
            assert!(name.is_fqdn(), "{raw}");
            assert_eq!(name.to_ascii(), want, "{raw}");
        }
        assert!(fully_qualified("").is_err());
        assert!(fully_qualified(".").is_err());
    }

    #[test]
    fn txt_strings_are_joined_without_separator() {
        let txt = TXT::new(vec!["roster-domain-".into(), "verification=abc".into()]);
        assert_eq!(joined(&txt), "roster-domain-verification=abc");
    }

    #[test]
    fn explicit_servers_keep_their_port_on_udp_and_tcp() {
        let server = name_server("127.0.0.1:5353".parse().unwrap());
        assert_eq!(server.connections.len(), 2);
        assert!(server.connections.iter().all(|c| c.port == 5353));
    }

    #[test]
    fn attempts_and_timeout() {
        let settings = DnsSettings {
            name_servers: vec!["127.0.0.1:53".parse().unwrap()],
            timeout: Duration::from_millis(300),
            attempts: 3,
        };
        let checker = TxtChecker::new(&settings).unwrap();
        assert_eq!(checker.inner.options.attempts, 2);
        assert_eq!(checker.inner.options.timeout, Duration::from_millis(300));
        assert_eq!(checker.inner.options.cache_size, 0);
        let zero = TxtChecker::new(&DnsSettings { attempts: 0, ..settings.clone() }).unwrap();
        assert_eq!(zero.inner.options.attempts, 0);
        assert!(TxtChecker::new(&DnsSettings { timeout: Duration::ZERO, ..settings }).is_err());
    }

    #[test]
    fn mnemonics() {
        assert_eq!(mnemonic(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(mnemonic(ResponseCode::Refused), "REFUSED");
    }
}
