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
    /// More log output: -v debug, -vv trace (else PLUMB_LOG, else info).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: a reconcile pass every interval (systemd Type=notify).
    Run,
    /// Fetch, then run one reconcile pass now. Exit 0 converged, 1 failed.
    Apply {
        /// Accept a head that does not descend from the applied commit (a deliberate force-push
        /// or rollback in Git), or retry a commit whose health checks failed.
        #[arg(long)]
        allow_rewind: bool,
        /// Move to the new commit now, whatever fleet.toml's rollout waves, windows and
        /// disruption slots say (an emergency fix); signatures and fast-forward checks still hold.
        #[arg(long)]
        ignore_rollout: bool,
    },
    /// Fetch, then print what apply would change; change nothing. Exit 0 nothing to do, 2 changes pending, 1 error.
    Plan,
    /// Show this host's last report.
    Status {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// One line per host from the status branches (works without plumb state or agent.toml).
    Fleet(FleetArgs),
    /// Lint a fleet-repo checkout (every host by default), for the operators' own CI.
    Validate {
        /// The checkout to check.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Check only this host.
        #[arg(long)]
        host: Option<String>,
        /// Host facts for templates: a TOML file shaped like status.toml's [facts] (default:
        /// this machine's).
        #[arg(long, value_name = "FILE")]
        facts: Option<PathBuf>,
    },
    /// Print one rendered template of a fleet-repo checkout.
    Render {
        /// The template's path in the checkout (roles/web/files/etc/site.conf.tmpl) or the path
        /// it installs to (/etc/site.conf).
        path: String,
        /// The host to render for (default: `host` of the agent config, else this machine's name).
        #[arg(long)]
        host: Option<String>,
        /// The checkout.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Host facts: a TOML file shaped like status.toml's [facts] (default: this machine's).
        #[arg(long, value_name = "FILE")]
        facts: Option<PathBuf>,
    },
    /// Per host, what moving the fleet from commit BASE to HEAD would change (for review).
    /// Exit 0 no change, 2 changes, 1 a host would reject HEAD.
    Diff {
        /// The older commit (a branch, tag or hash of the checkout's repository).
        base: String,
        /// The newer commit.
        head: String,
        /// The checkout (only its Git repository is read).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Only hosts matching this glob (repeatable).
        #[arg(long = "host", value_name = "PATTERN")]
        hosts: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Repository holding the status branches, for the hosts' facts (default: the
        /// checkout's own `status/<host>` branches, local or origin's).
        #[arg(long, value_name = "URL")]
        status_repo: Option<String>,
    },
    /// Secrets in Git: encrypt a file to hosts (their SSH host keys), re-encrypt a checkout, decrypt.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Exit 0 when the agent config names a repo, 1 when it does not (plumb.service's ExecCondition).
    #[command(hide = true)]
    IsConfigured,
    /// Write the man pages and shell completions into DIR (used to build the packages).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory: DIR/man and DIR/completions are created.
        dir: PathBuf,
    },
}

/// The options of `plumb fleet`.
#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    /// Repository holding the status branches (default: `[status] repo` of the config). With
    /// `{host}` in it, one repository per host directory under `hosts/` of the fleet branch.
    #[arg(long, value_name = "URL")]
    repo: Option<String>,
    /// Repository of the fleet branch, when the status branches are in a separate one
    /// (default: --repo, else `repo` of the config).
    #[arg(long, value_name = "URL")]
    fleet_repo: Option<String>,
    /// Fleet branch the hosts should run (default: `branch` of the config, else main).
    #[arg(long)]
    branch: Option<String>,
    /// Reports older than twice this are stale (default: `[status] heartbeat`, else 1h).
    #[arg(long)]
    heartbeat: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Only the rollout: per recent commit how far each wave got, which commits are
    /// quarantined, and whether status is trusted by pinned host keys (JSON with --json).
    #[arg(long)]
    rollout: bool,
    /// Also write a self-contained HTML page (summary, rollout progress, hosts) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Read every host's status branch afresh. By default, with one status repository per host,
    /// a host whose branch did not move since the last `plumb fleet` is only listed, and its
    /// report taken from the cache (`$XDG_CACHE_HOME/plumb`, else `~/.cache/plumb`).
    #[arg(long)]
    no_cache: bool,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Encrypt IN to hosts (their `age_recipient` from the status branches), the hosts of roles,
    /// explicit recipients, and fleet.toml's [secrets] admins.
    Encrypt {
        /// A host to encrypt to (repeatable).
        #[arg(long = "host", value_name = "H")]
        hosts: Vec<String>,
        /// Every host including this role ("web" or "roles/web"; repeatable).
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// A recipient: `ssh-ed25519 AAAA...`, `ssh-rsa AAAA...` or `age1...` (repeatable).
        #[arg(long = "recipient", value_name = "R")]
        recipients: Vec<String>,
        /// Output file (default: stdout). Name it NAME.age under files/ of a host or role.
        #[arg(short = 'o', value_name = "OUT")]
        out: Option<PathBuf>,
        /// The fleet-repo checkout (fleet.toml, hosts/, roles/).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Repository holding the status branches (default: `[status] repo` of the config).
        #[arg(long, value_name = "URL")]
        repo: Option<String>,
        /// The plaintext file.
        input: PathBuf,
    },
    /// Re-encrypt every .age file of a checkout for its current recipients (a host added to a
    /// role, a rotated host key); needs an identity that can decrypt them (an admin's).
    Rekey {
        /// The fleet-repo checkout.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The key to decrypt with (an SSH private key or an age identity file).
        #[arg(long, value_name = "KEY")]
        identity: PathBuf,
        /// Repository holding the status branches (default: `[status] repo` of the config).
        #[arg(long, value_name = "URL")]
        repo: Option<String>,
    },
    /// Print a decrypted .age file.
    Decrypt {
        /// The key to decrypt with (an SSH private key or an age identity file).
        #[arg(long, value_name = "KEY")]
        identity: PathBuf,
        file: PathBuf,
    },
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run => {
            let settings = Settings::load(&cli.config)?;
            crate::daemon::run(settings)
        }
        Command::Apply {
            allow_rewind,
            ignore_rollout,
        } => {
            let mut agent = Agent::new(Settings::load(&cli.config)?)?;
            let r = agent.pass(PassOptions {
                allow_rewind,
                ignore_rollout,
                ..Default::default()
            })?;
            for line in &r.changes {
                out(format_args!("{line}\n"));
            }
            print_summary(&r.report);
            agent.flush_notifications(std::time::Duration::from_secs(10));
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
            let r = agent.pass(PassOptions {
                dry_run: true,
                ..Default::default()
            })?;
            use crate::status::report::Outcome;
            // The plan on stdout (logs stay on stderr), like `terraform plan`.
            out(format_args!("{}", plan_text(&r)));
            if matches!(r.report.outcome, Outcome::Failed | Outcome::Rejected) {
                print_summary(&r.report);
                return Ok(1);
            }
            Ok(if r.has_changes() { 2 } else { 0 })
        }
        Command::Status { json } => {
            let settings = Settings::load(&cli.config)?;
            let Some(report) = Agent::last_report(&settings.state_dir)? else {
                bail!(
                    "no report yet in {}: run `plumb apply` or start plumb.service",
                    settings.state_dir.display()
                );
            };
            let sd = crate::state::StateDir::open(&settings.state_dir)?;
            // The status push: what was pushed last, and the last error (none before the first).
            let memo = crate::status::publish::PushMemo::load(&sd)?;
            let push = (!memo.repo.is_empty()).then(|| memo.status());
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["push"] = serde_json::to_value(&push)?;
                out(format_args!("{}\n", serde_json::to_string_pretty(&v)?));
            } else {
                out(format_args!("{}", report.to_toml()));
                #[derive(serde::Serialize)]
                struct Push<'a> {
                    push: &'a crate::status::publish::PushStatus,
                }
                if let Some(push) = &push {
                    out(format_args!("\n{}", toml::to_string(&Push { push })?));
                }
            }
            Ok(0)
        }
        Command::Fleet(args) => fleet(&cli.config, args),
        Command::Secret { command } => {
            use crate::secret_cmd as sc;
            match command {
                SecretCommand::Encrypt {
                    hosts,
                    roles,
                    recipients,
                    out,
                    dir,
                    repo,
                    input,
                } => sc::encrypt(
                    &sc::Fleet::new(&cli.config, dir, repo)?,
                    sc::EncryptArgs {
                        hosts,
                        roles,
                        recipients,
                        out,
                        input,
                    },
                )?,
                SecretCommand::Rekey {
                    dir,
                    identity,
                    repo,
                } => sc::rekey(&sc::Fleet::new(&cli.config, dir, repo)?, &identity)?,
                SecretCommand::Decrypt { identity, file } => sc::decrypt(&identity, &file)?,
            }
            Ok(0)
        }
        Command::Diff {
            base,
            head,
            dir,
            hosts,
            json,
            status_repo,
        } => {
            let s = crate::diff::run(&crate::diff::Options {
                dir,
                base,
                head,
                hosts,
                status_repo,
            })?;
            if json {
                out(format_args!("{}\n", serde_json::to_string_pretty(&s)?));
            } else {
                out(format_args!("{}", crate::diff::text(&s)));
            }
            Ok(s.exit_code())
        }
        Command::Validate { dir, host, facts } => {
            validate(dir, host, crate::render::facts(facts.as_deref())?)
        }
        Command::Render {
            path,
            host,
            dir,
            facts,
        } => {
            let facts = crate::render::facts(facts.as_deref())?;
            let host = host.unwrap_or_else(|| crate::render::default_host(&cli.config, &facts));
            let text = crate::render::render(&dir, &host, &path, &facts)?;
            use std::io::Write;
            let mut o = std::io::stdout().lock();
            if let Err(e) = o.write_all(&text).and_then(|()| o.flush()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    std::process::exit(141);
                }
                bail!("writing to stdout: {e}");
            }
            Ok(0)
        }
        Command::IsConfigured => {
            if crate::config::names_a_repo(&cli.config)? {
                Ok(0)
            } else {
                eprintln!(
                    "{}: missing or no `repo` set: plumb.service stays idle until it names the fleet repository",
                    cli.config.display()
                );
                Ok(1)
            }
        }
        Command::GenerateDocs { dir } => crate::docs::generate(&dir).map(|()| 0),
    }
}

/// Writes to stdout. A closed pipe (`plumb status | head`) ends the process quietly, as Unix tools
/// do, instead of a panic; the exit code is the one a shell gives for SIGPIPE. (SIGPIPE itself
/// stays ignored: a child that dies while plumb writes to it must never kill the agent.)
fn out(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("plumb: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// What `plan` prints: each change in the future tense ("would create file /etc/motd") with its
/// diff indented below it, then one line with the count and the commit.
fn plan_text(r: &crate::engine::PassResult) -> String {
    let mut s = String::new();
    for entry in &r.changes {
        // An entry is a change ("create file /etc/motd") or the diff that follows it.
        if entry.starts_with(|c: char| c.is_ascii_lowercase()) {
            s.push_str(&format!("would {entry}\n"));
        } else {
            for line in entry.lines() {
                s.push_str(&format!("    {line}\n"));
            }
        }
    }
    let report = &r.report;
    let commit = report.desired_commit.get(..12).unwrap_or("-");
    let n = r.changed;
    let count = match n {
        0 => "no changes: the host matches Git".to_string(),
        1 => "1 change; `plumb apply` makes it".to_string(),
        _ => format!("{n} changes; `plumb apply` makes them"),
    };
    if !r.changes.is_empty() {
        s.push('\n');
    }
    s.push_str(&format!("plan for {} at {commit}: {count}\n", report.host));
    if !report.message.is_empty() {
        s.push_str(&format!("note: {}\n", report.message));
    }
    if !report.waiting.is_empty() {
        s.push_str(&format!(
            "waiting: not moving to {} yet: {}\n",
            report.desired_commit.get(..12).unwrap_or("-"),
            report.waiting
        ));
    }
    s
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
    if !r.waiting.is_empty() {
        eprintln!("  waiting: {}", r.waiting);
    }
    if r.reboot_required == Some(true) {
        eprintln!("  reboot required (README: Upgrades and reboots)");
    }
    for res in r
        .resources
        .iter()
        .filter(|x| x.state == crate::status::report::ResourceState::Failed)
    {
        eprintln!("  failed {:?} {}: {}", res.kind, res.name, res.detail);
    }
}

fn fleet(config: &std::path::Path, args: FleetArgs) -> Result<i32> {
    let FleetArgs {
        repo,
        fleet_repo,
        branch,
        heartbeat,
        json,
        rollout,
        html,
        no_cache,
    } = args;
    use crate::status::fleet::{self, FleetQuery};
    use crate::status::remote::Endpoint;
    for (flag, url) in [("--repo", &repo), ("--fleet-repo", &fleet_repo)] {
        if let Some(u) = url {
            crate::config::validate_repo(u).context(flag)?;
        }
    }
    // With --repo the config is optional (an operator's laptop has none).
    let settings = match (&repo, Settings::load(config)) {
        (_, Ok(s)) => Some(s),
        (Some(_), Err(_)) => None,
        (None, Err(e)) => {
            return Err(e.context("give the status repository with --repo URL"));
        }
    };
    let endpoint = |url: String| Endpoint {
        url,
        ssh_key: settings.as_ref().and_then(|s| s.ssh_key.clone()),
        token_file: settings.as_ref().and_then(|s| s.token_file.clone()),
        known_hosts: None,
    };
    let (status_url, fleet_url) = match (&repo, &settings) {
        (Some(r), _) => (r.clone(), fleet_repo.unwrap_or_else(|| r.clone())),
        (None, Some(s)) => (
            s.status.repo_template.clone(),
            fleet_repo.unwrap_or_else(|| s.repo.clone()),
        ),
        (None, None) => unreachable!("checked above"),
    };
    let heartbeat = match (heartbeat, &settings) {
        (Some(h), _) => crate::config::parse_duration_in(&h, crate::config::ranges::HEARTBEAT)
            .context("--heartbeat")?,
        (None, Some(s)) => s.status.heartbeat,
        (None, None) => std::time::Duration::from_secs(3600),
    };
    let q = FleetQuery {
        status: endpoint(status_url),
        fleet: endpoint(fleet_url),
        branch: branch
            .or_else(|| settings.as_ref().map(|s| s.branch.clone()))
            .unwrap_or_else(|| "main".into()),
        heartbeat,
    };
    let redacted = q.status.redacted();
    let mut cache = if no_cache {
        crate::status::tipcache::TipCache::disabled(&redacted)
    } else {
        crate::status::tipcache::TipCache::open(&redacted)
    };
    let read = fleet::read(&q, &mut cache)?;
    if rollout {
        let r = read.rollout?;
        match (r, json) {
            (Some(r), true) => out(format_args!("{}\n", serde_json::to_string_pretty(&r)?)),
            (Some(r), false) => out(format_args!("{}", crate::rollout::progress::text(&r))),
            (None, true) => out(format_args!("null\n")),
            (None, false) => out(format_args!("no [rollout] in fleet.toml of {}\n", q.branch)),
        }
        return Ok(0);
    }
    let (head, mut lines) = (read.head, read.lines);
    // With `[rollout]` in fleet.toml: each host's wave, and per commit how far each wave got (a
    // failure to read it is no failure of the table).
    let progress = match read.rollout {
        Ok(r) => r,
        Err(e) => {
            eprintln!("plumb: reading the rollout: {e:#}");
            None
        }
    };
    if let Some(r) = &progress {
        for l in &mut lines {
            if let Some(k) = r.wave_of(&l.host) {
                l.wave = k.to_string();
            }
        }
    }
    if let Some(path) = &html {
        let page = crate::status::page::render(
            head.as_deref(),
            &lines,
            progress.as_ref(),
            &crate::status::report::now_rfc3339(),
        );
        // A bare file name is in the current directory (whose fsync needs a name).
        let path = match path.parent() {
            Some(p) if p.as_os_str().is_empty() => std::path::Path::new(".").join(path),
            _ => path.clone(),
        };
        crate::state::write_atomic(&path, page.as_bytes())
            .with_context(|| format!("--html {}", path.display()))?;
    }
    if json {
        out(format_args!("{}\n", serde_json::to_string_pretty(&lines)?));
    } else {
        out(format_args!("{}", fleet::table(head.as_deref(), &lines)));
        if let Some(r) = &progress {
            out(format_args!("{}", crate::rollout::progress::text(r)));
        }
    }
    Ok(0)
}

fn validate(dir: PathBuf, host: Option<String>, facts: crate::spec::facts::Facts) -> Result<i32> {
    let tree = DirTree { root: dir.clone() };
    let hosts: Vec<String> = match host {
        Some(h) => vec![h],
        None => {
            // Never through a symlink: CI runs this on untrusted branches.
            let hosts_dir = tree.dir("hosts")?.unwrap_or_else(|| dir.join("hosts"));
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
            out(format_args!("hosts/{h}: {e}\n"));
            errors += 1;
            continue;
        }
        let inputs = crate::spec::Inputs {
            host: h,
            facts: &facts,
            cache: None,
            keys: None,
        };
        let guard = crate::spec::guard::Guard::packaged();
        let loaded = crate::spec::load_with(&tree, &format!("hosts/{h}"), &limits, inputs)
            .and_then(|d| crate::spec::guard::check(&d, &guard).map(|()| d));
        match loaded {
            Ok(d) => out(format_args!(
                "hosts/{h}: ok ({} files, {} units, {} containers, {} packages)\n",
                d.files.len(),
                d.units.len(),
                d.containers.len(),
                d.packages.install.len() + d.packages.remove.len()
            )),
            Err(e) => {
                out(format_args!("hosts/{h}: error: {e}\n"));
                errors += 1;
            }
        }
    }
    if hosts.is_empty() {
        out(format_args!(
            "{}: no hosts/<host> directories found\n",
            dir.display()
        ));
        errors += 1;
    }
    Ok(if errors == 0 { 0 } else { 1 })
}
