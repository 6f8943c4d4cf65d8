mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    postbox::telemetry::init(cli.log_format);
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, with no database password.
            eprintln!("error: {}", postbox::config::mask_passwords_in(&format!("{err:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
