//! A real PgBouncer in front of a test database, on a free loopback port,
//! with trust authentication. As root it runs as an unprivileged user
//! (PgBouncer refuses to run as root).

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

pub struct PgBouncer {
    pub port: u16,
    database: String,
    user: String,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// Starts PgBouncer with `pool_mode` ("session" or "transaction") and at
    /// most `pool_size` server connections, in front of `database_url`.
    pub async fn start(database_url: &str, pool_mode: &str, pool_size: u32) -> Self {
        assert!(
            Path::new(PGBOUNCER).exists(),
            "the PgBouncer tests need pgbouncer: apt-get install pgbouncer (.ci/run installs it)"
        );
        let upstream = url::Url::parse(database_url).expect("test database URL is a postgres:// URL");
        let database = upstream.path().trim_start_matches('/').to_owned();
        let user = upstream.username().to_owned();
        let password = upstream.password().map(|p| format!(" password={p}")).unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("postbox-pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "[databases]\n\
             {database} = host={host} port={upstream_port} dbname={database} user={user}{password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/users.txt\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 200\n",
            host = upstream.host_str().unwrap_or("127.0.0.1"),
            upstream_port = upstream.port().unwrap_or(5432),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let log = dir.join("pgbouncer.log");
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", unprivileged_user(), "--", PGBOUNCER]);
            command
        } else {
            Command::new(PGBOUNCER)
        };
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("pgbouncer starts");
        let mut bouncer = Self { port, database, user, dir, child };
        bouncer.wait_until_listening().await;
        bouncer
    }

    /// The database through PgBouncer.
    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", self.user, self.port, self.database)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    async fn wait_until_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited ({status}):\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pgbouncer not listening within 10 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child (runuser and pgbouncer).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn unprivileged_user() -> &'static str {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|line| line.starts_with("postgres:")) {
        "postgres"
    } else {
        "nobody"
    }
}
