//! Logging setup: human-readable or JSON lines, filtered by `RUST_LOG`
//! (default `info`).

use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// tokio-postgres logs every query's parameters at debug level, and ours carry
/// response bodies and signed headers: it stays at info unless `RUST_LOG`
/// names it explicitly.
const QUIET_DRIVER: &str = "tokio_postgres=info";

pub fn init(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let mut filter = EnvFilter::new(&directives);
    if !directives.contains("tokio_postgres") {
        filter = filter.add_directive(QUIET_DRIVER.parse().expect("a valid directive"));
    }
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
