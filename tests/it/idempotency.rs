//! Fifty concurrent duplicates of a mutating call, on each of the four services and in both
//! modes: one effect, fifty identical answers; the same key with another payload is refused
//! with ALREADY_EXISTS and changes nothing.

use leadflow_proto::{
    capture::v1::{CreateFormRequest, ListFormsRequest},
    common::v1::TimeRange,
    nurturing::v1::{CreateContentItemRequest, ListContentItemsRequest},
    routing::v1::{CreateRepRequest, ListRepsRequest},
    scoring::v1::{ListMarketingCostsRequest, Money, RecordMarketingCostRequest},
};
use leadflow_tests::TestSuite;
use tonic::Code;

use crate::{capture::whitepaper_form, nurturing::study_for_it_managers, routing::rep};

const DUPLICATES: usize = 50;

/// Sends `DUPLICATES` copies of `request` through `method` of clones of `client` at once,
/// and answers what each got back.
macro_rules! all_at_once {
    ($client:expr, $method:ident, $request:expr) => {{
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..DUPLICATES {
            let mut client = $client.clone();
            let request = $request.clone();
            calls.spawn(async move {
                client
                    .$method(request)
                    .await
                    .map(tonic::Response::into_inner)
            });
        }
        let mut answers = Vec::with_capacity(DUPLICATES);
        while let Some(joined) = calls.join_next().await {
            answers.push(joined??);
        }
        answers
    }};
}

fn all_alike<T: PartialEq + std::fmt::Debug>(answers: &[T], call: &str) {
    assert_eq!(
        answers.len(),
        DUPLICATES,
        "{call}: every duplicate answered"
    );
    for answer in answers {
        assert_eq!(answer, &answers[0], "{call}: duplicates answer alike");
    }
}

fn refused_as_reused<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, call: &str) {
    let status = answer.expect_err("the same key with another payload");
    assert_eq!(status.code(), Code::AlreadyExists, "{call}: {status:?}");
}

async fn one_effect_per_service(suite: &TestSuite) -> anyhow::Result<()> {
    let create_form = CreateFormRequest {
        form: Some(whitepaper_form()),
        idempotency_key: "duplicate-form".to_owned(),
    };
    let answers = all_at_once!(suite.capture(), create_form, create_form);
    all_alike(&answers, "CreateForm");
    let mut renamed = whitepaper_form();
    renamed.name = "Another form".to_owned();
    refused_as_reused(
        suite
            .capture()
            .create_form(CreateFormRequest {
                form: Some(renamed),
                ..create_form
            })
            .await,
        "CreateForm",
    );
    let forms = suite
        .capture()
        .list_forms(ListFormsRequest {
            product: "erp".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .forms;
    assert_eq!(forms.len(), 1, "one form");

    let record_cost = RecordMarketingCostRequest {
        product: "erp".to_owned(),
        campaign: "spring-webinar".to_owned(),
        amount: Some(Money {
            currency_code: "EUR".to_owned(),
            minor_units: 1_000_000,
        }),
        time_range: Some(TimeRange {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_772_323_200,
                nanos: 0,
            }),
        }),
        note: "INV-2026-014".to_owned(),
        idempotency_key: "duplicate-cost".to_owned(),
    };
    let answers = all_at_once!(suite.scoring(), record_marketing_cost, record_cost);
    all_alike(&answers, "RecordMarketingCost");
    refused_as_reused(
        suite
            .scoring()
            .record_marketing_cost(RecordMarketingCostRequest {
                note: "INV-2026-015".to_owned(),
                ..record_cost
            })
            .await,
        "RecordMarketingCost",
    );
    let costs = suite
        .scoring()
        .list_marketing_costs(ListMarketingCostsRequest {
            product: "erp".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .costs;
    assert_eq!(costs.len(), 1, "one cost");

    let create_item = CreateContentItemRequest {
        item: Some(study_for_it_managers()),
        idempotency_key: "duplicate-item".to_owned(),
    };
    let answers = all_at_once!(suite.nurturing(), create_content_item, create_item);
    all_alike(&answers, "CreateContentItem");
    let mut retitled = study_for_it_managers();
    retitled.title = "Another title".to_owned();
    refused_as_reused(
        suite
            .nurturing()
            .create_content_item(CreateContentItemRequest {
                item: Some(retitled),
                ..create_item
            })
            .await,
        "CreateContentItem",
    );
    let items = suite
        .nurturing()
        .list_content_items(ListContentItemsRequest::default())
        .await?
        .into_inner()
        .items;
    assert_eq!(items.len(), 1, "one content item");

    let create_rep = CreateRepRequest {
        rep: Some(rep("jana.novak@example.com")),
        idempotency_key: "duplicate-rep".to_owned(),
    };
    let answers = all_at_once!(suite.routing(), create_rep, create_rep);
    all_alike(&answers, "CreateRep");
    refused_as_reused(
        suite
            .routing()
            .create_rep(CreateRepRequest {
                rep: Some(rep("another.rep@example.com")),
                ..create_rep
            })
            .await,
        "CreateRep",
    );
    let reps = suite
        .routing()
        .list_reps(ListRepsRequest::default())
        .await?
        .into_inner()
        .reps;
    assert_eq!(reps.len(), 1, "one rep");
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_one_effect_on_postgresql() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    one_effect_per_service(&suite).await?;
    suite.stop().await
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_one_effect_embedded() -> anyhow::Result<()> {
    let directory =
        std::env::temp_dir().join(format!("leadflow-duplicates-{}", uuid::Uuid::now_v7()));
    let suite = TestSuite::start_embedded(&directory).await?;
    one_effect_per_service(&suite).await?;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&directory);
    Ok(())
}
