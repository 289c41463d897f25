//! The embedded default: the whole suite with no PostgreSQL and no Redis, its records in
//! SQLite files under the data directory, surviving a restart of the process.

use leadflow::ServiceKind;
use leadflow_proto::{
    routing::v1::{CreateRepRequest, GetRepRequest},
    scoring::v1::{CreateScoringModelRequest, GetScoringModelRequest},
};
use leadflow_tests::TestSuite;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{routing::rep, scoring::seed_model};

pub(crate) fn temporary_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "leadflow-embedded-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

#[tokio::test]
async fn the_suite_serves_without_servers_and_keeps_its_data_across_a_restart() -> anyhow::Result<()>
{
    let data_dir = temporary_data_dir();
    let suite = TestSuite::start_embedded(&data_dir).await?;
    for kind in ServiceKind::ALL {
        let status = suite
            .health()
            .check(HealthCheckRequest {
                service: kind.grpc_name().to_owned(),
            })
            .await?
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{kind:?}");
        assert!(
            data_dir.join(format!("{}.sqlite3", kind.schema())).exists(),
            "{kind:?}"
        );
    }
    let model = suite
        .scoring()
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(seed_model("erp")),
            idempotency_key: "model-1".to_owned(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    let jana = suite
        .routing()
        .create_rep(CreateRepRequest {
            rep: Some(rep("jana@example.com")),
            idempotency_key: "rep-1".to_owned(),
        })
        .await?
        .into_inner()
        .rep
        .expect("rep");
    suite.stop().await?;

    let restarted = TestSuite::start_embedded(&data_dir).await?;
    let model_again = restarted
        .scoring()
        .get_scoring_model(GetScoringModelRequest {
            model_id: model.model_id.clone(),
        })
        .await?
        .into_inner()
        .model;
    assert_eq!(model_again, Some(model));
    let rep_again = restarted
        .routing()
        .get_rep(GetRepRequest {
            rep_id: jana.rep_id.clone(),
        })
        .await?
        .into_inner()
        .rep;
    assert_eq!(rep_again, Some(jana));
    restarted.stop().await?;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}

#[tokio::test]
async fn the_embedded_mode_is_honest_about_being_one_process() {
    let settings = leadflow_platform::Settings {
        data_dir: temporary_data_dir(),
        ..Default::default()
    };
    let one = leadflow::Application::build(&settings, &[ServiceKind::Scoring])
        .await
        .expect_err("one service needs a database");
    assert!(
        one.to_string().contains("--service needs --database-url"),
        "{one}"
    );

    let with_redis = leadflow_platform::Settings {
        redis_url: Some("redis://127.0.0.1:6379".to_owned().into()),
        ..settings
    };
    let error = leadflow::Application::build(&with_redis, &ServiceKind::ALL)
        .await
        .expect_err("redis without a database");
    assert!(
        error
            .to_string()
            .contains("--redis-url needs --database-url"),
        "{error}"
    );
}

#[tokio::test]
async fn the_operator_commands_read_the_embedded_bus_without_any_server() -> anyhow::Result<()> {
    let settings = leadflow_platform::Settings {
        data_dir: temporary_data_dir(),
        ..Default::default()
    };
    let lag = leadflow::events_lag(&settings).await?;
    let mut groups: Vec<(&str, &str)> = lag
        .iter()
        .map(|group| (group.group.as_str(), group.stream.as_str()))
        .collect();
    groups.sort_unstable();
    // Every consumer group of the suite, on every producer it reads.
    assert_eq!(
        groups,
        [
            ("nurturing", "embedded:capture"),
            ("nurturing", "embedded:routing"),
            ("nurturing", "embedded:scoring"),
            ("routing", "embedded:capture"),
            ("routing", "embedded:scoring"),
            ("scoring", "embedded:capture"),
            ("scoring", "embedded:nurturing"),
            ("scoring", "embedded:routing"),
        ],
        "{lag:?}"
    );
    let letters = leadflow::dead_letters(&settings, 10).await?;
    assert!(letters.is_empty(), "{letters:?}");
    for kind in ServiceKind::ALL {
        assert!(
            settings
                .data_dir
                .join(format!("{}.sqlite3", kind.schema()))
                .exists(),
            "{kind:?}"
        );
    }
    std::fs::remove_dir_all(&settings.data_dir)?;
    Ok(())
}
