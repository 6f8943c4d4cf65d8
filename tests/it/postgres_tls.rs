//! TLS to PostgreSQL with libpq's sslmode meanings, against a private cluster
//! serving a certificate from a test CA (made with the openssl command).

use std::{path::Path, process::Command};

use postbox::db::localpg::LocalPostgres;
use serde_json::json;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A self-signed CA certificate `<name>.pem` with its key `<name>.key`.
fn make_ca(dir: &Path, name: &str, subject: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let ca = "basicConstraints=critical,CA:TRUE";
    let usage = "keyUsage=critical,keyCertSign,cRLSign";
    let args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject];
    openssl(dir, &[&args[..], &["-keyout", &key, "-out", &pem, "-addext", ca, "-addext", usage]].concat());
}

/// Two CAs, and a server certificate the first signed for the name `localhost` only.
fn make_certificates(dir: &Path) {
    make_ca(dir, "ca", "/CN=postbox test CA");
    make_ca(dir, "other-ca", "/CN=another CA");
    let request = ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"];
    openssl(dir, &[&request[..], &["-keyout", "server.key", "-out", "server.csr"]].concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let sign = ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
    openssl(dir, &[&sign[..], &["-out", "server.crt", "-days", "2", "-extfile", "server.ext"]].concat());
}

async fn encrypted(url: &str) -> Result<bool, String> {
    let client = postbox::db::connect(url).await.map_err(|err| format!("{err:?}"))?;
    let row =
        client.query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[]).await.unwrap();
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_mean_what_they_mean_in_libpq_and_the_relay_runs_over_tls() {
    let cluster = LocalPostgres::start(None).expect("a private PostgreSQL cluster starts");
    let dir = cluster.dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    // The server refuses a key that others can read; as root it runs as another user.
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let owner = std::fs::metadata(cluster.dir()).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    std::os::unix::fs::chown(&key, Some(owner), None).unwrap();
    let setup = postbox::db::connect(&format!("{}?sslmode=disable", cluster.url())).await.unwrap();
    // One statement each: ALTER SYSTEM refuses to run in a transaction block.
    for statement in [
        "alter system set ssl = on".to_owned(),
        format!("alter system set ssl_cert_file = '{}'", dir.join("server.crt").display()),
        format!("alter system set ssl_key_file = '{}'", key.display()),
        "select pg_reload_conf()".to_owned(),
    ] {
        setup.simple_query(&statement).await.unwrap();
    }
    let setup_pid: i32 = setup.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    let port = cluster.port();
    let ca = dir.join("ca.pem").display().to_string();
    let other_ca = dir.join("other-ca.pem").display().to_string();
    let by_ip = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let by_name = format!("postgres://postgres@localhost:{port}/postgres");

    assert_eq!(encrypted(&by_ip).await, Ok(true), "prefer (the default) encrypts when offered");
    assert_eq!(encrypted(&format!("{by_ip}?sslmode=disable")).await, Ok(false));
    assert_eq!(
        encrypted(&format!("{by_ip}?sslmode=require")).await,
        Ok(true),
        "require checks no certificate"
    );
    assert_eq!(encrypted(&format!("{by_ip}?sslmode=verify-ca&sslrootcert={ca}")).await, Ok(true));
    assert_eq!(encrypted(&format!("{by_name}?sslmode=verify-full&sslrootcert={ca}")).await, Ok(true));
    let wrong_name = encrypted(&format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}")).await.unwrap_err();
    assert!(wrong_name.contains("NotValidForName"), "the certificate is for localhost only: {wrong_name}");
    let wrong_ca =
        encrypted(&format!("{by_name}?sslmode=verify-ca&sslrootcert={other_ca}")).await.unwrap_err();
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");
    let require_with_root = encrypted(&format!("{by_name}?sslmode=require&sslrootcert={other_ca}")).await;
    assert!(require_with_root.is_err(), "require with sslrootcert verifies the chain, as libpq does");
    let missing =
        encrypted(&format!("{by_name}?sslmode=verify-ca&sslrootcert=/nonexistent.pem")).await.unwrap_err();
    assert!(missing.contains("nonexistent.pem"), "{missing}");

    // The relay, its pool and its LISTEN connection, all verified.
    let url = format!("{by_name}?sslmode=verify-full&sslrootcert={ca}");
    let mut client = postbox::db::connect(&url).await.unwrap();
    postbox::db::schema::migrate(&mut client).await.unwrap();
    let mut receiver = Receiver::start().await;
    client
        .batch_execute(
            "select postbox.register_event_type('a.b');
             update postbox.network_policy set allow_private = true; -- the receiver is on loopback",
        )
        .await
        .unwrap();
    client.execute("select postbox.subscribe($1)", &[&receiver.url("/")]).await.unwrap();
    let relay = InProcessRelay::start(test_settings(&url, &[])).await;
    client.execute("select postbox.emit('a.b', $1)", &[&json!({"over": "tls"})]).await.unwrap();
    assert_eq!(receiver.recv().await.json()["data"], json!({"over": "tls"}));
    let plain: i64 = client
        .query_one(
            "select count(*) from pg_stat_activity a join pg_stat_ssl s using (pid)
             where a.application_name like 'postbox%' and not s.ssl and a.pid <> $1",
            &[&setup_pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "every relay connection is encrypted");
    relay.stop().await;
}
