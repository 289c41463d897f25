//! The scoring-model port: versions per product, idempotent creation, newest-first pages.

use std::sync::Arc;

use leadflow_scoring::{
    NewScoringModel, PostgresScoringModelRepository, ScoringModelRecord, ScoringModelRepository,
    SqliteScoringModelRepository,
};
use leadflow_storage::{EmbeddedDatabase, IdempotencyKey, Stored};

use super::{Backing, contract};
use crate::scoring::seed_model;

async fn postgres_scoring() -> anyhow::Result<(Backing, Arc<dyn ScoringModelRepository>)> {
    let (backing, scoring) =
        super::postgres(leadflow_scoring::SCHEMA, &leadflow_scoring::MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(PostgresScoringModelRepository::new(scoring.pool().clone())),
    ))
}

async fn sqlite_scoring() -> anyhow::Result<(Backing, Arc<dyn ScoringModelRepository>)> {
    let (backing, scoring) =
        super::sqlite(leadflow_scoring::SCHEMA, &leadflow_scoring::SQLITE_MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(SqliteScoringModelRepository::new(scoring.pool().clone())),
    ))
}

fn new_model(product: &str, threshold: u32) -> NewScoringModel {
    let mut model = seed_model(product);
    model.threshold = threshold;
    NewScoringModel::parse(Some(&model)).expect("a valid model")
}

fn key(name: &str, model: &NewScoringModel) -> IdempotencyKey {
    IdempotencyKey {
        key: name.to_owned(),
        request: prost::Message::encode_to_vec(model.definition()),
    }
}

async fn created(
    repository: &dyn ScoringModelRepository,
    model: NewScoringModel,
    key_name: &str,
) -> anyhow::Result<ScoringModelRecord> {
    let key = key(key_name, &model);
    match repository
        .create_model(model, key, chrono::Utc::now())
        .await?
    {
        Stored::Done(record) => Ok(record),
        Stored::KeyReused => anyhow::bail!("key {key_name} unexpectedly reused"),
    }
}

async fn versions_count_per_product_and_read_back(
    repository: Arc<dyn ScoringModelRepository>,
) -> anyhow::Result<()> {
    let first = created(&*repository, new_model("erp", 250), "a").await?;
    let second = created(&*repository, new_model("erp", 300), "b").await?;
    let other = created(&*repository, new_model("crm", 250), "c").await?;
    assert_eq!((first.version, second.version, other.version), (1, 2, 1));
    assert!(!first.active);
    assert_eq!(
        repository.get_model(second.model_id).await?,
        Some(second.clone())
    );
    assert_eq!(second.model.threshold(), 300);
    assert_eq!(repository.get_model(uuid::Uuid::now_v7()).await?, None);
    Ok(())
}

async fn a_key_replays_its_first_record_and_refuses_another_request(
    repository: Arc<dyn ScoringModelRepository>,
) -> anyhow::Result<()> {
    let first = created(&*repository, new_model("erp", 250), "same-key").await?;
    let replay = created(&*repository, new_model("erp", 250), "same-key").await?;
    assert_eq!(replay, first);
    let other = new_model("erp", 999);
    let outcome = repository
        .create_model(other.clone(), key("same-key", &other), chrono::Utc::now())
        .await?;
    assert_eq!(outcome, Stored::KeyReused);
    let page = repository.list_models("erp", None, 10).await?;
    assert_eq!(page.items.len(), 1, "one record for one key");
    Ok(())
}

async fn listing_pages_newest_first(
    repository: Arc<dyn ScoringModelRepository>,
) -> anyhow::Result<()> {
    for (index, threshold) in [100, 200, 300].into_iter().enumerate() {
        created(
            &*repository,
            new_model("erp", threshold),
            &format!("k{index}"),
        )
        .await?;
    }
    let first = repository.list_models("erp", None, 2).await?;
    let versions: Vec<u32> = first.items.iter().map(|record| record.version).collect();
    assert_eq!(versions, [3, 2]);
    let rest = repository.list_models("erp", first.next_after, 2).await?;
    let versions: Vec<u32> = rest.items.iter().map(|record| record.version).collect();
    assert_eq!(versions, [1]);
    assert_eq!(rest.next_after, None);
    assert!(
        repository
            .list_models("crm", None, 2)
            .await?
            .items
            .is_empty()
    );
    Ok(())
}

contract!(versions_count_per_product_and_read_back on postgres_scoring, sqlite_scoring);
contract!(a_key_replays_its_first_record_and_refuses_another_request on postgres_scoring, sqlite_scoring);
contract!(listing_pages_newest_first on postgres_scoring, sqlite_scoring);

#[tokio::test]
async fn the_embedded_store_keeps_what_it_acknowledged_across_a_reopen() -> anyhow::Result<()> {
    let data_dir =
        std::env::temp_dir().join(format!("leadflow-test-{}", uuid::Uuid::new_v4().simple()));
    let record = {
        let scoring = EmbeddedDatabase::open(&data_dir, leadflow_scoring::SCHEMA).await?;
        scoring.migrate(&leadflow_scoring::SQLITE_MIGRATOR).await?;
        let repository = SqliteScoringModelRepository::new(scoring.pool().clone());
        let record = created(&repository, new_model("erp", 250), "persisted").await?;
        scoring.pool().close().await;
        record
    };
    assert!(data_dir.join("scoring.sqlite3").exists());
    let reopened = EmbeddedDatabase::open(&data_dir, leadflow_scoring::SCHEMA).await?;
    reopened.migrate(&leadflow_scoring::SQLITE_MIGRATOR).await?;
    let repository = SqliteScoringModelRepository::new(reopened.pool().clone());
    assert_eq!(repository.get_model(record.model_id).await?, Some(record));
    reopened.pool().close().await;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
