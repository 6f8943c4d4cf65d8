//! A private PostgreSQL cluster for tests that stop and restart the server.
//! initdb refuses root, so when run as root the server runs as `postgres`.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn start() -> Self {
        let bindir = PathBuf::from(
            String::from_utf8(Command::new("pg_config").arg("--bindir").output().expect("pg_config").stdout)
                .unwrap()
                .trim(),
        );
        let dir = std::env::temp_dir().join(format!("postbox-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = Self { dir, bindir, port };
        if is_root() {
            let status =
                Command::new("chown").args(["postgres:postgres"]).arg(&cluster.dir).status().unwrap();
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        cluster.run(
            "initdb",
            &["-D", &cluster.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        );
        cluster.up();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let log = format!("{}/server.log", self.dir.display());
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    /// `mode`: "fast" or "immediate".
    pub fn down(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"]);
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.display())
    }

    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bindir.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        let output =
            command.args(args).stdin(Stdio::null()).output().expect("run a PostgreSQL server binary");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "sh" })
            .args(if is_root() { vec!["-u", "postgres", "--"] } else { vec!["-c"] })
            .arg(self.bindir.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
