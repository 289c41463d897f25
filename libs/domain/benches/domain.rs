//! Micro-benchmarks of the domain rules: a score update, classification, the routing choice
//! and the next nurture content item, in nanoseconds per call.

use std::{hint::black_box, time::Duration as StdDuration};

use chrono::{DateTime, Duration, Utc, Weekday};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use leadflow_domain::{
    ActivityKind, Attribute, BuyingStage, ClassEvidence, DecayingSum, EngagementModel,
    EngagementRule, FitOperator, FitRule, GradeBands, LevelBands, Profile, ScoredActivity,
    infer_class,
    nurture::{Offer, next_offer},
    routing::{Absence, Candidate, Need, Rotation, Schedule, Strategy, WorkingSpan, pick},
    score_fit,
};
use uuid::Uuid;

/// Team sizes the routing choice is measured over.
const TEAM_SIZES: [usize; 2] = [10, 100];

const DAY: StdDuration = StdDuration::from_secs(86_400);

/// A fixed moment: Tuesday 13 January 2026, 10:15 UTC (11:15 in Berlin).
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_768_299_300, 0).expect("a representable time")
}

// ---------------------------------------------------------------------------------------
// score update

/// The seed table with a 30-day half-life, a capped mail-open rule and two content
/// overrides, as a tuned scoring model looks.
fn scoring_model() -> EngagementModel {
    EngagementModel::seed(Some(DAY * 30))
        .with_rule(
            ActivityKind::EmailOpened.key(),
            EngagementRule {
                points: 10,
                half_life: Some(DAY * 14),
                cap_points: 50,
                cap_period: Some(DAY * 30),
            },
        )
        .with_override("roi-study", ActivityKind::SlideDeckDownloaded.key(), 80)
        .with_override("pricing-sheet", ActivityKind::FactSheetRequested.key(), 40)
}

/// A lead's running score after a few weeks of activity under `model`.
fn running_sum(model: &EngagementModel) -> DecayingSum {
    let mut sum = DecayingSum::new();
    let journey = [
        (ActivityKind::TeaserRead, 40),
        (ActivityKind::EmailOpened, 35),
        (ActivityKind::VideoCompleted, 30),
        (ActivityKind::EmailOpened, 21),
        (ActivityKind::FactSheetRequested, 14),
        (ActivityKind::EmailOpened, 7),
        (ActivityKind::ContentCommented, 2),
    ];
    for (kind, days_ago) in journey {
        let rule = model.rule(&kind.key()).expect("the seed table scores it");
        sum.add(
            f64::from(rule.points),
            now() - Duration::days(days_ago),
            rule.half_life,
        );
    }
    sum
}

/// Ten fit rules of an ideal customer profile: six on the lead, four on its contacts.
fn fit_rules() -> Vec<FitRule> {
    let rule = |id: &str, attribute, operator, values: &[&str], points, disqualifier| FitRule {
        rule_id: id.to_owned(),
        attribute,
        operator,
        values: values.iter().map(|value| (*value).to_owned()).collect(),
        points,
        disqualifier,
    };
    vec![
        rule(
            "core-industry",
            Attribute::Industry,
            FitOperator::In,
            &["manufacturing", "logistics", "wholesale"],
            30,
            false,
        ),
        rule(
            "mid-size",
            Attribute::EmployeeCount,
            FitOperator::Between,
            &["50", "999"],
            20,
            false,
        ),
        rule(
            "dach",
            Attribute::CountryCode,
            FitOperator::In,
            &["DE", "AT", "CH"],
            10,
            false,
        ),
        rule(
            "revenue",
            Attribute::RevenueBand,
            FitOperator::In,
            &["10m-50m", "50m-250m"],
            10,
            false,
        ),
        rule(
            "competitor",
            Attribute::WebDomain,
            FitOperator::In,
            &["rival.example", "other-rival.example"],
            0,
            true,
        ),
        rule(
            "no-region",
            Attribute::Region,
            FitOperator::IsMissing,
            &[],
            -5,
            false,
        ),
        rule(
            "decision-maker",
            Attribute::Seniority,
            FitOperator::In,
            &["head-of-department", "director", "c-level"],
            20,
            false,
        ),
        rule(
            "buyer-role",
            Attribute::BuyerRole,
            FitOperator::In,
            &["decision-maker", "influencer"],
            10,
            false,
        ),
        rule(
            "free-mail",
            Attribute::Email,
            FitOperator::FreeMail,
            &[],
            -20,
            false,
        ),
        rule(
            "student",
            Attribute::JobTitle,
            FitOperator::Contains,
            &["student", "intern"],
            0,
            true,
        ),
    ]
}

fn lead_profile() -> Profile {
    Profile::new()
        .with(Attribute::CompanyName, "Acme Fördertechnik GmbH")
        .with(Attribute::WebDomain, "acme-foerdertechnik.example")
        .with(Attribute::Industry, "Manufacturing")
        .with(Attribute::EmployeeCount, "320")
        .with(Attribute::RevenueBand, "50m-250m")
        .with(Attribute::CountryCode, "DE")
        .with(Attribute::Region, "Bavaria")
        .with(Attribute::Source, "webinar")
}

fn contact_profiles() -> Vec<(String, Profile)> {
    vec![
        (
            "anna".to_owned(),
            Profile::new()
                .with(Attribute::Seniority, "Head-of-Department")
                .with(Attribute::BuyerRole, "decision-maker")
                .with(Attribute::JobTitle, "Head of Intralogistics")
                .with(Attribute::Email, "anna.huber@acme-foerdertechnik.example")
                .with(Attribute::FirstName, "Anna")
                .with(Attribute::LastName, "Huber"),
        ),
        (
            "ben".to_owned(),
            Profile::new()
                .with(Attribute::Seniority, "specialist")
                .with(Attribute::BuyerRole, "user")
                .with(Attribute::JobTitle, "Working Student Logistics")
                .with(Attribute::Email, "ben.k@gmail.com")
                .with(Attribute::FirstName, "Ben"),
        ),
    ]
}

fn score(c: &mut Criterion) {
    let model = scoring_model();
    let sum = running_sum(&model);
    let deck = ScoredActivity {
        key: ActivityKind::SlideDeckDownloaded.key(),
        content_id: Some("product-tour".to_owned()),
        occurred_at: now(),
    };
    let half_life = model.rule(&deck.key).expect("scored").half_life;
    c.bench_function("score/award_and_add", |b| {
        b.iter_batched(
            || sum.clone(),
            |mut sum| {
                let award = model
                    .award(black_box(&deck), black_box(&[]))
                    .expect("scored");
                sum.add(f64::from(award.points), deck.occurred_at, half_life);
                black_box(sum.value_at(black_box(deck.occurred_at)));
                sum
            },
            BatchSize::SmallInput,
        );
    });

    // A capped type: the cap sums what the lead earned in the window before.
    let open = ScoredActivity {
        key: ActivityKind::EmailOpened.key(),
        content_id: Some("newsletter-2026-01".to_owned()),
        occurred_at: now(),
    };
    let earlier: Vec<(DateTime<Utc>, u32)> = (1..=12)
        .map(|week| (now() - Duration::days(7 * week), 10))
        .collect();
    c.bench_function("score/award_capped", |b| {
        b.iter(|| model.award(black_box(&open), black_box(&earlier)));
    });

    c.bench_function("score/value_at", |b| {
        let later = now() + Duration::days(3);
        b.iter(|| black_box(&sum).value_at(black_box(later)));
    });

    let rules = fit_rules();
    let lead = lead_profile();
    let contacts = contact_profiles();
    c.bench_function("score/fit_10_rules_2_contacts", |b| {
        b.iter(|| score_fit(black_box(&rules), black_box(&lead), black_box(&contacts)));
    });
}

// ---------------------------------------------------------------------------------------
// classification

fn classify(c: &mut Criterion) {
    // Only content evidence: every stronger kind is checked and passed over first.
    let evidence = ClassEvidence {
        furthest_content_stage: Some(BuyingStage::RequestingOffers),
        ..ClassEvidence::default()
    };
    c.bench_function("classify/infer_class", |b| {
        b.iter(|| infer_class(black_box(&evidence)));
    });

    let grades = GradeBands::default();
    let levels = LevelBands::default();
    c.bench_function("classify/grade_and_level", |b| {
        b.iter(|| (grades.grade(black_box(45)), levels.level(black_box(187.6))));
    });
}

// ---------------------------------------------------------------------------------------
// routing choice

/// Monday to Friday, 9:00 to 12:30 and 13:30 to 17:30 in Berlin, with a past and a coming
/// absence.
fn office_hours() -> Schedule {
    let weekdays = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];
    Schedule {
        time_zone: chrono_tz::Europe::Berlin,
        working_hours: weekdays
            .into_iter()
            .flat_map(|day| {
                [(9 * 60, 12 * 60 + 30), (13 * 60 + 30, 17 * 60 + 30)].map(
                    |(start_minute, end_minute)| WorkingSpan {
                        day,
                        start_minute,
                        end_minute,
                    },
                )
            })
            .collect(),
        out_of_office: vec![
            Absence {
                start: now() - Duration::days(30),
                end: Some(now() - Duration::days(23)),
            },
            Absence {
                start: now() + Duration::days(40),
                end: Some(now() + Duration::days(54)),
            },
        ],
    }
}

/// A team of `size` reps with mixed products, languages, loads, weights and idle times.
fn team(size: usize) -> (Vec<Candidate>, Vec<Rotation>) {
    let reps: Vec<Candidate> = (0..size)
        .map(|index| {
            let i = index as u32;
            Candidate {
                rep_id: Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0000 + index as u128),
                active: index % 13 != 12,
                schedule: office_hours(),
                products: if index % 3 == 0 {
                    Vec::new()
                } else {
                    vec!["erp".to_owned(), "mes".to_owned()]
                },
                languages: if index % 4 == 0 {
                    vec!["de".to_owned(), "en".to_owned()]
                } else {
                    vec!["de".to_owned()]
                },
                capacity: 25,
                open_assignments: (i * 7) % 23,
                weight: 1 + i % 5,
                last_assign_time: Some(now() - Duration::minutes(i64::from((i * 37) % 600))),
            }
        })
        .collect();
    let rotation = reps
        .iter()
        .enumerate()
        .map(|(index, rep)| Rotation {
            rep_id: rep.rep_id,
            current_weight: (index as i64 % 7) - 3,
        })
        .collect();
    (reps, rotation)
}

fn need() -> Need<'static> {
    Need {
        product: "erp",
        language: "de-DE",
        at: now(),
        breached: &[],
        respect_schedule: true,
    }
}

fn route(c: &mut Criterion) {
    let need = need();
    let strategies = [
        ("route/pick_round_robin", Strategy::RoundRobin),
        (
            "route/pick_weighted_round_robin",
            Strategy::WeightedRoundRobin,
        ),
        ("route/pick_least_loaded", Strategy::LeastLoaded),
    ];
    for (name, strategy) in strategies {
        let mut group = c.benchmark_group(name);
        for size in TEAM_SIZES {
            let (reps, rotation) = team(size);
            let available: Vec<&Candidate> = reps
                .iter()
                .filter(|rep| rep.skip_reasons(&need).is_empty())
                .collect();
            assert!(
                !available.is_empty(),
                "someone in the team can take the lead"
            );
            let last_chosen = Some(rotation[size / 2].rep_id);
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
                b.iter(|| {
                    pick(
                        black_box(strategy),
                        black_box(&rotation),
                        black_box(&available),
                        black_box(last_chosen),
                    )
                });
            });
        }
        group.finish();
    }

    // Who of the team can take the lead now, with the reasons of those who cannot.
    let mut group = c.benchmark_group("route/skip_reasons");
    for size in TEAM_SIZES {
        let (reps, _) = team(size);
        group.bench_with_input(BenchmarkId::from_parameter(size), &reps, |b, reps| {
            b.iter(|| {
                black_box(reps)
                    .iter()
                    .map(|rep| rep.skip_reasons(black_box(&need)))
                    .filter(Vec::is_empty)
                    .count()
            });
        });
    }
    group.finish();

    let schedule = office_hours();
    c.bench_function("route/is_working_time", |b| {
        b.iter(|| black_box(&schedule).is_working_time(black_box(now())));
    });
}

// ---------------------------------------------------------------------------------------
// next content

const ROLES: [&str; 4] = ["decision-maker", "influencer", "it-manager", "user"];
const STAGES: [BuyingStage; 4] = [
    BuyingStage::ProblemAwareness,
    BuyingStage::SolutionSearch,
    BuyingStage::RequestingOffers,
    BuyingStage::ChoosingOffer,
];

/// A 4x4 role-by-stage library, oldest first: per cell three English items and one German
/// one, plus one item per stage written for every role.
fn library() -> Vec<Offer<Uuid>> {
    let mut items = Vec::new();
    let mut next_id = 0x0193_0000_0000_7000_8000_0000_0000_0000_u128;
    let mut id = || {
        next_id += 1;
        Uuid::from_u128(next_id)
    };
    for (round, german_stage) in STAGES.into_iter().enumerate() {
        for stage in STAGES {
            if round == 3 {
                items.push(Offer {
                    id: id(),
                    buyer_roles: Vec::new(),
                    stage,
                    language: "en".to_owned(),
                });
                continue;
            }
            for role in ROLES {
                items.push(Offer {
                    id: id(),
                    buyer_roles: vec![role.to_owned()],
                    stage,
                    language: "en".to_owned(),
                });
            }
        }
        for role in ROLES {
            items.push(Offer {
                id: id(),
                buyer_roles: vec![role.to_owned(), "decision-maker".to_owned()],
                stage: german_stage,
                language: "de".to_owned(),
            });
        }
    }
    items
}

fn nurture(c: &mut Criterion) {
    let library = library();
    let role = "IT-Manager";
    let stage = BuyingStage::SolutionSearch;
    // The contact got two of the four English items of its cell and a few from elsewhere.
    let fits = |offer: &&Offer<Uuid>| {
        offer.stage == stage
            && (offer.buyer_roles.is_empty()
                || offer
                    .buyer_roles
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(role)))
    };
    let mut received: Vec<Uuid> = library
        .iter()
        .filter(fits)
        .filter(|offer| offer.language == "en")
        .take(2)
        .map(|offer| offer.id)
        .collect();
    received.extend(
        library
            .iter()
            .filter(|offer| offer.stage == BuyingStage::ProblemAwareness)
            .take(4)
            .map(|offer| offer.id),
    );
    let chosen = next_offer(&library, role, stage, "en-GB", "de", &received);
    assert!(chosen.is_some(), "the cell has an item left");
    c.bench_function("nurture/next_content", |b| {
        b.iter(|| {
            next_offer(
                black_box(&library),
                black_box(role),
                black_box(stage),
                black_box("en-GB"),
                black_box("de"),
                black_box(&received),
            )
        });
    });

    // Nothing left in the contact's language: the fallback language is searched too.
    let mut spent = received.clone();
    spent.extend(
        library
            .iter()
            .filter(fits)
            .filter(|offer| offer.language == "en")
            .map(|offer| offer.id),
    );
    let fallback = next_offer(&library, role, stage, "en-GB", "de", &spent);
    assert!(
        fallback.is_some_and(|offer| offer.language == "de"),
        "the fallback language has an item"
    );
    c.bench_function("nurture/next_content_fallback", |b| {
        b.iter(|| {
            next_offer(
                black_box(&library),
                black_box(role),
                black_box(stage),
                black_box("en-GB"),
                black_box("de"),
                black_box(&spent),
            )
        });
    });
}

criterion_group!(benches, score, classify, route, nurture);
criterion_main!(benches);
