use postbox::db::schema;

use crate::support::TestDb;

#[tokio::test]
async fn migrate_installs_the_schema_once_and_records_its_version() {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    assert_eq!(schema::installed_version(&client).await.unwrap(), 0);

    let applied = schema::migrate(&mut client).await.unwrap();
    assert_eq!(applied, schema::MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
    assert_eq!(schema::installed_version(&client).await.unwrap(), schema::latest_version());

    let again = schema::migrate(&mut client).await.unwrap();
    assert!(again.is_empty(), "a second migrate applies nothing, got {again:?}");
    let recorded: i64 =
        client.query_one("select count(*) from postbox.schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(recorded, schema::MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn concurrent_migrations_queue_up_instead_of_colliding() {
    let db = TestDb::empty().await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        let mut client = db.connect().await;
        runs.push(tokio::spawn(async move { schema::migrate(&mut client).await }));
    }
    let mut total_applied = 0;
    for run in runs {
        total_applied += run.await.unwrap().expect("every concurrent migrate succeeds").len();
    }
    assert_eq!(total_applied, schema::MIGRATIONS.len(), "each migration applied exactly once");
}

#[tokio::test]
async fn migration_files_apply_with_psql_semantics_and_agree_with_migrate() {
    // A DBA applies the files by hand, one transaction each; `postbox migrate`
    // then finds nothing to do.
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    for migration in schema::MIGRATIONS {
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(migration.sql).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert!(schema::migrate(&mut client).await.unwrap().is_empty());
}
