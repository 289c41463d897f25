//! The closed loop end to end, once with the four services as four `leadflow` processes on
//! PostgreSQL/Redis mailing through an SMTP relay, once with the whole suite embedded: a
//! form post through capture's ingress makes a contact, its activities raise the lead's
//! score, nurturing mails it the content of its grid cell, the lead crosses the threshold
//! and goes to a rep who sends it back ("not ready yet"), nurturing takes it up again, it
//! engages anew, goes to sales again and becomes a customer. Every step is checked through
//! the API of each service it concerns.

use std::{fmt::Debug, net::SocketAddr, path::PathBuf, sync::Mutex, time::Duration};

use leadflow::ServiceKind;
use leadflow_proto::{
    capture::v1::{
        ActivityInput, CreateFormRequest, Form, FormFieldKind, GetContactRequest,
        TrackActivityRequest, activity_input, capture_service_client::CaptureServiceClient,
        get_contact_request,
    },
    common::v1::{ActivityType, BuyingStage, LeadClass, LifecycleStage},
    events::v1::ConsentState,
    nurturing::v1::{
        ContentItem, ContentKind, CreateContentItemRequest, CreateTemplateRequest,
        CreateTrackRequest, Enrollment, EnrollmentState, GetContentGridRequest,
        ListEnrollmentsRequest, ListSendsRequest, MailTemplate, Send, SendState, Track,
        TrackVersion, nurturing_service_client::NurturingServiceClient,
    },
    routing::v1::{
        AcceptAssignmentRequest, Assignment, AssignmentState, CloseDealRequest, CreateRepRequest,
        CreateTeamRequest, DayOfWeek, DealOutcome, GetAssignmentRequest, ListAssignmentsRequest,
        OpenOpportunityRequest, PublishRuleSetRequest, QualifyLeadRequest, RejectAssignmentRequest,
        RejectionReason, Rep, RoutingRule, RoutingStrategy, RuleSet, SlaClock, Team, WorkingHours,
        routing_service_client::RoutingServiceClient,
    },
    scoring::v1::{
        ExplainScoreRequest, ExplainScoreResponse, GetScoreRequest, LeadScore,
        scoring_service_client::ScoringServiceClient,
    },
};
use leadflow_tests::{HttpResponse, ProcessSuite, SmtpSink, TestSuite, eventually, http_request};
use mail_parser::MessageParser;
use tonic::transport::Channel;

use crate::{capture::field, intake::path_of};

const PRODUCT: &str = "erp";
const BUYER_ROLE: &str = "it-manager";
const EMAIL: &str = "mira.hoffmann@hoffmann-antriebe.example";
const COMPANY: &str = "Hoffmann Antriebe";
const WEBSITE: &str = "https://www.hoffmann-antriebe.example";
const REP_EMAIL: &str = "lena.vogt@example.com";
/// The seed model's hand-off threshold (README, "Scoring").
const THRESHOLD: f64 = 250.0;
/// How long one step may take to show in every service: events travel asynchronously,
/// and a loaded 2-core CI machine runs several suites at once.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Where the nurture mails of a suite land.
enum Mailbox<'a> {
    /// The SMTP relay the nurturing process mails through.
    Relay(&'a SmtpSink),
    /// The `.eml` files of the embedded mode.
    Directory(PathBuf),
}

impl Mailbox<'_> {
    /// Every mail so far, raw.
    fn messages(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        match self {
            Self::Relay(sink) => sink.messages(),
            Self::Directory(directory) => {
                if !directory.exists() {
                    return Ok(Vec::new());
                }
                let mut messages = Vec::new();
                for entry in std::fs::read_dir(directory)? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|extension| extension == "eml") {
                        messages.push(std::fs::read(path)?);
                    }
                }
                Ok(messages)
            }
        }
    }
}

/// A nurture mail as it arrived.
#[derive(Debug, Clone)]
struct Mail {
    to: String,
    subject: String,
    send_id: String,
    /// The first tracked link of the text part.
    tracked_link: Option<String>,
}

fn parse_mail(raw: &[u8], ingress: SocketAddr) -> anyhow::Result<Mail> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| anyhow::anyhow!("an unparseable mail"))?;
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|value| value.trim().to_owned())
            .unwrap_or_default()
    };
    let text = message.body_text(0).unwrap_or_default();
    let prefix = format!(
        "http://{ingress}{}?token=",
        leadflow_platform::links::CLICK_PATH
    );
    let tracked_link = text.find(&prefix).map(|start| {
        text[start..]
            .split(|character: char| character.is_whitespace() || character == '>')
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    Ok(Mail {
        to: header("To"),
        subject: message.subject().unwrap_or_default().to_owned(),
        send_id: header(leadflow_nurturing::mail::SEND_ID_HEADER),
        tracked_link,
    })
}

/// The suite under test, in either mode, as the scenario drives it.
struct Loop<'a> {
    capture: CaptureServiceClient<Channel>,
    scoring: ScoringServiceClient<Channel>,
    nurturing: NurturingServiceClient<Channel>,
    routing: RoutingServiceClient<Channel>,
    ingress: SocketAddr,
    mailbox: Mailbox<'a>,
    /// The processes, when the services run as processes: a dead one fails the step at
    /// once instead of after its timeout.
    processes: Option<&'a ProcessSuite>,
}

/// What the set-up made.
struct SetUp {
    form_id: String,
    /// The two B1 items for IT managers, in the order nurturing offers them.
    b1_items: Vec<ContentItem>,
    track_id: String,
    rep_id: String,
    team_id: String,
}

impl Loop<'_> {
    fn capture(&self) -> CaptureServiceClient<Channel> {
        self.capture.clone()
    }

    fn scoring(&self) -> ScoringServiceClient<Channel> {
        self.scoring.clone()
    }

    fn nurturing(&self) -> NurturingServiceClient<Channel> {
        self.nurturing.clone()
    }

    fn routing(&self) -> RoutingServiceClient<Channel> {
        self.routing.clone()
    }

    /// Polls `read` until what it returns satisfies `holds`, and returns that. Fails naming
    /// `step` and what it saw last when `STEP_TIMEOUT` passes, or at once when a service
    /// process has died.
    async fn step<T, F, Fut>(
        &self,
        step: &str,
        mut read: F,
        holds: impl Fn(&T) -> bool,
    ) -> anyhow::Result<T>
    where
        T: Debug,
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let last: Mutex<Option<anyhow::Result<T>>> = Mutex::new(None);
        let died: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let (last_ref, died_ref, holds_ref) = (&last, &died, &holds);
        let held = eventually(STEP_TIMEOUT, || {
            let seen = read();
            async move {
                if let Some(processes) = self.processes
                    && let Err(error) = processes.ensure_running()
                {
                    *died_ref.lock().expect("not poisoned") = Some(error);
                    return true;
                }
                let seen = seen.await;
                let done = seen.as_ref().is_ok_and(holds_ref);
                *last_ref.lock().expect("not poisoned") = Some(seen);
                done
            }
        })
        .await;
        if let Some(error) = died.into_inner().expect("not poisoned") {
            anyhow::bail!("{step}: {error:#}");
        }
        match last.into_inner().expect("not poisoned") {
            Some(Ok(seen)) if held => Ok(seen),
            Some(seen) => anyhow::bail!(
                "{step}: not within {STEP_TIMEOUT:?}; last seen: {:?}",
                seen.map_err(|error| format!("{error:#}"))
            ),
            None => anyhow::bail!("{step}: nothing read within {STEP_TIMEOUT:?}"),
        }
    }

    async fn score(&self, lead_id: &str) -> anyhow::Result<LeadScore> {
        self.scoring()
            .get_score(GetScoreRequest {
                lead_id: lead_id.to_owned(),
                product: PRODUCT.to_owned(),
                as_of_time: None,
            })
            .await?
            .into_inner()
            .score
            .ok_or_else(|| anyhow::anyhow!("a GetScore answer without a score"))
    }

    async fn explain_score(&self, lead_id: &str) -> anyhow::Result<ExplainScoreResponse> {
        Ok(self
            .scoring()
            .explain_score(ExplainScoreRequest {
                lead_id: lead_id.to_owned(),
                product: PRODUCT.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    async fn enrollments(&self, contact_id: &str) -> anyhow::Result<Vec<Enrollment>> {
        Ok(self
            .nurturing()
            .list_enrollments(ListEnrollmentsRequest {
                contact_id: contact_id.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .enrollments)
    }

    async fn sends(&self, contact_id: &str) -> anyhow::Result<Vec<Send>> {
        Ok(self
            .nurturing()
            .list_sends(ListSendsRequest {
                contact_id: contact_id.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .sends)
    }

    async fn assignments(&self, lead_id: &str) -> anyhow::Result<Vec<Assignment>> {
        Ok(self
            .routing()
            .list_assignments(ListAssignmentsRequest {
                lead_id: lead_id.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .assignments)
    }

    async fn assignment(&self, assignment_id: &str) -> anyhow::Result<Assignment> {
        self.routing()
            .get_assignment(GetAssignmentRequest {
                assignment_id: assignment_id.to_owned(),
            })
            .await?
            .into_inner()
            .assignment
            .ok_or_else(|| anyhow::anyhow!("a GetAssignment answer without the assignment"))
    }

    /// The mails that arrived for the contact.
    fn mails(&self) -> anyhow::Result<Vec<Mail>> {
        let mut mails = Vec::new();
        for raw in self.mailbox.messages()? {
            let mail = parse_mail(&raw, self.ingress)?;
            if mail.to.contains(EMAIL) {
                mails.push(mail);
            }
        }
        Ok(mails)
    }

    async fn track(&self, activity_type: ActivityType) -> anyhow::Result<String> {
        let activity = self
            .capture()
            .track_activity(TrackActivityRequest {
                activity: Some(ActivityInput {
                    subject: Some(activity_input::Subject::Email(EMAIL.to_owned())),
                    r#type: activity_type.into(),
                    product: PRODUCT.to_owned(),
                    source: "website".to_owned(),
                    ..Default::default()
                }),
                idempotency_key: key(),
            })
            .await?
            .into_inner()
            .activity
            .ok_or_else(|| anyhow::anyhow!("a TrackActivity answer without the activity"))?;
        Ok(activity.activity_id)
    }

    /// The buyer's guide form, posted from the website.
    async fn create_form(&self) -> anyhow::Result<String> {
        let form = self
            .capture()
            .create_form(CreateFormRequest {
                form: Some(Form {
                    allowed_origins: vec![WEBSITE.to_owned()],
                    ..buyers_guide_form()
                }),
                idempotency_key: key(),
            })
            .await?
            .into_inner()
            .form
            .ok_or_else(|| anyhow::anyhow!("a CreateForm answer without the form"))?;
        Ok(form.form_id)
    }

    /// Two B1 items for IT managers (a study first, an article next, as the field does it),
    /// an offer and an alternative template, and a track that enrolls B1 leads.
    async fn create_content_grid(&self) -> anyhow::Result<(Vec<ContentItem>, String)> {
        let mut nurturing = self.nurturing();
        let mut template_ids = Vec::new();
        for (name, subject) in [
            ("Offer (en)", "{{ item.title }}"),
            ("Alternative (en)", "Another pick for you: {{ item.title }}"),
        ] {
            let template = nurturing
                .create_template(CreateTemplateRequest {
                    template: Some(MailTemplate {
                        name: name.to_owned(),
                        language: "en".to_owned(),
                        subject: subject.to_owned(),
                        html_body: "<p>Hello {{ contact.first_name }},</p>\
                                    <p><a href=\"{{ item.url }}\">{{ item.title }}</a></p>"
                            .to_owned(),
                        text_body: "Hello {{ contact.first_name }},\n\n{{ item.title }}: \
                                    {{ item.url }}\n"
                            .to_owned(),
                        ..Default::default()
                    }),
                    idempotency_key: key(),
                })
                .await?
                .into_inner()
                .template
                .ok_or_else(|| anyhow::anyhow!("a CreateTemplate answer without the template"))?;
            template_ids.push(template.template_id);
        }
        let mut items = Vec::new();
        for (priority, kind, title, url) in [
            (
                1,
                ContentKind::Study,
                "ERP in mid-sized manufacturing: the 2026 study",
                "https://www.example.com/erp/study-2026",
            ),
            (
                2,
                ContentKind::Article,
                "Five signs your spreadsheets have outgrown you",
                "https://www.example.com/erp/five-signs",
            ),
        ] {
            let item = nurturing
                .create_content_item(CreateContentItemRequest {
                    item: Some(ContentItem {
                        title: title.to_owned(),
                        kind: kind.into(),
                        url: url.to_owned(),
                        buyer_roles: vec![BUYER_ROLE.to_owned()],
                        stage: BuyingStage::ProblemAwareness.into(),
                        product: PRODUCT.to_owned(),
                        language: "en".to_owned(),
                        priority,
                        ..Default::default()
                    }),
                    idempotency_key: key(),
                })
                .await?
                .into_inner()
                .item
                .ok_or_else(|| anyhow::anyhow!("a CreateContentItem answer without the item"))?;
            items.push(item);
        }
        let track = nurturing
            .create_track(CreateTrackRequest {
                track: Some(Track {
                    name: "ERP problem awareness".to_owned(),
                    product: PRODUCT.to_owned(),
                    ..Default::default()
                }),
                first_version: Some(TrackVersion {
                    offer_template_id: template_ids[0].clone(),
                    alternative_offer_template_id: template_ids[1].clone(),
                    auto_enroll_classes: vec![LeadClass::B1.into()],
                    ..Default::default()
                }),
                idempotency_key: key(),
            })
            .await?
            .into_inner()
            .track
            .ok_or_else(|| anyhow::anyhow!("a CreateTrack answer without the track"))?;
        Ok((items, track.track_id))
    }

    /// One rep working around the clock in one team, and a published rule set that sends
    /// the product's leads there.
    async fn create_sales_team(&self) -> anyhow::Result<(String, String)> {
        let mut routing = self.routing();
        let rep_id = always_available_rep(&mut routing, REP_EMAIL, "Lena Vogt", 10).await?;
        let team_id = route_to_inside_sales(&mut routing, vec![rep_id.clone()]).await?;
        Ok((rep_id, team_id))
    }

    async fn set_up(&self) -> anyhow::Result<SetUp> {
        let form_id = self.create_form().await?;
        let (b1_items, track_id) = self.create_content_grid().await?;
        let grid = self
            .nurturing()
            .get_content_grid(GetContentGridRequest {
                product: PRODUCT.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let cell = grid
            .cells
            .iter()
            .find(|cell| {
                cell.buyer_role == BUYER_ROLE && cell.stage == BuyingStage::ProblemAwareness as i32
            })
            .ok_or_else(|| anyhow::anyhow!("no B1 cell for IT managers in {grid:?}"))?;
        assert_eq!(cell.item_count, 2, "the grid holds both items: {cell:?}");
        let (rep_id, team_id) = self.create_sales_team().await?;
        Ok(SetUp {
            form_id,
            b1_items,
            track_id,
            rep_id,
            team_id,
        })
    }

    /// Posts the form as the contact's browser does; returns (contact id, lead id) as
    /// capture tells them.
    async fn post_form(&self, form_id: &str) -> anyhow::Result<(String, String)> {
        let body = [
            ("email", EMAIL),
            ("first_name", "Mira"),
            ("last_name", "Hoffmann"),
            ("job_title", "Head of IT"),
            ("department", "IT"),
            ("role", BUYER_ROLE),
            ("phone", "+49 711 1234567"),
            ("street", "Industriestraße 7"),
            ("postal_code", "70565"),
            ("city", "Stuttgart"),
            ("country", "de"),
            ("company", COMPANY),
            ("industry", "Manufacturing"),
            ("employees", "240"),
            ("consent_given", "on"),
            ("utm_source", "newsletter"),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", form_urlencoded(value)))
        .collect::<Vec<_>>()
        .join("&");
        let posted: HttpResponse = http_request(
            self.ingress,
            "POST",
            &format!("/v1/forms/{form_id}/submissions"),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", WEBSITE),
                ("user-agent", "Mozilla/5.0 (closed loop)"),
            ],
            body.as_bytes(),
        )
        .await?;
        anyhow::ensure!(
            posted.status == 200,
            "the form post: {} {}",
            posted.status,
            posted.text()
        );
        let answer: serde_json::Value = serde_json::from_slice(&posted.body)?;
        assert_eq!(
            answer["consent_state"], "CONSENT_STATE_CONFIRMED",
            "a single opt-in is confirmed at once: {answer}"
        );
        assert_eq!(answer["confirmation_sent"], false, "{answer}");

        let contact = self
            .capture()
            .get_contact(GetContactRequest {
                lookup: Some(get_contact_request::Lookup::Email(EMAIL.to_owned())),
            })
            .await?
            .into_inner()
            .contact
            .ok_or_else(|| anyhow::anyhow!("a GetContact answer without the contact"))?;
        let profile = contact.profile.clone().unwrap_or_default();
        assert_eq!(profile.buyer_role, BUYER_ROLE, "{contact:?}");
        assert_eq!(profile.first_name, "Mira", "{contact:?}");
        assert!(
            contact
                .consents
                .iter()
                .any(|consent| consent.purpose == "nurture-email"
                    && consent.state == ConsentState::Confirmed as i32),
            "a confirmed nurture opt-in: {contact:?}"
        );
        assert!(!contact.lead_id.is_empty(), "{contact:?}");
        Ok((contact.contact_id, contact.lead_id))
    }
}

/// `value` encoded for an `application/x-www-form-urlencoded` body.
fn form_urlencoded(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                char::from(byte).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The activity types an explanation names, in no particular order.
fn explained_types(explanation: &ExplainScoreResponse) -> Vec<(String, ActivityType)> {
    let mut named: Vec<(String, ActivityType)> = explanation
        .engagement_contributions
        .iter()
        .map(|contribution| {
            (
                contribution.activity_id.clone(),
                contribution.activity_type(),
            )
        })
        .collect();
    named.sort();
    named
}

/// The team of `rep_ids` (round robin, a one-hour SLA on the wall clock) and the rule set
/// that sends every lead of the product to it; answers the team's id.
pub(crate) async fn route_to_inside_sales(
    routing: &mut RoutingServiceClient<Channel>,
    rep_ids: Vec<String>,
) -> anyhow::Result<String> {
    let team = routing
        .create_team(CreateTeamRequest {
            team: Some(Team {
                name: "ERP inside sales".to_owned(),
                member_rep_ids: rep_ids,
                strategy: RoutingStrategy::RoundRobin.into(),
                sla: Some(prost_types::Duration {
                    seconds: 3_600,
                    nanos: 0,
                }),
                sla_clock: SlaClock::WallTime.into(),
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .team
        .ok_or_else(|| anyhow::anyhow!("a CreateTeam answer without the team"))?;
    routing
        .publish_rule_set(PublishRuleSetRequest {
            rule_set: Some(RuleSet {
                rules: vec![RoutingRule {
                    name: "ERP leads".to_owned(),
                    products: vec![PRODUCT.to_owned()],
                    team_id: team.team_id.clone(),
                    ..Default::default()
                }],
                default_team_id: team.team_id.clone(),
                description: "ERP leads to inside sales".to_owned(),
                ..Default::default()
            }),
            base_version: 0,
            idempotency_key: key(),
        })
        .await?;
    Ok(team.team_id)
}

/// Every day of the week, all day.
fn around_the_clock() -> Vec<WorkingHours> {
    [
        DayOfWeek::Monday,
        DayOfWeek::Tuesday,
        DayOfWeek::Wednesday,
        DayOfWeek::Thursday,
        DayOfWeek::Friday,
        DayOfWeek::Saturday,
        DayOfWeek::Sunday,
    ]
    .into_iter()
    .map(|day| WorkingHours {
        day_of_week: day.into(),
        start_minute: 0,
        end_minute: 1440,
    })
    .collect()
}

/// A rep in Berlin who works around the clock with `capacity` open leads at most; answers
/// the rep's id.
pub(crate) async fn always_available_rep(
    routing: &mut RoutingServiceClient<Channel>,
    email: &str,
    display_name: &str,
    capacity: u32,
) -> anyhow::Result<String> {
    Ok(routing
        .create_rep(CreateRepRequest {
            rep: Some(Rep {
                email: email.to_owned(),
                display_name: display_name.to_owned(),
                time_zone: "Europe/Berlin".to_owned(),
                working_hours: around_the_clock(),
                capacity,
                weight: 1,
                active: true,
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .rep
        .ok_or_else(|| anyhow::anyhow!("a CreateRep answer without the rep"))?
        .rep_id)
}

/// A single opt-in form that asks for everything the seed model's MQL rule wants and the
/// buyer role nurturing chooses content by: a confirmed opt-in at once, since the form needs
/// no confirmation link.
pub(crate) fn buyers_guide_form() -> Form {
    let text = |name: &str, maps_to: &str| field(name, FormFieldKind::Text, maps_to, true);
    Form {
        name: "ERP buyer's guide".to_owned(),
        product: PRODUCT.to_owned(),
        fields: vec![
            field("email", FormFieldKind::Email, "contact.email", true),
            text("first_name", "contact.first_name"),
            text("last_name", "contact.last_name"),
            text("job_title", "contact.job_title"),
            text("department", "contact.department"),
            text("role", "contact.buyer_role"),
            field("phone", FormFieldKind::Phone, "contact.phone", true),
            text("street", "contact.address.street"),
            text("postal_code", "contact.address.postal_code"),
            text("city", "contact.address.city"),
            field(
                "country",
                FormFieldKind::Country,
                "contact.address.country_code",
                true,
            ),
            text("company", "lead.company_name"),
            text("industry", "lead.industry"),
            field(
                "employees",
                FormFieldKind::Number,
                "lead.employee_count",
                true,
            ),
        ],
        consent_wording: "Send me ERP guides by mail.".to_owned(),
        consent_wording_version: "2026-12".to_owned(),
        consent_required: true,
        double_opt_in: false,
        ..Default::default()
    }
}

async fn closed_loop(suite: &Loop<'_>) -> anyhow::Result<()> {
    let set_up = suite.set_up().await?;

    // A form post through capture's ingress: capture has the contact, scoring the lead,
    // marketing qualified by the seed model's MQL rule (a complete profile with opt-in).
    let (contact_id, lead_id) = suite.post_form(&set_up.form_id).await?;
    let captured = suite
        .step(
            "scoring knows the captured lead",
            || suite.score(&lead_id),
            |score| score.stage == LifecycleStage::Mql as i32,
        )
        .await?;
    assert_eq!(captured.engagement_points, 0.0, "{captured:?}");
    assert!(!captured.sales_ready, "{captured:?}");

    // Activities raise the engagement, below the threshold; the explanation names them.
    let mut expected = Vec::new();
    for activity_type in [
        ActivityType::TeaserRead,
        ActivityType::VideoCompleted,
        ActivityType::FactSheetRequested,
    ] {
        expected.push((suite.track(activity_type).await?, activity_type));
    }
    expected.sort();
    let engaged = suite
        .step(
            "the first activities raise the engagement to 60",
            || suite.score(&lead_id),
            |score| score.engagement_points.round() == 60.0,
        )
        .await?;
    assert!(!engaged.sales_ready, "60 points are below 250: {engaged:?}");
    let explanation = suite.explain_score(&lead_id).await?;
    assert_eq!(
        explained_types(&explanation),
        expected,
        "the explanation names the three activities"
    );

    // Nurturing enrolled the contact in the B1 cell and mailed the cell's first item.
    let enrollments = suite
        .step(
            "nurturing enrolls the contact",
            || suite.enrollments(&contact_id),
            |enrollments| {
                enrollments
                    .iter()
                    .any(|enrollment| enrollment.state == EnrollmentState::Active as i32)
            },
        )
        .await?;
    assert_eq!(enrollments.len(), 1, "{enrollments:?}");
    let enrollment = enrollments[0].clone();
    assert_eq!(enrollment.track_id, set_up.track_id);
    assert_eq!(enrollment.lead_id, lead_id);
    assert_eq!(enrollment.buyer_role, BUYER_ROLE);
    assert_eq!(enrollment.stage, BuyingStage::ProblemAwareness as i32);
    let sends = suite
        .step(
            "nurturing sends the cell's first item",
            || suite.sends(&contact_id),
            |sends| {
                sends
                    .iter()
                    .any(|send| send.state == SendState::Sent as i32)
            },
        )
        .await?;
    assert_eq!(sends.len(), 1, "{sends:?}");
    let send = sends[0].clone();
    let first_item = &set_up.b1_items[0];
    assert_eq!(
        send.content_item_id, first_item.content_item_id,
        "the item of the cell with the first priority"
    );
    assert_eq!(send.enrollment_id, enrollment.enrollment_id);
    let mails = suite
        .step(
            "the nurture mail arrives",
            || async { suite.mails() },
            |mails| !mails.is_empty(),
        )
        .await?;
    let mail = &mails[0];
    assert_eq!(mail.send_id, send.send_id, "{mail:?}");
    assert_eq!(mail.subject, first_item.title, "{mail:?}");
    let tracked_link = mail
        .tracked_link
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no tracked link to the ingress in {mail:?}"))?;
    // The link goes through capture's ingress to the item, and nurturing sees the click.
    let clicked = http_request(suite.ingress, "GET", &path_of(&tracked_link), &[], b"").await?;
    assert!(
        (300..400).contains(&clicked.status),
        "the tracked link redirects: {} {}",
        clicked.status,
        clicked.text()
    );
    assert_eq!(clicked.header("location"), Some(first_item.url.as_str()));
    suite
        .step(
            "nurturing counts the click on its mail",
            || suite.sends(&contact_id),
            |sends| sends.iter().any(|send| send.click_count == 1),
        )
        .await?;

    // The lead crosses the threshold: scoring hands it over, routing assigns the rep,
    // nurturing pauses for sales.
    for activity_type in [
        ActivityType::SlideDeckDownloaded,
        ActivityType::KnowledgeTestPassed,
        ActivityType::ContentCommented,
    ] {
        suite.track(activity_type).await?;
    }
    let ready = suite
        .step(
            "scoring hands the lead over",
            || suite.score(&lead_id),
            |score| score.sales_ready,
        )
        .await?;
    assert!(ready.total_points.round() >= THRESHOLD, "{ready:?}");
    let assignments = suite
        .step(
            "routing assigns the lead",
            || suite.assignments(&lead_id),
            |assignments| !assignments.is_empty(),
        )
        .await?;
    assert_eq!(assignments.len(), 1, "{assignments:?}");
    let first = suite.assignment(&assignments[0].assignment_id).await?;
    assert_eq!(first.rep_id, set_up.rep_id);
    assert_eq!(first.team_id, set_up.team_id);
    assert_eq!(first.state, AssignmentState::Pending as i32);
    assert!(first.total_score.round() >= THRESHOLD, "{first:?}");
    assert_eq!(
        first.lead.as_ref().map(|lead| lead.company_name.as_str()),
        Some(COMPANY)
    );
    suite
        .step(
            "nurturing pauses the enrollment for sales",
            || suite.enrollments(&contact_id),
            |enrollments| {
                enrollments.iter().any(|paused| {
                    paused.enrollment_id == enrollment.enrollment_id
                        && paused.state == EnrollmentState::PausedForSales as i32
                        && paused.state_reason == "sales ready"
                })
            },
        )
        .await?;

    // The rep sends it back: recycled in scoring, taken up again by nurturing.
    let rejected = suite
        .routing()
        .reject_assignment(RejectAssignmentRequest {
            assignment_id: first.assignment_id.clone(),
            reason: RejectionReason::NotReadyYet.into(),
            note: "not ready yet: budget talks next quarter".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(rejected.resulting_stage, LifecycleStage::Recycled as i32);
    let recycled = suite
        .step(
            "scoring recycles the lead",
            || suite.score(&lead_id),
            |score| score.stage == LifecycleStage::Recycled as i32,
        )
        .await?;
    assert!(!recycled.sales_ready, "{recycled:?}");
    let first = suite.assignment(&first.assignment_id).await?;
    assert_eq!(first.state, AssignmentState::Rejected as i32, "{first:?}");
    assert_eq!(first.rejection_reason, RejectionReason::NotReadyYet as i32);
    suite
        .step(
            "nurturing takes the recycled lead up again",
            || suite.enrollments(&contact_id),
            |enrollments| {
                enrollments.iter().any(|active| {
                    active.enrollment_id == enrollment.enrollment_id
                        && active.state == EnrollmentState::Active as i32
                        && active.state_reason == "recycled by sales"
                })
            },
        )
        .await?;

    // It engages anew and goes to sales again, to the same rep in a new assignment.
    suite.track(ActivityType::SurveyAnswered).await?;
    suite
        .step(
            "scoring hands the lead over again",
            || suite.score(&lead_id),
            |score| score.sales_ready,
        )
        .await?;
    let assignments = suite
        .step(
            "routing assigns the lead again",
            || suite.assignments(&lead_id),
            |assignments| assignments.len() == 2,
        )
        .await?;
    let second = assignments
        .iter()
        .find(|assignment| assignment.assignment_id != first.assignment_id)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no second assignment in {assignments:?}"))?;
    assert_eq!(second.state, AssignmentState::Pending as i32, "{second:?}");
    assert_eq!(second.rep_id, set_up.rep_id);
    suite
        .step(
            "nurturing pauses the enrollment for sales again",
            || suite.enrollments(&contact_id),
            |enrollments| {
                enrollments.iter().any(|paused| {
                    paused.enrollment_id == enrollment.enrollment_id
                        && paused.state == EnrollmentState::PausedForSales as i32
                })
            },
        )
        .await?;

    // This time the rep accepts, qualifies, opens an opportunity and wins the deal.
    suite
        .routing()
        .accept_assignment(AcceptAssignmentRequest {
            assignment_id: second.assignment_id.clone(),
            actor: REP_EMAIL.to_owned(),
            idempotency_key: key(),
        })
        .await?;
    suite
        .step(
            "scoring marks the lead sales accepted",
            || suite.score(&lead_id),
            |score| score.stage == LifecycleStage::Sal as i32,
        )
        .await?;
    suite
        .routing()
        .qualify_lead(QualifyLeadRequest {
            lead_id: lead_id.clone(),
            product: PRODUCT.to_owned(),
            actor: REP_EMAIL.to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?;
    suite
        .step(
            "scoring marks the lead sales qualified",
            || suite.score(&lead_id),
            |score| score.stage == LifecycleStage::Sql as i32,
        )
        .await?;
    suite
        .routing()
        .open_opportunity(OpenOpportunityRequest {
            lead_id: lead_id.clone(),
            product: PRODUCT.to_owned(),
            crm_opportunity_id: "OPP-2026-0042".to_owned(),
            expected_amount_minor: 4_800_000,
            currency: "EUR".to_owned(),
            actor: REP_EMAIL.to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?;
    suite
        .step(
            "scoring follows the opportunity",
            || suite.score(&lead_id),
            |score| score.stage == LifecycleStage::Opportunity as i32,
        )
        .await?;
    suite
        .routing()
        .close_deal(CloseDealRequest {
            lead_id: lead_id.clone(),
            product: PRODUCT.to_owned(),
            outcome: DealOutcome::Won.into(),
            amount_minor: 4_500_000,
            currency: "EUR".to_owned(),
            actor: REP_EMAIL.to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?;
    let customer = suite
        .step(
            "scoring makes the lead a customer",
            || suite.score(&lead_id),
            |score| score.stage == LifecycleStage::Customer as i32,
        )
        .await?;
    assert!(!customer.sales_ready, "{customer:?}");

    // Routing's hand-over shows the won deal; nurturing's enrollment ended completed.
    let won = suite.assignment(&second.assignment_id).await?;
    assert_eq!(won.state, AssignmentState::Closed as i32, "{won:?}");
    assert_eq!(won.lifecycle_stage, LifecycleStage::Customer as i32);
    let outcome = won.sales_outcome.clone().unwrap_or_default();
    assert_eq!(outcome.deal_outcome, DealOutcome::Won as i32, "{won:?}");
    assert_eq!(outcome.amount_minor, 4_500_000);
    assert_eq!(outcome.crm_opportunity_id, "OPP-2026-0042");
    let enrollments = suite
        .step(
            "nurturing completes the enrollment",
            || suite.enrollments(&contact_id),
            |enrollments| {
                !enrollments.is_empty()
                    && enrollments
                        .iter()
                        .all(|ended| ended.state == EnrollmentState::Completed as i32)
            },
        )
        .await?;
    assert_eq!(
        enrollments.len(),
        1,
        "one enrollment all along: {enrollments:?}"
    );
    assert_eq!(enrollments[0].enrollment_id, enrollment.enrollment_id);
    assert!(enrollments[0].end_time.is_some(), "{enrollments:?}");
    let mails = suite.mails()?;
    assert_eq!(
        mails.len(),
        1,
        "one nurture mail, never repeated: {mails:?}"
    );
    assert_eq!(suite.sends(&contact_id).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_closed_loop_with_one_process_per_service() -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    // Every crate's debug lines too: no level may name the person.
    let mut settings = sink.relay_settings();
    settings.push(("LEADFLOW_LOG__FILTER", "debug".to_owned()));
    let suite = ProcessSuite::start(&settings).await?;
    // Each process serves its own service only: the scenario's calls really cross processes.
    let elsewhere = ScoringServiceClient::new(suite.channel(ServiceKind::Capture))
        .get_score(GetScoreRequest {
            lead_id: uuid::Uuid::new_v4().to_string(),
            product: PRODUCT.to_owned(),
            as_of_time: None,
        })
        .await
        .expect_err("capture's process serves no scoring");
    assert_eq!(
        elsewhere.code(),
        tonic::Code::Unimplemented,
        "{elsewhere:?}"
    );
    let run = Loop {
        capture: suite.capture(),
        scoring: suite.scoring(),
        nurturing: suite.nurturing(),
        routing: suite.routing(),
        ingress: suite.ingress_address(),
        mailbox: Mailbox::Relay(&sink),
        processes: Some(&suite),
    };
    suite.explain(closed_loop(&run).await)?;
    // The whole funnel ran through the four processes' logs: none of them names the person.
    let logs = suite.full_logs()?;
    assert!(
        logs.contains(r#""level":"DEBUG""#),
        "the processes logged at debug"
    );
    for personal in [EMAIL, REP_EMAIL, "Mira", "Hoffmann", "+49 711 1234567"] {
        assert!(
            !logs.contains(personal),
            "a log names {personal:?}:\n{}",
            logs.lines()
                .filter(|line| line.contains(personal))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_closed_loop_embedded() -> anyhow::Result<()> {
    let data_dir = RemovedOnDrop(crate::embedded::temporary_data_dir());
    let suite = TestSuite::start_embedded(&data_dir.0).await?;
    let run = Loop {
        capture: suite.capture(),
        scoring: suite.scoring(),
        nurturing: suite.nurturing(),
        routing: suite.routing(),
        ingress: suite.ingress_address(),
        mailbox: Mailbox::Directory(data_dir.0.join("mail")),
        processes: None,
    };
    let outcome = closed_loop(&run).await;
    suite.stop().await?;
    outcome
}

/// The embedded suite's data directory, removed when the test ends, also when an
/// assertion panics; declared before the suite, so removed after the suite is gone.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
