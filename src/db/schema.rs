//! Embedded migrations from `sql/migrations`, applied in order, each in its
//! own transaction under an advisory lock so that concurrent `postbox migrate`
//! runs queue up instead of colliding. Each file records its own version in
//! `postbox.schema_migrations`, so `psql -f` and `postbox migrate` agree.

use tokio_postgres::Client;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../../sql/migrations/0001_init.sql") },
    Migration {
        version: 2,
        name: "delivery_history_index",
        sql: include_str!("../../sql/migrations/0002_delivery_history_index.sql"),
    },
    Migration { version: 3, name: "roles", sql: include_str!("../../sql/migrations/0003_roles.sql") },
    Migration {
        version: 4,
        name: "attempts_by_day",
        sql: include_str!("../../sql/migrations/0004_attempts_by_day.sql"),
    },
    Migration {
        version: 5,
        name: "queue_tuning",
        sql: include_str!("../../sql/migrations/0005_queue_tuning.sql"),
    },
    Migration {
        version: 6,
        name: "trust_boundaries",
        sql: include_str!("../../sql/migrations/0006_trust_boundaries.sql"),
    },
    Migration {
        version: 7,
        name: "operator_tools",
        sql: include_str!("../../sql/migrations/0007_operator_tools.sql"),
    },
    Migration {
        version: 8,
        name: "pause_without_loss",
        sql: include_str!("../../sql/migrations/0008_pause_without_loss.sql"),
    },
    Migration {
        version: 9,
        name: "operational_events",
        sql: include_str!("../../sql/migrations/0009_operational_events.sql"),
    },
    Migration {
        version: 10,
        name: "per_key_order",
        sql: include_str!("../../sql/migrations/0010_per_key_order.sql"),
    },
    Migration {
        version: 11,
        name: "rate_limit",
        sql: include_str!("../../sql/migrations/0011_rate_limit.sql"),
    },
    Migration {
        version: 12,
        name: "tenant_tokens",
        sql: include_str!("../../sql/migrations/0012_tenant_tokens.sql"),
    },
];

/// Key for `pg_advisory_xact_lock`: "postbox" in ASCII.
const MIGRATION_LOCK: i64 = 0x0070_6f73_7462_6f78;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migration {version} ({name}) failed: {source}")]
    Migration { version: i32, name: &'static str, source: tokio_postgres::Error },
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
}

/// Applies every migration not yet recorded; returns the versions applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, Error> {
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        if installed_version(&tx).await? >= migration.version {
            continue;
        }
        tx.batch_execute(migration.sql).await.map_err(|source| Error::Migration {
            version: migration.version,
            name: migration.name,
            source,
        })?;
        tx.commit().await?;
        tracing::info!(version = migration.version, name = migration.name, "migration applied");
        applied.push(migration.version);
    }
    Ok(applied)
}

/// The newest version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The newest version installed in the database, 0 when none is.
pub async fn installed_version(client: &impl tokio_postgres::GenericClient) -> Result<i32, Error> {
    let table = client.query_one("select to_regclass('postbox.schema_migrations') is not null", &[]).await?;
    if !table.try_get::<_, bool>(0)? {
        return Ok(0);
    }
    let row =
        client.query_one("select coalesce(max(version), 0) from postbox.schema_migrations", &[]).await?;
    Ok(row.try_get(0)?)
}
