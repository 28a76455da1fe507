//! plumb-bench: measures plumb against the targets of docs/design.md, side by side with
//! ansible-pull and puppet on the same work in the same run, and prints a Markdown report.
//! `bench/run.sh` installs the peers, builds the release binary and runs this.

mod fixture;
mod measure;
mod node;
mod peers;
mod plumb;
mod poll;
mod proxy;
mod push;
mod report;

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "plumb-bench",
    about = "Benchmarks plumb's footprint and speed targets"
)]
pub struct Args {
    /// The plumb binary to measure (the stripped release build).
    #[arg(long)]
    pub plumb: PathBuf,
    /// ansible-pull to compare with (ansible-core from PyPI); peers are skipped without it.
    #[arg(long)]
    pub ansible_pull: Option<PathBuf>,
    /// puppet to compare with (Debian's puppet package).
    #[arg(long, default_value = "/usr/bin/puppet")]
    pub puppet: PathBuf,
    /// Files managed for the host.
    #[arg(long, default_value_t = 1000)]
    pub files: usize,
    /// Files ansible-pull converges, on the host and in the node (it needs ~6 minutes per run
    /// at 1,000 on 2 cores).
    #[arg(long)]
    pub ansible_files: Option<usize>,
    /// Runs of ansible-pull per scenario.
    #[arg(long, default_value_t = 1)]
    pub ansible_runs: usize,
    /// Other branches in the fleet repository (what a v0 client must download on every poll).
    #[arg(long, default_value_t = 10000)]
    pub branches: usize,
    /// Runs of every plumb and git figure.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Runs of puppet per scenario.
    #[arg(long, default_value_t = 3)]
    pub puppet_runs: usize,
    /// Passes of `plumb run` before and while sampling its idle RSS.
    #[arg(long, default_value_t = 6)]
    pub passes: usize,
    /// `plumb run` interval, seconds.
    #[arg(long, default_value_t = 3)]
    pub interval: u64,
    /// Status branches already in the status repository, one measurement per size.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    pub status_branches: Vec<usize>,
    /// Also run plumb in a Debian node (systemd-nspawn, real systemd) with --files files and
    /// this many units: first apply, no-op pass, idle RSS; then puppet and ansible-pull (on
    /// --ansible-files files) on the same work in the node (unless --skip-peers). 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub units: usize,
    /// Skip ansible-pull and puppet.
    #[arg(long)]
    pub skip_peers: bool,
    /// Also write the report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the work directory (repositories, roots) for inspection.
    #[arg(long)]
    pub keep: bool,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("plumb-bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.files == 0 || args.runs == 0 || args.passes < 2 {
        bail!("--files and --runs must be at least 1, --passes at least 2");
    }
    let plumb = std::fs::canonicalize(&args.plumb).with_context(|| {
        format!(
            "{}: build it with `cargo build --release -p plumb`",
            args.plumb.display()
        )
    })?;
    let work = tempfile::Builder::new()
        .prefix("plumb-bench-")
        .tempdir_in("/var/tmp")
        .context("creating the work directory")?;
    let dir = work.path().to_path_buf();
    eprintln!("plumb-bench: working in {}", dir.display());
    let mut r = report::Report::new(args, &plumb)?;

    let ansible_files = args.ansible_files.unwrap_or(args.files).min(args.files);
    let served = dir.join("served");
    std::fs::create_dir_all(&served)?;
    eprintln!(
        "creating the fleet repository ({} files, {} other branches)",
        args.files, args.branches
    );
    fixture::create_fleet(&served, args.files, ansible_files, args.branches)?;
    fixture::create_templated_fleet(&served, args.files)?;
    let daemon = fixture::GitDaemon::start(&served)?;
    let proxy = proxy::Proxy::start(daemon.addr)?;
    // Hosts push their status to a separate repository with 10 other hosts' branches.
    fixture::status_repo(&served, "status.git", 10)?;
    let status_url = proxy.url("status.git");
    let status = plumb::StatusTo {
        url: &status_url,
        heartbeat: "1h",
    };

    eprintln!("plumb: first apply x{}", args.runs);
    let (first, host) = plumb::first_apply(&plumb, &proxy, &dir, args.files, args.runs, &status)?;
    eprintln!("plumb: no-op pass x{}", args.runs);
    r.noop = Some(plumb::noop_pass(&plumb, &proxy, &host, args.runs)?);
    r.first = Some(first);
    eprintln!(
        "plumb: no-op pass, {} plain vs templated files, x{} each",
        args.files, args.runs
    );
    r.templated = Some(plumb::templated_noop(
        &plumb, &proxy, &dir, args.files, args.runs, &status,
    )?);
    eprintln!("plumb run: {} passes, sampling idle RSS", args.passes);
    r.idle = Some(plumb::idle_rss(
        &plumb,
        &proxy,
        &dir,
        args.files,
        args.passes,
        args.interval,
        &status,
    )?);
    eprintln!("git: no-op fetch over protocol v0 and v2 x{}", args.runs);
    r.git_polls = Some(poll::git_fetches(&proxy, &dir, args.runs)?);
    eprintln!(
        "status push with {:?} status branches",
        args.status_branches
    );
    r.pushes = push::status_pushes(
        &plumb,
        &proxy,
        &served,
        &dir,
        &args.status_branches,
        args.runs,
    )?;

    if args.units > 0 {
        eprintln!("node: {} files and {} units", args.files, args.units);
        r.node = Some(node::run(
            &plumb,
            args.files,
            args.units,
            args.runs,
            args.interval,
            (!args.skip_peers).then_some(node::NodePeers {
                puppet_runs: args.puppet_runs,
                ansible_runs: args.ansible_runs,
                ansible_files,
            }),
        )?);
    }
    if !args.skip_peers {
        if args.puppet.exists() {
            eprintln!("puppet apply ({} files)", args.files);
            r.puppet = Some(peers::puppet(
                &args.puppet,
                &proxy.url("fleet.git"),
                &dir,
                args.files,
                args.puppet_runs,
            )?);
        } else {
            r.notes.push(format!(
                "puppet skipped: {} not found",
                args.puppet.display()
            ));
        }
        match &args.ansible_pull {
            Some(a) if a.exists() => {
                eprintln!("ansible-pull ({ansible_files} files)");
                r.ansible = Some(peers::ansible(
                    a,
                    &proxy.url("fleet.git"),
                    &dir,
                    ansible_files,
                    args.ansible_runs,
                )?);
            }
            _ => r
                .notes
                .push("ansible-pull skipped: no --ansible-pull".into()),
        }
    }

    let text = r.render()?;
    print!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    drop(daemon);
    if args.keep {
        eprintln!("kept {}", work.keep().display());
    }
    Ok(())
}
