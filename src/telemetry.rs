//! Logging setup: human-readable or JSON lines, filtered by `RUST_LOG`
//! (default `info`).

use std::io::{self, Write};

use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// tokio-postgres logs every query's parameters at debug level, and ours carry
/// response bodies and signed headers; at info it logs every server NOTICE,
/// which postbox reports in its own words. It stays at warn unless `RUST_LOG`
/// names it explicitly.
const QUIET_DRIVER: &str = "tokio_postgres=warn";

pub fn init(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let mut filter = EnvFilter::new(&directives);
    if !directives.contains("tokio_postgres") {
        filter = filter.add_directive(QUIET_DRIVER.parse().expect("a valid directive"));
    }
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// stderr that drops what it cannot write. tracing-subscriber reports a failed
/// write with eprintln!, which panics when stderr is a closed pipe (`postbox
/// run 2>&1 | head`), in whichever task was logging: the signal handler's
/// panic left `postbox run` deaf to SIGTERM.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
