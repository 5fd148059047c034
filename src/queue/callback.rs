//! The optional `callback_url` POST after a job succeeded and was acked: hosts limited by an
//! allowlist, link-local addresses refused, a timeout per try, a few tries, an
//! `Idempotency-Key` header; failure is logged and never fails the job (the event in
//! `video.processed` is the durable record).
//!
//! Address policy. The name is resolved once, every address it resolves to is checked, and
//! the connection goes to those checked addresses (a second lookup could answer differently:
//! DNS rebinding). Link-local addresses (169.254.0.0/16, fe80::/10, and the metadata
//! addresses clouds serve credentials on) are refused unless `--callback-allow-link-local`,
//! whatever the allowlist says. An empty allowlist allows any other host, loopback and
//! private ranges included (a development setup calls back to a local API); production sets
//! `--callback-allow-host`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::queue::redact;

/// Who may be called back and how patiently.
#[derive(Debug, Clone)]
pub struct CallbackPolicy {
    /// Host names (or `host:port`) a callback may go to; empty allows any host.
    pub allow_hosts: Vec<String>,
    /// Allow link-local (cloud metadata) addresses.
    pub allow_link_local: bool,
    pub timeout: Duration,
    pub attempts: u32,
}

/// Why a callback was not delivered. URLs in messages are redacted (no userinfo, no query).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("callback URL {0:?} is not a valid http(s) URL")]
    InvalidUrl(String),
    #[error("callback host {0:?} is not in the allowlist (--callback-allow-host)")]
    HostNotAllowed(String),
    #[error(
        "callback host {host:?} resolves to the link-local address {ip} (cloud metadata); \
         refused without --callback-allow-link-local"
    )]
    LinkLocal { host: String, ip: IpAddr },
    #[error("callback host {host:?} does not resolve: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("callback failed after {attempts} attempt(s): {last}")]
    Failed { attempts: u32, last: String },
}

/// Addresses where clouds serve instance metadata (and credentials): the link-local ranges,
/// plus the few metadata addresses outside them.
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_link_local(IpAddr::V4(v4)),
            None => {
                (v6.segments()[0] & 0xffc0) == 0xfe80
                    || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

impl CallbackPolicy {
    /// Checks the URL against the allowlist without calling it.
    pub fn check(&self, url: &str) -> Result<url::Url, CallbackError> {
        let invalid = || CallbackError::InvalidUrl(redact::url(url));
        let parsed = url::Url::parse(url).map_err(|_| invalid())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid());
        }
        let host = parsed.host_str().ok_or_else(invalid)?.to_ascii_lowercase();
        if self.allow_hosts.is_empty() {
            return Ok(parsed);
        }
        let with_port = parsed
            .port_or_known_default()
            .map(|p| format!("{host}:{p}"))
            .unwrap_or_else(|| host.clone());
        let allowed = self
            .allow_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&host) || a.eq_ignore_ascii_case(&with_port));
        if allowed {
            Ok(parsed)
        } else {
            Err(CallbackError::HostNotAllowed(host))
        }
    }

    /// Resolves the URL's host once and checks every address. Blocking.
    pub fn resolve(&self, url: &url::Url) -> Result<Vec<SocketAddr>, CallbackError> {
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        // `[::1]` comes back bracketed from host_str; to_socket_addrs wants it bare.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (bare, port)
            .to_socket_addrs()
            .map_err(|source| CallbackError::Resolve {
                host: host.clone(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(CallbackError::Resolve {
                host,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            });
        }
        if !self.allow_link_local {
            if let Some(a) = addrs.iter().find(|a| is_link_local(a.ip())) {
                return Err(CallbackError::LinkLocal { host, ip: a.ip() });
            }
        }
        Ok(addrs)
    }

    /// POSTs `body` (JSON) with an `Idempotency-Key` header (the same for every try and
    /// every redelivery of one job). Blocking: run it with `spawn_blocking`.
    pub fn post(
        &self,
        url: &str,
        body: &[u8],
        idempotency_key: &str,
    ) -> Result<u16, CallbackError> {
        let parsed = self.check(url)?;
        let addrs = self.resolve(&parsed)?;
        let agent = ureq::AgentBuilder::new()
            .timeout(self.timeout)
            // No redirects: a redirect could lead outside the allowlist.
            .redirects(0)
            // The checked addresses, and no other lookup.
            .resolver(move |_: &str| Ok(addrs.clone()))
            .build();
        let attempts = self.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match agent
                .post(parsed.as_str())
                .set("Content-Type", "application/json")
                .set("Idempotency-Key", idempotency_key)
                .send_bytes(body)
            {
                Ok(resp) => return Ok(resp.status()),
                // A 4xx will not change with a retry.
                Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) => {
                    return Err(CallbackError::Failed {
                        attempts: attempt,
                        last: format!("HTTP {code}"),
                    })
                }
                // ureq's transport errors quote the URL: keep its secrets out of the log.
                Err(ureq::Error::Status(code, _)) => last = format!("HTTP {code}"),
                Err(ureq::Error::Transport(t)) => {
                    last = match t.message() {
                        Some(m) => format!("{}: {m}", t.kind()),
                        None => t.kind().to_string(),
                    }
                }
            }
            if attempt < attempts {
                std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
            }
        }
        Err(CallbackError::Failed { attempts, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> CallbackPolicy {
        CallbackPolicy {
            allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_link_local: false,
            timeout: Duration::from_secs(1),
            attempts: 1,
        }
    }

    #[test]
    fn allowlist_by_host_or_host_and_port() {
        let p = policy(&["video-api:3003", "hooks.example"]);
        assert!(p.check("http://video-api:3003/api/x").is_ok());
        assert!(p.check("http://video-api:9999/api/x").is_err());
        assert!(p.check("https://HOOKS.example/x").is_ok());
        assert!(p.check("http://169.254.169.254/latest").is_err());
        assert!(p.check("file:///etc/passwd").is_err());
        let open = policy(&[]);
        assert!(open.check("http://anything/x").is_ok());
    }

    #[test]
    fn link_local_addresses_are_refused_even_when_listed() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/x",
            "http://[::ffff:169.254.169.254]/x",
            "http://[fd00:ec2::254]/x",
        ] {
            let host = url::Url::parse(url).unwrap();
            let listed = policy(&[host.host_str().unwrap()]);
            let parsed = listed.check(url).expect("listed");
            assert!(
                matches!(
                    listed.resolve(&parsed),
                    Err(CallbackError::LinkLocal { .. })
                ),
                "{url}"
            );
            let allowed = CallbackPolicy {
                allow_link_local: true,
                ..listed
            };
            assert!(allowed.resolve(&parsed).is_ok(), "{url}");
        }
        // Loopback and private stay allowed with an empty allowlist (development setups).
        let open = policy(&[]);
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/x",
            "http://[::1]:9/x",
        ] {
            let parsed = open.check(url).unwrap();
            assert!(open.resolve(&parsed).is_ok(), "{url}");
        }
    }

    #[test]
    fn errors_do_not_quote_url_secrets() {
        let e = policy(&[])
            .check("ftp://u:pw123@h/x?token=abc")
            .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("pw123") && !text.contains("abc"), "{text}");
    }

    /// The connection goes to the address that was checked: a server listening on the
    /// checked address gets the POST, with the idempotency key.
    #[test]
    fn posts_to_the_checked_address_with_an_idempotency_key() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let p = policy(&[]);
        let status = p
            .post(
                &format!("http://localhost:{port}/hook"),
                b"{}",
                "S-7-processed",
            )
            .expect("posted");
        assert_eq!(status, 204);
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(
            request.contains("idempotency-key: s-7-processed"),
            "{request}"
        );
    }
}
