use clap::Parser;

fn main() {
    let cli = plumb::cli::Cli::parse();
    plumb::logging::init(cli.verbose);
    // The process's one runtime: the command runs on its blocking pool, this thread drives it.
    let result = plumb::host::runtime::build()
        .and_then(|rt| plumb::host::runtime::run_blocking(&rt, move || plumb::cli::run(cli)))
        .and_then(|r| r);
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("plumb: error: {e:#}");
            std::process::exit(1);
        }
    }
}
