//! Logs go to the journal when stderr is connected to it (under systemd), else to stderr.
//!
//! Levels are an `EnvFilter`: `PLUMB_LOG` holds a level (`warn`) or per-module directives
//! (`info,plumb::resource=debug,zbus=warn`); `-v` on the command line means `debug`, `-vv`
//! `trace`, whatever `PLUMB_LOG` says. The default is `info`.

use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

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
}
