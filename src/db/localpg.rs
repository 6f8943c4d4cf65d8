//! A throwaway PostgreSQL server from the installed binaries, for `postbox
//! dev` and for tests that restart the server. It lives in a temporary
//! directory, listens on 127.0.0.1 with trust authentication, and is removed
//! on [`LocalPostgres::remove`] or drop.
//!
//! initdb refuses to run as root, so as root the server runs as the
//! `postgres` user (or `nobody`) through runuser.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no PostgreSQL server binaries found: install PostgreSQL (initdb, pg_ctl), \
         or name their directory (e.g. /usr/lib/postgresql/15/bin)"
    )]
    NoBinaries,
    #[error(
        "{dir} has no {program}: give the directory that holds PostgreSQL's server programs \
         (`pg_config --bindir` prints it)"
    )]
    NotInBindir { dir: PathBuf, program: &'static str },
    #[error("{program} failed: {output}")]
    Failed { program: String, output: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct LocalPostgres {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// The unprivileged user the server runs as when we are root.
    run_as: Option<&'static str>,
    removed: bool,
}

impl LocalPostgres {
    /// Creates and starts a new cluster. `bindir`: where initdb and pg_ctl
    /// live; found with pg_config or under /usr/lib/postgresql when `None`.
    pub fn start(bindir: Option<&Path>) -> Result<Self, Error> {
        let bindir = match bindir {
            Some(dir) => dir.to_owned(),
            None => find_bindir().ok_or(Error::NoBinaries)?,
        };
        for program in ["initdb", "pg_ctl", "postgres"] {
            if !bindir.join(program).exists() {
                return Err(Error::NotInBindir { dir: bindir, program });
            }
        }
        let mut cluster = Self::new_dir(bindir)?;
        let data = cluster.data();
        cluster.run("initdb", ["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])?;
        if let Err(err) = cluster.up() {
            cluster.remove();
            return Err(err);
        }
        Ok(cluster)
    }

    /// A streaming standby of `primary`, from a base backup of it, started
    /// and following it (pg_basebackup -R writes the connection to follow).
    pub fn standby_of(primary: &LocalPostgres) -> Result<Self, Error> {
        let mut standby = Self::new_dir(primary.bindir.clone())?;
        let (data, source_port) = (standby.data(), primary.port.to_string());
        let backup = standby.run(
            "pg_basebackup",
            [
                "-h",
                "127.0.0.1",
                "-p",
                &source_port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        if let Err(err) = backup.and_then(|()| standby.up()) {
            standby.remove();
            return Err(err);
        }
        Ok(standby)
    }

    /// Makes a standby the primary, and waits until it is.
    pub fn promote(&self) -> Result<(), Error> {
        self.run("pg_ctl", ["-D", &self.data(), "-w", "promote"])
    }

    /// A new directory for a cluster, owned by the user the server runs as,
    /// and a free port for it; nothing in it yet.
    fn new_dir(bindir: PathBuf) -> Result<Self, Error> {
        let dir = std::env::temp_dir().join(format!("postbox-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let run_as = is_root().then(unprivileged_user);
        let cluster = Self { dir, bindir, port, run_as, removed: false };
        if let Some(user) = run_as {
            output_of("chown", Command::new("chown").arg(user).arg(&cluster.dir))?;
        }
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn up(&self) -> Result<(), Error> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = format!("{}/server.log", self.dir.display());
        self.run("pg_ctl", ["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"])
    }

    /// Stops the server; `mode` is pg_ctl's: "smart", "fast" or "immediate".
    pub fn down(&self, mode: &str) -> Result<(), Error> {
        self.run("pg_ctl", ["-D", &self.data(), "-m", mode, "-w", "stop"])
    }

    /// Stops the server if it runs and deletes its directory.
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        if self.dir.join("data/postmaster.pid").exists() {
            let _ = self.down("fast");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.display())
    }

    /// Runs a server binary, as the unprivileged user when we are root. In a
    /// process group of its own, so that a Ctrl-C meant for `postbox dev`
    /// does not reach the server before the relay has let go of it.
    fn run<const N: usize>(&self, program: &str, args: [&str; N]) -> Result<(), Error> {
        let binary = self.bindir.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command.args(args).process_group(0);
        output_of(program, &mut command)
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.remove();
    }
}

fn output_of(program: &str, command: &mut Command) -> Result<(), Error> {
    // stdout and stderr are files, not pipes: pg_ctl's server inherits them
    // and would hold a pipe open after pg_ctl returns.
    let log = tempfile_path(program);
    let file = std::fs::File::create(&log)?;
    let status = command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).status()?;
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed { program: program.to_owned(), output: output.trim().to_owned() })
    }
}

fn tempfile_path(program: &str) -> PathBuf {
    std::env::temp_dir().join(format!("postbox-{program}-{}.out", uuid::Uuid::new_v4().simple()))
}

/// `pg_config --bindir`, else the newest /usr/lib/postgresql/<version>/bin.
fn find_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| dir.join("initdb").exists());
    from_pg_config.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| bin.join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

fn is_root() -> bool {
    // The owner of /proc/self is this process's effective user.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn unprivileged_user() -> &'static str {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let has = |name: &str| passwd.lines().any(|line| line.split(':').next() == Some(name));
    if has("postgres") {
        "postgres"
    } else {
        "nobody"
    }
}
