//! The rep port: reps read back with their hours and absences, page in creation order,
//! keep one email per rep, and one idempotency key creates one rep.

use std::sync::Arc;

use leadflow_routing::{NewRep, PostgresRepRepository, Rep, RepRepository, SqliteRepRepository};
use leadflow_storage::{IdempotencyKey, StorageError, Stored};

use super::{Backing, contract};
use crate::routing::rep;

async fn postgres_reps() -> anyhow::Result<(Backing, Arc<dyn RepRepository>)> {
    let (backing, routing) =
        super::postgres(leadflow_routing::SCHEMA, &leadflow_routing::MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(PostgresRepRepository::new(routing.pool().clone())),
    ))
}

async fn sqlite_reps() -> anyhow::Result<(Backing, Arc<dyn RepRepository>)> {
    let (backing, routing) =
        super::sqlite(leadflow_routing::SCHEMA, &leadflow_routing::SQLITE_MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(SqliteRepRepository::new(routing.pool().clone())),
    ))
}

fn new_rep(email: &str) -> NewRep {
    NewRep::parse(Some(&rep(email))).expect("a valid rep")
}

async fn create(
    repository: &dyn RepRepository,
    email: &str,
    key: &str,
) -> Result<Stored<Rep>, StorageError> {
    let key = IdempotencyKey {
        key: key.to_owned(),
        request: email.as_bytes().to_vec(),
    };
    repository
        .create_rep(new_rep(email), key, chrono::Utc::now())
        .await
}

async fn reps_read_back_with_hours_and_absences_in_pages(
    repository: Arc<dyn RepRepository>,
) -> anyhow::Result<()> {
    let mut created = Vec::new();
    for (index, email) in ["jana@example.com", "max@example.com", "ole@example.com"]
        .into_iter()
        .enumerate()
    {
        let Stored::Done(stored) = create(&*repository, email, &index.to_string()).await? else {
            anyhow::bail!("a fresh key");
        };
        created.push(stored);
    }
    assert_eq!(created[0].rep, new_rep("jana@example.com"));
    assert_eq!(created[0].rep.working_hours.len(), 2);
    assert_eq!(created[0].rep.out_of_office.len(), 1);
    assert_eq!(
        repository.get_rep(created[1].rep_id).await?,
        Some(created[1].clone())
    );
    let first = repository.list_reps(None, None, 2).await?;
    assert_eq!(first.items, created[..2]);
    let rest = repository.list_reps(None, first.next_after, 2).await?;
    assert_eq!(rest.items, created[2..]);
    assert_eq!(rest.next_after, None);
    assert!(!repository.team_exists(uuid::Uuid::now_v7()).await?);
    Ok(())
}

async fn one_email_one_rep_and_one_key_one_rep(
    repository: Arc<dyn RepRepository>,
) -> anyhow::Result<()> {
    let first = create(&*repository, "jana@example.com", "a").await?;
    assert_eq!(
        create(&*repository, "jana@example.com", "a").await?,
        first,
        "a retry replays"
    );
    assert_eq!(
        create(&*repository, "max@example.com", "a").await?,
        Stored::KeyReused
    );
    let duplicate = create(&*repository, "jana@example.com", "b").await;
    assert!(
        matches!(&duplicate, Err(StorageError::UniqueViolation { constraint }) if constraint == "reps_email_key"),
        "{duplicate:?}"
    );
    assert_eq!(repository.list_reps(None, None, 10).await?.items.len(), 1);
    Ok(())
}

contract!(reps_read_back_with_hours_and_absences_in_pages on postgres_reps, sqlite_reps);
contract!(one_email_one_rep_and_one_key_one_rep on postgres_reps, sqlite_reps);
