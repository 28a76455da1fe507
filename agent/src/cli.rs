//! Command-line parsing and dispatch; the work happens in the library modules.

use crate::config::{Settings, DEFAULT_CONFIG};
use crate::engine::{Agent, PassOptions};
use crate::spec::tree::DirTree;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "plumb",
    version,
    about = "Keeps this host plumb with its directory in a Git repository"
)]
pub struct Cli {
    /// Agent configuration file.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: a reconcile pass every interval (systemd Type=notify).
    Run,
    /// Fetch, then run one reconcile pass now. Exit 0 converged, 1 failed.
    Apply,
    /// Fetch, then print what apply would change; change nothing. Exit 0 nothing to do, 2 changes pending, 1 error.
    Plan,
    /// Show this host's last report.
    Status {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Lint a fleet-repo checkout (every host by default), for the operators' own CI.
    Validate {
        /// The checkout to check.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Check only this host.
        #[arg(long)]
        host: Option<String>,
    },
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run => {
            let settings = Settings::load(&cli.config)?;
            crate::daemon::run(settings)
        }
        Command::Apply => {
            let mut agent = Agent::new(Settings::load(&cli.config)?)?;
            let r = agent.pass(PassOptions::default())?;
            for line in &r.changes {
                println!("{line}");
            }
            print_summary(&r.report);
            Ok(
                if matches!(
                    r.report.outcome,
                    crate::status::report::Outcome::Failed
                        | crate::status::report::Outcome::Rejected
                ) {
                    1
                } else {
                    0
                },
            )
        }
        Command::Plan => {
            let mut agent = Agent::new(Settings::load(&cli.config)?)?;
            let r = agent.pass(PassOptions { dry_run: true })?;
            for line in &r.changes {
                println!("{line}");
            }
            print_summary(&r.report);
            use crate::status::report::Outcome;
            Ok(match r.report.outcome {
                Outcome::Failed | Outcome::Rejected => 1,
                _ if r.has_changes() => 2,
                _ => 0,
            })
        }
        Command::Status { json } => {
            let settings = Settings::load(&cli.config)?;
            let Some(report) = Agent::last_report(&settings.state_dir)? else {
                bail!(
                    "no report yet in {}: run `plumb apply` or start plumb.service",
                    settings.state_dir.display()
                );
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_toml());
            }
            Ok(0)
        }
        Command::Validate { dir, host } => validate(dir, host),
    }
}

fn print_summary(r: &crate::status::report::Report) {
    let commit = if r.desired_commit.is_empty() {
        "-"
    } else {
        &r.desired_commit[..r.desired_commit.len().min(12)]
    };
    if r.message.is_empty() {
        eprintln!("{}: {} at {commit}", r.host, r.outcome.as_str());
    } else {
        eprintln!(
            "{}: {} at {commit}: {}",
            r.host,
            r.outcome.as_str(),
            r.message
        );
    }
    for res in r
        .resources
        .iter()
        .filter(|x| x.state == crate::status::report::ResourceState::Failed)
    {
        eprintln!("  failed {:?} {}: {}", res.kind, res.name, res.detail);
    }
}

fn validate(dir: PathBuf, host: Option<String>) -> Result<i32> {
    let tree = DirTree { root: dir.clone() };
    let hosts: Vec<String> = match host {
        Some(h) => vec![h],
        None => {
            let hosts_dir = dir.join("hosts");
            let mut v: Vec<String> = std::fs::read_dir(&hosts_dir)
                .with_context(|| {
                    format!(
                        "reading {}: is this a fleet repo checkout?",
                        hosts_dir.display()
                    )
                })?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    };
    let limits = crate::config::Limits::default();
    let mut errors = 0;
    for h in &hosts {
        if let Err(e) = crate::config::validate_host(h) {
            println!("hosts/{h}: {e}");
            errors += 1;
            continue;
        }
        match crate::spec::load(&tree, &format!("hosts/{h}"), &limits) {
            Ok(d) => println!(
                "hosts/{h}: ok ({} files, {} units, {} containers, {} packages)",
                d.files.len(),
                d.units.len(),
                d.containers.len(),
                d.packages.install.len() + d.packages.remove.len()
            ),
            Err(e) => {
                println!("hosts/{h}: error: {e}");
                errors += 1;
            }
        }
    }
    if hosts.is_empty() {
        println!("{}: no hosts/<host> directories found", dir.display());
        errors += 1;
    }
    Ok(if errors == 0 { 0 } else { 1 })
}
