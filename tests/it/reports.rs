//! Funnel reports and the forecast on the running suite, on PostgreSQL/Redis and embedded,
//! with one clock for all four services that the test moves through a quarter: four leads
//! from a webinar campaign and a trade fair climb the classes by the content they read, one
//! is handed over, accepted, qualified and won; the report counts each month's classes and
//! conversions with their exact durations and trend, segments by source, prorates the
//! campaigns' recorded costs into cost per lead and return, and the forecast multiplies the
//! leads in hand by the close rates measured over the months before.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use leadflow_platform::time::{ManualClock, to_timestamp};
use leadflow_proto::{
    capture::v1::{
        ActivityInput, CreateFormRequest, Form, FormFieldKind, TrackActivityRequest, activity_input,
    },
    common::v1::{
        ActivityType, BuyingStage, CampaignAttribution, LeadClass, LifecycleStage, TimeRange,
    },
    routing::v1::{
        AcceptAssignmentRequest, CloseDealRequest, DealOutcome, OpenOpportunityRequest,
        QualifyLeadRequest,
    },
    scoring::v1::{
        ActivateScoringModelRequest, CreateScoringModelRequest, FunnelMetrics, FunnelStep,
        GetForecastRequest, GetFunnelReportRequest, ListMarketingCostsRequest, Money,
        RecordMarketingCostRequest, ReportPeriod, SegmentDimension, StepConversion,
    },
};
use leadflow_tests::TestSuite;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    capture::field,
    intake::submission,
    routing_flow::{assignment_of, sales_team},
    scoring::seed_model,
    scoring_ledger::{PRODUCT, score_until},
};

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// 09:00 UTC on a day of 2026.
fn day(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, 9, 0, 0)
        .single()
        .expect("a valid date")
}

fn month_start(month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

fn range(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<TimeRange> {
    Some(TimeRange {
        start_time: Some(to_timestamp(start)),
        end_time: Some(to_timestamp(end)),
    })
}

fn euros(minor_units: i64) -> Money {
    Money {
        currency_code: "EUR".to_owned(),
        minor_units,
    }
}

fn days(duration: Option<&prost_types::Duration>) -> Option<f64> {
    duration.map(|duration| duration.seconds as f64 / 86_400.0)
}

fn step(metrics: &FunnelMetrics, step: FunnelStep) -> StepConversion {
    metrics
        .conversions
        .iter()
        .find(|conversion| conversion.step == step as i32)
        .cloned()
        .unwrap_or_else(|| panic!("no {step:?} in {metrics:?}"))
}

fn class_count(metrics: &FunnelMetrics, class: LeadClass) -> u32 {
    metrics
        .class_counts
        .iter()
        .find(|count| count.lead_class == class as i32)
        .map_or(0, |count| count.lead_count)
}

/// The suite and the form the scenario captures its leads with.
struct Quarter<'a> {
    suite: &'a TestSuite,
    form_id: String,
}

impl Quarter<'_> {
    /// Captures one contact; returns (contact id, lead id).
    async fn capture(
        &self,
        company: &str,
        email: &str,
        source: &str,
        campaign: &str,
    ) -> anyhow::Result<(String, String)> {
        let mut request = submission(
            &self.form_id,
            &key(),
            &[
                ("email", email),
                ("company", company),
                ("industry", "Manufacturing"),
            ],
        );
        request.source = source.to_owned();
        if !campaign.is_empty() {
            request.attribution = Some(CampaignAttribution {
                source: "newsletter".to_owned(),
                medium: "email".to_owned(),
                campaign: campaign.to_owned(),
                ..Default::default()
            });
        }
        let submitted = self
            .suite
            .capture()
            .submit_form(request)
            .await?
            .into_inner();
        score_until(self.suite, &submitted.lead_id, |_| true).await?;
        Ok((submitted.contact_id, submitted.lead_id))
    }

    /// Tracks an activity of the contact, with the buying stage of its content.
    async fn read(
        &self,
        contact_id: &str,
        activity: ActivityType,
        stage: BuyingStage,
    ) -> anyhow::Result<()> {
        self.suite
            .capture()
            .track_activity(TrackActivityRequest {
                activity: Some(ActivityInput {
                    subject: Some(activity_input::Subject::ContactId(contact_id.to_owned())),
                    r#type: activity.into(),
                    stage: stage.into(),
                    product: PRODUCT.to_owned(),
                    source: "website".to_owned(),
                    ..Default::default()
                }),
                idempotency_key: key(),
            })
            .await?;
        Ok(())
    }

    /// Reads content of `stage` and waits until scoring has the lead in `class`.
    async fn climb(
        &self,
        contact_id: &str,
        lead_id: &str,
        activity: ActivityType,
        stage: BuyingStage,
        class: LeadClass,
    ) -> anyhow::Result<()> {
        self.read(contact_id, activity, stage).await?;
        score_until(self.suite, lead_id, |score| {
            score.lead_class == class as i32
        })
        .await?;
        Ok(())
    }

    async fn stage_reached(&self, lead_id: &str, stage: LifecycleStage) -> anyhow::Result<()> {
        score_until(self.suite, lead_id, |score| score.stage == stage as i32).await?;
        Ok(())
    }
}

/// Runs the quarter: January to March 2026, then reads the reports as of 1 April.
async fn a_quarter_of_leads(suite: &TestSuite, clock: ManualClock) -> anyhow::Result<()> {
    clock.set(day(1, 5));
    let mut scoring = suite.scoring();
    let model = scoring
        .create_scoring_model(CreateScoringModelRequest {
            model: Some(seed_model(PRODUCT)),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .model
        .expect("model");
    scoring
        .activate_scoring_model(ActivateScoringModelRequest {
            model_id: model.model_id,
            idempotency_key: key(),
        })
        .await?;
    let rep_id = sales_team(suite).await?;
    let form = suite
        .capture()
        .create_form(CreateFormRequest {
            form: Some(Form {
                name: "ERP webinar".to_owned(),
                product: PRODUCT.to_owned(),
                fields: vec![
                    field("email", FormFieldKind::Email, "contact.email", true),
                    field("company", FormFieldKind::Text, "lead.company_name", true),
                    field("industry", FormFieldKind::Text, "lead.industry", true),
                ],
                consent_wording: "Send me ERP news by mail.".to_owned(),
                consent_wording_version: "2026-01".to_owned(),
                ..Default::default()
            }),
            idempotency_key: key(),
        })
        .await?
        .into_inner()
        .form
        .expect("form");
    let quarter = Quarter {
        suite,
        form_id: form.form_id,
    };
    use ActivityType::{
        ContentCommented, FactSheetRequested, KnowledgeTestPassed, PageVisited,
        SlideDeckDownloaded, TeaserRead, VideoCompleted, WhitepaperDownloaded,
    };
    use BuyingStage::{ChoosingOffer, ProblemAwareness, RequestingOffers, SolutionSearch};

    // January: three leads, two from the webinar campaign, one from the trade fair.
    let (acme, acme_lead) = quarter
        .capture("Acme", "ida@acme.example", "website", "spring-webinar")
        .await?;
    quarter
        .climb(
            &acme,
            &acme_lead,
            TeaserRead,
            ProblemAwareness,
            LeadClass::B1,
        )
        .await?;
    clock.set(day(1, 6));
    let (bolt, bolt_lead) = quarter
        .capture("Bolt", "ben@bolt.example", "website", "spring-webinar")
        .await?;
    quarter
        .climb(
            &bolt,
            &bolt_lead,
            PageVisited,
            ProblemAwareness,
            LeadClass::B1,
        )
        .await?;
    clock.set(day(1, 7));
    let (cobalt, cobalt_lead) = quarter
        .capture("Cobalt", "cem@cobalt.example", "trade-fair", "")
        .await?;
    quarter
        .climb(
            &cobalt,
            &cobalt_lead,
            PageVisited,
            ProblemAwareness,
            LeadClass::B1,
        )
        .await?;
    clock.set(day(1, 26));
    quarter
        .climb(
            &acme,
            &acme_lead,
            WhitepaperDownloaded,
            SolutionSearch,
            LeadClass::B2,
        )
        .await?;

    // February: Bolt searches, Acme requests offers and chooses, is handed over and won
    // in March; a fourth lead comes from the trade fair and reads nothing.
    clock.set(day(2, 2));
    quarter
        .climb(
            &bolt,
            &bolt_lead,
            WhitepaperDownloaded,
            SolutionSearch,
            LeadClass::B2,
        )
        .await?;
    clock.set(day(2, 3));
    quarter
        .capture("Delta", "dora@delta.example", "trade-fair", "")
        .await?;
    clock.set(day(2, 9));
    quarter
        .climb(
            &acme,
            &acme_lead,
            FactSheetRequested,
            RequestingOffers,
            LeadClass::B3,
        )
        .await?;
    clock.set(day(2, 16));
    for activity in [KnowledgeTestPassed, VideoCompleted, ContentCommented] {
        quarter
            .read(&acme, activity, BuyingStage::Unspecified)
            .await?;
    }
    quarter
        .climb(
            &acme,
            &acme_lead,
            SlideDeckDownloaded,
            ChoosingOffer,
            LeadClass::A,
        )
        .await?;
    let assignment = assignment_of(suite, &acme_lead).await?;
    assert_eq!(assignment.rep_id, rep_id);
    clock.set(day(2, 16) + Duration::minutes(30));
    let mut routing = suite.routing();
    routing
        .accept_assignment(AcceptAssignmentRequest {
            assignment_id: assignment.assignment_id,
            actor: "anna.berger@example.com".to_owned(),
            idempotency_key: key(),
        })
        .await?;
    quarter
        .stage_reached(&acme_lead, LifecycleStage::Sal)
        .await?;
    clock.set(day(2, 18));
    routing
        .qualify_lead(QualifyLeadRequest {
            lead_id: acme_lead.clone(),
            product: PRODUCT.to_owned(),
            actor: "anna.berger@example.com".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?;
    quarter
        .stage_reached(&acme_lead, LifecycleStage::Sql)
        .await?;
    clock.set(day(2, 20));
    routing
        .open_opportunity(OpenOpportunityRequest {
            lead_id: acme_lead.clone(),
            product: PRODUCT.to_owned(),
            crm_opportunity_id: "OPP-1".to_owned(),
            expected_amount_minor: 4_000_000,
            currency: "EUR".to_owned(),
            actor: "anna.berger@example.com".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?;
    quarter
        .stage_reached(&acme_lead, LifecycleStage::Opportunity)
        .await?;
    clock.set(day(3, 3));
    routing
        .close_deal(CloseDealRequest {
            lead_id: acme_lead.clone(),
            product: PRODUCT.to_owned(),
            outcome: DealOutcome::Won.into(),
            amount_minor: 4_200_000,
            currency: "EUR".to_owned(),
            actor: "anna.berger@example.com".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?;
    quarter
        .stage_reached(&acme_lead, LifecycleStage::Customer)
        .await?;
    // March: Bolt skips B3 and chooses an offer.
    clock.set(day(3, 10));
    quarter
        .climb(&bolt, &bolt_lead, PageVisited, ChoosingOffer, LeadClass::A)
        .await?;

    // What marketing spent: the webinar over January and February, the fair's booth once.
    let webinar_cost = RecordMarketingCostRequest {
        product: PRODUCT.to_owned(),
        campaign: "spring-webinar".to_owned(),
        amount: Some(euros(1_000_000)),
        time_range: range(month_start(1), month_start(3)),
        note: "INV-2026-014".to_owned(),
        idempotency_key: key(),
    };
    let recorded = scoring
        .record_marketing_cost(webinar_cost.clone())
        .await?
        .into_inner();
    let again = scoring
        .record_marketing_cost(webinar_cost.clone())
        .await?
        .into_inner();
    assert_eq!(recorded, again, "a retried record gets the first answer");
    let reused = scoring
        .record_marketing_cost(RecordMarketingCostRequest {
            amount: Some(euros(2)),
            ..webinar_cost
        })
        .await
        .expect_err("a reused key with another payload");
    assert_eq!(reused.code(), Code::AlreadyExists);
    scoring
        .record_marketing_cost(RecordMarketingCostRequest {
            product: PRODUCT.to_owned(),
            campaign: "trade-fair".to_owned(),
            amount: Some(euros(300_000)),
            time_range: range(day(2, 1), day(2, 4)),
            idempotency_key: key(),
            ..Default::default()
        })
        .await?;
    let costs = scoring
        .list_marketing_costs(ListMarketingCostsRequest {
            product: PRODUCT.to_owned(),
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(costs.costs.len(), 1);
    assert_eq!(costs.costs[0].campaign, "spring-webinar");
    let rest = scoring
        .list_marketing_costs(ListMarketingCostsRequest {
            product: PRODUCT.to_owned(),
            page_token: costs.next_page_token,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(rest.costs.len(), 1);
    assert_eq!(rest.costs[0].campaign, "trade-fair");
    assert!(rest.next_page_token.is_empty());

    clock.set(day(4, 1));
    let report = scoring
        .get_funnel_report(GetFunnelReportRequest {
            product: PRODUCT.to_owned(),
            time_range: range(month_start(1), month_start(4)),
            period: ReportPeriod::Month.into(),
            segment_by: SegmentDimension::Source.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(report.periods.len(), 3);
    let january = report.periods[0].totals.clone().expect("totals");
    let february = report.periods[1].totals.clone().expect("totals");
    let march = report.periods[2].totals.clone().expect("totals");

    assert_eq!(january.new_lead_count, 3);
    assert_eq!(class_count(&january, LeadClass::B1), 2);
    assert_eq!(class_count(&january, LeadClass::B2), 1);
    let b1 = step(&january, FunnelStep::B1ToB2);
    assert_eq!((b1.entered_count, b1.converted_count), (3, 1));
    assert!((b1.rate - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(days(b1.median_duration.as_ref()), Some(21.0));

    assert_eq!(february.new_lead_count, 1);
    assert_eq!(class_count(&february, LeadClass::A), 1);
    assert_eq!(class_count(&february, LeadClass::B2), 1);
    assert_eq!(class_count(&february, LeadClass::B1), 1);
    assert!((february.class_a_share - 1.0 / 3.0).abs() < 1e-9);
    let b1 = step(&february, FunnelStep::B1ToB2);
    assert_eq!((b1.entered_count, b1.converted_count), (2, 1));
    assert_eq!(days(b1.median_duration.as_ref()), Some(27.0));
    let b2 = step(&february, FunnelStep::B2ToB3);
    assert_eq!((b2.entered_count, b2.converted_count), (2, 1));
    assert_eq!(days(b2.median_duration.as_ref()), Some(14.0));
    let b3 = step(&february, FunnelStep::B3ToA);
    assert_eq!((b3.entered_count, b3.converted_count), (1, 1));
    assert_eq!(days(b3.median_duration.as_ref()), Some(7.0));
    let close = step(&february, FunnelStep::AToClose);
    assert_eq!((close.entered_count, close.converted_count), (1, 0));
    let sql = step(&february, FunnelStep::SalToSql);
    assert_eq!((sql.entered_count, sql.converted_count), (1, 1));
    assert_eq!(
        sql.median_duration
            .as_ref()
            .map(|duration| duration.seconds),
        Some((Duration::days(2) - Duration::minutes(30)).num_seconds())
    );
    // The webinar's 28 of 59 days fall in February, beside the fair's whole booth.
    let february_costs = 1_000_000 * 28 / 59 + 300_000;
    assert_eq!(february.marketing_costs, vec![euros(february_costs)]);
    assert_eq!(february.cost_per_lead, vec![euros(february_costs)]);
    assert_eq!(february.closed_deal_count, 0);

    assert_eq!(march.new_lead_count, 0);
    assert_eq!(march.closed_deal_count, 1);
    assert_eq!(march.won_deal_values, vec![euros(4_200_000)]);
    assert_eq!(march.average_deal_values, vec![euros(4_200_000)]);
    let close = step(&march, FunnelStep::AToClose);
    assert_eq!((close.entered_count, close.converted_count), (2, 1));
    assert_eq!(days(close.median_duration.as_ref()), Some(15.0));
    let won = step(&march, FunnelStep::OpportunityToCustomer);
    assert_eq!((won.entered_count, won.converted_count), (1, 1));
    assert_eq!(days(won.median_duration.as_ref()), Some(11.0));
    // Bolt leaves B2 for A without passing B3: it got through B2 and never entered B3.
    let b2 = step(&march, FunnelStep::B2ToB3);
    assert_eq!((b2.entered_count, b2.converted_count), (1, 1));
    assert_eq!(days(b2.median_duration.as_ref()), Some(36.0));
    assert!(march.marketing_costs.is_empty());

    let totals = report.totals.clone().expect("totals");
    assert_eq!(totals.new_lead_count, 4);
    assert_eq!(totals.closed_deal_count, 1);
    assert_eq!(totals.marketing_costs, vec![euros(1_300_000)]);
    assert_eq!(totals.cost_per_lead, vec![euros(325_000)]);

    let january_sources: Vec<(&str, u32)> = report.periods[0]
        .segments
        .iter()
        .map(|segment| {
            let metrics = segment.metrics.as_ref().expect("metrics");
            (segment.segment_value.as_str(), metrics.new_lead_count)
        })
        .collect();
    assert_eq!(january_sources, vec![("trade-fair", 1), ("website", 2)]);

    let trend = report
        .duration_trends
        .iter()
        .find(|trend| trend.step == FunnelStep::B1ToB2 as i32)
        .expect("the B1 to B2 trend");
    assert_eq!(trend.periods_measured, 2);
    assert_eq!(days(trend.change_per_period.as_ref()), Some(6.0));

    let campaigns: Vec<(&str, u32, u32)> = report
        .campaigns
        .iter()
        .map(|campaign| {
            (
                campaign.campaign.as_str(),
                campaign.new_lead_count,
                campaign.closed_deal_count,
            )
        })
        .collect();
    assert_eq!(
        campaigns,
        vec![("spring-webinar", 2, 1), ("trade-fair", 2, 0)]
    );
    let webinar = &report.campaigns[0];
    assert_eq!(webinar.costs, vec![euros(1_000_000)]);
    assert_eq!(webinar.cost_per_lead, vec![euros(500_000)]);
    assert_eq!(webinar.won_deal_values, vec![euros(4_200_000)]);
    assert!((webinar.returns[0].return_on_investment - 3.2).abs() < 1e-9);
    let fair = &report.campaigns[1];
    assert_eq!(fair.cost_per_lead, vec![euros(150_000)]);
    assert!((fair.returns[0].return_on_investment + 1.0).abs() < 1e-9);

    // The forecast for April measures December to March: of the A-leads in hand at a
    // month's start one of one closed, so Bolt, in A now, is one expected close.
    let forecast = scoring
        .get_forecast(GetForecastRequest {
            product: PRODUCT.to_owned(),
            period: ReportPeriod::Month.into(),
            target_closes: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        forecast.forecast_period,
        range(month_start(5), month_start(6))
    );
    let a = forecast
        .by_class
        .iter()
        .find(|class| class.lead_class == LeadClass::A as i32)
        .expect("class A");
    assert_eq!(a.lead_count, 1);
    assert!((a.close_probability - 1.0).abs() < 1e-9);
    assert!((forecast.expected_closes - 1.0).abs() < 1e-9);
    assert!((forecast.lead_to_close_rate - 0.25).abs() < 1e-9);
    assert_eq!(forecast.leads_needed, 12);
    assert_eq!(forecast.additional_leads_needed, 8);
    assert_eq!(forecast.expected_order_values, vec![euros(4_200_000)]);

    // A window without a close has nothing to measure rates from.
    let empty = scoring
        .get_forecast(GetForecastRequest {
            product: PRODUCT.to_owned(),
            period: ReportPeriod::Month.into(),
            rate_window: range(month_start(1), month_start(2)),
            ..Default::default()
        })
        .await
        .expect_err("no close in January");
    assert_eq!(empty.code(), Code::FailedPrecondition);
    Ok(())
}

#[tokio::test]
async fn a_quarter_of_leads_is_reported_month_by_month_and_forecast() -> anyhow::Result<()> {
    let clock = ManualClock::new(day(1, 5));
    let suite = TestSuite::start_with_clock(Arc::new(clock.clone())).await?;
    a_quarter_of_leads(&suite, clock).await
}

#[tokio::test]
async fn a_quarter_of_leads_is_reported_month_by_month_and_forecast_in_the_embedded_mode()
-> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("leadflow-reports-{}", uuid::Uuid::new_v4()));
    let clock = ManualClock::new(day(1, 5));
    let suite = TestSuite::start_embedded_with_clock(&data_dir, Arc::new(clock.clone())).await?;
    let outcome = a_quarter_of_leads(&suite, clock).await;
    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

#[tokio::test]
async fn report_requests_name_every_wrong_field() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let mut scoring = suite.scoring();
    let refused = scoring
        .get_funnel_report(GetFunnelReportRequest {
            product: String::new(),
            time_range: Some(TimeRange {
                start_time: Some(to_timestamp(month_start(3))),
                end_time: Some(to_timestamp(month_start(2))),
            }),
            company_size_boundaries: vec![10, 10],
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields: Vec<String> = refused
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "company_size_boundaries",
            "period",
            "product",
            "time_range.end_time"
        ]
    );
    let refused = scoring
        .get_funnel_report(GetFunnelReportRequest {
            product: PRODUCT.to_owned(),
            time_range: range(
                Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
                    .single()
                    .expect("date"),
                month_start(1),
            ),
            period: ReportPeriod::Week.into(),
            ..Default::default()
        })
        .await
        .expect_err("too many weeks");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = scoring
        .record_marketing_cost(RecordMarketingCostRequest {
            product: PRODUCT.to_owned(),
            campaign: " ".to_owned(),
            amount: Some(Money {
                currency_code: "eur".to_owned(),
                minor_units: 0,
            }),
            time_range: Some(TimeRange {
                start_time: Some(to_timestamp(month_start(2))),
                end_time: None,
            }),
            idempotency_key: key(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    let mut fields: Vec<String> = refused
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "amount.currency_code",
            "amount.minor_units",
            "campaign",
            "time_range.end_time"
        ]
    );
    let listed = scoring
        .list_marketing_costs(ListMarketingCostsRequest {
            product: PRODUCT.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.costs.is_empty(), "a refused cost is not kept");
    Ok(())
}
