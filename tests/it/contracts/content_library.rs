//! The content-library port: items read back as stored, filtered into role x stage cells,
//! paged in offer order (priority, then oldest), created once per idempotency key; updated
//! under lock with retries answered as first, retired for the record, and counted per cell
//! and kind.

use std::sync::Arc;

use chrono::TimeDelta;
use leadflow_nurturing::{
    ContentFilter, ContentItem, ContentRepository, NewContentItem, NurturingError,
    PostgresContentRepository, SqliteContentRepository,
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

fn key(key: &str, request: &str) -> IdempotencyKey {
    IdempotencyKey {
        key: key.to_owned(),
        request: request.as_bytes().to_vec(),
    }
}

/// A change that gives the item a new title and keeps everything else.
fn retitled(
    title: &str,
) -> impl Fn(&ContentItem) -> Result<NewContentItem, NurturingError> + Send + Sync {
    let title = title.to_owned();
    move |stored| {
        Ok(NewContentItem {
            title: title.clone(),
            ..stored.item.clone()
        })
    }
}

async fn updated(
    repository: &dyn ContentRepository,
    content_item_id: uuid::Uuid,
    title: &str,
    key: IdempotencyKey,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Stored<ContentItem>> {
    Ok(repository
        .update_item(content_item_id, &retitled(title), key, now)
        .await?)
}

async fn an_update_changes_what_the_change_says_and_a_retry_answers_as_first(
    repository: Arc<dyn ContentRepository>,
) -> anyhow::Result<()> {
    let study = created(
        &*repository,
        item("Planning study", &["cfo"], BuyingStage::ProblemAwareness),
        "create",
    )
    .await?;
    let later = study.update_time + TimeDelta::minutes(5);
    let Stored::Done(first) = updated(
        &*repository,
        study.content_item_id,
        "Planning study 2026",
        key("update-1", "2026"),
        later,
    )
    .await?
    else {
        anyhow::bail!("key unexpectedly reused");
    };
    assert_eq!(first.item.title, "Planning study 2026");
    assert_eq!(
        first.item.buyer_roles, study.item.buyer_roles,
        "the other fields stay"
    );
    assert_eq!(first.create_time, study.create_time);
    assert_eq!(first.update_time, later);
    assert_eq!(
        repository.get_item(study.content_item_id).await?,
        Some(first.clone())
    );

    let unchanged = updated(
        &*repository,
        study.content_item_id,
        "Planning study 2026",
        key("update-2", "same again"),
        later + TimeDelta::minutes(5),
    )
    .await?;
    assert_eq!(
        unchanged,
        Stored::Done(first.clone()),
        "a change that changes nothing leaves update_time"
    );
    let second = updated(
        &*repository,
        study.content_item_id,
        "Planning study 2027",
        key("update-3", "2027"),
        later + TimeDelta::minutes(10),
    )
    .await?;
    assert!(matches!(&second, Stored::Done(item) if item.item.title == "Planning study 2027"));
    assert_eq!(
        updated(
            &*repository,
            study.content_item_id,
            "Planning study 2026",
            key("update-1", "2026"),
            later + TimeDelta::minutes(15),
        )
        .await?,
        Stored::Done(first),
        "a retry answers with the item as the first call left it, after later changes too"
    );
    assert_eq!(
        updated(
            &*repository,
            study.content_item_id,
            "Another title",
            key("update-1", "another"),
            later,
        )
        .await?,
        Stored::KeyReused
    );
    assert_eq!(
        repository
            .get_item(study.content_item_id)
            .await?
            .map(|stored| stored.item.title),
        Some("Planning study 2027".to_owned()),
        "neither the retry nor the reused key changed the item"
    );

    let refused = repository
        .update_item(
            study.content_item_id,
            &|stored| Err(NurturingError::ContentItemRetired(stored.content_item_id)),
            key("update-4", "refused"),
            later,
        )
        .await;
    assert!(matches!(
        refused,
        Err(NurturingError::ContentItemRetired(_))
    ));
    let after_refusal = updated(
        &*repository,
        study.content_item_id,
        "Planning study 2028",
        key("update-4", "refused"),
        later + TimeDelta::minutes(20),
    )
    .await?;
    assert!(
        matches!(&after_refusal, Stored::Done(item) if item.item.title == "Planning study 2028"),
        "a refused change leaves its key unused"
    );

    let unknown = uuid::Uuid::now_v7();
    assert!(matches!(
        repository
            .update_item(unknown, &retitled("Nothing"), key("update-5", "unknown"), later)
            .await,
        Err(NurturingError::ContentItemNotFound(id)) if id == unknown
    ));
    Ok(())
}

async fn a_retired_item_stays_for_the_record_and_leaves_the_listing(
    repository: Arc<dyn ContentRepository>,
) -> anyhow::Result<()> {
    let study = created(
        &*repository,
        item("Planning study", &["cfo"], BuyingStage::ProblemAwareness),
        "create",
    )
    .await?;
    let retire_time = study.update_time + TimeDelta::minutes(5);
    let Stored::Done(retired) = repository
        .retire_item(
            study.content_item_id,
            "outdated pricing",
            key("retire-1", "outdated pricing"),
            retire_time,
        )
        .await?
    else {
        anyhow::bail!("key unexpectedly reused");
    };
    assert!(retired.retired);
    assert_eq!(retired.retire_time, Some(retire_time));
    assert_eq!(retired.update_time, retire_time);
    assert_eq!(retired.item, study.item, "the item stays as it was");
    assert_eq!(
        repository.get_item(study.content_item_id).await?,
        Some(retired.clone())
    );

    let again = repository
        .retire_item(
            study.content_item_id,
            "another reason",
            key("retire-2", "another reason"),
            retire_time + TimeDelta::minutes(5),
        )
        .await?;
    assert_eq!(
        again,
        Stored::Done(retired.clone()),
        "retiring a retired item changes nothing"
    );
    assert_eq!(
        repository
            .retire_item(
                study.content_item_id,
                "outdated pricing",
                key("retire-1", "outdated pricing"),
                retire_time,
            )
            .await?,
        Stored::Done(retired.clone())
    );
    assert_eq!(
        repository
            .retire_item(
                study.content_item_id,
                "outdated pricing",
                key("retire-1", "other"),
                retire_time,
            )
            .await?,
        Stored::KeyReused
    );

    let everything = ContentFilter::default();
    assert!(
        repository
            .list_items(&everything, None, 10)
            .await?
            .items
            .is_empty()
    );
    let with_retired = ContentFilter {
        include_retired: true,
        ..Default::default()
    };
    assert_eq!(
        repository.list_items(&with_retired, None, 10).await?.items,
        [retired]
    );
    assert!(matches!(
        repository
            .retire_item(
                uuid::Uuid::now_v7(),
                "",
                key("retire-3", "unknown"),
                retire_time
            )
            .await,
        Err(NurturingError::ContentItemNotFound(_))
    ));
    Ok(())
}

async fn cells_count_the_active_items_by_kind(
    repository: Arc<dyn ContentRepository>,
) -> anyhow::Result<()> {
    use BuyingStage::{ProblemAwareness as B1, SolutionSearch as B2};
    use pb::ContentKind::{Study, Webinar};
    created(
        &*repository,
        item(
            "Planning study",
            &["it-manager", "cfo"],
            BuyingStage::ProblemAwareness,
        ),
        "1",
    )
    .await?;
    created(
        &*repository,
        NewContentItem {
            kind: Webinar,
            ..item("Planning webinar", &["cfo"], BuyingStage::ProblemAwareness)
        },
        "2",
    )
    .await?;
    created(
        &*repository,
        item("Second study", &["cfo"], BuyingStage::ProblemAwareness),
        "3",
    )
    .await?;
    created(
        &*repository,
        NewContentItem {
            language: "de".to_owned(),
            ..item("Planungsstudie", &["cfo"], BuyingStage::SolutionSearch)
        },
        "4",
    )
    .await?;
    created(
        &*repository,
        NewContentItem {
            product: "crm".to_owned(),
            ..item("CRM study", &["ceo"], BuyingStage::ChoosingOffer)
        },
        "5",
    )
    .await?;
    let retired = created(
        &*repository,
        item("Old study", &["controller"], BuyingStage::ProblemAwareness),
        "6",
    )
    .await?;
    repository
        .retire_item(
            retired.content_item_id,
            "",
            key("7", "retire"),
            chrono::Utc::now(),
        )
        .await?;

    let erp = repository.active_cell_counts(Some("erp"), None).await?;
    assert_eq!(
        sorted(
            erp.into_iter()
                .map(|count| (count.buyer_role, count.stage, count.kind, count.count))
                .collect()
        ),
        [
            cell("cfo", B1, Webinar, 1),
            cell("cfo", B1, Study, 2),
            cell("cfo", B2, Study, 1),
            cell("it-manager", B1, Study, 1),
        ],
        "an item counts in the cell of each of its roles; the retired item counts nowhere"
    );
    let erp_in_german = repository
        .active_cell_counts(Some("erp"), Some("de"))
        .await?;
    assert_eq!(
        sorted(
            erp_in_german
                .into_iter()
                .map(|count| (count.buyer_role, count.stage, count.kind, count.count))
                .collect()
        ),
        [cell("cfo", B2, Study, 1)]
    );
    let every_product = repository.active_cell_counts(None, None).await?;
    assert_eq!(
        every_product.iter().map(|count| count.count).sum::<u32>(),
        6,
        "the erp cells and the crm item"
    );
    assert!(
        repository
            .active_cell_counts(Some("hr"), None)
            .await?
            .is_empty()
    );
    Ok(())
}

type Cell = (String, BuyingStage, pb::ContentKind, u32);

fn cell(role: &str, stage: BuyingStage, kind: pb::ContentKind, count: u32) -> Cell {
    (role.to_owned(), stage, kind, count)
}

/// The cells in grid order: by role, then stage, then kind (by their enum numbers).
fn sorted(mut cells: Vec<Cell>) -> Vec<Cell> {
    cells.sort();
    cells
}

async fn items_list_in_offer_order_priority_first_then_oldest(
    repository: Arc<dyn ContentRepository>,
) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for (title, priority) in [("Later study", 5), ("First study", 1), ("Second study", 1)] {
        let mut new = item(title, &["it-manager"], BuyingStage::ProblemAwareness);
        new.priority = priority;
        ids.push(created(&*repository, new, title).await?.content_item_id);
    }
    let filter = ContentFilter::default();
    let first = repository.list_items(&filter, None, 2).await?;
    let second = repository.list_items(&filter, first.next_after, 2).await?;
    let listed: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|item| item.content_item_id)
        .collect();
    assert_eq!(
        listed,
        vec![ids[1], ids[2], ids[0]],
        "priority 1 oldest first, then 5"
    );
    assert_eq!(second.next_after, None);
    Ok(())
}

contract!(items_read_back_and_fill_their_cells on postgres_content, sqlite_content);
contract!(a_key_creates_one_item on postgres_content, sqlite_content);
contract!(an_update_changes_what_the_change_says_and_a_retry_answers_as_first on postgres_content, sqlite_content);
contract!(a_retired_item_stays_for_the_record_and_leaves_the_listing on postgres_content, sqlite_content);
contract!(cells_count_the_active_items_by_kind on postgres_content, sqlite_content);
contract!(items_list_in_offer_order_priority_first_then_oldest on postgres_content, sqlite_content);
