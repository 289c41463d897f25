//! The content library through the gRPC API: items stored and read back, filtered into the
//! role x stage grid, created once per idempotency key, refused with named fields; changed
//! where the update mask says, retired for the record, and laid out as the role x stage
//! grid with its gap report.

use leadflow_proto::{
    common::v1::BuyingStage,
    nurturing::v1::{
        ContentGridCell, ContentItem, ContentItemState, ContentKind, ContentKindCount,
        CreateContentItemRequest, GetContentGridRequest, GetContentItemRequest,
        ListContentItemsRequest, RetireContentItemRequest, UpdateContentItemRequest,
    },
};
use leadflow_tests::TestSuite;
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn study_for_it_managers() -> ContentItem {
    ContentItem {
        title: "Study: the cost of manual planning".to_owned(),
        kind: ContentKind::Study.into(),
        url: "https://example.com/content/planning-study".to_owned(),
        buyer_roles: vec!["it-manager".to_owned(), "cfo".to_owned()],
        stage: BuyingStage::ProblemAwareness.into(),
        product: "erp".to_owned(),
        language: "en".to_owned(),
        ..Default::default()
    }
}

async fn create(suite: &TestSuite, item: ContentItem) -> anyhow::Result<ContentItem> {
    Ok(suite
        .nurturing()
        .create_content_item(CreateContentItemRequest {
            item: Some(item),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner()
        .item
        .expect("item"))
}

#[tokio::test]
async fn items_are_stored_read_back_and_filtered_by_cell() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let study = create(&suite, study_for_it_managers()).await?;
    assert_eq!(study.state(), ContentItemState::Active);
    assert!(uuid::Uuid::parse_str(&study.content_item_id).is_ok());
    let article = create(
        &suite,
        ContentItem {
            title: "Article: choosing an ERP approach".to_owned(),
            kind: ContentKind::Article.into(),
            stage: BuyingStage::SolutionSearch.into(),
            buyer_roles: vec!["it-manager".to_owned()],
            ..study_for_it_managers()
        },
    )
    .await?;
    create(
        &suite,
        ContentItem {
            buyer_roles: vec!["ceo".to_owned()],
            ..study_for_it_managers()
        },
    )
    .await?;

    let mut nurturing = suite.nurturing();
    let fetched = nurturing
        .get_content_item(GetContentItemRequest {
            content_item_id: study.content_item_id.clone(),
        })
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(fetched, study);

    let cell = nurturing
        .list_content_items(ListContentItemsRequest {
            product: "erp".to_owned(),
            buyer_role: "it-manager".to_owned(),
            stage: BuyingStage::ProblemAwareness.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        cell.items,
        std::slice::from_ref(&study),
        "the IT manager's B1 cell holds the study only"
    );

    let for_it_managers = nurturing
        .list_content_items(ListContentItemsRequest {
            buyer_role: "it-manager".to_owned(),
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(for_it_managers.items, [study]);
    let next = nurturing
        .list_content_items(ListContentItemsRequest {
            buyer_role: "it-manager".to_owned(),
            page_size: 1,
            page_token: for_it_managers.next_page_token,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(next.items, [article]);
    assert!(next.next_page_token.is_empty());
    suite.stop().await
}

#[tokio::test]
async fn a_retry_with_the_same_key_creates_nothing_twice() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    let request = CreateContentItemRequest {
        item: Some(study_for_it_managers()),
        idempotency_key: "study-1".to_owned(),
    };
    let (mut first_client, mut second_client) = (nurturing.clone(), nurturing.clone());
    let (first, second) = tokio::join!(
        first_client.create_content_item(request.clone()),
        second_client.create_content_item(request.clone()),
    );
    assert_eq!(
        first?.into_inner(),
        second?.into_inner(),
        "concurrent duplicates answer alike"
    );
    let listed = nurturing
        .list_content_items(ListContentItemsRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.items.len(), 1);

    let mut changed = study_for_it_managers();
    changed.title = "Another title".to_owned();
    let reused = nurturing
        .create_content_item(CreateContentItemRequest {
            item: Some(changed),
            idempotency_key: "study-1".to_owned(),
        })
        .await
        .expect_err("same key, other payload");
    assert_eq!(reused.code(), Code::AlreadyExists);
    suite.stop().await
}

#[tokio::test]
async fn invalid_items_name_each_wrong_field() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let status = suite
        .nurturing()
        .create_content_item(CreateContentItemRequest {
            item: Some(ContentItem {
                title: String::new(),
                kind: ContentKind::Unspecified.into(),
                url: "javascript:alert(1)".to_owned(),
                buyer_roles: vec![],
                stage: BuyingStage::Unspecified.into(),
                product: "erp".to_owned(),
                language: "english".to_owned(),
                ..Default::default()
            }),
            idempotency_key: "invalid-item".to_owned(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status
        .get_details_bad_request()
        .expect("bad request details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "item.title",
            "item.kind",
            "item.url",
            "item.buyer_roles",
            "item.stage",
            "item.language"
        ]
    );
    let unknown = suite
        .nurturing()
        .get_content_item(GetContentItemRequest {
            content_item_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    suite.stop().await
}

/// The status of a call that must fail, after checking its code.
fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// The fields an INVALID_ARGUMENT refusal names, in order.
fn violated_fields<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<String> {
    refused(result, Code::InvalidArgument)
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

/// A timestamp as something ordered.
fn instant(time: &Option<prost_types::Timestamp>) -> (i64, i32) {
    let time = time.as_ref().expect("a time");
    (time.seconds, time.nanos)
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
}

fn update(item: ContentItem, paths: &[&str], key: &str) -> UpdateContentItemRequest {
    UpdateContentItemRequest {
        item: Some(item),
        update_mask: mask(paths),
        idempotency_key: key.to_owned(),
    }
}

fn retire(content_item_id: &str, reason: &str, key: &str) -> RetireContentItemRequest {
    RetireContentItemRequest {
        content_item_id: content_item_id.to_owned(),
        reason: reason.to_owned(),
        idempotency_key: key.to_owned(),
    }
}

/// Only the id and a new title: what a caller sends to change the title alone.
fn retitled(content_item_id: &str, title: &str) -> ContentItem {
    ContentItem {
        content_item_id: content_item_id.to_owned(),
        title: title.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_update_changes_the_masked_fields_and_a_retry_answers_the_same() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    let study = create(&suite, study_for_it_managers()).await?;
    let id = study.content_item_id.clone();

    let first = nurturing
        .update_content_item(update(
            retitled(&id, "Study: planning costs in 2026"),
            &["title"],
            "retitle",
        ))
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(first.title, "Study: planning costs in 2026");
    assert_eq!(
        ContentItem {
            title: study.title.clone(),
            update_time: study.update_time,
            ..first.clone()
        },
        study,
        "only the title and update_time changed"
    );
    assert!(instant(&first.update_time) > instant(&study.update_time));

    let summarised = nurturing
        .update_content_item(update(
            ContentItem {
                content_item_id: id.clone(),
                summary: "What manual planning costs a mid-sized plant".to_owned(),
                priority: 2,
                ..Default::default()
            },
            &["item.summary", "priority"],
            "summarise",
        ))
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(
        (summarised.title.as_str(), summarised.priority),
        ("Study: planning costs in 2026", 2),
        "paths may carry the item. prefix, and earlier changes stay"
    );

    let retry = nurturing
        .update_content_item(update(
            retitled(&id, "Study: planning costs in 2026"),
            &["title"],
            "retitle",
        ))
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(
        retry, first,
        "a retry answers as the first call did, even after a later change"
    );
    assert_eq!(
        refused(
            nurturing
                .update_content_item(update(
                    retitled(&id, "Another title"),
                    &["title"],
                    "retitle"
                ))
                .await,
            Code::AlreadyExists,
        )
        .code(),
        Code::AlreadyExists
    );

    let moved = nurturing
        .update_content_item(update(
            ContentItem {
                content_item_id: id.clone(),
                stage: BuyingStage::SolutionSearch.into(),
                buyer_roles: vec!["cfo".to_owned()],
                ..study_for_it_managers()
            },
            &[],
            "replace-all",
        ))
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(
        (moved.title.as_str(), moved.summary.as_str(), moved.priority),
        (study.title.as_str(), "", 0),
        "an empty mask replaces every field"
    );
    let cfo_b2 = nurturing
        .list_content_items(ListContentItemsRequest {
            buyer_role: "cfo".to_owned(),
            stage: BuyingStage::SolutionSearch.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        cfo_b2.items,
        std::slice::from_ref(&moved),
        "the item moved to its new cell"
    );

    // Two callers changing different fields at once: both changes land.
    let (mut first_client, mut second_client) = (nurturing.clone(), nurturing.clone());
    let (titled, kinded) = tokio::join!(
        first_client.update_content_item(update(
            retitled(&id, "Study: the cost of planning"),
            &["title"],
            "concurrent-title",
        )),
        second_client.update_content_item(update(
            ContentItem {
                content_item_id: id.clone(),
                kind: ContentKind::Whitepaper.into(),
                ..Default::default()
            },
            &["kind"],
            "concurrent-kind",
        )),
    );
    titled?;
    kinded?;
    let both = nurturing
        .get_content_item(GetContentItemRequest {
            content_item_id: id.clone(),
        })
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(
        (both.title.as_str(), both.kind()),
        ("Study: the cost of planning", ContentKind::Whitepaper)
    );
    suite.stop().await
}

#[tokio::test]
async fn updates_are_refused_with_named_fields_unknown_items_and_retired_items()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    let study = create(&suite, study_for_it_managers()).await?;
    let id = study.content_item_id.clone();

    assert_eq!(
        violated_fields(
            nurturing
                .update_content_item(UpdateContentItemRequest {
                    item: None,
                    update_mask: mask(&["colour", "state", "item.create_time"]),
                    idempotency_key: String::new(),
                })
                .await
        ),
        [
            "item.content_item_id",
            "update_mask.paths[0]",
            "update_mask.paths[1]",
            "update_mask.paths[2]",
            "idempotency_key"
        ]
    );
    assert_eq!(
        violated_fields(
            nurturing
                .update_content_item(update(
                    retitled("not-a-uuid", "Title"),
                    &["title"],
                    "bad-id"
                ))
                .await
        ),
        ["item.content_item_id"]
    );
    assert_eq!(
        violated_fields(
            nurturing
                .update_content_item(update(
                    ContentItem {
                        content_item_id: id.clone(),
                        title: " ".to_owned(),
                        url: "ftp://example.com/study".to_owned(),
                        buyer_roles: vec!["cfo".to_owned(), String::new()],
                        language: "english".to_owned(),
                        ..Default::default()
                    },
                    &["title", "url", "buyer_roles", "language"],
                    "bad-values",
                ))
                .await
        ),
        [
            "item.title",
            "item.url",
            "item.buyer_roles[1]",
            "item.language"
        ],
        "new values obey the rules of a create"
    );
    assert_eq!(
        violated_fields(
            nurturing
                .update_content_item(update(retitled(&id, "Only a title"), &[], "no-mask"))
                .await
        ),
        [
            "item.kind",
            "item.url",
            "item.buyer_roles",
            "item.stage",
            "item.product",
            "item.language"
        ],
        "an empty mask replaces every field, so every field must be given"
    );
    let unchanged = nurturing
        .get_content_item(GetContentItemRequest {
            content_item_id: id.clone(),
        })
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(unchanged, study, "a refused update changes nothing");

    refused(
        nurturing
            .update_content_item(update(
                retitled(&uuid::Uuid::new_v4().to_string(), "Title"),
                &["title"],
                "unknown",
            ))
            .await,
        Code::NotFound,
    );

    nurturing
        .retire_content_item(retire(&id, "outdated pricing", "retire"))
        .await?;
    refused(
        nurturing
            .update_content_item(update(retitled(&id, "Title"), &["title"], "after-retire"))
            .await,
        Code::FailedPrecondition,
    );
    suite.stop().await
}

#[tokio::test]
async fn a_retired_item_stays_for_the_record_but_leaves_the_listing_and_the_grid()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    let study = create(&suite, study_for_it_managers()).await?;
    let id = study.content_item_id.clone();

    let retired = nurturing
        .retire_content_item(retire(&id, "outdated pricing", "retire-1"))
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(retired.state(), ContentItemState::Retired);
    assert!(retired.retire_time.is_some());
    assert_eq!(retired.update_time, retired.retire_time);
    assert_eq!(
        ContentItem {
            state: study.state,
            update_time: study.update_time,
            retire_time: None,
            ..retired.clone()
        },
        study,
        "the item itself stays as it was"
    );
    let fetched = nurturing
        .get_content_item(GetContentItemRequest {
            content_item_id: id.clone(),
        })
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(fetched, retired, "a retired item can still be read");

    let listed = nurturing
        .list_content_items(ListContentItemsRequest::default())
        .await?
        .into_inner();
    assert!(listed.items.is_empty(), "a retired item is offered no more");
    let with_retired = nurturing
        .list_content_items(ListContentItemsRequest {
            include_retired: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(with_retired.items, std::slice::from_ref(&retired));
    let grid = nurturing
        .get_content_grid(GetContentGridRequest::default())
        .await?
        .into_inner();
    assert!(
        grid.cells.is_empty(),
        "no active item names a role, so the grid has no rows: {grid:?}"
    );

    let again = nurturing
        .retire_content_item(retire(&id, "another reason", "retire-2"))
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(again, retired, "retiring a retired item changes nothing");
    let retry = nurturing
        .retire_content_item(retire(&id, "outdated pricing", "retire-1"))
        .await?
        .into_inner()
        .item
        .expect("item");
    assert_eq!(retry, retired);
    refused(
        nurturing
            .retire_content_item(retire(&id, "a different reason", "retire-1"))
            .await,
        Code::AlreadyExists,
    );

    refused(
        nurturing
            .retire_content_item(retire(
                &uuid::Uuid::new_v4().to_string(),
                "",
                "retire-unknown",
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(
        violated_fields(nurturing.retire_content_item(retire("", "", "")).await),
        ["content_item_id", "idempotency_key"]
    );
    assert_eq!(
        violated_fields(
            nurturing
                .retire_content_item(retire("study-1", "", "retire-bad-id"))
                .await
        ),
        ["content_item_id"]
    );
    suite.stop().await
}

fn grid_cell(role: &str, stage: BuyingStage, kinds: &[(ContentKind, u32)]) -> ContentGridCell {
    ContentGridCell {
        buyer_role: role.to_owned(),
        stage: stage.into(),
        item_count: kinds.iter().map(|(_, count)| count).sum(),
        kind_counts: kinds
            .iter()
            .map(|(kind, count)| ContentKindCount {
                kind: (*kind).into(),
                count: *count,
            })
            .collect(),
        flagged_enrollment_count: 0,
    }
}

#[tokio::test]
async fn the_grid_counts_active_items_per_cell_and_reports_the_gaps() -> anyhow::Result<()> {
    use BuyingStage::{
        ChoosingOffer as A, ProblemAwareness as B1, RequestingOffers as B3, SolutionSearch as B2,
    };
    use ContentKind::{Article, Study, Webinar};

    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    // The study is written for the IT manager and the CFO at B1.
    create(&suite, study_for_it_managers()).await?;
    for (title, kind, roles, stage, product, language) in [
        (
            "Webinar: planning live",
            Webinar,
            &["cfo"][..],
            B1,
            "erp",
            "en",
        ),
        (
            "Article: ERP approaches",
            Article,
            &["it-manager"][..],
            B2,
            "erp",
            "en",
        ),
        (
            "Artikel: ERP-Ansätze",
            Article,
            &["it-manager"][..],
            B2,
            "erp",
            "de",
        ),
        ("Study: CRM adoption", Study, &["ceo"][..], A, "crm", "en"),
    ] {
        create(
            &suite,
            ContentItem {
                title: title.to_owned(),
                kind: kind.into(),
                buyer_roles: roles.iter().map(|role| (*role).to_owned()).collect(),
                stage: stage.into(),
                product: product.to_owned(),
                language: language.to_owned(),
                ..study_for_it_managers()
            },
        )
        .await?;
    }
    let outdated = create(
        &suite,
        ContentItem {
            title: "Study: last year's prices".to_owned(),
            buyer_roles: vec!["cfo".to_owned()],
            stage: B3.into(),
            ..study_for_it_managers()
        },
    )
    .await?;
    nurturing
        .retire_content_item(retire(&outdated.content_item_id, "outdated", "retire"))
        .await?;

    let grid = nurturing
        .get_content_grid(GetContentGridRequest {
            product: "erp".to_owned(),
            buyer_roles: vec!["controller".to_owned(), "cfo".to_owned()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let expected = [
        grid_cell("cfo", B1, &[(Webinar, 1), (Study, 1)]),
        grid_cell("cfo", B2, &[]),
        grid_cell("cfo", B3, &[]),
        grid_cell("cfo", A, &[]),
        grid_cell("controller", B1, &[]),
        grid_cell("controller", B2, &[]),
        grid_cell("controller", B3, &[]),
        grid_cell("controller", A, &[]),
        grid_cell("it-manager", B1, &[(Study, 1)]),
        grid_cell("it-manager", B2, &[(Article, 2)]),
        grid_cell("it-manager", B3, &[]),
        grid_cell("it-manager", A, &[]),
    ];
    assert_eq!(
        grid.cells, expected,
        "rows: the roles of the active erp items and the roles asked for, by role, then stage; \
         the retired item counts nowhere"
    );
    let empty: Vec<ContentGridCell> = expected
        .iter()
        .filter(|cell| cell.item_count == 0)
        .cloned()
        .collect();
    assert_eq!(grid.gaps, empty, "by default only empty cells are gaps");

    let thin = nurturing
        .get_content_grid(GetContentGridRequest {
            product: "erp".to_owned(),
            min_items_per_cell: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        thin.gaps
            .iter()
            .map(|cell| (cell.buyer_role.as_str(), cell.stage(), cell.item_count))
            .collect::<Vec<_>>(),
        [
            ("cfo", B2, 0),
            ("cfo", B3, 0),
            ("cfo", A, 0),
            ("it-manager", B1, 1),
            ("it-manager", B3, 0),
            ("it-manager", A, 0),
        ],
        "a cell with fewer items than asked for is a gap"
    );

    let german = nurturing
        .get_content_grid(GetContentGridRequest {
            language: "de".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        german.cells,
        [
            grid_cell("it-manager", B1, &[]),
            grid_cell("it-manager", B2, &[(Article, 1)]),
            grid_cell("it-manager", B3, &[]),
            grid_cell("it-manager", A, &[]),
        ]
    );
    let every_product = nurturing
        .get_content_grid(GetContentGridRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        every_product
            .cells
            .iter()
            .map(|cell| cell.buyer_role.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["ceo", "cfo", "it-manager"].into(),
        "without a product, every product's roles"
    );

    assert_eq!(
        violated_fields(
            nurturing
                .get_content_grid(GetContentGridRequest {
                    language: "english".to_owned(),
                    buyer_roles: vec!["cfo".to_owned(), " ".to_owned(), "IT Manager".to_owned()],
                    ..Default::default()
                })
                .await
        ),
        ["language", "buyer_roles[1]", "buyer_roles[2]"]
    );
    suite.stop().await
}
