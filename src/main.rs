//! The `edgellm` binary: parses the command line and dispatches. Everything else is in the library.

use clap::Parser;
use edgellm::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before any HTTP client is built (reqwest needs rustls's crypto provider chosen).
    edgellm::upstream::install_crypto_provider();
    let result = match &cli.command {
        Command::Run(args) => edgellm::run::run(args),
        Command::Serve(args) => edgellm::serve::run(args),
        Command::Plan(args) => edgellm::plan::run(args, &edgellm::paths::default_model()),
        Command::Bench(args) => edgellm::bench::run(args, &edgellm::paths::default_model()),
        Command::Status(args) => edgellm::status::run(args),
        Command::Usage(args) => edgellm::usage::usage(args),
        Command::Audit(args) => edgellm::usage::audit(args),
        Command::Task(args) => edgellm::task_cli::run(args),
        Command::Model(args) => edgellm::model::run(args),
        Command::Pack(args) => edgellm::pack::run(args),
        Command::Redact(args) => edgellm::redact_cli::run(args),
        Command::Calibrate(args) => edgellm::calibrate::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error and its causes.
            let causes: Vec<String> = error.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", causes.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}
