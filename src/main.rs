//! `trailbook`: parse the command line, set up logging and the runtime, run, and exit with the
//! failure's code (2 for what the user must fix, 1 otherwise). The commands live in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use trailbook::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::telemetry::init(cli.is_service());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(trailbook::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
