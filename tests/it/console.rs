//! The `leadflow` console against a running suite, as a user types it: a CSV import with a
//! bad row (named by line and field, the good rows written once however often the file is
//! imported), a lead shown with its score, class and history, the reps with their queues,
//! a funnel report as JSON, and a suite that does not answer; and `leadflow demo`, whose
//! reports must agree with what its simulation did.

use std::{process::Output, time::Duration};

use leadflow_proto::routing::v1::{
    CreateRepRequest, CreateTeamRequest, Rep, RoutingStrategy, SlaClock, Team,
};
use leadflow_tests::{TestSuite, eventually, leadflow_binary};

async fn leadflow(args: Vec<String>) -> anyhow::Result<Output> {
    let binary = leadflow_binary()?;
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .args(&args)
            .env_remove("RUST_LOG")
            .env_remove("LEADFLOW_SERVER")
            .output()
    })
    .await??;
    Ok(output)
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

fn json(output: &Output) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(&output.stdout).map_err(|error| {
        anyhow::anyhow!(
            "not JSON ({error}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

const LEADS_CSV: &str = "\
email,first_name,last_name,company_name,web_domain,industry,employee_count,country_code,buyer_role,booth_note
ida.kraus@kraus-maschinenbau.example,Ida,Kraus,Kraus Maschinenbau,kraus-maschinenbau.example,manufacturing,250,DE,it-manager,asked for a demo
ben.hale@hale-freight.example,Ben,Hale,Hale Freight,hale-freight.example,logistics,many,GB,cfo,
tom.berg@berg-logistik.example,Tom,Berg,Berg Logistik,berg-logistik.example,logistics,80,AT,cfo,
";

#[tokio::test]
async fn the_console_imports_shows_lists_and_reports_through_the_running_suite()
-> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("leadflow-console-{}", uuid::Uuid::new_v4()));
    let suite = TestSuite::start_embedded(&data_dir).await?;
    let server = format!("http://{}", suite.address());
    let csv = data_dir.join("fair.csv");
    std::fs::write(&csv, LEADS_CSV)?;
    let csv = csv.display().to_string();
    let import = args(&[
        "import",
        &csv,
        "--product",
        "erp",
        "--source",
        "trade-fair",
        "--server",
        &server,
        "--format",
        "json",
    ]);

    // The bad row is named and fails the command; the good ones are in.
    let imported = leadflow(import.clone()).await?;
    assert!(
        !imported.status.success(),
        "a rejected row fails the import"
    );
    let summary = json(&imported)?;
    assert_eq!(summary["accepted"], 2);
    assert_eq!(summary["contactsCreated"], 2);
    assert_eq!(summary["rejected"][0]["line"], 3);
    assert_eq!(summary["rejected"][0]["field"], "lead.employee_count");
    // The same file again gets the first answers and writes nothing twice: the funnel
    // below counts two leads, not four.
    let again = json(&leadflow(import).await?)?;
    assert_eq!(again, summary);

    let contact = suite
        .capture()
        .get_contact(leadflow_proto::capture::v1::GetContactRequest {
            lookup: Some(
                leadflow_proto::capture::v1::get_contact_request::Lookup::Email(
                    "ida.kraus@kraus-maschinenbau.example".to_owned(),
                ),
            ),
        })
        .await?
        .into_inner()
        .contact
        .expect("the imported contact");
    assert_eq!(
        contact.custom_fields.get("booth_note").map(String::as_str),
        Some("asked for a demo")
    );
    let lead_id = contact.lead_id;

    // Scoring learns of the lead from capture's events; the lead shows once it has.
    let show = args(&[
        "lead",
        "show",
        &lead_id,
        "--product",
        "erp",
        "--server",
        &server,
        "--format",
        "json",
    ]);
    let shown = std::sync::Mutex::new(serde_json::Value::Null);
    let scored = eventually(Duration::from_secs(20), || async {
        match leadflow(show.clone())
            .await
            .ok()
            .and_then(|output| json(&output).ok())
        {
            Some(view) if !view["score"].is_null() => {
                *shown.lock().expect("not poisoned") = view;
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(scored, "lead show never had a score");
    let view = shown.into_inner().expect("not poisoned");
    assert_eq!(
        view["lead"]["lead"]["profile"]["companyName"],
        "Kraus Maschinenbau"
    );
    assert_eq!(
        view["lead"]["contacts"][0]["profile"]["email"],
        "ida.kraus@kraus-maschinenbau.example"
    );
    assert_eq!(view["score"]["score"]["stage"], "LIFECYCLE_STAGE_NEW");
    assert_eq!(view["stageHistory"][0]["toStage"], "LIFECYCLE_STAGE_NEW");
    let table = leadflow(args(&[
        "lead",
        "show",
        &lead_id,
        "--product",
        "erp",
        "--server",
        &server,
    ]))
    .await?;
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout)?;
    assert!(table.contains("Kraus Maschinenbau"), "{table}");
    assert!(
        table.contains("first seen"),
        "the history shows the start: {table}"
    );

    // A rep in a team shows with the team's (empty) queue.
    let mut routing = suite.routing();
    let rep = routing
        .create_rep(CreateRepRequest {
            rep: Some(Rep {
                email: "anna.berger@example.com".to_owned(),
                display_name: "Anna Berger".to_owned(),
                time_zone: "Europe/Berlin".to_owned(),
                capacity: 25,
                weight: 1,
                active: true,
                ..Default::default()
            }),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner()
        .rep
        .expect("rep");
    routing
        .create_team(CreateTeamRequest {
            team: Some(Team {
                name: "Inside sales".to_owned(),
                member_rep_ids: vec![rep.rep_id],
                strategy: RoutingStrategy::RoundRobin.into(),
                sla: Some(prost_types::Duration {
                    seconds: 3_600,
                    nanos: 0,
                }),
                sla_clock: SlaClock::WallTime.into(),
                ..Default::default()
            }),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        })
        .await?;
    let reps = leadflow(args(&["reps", "list", "--server", &server])).await?;
    let reps_text = String::from_utf8(reps.stdout)?;
    assert!(
        reps.status.success(),
        "{}",
        String::from_utf8_lossy(&reps.stderr)
    );
    assert!(reps_text.contains("Anna Berger"), "{reps_text}");
    assert!(
        reps_text.contains("Team Inside sales (round robin): Anna Berger; 0 leads queued"),
        "{reps_text}"
    );

    let funnel = leadflow(args(&[
        "report",
        "funnel",
        "--product",
        "erp",
        "--from",
        "2020-01-01",
        "--period",
        "half-year",
        "--server",
        &server,
        "--format",
        "json",
    ]))
    .await?;
    let funnel = json(&funnel)?;
    assert_eq!(funnel["totals"]["newLeadCount"], 2);

    let unreachable = leadflow(args(&["reps", "list", "--server", "http://127.0.0.1:1"])).await?;
    assert!(!unreachable.status.success());
    let stderr = String::from_utf8(unreachable.stderr)?;
    assert!(
        stderr.contains("cannot reach the suite at http://127.0.0.1:1"),
        "{stderr}"
    );

    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

fn figure(check: &serde_json::Value, name: &str) -> i64 {
    check[name].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn the_demo_reports_what_its_simulation_did() -> anyhow::Result<()> {
    let output = leadflow(args(&[
        "demo", "--leads", "200", "--months", "3", "--seed", "11", "--format", "json",
    ]))
    .await?;
    assert!(
        output.status.success(),
        "the demo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let demo = json(&output)?;
    let tally = &demo["simulation"]["tally"];
    assert_eq!(tally["leads"], 200);
    let checks = demo["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 8);
    for check in &checks {
        assert_eq!(
            figure(check, "simulated"),
            figure(check, "reported"),
            "{check}"
        );
    }
    // Three calendar months: two whole ones before this one, and this one so far.
    let periods = demo["funnel"]["periods"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(periods.len(), 3);
    let new_leads: i64 = periods
        .iter()
        .map(|period| period["totals"]["newLeadCount"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(new_leads, 200);
    // Every rate is its counts' quotient, and nothing converts that did not enter.
    for period in &periods {
        for conversion in period["totals"]["conversions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let entered = conversion["enteredCount"].as_f64().unwrap_or(0.0);
            let converted = conversion["convertedCount"].as_f64().unwrap_or(0.0);
            assert!(converted <= entered, "{conversion}");
            let rate = conversion["rate"].as_f64().unwrap_or(-1.0);
            let expected = if entered == 0.0 {
                0.0
            } else {
                converted / entered
            };
            assert!((rate - expected).abs() < 1e-9, "{conversion}");
        }
    }
    // The heat map holds the leads in hand: all but customers and the disqualified.
    let cells: i64 = demo["heatMap"]["cells"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|cell| cell["leadCount"].as_i64().unwrap_or(0))
        .sum();
    let in_hand = demo["heatMap"]["totalLeadCount"].as_i64().unwrap_or(-1);
    assert_eq!(cells, in_hand);
    let stage = |name: &str| {
        demo["funnel"]["totals"]["stageCounts"]
            .as_array()
            .and_then(|counts| counts.iter().find(|count| count["stage"] == name))
            .and_then(|count| count["leadCount"].as_i64())
            .unwrap_or(0)
    };
    assert_eq!(
        in_hand,
        200 - stage("LIFECYCLE_STAGE_CUSTOMER") - stage("LIFECYCLE_STAGE_DISQUALIFIED")
    );
    // The world did what a funnel does: mail went out and some of it was read, sales got
    // leads; and the nurture rates are the counts' quotients.
    assert!(
        tally["mailsReceived"].as_i64().unwrap_or(0) > 100,
        "{tally}"
    );
    assert!(tally["opens"].as_i64().unwrap_or(0) > 0, "{tally}");
    assert!(tally["accepted"].as_i64().unwrap_or(0) > 0, "{tally}");
    let nurture = &demo["nurture"]["totals"];
    let sent = nurture["sentCount"].as_f64().unwrap_or(0.0);
    let opened = nurture["openedCount"].as_f64().unwrap_or(0.0);
    assert!((nurture["openRate"].as_f64().unwrap_or(-1.0) - opened / sent).abs() < 1e-9);
    Ok(())
}
