//! `postbox dev`: a throwaway PostgreSQL, the relay, its page and an echo
//! receiver, all gone after Ctrl-C.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::process::OutputLines;

/// initdb included.
const START_LIMIT: Duration = Duration::from_secs(60);

/// `postbox dev` as a child in its own process group. If the test fails
/// midway, Ctrl-C it on drop so that its PostgreSQL goes too.
struct Dev(Option<std::process::Child>);

impl Drop for Dev {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
        for _ in 0..200 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_everything_locally_and_ctrl_c_removes_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut dev = Dev(Some(
        Command::new(env!("CARGO_BIN_EXE_postbox"))
            .arg("dev")
            .env_remove("DATABASE_URL")
            // Taken, as 8080 often is on a developer's machine: dev picks another port.
            .env("POSTBOX_ADMIN__LISTEN", taken.local_addr().unwrap().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, like a shell job, so Ctrl-C can go to the group.
            .process_group(0)
            .spawn()
            .expect("postbox dev starts"),
    ));
    let mut output = OutputLines::of(dev.0.as_mut().unwrap());

    let database = output.line_with("database ", START_LIMIT).await;
    let url = database.split_whitespace().last().unwrap().to_owned();
    let files = output.line_with("files in ", START_LIMIT).await;
    let dir = PathBuf::from(files.trim().trim_end_matches(')').rsplit(' ').next().unwrap());
    assert!(dir.exists(), "{dir:?}");
    let page = output.line_with("web page", START_LIMIT).await;
    let page = page.split_whitespace().last().unwrap().to_owned();
    let token = output.line_with("token ", START_LIMIT).await.split_whitespace().last().unwrap().to_owned();
    assert!(token.len() >= 32, "a random admin token: {token}");
    output.line_with("psql", START_LIMIT).await;

    // The first line to try, as a user would run it.
    let client = postbox::db::connect(&url).await.expect("the printed connection string works");
    client.execute("select postbox.emit('order.created', '{\"id\": 1}')", &[]).await.unwrap();
    let received = output.line_with("receiver: verified order.created", START_LIMIT).await;
    assert!(received.contains(r#""data":{"id": 1}"#), "{received}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let html = reqwest::get(&page).await.unwrap();
    assert_eq!(html.status(), 200, "the web page is served at {page}");
    let http = reqwest::Client::new();
    let api = format!("{page}api/v1/endpoints");
    assert_eq!(http.get(&api).send().await.unwrap().status(), 401, "the API needs the printed token");
    let listed = http.get(&api).bearer_auth(&token).send().await.unwrap();
    assert_eq!(listed.status(), 200, "and takes it");
    drop(client);

    // Ctrl-C reaches the whole foreground process group; everything it made goes away.
    // SAFETY: kill(2) on our own child's process group.
    let mut child = dev.0.take().unwrap();
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    output.line_with("stopped", START_LIMIT).await;
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "postbox dev exits 0 after Ctrl-C: {status}");
    assert!(!dir.exists(), "{dir:?} removed");
    assert!(postbox::db::connect(&url).await.is_err(), "the server is gone");
}
