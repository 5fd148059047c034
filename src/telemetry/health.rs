//! `/healthz`, `/readyz` and `/metrics` on the one `--metrics-addr` listener.
//!
//! - `/healthz`: 200 while the process answers (its async threads are not wedged).
//! - `/readyz`: 200 only when NATS is connected, every lane's consumer is bound and the worker
//!   is not draining; else 503 with the reasons, one per line. SIGTERM flips it first, before
//!   the drain begins, so an orchestrator stops routing to the worker at once.
//! - `/metrics`: the Prometheus text format (when metrics are on).
//!
//! Three fixed GET routes, answered by a few lines of HTTP/1.1 (`Connection: close`) instead of
//! an HTTP server crate: probes and scrapers need nothing more, and the build stays small.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::job::JobKind;
use crate::queue::connect::ClientEvents;

/// A request head is a line and a few headers: far below this.
const MAX_HEAD_BYTES: usize = 8 << 10;
/// A scrape or a probe that takes longer is not a client we serve.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections answered at once; more are closed unanswered (probes retry).
const MAX_CONNECTIONS: usize = 32;
/// How often the recorder's histograms are drained when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What readiness is made of, set by the worker as it starts and stops.
#[derive(Default)]
pub(crate) struct Health {
    /// The client, once the first connect succeeded; its state is read at each probe.
    nats: OnceLock<(async_nats::Client, Arc<ClientEvents>)>,
    /// Each lane's consumer: bound (found and pulled from) or not (being recovered).
    consumers: Mutex<BTreeMap<&'static str, bool>>,
    /// Set on SIGTERM/SIGINT (or a fatal lane error): no new jobs, not ready.
    draining: AtomicBool,
}

impl Health {
    /// The first connect succeeded.
    pub fn connected(&self, client: async_nats::Client, events: Arc<ClientEvents>) {
        let _ = self.nats.set((client, events));
    }

    /// A lane's consumer was bound (`true`) or lost and not recovered yet (`false`).
    pub fn consumer(&self, kind: JobKind, bound: bool) {
        if let Ok(mut c) = self.consumers.lock() {
            c.insert(kind.as_str(), bound);
        }
    }

    /// Shutdown began: not ready from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn nats_connected(&self) -> bool {
        self.nats
            .get()
            .is_some_and(|(c, _)| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// Ready, or why not (one reason a line).
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        if self.draining.load(Ordering::SeqCst) {
            why.push("draining: shutting down".to_string());
        }
        if !self.nats_connected() {
            why.push("NATS not connected".to_string());
        }
        match self.consumers.lock() {
            Ok(c) if c.is_empty() => why.push("consumers not bound yet".to_string()),
            Ok(c) => why.extend(
                c.iter()
                    .filter(|(_, bound)| !**bound)
                    .map(|(kind, _)| format!("{kind} consumer not bound")),
            ),
            Err(_) => why.push("consumer state unknown".to_string()),
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }

    /// Brings the NATS gauges up to date (at each scrape: the client keeps the state).
    fn refresh_metrics(&self) {
        use super::metrics::{NATS_CONNECTED, NATS_RECONNECTS, NATS_SLOW_CONSUMER};
        metrics::gauge!(NATS_CONNECTED).set(if self.nats_connected() { 1.0 } else { 0.0 });
        if let Some((_, events)) = self.nats.get() {
            // `reconnects` also counts the first connect.
            let connects = events.reconnects.load(Ordering::Relaxed);
            metrics::counter!(NATS_RECONNECTS).absolute(connects.saturating_sub(1));
            let slow = events.slow_consumer.load(Ordering::Relaxed);
            metrics::counter!(NATS_SLOW_CONSUMER).absolute(slow);
        }
    }
}

/// The listener's task; dropping it stops serving.
pub(crate) struct Endpoint {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves the health routes (and `/metrics` when `metrics` is given) until
/// the returned [`Endpoint`] is dropped.
pub(crate) async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
) -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    let task = tokio::spawn(accept(listener, health, metrics));
    Ok(Endpoint { task })
}

async fn accept(listener: TcpListener, health: Arc<Health>, metrics: Option<PrometheusHandle>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        let stream = tokio::select! {
            _ = upkeep.tick() => {
                if let Some(m) = &metrics {
                    m.run_upkeep();
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let (health, metrics) = (Arc::clone(&health), metrics.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer(stream, &health, metrics)).await;
            drop(slot);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    health: &Health,
    metrics: Option<PrometheusHandle>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
        if stream.read_buf(&mut head).await? == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let reply = route(method, path, health, metrics.as_ref());
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(reply.body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// One answer.
#[derive(Debug, PartialEq)]
struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus' text exposition format.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

fn route(method: &str, path: &str, health: &Health, metrics: Option<&PrometheusHandle>) -> Reply {
    let reply = |status, content_type, body: String| Reply {
        status,
        content_type,
        body,
    };
    if method != "GET" && method != "HEAD" {
        return reply("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match (path, metrics) {
        ("/healthz", _) => reply("200 OK", TEXT, "ok\n".into()),
        ("/readyz", _) => match health.readiness() {
            Ok(()) => reply("200 OK", TEXT, "ready\n".into()),
            Err(why) => reply(
                "503 Service Unavailable",
                TEXT,
                format!("not ready:\n{}\n", why.join("\n")),
            ),
        },
        ("/metrics", Some(m)) => {
            health.refresh_metrics();
            reply("200 OK", EXPOSITION, m.render())
        }
        _ => reply(
            "404 Not Found",
            TEXT,
            "routes: /healthz /readyz /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_bound_consumer_a_connection_and_no_drain() {
        let health = Health::default();
        let why = health.readiness().unwrap_err();
        assert_eq!(why, ["NATS not connected", "consumers not bound yet"]);
        health.consumer(JobKind::Process, true);
        health.consumer(JobKind::Thumbnail, false);
        health.drain();
        let why = health.readiness().unwrap_err();
        assert_eq!(
            why,
            [
                "draining: shutting down",
                "NATS not connected",
                "thumbnail consumer not bound"
            ]
        );
    }

    #[test]
    fn probes_answer_without_metrics_and_other_routes_are_refused() {
        let health = Health::default();
        assert_eq!(route("GET", "/healthz", &health, None).status, "200 OK");
        let ready = route("GET", "/readyz", &health, None);
        assert_eq!(ready.status, "503 Service Unavailable");
        assert!(ready.body.contains("NATS not connected"), "{}", ready.body);
        assert_eq!(
            route("GET", "/metrics", &health, None).status,
            "404 Not Found"
        );
        assert_eq!(
            route("POST", "/healthz", &health, None).status,
            "405 Method Not Allowed"
        );
    }
}
