//! The outbound network policy against listeners really bound on inward
//! addresses, inside a network namespace this test makes for itself.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use postbox::{
    delivery::sender::Sender,
    relay::{deliverer::Deliverer, dispatcher::Dispatcher},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_postgres::Client;

use crate::support::{app::test_settings, TestDb};

/// Addresses given to the namespace's loopback interface.
const INWARD: &[&str] = &[
    "10.0.0.1/32",
    "172.16.0.1/32",
    "192.168.1.1/32",
    "100.64.0.1/32",
    "169.254.169.254/32",
    "168.63.129.16/32",
    "fd00:ec2::254/128",
    "fc00::1/128",
];

/// Runs `scenario` on a thread of its own inside a new network namespace
/// whose loopback interface also carries the `INWARD` addresses.
fn in_network_namespace<F, Fut>(scenario: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "cannot make a network namespace (needs root or CAP_SYS_ADMIN): {}",
            std::io::Error::last_os_error()
        );
        // Child processes start in the spawning thread's namespace.
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip").args(args).status().expect("run ip (iproute2)");
            assert!(status.success(), "ip {args:?} failed");
        };
        ip(&["link", "set", "lo", "up"]);
        for cidr in INWARD {
            ip(&["addr", "add", cidr, "dev", "lo"]);
        }
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(scenario())
    });
    match thread.join() {
        Ok(output) => output,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A listener that answers 200 to every request and counts connections.
async fn counting_listener(ip: IpAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, connections)
}

struct Target {
    url: String,
    connections: Arc<AtomicUsize>,
    /// Whether a control run with everything allowed reaches the listener.
    reachable: bool,
}

async fn targets() -> Vec<Target> {
    let mut targets = Vec::new();
    let mut add = |url: String, connections: &Arc<AtomicUsize>, reachable: bool| {
        targets.push(Target { url, connections: Arc::clone(connections), reachable });
    };
    let (v4, loopback) = counting_listener("127.0.0.1".parse().unwrap()).await;
    let p = v4.port();
    for url in [
        format!("http://127.0.0.1:{p}/"),
        format!("http://127.1:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://0x7f000001:{p}/"),
        format!("http://0177.0.0.1:{p}/"),
        format!("http://localhost:{p}/"),
    ] {
        add(url, &loopback, true);
    }
    // v4-mapped IPv6 reaches the IPv4 listener only on a dual-stack socket
    add(format!("http://[::ffff:127.0.0.1]:{p}/"), &loopback, false);
    for ip in ["10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "168.63.129.16"] {
        let (addr, connections) = counting_listener(ip.parse().unwrap()).await;
        add(format!("http://{addr}/"), &connections, true);
    }
    for ip in ["::1", "fd00:ec2::254", "fc00::1"] {
        let (addr, connections) = counting_listener(ip.parse().unwrap()).await;
        add(format!("http://{addr}/"), &connections, true);
    }
    let (any, connections) = counting_listener("0.0.0.0".parse().unwrap()).await;
    add(format!("http://0.0.0.0:{}/", any.port()), &connections, true);
    targets
}

/// Emits one event to every endpoint and attempts each delivery once under
/// the given settings. Returns each endpoint's (url, response_status, error).
async fn deliver_once(
    db_url: &str,
    sql: &Client,
    overrides: &[(&str, &str)],
) -> Vec<(String, Option<i32>, Option<String>)> {
    let mut overrides = overrides.to_vec();
    overrides.push(("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s"));
    let settings = test_settings(db_url, &overrides);
    let pool = postbox::db::pool(db_url, 4).unwrap();
    let dispatcher = Dispatcher::new(pool.clone(), settings.dispatcher_config(), Default::default());
    let sender = Sender::new(settings.sender_config()).unwrap();
    let deliverer = Deliverer::new(pool, sender, settings.deliverer_config(), Default::default());
    let event: uuid::Uuid =
        sql.query_one("select postbox.emit('probe.sent', '{}')", &[]).await.unwrap().get(0);
    dispatcher.run_once().await.unwrap();
    while deliverer.run_once().await.unwrap() > 0 {}
    sql.query(
        "select e.url, a.response_status, a.error from postbox.deliveries d
         join postbox.endpoints e on e.id = d.endpoint_id
         join postbox.attempts a on a.delivery_id = d.id
         where d.event_id = $1 order by e.created_at, e.url",
        &[&event],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn inward_addresses_are_refused_in_every_spelling_and_their_listeners_see_nothing() {
    let db = TestDb::new().await;
    let db_url = db.socket_url();
    in_network_namespace(move || async move {
        let sql = postbox::db::connect(&db_url).await.expect("connect over the Unix socket");
        // Subscribing refuses these URLs (see sql_functions); the relay must
        // refuse them too, for endpoints written around that check.
        sql.batch_execute(
            "select postbox.register_event_type('probe.sent');
             alter table postbox.endpoints disable trigger endpoints_validate;",
        )
        .await
        .unwrap();
        let targets = targets().await;
        for target in &targets {
            sql.execute(
                "insert into postbox.endpoints (url, secret) values ($1, postbox.generate_secret())",
                &[&target.url],
            )
            .await
            .unwrap_or_else(|e| panic!("insert endpoint {}: {e}", target.url));
        }

        // Default policy: every target refused before any connection.
        let results = deliver_once(&db_url, &sql, &[("POSTBOX_NETWORK__ALLOW_PRIVATE", "false")]).await;
        assert_eq!(results.len(), targets.len());
        for (url, status, error) in &results {
            assert_eq!(*status, None, "{url} got a response");
            let error = error.as_deref().unwrap_or_default();
            assert!(error.contains("refused by network policy"), "{url}: {error}");
        }
        for target in &targets {
            assert_eq!(target.connections.load(Ordering::SeqCst), 0, "{} saw a connection", target.url);
        }
        println!("refused {} inward targets with 0 connections", results.len());

        // Control: with everything allowed the same listeners answer, so the
        // zero above means refused, not unreachable.
        let results = deliver_once(&db_url, &sql, &[("POSTBOX_NETWORK__ALLOW_PRIVATE", "true")]).await;
        for target in targets.iter().filter(|t| t.reachable) {
            let (_, status, error) = results.iter().find(|(url, ..)| *url == target.url).unwrap();
            assert_eq!(*status, Some(200), "{} unreachable in the control run: {error:?}", target.url);
            assert!(target.connections.load(Ordering::SeqCst) > 0);
        }

        // An allowlist opens its networks only.
        let results = deliver_once(
            &db_url,
            &sql,
            &[("POSTBOX_NETWORK__ALLOW_PRIVATE", "false"), ("POSTBOX_NETWORK__ALLOW_CIDRS", "10.0.0.0/8")],
        )
        .await;
        for (url, status, error) in &results {
            if url.starts_with("http://10.0.0.1:") {
                assert_eq!(*status, Some(200), "{url}: {error:?}");
            } else {
                assert!(error.as_deref().unwrap_or_default().contains("refused by network policy"), "{url}");
            }
        }
    });
}
