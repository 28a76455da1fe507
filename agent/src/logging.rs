//! Logs go to the journal when stderr is connected to it (under systemd), else to stderr.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

pub fn init() {
    let level = match std::env::var("PLUMB_LOG").as_deref() {
        Ok("debug") => LevelFilter::DEBUG,
        Ok("warn") => LevelFilter::WARN,
        Ok("error") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    let journal = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    match journal {
        Some(j) => {
            let _ = tracing_subscriber::registry()
                .with(j.with_syslog_identifier("plumb".into()))
                .with(level)
                .try_init();
        }
        None => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .without_time()
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            let _ = tracing_subscriber::registry()
                .with(fmt)
                .with(level)
                .try_init();
        }
    }
}
