use clap::Parser;

fn main() {
    let cli = plumb::cli::Cli::parse();
    plumb::logging::init();
    match plumb::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("plumb: error: {e:#}");
            std::process::exit(1);
        }
    }
}
