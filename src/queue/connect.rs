//! Connecting to NATS: every authentication and TLS option the platform guide uses (the
//! binary maps flags, environment variables and the configuration file onto [`NatsConfig`]);
//! the first connect retried with backoff (the
//! client retries reconnects itself, without limit); client events logged and counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use serde::{Deserialize, Serialize};

use crate::queue::redact::{self, UrlCredentials};
use crate::queue::QueueError;

/// A local nats-server, as the quick start runs it.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How to reach the NATS server(s): the `[nats]` table of the configuration file, also every
/// `--nats-*` flag and `NATS_*` variable. Secrets (passwords, tokens, seeds, URL userinfo)
/// never reach logs or errors, and [`NatsConfig::redacted`] removes them for display.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), several for a cluster (nats://, tls://); may carry credentials
    /// (`nats://user:password@host`, `nats://token@host`).
    pub urls: Vec<String>,
    /// User name (server `authorization { user, password }`); needs `password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Authentication token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// NKey seed (`SU…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<String>,
    /// Credentials file (JWT + NKey seed, `.creds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creds: Option<PathBuf>,
    /// CA bundle (PEM) to verify the server with; replaces the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub require_tls: bool,
    /// Connection name shown by the server (`nats server report connections`).
    pub name: String,
    /// Attempts for the first connect (reconnects after that are unlimited).
    pub connect_attempts: u32,
    /// Timeout of one connection attempt, seconds.
    pub connect_timeout: f64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec![DEFAULT_NATS_URL.to_string()],
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds: None,
            ca: None,
            cert: None,
            key: None,
            require_tls: false,
            name: "video-worker".into(),
            connect_attempts: 10,
            connect_timeout: 5.0,
        }
    }
}

/// What `redacted` puts in place of a secret.
pub const REDACTED: &str = "<redacted>";

// By hand: a derived Debug would print the secrets.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("NatsConfig")
            .field("urls", &r.urls)
            .field("user", &r.user)
            .field("password", &r.password)
            .field("token", &r.token)
            .field("nkey_seed", &r.nkey_seed)
            .field("creds", &r.creds)
            .field("ca", &r.ca)
            .field("cert", &r.cert)
            .field("key", &r.key)
            .field("require_tls", &r.require_tls)
            .field("name", &r.name)
            .field("connect_attempts", &r.connect_attempts)
            .field("connect_timeout", &r.connect_timeout)
            .finish()
    }
}

/// Counters of client events, for logs and `streams`-style reports.
#[derive(Debug, Default)]
pub struct ClientEvents {
    pub disconnects: AtomicU64,
    pub reconnects: AtomicU64,
    /// Messages the client dropped because a subscription's buffer was full.
    pub slow_consumer: AtomicU64,
    pub errors: AtomicU64,
}

impl NatsConfig {
    /// A configuration for tests and tools: one URL, no authentication, one connect attempt.
    pub fn url(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            urls: vec![url.into()],
            connect_attempts: 1,
            ..NatsConfig::default()
        }
    }

    /// Refuses halves of a pair: a user without a password, a certificate without its key.
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.user.is_some() && self.password.is_none() {
            return Err(QueueError::Config(
                "a NATS user needs a password (--nats-user, --nats-password)".into(),
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(QueueError::Config(
                "NATS client certificate and key go together (--nats-cert, --nats-key)".into(),
            ));
        }
        if self.urls.is_empty() {
            return Err(QueueError::Config("no NATS server URL".into()));
        }
        Ok(())
    }

    /// The same configuration with every secret replaced by [`REDACTED`]: passwords, tokens,
    /// NKey seeds and the userinfo of URLs (file paths stay: they are not the secret).
    pub fn redacted(&self) -> NatsConfig {
        let hide = |s: &Option<String>| s.as_ref().map(|_| REDACTED.to_string());
        NatsConfig {
            urls: self.urls.iter().map(|u| redact::url(u)).collect(),
            password: hide(&self.password),
            token: hide(&self.token),
            nkey_seed: hide(&self.nkey_seed),
            ..self.clone()
        }
    }

    /// The URLs without their userinfo, and the first credentials found in them.
    fn servers(&self) -> (Vec<String>, Option<UrlCredentials>) {
        let mut creds = None;
        let urls = self
            .urls
            .iter()
            .map(|u| {
                let (stripped, c) = redact::split_nats_url(u.trim());
                creds = creds.take().or(c);
                stripped
            })
            .collect();
        (urls, creds)
    }

    /// Every secret the options hold, to scrub from error messages.
    fn secrets(&self) -> Vec<String> {
        let (_, url_creds) = self.servers();
        let mut all: Vec<String> = [&self.password, &self.token, &self.nkey_seed]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        match url_creds {
            Some(UrlCredentials::UserPassword { password, .. }) => all.push(password),
            Some(UrlCredentials::Token(t)) => all.push(t),
            None => {}
        }
        all
    }

    async fn options(&self, events: Arc<ClientEvents>) -> Result<ConnectOptions, QueueError> {
        let mut opts = ConnectOptions::new();
        // Flags and their env vars win over credentials written in the URL.
        let explicit = self.user.is_some() || self.token.is_some() || self.nkey_seed.is_some();
        match self.servers().1 {
            Some(UrlCredentials::UserPassword { user, password }) if !explicit => {
                opts = opts.user_and_password(user, password);
            }
            Some(UrlCredentials::Token(token)) if !explicit => opts = opts.token(token),
            _ => {}
        }
        if let Some(creds) = &self.creds {
            opts = opts.credentials_file(creds).await.map_err(|e| {
                QueueError::Config(format!("credentials file {}: {e}", creds.display()))
            })?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        if let Some(seed) = &self.nkey_seed {
            opts = opts.nkey(seed.clone());
        }
        if let Some(ca) = &self.ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            opts = opts.require_tls(true);
        }
        let timeout = Duration::from_secs_f64(self.connect_timeout.clamp(0.1, 600.0));
        Ok(opts
            .name(&self.name)
            .connection_timeout(timeout)
            .max_reconnects(None)
            // Big enough for a burst of advisories and events; the client drops messages when
            // a subscription's buffer is full, and each drop is logged.
            .subscription_capacity(4096)
            .event_callback(move |event| {
                let events = Arc::clone(&events);
                async move { log_event(&events, event) }
            }))
    }

    /// Connects, retrying the first connect with backoff (1 s, 2 s, 4 s … 30 s). Wrong
    /// credentials and TLS errors are not retried: they will not fix themselves.
    pub async fn connect(&self) -> Result<(async_nats::Client, Arc<ClientEvents>), QueueError> {
        let events = Arc::new(ClientEvents::default());
        let attempts = self.connect_attempts.max(1);
        let mut delay = Duration::from_secs(1);
        let (servers, _) = self.servers();
        // What logs and errors show: no userinfo, no query.
        let urls = redact::urls(&servers);
        let secrets = self.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        for attempt in 1..=attempts {
            let opts = self.options(Arc::clone(&events)).await?;
            match opts.connect(servers.as_slice()).await {
                Ok(client) => {
                    tracing::info!(servers = %urls, "connected to NATS");
                    return Ok((client, events));
                }
                Err(e) => {
                    let kind = effective_kind(&e);
                    let fatal = matches!(
                        kind,
                        ConnectErrorKind::AuthorizationViolation
                            | ConnectErrorKind::Authentication
                            | ConnectErrorKind::Tls
                            | ConnectErrorKind::ServerParse
                    );
                    if fatal || attempt == attempts {
                        return Err(QueueError::Connect {
                            servers: urls,
                            kind,
                            message: describe_connect_error(
                                kind,
                                &redact::secrets(&e.to_string(), &secrets),
                            ),
                        });
                    }
                    tracing::warn!(
                        servers = %urls, attempt, of = attempts,
                        error = %redact::secrets(&e.to_string(), &secrets),
                        retry_in = ?delay, "cannot connect to NATS yet"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }
}

/// The error's kind, except that a failed TLS handshake (bad or unknown server certificate,
/// client certificate refused, plain server with --nats-require-tls), which async-nats reports
/// as `Io` with the rustls error inside, is classed as `Tls`: not retried, and explained.
fn effective_kind(e: &async_nats::ConnectError) -> ConnectErrorKind {
    let kind = e.kind();
    if kind != ConnectErrorKind::Io {
        return kind;
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        // io::Error::source() skips the error it wraps: look inside with get_ref().
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if err.is::<async_nats::rustls::Error>()
            || inner.is_some_and(|i| i.is::<async_nats::rustls::Error>())
        {
            return ConnectErrorKind::Tls;
        }
        source = err.source();
    }
    kind
}

fn describe_connect_error(kind: ConnectErrorKind, raw: &str) -> String {
    match kind {
        ConnectErrorKind::AuthorizationViolation => format!(
            "the server refused the credentials (authorization violation): check --nats-user/\
             --nats-password, --nats-token, --nats-nkey-seed or --nats-creds ({raw})"
        ),
        ConnectErrorKind::Authentication => format!(
            "cannot sign the server's nonce: --nats-nkey-seed (or the seed in --nats-creds) \
             is not a valid NKey seed (SU…) ({raw})"
        ),
        ConnectErrorKind::Tls => {
            format!("TLS failed: check --nats-ca, --nats-cert/--nats-key ({raw})")
        }
        _ => raw.to_string(),
    }
}

fn log_event(events: &ClientEvents, event: Event) {
    match event {
        Event::Connected => {
            events.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("NATS connection (re)established");
        }
        Event::Disconnected => {
            events.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("NATS connection lost; reconnecting");
        }
        Event::SlowConsumer(sid) => {
            events.slow_consumer.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                subscription = sid,
                "NATS client dropped messages (slow consumer)"
            );
        }
        Event::LameDuckMode => tracing::warn!("NATS server entering lame duck mode"),
        Event::Draining => tracing::info!("NATS connection draining"),
        Event::Closed => tracing::warn!("NATS connection closed"),
        Event::ServerError(e) => {
            events.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "NATS server error");
        }
        Event::ClientError(e) => {
            events.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "NATS client error");
        }
    }
}
