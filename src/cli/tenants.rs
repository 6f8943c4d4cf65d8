//! `postbox tenants …`: tenant tokens, for an app's customer portal.

use clap::Subcommand;
use tokio_postgres::Client;

use super::{output, ACCESS};
use postbox::admin::tenant_tokens::{self, NewTenantToken};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a short-lived token that sees and manages only TENANT's endpoints
    /// and deliveries (API and web page: open /?token=TOKEN)
    Token {
        /// The tenant, as endpoints.tenant and outbox.tenant hold it
        tenant: String,
        /// How long the token works: 15m, 1h, 7d (at most 30d)
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        expires: String,
    },
}

pub async fn run(client: &Client, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Token { tenant, expires } => {
            let new = NewTenantToken { tenant, expires_in: Some(expires) };
            let minted = tenant_tokens::mint(client, ACCESS.require_admin()?, &new).await?;
            if json {
                return output::json(&minted);
            }
            // The token alone on the first line, for `| head -1`.
            output::line(&minted.token)?;
            output::line(format_args!("tenant {:?}, expires at {}", minted.tenant, minted.expires_at))
        }
    }
}
