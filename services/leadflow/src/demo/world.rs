//! The demo's world: synthetic companies and their buyers, each on a hidden buying journey
//! (problem awareness, solution search, requesting offers, choosing an offer), who submit
//! the web form or are scanned at a trade fair, read content that fits their stage, open
//! and click the nurture mail that lands in their mailbox, and the reps who accept what is
//! ready, send back what is not, qualify, and win or lose the deal, day by simulated day.
//!
//! Everything the world does goes through the suite's gRPC contracts; its own tally of what
//! it did is kept beside, so the reports can be checked against it.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use crate::Simulation;
use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use indicatif::ProgressBar;
use leadflow_domain::funnel::PeriodLength;
use leadflow_platform::time::{ManualClock, to_timestamp};
use leadflow_proto::{
    capture::v1::{self as capture, activity_input},
    common::v1::{self as common, ActivityType, BuyingStage},
    routing::v1 as routing,
    scoring::v1 as scoring,
};

use super::{
    dice::Dice,
    setup::{PRODUCT, ROLES, Setup},
};
use crate::console::{CallResult, Clients, ConsoleError};

/// Where a buyer is on its journey, which the suite only learns from what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    ProblemAwareness,
    SolutionSearch,
    RequestingOffers,
    ChoosingOffer,
}

impl Phase {
    fn next(self) -> Option<Self> {
        match self {
            Self::ProblemAwareness => Some(Self::SolutionSearch),
            Self::SolutionSearch => Some(Self::RequestingOffers),
            Self::RequestingOffers => Some(Self::ChoosingOffer),
            Self::ChoosingOffer => None,
        }
    }

    /// The mean days a buyer stays in the phase (the field's estimates, e.g. B1 to B2 about
    /// two months).
    fn mean_days(self) -> f64 {
        match self {
            Self::ProblemAwareness => 55.0,
            Self::SolutionSearch => 40.0,
            Self::RequestingOffers => 25.0,
            Self::ChoosingOffer => 30.0,
        }
    }

    fn stage(self) -> BuyingStage {
        match self {
            Self::ProblemAwareness => BuyingStage::ProblemAwareness,
            Self::SolutionSearch => BuyingStage::SolutionSearch,
            Self::RequestingOffers => BuyingStage::RequestingOffers,
            Self::ChoosingOffer => BuyingStage::ChoosingOffer,
        }
    }

    /// What buyers in the phase do, with how often.
    fn activities(self) -> &'static [(ActivityType, f64)] {
        match self {
            Self::ProblemAwareness => &[
                (ActivityType::TeaserRead, 3.0),
                (ActivityType::PageVisited, 4.0),
                (ActivityType::VideoCompleted, 1.0),
            ],
            Self::SolutionSearch => &[
                (ActivityType::WhitepaperDownloaded, 3.0),
                (ActivityType::WebinarAttended, 1.5),
                (ActivityType::VideoCompleted, 2.0),
                (ActivityType::PageVisited, 2.0),
            ],
            Self::RequestingOffers => &[
                (ActivityType::FactSheetRequested, 3.0),
                (ActivityType::SlideDeckDownloaded, 2.0),
                (ActivityType::KnowledgeTestPassed, 0.7),
                (ActivityType::ContentCommented, 1.0),
            ],
            Self::ChoosingOffer => &[
                (ActivityType::SlideDeckDownloaded, 2.0),
                (ActivityType::SurveyAnswered, 1.0),
                (ActivityType::FactSheetRequested, 2.0),
                (ActivityType::ContactRequested, 1.0),
            ],
        }
    }

    /// How likely a buyer in the phase does something on a given day.
    fn daily_activity(self) -> f64 {
        match self {
            Self::ProblemAwareness => 0.05,
            Self::SolutionSearch => 0.08,
            Self::RequestingOffers => 0.12,
            Self::ChoosingOffer => 0.16,
        }
    }
}

/// How a buyer came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Website,
    Webinar,
    LinkedIn,
    /// Scanned at the trade fair with this number.
    Fair(usize),
}

/// Where a lead stands with sales, as the reps know it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Deal {
    None,
    Accepted { qualify_on: u32 },
    Qualified { open_on: u32 },
    Opportunity { close_on: u32, amount_minor: i64 },
    Won,
}

#[derive(Debug, Clone)]
struct Buyer {
    email: String,
    first_name: String,
    last_name: String,
    company: String,
    domain: String,
    country: &'static str,
    region: &'static str,
    language: &'static str,
    industry: &'static str,
    employees: u32,
    role: &'static str,
    seniority: &'static str,
    channel: Channel,
    arrives_on: u32,
    /// None for a buyer with no need (a consultant, a student): it never buys.
    phase: Option<Phase>,
    /// The simulated day it moves to the next phase.
    advances_on: f64,
    /// How active it is, around 1.
    zeal: f64,
    /// How well it fits, 0 to 1, which makes deals likelier.
    fit: f64,
    lead_id: String,
    contact_id: String,
    deal: Deal,
}

/// What the world did, counted by the world itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// Leads that came in.
    pub leads: u32,
    /// Of them, through the web form.
    pub submitted: u32,
    /// Of them, imported from the trade fairs.
    pub imported: u32,
    /// Activities tracked, besides mail reactions.
    pub activities: u64,
    /// Nurture mails that reached a buyer's mailbox.
    pub mails_received: u64,
    /// Mails opened.
    pub opens: u64,
    /// Mails whose link was clicked.
    pub clicks: u64,
    /// Hand-overs the reps accepted.
    pub accepted: u32,
    /// Hand-overs sent back as not ready yet.
    pub sent_back: u32,
    /// Hand-overs rejected as not a fit.
    pub not_a_fit: u32,
    /// Hand-overs a rep let lie (the SLA moves them on).
    pub left_lying: u32,
    /// Leads qualified.
    pub qualified: u32,
    /// Opportunities opened.
    pub opportunities: u32,
    /// Deals won.
    pub won: u32,
    /// Their value in cents of EUR.
    pub won_value_minor: i64,
    /// Deals lost.
    pub lost: u32,
    /// Marketing spend recorded, in cents of EUR.
    pub costs_minor: i64,
    /// Events the services applied.
    pub events: u64,
}

/// The simulated span and its population.
#[derive(Debug, Clone)]
pub struct WorldPlan {
    /// The first simulated day, at midnight UTC.
    pub start: DateTime<Utc>,
    /// How many days are simulated.
    pub days: u32,
    /// How many leads arrive.
    pub leads: u32,
    /// The seed.
    pub seed: u64,
}

const FIRST_NAMES: [&str; 24] = [
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jan", "Karla",
    "Leon", "Mia", "Noah", "Olivia", "Paul", "Quentin", "Rosa", "Sam", "Tara", "Ugo", "Vera",
    "Will", "Zoe",
];
const LAST_NAMES: [&str; 20] = [
    "Kraus", "Meyer", "Schmid", "Wagner", "Brown", "Taylor", "Wilson", "Martin", "Dubois",
    "Laurent", "Rossi", "Novak", "Berg", "Larsen", "Keller", "Hofmann", "Evans", "Walker",
    "Moreau", "Lang",
];
const COMPANY_STEMS: [&str; 24] = [
    "Acme", "Bolt", "Cobalt", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Iris", "Juno",
    "Kestrel", "Linden", "Meridian", "Nova", "Orbit", "Pioneer", "Quarry", "Ridge", "Summit",
    "Titan", "Umbra", "Vertex", "Willow", "Zenith",
];
const COMPANY_KINDS: [&str; 8] = [
    "Maschinenbau",
    "Logistics",
    "Foods",
    "Components",
    "Systems",
    "Works",
    "Freight",
    "Retail",
];

fn role_seniority(dice: &mut Dice, role: &str) -> &'static str {
    match role {
        "ceo" | "cfo" => "c-level",
        "it-manager" if dice.chance(0.6) => "head-of-department",
        "it-manager" => "team-lead",
        _ => "specialist",
    }
}

fn is_weekday(date: DateTime<Utc>) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The world at its start: every buyer with its day of arrival and hidden journey.
fn populate(plan: &WorldPlan, dice: &mut Dice) -> (Vec<Buyer>, Vec<u32>) {
    // Two fairs, at a third and two thirds of the time, each on a Wednesday.
    let fairs: Vec<u32> = [plan.days / 3, plan.days * 2 / 3]
        .iter()
        .map(|&day| {
            let mut day = day.max(1);
            while (plan.start + Duration::days(i64::from(day))).weekday() != Weekday::Wed
                && day + 1 < plan.days
            {
                day += 1;
            }
            day
        })
        .collect();
    let weekday_weight = |day: u32| {
        if is_weekday(plan.start + Duration::days(i64::from(day))) {
            1.0
        } else {
            0.25
        }
    };
    let days: Vec<(u32, f64)> = (0..plan.days)
        .map(|day| (day, weekday_weight(day)))
        .collect();
    let countries: [((&str, &str, &str), f64); 7] = [
        (("DE", "DACH", "de"), 0.33),
        (("AT", "DACH", "de"), 0.07),
        (("CH", "DACH", "de"), 0.06),
        (("GB", "UK and Ireland", "en"), 0.15),
        (("US", "North America", "en"), 0.18),
        (("FR", "France", "fr"), 0.13),
        (("NL", "Benelux", "en"), 0.08),
    ];
    let industries: [(&str, f64); 6] = [
        ("manufacturing", 0.32),
        ("logistics", 0.2),
        ("retail", 0.16),
        ("software", 0.14),
        ("consulting", 0.1),
        ("education", 0.08),
    ];
    let roles: Vec<(&'static str, f64)> = ROLES
        .iter()
        .zip([0.35, 0.25, 0.2, 0.2])
        .map(|(r, w)| (*r, w))
        .collect();
    let channels = [
        (Channel::Website, 0.35),
        (Channel::Webinar, 0.2),
        (Channel::LinkedIn, 0.25),
        (Channel::Fair(0), 0.1),
        (Channel::Fair(1), 0.1),
    ];
    let mut buyers = Vec::with_capacity(plan.leads as usize);
    for index in 0..plan.leads {
        let channel = *dice.weighted(&channels);
        let arrives_on = match channel {
            Channel::Fair(fair) => fairs[fair],
            _ => *dice.weighted(&days),
        };
        let (country, region, language) = *dice.weighted(&countries);
        let industry = *dice.weighted(&industries);
        let employees = (5.0 * (1000.0_f64).powf(dice.unit())).round() as u32;
        let role = *dice.weighted(&roles);
        let seniority = role_seniority(dice, role);
        let first_name = *dice.pick(&FIRST_NAMES);
        let last_name = *dice.pick(&LAST_NAMES);
        let company = format!(
            "{} {} {}",
            dice.pick(&COMPANY_STEMS),
            dice.pick(&COMPANY_KINDS),
            index
        );
        let domain = format!("{}.example", company.to_lowercase().replace(' ', "-"));
        let fit = [
            matches!(industry, "manufacturing" | "logistics"),
            (50..=5000).contains(&employees),
            matches!(seniority, "c-level" | "head-of-department"),
        ]
        .iter()
        .filter(|fits| **fits)
        .count() as f64
            / 3.0;
        let no_need = matches!(industry, "consulting" | "education") || dice.chance(0.12);
        let phase = if no_need {
            None
        } else {
            // A quarter are nearly ready when they first get in touch; the rest start at
            // problem awareness.
            Some(*dice.weighted(&[
                (Phase::ProblemAwareness, 0.55),
                (Phase::SolutionSearch, 0.2),
                (Phase::RequestingOffers, 0.15),
                (Phase::ChoosingOffer, 0.1),
            ]))
        };
        let zeal = dice.uniform(0.5, 1.6);
        let advances_on = f64::from(arrives_on)
            + phase.map_or(f64::INFINITY, |phase| {
                dice.exponential(phase.mean_days() / zeal)
            });
        buyers.push(Buyer {
            email: format!(
                "{}.{}@{domain}",
                first_name.to_lowercase(),
                last_name.to_lowercase()
            ),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            company,
            domain,
            country,
            region,
            language,
            industry,
            employees,
            role,
            seniority,
            channel,
            arrives_on,
            phase,
            advances_on,
            zeal,
            fit,
            lead_id: String::new(),
            contact_id: String::new(),
            deal: Deal::None,
        });
    }
    buyers.sort_by_key(|buyer| buyer.arrives_on);
    (buyers, fairs)
}

fn contact_profile(buyer: &Buyer) -> common::ContactProfile {
    common::ContactProfile {
        email: buyer.email.clone(),
        first_name: buyer.first_name.clone(),
        last_name: buyer.last_name.clone(),
        buyer_role: buyer.role.to_owned(),
        job_title: buyer.role.replace('-', " "),
        seniority: buyer.seniority.to_owned(),
        language: buyer.language.to_owned(),
        ..Default::default()
    }
}

fn lead_profile(buyer: &Buyer) -> common::LeadProfile {
    common::LeadProfile {
        company_name: buyer.company.clone(),
        web_domain: buyer.domain.clone(),
        industry: buyer.industry.to_owned(),
        employee_count: buyer.employees,
        country_code: buyer.country.to_owned(),
        region: buyer.region.to_owned(),
        ..Default::default()
    }
}

/// The world running on the suite.
pub struct World<'a> {
    simulation: &'a Simulation,
    clients: &'a Clients,
    clock: &'a ManualClock,
    setup: &'a Setup,
    plan: WorldPlan,
    dice: Dice,
    buyers: Vec<Buyer>,
    fairs: Vec<u32>,
    by_lead: HashMap<String, usize>,
    by_email: HashMap<String, usize>,
    mail_dir: PathBuf,
    mails_seen: BTreeSet<String>,
    tally: Tally,
    calls: u64,
}

impl std::fmt::Debug for World<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "World({} buyers)", self.buyers.len())
    }
}

impl<'a> World<'a> {
    /// A world of `plan.leads` buyers, arriving over `plan.days` days.
    pub fn new(
        simulation: &'a Simulation,
        clients: &'a Clients,
        clock: &'a ManualClock,
        setup: &'a Setup,
        plan: WorldPlan,
        data_dir: &Path,
    ) -> Self {
        let mut dice = Dice::new(plan.seed);
        let (buyers, fairs) = populate(&plan, &mut dice);
        Self {
            simulation,
            clients,
            clock,
            setup,
            plan,
            dice,
            buyers,
            fairs,
            by_lead: HashMap::new(),
            by_email: HashMap::new(),
            mail_dir: data_dir.join("mail"),
            mails_seen: BTreeSet::new(),
            tally: Tally::default(),
            calls: 0,
        }
    }

    fn key(&mut self, what: &str) -> String {
        self.calls += 1;
        format!("demo:{what}:{}", self.calls)
    }

    fn at(&self, day: u32, hour: i64, minute: i64) -> DateTime<Utc> {
        self.plan.start
            + Duration::days(i64::from(day))
            + Duration::hours(hour)
            + Duration::minutes(minute)
    }

    async fn settle(&mut self) -> Result<(), ConsoleError> {
        let settled = self
            .simulation
            .settle()
            .await
            .map_err(|error| ConsoleError::Input(format!("the suite failed: {error}")))?;
        self.tally.events += settled.events as u64;
        Ok(())
    }

    /// Runs every day; returns the tally.
    pub async fn run(mut self, progress: &ProgressBar) -> Result<Tally, ConsoleError> {
        for day in 0..self.plan.days {
            let date = self.at(day, 0, 0);
            progress.set_message(date.format("%Y-%m-%d").to_string());
            if date.day() == 1 || day == 0 {
                self.clock.set(self.at(day, 7, 0));
                self.record_month_costs(date).await?;
            }
            self.clock.set(self.at(day, 8, 0));
            self.arrivals(day).await?;
            self.settle().await?;
            self.clock.set(self.at(day, 11, 0));
            self.engagement(day).await?;
            self.settle().await?;
            if is_weekday(date) {
                self.clock.set(self.at(day, 15, 0));
                self.sales(day).await?;
                self.settle().await?;
            }
            self.clock.set(self.at(day, 18, 30));
            self.settle().await?;
            self.clock.set(self.at(day, 19, 30));
            self.read_mail(day).await?;
            self.settle().await?;
            progress.inc(1);
        }
        // What the last evening's settling sent is in the mailboxes too; it would be read
        // tomorrow, after the simulated time.
        self.collect_mail();
        Ok(self.tally)
    }

    async fn record_month_costs(&mut self, date: DateTime<Utc>) -> Result<(), ConsoleError> {
        let start = date;
        let month_end = PeriodLength::Month.next_start(start);
        let end = month_end.min(self.at(self.plan.days, 0, 0));
        let budgets = [("linkedin-ads", 450_000_i64), ("webinar-series", 250_000)];
        for (campaign, monthly) in budgets {
            // The last, partial month is billed for its share.
            let share = (end - start).num_seconds() as f64
                / (month_end - start).num_seconds().max(1) as f64;
            let amount = (monthly as f64 * share).round() as i64;
            if amount <= 0 {
                continue;
            }
            self.record_cost(campaign, amount, start, end, "monthly budget")
                .await?;
        }
        Ok(())
    }

    async fn record_cost(
        &mut self,
        campaign: &str,
        amount_minor: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        note: &str,
    ) -> Result<(), ConsoleError> {
        let idempotency_key = self.key("cost");
        self.clients
            .scoring()
            .record_marketing_cost(scoring::RecordMarketingCostRequest {
                product: PRODUCT.to_owned(),
                campaign: campaign.to_owned(),
                amount: Some(scoring::Money {
                    currency_code: "EUR".to_owned(),
                    minor_units: amount_minor,
                }),
                time_range: Some(common::TimeRange {
                    start_time: Some(to_timestamp(start)),
                    end_time: Some(to_timestamp(end)),
                }),
                note: note.to_owned(),
                idempotency_key,
            })
            .await
            .or_fail("RecordMarketingCost")?;
        self.tally.costs_minor += amount_minor;
        Ok(())
    }

    fn arrived(&mut self, index: usize, contact_id: String, lead_id: String) {
        self.by_lead.insert(lead_id.clone(), index);
        self.by_email
            .insert(self.buyers[index].email.clone(), index);
        let buyer = &mut self.buyers[index];
        buyer.contact_id = contact_id;
        buyer.lead_id = lead_id;
        self.tally.leads += 1;
    }

    async fn arrivals(&mut self, day: u32) -> Result<(), ConsoleError> {
        let arriving: Vec<usize> = (0..self.buyers.len())
            .filter(|&index| self.buyers[index].arrives_on == day)
            .collect();
        let mut fair_rows = Vec::new();
        for index in arriving {
            let buyer = &self.buyers[index];
            let (source, campaign) = match buyer.channel {
                Channel::Website => ("website", ""),
                Channel::Webinar => ("webinar", "webinar-series"),
                Channel::LinkedIn => ("social", "linkedin-ads"),
                Channel::Fair(_) => {
                    fair_rows.push(index);
                    continue;
                }
            };
            let request = capture::SubmitFormRequest {
                form_id: self.setup.form_id.clone(),
                values: [
                    ("email", buyer.email.clone()),
                    ("first_name", buyer.first_name.clone()),
                    ("last_name", buyer.last_name.clone()),
                    ("company", buyer.company.clone()),
                ]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
                contact: Some(contact_profile(buyer)),
                lead: Some(lead_profile(buyer)),
                source: source.to_owned(),
                attribution: (!campaign.is_empty()).then(|| common::CampaignAttribution {
                    source: if campaign == "linkedin-ads" {
                        "linkedin"
                    } else {
                        "newsletter"
                    }
                    .to_owned(),
                    medium: if campaign == "linkedin-ads" {
                        "cpc"
                    } else {
                        "email"
                    }
                    .to_owned(),
                    campaign: campaign.to_owned(),
                    ..Default::default()
                }),
                consent_given: true,
                idempotency_key: format!("demo:form:{}", buyer.email),
                ..Default::default()
            };
            let answer = self
                .clients
                .capture()
                .submit_form(request)
                .await
                .or_fail("SubmitForm")?;
            self.arrived(index, answer.contact_id, answer.lead_id);
            self.tally.submitted += 1;
        }
        if !fair_rows.is_empty() {
            self.import_fair(day, fair_rows).await?;
        }
        Ok(())
    }

    /// The badge scans of a fair, imported the day of the fair with their consent.
    async fn import_fair(&mut self, day: u32, rows: Vec<usize>) -> Result<(), ConsoleError> {
        let fair_number = self.fairs.iter().position(|fair| *fair == day).unwrap_or(0) + 1;
        let given_at = self.at(day, 7, 30);
        let requests: Vec<capture::ImportLeadsRequest> = rows
            .iter()
            .enumerate()
            .map(|(line, &index)| {
                let buyer = &self.buyers[index];
                capture::ImportLeadsRequest {
                    line_number: line as u64 + 2,
                    contact: Some(contact_profile(buyer)),
                    lead: Some(lead_profile(buyer)),
                    product: PRODUCT.to_owned(),
                    source: "trade-fair".to_owned(),
                    consent: Some(capture::ImportedConsent {
                        wording_version: "fair-2026".to_owned(),
                        wording: "Send me news about ERP cloud by mail.".to_owned(),
                        given_at: Some(to_timestamp(given_at)),
                        confirmed: true,
                        evidence: format!("badge scan at trade fair {fair_number}"),
                        ..Default::default()
                    }),
                    idempotency_key: format!("demo:fair:{}", buyer.email),
                    ..Default::default()
                }
            })
            .collect();
        let mut answers = self
            .clients
            .capture()
            .import_leads(tokio_stream::iter(requests))
            .await
            .or_fail("ImportLeads")?;
        let mut results = Vec::new();
        while let Some(answer) = answers
            .message()
            .await
            .map_err(|status| ConsoleError::call("ImportLeads", &status))?
        {
            results.push(answer);
        }
        for answer in results {
            let line = usize::try_from(answer.line_number).unwrap_or(0);
            let Some(&index) = line.checked_sub(2).and_then(|line| rows.get(line)) else {
                continue;
            };
            if answer.status == capture::ItemStatus::Accepted as i32 {
                self.arrived(index, answer.contact_id, answer.lead_id);
                self.tally.imported += 1;
            }
        }
        let start = self.at(day, 0, 0);
        self.record_cost(
            "trade-fair",
            1_800_000,
            start,
            start + Duration::days(3),
            "booth and travel",
        )
        .await
    }

    /// The day's reading: each buyer in hand may do something that fits its phase.
    async fn engagement(&mut self, day: u32) -> Result<(), ConsoleError> {
        let mut activities = Vec::new();
        for index in 0..self.buyers.len() {
            if self.buyers[index].lead_id.is_empty() || self.buyers[index].deal == Deal::Won {
                continue;
            }
            let today = f64::from(day);
            let buyer = &mut self.buyers[index];
            if let Some(phase) = buyer.phase
                && today >= buyer.advances_on
                && let Some(next) = phase.next()
            {
                buyer.phase = Some(next);
                buyer.advances_on = today + self.dice.exponential(next.mean_days() / buyer.zeal);
            }
            let (chance, phase) = match buyer.phase {
                Some(phase) => (phase.daily_activity() * buyer.zeal, phase),
                // Those with no need still look around now and then.
                None => (0.015, Phase::ProblemAwareness),
            };
            if !self.dice.chance(chance) {
                continue;
            }
            let activity = *self.dice.weighted(phase.activities());
            let stage = if activity == ActivityType::ContactRequested {
                BuyingStage::Unspecified
            } else {
                phase.stage()
            };
            activities.push((buyer.contact_id.clone(), activity, stage, String::new()));
        }
        self.tally.activities += activities.len() as u64;
        self.track(activities).await
    }

    /// Sends activities in one stream.
    async fn track(
        &mut self,
        activities: Vec<(String, ActivityType, BuyingStage, String)>,
    ) -> Result<(), ConsoleError> {
        if activities.is_empty() {
            return Ok(());
        }
        let batch = self.key("activities");
        let requests: Vec<capture::TrackActivitiesRequest> = activities
            .into_iter()
            .enumerate()
            .map(|(number, (contact_id, activity, stage, send_id))| {
                capture::TrackActivitiesRequest {
                    activity: Some(capture::ActivityInput {
                        subject: Some(activity_input::Subject::ContactId(contact_id)),
                        r#type: activity.into(),
                        stage: stage.into(),
                        product: PRODUCT.to_owned(),
                        source: if send_id.is_empty() {
                            "website"
                        } else {
                            "email"
                        }
                        .to_owned(),
                        send_id,
                        ..Default::default()
                    }),
                    idempotency_key: format!("{batch}:{number}"),
                }
            })
            .collect();
        let answer = self
            .clients
            .capture()
            .track_activities(tokio_stream::iter(requests))
            .await
            .or_fail("TrackActivities")?;
        if answer.rejected_count > 0 {
            let reason = answer
                .results
                .iter()
                .find_map(|result| {
                    result
                        .error
                        .as_ref()
                        .map(|error| format!("{} {}", error.field, error.reason))
                })
                .unwrap_or_default();
            return Err(ConsoleError::Input(format!(
                "{} simulated activities were refused: {reason}",
                answer.rejected_count
            )));
        }
        Ok(())
    }

    /// The reps' afternoon: new hand-overs are accepted or sent back, accepted leads move on.
    async fn sales(&mut self, day: u32) -> Result<(), ConsoleError> {
        let mut pending = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .clients
                .routing()
                .list_assignments(routing::ListAssignmentsRequest {
                    product: PRODUCT.to_owned(),
                    states: vec![routing::AssignmentState::Pending.into()],
                    page_size: 200,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .or_fail("ListAssignments")?;
            pending.extend(page.assignments);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        // In the order of the buyers, not of the ids, so one seed always rolls the same.
        let mut pending: Vec<(usize, routing::Assignment)> = pending
            .into_iter()
            .filter_map(|assignment| Some((*self.by_lead.get(&assignment.lead_id)?, assignment)))
            .collect();
        pending.sort_by_key(|(index, _)| *index);
        for (index, assignment) in pending {
            // Now and then a rep lets a lead lie; the SLA gives it to the next rep.
            if self.dice.chance(0.06) {
                self.tally.left_lying += 1;
                continue;
            }
            let buyer = &self.buyers[index];
            let decision =
                if buyer.phase.is_none() && matches!(buyer.industry, "consulting" | "education") {
                    Err(routing::RejectionReason::NotAFit)
                } else if buyer.phase == Some(Phase::ChoosingOffer) && buyer.deal == Deal::None {
                    Ok(())
                } else {
                    Err(routing::RejectionReason::NotReadyYet)
                };
            match decision {
                Ok(()) => {
                    let idempotency_key = self.key("accept");
                    self.clients
                        .routing()
                        .accept_assignment(routing::AcceptAssignmentRequest {
                            assignment_id: assignment.assignment_id,
                            actor: assignment.rep_id,
                            idempotency_key,
                        })
                        .await
                        .or_fail("AcceptAssignment")?;
                    let qualify_on = day + self.dice.between(2, 6);
                    self.buyers[index].deal = Deal::Accepted { qualify_on };
                    self.tally.accepted += 1;
                }
                Err(reason) => {
                    let idempotency_key = self.key("reject");
                    self.clients
                        .routing()
                        .reject_assignment(routing::RejectAssignmentRequest {
                            assignment_id: assignment.assignment_id,
                            reason: reason.into(),
                            note: "after the first call".to_owned(),
                            actor: assignment.rep_id,
                            idempotency_key,
                        })
                        .await
                        .or_fail("RejectAssignment")?;
                    if reason == routing::RejectionReason::NotAFit {
                        self.tally.not_a_fit += 1;
                    } else {
                        self.tally.sent_back += 1;
                    }
                }
            }
        }
        for index in 0..self.buyers.len() {
            let deal = self.buyers[index].deal;
            match deal {
                Deal::Accepted { qualify_on } if qualify_on <= day => {
                    let (lead_id, idempotency_key) =
                        (self.buyers[index].lead_id.clone(), self.key("qualify"));
                    self.clients
                        .routing()
                        .qualify_lead(routing::QualifyLeadRequest {
                            lead_id,
                            product: PRODUCT.to_owned(),
                            actor: "sales".to_owned(),
                            idempotency_key,
                            ..Default::default()
                        })
                        .await
                        .or_fail("QualifyLead")?;
                    let open_on = day + self.dice.between(3, 10);
                    self.buyers[index].deal = Deal::Qualified { open_on };
                    self.tally.qualified += 1;
                }
                Deal::Qualified { open_on } if open_on <= day => {
                    let buyer = &self.buyers[index];
                    let base = 800_000 + i64::from(buyer.employees.min(5_000)) * 2_000;
                    let amount_minor = (base as f64 * self.dice.uniform(0.7, 1.3)).round() as i64;
                    let (lead_id, idempotency_key) =
                        (buyer.lead_id.clone(), self.key("opportunity"));
                    self.clients
                        .routing()
                        .open_opportunity(routing::OpenOpportunityRequest {
                            lead_id: lead_id.clone(),
                            product: PRODUCT.to_owned(),
                            crm_opportunity_id: format!("OPP-{}", self.calls),
                            expected_amount_minor: amount_minor,
                            currency: "EUR".to_owned(),
                            actor: "sales".to_owned(),
                            idempotency_key,
                            ..Default::default()
                        })
                        .await
                        .or_fail("OpenOpportunity")?;
                    let close_on = day + self.dice.between(10, 45);
                    self.buyers[index].deal = Deal::Opportunity {
                        close_on,
                        amount_minor,
                    };
                    self.tally.opportunities += 1;
                }
                Deal::Opportunity {
                    close_on,
                    amount_minor,
                } if close_on <= day => {
                    let fit = self.buyers[index].fit;
                    let won = self.dice.chance(0.3 + 0.45 * fit);
                    let (lead_id, idempotency_key) =
                        (self.buyers[index].lead_id.clone(), self.key("close"));
                    self.clients
                        .routing()
                        .close_deal(routing::CloseDealRequest {
                            lead_id,
                            product: PRODUCT.to_owned(),
                            outcome: if won {
                                routing::DealOutcome::Won
                            } else {
                                routing::DealOutcome::Lost
                            }
                            .into(),
                            amount_minor: if won { amount_minor } else { 0 },
                            currency: "EUR".to_owned(),
                            lost_reason: if won {
                                String::new()
                            } else {
                                "chose a competitor".to_owned()
                            },
                            actor: "sales".to_owned(),
                            idempotency_key,
                            ..Default::default()
                        })
                        .await
                        .or_fail("CloseDeal")?;
                    if won {
                        self.buyers[index].deal = Deal::Won;
                        self.tally.won += 1;
                        self.tally.won_value_minor += amount_minor;
                    } else {
                        // A lost deal goes back to nurturing; the buyer is still choosing.
                        self.buyers[index].deal = Deal::None;
                        self.tally.lost += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The evening's mail: what nurturing sent today lands in the buyers' mailboxes (the
    /// .eml files the embedded mode writes); some open it, fewer click, and a click speeds
    /// the buyer up, which is what nurturing is for.
    async fn read_mail(&mut self, day: u32) -> Result<(), ConsoleError> {
        let arrived = self.collect_mail();
        let mut reactions = Vec::new();
        for (send_id, index) in arrived {
            let buyer = &mut self.buyers[index];
            let open_chance = (0.25 + 0.2 * buyer.zeal).min(0.7);
            if !self.dice.chance(open_chance) {
                continue;
            }
            self.tally.opens += 1;
            reactions.push((
                buyer.contact_id.clone(),
                ActivityType::EmailOpened,
                BuyingStage::Unspecified,
                send_id.clone(),
            ));
            if self.dice.chance(0.3) {
                self.tally.clicks += 1;
                reactions.push((
                    buyer.contact_id.clone(),
                    ActivityType::LinkClicked,
                    BuyingStage::Unspecified,
                    send_id,
                ));
                let today = f64::from(day);
                if buyer.advances_on.is_finite() && buyer.advances_on > today {
                    buyer.advances_on -= (buyer.advances_on - today) * 0.2;
                }
            }
        }
        self.track(reactions).await
    }

    /// The mails that arrived since the last look, oldest first, with their recipients.
    fn collect_mail(&mut self) -> Vec<(String, usize)> {
        let mut arrived = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.mail_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(send_id) = name.strip_suffix(".eml")
                    && !self.mails_seen.contains(send_id)
                {
                    arrived.push((send_id.to_owned(), entry.path()));
                }
            }
        }
        arrived.sort();
        let mut delivered = Vec::with_capacity(arrived.len());
        for (send_id, path) in arrived {
            self.mails_seen.insert(send_id.clone());
            let Some(recipient) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|mail| recipient(&mail))
            else {
                continue;
            };
            let Some(&index) = self.by_email.get(&recipient) else {
                continue;
            };
            self.tally.mails_received += 1;
            delivered.push((send_id, index));
        }
        // By buyer, so one seed always rolls the same whatever ids the mails got.
        delivered.sort_by_key(|(_, index)| *index);
        delivered
    }
}

/// The address a mail was sent to, from its `To:` header.
fn recipient(mail: &str) -> Option<String> {
    let header = mail
        .lines()
        .take_while(|line| !line.is_empty())
        .find(|line| line.len() > 3 && line[..3].eq_ignore_ascii_case("to:"))?;
    let value = header[3..].trim();
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    Some(address.trim().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipient_is_read_from_the_to_header_with_or_without_a_name() {
        let mail = "From: a@b.example\r\nTo: \"Ida Kraus\" <Ida.Kraus@Acme.example>\r\nSubject: x\r\n\r\nTo: not@this.example\r\n";
        assert_eq!(recipient(mail).as_deref(), Some("ida.kraus@acme.example"));
        assert_eq!(
            recipient("to: ben@bolt.example\n\nbody").as_deref(),
            Some("ben@bolt.example")
        );
        assert_eq!(recipient("Subject: none\n\n"), None);
    }

    #[test]
    fn the_population_arrives_within_the_time_and_fair_leads_on_fair_days() {
        let plan = WorldPlan {
            start: DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
                .map(|time| time.with_timezone(&Utc))
                .expect("a time"),
            days: 180,
            leads: 1_000,
            seed: 7,
        };
        let (buyers, fairs) = populate(&plan, &mut Dice::new(plan.seed));
        assert_eq!(buyers.len(), 1_000);
        assert!(buyers.iter().all(|buyer| buyer.arrives_on < plan.days));
        for buyer in &buyers {
            if let Channel::Fair(fair) = buyer.channel {
                assert_eq!(buyer.arrives_on, fairs[fair]);
            }
        }
        let no_need = buyers.iter().filter(|buyer| buyer.phase.is_none()).count();
        assert!(
            (150..400).contains(&no_need),
            "{no_need} buyers with no need"
        );
        let (again, _) = populate(&plan, &mut Dice::new(plan.seed));
        assert_eq!(
            buyers.iter().map(|buyer| &buyer.email).collect::<Vec<_>>(),
            again.iter().map(|buyer| &buyer.email).collect::<Vec<_>>()
        );
    }
}
