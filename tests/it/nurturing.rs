//! The content library through the gRPC API: items stored and read back, filtered into the
//! role x stage grid, created once per idempotency key, refused with named fields.

use leadflow_proto::{
    common::v1::BuyingStage,
    nurturing::v1::{
        ContentItem, ContentItemState, ContentKind, CreateContentItemRequest,
        GetContentItemRequest, ListContentItemsRequest,
    },
};
use leadflow_tests::TestSuite;
use tonic::Code;
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
