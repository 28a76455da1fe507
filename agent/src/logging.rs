//! Logs go to the journal when stderr is connected to it (under systemd), else to stderr.
//!
//! Levels are an `EnvFilter`: `PLUMB_LOG` holds a level (`warn`) or per-module directives
//! (`info,plumb::resource=debug,zbus=warn`); `-v` on the command line means `debug`, `-vv`
//! `trace`, whatever `PLUMB_LOG` says. The default is `info`.
//!
//! In the journal, the event kinds an operator watches carry a fixed `MESSAGE_ID` ([`id`]),
//! explained by the catalog the packages ship (packaging/plumb.catalog: `journalctl -x`). Event
//! fields keep their names, upper-cased (`COMMIT`, `REASON`), so the catalog can quote them.

use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// The journal's `MESSAGE_ID` of each event kind (`message_id = id::PASS_DONE` in an event).
/// Fixed forever: alerts and the catalog (packaging/plumb.catalog) match on them.
pub mod id {
    /// A pass ended (any outcome): commit, outcome, reason, changes.
    pub const PASS_DONE: &str = "47a82b2ede764651b796e3c8b4a044ff";
    /// A resource was changed to match Git.
    pub const CHANGE_APPLIED: &str = "79c410a2dff34e91aeecaf786e334825";
    /// A resource had drifted from Git and was put back.
    pub const DRIFT_CORRECTED: &str = "1981970189334fb889253f625e5c3cc1";
    /// A new commit was refused (bad input, untrusted): nothing of it applied.
    pub const COMMIT_REJECTED: &str = "1d4c00f30a0e4697bcfc06ec616e3e6c";
    /// Health checks failed after a change: the host went back to the last good commit.
    pub const ROLLED_BACK: &str = "14281aacc01245ae8a8aab8ba3384451";
    /// A newer commit waits (rollout wave, window, disruption slot; section 11).
    pub const WAITING: &str = "658903a131a94bb9b1bc5a2075fe4604";
    /// plumb asked systemd to reboot the host (`[reboot] when = "required"`; section 13).
    pub const REBOOTING: &str = "61d73500149c4c80b43832a061c1fbe9";
    /// The first pass after plumb's reboot found the host healthy and gave the slot back.
    pub const REBOOTED: &str = "64b1f2c03a874ec9bb67d52c1044f017";

    /// A change to a resource: drift put back, or a change Git asked for.
    pub fn change(drift: bool) -> &'static str {
        if drift {
            DRIFT_CORRECTED
        } else {
            CHANGE_APPLIED
        }
    }

    /// Every id with its name, for the catalog test.
    pub const ALL: [(&str, &str); 8] = [
        ("PASS_DONE", PASS_DONE),
        ("CHANGE_APPLIED", CHANGE_APPLIED),
        ("DRIFT_CORRECTED", DRIFT_CORRECTED),
        ("COMMIT_REJECTED", COMMIT_REJECTED),
        ("ROLLED_BACK", ROLLED_BACK),
        ("WAITING", WAITING),
        ("REBOOTING", REBOOTING),
        ("REBOOTED", REBOOTED),
    ];
}

/// The field carrying [`id`]s: a journal field, left out of stderr lines.
const MESSAGE_ID_FIELD: &str = "message_id";

/// stderr's field formatting: the default, without `message_id`.
struct WithoutMessageId;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for WithoutMessageId {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        use tracing_subscriber::field::VisitOutput;
        let mut v = Skip(tracing_subscriber::fmt::format::DefaultVisitor::new(
            writer, true,
        ));
        fields.record(&mut v);
        v.0.finish()
    }
}

struct Skip<V>(V);

impl<V: tracing::field::Visit> tracing::field::Visit for Skip<V> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() != MESSAGE_ID_FIELD {
            self.0.record_debug(field, value);
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() != MESSAGE_ID_FIELD {
            self.0.record_str(field, value);
        }
    }
}

/// The filter for `verbose` (the count of `-v`) and `PLUMB_LOG`.
pub fn filter(verbose: u8, env: Option<&str>) -> EnvFilter {
    let directives = match verbose {
        0 => env.filter(|s| !s.trim().is_empty()).unwrap_or("info"),
        1 => "debug",
        _ => "trace",
    };
    EnvFilter::try_new(directives).unwrap_or_else(|e| {
        eprintln!("plumb: PLUMB_LOG={directives:?} is not a log filter ({e}); logging at info");
        EnvFilter::new("info")
    })
}

pub fn init(verbose: u8) {
    let level = filter(verbose, std::env::var("PLUMB_LOG").ok().as_deref());
    let journal = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    match journal {
        Some(j) => {
            let _ = tracing_subscriber::registry()
                .with(
                    j.with_syslog_identifier("plumb".into())
                        .with_field_prefix(None),
                )
                .with(level)
                .try_init();
        }
        None => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .without_time()
                .fmt_fields(WithoutMessageId)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            let _ = tracing_subscriber::registry()
                .with(fmt)
                .with(level)
                .try_init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumb_log_and_verbose() {
        assert_eq!(filter(0, None).to_string(), "info");
        assert_eq!(filter(0, Some("warn")).to_string(), "warn");
        assert_eq!(filter(0, Some("")).to_string(), "info");
        let per_module = filter(0, Some("info,plumb::resource=debug")).to_string();
        assert!(per_module.contains("plumb::resource=debug"), "{per_module}");
        assert_eq!(filter(1, Some("warn")).to_string(), "debug");
        assert_eq!(filter(3, None).to_string(), "trace");
        // Not a filter: info, not a crash.
        assert_eq!(filter(0, Some("plumb=[[")).to_string(), "info");
    }

    /// Every MESSAGE_ID has one entry in the catalog the packages ship, with a subject, and the
    /// catalog names no other id.
    #[test]
    fn catalog_explains_every_message_id() {
        let catalog = include_str!("../../packaging/plumb.catalog");
        let headers: Vec<&str> = catalog
            .lines()
            .filter_map(|l| l.strip_prefix("-- "))
            .collect();
        let mut ids: Vec<&str> = id::ALL.iter().map(|(_, i)| *i).collect();
        ids.sort();
        let mut listed = headers.clone();
        listed.sort();
        assert_eq!(listed, ids);
        for (name, i) in id::ALL {
            assert!(
                i.len() == 32
                    && i.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{name}"
            );
            let entry = catalog.split(&format!("-- {i}\n")).nth(1).unwrap();
            assert!(entry.starts_with("Subject: plumb "), "{name}: {entry}");
        }
    }

    /// stderr lines leave the journal's MESSAGE_ID out and keep the other fields.
    #[test]
    fn stderr_lines_without_message_id() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .without_time()
            .fmt_fields(WithoutMessageId)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                message_id = id::PASS_DONE,
                outcome = "converged",
                "pass done: x"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("pass done: x outcome=\"converged\""),
            "{text}"
        );
        assert!(
            !text.contains("message_id") && !text.contains(id::PASS_DONE),
            "{text}"
        );
    }
}
