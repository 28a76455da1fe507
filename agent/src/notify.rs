//! `[notify] webhook`: one JSON POST per change of outcome (to failed, rejected, drifted, and back
//! to converged), sent off the pass by a thread of its own: the pass only leaves the latest event
//! in a one-slot mailbox (a newer event replaces one not yet delivered), so a slow or dead endpoint
//! never delays a pass or the watchdog. Failed sends are retried with backoff. The token is read
//! at each send and never logged.

use crate::config::NotifySettings;
use crate::state::StateDir;
use crate::status::report::{Outcome, Report};
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What was last announced, kept in `state_dir` so a restart does not announce it again.
const LAST_DOC: &str = "notify.toml";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one attempt may take, answer included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Attempts before an event is dropped (about 20 minutes of retries).
const MAX_ATTEMPTS: u32 = 12;

/// The document posted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub host: String,
    pub outcome: String,
    pub previous_outcome: String,
    /// The commit the outcome is about: the one Git asks for (for rejected, the refused one).
    pub commit: String,
    pub applied_commit: String,
    pub reason: String,
    pub message: String,
    pub checked_at: String,
    pub agent_version: String,
}

/// The outcomes a notification tells apart: converged and changed are both healthy.
fn class(o: Outcome) -> &'static str {
    match o {
        Outcome::Converged | Outcome::Changed => "converged",
        o => o.as_str(),
    }
}

#[derive(Default)]
struct Slot {
    pending: Option<Event>,
    /// An event is being sent (or waits for its retry).
    busy: bool,
}

type Shared = Arc<(Mutex<Slot>, Condvar)>;

pub struct Notifier {
    shared: Shared,
}

impl Notifier {
    /// Starts the sending thread.
    pub fn start(settings: NotifySettings) -> Result<Notifier> {
        let agent = http_agent(&settings)?;
        let shared: Shared = Arc::default();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("plumb-notify".into())
            .spawn(move || sender(s, settings, agent))
            .context("starting the webhook thread")?;
        Ok(Notifier { shared })
    }

    /// Compares the pass's report with what was announced last; on a change, hands the event to
    /// the thread and remembers it. Returns the event (None: nothing to say).
    pub fn observe(&self, state_dir: &StateDir, report: &Report) -> Result<Option<Event>> {
        let previous = match state_dir.read_doc(LAST_DOC)? {
            Some(t) => toml::from_str::<toml::Table>(&t)
                .ok()
                .and_then(|t| t.get("outcome")?.as_str().map(String::from))
                .unwrap_or_else(|| "converged".into()),
            None => "converged".into(),
        };
        let now = class(report.outcome);
        if now == previous {
            return Ok(None);
        }
        state_dir.write_doc_unsynced(LAST_DOC, &format!("outcome = {now:?}\n"))?;
        let commit = if report.desired_commit.is_empty() {
            &report.applied_commit
        } else {
            &report.desired_commit
        };
        let event = Event {
            host: report.host.clone(),
            outcome: report.outcome.as_str().into(),
            previous_outcome: previous,
            commit: commit.clone(),
            applied_commit: report.applied_commit.clone(),
            reason: report.reason.map(|r| r.as_str()).unwrap_or("").into(),
            message: report.message.clone(),
            checked_at: report.checked_at.clone(),
            agent_version: report.agent_version.clone(),
        };
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).pending = Some(event.clone());
        cv.notify_all();
        Ok(Some(event))
    }

    /// Waits until nothing is left to send, or `limit` passed (`plumb apply` before it exits).
    pub fn flush(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let (lock, cv) = &*self.shared;
        let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
        while slot.pending.is_some() || slot.busy {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            slot = cv
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// The thread: take the latest event, send it, retry with backoff; a newer event replaces it.
fn sender(shared: Shared, settings: NotifySettings, agent: ureq::Agent) {
    let (lock, cv) = &*shared;
    let target = redact(&settings.webhook);
    loop {
        let mut event = {
            let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
            slot.busy = false;
            cv.notify_all();
            while slot.pending.is_none() {
                slot = cv.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            slot.busy = true;
            slot.pending.take().expect("checked")
        };
        let mut delay = FIRST_RETRY;
        let mut attempt = 1;
        loop {
            match send(&agent, &settings, &event) {
                Ok(()) => {
                    tracing::info!(webhook = %target, outcome = %event.outcome, "webhook notified: {}", event.outcome);
                    break;
                }
                Err(e) if attempt >= MAX_ATTEMPTS => {
                    tracing::warn!(webhook = %target, error = %format!("{e:#}"), "webhook gave up after {attempt} attempts: {e:#}");
                    break;
                }
                Err(e) => {
                    tracing::warn!(webhook = %target, error = %format!("{e:#}"), attempt, "webhook failed, retrying in {}s: {e:#}", delay.as_secs());
                }
            }
            // Wait for the retry, unless a newer event comes first (then send that one now).
            let slot = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (mut slot, _) = cv
                .wait_timeout_while(slot, delay, |s| s.pending.is_none())
                .unwrap_or_else(|e| e.into_inner());
            if let Some(newer) = slot.pending.take() {
                event = newer;
                attempt = 1;
                delay = FIRST_RETRY;
            } else {
                attempt += 1;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
}

fn send(agent: &ureq::Agent, settings: &NotifySettings, event: &Event) -> Result<()> {
    let body = serde_json::to_vec(event)?;
    let mut req = agent
        .post(&settings.webhook)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("plumb/", env!("CARGO_PKG_VERSION")));
    if let Some(f) = &settings.token_file {
        let token = std::fs::read_to_string(f)
            .with_context(|| format!("reading notify.token_file {}", f.display()))?;
        req = req.header("Authorization", format!("Bearer {}", token.trim()));
    }
    let resp = req.send(&body[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!("the endpoint answered {status}");
    }
    Ok(())
}

/// ureq over rustls (ring) as the fetch uses it; roots from `ca_file` when set, else the
/// system's (`SSL_CERT_FILE` honoured).
fn http_agent(settings: &NotifySettings) -> Result<ureq::Agent> {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    crate::source::git::init_tls();
    let roots = match &settings.ca_file {
        Some(f) => {
            let pem = std::fs::read(f)
                .with_context(|| format!("reading notify.ca_file {}", f.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                anyhow::bail!("notify.ca_file {}: no PEM certificate in it", f.display());
            }
            RootCerts::new_with_certs(&certs)
        }
        None => RootCerts::PlatformVerifier,
    };
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots)
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(ATTEMPT_TIMEOUT))
        .build()
        .into())
}

/// The URL without its path and query (which may carry a key): scheme and host, for logs.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            format!(
                "{scheme}://{}/...",
                rest.split(['/', '?', '#']).next().unwrap_or("")
            )
        }
        None => "(webhook)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_redaction() {
        assert_eq!(class(Outcome::Changed), "converged");
        assert_eq!(class(Outcome::Converged), "converged");
        assert_eq!(class(Outcome::Rejected), "rejected");
        assert_eq!(
            redact("https://hooks.example.org/services/T0/SECRET?k=1"),
            "https://hooks.example.org/..."
        );
    }
}
