//! The content-library port: items read back as stored, filtered into role x stage cells,
//! paged in creation order, created once per idempotency key.

use std::sync::Arc;

use leadflow_nurturing::{
    ContentFilter, ContentItem, ContentRepository, NewContentItem, PostgresContentRepository,
    SqliteContentRepository,
};
use leadflow_proto::{common::v1::BuyingStage, nurturing::v1 as pb};
use leadflow_storage::{IdempotencyKey, Stored};

use super::{Backing, contract};

async fn postgres_content() -> anyhow::Result<(Backing, Arc<dyn ContentRepository>)> {
    let (backing, nurturing) =
        super::postgres(leadflow_nurturing::SCHEMA, &leadflow_nurturing::MIGRATOR).await?;
    Ok((
        backing,
        Arc::new(PostgresContentRepository::new(nurturing.pool().clone())),
    ))
}

async fn sqlite_content() -> anyhow::Result<(Backing, Arc<dyn ContentRepository>)> {
    let (backing, nurturing) = super::sqlite(
        leadflow_nurturing::SCHEMA,
        &leadflow_nurturing::SQLITE_MIGRATOR,
    )
    .await?;
    Ok((
        backing,
        Arc::new(SqliteContentRepository::new(nurturing.pool().clone())),
    ))
}

fn item(title: &str, roles: &[&str], stage: BuyingStage) -> NewContentItem {
    NewContentItem::parse(Some(&pb::ContentItem {
        title: title.to_owned(),
        kind: pb::ContentKind::Study.into(),
        url: format!(
            "https://example.com/{}",
            title.to_lowercase().replace(' ', "-")
        ),
        buyer_roles: roles.iter().map(|role| (*role).to_owned()).collect(),
        stage: stage.into(),
        product: "erp".to_owned(),
        language: "en".to_owned(),
        ..Default::default()
    }))
    .expect("a valid item")
}

async fn created(
    repository: &dyn ContentRepository,
    item: NewContentItem,
    key: &str,
) -> anyhow::Result<ContentItem> {
    let key = IdempotencyKey {
        key: key.to_owned(),
        request: item.title.clone().into_bytes(),
    };
    match repository
        .create_item(item, key, chrono::Utc::now())
        .await?
    {
        Stored::Done(stored) => Ok(stored),
        Stored::KeyReused => anyhow::bail!("key unexpectedly reused"),
    }
}

async fn items_read_back_and_fill_their_cells(
    repository: Arc<dyn ContentRepository>,
) -> anyhow::Result<()> {
    let study = created(
        &*repository,
        item(
            "Planning study",
            &["it-manager", "cfo"],
            BuyingStage::ProblemAwareness,
        ),
        "1",
    )
    .await?;
    let article = created(
        &*repository,
        item(
            "ERP approaches",
            &["it-manager"],
            BuyingStage::SolutionSearch,
        ),
        "2",
    )
    .await?;
    created(
        &*repository,
        item("CEO brief", &["ceo"], BuyingStage::ProblemAwareness),
        "3",
    )
    .await?;
    assert_eq!(
        repository.get_item(study.content_item_id).await?,
        Some(study.clone())
    );
    assert_eq!(study.item.buyer_roles, ["it-manager", "cfo"]);

    let cell = ContentFilter {
        product: Some("erp".to_owned()),
        buyer_role: Some("it-manager".to_owned()),
        stage: Some(BuyingStage::ProblemAwareness),
        ..Default::default()
    };
    assert_eq!(
        repository.list_items(&cell, None, 10).await?.items,
        std::slice::from_ref(&study)
    );
    let cfo = ContentFilter {
        buyer_role: Some("cfo".to_owned()),
        ..Default::default()
    };
    assert_eq!(
        repository.list_items(&cfo, None, 10).await?.items,
        std::slice::from_ref(&study),
        "a role matches exactly"
    );

    let it_manager = ContentFilter {
        buyer_role: Some("it-manager".to_owned()),
        ..Default::default()
    };
    let first = repository.list_items(&it_manager, None, 1).await?;
    assert_eq!(first.items, [study]);
    let rest = repository
        .list_items(&it_manager, first.next_after, 1)
        .await?;
    assert_eq!(rest.items, [article]);
    assert_eq!(rest.next_after, None);
    Ok(())
}

async fn a_key_creates_one_item(repository: Arc<dyn ContentRepository>) -> anyhow::Result<()> {
    let first = created(
        &*repository,
        item("Planning study", &["cfo"], BuyingStage::ProblemAwareness),
        "k",
    )
    .await?;
    let replay = created(
        &*repository,
        item("Planning study", &["cfo"], BuyingStage::ProblemAwareness),
        "k",
    )
    .await?;
    assert_eq!(replay, first);
    let other = item("Another study", &["cfo"], BuyingStage::ProblemAwareness);
    let key = IdempotencyKey {
        key: "k".to_owned(),
        request: other.title.clone().into_bytes(),
    };
    assert_eq!(
        repository
            .create_item(other, key, chrono::Utc::now())
            .await?,
        Stored::KeyReused
    );
    assert_eq!(
        repository
            .list_items(&ContentFilter::default(), None, 10)
            .await?
            .items
            .len(),
        1
    );
    Ok(())
}

contract!(items_read_back_and_fill_their_cells on postgres_content, sqlite_content);
contract!(a_key_creates_one_item on postgres_content, sqlite_content);
