//! The optional `callback_url` POST after a job succeeded: hosts limited by an allowlist,
//! a timeout per try, a few tries; failure is logged and never fails the job (the event in
//! `video.processed` is the durable record).

use std::time::Duration;

/// Who may be called back and how patiently.
#[derive(Debug, Clone)]
pub struct CallbackPolicy {
    /// Host names (or `host:port`) a callback may go to; empty allows any host.
    pub allow_hosts: Vec<String>,
    pub timeout: Duration,
    pub attempts: u32,
}

/// Why a callback was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("callback URL {0:?} is not a valid http(s) URL")]
    InvalidUrl(String),
    #[error("callback host {0:?} is not in the allowlist (--callback-allow-host)")]
    HostNotAllowed(String),
    #[error("callback failed after {attempts} attempt(s): {last}")]
    Failed { attempts: u32, last: String },
}

impl CallbackPolicy {
    /// Checks the URL against the allowlist without calling it.
    pub fn check(&self, url: &str) -> Result<url::Url, CallbackError> {
        let parsed = url::Url::parse(url).map_err(|_| CallbackError::InvalidUrl(url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CallbackError::InvalidUrl(url.into()));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| CallbackError::InvalidUrl(url.into()))?
            .to_ascii_lowercase();
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

    /// POSTs `body` (JSON). Blocking: run it with `spawn_blocking`.
    pub fn post(&self, url: &str, body: &[u8]) -> Result<u16, CallbackError> {
        let parsed = self.check(url)?;
        let agent = ureq::AgentBuilder::new()
            .timeout(self.timeout)
            // No redirects: a redirect could lead outside the allowlist.
            .redirects(0)
            .build();
        let attempts = self.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match agent
                .post(parsed.as_str())
                .set("Content-Type", "application/json")
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
                Err(e) => last = e.to_string(),
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

    #[test]
    fn allowlist_by_host_or_host_and_port() {
        let p = CallbackPolicy {
            allow_hosts: vec!["video-api:3003".into(), "hooks.example".into()],
            timeout: Duration::from_secs(1),
            attempts: 1,
        };
        assert!(p.check("http://video-api:3003/api/x").is_ok());
        assert!(p.check("http://video-api:9999/api/x").is_err());
        assert!(p.check("https://HOOKS.example/x").is_ok());
        assert!(p.check("http://169.254.169.254/latest").is_err());
        assert!(p.check("file:///etc/passwd").is_err());
        let open = CallbackPolicy {
            allow_hosts: vec![],
            ..p
        };
        assert!(open.check("http://anything/x").is_ok());
    }
}
