//! `postbox run` as a real child process, for fault tests: kill -9, SIGSTOP,
//! SIGTERM. Its stderr goes to a file so that tests can read its log.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

pub struct RelayProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl RelayProcess {
    /// Starts `postbox run` against `database_url` with loopback allowed and
    /// the given `POSTBOX_*` settings.
    pub fn start(database_url: &str, settings: &[(&str, &str)]) -> Self {
        let binary =
            std::env::var("POSTBOX_RELAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_postbox").to_owned());
        Self::start_binary(std::path::Path::new(&binary), database_url, settings)
    }

    /// Like [`RelayProcess::start`], with another `postbox` binary (an
    /// earlier release, say).
    pub fn start_binary(binary: &std::path::Path, database_url: &str, settings: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!("postbox-relay-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(binary);
        command
            .arg("run")
            .env_remove("DATABASE_URL")
            .env("POSTBOX_DATABASE__URL", database_url)
            .env("POSTBOX_NETWORK__ALLOW_PRIVATE", "true")
            .env("POSTBOX_ADMIN__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create relay log"));
        for (key, value) in settings {
            command.env(key, value);
        }
        Self { child: Some(command.spawn().expect("start postbox run")), log }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.child.as_mut().expect("running").wait().expect("reap killed relay");
    }

    /// Waits for the process to exit on its own, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `attempts=N` of the "deliverer stopped" line, if it got that far.
    pub fn attempts_made(&self) -> Option<u64> {
        let log = self.log_text();
        let line = log.lines().find(|l| l.contains("deliverer stopped"))?;
        line.split_whitespace().find_map(|field| field.strip_prefix("attempts=")?.parse().ok())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A child process's output, line by line, for tests that wait on what it prints.
pub struct OutputLines {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl OutputLines {
    /// Takes the child's piped stdout (and stderr, if piped: its lines start `stderr: `).
    pub fn of(child: &mut Child) -> Self {
        use std::io::{BufRead, BufReader};
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        if let Some(stderr) = child.stderr.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(format!("stderr: {line}"));
                }
            });
        }
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Self { lines, seen: Vec::new() }
    }

    /// The next line containing `needle`; panics with all output so far after `limit`.
    pub async fn line_with(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                _ => panic!("no line with {needle:?} within {limit:?}; output:\n{}", self.seen.join("\n")),
            }
        }
    }
}
