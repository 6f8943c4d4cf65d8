//! Embedded migrations from `sql/migrations`, applied in order, each in its
//! own transaction under an advisory lock so that concurrent `postbox migrate`
//! runs queue up instead of colliding. Each file records its own version in
//! `postbox.schema_migrations`, so `psql -f` and `postbox migrate` agree.

use std::time::Duration;

use tokio_postgres::{error::SqlState, Client, Transaction};

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
    Migration {
        version: 13,
        name: "first_attempts_from_outbox",
        sql: include_str!("../../sql/migrations/0013_first_attempts_from_outbox.sql"),
    },
    Migration {
        version: 14,
        name: "attempts_by_time_brin_only",
        sql: include_str!("../../sql/migrations/0014_attempts_by_time_brin_only.sql"),
    },
];

/// Key for `pg_advisory_xact_lock`: "postbox" in ASCII.
const MIGRATION_LOCK: i64 = 0x0070_6f73_7462_6f78;

/// The group roles migration 3 creates and later migrations grant to.
pub const ROLES: [&str; 3] = ["postbox_writer", "postbox_relay", "postbox_admin"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migration {version} ({name}) failed: {source}")]
    Migration { version: i32, name: &'static str, source: tokio_postgres::Error },
    #[error("{0}")]
    Privileges(String),
    #[error("granting to the postbox roles (deferred by --skip-roles) failed on `{statement}`: {source}")]
    Deferred { statement: String, source: tokio_postgres::Error },
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Install without the group roles: the statements that create them or
    /// grant to them wait in `postbox.deferred_grants` until a later
    /// `postbox migrate` (without this option) finds the roles or may create
    /// them. Until then everything runs as the schema's owner.
    pub skip_roles: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Role statements this run deferred.
    pub deferred: usize,
    /// Statements deferred earlier that this run applied.
    pub granted: usize,
}

/// Applies every migration not yet recorded; returns the versions applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, Error> {
    Ok(migrate_with(client, Options::default()).await?.applied)
}

/// [`migrate`], checking first that the connected role has what the pending
/// migrations need (managed databases give no superuser, sometimes no
/// CREATEROLE), and optionally installing without the group roles.
pub async fn migrate_with(client: &mut Client, options: Options) -> Result<Report, Error> {
    let mut report = Report::default();
    let tx = client.transaction().await?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    let plan = preflight(&tx, options).await?;
    if plan.replay {
        report.granted = replay_deferred(&tx).await?;
    }
    tx.commit().await?;
    for migration in MIGRATIONS {
        let mut conflicts = 0u32;
        loop {
            match apply_one(client, migration, plan.defer).await {
                Ok(None) => break,
                Ok(Some(deferred)) => {
                    report.deferred += deferred;
                    tracing::info!(version = migration.version, name = migration.name, "migration applied");
                    report.applied.push(migration.version);
                    break;
                }
                // Running relays hold the tables this migration alters: it
                // gave up its locks (deadlock, or lock_timeout) and tries again.
                Err(err) if lock_conflict(&err) && conflicts < LOCK_RETRIES => {
                    conflicts += 1;
                    tracing::warn!(version = migration.version, error = %err, "migration waited for running relays; trying again");
                    tokio::time::sleep(Duration::from_millis(200) * conflicts).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(report)
}

/// How often a migration tries again when running relays hold its tables.
const LOCK_RETRIES: u32 = 20;

/// One migration in its own transaction, unless it is installed already
/// (`None`). Its table locks wait at most `lock_timeout`: a migration
/// queued for an exclusive lock stops every relay statement behind it, so it
/// must not wait long; it gives up and tries again instead.
async fn apply_one(client: &mut Client, migration: &Migration, defer: bool) -> Result<Option<usize>, Error> {
    let tx = client.transaction().await?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    if installed_version(&tx).await? >= migration.version {
        return Ok(None);
    }
    tx.batch_execute("set local lock_timeout = '2s'").await?;
    let deferred = apply(&tx, migration, defer).await?;
    tx.commit().await?;
    Ok(Some(deferred))
}

/// A deadlock with, or a lock held too long by, another session.
fn lock_conflict(err: &Error) -> bool {
    let source = match err {
        Error::Migration { source, .. } | Error::Deferred { source, .. } | Error::Pg(source) => source,
        Error::Privileges(_) => return false,
    };
    matches!(source.code(), Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::LOCK_NOT_AVAILABLE))
}

/// What this run does about the group roles.
struct Plan {
    /// Defer the statements that create or grant to the roles.
    defer: bool,
    /// Apply the statements an earlier run deferred, first.
    replay: bool,
}

/// Checks, before anything is applied, that the connected role may do what
/// the pending migrations do, and says what is missing and the ways out.
/// Nothing here needs a superuser: the schema's owner (or a role that may
/// create schemas in the database) with CREATEROLE, or with the roles made
/// by a DBA beforehand, or without them when asked to skip them.
async fn preflight(tx: &Transaction<'_>, options: Options) -> Result<Plan, Error> {
    let row = tx
        .query_one(
            "select current_user::text, current_database()::text,
                    r.rolsuper or r.rolcreaterole,
                    has_database_privilege(current_database(), 'CREATE'),
                    (select pg_get_userbyid(n.nspowner)::text from pg_namespace n where n.nspname = 'postbox'),
                    (select pg_has_role(current_user, n.nspowner, 'USAGE')
                     from pg_namespace n where n.nspname = 'postbox'),
                    array(select name from unnest($1::text[]) as name
                          where not exists (select from pg_roles g where g.rolname = name)),
                    exists (select from pg_class c join pg_namespace n on n.oid = c.relnamespace
                            where n.nspname = 'postbox' and c.relname = 'deferred_grants')
             from pg_roles r where r.rolname = current_user",
            &[&ROLES.as_slice()],
        )
        .await?;
    let user: String = row.try_get(0)?;
    let database: String = row.try_get(1)?;
    let may_create_roles: bool = row.try_get(2)?;
    let may_create_schema: bool = row.try_get(3)?;
    let schema_owner: Option<String> = row.try_get(4)?;
    let owns_schema: Option<bool> = row.try_get(5)?;
    let missing: Vec<String> = row.try_get(6)?;
    let deferred_earlier: bool = row.try_get(7)?;
    let pending = installed_version(tx).await? < latest_version();

    if pending || deferred_earlier {
        match (schema_owner, owns_schema) {
            (Some(owner), Some(false)) => {
                return Err(Error::Privileges(format!(
                    "schema postbox is owned by {owner}, not {user}: run postbox migrate as {owner} \
                     (or as a role that is a member of {owner})"
                )))
            }
            (None, _) if !may_create_schema => {
                return Err(Error::Privileges(format!(
                    "role {user} may not create schemas in database {database} (it lacks CREATE on it): \
                     run postbox migrate as the database's owner, or grant create on database {database} to {user}"
                )))
            }
            _ => {}
        }
    }
    let may_grant = missing.is_empty() || may_create_roles;
    // --skip-roles skips what is missing: roles that exist get their grants.
    let defer = (options.skip_roles && !missing.is_empty()) || (deferred_earlier && !may_grant);
    if !defer && !may_grant && pending && installed_version(tx).await? < ROLES_VERSION {
        let create: Vec<String> = missing.iter().map(|role| format!("create role {role} nologin;")).collect();
        return Err(Error::Privileges(format!(
            "role {user} may not create roles (it lacks CREATEROLE) and role{s} {names} do{es} not exist: \
             either have a role with CREATEROLE create {them} first ({create}) and run postbox migrate again, \
             or install without the roles with postbox migrate --skip-roles (everything then runs as {user}; \
             a later postbox migrate grants to the roles once they exist)",
            s = if missing.len() == 1 { "" } else { "s" },
            names = missing.join(", "),
            es = if missing.len() == 1 { "es" } else { "" },
            them = if missing.len() == 1 { "it" } else { "them" },
            create = create.join(" "),
        )));
    }
    if !defer && !may_grant && pending {
        // Installed with the roles, which were dropped since: later grants fail.
        return Err(Error::Privileges(format!(
            "role{s} {names} do{es} not exist and {user} may not create roles (it lacks CREATEROLE): \
             have a role with CREATEROLE create {them}, or run postbox migrate --skip-roles",
            s = if missing.len() == 1 { "" } else { "s" },
            names = missing.join(", "),
            es = if missing.len() == 1 { "es" } else { "" },
            them = if missing.len() == 1 { "it" } else { "them" },
        )));
    }
    if defer && !missing.is_empty() {
        tracing::warn!(
            roles = missing.join(", "),
            "installing without the postbox roles: the grants to them wait in postbox.deferred_grants"
        );
    }
    Ok(Plan { defer, replay: deferred_earlier && !defer })
}

/// The migration that creates the roles.
const ROLES_VERSION: i32 = 3;

/// Applies one migration in `tx`; with `defer`, statements that create or
/// grant to the group roles are kept in `postbox.deferred_grants` instead.
/// Returns how many were deferred.
async fn apply(tx: &Transaction<'_>, migration: &Migration, defer: bool) -> Result<usize, Error> {
    let failed = |source| Error::Migration { version: migration.version, name: migration.name, source };
    let statements = split_statements(migration.sql);
    if !defer || !statements.iter().any(|statement| needs_roles(statement)) {
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        return Ok(0);
    }
    let mut deferred = 0;
    for statement in statements {
        if needs_roles(statement) {
            tx.batch_execute(DEFERRED_GRANTS_TABLE).await.map_err(failed)?;
            tx.execute(
                "insert into postbox.deferred_grants (version, statement) values ($1, $2)",
                &[&migration.version, &statement.trim()],
            )
            .await
            .map_err(failed)?;
            deferred += 1;
        } else {
            tx.batch_execute(statement).await.map_err(failed)?;
        }
    }
    Ok(deferred)
}

/// Kept only while statements wait: the schema owner's, no grants (whoever
/// could write here would have the owner run their SQL).
const DEFERRED_GRANTS_TABLE: &str = "
    create table if not exists postbox.deferred_grants (
        id          bigint generated always as identity primary key,
        version     int not null,
        statement   text not null,
        deferred_at timestamptz not null default now()
    );
    revoke all on postbox.deferred_grants from public;";

/// Runs the statements an install with --skip-roles deferred, in their
/// order (migration 3's creates the roles when they are missing), then
/// drops the table. Returns how many ran.
async fn replay_deferred(tx: &Transaction<'_>) -> Result<usize, Error> {
    let rows = tx.query("select statement from postbox.deferred_grants order by id", &[]).await?;
    for row in &rows {
        let statement: String = row.try_get(0)?;
        // A grant on an object a later migration dropped is moot (a normal
        // install lost it with the object; what replaced it has its own).
        tx.batch_execute("savepoint deferred_grant").await?;
        match tx.batch_execute(&statement).await {
            Ok(()) => tx.batch_execute("release savepoint deferred_grant").await?,
            Err(err) if err.code().is_some_and(|code| GONE.contains(code)) => {
                tracing::info!(statement, error = %err, "deferred grant on an object since dropped: skipped");
                tx.batch_execute("rollback to savepoint deferred_grant").await?;
            }
            Err(source) => return Err(Error::Deferred { statement, source }),
        }
    }
    tx.batch_execute("drop table postbox.deferred_grants").await?;
    tracing::info!(statements = rows.len(), "granted to the postbox roles what --skip-roles deferred");
    Ok(rows.len())
}

const GONE: [SqlState; 4] = [
    SqlState::UNDEFINED_FUNCTION,
    SqlState::UNDEFINED_TABLE,
    SqlState::UNDEFINED_COLUMN,
    SqlState::UNDEFINED_OBJECT,
];

/// Whether a statement creates the group roles or grants (or revokes) to them.
fn needs_roles(statement: &str) -> bool {
    let code = skip_leading_comments(statement)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    let names_a_role = ROLES.iter().any(|role| code.contains(role));
    names_a_role
        && (code.starts_with("grant ")
            || code.starts_with("revoke ")
            || code.starts_with("alter default privileges ")
            || (code.starts_with("do ") && code.contains("create role")))
}

fn skip_leading_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if sql.starts_with("/*") {
            sql = sql.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return sql;
        }
    }
}

/// Splits SQL into its top-level statements, each without its `;`, minding
/// comments, quoted strings and identifiers, and dollar-quoted bodies.
fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut statements = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                let escapes = i > 0 && matches!(bytes[i - 1], b'E' | b'e') && (i < 2 || !ident(bytes[i - 2]));
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if escapes => i += 1,
                        b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\'' => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += 1;
                }
            }
            b'$' if i == 0 || !ident(bytes[i - 1]) => {
                let tag_len = bytes[i + 1..].iter().position(|&b| !ident(b)).map(|n| n + 1);
                if let Some(len) = tag_len {
                    let tag = &sql[i..=i + len];
                    let valid = tag.ends_with('$') && !tag[1..].starts_with(|c: char| c.is_ascii_digit());
                    if valid {
                        i = sql[i + tag.len()..]
                            .find(tag)
                            .map_or(bytes.len(), |n| i + tag.len() + n + tag.len());
                        continue;
                    }
                }
            }
            b';' => {
                statements.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    statements.push(&sql[start..]);
    statements.retain(|statement| !skip_leading_comments(statement).is_empty());
    statements
}

const TABLE_EXISTS: &str =
    "select exists (select from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                  where n.nspname = 'postbox' and c.relname = $1)";

/// The newest version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The newest version installed in the database, 0 when none is.
pub async fn installed_version(client: &impl tokio_postgres::GenericClient) -> Result<i32, Error> {
    // From pg_class with this statement's snapshot, not to_regclass(): the
    // session's catalog cache may still hold "no such schema" from before
    // the advisory lock was granted (another migrate created it meanwhile).
    let table = client.query_one(TABLE_EXISTS, &[&"schema_migrations"]).await?;
    if !table.try_get::<_, bool>(0)? {
        return Ok(0);
    }
    let row =
        client.query_one("select coalesce(max(version), 0) from postbox.schema_migrations", &[]).await?;
    Ok(row.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let sql = "-- a; comment\ncreate function f() returns int language sql as $$ select 1; $$;\n\
                   /* x; /* nested; */ y */ select 'a;''b', \"c;d\", E'\\';', $t$ ; $t$;\n\
                   grant select on t to postbox_relay;\n-- trailing";
        let statements = split_statements(sql);
        assert_eq!(statements.len(), 3, "{statements:#?}");
        assert!(statements[0].ends_with("$$ select 1; $$"));
        assert!(statements[1].trim_start().starts_with("/* x"));
        assert!(needs_roles(statements[2]));
        assert!(!needs_roles(statements[0]));
    }

    #[test]
    fn every_role_statement_of_every_migration_is_found() {
        for migration in MIGRATIONS {
            let statements = split_statements(migration.sql);
            let kept: String =
                statements.iter().filter(|s| !needs_roles(s)).map(|s| s.to_ascii_lowercase()).collect();
            for line in kept.lines().map(str::trim).filter(|l| !l.starts_with("--")) {
                let grants = line.starts_with("grant ") || line.starts_with("revoke ");
                assert!(
                    !(grants && ROLES.iter().any(|role| line.contains(role))),
                    "migration {} keeps a role statement: {line}",
                    migration.version
                );
            }
        }
        let roles = split_statements(MIGRATIONS[2].sql);
        assert!(roles.iter().any(|s| needs_roles(s) && s.contains("create role")));
    }
}
