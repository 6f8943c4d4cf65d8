mod cli;

use std::{
    io::{self, Write},
    process::ExitCode,
};

use clap::Parser;

/// The exit status when stdout was closed (`postbox … | head -1`): the one a
/// shell shows for a process that SIGPIPE ended, and no message.
const STDOUT_CLOSED: u8 = 141;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    postbox::telemetry::init(cli.log_format);
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<cli::output::StdoutClosed>() => ExitCode::from(STDOUT_CLOSED),
        Err(err) => {
            // One line: the error and its causes, with no database password
            // and no escape sequence (messages can quote what others wrote).
            let message = postbox::config::mask_passwords_in(&format!("{err:#}"));
            // Nowhere to report a closed stderr (eprintln! would panic).
            let _ = writeln!(io::stderr().lock(), "error: {}", cli::output::escape_lines(&message));
            ExitCode::FAILURE
        }
    }
}
