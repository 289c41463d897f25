//! `leadflow lead show`: one lead as every service sees it: capture's profile and contacts,
//! scoring's score with its explanation and the class and stage history, and routing's
//! assignments.

use leadflow_platform::time::from_timestamp;
use leadflow_proto::{
    capture::v1 as capture,
    common::v1::{LeadClass, LifecycleStage, ProfileGrade},
    routing::v1 as routing,
    scoring::v1 as scoring,
};

use super::{CallResult, Clients, ConsoleError, print, print_json, table::Table, to_json};
use crate::cli::{LeadShowArgs, OutputFormat};

/// The lead as every service sees it.
#[derive(Debug, Clone)]
struct LeadView {
    lead: capture::GetLeadResponse,
    score: Option<scoring::ExplainScoreResponse>,
    classes: Vec<scoring::ClassChange>,
    stages: Vec<scoring::StageChange>,
    assignments: Vec<routing::Assignment>,
}

/// Shows one lead.
pub async fn show(args: &LeadShowArgs) -> Result<(), ConsoleError> {
    let clients = Clients::for_console(&args.console).await?;
    let lead = clients
        .capture()
        .get_lead(capture::GetLeadRequest {
            lead_id: args.lead_id.clone(),
        })
        .await
        .or_fail("GetLead")?;
    // A lead scoring has not scored for the product has no score, classes or stages yet.
    let score = match clients
        .scoring()
        .explain_score(scoring::ExplainScoreRequest {
            lead_id: args.lead_id.clone(),
            product: args.product.clone(),
            max_contributions: 20,
            as_of_time: None,
        })
        .await
    {
        Ok(response) => Some(response.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(ConsoleError::call("ExplainScore", &status)),
    };
    let (mut classes, mut stages) = (Vec::new(), Vec::new());
    if score.is_some() {
        let mut token = String::new();
        loop {
            let page = clients
                .scoring()
                .get_class_history(scoring::GetClassHistoryRequest {
                    lead_id: args.lead_id.clone(),
                    product: args.product.clone(),
                    page_size: 200,
                    page_token: token,
                })
                .await
                .or_fail("GetClassHistory")?;
            classes.extend(page.changes);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut token = String::new();
        loop {
            let page = clients
                .scoring()
                .get_stage_history(scoring::GetStageHistoryRequest {
                    lead_id: args.lead_id.clone(),
                    product: args.product.clone(),
                    page_size: 200,
                    page_token: token,
                })
                .await
                .or_fail("GetStageHistory")?;
            stages.extend(page.changes);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    let assignments = clients
        .routing()
        .list_assignments(routing::ListAssignmentsRequest {
            lead_id: args.lead_id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .or_fail("ListAssignments")?
        .assignments;
    let view = LeadView {
        lead,
        score,
        classes,
        stages,
        assignments,
    };
    match args.console.format {
        OutputFormat::Json => print_json(&serde_json::json!({
            "lead": to_json(&view.lead),
            "score": view.score.as_ref().map(to_json),
            "classHistory": view.classes.iter().map(to_json).collect::<Vec<_>>(),
            "stageHistory": view.stages.iter().map(to_json).collect::<Vec<_>>(),
            "assignments": view.assignments.iter().map(to_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => print(&render(&view, &args.product)),
    }
}

fn when(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(from_timestamp).map_or_else(
        || "-".to_owned(),
        |time| time.format("%Y-%m-%d %H:%M").to_string(),
    )
}

fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map_or_else(
        || "-".to_owned(),
        |name| {
            name.trim_start_matches(prefix)
                .to_lowercase()
                .replace('_', " ")
        },
    )
}

fn class_name(value: i32) -> String {
    enum_name(
        LeadClass::try_from(value)
            .ok()
            .map(|class| class.as_str_name()),
        "LEAD_CLASS_",
    )
    .to_uppercase()
}

fn stage_name(value: i32) -> String {
    enum_name(
        LifecycleStage::try_from(value)
            .ok()
            .map(|stage| stage.as_str_name()),
        "LIFECYCLE_STAGE_",
    )
}

fn render(view: &LeadView, product: &str) -> String {
    let lead = view.lead.lead.clone().unwrap_or_default();
    let profile = lead.profile.clone().unwrap_or_default();
    let mut text = format!(
        "Lead {} — {} ({}{}), {} employees, {}, {} {}, source {}\n",
        lead.lead_id,
        profile.company_name,
        profile.web_domain,
        if profile.site.is_empty() {
            String::new()
        } else {
            format!(", {}", profile.site)
        },
        profile.employee_count,
        if profile.industry.is_empty() {
            "industry unknown"
        } else {
            &profile.industry
        },
        profile.country_code,
        profile.region,
        profile.source,
    );
    let mut contacts = Table::new(&[
        "CONTACT",
        "EMAIL",
        "NAME",
        "ROLE",
        "JOB TITLE",
        "LAST ACTIVE",
    ]);
    for contact in &view.lead.contacts {
        let person = contact.profile.clone().unwrap_or_default();
        contacts.row([
            contact.contact_id.clone(),
            person.email,
            format!("{} {}", person.first_name, person.last_name)
                .trim()
                .to_owned(),
            person.buyer_role,
            person.job_title,
            when(contact.last_activity_time.as_ref()),
        ]);
    }
    text.push_str(&contacts.render());
    let Some(explained) = &view.score else {
        text.push_str(&format!("\nnot scored for {product} yet\n"));
        return text;
    };
    let score = explained.score.clone().unwrap_or_default();
    let grade = ProfileGrade::try_from(score.grade)
        .map_or("-", |grade| grade.as_str_name())
        .trim_start_matches("PROFILE_GRADE_")
        .to_owned();
    text.push_str(&format!(
        "\nScore for {product}: {:.1} = fit {} + engagement {:.1}; heat map {}{}; class {}; stage {}{}\n",
        score.total_points,
        score.fit_points,
        score.engagement_points,
        grade,
        score.engagement_level,
        class_name(score.lead_class),
        stage_name(score.stage),
        if score.sales_ready { "; sales-ready" } else { "" },
    ));
    let mut fit = Table::new(&["FIT RULE", "MATCHED", ">POINTS"]);
    for rule in &explained.fit_contributions {
        fit.row([
            if rule.description.is_empty() {
                rule.rule_id.clone()
            } else {
                rule.description.clone()
            },
            rule.matched_value.clone(),
            rule.points.to_string(),
        ]);
    }
    if !fit.is_empty() {
        text.push_str(&fit.render());
    }
    let mut engagement = Table::new(&["WHEN", "ACTIVITY", "CONTENT", ">POINTS", ">NOW"]);
    for contribution in &explained.engagement_contributions {
        let activity =
            leadflow_proto::common::v1::ActivityType::try_from(contribution.activity_type)
                .ok()
                .map(|kind| kind.as_str_name());
        engagement.row([
            when(contribution.occur_time.as_ref()),
            if contribution.custom_type.is_empty() {
                enum_name(activity, "ACTIVITY_TYPE_")
            } else {
                contribution.custom_type.clone()
            },
            contribution.content_id.clone(),
            contribution.original_points.to_string(),
            format!("{:.1}", contribution.decayed_points),
        ]);
    }
    if !engagement.is_empty() {
        text.push_str(&format!(
            "\nTop engagement ({} of {} contributions)\n",
            explained.engagement_contributions.len(),
            explained.total_contribution_count
        ));
        text.push_str(&engagement.render());
    }
    let mut history = Table::new(&["WHEN", "CHANGE", "FROM", "TO", "BY", "WHY"]);
    let mut rows: Vec<(Option<chrono::DateTime<chrono::Utc>>, [String; 6])> = Vec::new();
    for change in &view.classes {
        let time = change.change_time.as_ref().and_then(from_timestamp);
        rows.push((
            time,
            [
                when(change.change_time.as_ref()),
                "class".to_owned(),
                class_name(change.from_class),
                class_name(change.to_class),
                change.actor.clone(),
                change.reason.clone(),
            ],
        ));
    }
    for change in &view.stages {
        let time = change.change_time.as_ref().and_then(from_timestamp);
        rows.push((
            time,
            [
                when(change.change_time.as_ref()),
                "stage".to_owned(),
                stage_name(change.from_stage),
                stage_name(change.to_stage),
                change.actor.clone(),
                change.reason.clone(),
            ],
        ));
    }
    rows.sort_by_key(|(time, _)| *time);
    for (_, cells) in rows {
        history.row(cells);
    }
    if !history.is_empty() {
        text.push_str("\nHistory\n");
        text.push_str(&history.render());
    }
    let mut assignments =
        Table::new(&["ASSIGNMENT", "STATE", "REP", "TEAM", "METHOD", ">BREACHES"]);
    for assignment in &view.assignments {
        assignments.row([
            assignment.assignment_id.clone(),
            enum_name(
                routing::AssignmentState::try_from(assignment.state)
                    .ok()
                    .map(|state| state.as_str_name()),
                "ASSIGNMENT_STATE_",
            ),
            assignment.rep_id.clone(),
            assignment.team_id.clone(),
            enum_name(
                routing::AssignmentMethod::try_from(assignment.method)
                    .ok()
                    .map(|method| method.as_str_name()),
                "ASSIGNMENT_METHOD_",
            ),
            assignment.breach_count.to_string(),
        ]);
    }
    if !assignments.is_empty() {
        text.push_str("\nAssignments\n");
        text.push_str(&assignments.render());
    }
    text
}
