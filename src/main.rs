//! The `edgellm` binary: parses the command line and dispatches. Everything else is in the library.

use clap::Parser;
use edgellm::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    // tpm2-tss logs every TPM error code to stderr on its own; edgellm reports each failure in
    // one line of its own (a PCR mismatch, say). A TSS2_LOG the user set is kept.
    if std::env::var_os("TSS2_LOG").is_none() {
        // SAFETY: the first statement of main: no other thread exists yet to read the
        // environment concurrently.
        unsafe { std::env::set_var("TSS2_LOG", "all+NONE") };
    }
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
        Command::Key(args) => edgellm::vault::cli::run(args),
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
