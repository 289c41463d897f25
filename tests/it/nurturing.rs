//! The content library through the gRPC API: items stored and read back, filtered into the
//! role x stage grid, created once per idempotency key, refused with named fields; changed
//! where the update mask says, retired for the record, and laid out as the role x stage
//! grid with its gap report. Mail templates checked against the merge fields and kept
//! as written; tracks created with defaults and published in versions that never change,
//! refused with named fields, missing templates, stale versions and taken names.

use leadflow_proto::{
    common::v1::{BuyingStage, LeadClass},
    nurturing::v1::{
        ContentGridCell, ContentItem, ContentItemState, ContentKind, ContentKindCount,
        CreateContentItemRequest, CreateTemplateRequest, CreateTrackRequest, GetContentGridRequest,
        GetContentItemRequest, GetTemplateRequest, GetTrackRequest, KindTemplates,
        ListContentItemsRequest, ListTemplatesRequest, ListTracksRequest, MailTemplate,
        PublishTrackVersionRequest, QuietHours, RetireContentItemRequest, TimeZoneMode, Track,
        TrackVersion, UpdateContentItemRequest, nurturing_service_client::NurturingServiceClient,
    },
};
use leadflow_tests::TestSuite;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub(crate) fn study_for_it_managers() -> ContentItem {
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

fn offer_template() -> MailTemplate {
    MailTemplate {
        name: "B1 offer (en)".to_owned(),
        language: "en".to_owned(),
        subject: "{{ item.title }} for {{ lead.company_name }}".to_owned(),
        html_body: "<p>Hello {{ contact.first_name }},</p><p><a href=\"{{ item.url }}\">{{ item.title }}</a></p>"
            .to_owned(),
        text_body: "Hello {{ contact.first_name }},\n\n{{ item.title }}: {{ item.url }}\n".to_owned(),
        ..Default::default()
    }
}

async fn create_template(
    nurturing: &mut NurturingServiceClient<tonic::transport::Channel>,
    template: MailTemplate,
) -> anyhow::Result<MailTemplate> {
    Ok(nurturing
        .create_template(CreateTemplateRequest {
            template: Some(template),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner()
        .template
        .expect("template"))
}

fn erp_track(name: &str) -> Track {
    Track {
        name: name.to_owned(),
        description: "Mid-market ERP leads".to_owned(),
        product: "erp".to_owned(),
        ..Default::default()
    }
}

fn version_offering(template_id: &str) -> TrackVersion {
    TrackVersion {
        offer_template_id: template_id.to_owned(),
        ..Default::default()
    }
}

fn days(days: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: days * 86_400,
        nanos: 0,
    })
}

#[tokio::test]
async fn templates_are_checked_stored_and_listed_newest_first() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    let request = CreateTemplateRequest {
        template: Some(offer_template()),
        idempotency_key: "template-1".to_owned(),
    };
    let created = nurturing
        .create_template(request.clone())
        .await?
        .into_inner()
        .template
        .expect("template");
    assert!(uuid::Uuid::parse_str(&created.template_id).is_ok());
    assert!(created.create_time.is_some());
    assert_eq!(
        created.merge_fields,
        [
            "contact.first_name",
            "item.title",
            "item.url",
            "lead.company_name"
        ]
    );
    assert_eq!(
        created.html_body,
        offer_template().html_body,
        "kept as written"
    );
    assert_eq!(
        nurturing
            .create_template(request)
            .await?
            .into_inner()
            .template,
        Some(created.clone()),
        "a retry answers the same"
    );
    let reused = nurturing
        .create_template(CreateTemplateRequest {
            template: Some(MailTemplate {
                name: "Another".to_owned(),
                ..offer_template()
            }),
            idempotency_key: "template-1".to_owned(),
        })
        .await;
    refused(reused, Code::AlreadyExists);

    let fetched = nurturing
        .get_template(GetTemplateRequest {
            template_id: created.template_id.clone(),
        })
        .await?
        .into_inner()
        .template;
    assert_eq!(fetched, Some(created.clone()));

    let german = create_template(
        &mut nurturing,
        MailTemplate {
            name: "B1 Angebot (de)".to_owned(),
            language: "de".to_owned(),
            ..offer_template()
        },
    )
    .await?;
    let newest = create_template(&mut nurturing, offer_template()).await?;
    let first_page = nurturing
        .list_templates(ListTemplatesRequest {
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(first_page.templates, [newest.clone(), german.clone()]);
    let last_page = nurturing
        .list_templates(ListTemplatesRequest {
            page_size: 2,
            page_token: first_page.next_page_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(last_page.templates, std::slice::from_ref(&created));
    assert!(last_page.next_page_token.is_empty());
    let english = nurturing
        .list_templates(ListTemplatesRequest {
            language: "en".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(english.templates, [newest, created]);

    assert_eq!(
        violated_fields(
            nurturing
                .list_templates(ListTemplatesRequest {
                    page_size: -1,
                    page_token: "nonsense".to_owned(),
                    ..Default::default()
                })
                .await
        ),
        ["page_size", "page_token"]
    );
    assert_eq!(
        violated_fields(
            nurturing
                .list_templates(ListTemplatesRequest {
                    language: "en".to_owned(),
                    page_token: german.template_id.clone(),
                    ..Default::default()
                })
                .await
        ),
        ["page_token"],
        "a token of another language's listing"
    );
    refused(
        nurturing
            .get_template(GetTemplateRequest {
                template_id: uuid::Uuid::new_v4().to_string(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(
        violated_fields(
            nurturing
                .get_template(GetTemplateRequest {
                    template_id: "not-a-uuid".to_owned(),
                })
                .await
        ),
        ["template_id"]
    );
    suite.stop().await
}

#[tokio::test]
async fn invalid_templates_name_each_wrong_field() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    let empty = nurturing
        .create_template(CreateTemplateRequest {
            template: Some(MailTemplate {
                name: " ".to_owned(),
                language: "english".to_owned(),
                subject: String::new(),
                html_body: String::new(),
                text_body: String::new(),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        })
        .await;
    assert_eq!(
        violated_fields(empty),
        [
            "template.name",
            "template.language",
            "template.subject",
            "template.html_body",
            "template.text_body",
            "idempotency_key"
        ]
    );
    let broken = nurturing
        .create_template(CreateTemplateRequest {
            template: Some(MailTemplate {
                html_body: "<p>{{ contact.shoe_size }}</p>".to_owned(),
                text_body: "{% if %}".to_owned(),
                ..offer_template()
            }),
            idempotency_key: "broken".to_owned(),
        })
        .await;
    let status = refused(broken, Code::InvalidArgument);
    let violations = status
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations;
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["template.text_body"], "a part that does not parse");
    assert!(violations[0].description.contains("does not parse"));
    let unknown = nurturing
        .create_template(CreateTemplateRequest {
            template: Some(MailTemplate {
                html_body: "<p>{{ contact.shoe_size }}</p>".to_owned(),
                ..offer_template()
            }),
            idempotency_key: "unknown-field".to_owned(),
        })
        .await;
    let status = refused(unknown, Code::InvalidArgument);
    let violations = status
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "template.html_body");
    assert!(violations[0].description.contains("contact.shoe_size"));
    suite.stop().await
}

#[tokio::test]
async fn tracks_are_created_with_defaults_and_published_in_versions() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    tracks_are_created_read_and_published(&suite).await?;
    suite.stop().await
}

#[tokio::test]
async fn tracks_are_created_and_published_in_the_embedded_mode() -> anyhow::Result<()> {
    let data_dir =
        std::env::temp_dir().join(format!("leadflow-nurturing-{}", uuid::Uuid::new_v4()));
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let result = tracks_are_created_read_and_published(&suite).await;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn tracks_are_created_read_and_published(suite: &TestSuite) -> anyhow::Result<()> {
    let mut nurturing = suite.nurturing();
    let offer = create_template(&mut nurturing, offer_template()).await?;
    let webinar = create_template(
        &mut nurturing,
        MailTemplate {
            name: "Webinar invitation".to_owned(),
            ..offer_template()
        },
    )
    .await?;
    let create = CreateTrackRequest {
        track: Some(erp_track("ERP mid-market nurture")),
        first_version: Some(version_offering(&offer.template_id)),
        idempotency_key: "track-1".to_owned(),
    };
    let created = nurturing.create_track(create.clone()).await?.into_inner();
    let track = created.track.clone().expect("track");
    let first = created.version.clone().expect("version");
    assert!(uuid::Uuid::parse_str(&track.track_id).is_ok());
    assert_eq!(track.latest_version, 1);
    assert_eq!(track.update_time, first.publish_time);
    assert_eq!(
        (first.track_id.as_str(), first.version),
        (track.track_id.as_str(), 1)
    );
    assert_eq!(first.cadence, days(21), "the defaults are stored");
    assert_eq!(first.max_interval, days(30));
    assert_eq!(first.reaction_window, days(7));
    assert_eq!(first.max_attempts, 3);
    assert_eq!(first.default_time_zone, "UTC");
    assert_eq!(first.time_zone_mode(), TimeZoneMode::Contact);
    assert_eq!(first.quiet_hours, None);
    assert_eq!(
        nurturing.create_track(create).await?.into_inner(),
        created,
        "a retry answers the same"
    );

    let second_request = PublishTrackVersionRequest {
        track_id: track.track_id.clone(),
        version: Some(TrackVersion {
            cadence: days(14),
            max_interval: days(28),
            reaction_window: days(5),
            max_attempts: 2,
            quiet_hours: Some(QuietHours {
                start_minute: 1_200,
                end_minute: 480,
                skip_weekends: true,
            }),
            time_zone_mode: TimeZoneMode::Track.into(),
            default_time_zone: "Europe/Berlin".to_owned(),
            fallback_language: "en".to_owned(),
            alternative_offer_template_id: offer.template_id.clone(),
            kind_templates: vec![KindTemplates {
                kind: ContentKind::Webinar.into(),
                offer_template_id: webinar.template_id.clone(),
                ..Default::default()
            }],
            auto_enroll_classes: vec![LeadClass::B1.into(), LeadClass::B2.into()],
            change_note: "Faster cadence".to_owned(),
            ..version_offering(&offer.template_id)
        }),
        expected_latest_version: 1,
        idempotency_key: "publish-2".to_owned(),
    };
    let published = nurturing
        .publish_track_version(second_request.clone())
        .await?
        .into_inner();
    let second = published.version.clone().expect("version");
    assert_eq!(second.version, 2);
    assert_eq!(published.track.as_ref().map(|t| t.latest_version), Some(2));
    assert_eq!(second.cadence, days(14));
    assert_eq!(second.max_attempts, 2);
    assert_eq!(second.default_time_zone, "Europe/Berlin");
    assert_eq!(second.kind_templates.len(), 1);
    assert_eq!(second.auto_enroll_classes.len(), 2);

    let stale = nurturing
        .publish_track_version(PublishTrackVersionRequest {
            idempotency_key: "publish-late".to_owned(),
            ..second_request.clone()
        })
        .await;
    refused(stale, Code::Aborted);
    let third = nurturing
        .publish_track_version(PublishTrackVersionRequest {
            version: Some(version_offering(&webinar.template_id)),
            expected_latest_version: 0,
            idempotency_key: "publish-3".to_owned(),
            ..second_request.clone()
        })
        .await?
        .into_inner();
    assert_eq!(third.version.map(|v| v.version), Some(3));
    assert_eq!(
        nurturing
            .publish_track_version(second_request.clone())
            .await?
            .into_inner(),
        published,
        "a retry answers as the first call did, though version 3 came since"
    );
    refused(
        nurturing
            .publish_track_version(PublishTrackVersionRequest {
                expected_latest_version: 3,
                ..second_request.clone()
            })
            .await,
        Code::AlreadyExists,
    );

    let latest = nurturing
        .get_track(GetTrackRequest {
            track_id: track.track_id.clone(),
            version: 0,
        })
        .await?
        .into_inner();
    assert_eq!(latest.track.as_ref().map(|t| t.latest_version), Some(3));
    assert_eq!(latest.version.map(|v| v.version), Some(3));
    let kept = nurturing
        .get_track(GetTrackRequest {
            track_id: track.track_id.clone(),
            version: 1,
        })
        .await?
        .into_inner();
    assert_eq!(kept.version, Some(first), "version 1 never changes");
    refused(
        nurturing
            .get_track(GetTrackRequest {
                track_id: track.track_id.clone(),
                version: 4,
            })
            .await,
        Code::NotFound,
    );
    refused(
        nurturing
            .get_track(GetTrackRequest {
                track_id: uuid::Uuid::new_v4().to_string(),
                version: 0,
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(
        violated_fields(
            nurturing
                .get_track(GetTrackRequest {
                    track_id: String::new(),
                    version: 0,
                })
                .await
        ),
        ["track_id"]
    );

    let crm = nurturing
        .create_track(CreateTrackRequest {
            track: Some(Track {
                product: "crm".to_owned(),
                ..erp_track("CRM nurture")
            }),
            first_version: Some(version_offering(&offer.template_id)),
            idempotency_key: "track-crm".to_owned(),
        })
        .await?
        .into_inner()
        .track
        .expect("track");
    let all = nurturing
        .list_tracks(ListTracksRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(all.tracks, std::slice::from_ref(&crm), "by name");
    let rest = nurturing
        .list_tracks(ListTracksRequest {
            page_size: 1,
            page_token: all.next_page_token,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        rest.tracks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["ERP mid-market nurture"]
    );
    assert!(rest.next_page_token.is_empty());
    let erp = nurturing
        .list_tracks(ListTracksRequest {
            product: "erp".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(erp.tracks.len(), 1);
    assert_eq!(erp.tracks[0].track_id, track.track_id);
    assert_eq!(
        violated_fields(
            nurturing
                .list_tracks(ListTracksRequest {
                    product: "erp".to_owned(),
                    page_token: crm.track_id.clone(),
                    ..Default::default()
                })
                .await
        ),
        ["page_token"]
    );
    Ok(())
}

#[tokio::test]
async fn invalid_tracks_name_each_wrong_field() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut nurturing = suite.nurturing();
    let offer = create_template(&mut nurturing, offer_template()).await?;
    let invalid = nurturing
        .create_track(CreateTrackRequest {
            track: Some(Track {
                name: String::new(),
                product: String::new(),
                ..Default::default()
            }),
            first_version: Some(TrackVersion {
                cadence: Some(prost_types::Duration {
                    seconds: -60,
                    nanos: 0,
                }),
                reaction_window: days(31),
                quiet_hours: Some(QuietHours {
                    start_minute: 1_440,
                    end_minute: 480,
                    skip_weekends: false,
                }),
                default_time_zone: "Mars/Olympus".to_owned(),
                ..version_offering(&offer.template_id)
            }),
            idempotency_key: String::new(),
        })
        .await;
    assert_eq!(
        violated_fields(invalid),
        [
            "track.name",
            "track.product",
            "first_version.cadence",
            "first_version.reaction_window",
            "first_version.quiet_hours.start_minute",
            "first_version.default_time_zone",
            "idempotency_key"
        ]
    );
    assert_eq!(
        violated_fields(
            nurturing
                .create_track(CreateTrackRequest {
                    track: Some(erp_track("ERP")),
                    first_version: Some(TrackVersion {
                        max_interval: days(5),
                        quiet_hours: Some(QuietHours {
                            start_minute: 0,
                            end_minute: 2_000,
                            skip_weekends: false,
                        }),
                        ..version_offering("")
                    }),
                    idempotency_key: "k".to_owned(),
                })
                .await
        ),
        [
            "first_version.reaction_window",
            "first_version.quiet_hours.end_minute",
            "first_version.offer_template_id"
        ],
        "the default reaction window is longer than a 5-day max interval"
    );

    let missing = uuid::Uuid::new_v4().to_string();
    let status = refused(
        nurturing
            .create_track(CreateTrackRequest {
                track: Some(erp_track("ERP nurture")),
                first_version: Some(TrackVersion {
                    kind_templates: vec![KindTemplates {
                        kind: ContentKind::Webinar.into(),
                        offer_template_id: offer.template_id.clone(),
                        alternative_offer_template_id: missing.clone(),
                    }],
                    ..version_offering(&offer.template_id)
                }),
                idempotency_key: "missing-template".to_owned(),
            })
            .await,
        Code::FailedPrecondition,
    );
    let failure = status
        .get_details_precondition_failure()
        .expect("precondition failure details");
    assert_eq!(
        failure
            .violations
            .iter()
            .map(|v| v.subject.as_str())
            .collect::<Vec<_>>(),
        ["first_version.kind_templates[0].alternative_offer_template_id"]
    );
    assert!(status.message().contains("kind_templates[0]"));

    let created = nurturing
        .create_track(CreateTrackRequest {
            track: Some(erp_track("ERP nurture")),
            first_version: Some(version_offering(&offer.template_id)),
            idempotency_key: "track".to_owned(),
        })
        .await?
        .into_inner()
        .track
        .expect("track");
    refused(
        nurturing
            .create_track(CreateTrackRequest {
                track: Some(erp_track("ERP nurture")),
                first_version: Some(version_offering(&offer.template_id)),
                idempotency_key: "same-name".to_owned(),
            })
            .await,
        Code::AlreadyExists,
    );
    refused(
        nurturing
            .create_track(CreateTrackRequest {
                track: Some(erp_track("Other")),
                first_version: Some(version_offering(&offer.template_id)),
                idempotency_key: "track".to_owned(),
            })
            .await,
        Code::AlreadyExists,
    );

    assert_eq!(
        violated_fields(
            nurturing
                .publish_track_version(PublishTrackVersionRequest {
                    track_id: String::new(),
                    version: Some(TrackVersion {
                        max_interval: Some(prost_types::Duration {
                            seconds: -1,
                            nanos: 0,
                        }),
                        time_zone_mode: 9,
                        ..version_offering(&offer.template_id)
                    }),
                    expected_latest_version: 0,
                    idempotency_key: String::new(),
                })
                .await
        ),
        [
            "track_id",
            "version.max_interval",
            "version.time_zone_mode",
            "idempotency_key"
        ]
    );
    refused(
        nurturing
            .publish_track_version(PublishTrackVersionRequest {
                track_id: uuid::Uuid::new_v4().to_string(),
                version: Some(version_offering(&offer.template_id)),
                expected_latest_version: 0,
                idempotency_key: "unknown-track".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    let status = refused(
        nurturing
            .publish_track_version(PublishTrackVersionRequest {
                track_id: created.track_id.clone(),
                version: Some(version_offering(&missing)),
                expected_latest_version: 1,
                idempotency_key: "publish-missing".to_owned(),
            })
            .await,
        Code::FailedPrecondition,
    );
    let failure = status
        .get_details_precondition_failure()
        .expect("precondition failure details");
    assert_eq!(failure.violations[0].subject, "version.offer_template_id");
    suite.stop().await
}
