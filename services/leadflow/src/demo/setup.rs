//! The demo's setup, made through the same gRPC calls a user makes: a scoring model for the
//! product, a role x stage content grid with its mail templates and a nurture track, three
//! sales teams in their territories with reps and working hours, the rule set that routes
//! leads to them, and the forms leads come in through.

use leadflow_proto::{
    capture::v1 as capture,
    common::v1::{ActivityType, BuyingStage, LeadClass},
    nurturing::v1 as nurturing,
    routing::v1 as routing,
    scoring::v1 as scoring,
};

use crate::console::{CallResult, Clients, ConsoleError};

/// The product the demo sells.
pub const PRODUCT: &str = "erp-cloud";

/// The buyer roles the content grid is written for.
pub const ROLES: [&str; 4] = ["it-manager", "cfo", "production-planner", "ceo"];

/// What the setup made, for the simulation to use.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The web form leads submit.
    pub form_id: String,
    /// How many reps the three teams have.
    pub rep_count: usize,
    /// The content items of the grid.
    pub content_items: usize,
}

fn key(name: &str) -> String {
    format!("demo-setup:{name}")
}

fn days(count: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: count * 86_400,
        nanos: 0,
    }
}

/// Makes everything the simulation runs on.
pub async fn install(clients: &Clients) -> Result<Setup, ConsoleError> {
    scoring_model(clients).await?;
    let content_items = content_grid(clients).await?;
    let rep_count = sales_teams(clients).await?;
    let form_id = web_form(clients).await?;
    Ok(Setup {
        form_id,
        rep_count,
        content_items,
    })
}

async fn scoring_model(clients: &Clients) -> Result<(), ConsoleError> {
    let rule = |activity_type: ActivityType, points: u32| scoring::EngagementRule {
        activity_type: activity_type.into(),
        points,
        half_life: Some(days(60)),
        ..Default::default()
    };
    use scoring::{FitOperator, ProfileAttribute};
    let fit = |rule_id: &str,
               attribute: ProfileAttribute,
               operator: FitOperator,
               values: &[&str],
               points: i32,
               description: &str| scoring::FitRule {
        rule_id: rule_id.to_owned(),
        attribute: attribute.into(),
        operator: operator.into(),
        values: values.iter().map(|value| (*value).to_owned()).collect(),
        points,
        disqualifier: false,
        description: description.to_owned(),
    };
    let mut not_a_buyer = fit(
        "no-buyer",
        ProfileAttribute::Industry,
        FitOperator::In,
        &["consulting", "education"],
        0,
        "consultants and students do not buy",
    );
    not_a_buyer.disqualifier = true;
    let model = scoring::ScoringModel {
        product: PRODUCT.to_owned(),
        name: "ERP cloud, field table".to_owned(),
        threshold: 250,
        engagement_rules: vec![
            rule(ActivityType::TeaserRead, 10),
            rule(ActivityType::EmailOpened, 10),
            rule(ActivityType::LinkClicked, 15),
            rule(ActivityType::PageVisited, 5),
            rule(ActivityType::WhitepaperDownloaded, 30),
            rule(ActivityType::FactSheetRequested, 20),
            rule(ActivityType::VideoCompleted, 30),
            rule(ActivityType::WebinarAttended, 40),
            rule(ActivityType::ContentCommented, 40),
            rule(ActivityType::SlideDeckDownloaded, 50),
            rule(ActivityType::KnowledgeTestPassed, 100),
            rule(ActivityType::SurveyAnswered, 100),
            rule(ActivityType::ContactRequested, 100),
        ],
        fit_rules: vec![
            fit(
                "core-industry",
                ProfileAttribute::Industry,
                FitOperator::In,
                &["manufacturing", "logistics"],
                30,
                "manufacturing and logistics are the core industries",
            ),
            fit(
                "mid-market",
                ProfileAttribute::EmployeeCount,
                FitOperator::Between,
                &["50", "5000"],
                15,
                "50 to 5,000 employees",
            ),
            fit(
                "decision-maker",
                ProfileAttribute::Seniority,
                FitOperator::In,
                &["c-level", "head-of-department"],
                20,
                "heads of department and C-level decide",
            ),
            not_a_buyer,
        ],
        ..Default::default()
    };
    let created = clients
        .scoring()
        .create_scoring_model(scoring::CreateScoringModelRequest {
            model: Some(model),
            idempotency_key: key("model"),
        })
        .await
        .or_fail("CreateScoringModel")?
        .model
        .unwrap_or_default();
    clients
        .scoring()
        .activate_scoring_model(scoring::ActivateScoringModelRequest {
            model_id: created.model_id,
            idempotency_key: key("model-activation"),
        })
        .await
        .or_fail("ActivateScoringModel")?;
    Ok(())
}

/// The grid: for each role and stage two items of kinds that suit the stage.
async fn content_grid(clients: &Clients) -> Result<usize, ConsoleError> {
    use nurturing::ContentKind;
    let stages = [
        (
            BuyingStage::ProblemAwareness,
            "b1",
            [ContentKind::Study, ContentKind::Article],
        ),
        (
            BuyingStage::SolutionSearch,
            "b2",
            [ContentKind::Whitepaper, ContentKind::Webinar],
        ),
        (
            BuyingStage::RequestingOffers,
            "b3",
            [ContentKind::CaseStudy, ContentKind::Video],
        ),
        (
            BuyingStage::ChoosingOffer,
            "a",
            [ContentKind::Invitation, ContentKind::CaseStudy],
        ),
    ];
    let mut count = 0;
    for role in ROLES {
        for (stage, code, kinds) in &stages {
            for (index, kind) in kinds.iter().enumerate() {
                let kind_name = kind
                    .as_str_name()
                    .trim_start_matches("CONTENT_KIND_")
                    .to_lowercase()
                    .replace('_', " ");
                clients
                    .nurturing()
                    .create_content_item(nurturing::CreateContentItemRequest {
                        item: Some(nurturing::ContentItem {
                            title: format!("ERP cloud for the {role}: {kind_name} {}", index + 1),
                            kind: (*kind).into(),
                            url: format!(
                                "https://www.example.com/erp-cloud/{role}/{code}/{}",
                                index + 1
                            ),
                            summary: format!(
                                "What a {role} at stage {} asks about ERP in the cloud.",
                                code.to_uppercase()
                            ),
                            buyer_roles: vec![role.to_owned()],
                            stage: (*stage).into(),
                            product: PRODUCT.to_owned(),
                            language: "en".to_owned(),
                            priority: u32::try_from(index).unwrap_or(0),
                            ..Default::default()
                        }),
                        idempotency_key: key(&format!("content:{role}:{code}:{index}")),
                    })
                    .await
                    .or_fail("CreateContentItem")?;
                count += 1;
            }
        }
    }
    let template = |name: &str, subject: &str, lead_in: &str| nurturing::MailTemplate {
        name: name.to_owned(),
        language: "en".to_owned(),
        subject: subject.to_owned(),
        html_body: format!(
            "<p>Hello {{{{ contact.first_name }}}},</p><p>{lead_in}</p>\
             <p><a href=\"{{{{ item.url }}}}\">{{{{ item.title }}}}</a></p><p>{{{{ item.summary }}}}</p>"
        ),
        text_body: format!(
            "Hello {{{{ contact.first_name }}}},\n\n{lead_in}\n\n{{{{ item.title }}}}: {{{{ item.url }}}}\n"
        ),
        ..Default::default()
    };
    let offer = clients
        .nurturing()
        .create_template(nurturing::CreateTemplateRequest {
            template: Some(template(
                "Offer",
                "{{ item.title }}",
                "we thought this might help you next:",
            )),
            idempotency_key: key("template:offer"),
        })
        .await
        .or_fail("CreateTemplate")?
        .template
        .unwrap_or_default();
    let alternative = clients
        .nurturing()
        .create_template(nurturing::CreateTemplateRequest {
            template: Some(template(
                "Alternative offer",
                "Another pick for you: {{ item.title }}",
                "perhaps this one suits you better:",
            )),
            idempotency_key: key("template:alternative"),
        })
        .await
        .or_fail("CreateTemplate")?
        .template
        .unwrap_or_default();
    clients
        .nurturing()
        .create_track(nurturing::CreateTrackRequest {
            track: Some(nurturing::Track {
                name: "ERP cloud nurture".to_owned(),
                description: "Role by stage content for leads not ready for sales".to_owned(),
                product: PRODUCT.to_owned(),
                ..Default::default()
            }),
            first_version: Some(nurturing::TrackVersion {
                offer_template_id: offer.template_id,
                alternative_offer_template_id: alternative.template_id,
                fallback_language: "en".to_owned(),
                auto_enroll_classes: [LeadClass::B1, LeadClass::B2, LeadClass::B3]
                    .into_iter()
                    .map(i32::from)
                    .collect(),
                ..Default::default()
            }),
            idempotency_key: key("track"),
        })
        .await
        .or_fail("CreateTrack")?;
    Ok(count)
}

/// Office hours, Monday to Friday, 08:00 to 18:00 in the rep's zone.
fn office_hours() -> Vec<routing::WorkingHours> {
    use routing::DayOfWeek;
    [
        DayOfWeek::Monday,
        DayOfWeek::Tuesday,
        DayOfWeek::Wednesday,
        DayOfWeek::Thursday,
        DayOfWeek::Friday,
    ]
    .into_iter()
    .map(|day| routing::WorkingHours {
        day_of_week: day.into(),
        start_minute: 8 * 60,
        end_minute: 18 * 60,
    })
    .collect()
}

/// A team's name, time zone, languages, and its reps' names and mailboxes.
type Territory = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

/// The territories: DACH, the English-speaking markets, and everyone else.
async fn sales_teams(clients: &Clients) -> Result<usize, ConsoleError> {
    let territories: [Territory; 3] = [
        (
            "DACH",
            "Europe/Berlin",
            &["de", "en"],
            &[
                ("Anna Berger", "anna.berger"),
                ("Jonas Weber", "jonas.weber"),
                ("Lena Fischer", "lena.fischer"),
            ],
        ),
        (
            "UK and North America",
            "Europe/London",
            &["en"],
            &[
                ("Oliver Smith", "oliver.smith"),
                ("Grace Miller", "grace.miller"),
                ("Ethan Brown", "ethan.brown"),
            ],
        ),
        (
            "International",
            "Europe/Paris",
            &["en", "fr"],
            &[
                ("Camille Martin", "camille.martin"),
                ("Lucas Bernard", "lucas.bernard"),
            ],
        ),
    ];
    let mut team_ids = Vec::new();
    let mut rep_count = 0;
    for (team, zone, languages, reps) in territories {
        let mut rep_ids = Vec::new();
        for (name, mailbox) in reps {
            let rep = clients
                .routing()
                .create_rep(routing::CreateRepRequest {
                    rep: Some(routing::Rep {
                        email: format!("{mailbox}@sales.example.com"),
                        display_name: (*name).to_owned(),
                        time_zone: zone.to_owned(),
                        working_hours: office_hours(),
                        languages: languages
                            .iter()
                            .map(|language| (*language).to_owned())
                            .collect(),
                        capacity: 60,
                        weight: 1,
                        active: true,
                        ..Default::default()
                    }),
                    idempotency_key: key(&format!("rep:{mailbox}")),
                })
                .await
                .or_fail("CreateRep")?
                .rep
                .unwrap_or_default();
            rep_ids.push(rep.rep_id);
            rep_count += 1;
        }
        let created = clients
            .routing()
            .create_team(routing::CreateTeamRequest {
                team: Some(routing::Team {
                    name: team.to_owned(),
                    team_lead_rep_id: rep_ids[0].clone(),
                    member_rep_ids: rep_ids,
                    strategy: routing::RoutingStrategy::LeastLoaded.into(),
                    sla: Some(prost_types::Duration {
                        seconds: 8 * 3_600,
                        nanos: 0,
                    }),
                    sla_clock: routing::SlaClock::WorkingHours.into(),
                    escalate_after_breaches: 2,
                    ..Default::default()
                }),
                idempotency_key: key(&format!("team:{team}")),
            })
            .await
            .or_fail("CreateTeam")?
            .team
            .unwrap_or_default();
        team_ids.push(created.team_id);
    }
    let rule = |id: &str, name: &str, countries: &[&str], team_id: &str| routing::RoutingRule {
        rule_id: id.to_owned(),
        name: name.to_owned(),
        country_codes: countries.iter().map(|code| (*code).to_owned()).collect(),
        team_id: team_id.to_owned(),
        ..Default::default()
    };
    clients
        .routing()
        .publish_rule_set(routing::PublishRuleSetRequest {
            rule_set: Some(routing::RuleSet {
                rules: vec![
                    rule("dach", "DACH", &["DE", "AT", "CH"], &team_ids[0]),
                    rule(
                        "anglo",
                        "UK, Ireland and North America",
                        &["GB", "IE", "US", "CA"],
                        &team_ids[1],
                    ),
                ],
                default_team_id: team_ids[2].clone(),
                description: "territories by country".to_owned(),
                ..Default::default()
            }),
            base_version: 0,
            idempotency_key: key("rules"),
        })
        .await
        .or_fail("PublishRuleSet")?;
    Ok(rep_count)
}

async fn web_form(clients: &Clients) -> Result<String, ConsoleError> {
    use capture::FormFieldKind;
    let field =
        |name: &str, kind: FormFieldKind, maps_to: &str, required: bool| capture::FormField {
            name: name.to_owned(),
            label: name.replace('_', " "),
            required,
            kind: kind.into(),
            maps_to: maps_to.to_owned(),
            ..Default::default()
        };
    let form = clients
        .capture()
        .create_form(capture::CreateFormRequest {
            form: Some(capture::Form {
                name: "ERP cloud: talk to us".to_owned(),
                product: PRODUCT.to_owned(),
                fields: vec![
                    field("email", FormFieldKind::Email, "contact.email", true),
                    field(
                        "first_name",
                        FormFieldKind::Text,
                        "contact.first_name",
                        true,
                    ),
                    field("last_name", FormFieldKind::Text, "contact.last_name", true),
                    field("company", FormFieldKind::Text, "lead.company_name", true),
                ],
                consent_wording:
                    "Send me news about ERP cloud by mail; I can unsubscribe at any time."
                        .to_owned(),
                consent_wording_version: "2026-01".to_owned(),
                ..Default::default()
            }),
            idempotency_key: key("form"),
        })
        .await
        .or_fail("CreateForm")?
        .form
        .unwrap_or_default();
    Ok(form.form_id)
}
