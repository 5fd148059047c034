//! Connecting to NATS: every authentication and TLS option the platform guide uses, each
//! also settable by environment variable; the first connect retried with backoff (the
//! client retries reconnects itself, without limit); client events logged and counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event};

use crate::queue::redact::{self, UrlCredentials};
use crate::queue::QueueError;

/// How to reach the NATS server(s).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Server URL(s), comma separated for a cluster (nats://, tls://). Credentials may be
    /// written in the URL (`nats://user:password@host`, `nats://token@host`); they are used
    /// for the connection and never printed.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub urls: Vec<String>,
    /// User name (server `authorization { user, password }`).
    #[arg(long = "nats-user", env = "NATS_USER", requires = "password")]
    pub user: Option<String>,
    /// Password for --nats-user.
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// NKey seed (`SU…`).
    #[arg(
        long = "nats-nkey-seed",
        env = "NATS_NKEY_SEED",
        hide_env_values = true
    )]
    pub nkey_seed: Option<String>,
    /// Credentials file (JWT + NKey seed, `.creds`).
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// CA bundle (PEM) to verify the server with; replaces the system roots.
    #[arg(long = "nats-ca", env = "NATS_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --nats-key.
    #[arg(long = "nats-cert", env = "NATS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for --nats-cert.
    #[arg(long = "nats-key", env = "NATS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    #[arg(long = "nats-require-tls", env = "NATS_REQUIRE_TLS")]
    pub require_tls: bool,
    /// Connection name shown by the server (`nats server report connections`).
    #[arg(long = "nats-name", env = "NATS_NAME", default_value = "video-worker")]
    pub name: String,
    /// Attempts for the first connect (reconnects after that are unlimited).
    #[arg(long = "nats-connect-attempts", default_value_t = 10)]
    pub connect_attempts: u32,
    /// Timeout of one connection attempt, seconds.
    #[arg(long = "nats-connect-timeout", default_value_t = 5.0)]
    pub connect_timeout: f64,
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

impl ConnectArgs {
    /// A configuration for tests and tools: one URL, no authentication.
    pub fn url(url: impl Into<String>) -> ConnectArgs {
        ConnectArgs {
            urls: vec![url.into()],
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
            connect_attempts: 1,
            connect_timeout: 5.0,
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
