//! `postbox dev`: everything on one machine without Docker. A throwaway
//! PostgreSQL, the schema, the relay with its web page, and an echo receiver
//! subscribed to every event that prints what it gets. Ctrl-C removes it all.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use axum::{body::Bytes, http::HeaderMap, http::StatusCode, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::output;
use postbox::{
    config::{Secret, Settings},
    db::{self, localpg::LocalPostgres, schema},
    delivery::signing::{self, SigningKey},
};

#[derive(Debug, clap::Args)]
pub struct Dev {
    /// Directory of the PostgreSQL server binaries (initdb, pg_ctl); found
    /// with pg_config or under /usr/lib/postgresql when not given
    #[arg(long, value_name = "DIR")]
    pg_bindir: Option<PathBuf>,
}

/// A fixed secret keeps the printed instructions short; this is a sandbox.
const DEV_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub async fn run(dev: Dev, mut settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    if settings.database.url.is_some() {
        output::line("postbox dev: it runs a throwaway database of its own; DATABASE_URL and --database-url are not used")?;
    }
    let bindir = dev.pg_bindir.clone();
    let mut postgres = tokio::task::spawn_blocking(move || LocalPostgres::start(bindir.as_deref()))
        .await?
        .context("cannot start a local PostgreSQL")?;
    let outcome = serve(&postgres, &mut settings, shutdown).await;
    tokio::task::spawn_blocking(move || postgres.remove()).await?;
    outcome.and(output::line("postbox dev: stopped; the database and its files are gone"))
}

async fn serve(
    postgres: &LocalPostgres,
    settings: &mut Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let url = postgres.url();
    let mut client = db::connect(&url).await.context("cannot connect to the local PostgreSQL")?;
    schema::migrate(&mut client).await?;

    settings.database.url = Some(Secret::new(url.clone()));
    // Loopback alone does not keep other users of this machine out of the
    // API: a fresh token each run, printed below, unless one is configured.
    if settings.admin.token.is_none() {
        let bytes: [u8; 24] = rand::random();
        settings.admin.token =
            Some(Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    }
    // The echo receiver is on loopback; publish that before subscribing it.
    settings.network.allow_private = true;
    let notify = settings.relay.wakeup == postbox::config::Wakeup::Notify;
    postbox::publish_relay_settings(&client, settings, notify).await?;

    let receiver = TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/", receiver.local_addr()?);
    client
        .batch_execute(
            "select postbox.register_event_type('order.created', 'An order was placed (an example)')",
        )
        .await?;
    client.execute("select postbox.subscribe($1, secret => $2)", &[&receiver_url, &DEV_SECRET]).await?;
    let stop_echo = shutdown.clone();
    let stop_all = shutdown.clone();
    let echo = tokio::spawn(async move {
        let print = move |headers, body| echo(headers, body, stop_all.clone());
        axum::serve(receiver, Router::new().fallback(print))
            .with_graceful_shutdown(stop_echo.cancelled_owned())
            .await
    });

    let relay = match postbox::Relay::bind(settings.clone()).await {
        // Another program has the admin port (8080 is popular): any free port will do here.
        Err(postbox::Error::Listen { address, .. }) => {
            output::line(format_args!(
                "postbox dev: {address} is taken; serving the web page on another port"
            ))?;
            settings.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            postbox::Relay::bind(settings.clone()).await?
        }
        relay => relay?,
    };
    let token = settings.admin.token.as_ref().map(|t| t.expose().to_owned()).unwrap_or_default();
    print_welcome(postgres, &relay.admin_addr(), &token, &receiver_url)?;
    relay.run(shutdown).await?;
    echo.await??;
    Ok(())
}

fn print_welcome(
    postgres: &LocalPostgres,
    admin: &SocketAddr,
    token: &str,
    receiver: &str,
) -> anyhow::Result<()> {
    let url = postgres.url();
    output::line(format_args!(
        r#"
postbox dev is running; Ctrl-C stops it and removes everything it made.

  database   {url}
             (a throwaway server, files in {dir})
  web page   http://{admin}/
  token      {token}
             (the page asks for it once; the API takes Authorization: Bearer)
  receiver   {receiver} (prints every webhook; subscribed to *)

Try:
  psql "{url}" -c "select postbox.emit('order.created', '{{\"id\": 1, \"total\": 1250}}')"
  DATABASE_URL="{url}" postbox deliveries list
  open http://{admin}/ to see the delivery and its attempts
"#,
        dir = postgres.dir().display(),
    ))
}

/// Prints each webhook, checking its signature as a receiver would. With
/// nowhere left to print, `postbox dev` stops.
async fn echo(headers: HeaderMap, body: Bytes, shutdown: CancellationToken) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let key = SigningKey::from_secret(DEV_SECRET).expect("the dev secret is valid");
    let verified = header("webhook-timestamp").parse().is_ok_and(|timestamp| {
        signing::verify(&key, header("webhook-id"), timestamp, &body, header("webhook-signature"))
    });
    let printed = output::line(format_args!(
        "receiver: {} {} {} attempt {}: {}",
        if verified { "verified" } else { "UNVERIFIED" },
        header("postbox-event-type"),
        header("webhook-id"),
        header("postbox-attempt"),
        String::from_utf8_lossy(&body),
    ));
    if printed.is_err() {
        shutdown.cancel();
    }
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    }
}
