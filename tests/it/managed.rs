//! Managed databases (RDS, Cloud SQL, Azure, Supabase, Neon): no superuser,
//! sometimes no CREATEROLE. `postbox migrate` runs as the database's owner,
//! a plain login role made here for each test; the relay then runs as a
//! member of postbox_relay (or as the owner, when the roles were skipped).
//!
//! Roles are cluster-wide and other tests use postbox_writer, postbox_relay
//! and postbox_admin on the shared server, so the cases where they must not
//! exist run on a private cluster.

use std::{
    process::{Command, Output},
    time::Duration,
};

use postbox::db::{self, localpg::LocalPostgres};
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::support::{app::test_settings, db::server_url, relay::InProcessRelay, Receiver};

/// A login role without superuser (with `attributes`, e.g. CREATEROLE) and a
/// database it owns, on the server at `server`. Both go when dropped.
struct OwnedDb {
    server: String,
    owner: String,
    url: String,
    /// Login roles a test made besides the owner.
    logins: Vec<String>,
}

impl OwnedDb {
    async fn create(server: &str, attributes: &str) -> Self {
        let owner = format!("owner_{}", Uuid::new_v4().simple());
        let admin = connect(server).await;
        admin
            .batch_execute(&format!("create role {owner} login nosuperuser {attributes}"))
            .await
            .expect("create the owner");
        admin
            .batch_execute(&format!("create database {owner} owner {owner}"))
            .await
            .expect("create its database");
        Self { server: server.to_owned(), url: as_user(server, &owner, &owner), owner, logins: Vec::new() }
    }

    /// A new login role in postbox_relay, made by `grantor` (the owner itself
    /// when it has CREATEROLE, else the server's superuser).
    async fn relay_login(&mut self, grantor: &Client) -> String {
        let login = format!("relay_{}", Uuid::new_v4().simple());
        grantor.batch_execute(&format!("create role {login} login in role postbox_relay")).await.unwrap();
        self.logins.push(login.clone());
        as_user(&self.server, &login, &self.owner)
    }

    async fn superuser(&self) -> Client {
        connect(&as_user(&self.server, "postgres", &self.owner)).await
    }
}

impl Drop for OwnedDb {
    fn drop(&mut self) {
        let (server, owner, logins) = (self.server.clone(), self.owner.clone(), self.logins.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let Ok(admin) = db::connect(&server).await else { return };
                let _ = admin.batch_execute(&format!("drop database if exists {owner} with (force)")).await;
                for role in logins.iter().chain([&owner]) {
                    let _ = admin.batch_execute(&format!("drop role if exists {role}")).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn as_user(server: &str, user: &str, database: &str) -> String {
    let mut url = url::Url::parse(server).expect("a postgres:// URL");
    url.set_username(user).unwrap();
    url.set_path(database);
    url.to_string()
}

async fn connect(url: &str) -> Client {
    db::connect(url).await.unwrap_or_else(|err| panic!("connect to {url}: {err}"))
}

fn migrate(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postbox"))
        .arg("migrate")
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run postbox migrate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "postbox migrate failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn private_cluster() -> LocalPostgres {
    LocalPostgres::start(None).expect("a private PostgreSQL cluster starts")
}

async fn missing_roles(client: &Client) -> i64 {
    client
        .query_one(
            "select count(*) from unnest(array['postbox_writer', 'postbox_relay', 'postbox_admin']) as r
             where not exists (select from pg_roles where rolname = r)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Starts a relay as `relay_url`, subscribes a receiver through its API,
/// emits as `writer` and waits for the webhook.
async fn relay_delivers(relay_url: &str, writer: &Client) {
    let mut receiver = Receiver::start().await;
    let relay = InProcessRelay::start(test_settings(relay_url, &[])).await;
    // The relay publishes its network policy once it found the schema.
    for _ in 0..200 {
        let published = "select allow_private from postbox.network_policy";
        if writer.query_one(published, &[]).await.unwrap().get::<_, bool>(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = reqwest::Client::new()
        .post(format!("{}/api/v1/endpoints", relay.base))
        .header("content-type", "application/json")
        .body(json!({"url": receiver.url("/hooks")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    writer
        .batch_execute(
            "select postbox.register_event_type('order.created');
             select postbox.emit('order.created', '{\"id\": 7}');",
        )
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), receiver.recv()).await.expect("a webhook");
    assert_eq!(received.json()["data"], json!({"id": 7}));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_with_createrole_installs_and_makes_the_roles() {
    let cluster = private_cluster();
    let mut db = OwnedDb::create(&cluster.url(), "createrole").await;
    let owner = connect(&db.url).await;
    assert_eq!(missing_roles(&owner).await, 3);

    let out = succeeded(&migrate(&db.url, &[]));
    assert!(out.contains("applied migrations [1, 2,"), "{out}");
    assert!(!out.contains("skipped"), "{out}");
    assert_eq!(missing_roles(&owner).await, 0);
    let schema_owner: String = owner
        .query_one("select pg_get_userbyid(nspowner)::text from pg_namespace where nspname = 'postbox'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema_owner, db.owner);

    // The owner (CREATEROLE, no superuser) makes the relay's login itself.
    let relay_url = db.relay_login(&owner).await;
    relay_delivers(&relay_url, &owner).await;
    assert!(succeeded(&migrate(&db.url, &[])).contains("up to date"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_without_createrole_uses_the_roles_a_dba_made_first() {
    // The shared server has the roles already, as a DBA would have made them.
    let mut db = OwnedDb::create(&server_url(), "nocreaterole").await;
    let out = succeeded(&migrate(&db.url, &[]));
    assert!(out.contains("applied migrations [1, 2,"), "{out}");
    let superuser = db.superuser().await;
    let relay_url = db.relay_login(&superuser).await;
    relay_delivers(&relay_url, &connect(&db.url).await).await;
}

const NO_ROLES: &str = "may not create roles (it lacks CREATEROLE) and roles postbox_writer, postbox_relay, \
                        postbox_admin do not exist: either have a role with CREATEROLE create them first \
                        (create role postbox_writer nologin; create role postbox_relay nologin; \
                        create role postbox_admin nologin;) and run postbox migrate again, or install \
                        without the roles with postbox migrate --skip-roles";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_createrole_or_the_roles_migrate_says_what_is_missing_and_installs_nothing() {
    let cluster = private_cluster();
    let db = OwnedDb::create(&cluster.url(), "nocreaterole").await;
    let failed = migrate(&db.url, &[]);
    assert!(!failed.status.success());
    let stderr = text(&failed.stderr);
    assert!(stderr.contains(&format!("role {} {NO_ROLES}", db.owner)), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let owner = connect(&db.url).await;
    let schema: bool = owner
        .query_one("select exists (select from pg_namespace where nspname = 'postbox')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!schema, "nothing is installed before the check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_create_the_schema_is_told_so() {
    let db = OwnedDb::create(&server_url(), "").await;
    let stranger = format!("stranger_{}", Uuid::new_v4().simple());
    let superuser = db.superuser().await;
    superuser.batch_execute(&format!("create role {stranger} login")).await.unwrap();
    let failed = migrate(&as_user(&db.server, &stranger, &db.owner), &[]);
    superuser.batch_execute(&format!("drop role {stranger}")).await.unwrap();
    assert!(!failed.status.success());
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains(&format!(
            "role {stranger} may not create schemas in database {0} (it lacks CREATE on it): run postbox \
             migrate as the database's owner, or grant create on database {0} to {stranger}",
            db.owner
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_roles_installs_without_them_and_a_later_migrate_grants_what_waited() {
    let cluster = private_cluster();
    let mut db = OwnedDb::create(&cluster.url(), "nocreaterole").await;
    let owner = connect(&db.url).await;

    let out = succeeded(&migrate(&db.url, &["--skip-roles"]));
    assert!(out.contains("applied migrations [1, 2,"), "{out}");
    assert!(out.contains("grant statements wait in postbox.deferred_grants"), "{out}");
    assert_eq!(missing_roles(&owner).await, 3);
    // Everything runs as the owner meanwhile.
    relay_delivers(&db.url, &owner).await;
    // The choice sticks: a plain migrate (an upgrade) goes on without the roles.
    assert!(succeeded(&migrate(&db.url, &[])).contains("up to date"));

    // A reference install, with the roles, in another database.
    let superuser = db.superuser().await;
    superuser
        .batch_execute(
            "create role postbox_writer nologin; create role postbox_relay nologin; create role postbox_admin nologin;",
        )
        .await
        .unwrap();
    let reference = OwnedDb::create(&cluster.url(), "nocreaterole").await;
    succeeded(&migrate(&reference.url, &[]));

    // The DBA made the roles: the next migrate grants what waited.
    let out = succeeded(&migrate(&db.url, &[]));
    assert!(out.contains("granted to the postbox roles"), "{out}");
    let table: bool =
        owner.query_one("select to_regclass('postbox.deferred_grants') is null", &[]).await.unwrap().get(0);
    assert!(table, "the deferred grants are gone once applied");
    let expected = grants(&connect(&reference.url).await).await;
    assert!(expected.contains(&"outbox.event_type INSERT postbox_writer".to_owned()), "{expected:#?}");
    assert!(expected.contains(&"default r SELECT postbox_admin".to_owned()), "{expected:#?}");
    assert_eq!(grants(&owner).await, expected, "the same grants as an install with the roles");

    let relay_url = db.relay_login(&superuser).await;
    relay_delivers(&relay_url, &owner).await;
}

/// What the postbox roles may do on every object of the schema, and the
/// default privileges for objects to come.
async fn grants(client: &Client) -> Vec<String> {
    client
        .query(
            "select format('%s %s %s', c.relname, a.privilege_type, pg_get_userbyid(a.grantee))
             from pg_class c cross join lateral aclexplode(c.relacl) a
             where c.relnamespace = 'postbox'::regnamespace and pg_get_userbyid(a.grantee) like 'postbox\\_%'
             union all
             select format('%s.%s %s %s', c.relname, att.attname, a.privilege_type, pg_get_userbyid(a.grantee))
             from pg_class c join pg_attribute att on att.attrelid = c.oid
             cross join lateral aclexplode(att.attacl) a
             where c.relnamespace = 'postbox'::regnamespace and pg_get_userbyid(a.grantee) like 'postbox\\_%'
             union all
             select format('%s %s %s', p.oid::regprocedure, a.privilege_type, pg_get_userbyid(a.grantee))
             from pg_proc p cross join lateral aclexplode(p.proacl) a
             where p.pronamespace = 'postbox'::regnamespace and pg_get_userbyid(a.grantee) like 'postbox\\_%'
             union all
             select format('schema %s %s', a.privilege_type, pg_get_userbyid(a.grantee))
             from pg_namespace n cross join lateral aclexplode(n.nspacl) a
             where n.nspname = 'postbox' and pg_get_userbyid(a.grantee) like 'postbox\\_%'
             union all
             select format('default %s %s %s', d.defaclobjtype, a.privilege_type, pg_get_userbyid(a.grantee))
             from pg_default_acl d cross join lateral aclexplode(d.defaclacl) a
             where d.defaclnamespace = 'postbox'::regnamespace and pg_get_userbyid(a.grantee) like 'postbox\\_%'
             order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_installs_as_an_owner_with_createrole_and_explains_a_missing_createrole() {
    if Command::new("psql").arg("--version").output().is_err() {
        eprintln!("psql not installed: skipping the psql path");
        return;
    }
    let cluster = private_cluster();
    let psql_all = |url: &str| -> Result<(), String> {
        let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/migrations"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let out = Command::new("psql")
                .args([url, "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f"])
                .arg(&file)
                .output()
                .unwrap();
            if !out.status.success() {
                return Err(text(&out.stderr));
            }
        }
        Ok(())
    };

    let plain = OwnedDb::create(&cluster.url(), "nocreaterole").await;
    let refused = psql_all(&plain.url).expect_err("no CREATEROLE, no roles");
    assert!(
        refused.contains(&format!(
            "role {} may not create roles (it lacks CREATEROLE) and role postbox_writer does not exist",
            plain.owner
        )) && refused.contains("or install with postbox migrate --skip-roles"),
        "{refused}"
    );

    let db = OwnedDb::create(&cluster.url(), "createrole").await;
    psql_all(&db.url).expect("psql installs as an owner with CREATEROLE");
    let owner = connect(&db.url).await;
    assert_eq!(missing_roles(&owner).await, 0);
    let version: i32 =
        owner.query_one("select max(version) from postbox.schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(version, postbox::db::schema::latest_version());
    assert!(succeeded(&migrate(&db.url, &[])).contains("up to date"));
}
