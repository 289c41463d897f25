//! Scoring models through the gRPC API: versions per product, idempotent creation,
//! validation that names each wrong field.

use leadflow_proto::{
    common::v1::ActivityType,
    scoring::v1::{
        CreateScoringModelRequest, EngagementRule, FitOperator, FitRule, GetScoringModelRequest,
        ListScoringModelsRequest, ProfileAttribute, ScoringModel,
    },
};
use leadflow_tests::TestSuite;
use tonic::Code;
use tonic_types::StatusExt;

pub(crate) fn seed_model(product: &str) -> ScoringModel {
    let rule = |activity_type: ActivityType, points: u32| EngagementRule {
        activity_type: activity_type.into(),
        points,
        half_life: Some(prost_types::Duration {
            seconds: 90 * 86_400,
            nanos: 0,
        }),
        ..Default::default()
    };
    ScoringModel {
        product: product.to_owned(),
        name: "Seed model".to_owned(),
        threshold: 250,
        engagement_rules: vec![
            rule(ActivityType::TeaserRead, 10),
            rule(ActivityType::EmailOpened, 10),
            rule(ActivityType::FactSheetRequested, 20),
            rule(ActivityType::VideoCompleted, 30),
            rule(ActivityType::ContentCommented, 40),
            rule(ActivityType::SlideDeckDownloaded, 50),
            rule(ActivityType::KnowledgeTestPassed, 100),
            rule(ActivityType::SurveyAnswered, 100),
        ],
        fit_rules: vec![FitRule {
            rule_id: "core-industry".to_owned(),
            attribute: ProfileAttribute::Industry.into(),
            operator: FitOperator::In.into(),
            values: vec!["manufacturing".to_owned()],
            points: 30,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn models_are_stored_versioned_per_product_and_read_back() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut scoring = suite.scoring();

    let first = scoring
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(seed_model("erp")),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    assert_eq!(first.version, 1);
    assert!(!first.active, "a new version is inactive until activated");
    assert!(first.create_time.is_some());
    assert_eq!(first.engagement_rules.len(), 8);

    let second = scoring
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(ScoringModel {
                threshold: 300,
                ..seed_model("erp")
            }),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    assert_eq!(second.version, 2);
    let other_product = scoring
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(seed_model("crm")),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    assert_eq!(other_product.version, 1, "versions count per product");

    let fetched = scoring
        .get_scoring_model(GetScoringModelRequest {
            model_id: first.model_id.clone(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    assert_eq!(fetched, first);

    let page = scoring
        .list_scoring_models(ListScoringModelsRequest {
            product: "erp".to_owned(),
            page_size: 1,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(page.models.len(), 1);
    assert_eq!(page.models[0].version, 2, "newest first");
    let rest = scoring
        .list_scoring_models(ListScoringModelsRequest {
            product: "erp".to_owned(),
            page_size: 1,
            page_token: page.next_page_token.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(rest.models.len(), 1);
    assert_eq!(rest.models[0].version, 1);
    assert!(rest.next_page_token.is_empty(), "no third page");
    suite.stop().await
}

#[tokio::test]
async fn a_retried_create_returns_the_same_model_and_a_reused_key_is_refused() -> anyhow::Result<()>
{
    let suite = TestSuite::start().await?;
    let mut scoring = suite.scoring();
    let request = CreateScoringModelRequest {
        model: Some(seed_model("erp")),
        idempotency_key: "create-erp-model-1".to_owned(),
    };
    let first = scoring
        .create_scoring_model(request.clone())
        .await?
        .into_inner();
    let retry = scoring
        .create_scoring_model(request.clone())
        .await?
        .into_inner();
    assert_eq!(first, retry);

    let listed = scoring
        .list_scoring_models(ListScoringModelsRequest {
            product: "erp".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.models.len(), 1, "the retry created nothing");

    let reused = scoring
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(ScoringModel {
                threshold: 999,
                ..seed_model("erp")
            }),
            ..request
        })
        .await
        .expect_err("same key, other payload");
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert!(
        reused.message().contains("idempotency_key"),
        "{}",
        reused.message()
    );
    suite.stop().await
}

#[tokio::test]
async fn invalid_models_are_refused_naming_every_wrong_field_and_nothing_is_stored()
-> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut scoring = suite.scoring();
    let mut model = seed_model("Not A Product");
    model.name = "  ".to_owned();
    model.threshold = 0;
    model.engagement_rules[1].activity_type = ActivityType::TeaserRead.into();
    model.fit_rules[0].operator = FitOperator::Between.into();
    let status = scoring
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(model),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
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
            "model.product",
            "model.name",
            "model.threshold",
            "model.engagement_rules[1].activity_type",
            "model.fit_rules[0].values",
        ]
    );

    let missing = scoring
        .create_scoring_model(CreateScoringModelRequest::default())
        .await
        .expect_err("no model");
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains("model: is required"),
        "{}",
        missing.message()
    );

    let listed = scoring
        .list_scoring_models(ListScoringModelsRequest {
            product: "not-a-product".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.models.is_empty());
    suite.stop().await
}

#[tokio::test]
async fn unknown_and_malformed_ids_get_not_found_and_invalid_argument() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut scoring = suite.scoring();
    let unknown = scoring
        .get_scoring_model(GetScoringModelRequest {
            model_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = scoring
        .get_scoring_model(GetScoringModelRequest {
            model_id: "42".to_owned(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("model_id"),
        "{}",
        malformed.message()
    );
    let bad_token = scoring
        .list_scoring_models(ListScoringModelsRequest {
            product: "erp".to_owned(),
            page_token: "garbage".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    suite.stop().await
}
