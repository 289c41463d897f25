//! Nurture policy: when an enrollment's next mail is due, whether it is the next step or an
//! alternative offer, when the tries run out, which item of the contact's (role, stage) cell
//! comes next, and when quiet hours and the frequency cap let a mail go.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::BuyingStage;

/// The hours in which no mail goes out, in a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// The first quiet minute after local midnight.
    pub start_minute: u32,
    /// The first minute after the quiet span; before `start_minute` the span crosses
    /// midnight; equal to it, there are no quiet hours.
    pub end_minute: u32,
    /// Whether Saturdays and Sundays are quiet all day.
    pub skip_weekends: bool,
}

impl QuietHours {
    fn quiet_at(&self, local_minute: u32, weekday: Weekday) -> bool {
        if self.skip_weekends && matches!(weekday, Weekday::Sat | Weekday::Sun) {
            return true;
        }
        match self.start_minute.cmp(&self.end_minute) {
            std::cmp::Ordering::Equal => false,
            std::cmp::Ordering::Less => {
                (self.start_minute..self.end_minute).contains(&local_minute)
            }
            std::cmp::Ordering::Greater => {
                local_minute >= self.start_minute || local_minute < self.end_minute
            }
        }
    }

    /// The first moment at or after `at` outside the quiet hours, read in `time_zone`.
    pub fn next_allowed(&self, at: DateTime<Utc>, time_zone: Tz) -> DateTime<Utc> {
        let mut candidate = at;
        // A week and a day of minutes covers any span, weekends included.
        for _ in 0..(8 * 24 * 60) {
            let local = candidate.with_timezone(&time_zone);
            let minute = local.hour() * 60 + local.minute();
            if !self.quiet_at(minute, local.weekday()) {
                return candidate;
            }
            // To the start of the next local minute.
            candidate = candidate + Duration::seconds(60 - i64::from(local.second()))
                - Duration::nanoseconds(i64::from(local.nanosecond() % 1_000_000_000));
        }
        at
    }
}

/// One version of a track's timing, with the contract's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NurturePolicy {
    /// Between a reaction and the next step.
    pub cadence: Duration,
    /// The longest time between two mails.
    pub max_interval: Duration,
    /// How long an offer waits for a reaction.
    pub reaction_window: Duration,
    /// Tries of one step, the first offer included.
    pub max_attempts: u32,
    /// When nothing goes out.
    pub quiet_hours: Option<QuietHours>,
}

impl Default for NurturePolicy {
    fn default() -> Self {
        Self {
            cadence: Duration::days(21),
            max_interval: Duration::days(30),
            reaction_window: Duration::days(7),
            max_attempts: 3,
            quiet_hours: None,
        }
    }
}

/// Where an active enrollment stands between mails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The current step from 1; 0 before the first mail.
    pub step: u32,
    /// The try within the step from 1; 0 before the first mail.
    pub attempt: u32,
    /// When the last mail went out.
    pub last_send: Option<DateTime<Utc>>,
    /// When the contact last opened or clicked.
    pub last_reaction: Option<DateTime<Utc>>,
}

/// What a due enrollment does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextMove {
    /// Send the first try of `step`.
    Step {
        /// The step to send.
        step: u32,
    },
    /// Send another offer in the same step.
    Alternative {
        /// The step.
        step: u32,
        /// The try, from 2.
        attempt: u32,
    },
    /// Every try of the step went unanswered: recycle the lead.
    Exhausted,
}

impl Progress {
    /// Whether the contact reacted to the last mail.
    pub fn reacted(&self) -> bool {
        match (self.last_send, self.last_reaction) {
            (Some(sent), Some(reacted)) => reacted >= sent,
            _ => false,
        }
    }

    /// What to do when the enrollment falls due.
    pub fn next_move(&self, policy: &NurturePolicy) -> NextMove {
        if self.step == 0 || self.reacted() {
            return NextMove::Step {
                step: self.step + 1,
            };
        }
        if self.attempt < policy.max_attempts.max(1) {
            NextMove::Alternative {
                step: self.step,
                attempt: self.attempt + 1,
            }
        } else {
            NextMove::Exhausted
        }
    }

    /// When the enrollment is next due: after a mail, at the end of the reaction window;
    /// after a reaction, one cadence on, but never later than the longest interval after
    /// the last mail; at once before the first mail.
    pub fn next_due(&self, policy: &NurturePolicy) -> DateTime<Utc> {
        match self.last_send {
            None => self.last_reaction.unwrap_or(DateTime::<Utc>::MIN_UTC),
            Some(sent) if self.reacted() => {
                let reacted = self.last_reaction.unwrap_or(sent);
                (reacted + policy.cadence).min(sent + policy.max_interval)
            }
            Some(sent) => sent + policy.reaction_window,
        }
    }
}

/// How often one contact may get nurture mail, across all tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    /// The most mails within `window`.
    pub max_sends: u32,
    /// The sliding window.
    pub window: Duration,
    /// The shortest time between two mails.
    pub min_gap: Duration,
}

impl Default for FrequencyCap {
    fn default() -> Self {
        Self {
            max_sends: 4,
            window: Duration::days(30),
            min_gap: Duration::days(2),
        }
    }
}

impl FrequencyCap {
    /// The first moment at or after `now` at which one more mail keeps within the cap,
    /// given the contact's earlier sends (any order).
    pub fn next_allowed(&self, sends: &[DateTime<Utc>], now: DateTime<Utc>) -> DateTime<Utc> {
        let mut sorted: Vec<DateTime<Utc>> = sends.to_vec();
        sorted.sort();
        let mut allowed = now;
        if let Some(last) = sorted.last() {
            allowed = allowed.max(*last + self.min_gap);
        }
        let max_sends = self.max_sends.max(1) as usize;
        // The window must hold at most max_sends - 1 earlier sends: wait until the oldest
        // of the last max_sends sends leaves it.
        if sorted.len() >= max_sends {
            let oldest_counted = sorted[sorted.len() - max_sends];
            allowed = allowed.max(oldest_counted + self.window);
        }
        allowed
    }
}

/// A content item as the choice sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<Id> {
    /// The item.
    pub id: Id,
    /// The buyer roles it is written for; empty means every role.
    pub buyer_roles: Vec<String>,
    /// The buying stage it serves.
    pub stage: BuyingStage,
    /// Its language (BCP 47).
    pub language: String,
}

/// The next item for a contact: from its (role, stage) cell, not received before, in the
/// contact's language or else the fallback language, in library order (callers pass the
/// items oldest first). `None` when the cell has nothing left: flag, do not repeat.
pub fn next_offer<'a, Id: PartialEq>(
    library: &'a [Offer<Id>],
    buyer_role: &str,
    stage: BuyingStage,
    language: &str,
    fallback_language: &str,
    received: &[Id],
) -> Option<&'a Offer<Id>> {
    let fits = |offer: &&Offer<Id>, wanted: &str| {
        offer.stage == stage
            && (offer.buyer_roles.is_empty()
                || offer
                    .buyer_roles
                    .iter()
                    .any(|role| role.eq_ignore_ascii_case(buyer_role)))
            && !received.contains(&offer.id)
            && (wanted.is_empty() || crate::routing::same_language(&offer.language, wanted))
    };
    library
        .iter()
        .find(|offer| fits(offer, language))
        .or_else(|| {
            (!fallback_language.is_empty())
                .then(|| library.iter().find(|offer| fits(offer, fallback_language)))
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::{prop_assert, proptest};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("an RFC 3339 time")
            .with_timezone(&Utc)
    }

    #[test]
    fn quiet_hours_push_a_mail_to_their_end_in_the_contacts_zone() {
        let nights = QuietHours {
            start_minute: 20 * 60,
            end_minute: 8 * 60,
            skip_weekends: true,
        };
        // 21:30 UTC on a Tuesday is 22:30 in Berlin: wait until 08:00 Berlin (07:00 UTC).
        assert_eq!(
            nights.next_allowed(at("2026-01-06T21:30:00Z"), chrono_tz::Europe::Berlin),
            at("2026-01-07T07:00:00Z")
        );
        // Friday night waits for Monday morning.
        assert_eq!(
            nights.next_allowed(at("2026-01-09T20:00:00Z"), chrono_tz::Europe::Berlin),
            at("2026-01-12T07:00:00Z")
        );
        // Inside the day nothing moves.
        let noon = at("2026-01-07T11:00:00Z");
        assert_eq!(nights.next_allowed(noon, chrono_tz::Europe::Berlin), noon);
        let none = QuietHours {
            start_minute: 600,
            end_minute: 600,
            skip_weekends: false,
        };
        assert_eq!(none.next_allowed(noon, chrono_tz::UTC), noon);
    }

    #[test]
    fn a_reaction_moves_on_a_cadence_later_and_silence_brings_alternatives_then_the_end() {
        let policy = NurturePolicy::default();
        let sent = at("2026-01-05T09:00:00Z");
        let fresh = Progress {
            step: 0,
            attempt: 0,
            last_send: None,
            last_reaction: None,
        };
        assert_eq!(fresh.next_move(&policy), NextMove::Step { step: 1 });
        let waiting = Progress {
            step: 1,
            attempt: 1,
            last_send: Some(sent),
            last_reaction: None,
        };
        assert_eq!(waiting.next_due(&policy), sent + Duration::days(7));
        assert_eq!(
            waiting.next_move(&policy),
            NextMove::Alternative {
                step: 1,
                attempt: 2
            }
        );
        let third = Progress {
            attempt: 3,
            ..waiting
        };
        assert_eq!(third.next_move(&policy), NextMove::Exhausted);
        let reacted = Progress {
            last_reaction: Some(sent + Duration::days(1)),
            ..waiting
        };
        // Three weeks after the reaction, within a month of the mail.
        assert_eq!(
            reacted.next_due(&policy),
            sent + Duration::days(1) + Duration::days(21)
        );
        assert_eq!(reacted.next_move(&policy), NextMove::Step { step: 2 });
        let late_reaction = Progress {
            last_reaction: Some(sent + Duration::days(20)),
            ..waiting
        };
        assert_eq!(
            late_reaction.next_due(&policy),
            sent + Duration::days(30),
            "at least once a month"
        );
        // A reaction to an earlier mail does not count for the last one.
        let stale = Progress {
            last_reaction: Some(sent - Duration::days(1)),
            ..waiting
        };
        assert!(!stale.reacted());
    }

    #[test]
    fn the_frequency_cap_waits_for_the_gap_and_the_window() {
        let cap = FrequencyCap {
            max_sends: 2,
            window: Duration::days(10),
            min_gap: Duration::days(2),
        };
        let now = at("2026-01-10T00:00:00Z");
        assert_eq!(cap.next_allowed(&[], now), now);
        let yesterday = now - Duration::days(1);
        assert_eq!(
            cap.next_allowed(&[yesterday], now),
            yesterday + Duration::days(2)
        );
        let older = now - Duration::days(5);
        // Two sends in the window: the next waits until the older one leaves it.
        assert_eq!(
            cap.next_allowed(&[yesterday, older], now),
            older + Duration::days(10)
        );
    }

    fn offer(id: u32, roles: &[&str], stage: BuyingStage, language: &str) -> Offer<u32> {
        Offer {
            id,
            buyer_roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            stage,
            language: language.to_owned(),
        }
    }

    #[test]
    fn the_next_offer_comes_from_the_cell_in_the_contacts_language_and_never_twice() {
        let library = [
            offer(1, &["cfo"], BuyingStage::ProblemAwareness, "en"),
            offer(2, &["it-manager"], BuyingStage::SolutionSearch, "en"),
            offer(
                3,
                &["it-manager", "cfo"],
                BuyingStage::ProblemAwareness,
                "de",
            ),
            offer(4, &["it-manager"], BuyingStage::ProblemAwareness, "en"),
            offer(5, &[], BuyingStage::ProblemAwareness, "en"),
        ];
        let pick = |received: &[u32], language: &str, fallback: &str| {
            next_offer(
                &library,
                "IT-Manager",
                BuyingStage::ProblemAwareness,
                language,
                fallback,
                received,
            )
            .map(|offer| offer.id)
        };
        assert_eq!(pick(&[], "en", ""), Some(4));
        assert_eq!(pick(&[4], "en-GB", ""), Some(5));
        assert_eq!(pick(&[4, 5], "en", ""), None, "nothing left: flag");
        assert_eq!(pick(&[], "de", ""), Some(3));
        assert_eq!(pick(&[3], "de", "en"), Some(4), "the fallback language");
    }

    proptest! {
        #[test]
        fn quiet_hours_never_send_inside_them(
            start in 0u32..1440,
            end in 0u32..1440,
            offset_minutes in 0i64..(60 * 24 * 14),
        ) {
            let quiet = QuietHours { start_minute: start, end_minute: end, skip_weekends: true };
            let from = at("2026-03-20T00:00:00Z") + Duration::minutes(offset_minutes);
            let allowed = quiet.next_allowed(from, chrono_tz::Europe::Berlin);
            let local = allowed.with_timezone(&chrono_tz::Europe::Berlin);
            prop_assert!(allowed >= from);
            prop_assert!(!quiet.quiet_at(local.hour() * 60 + local.minute(), local.weekday()));
        }

        #[test]
        fn the_cap_is_never_exceeded(
            gaps in proptest::collection::vec(0i64..(60 * 24 * 20), 1..30),
        ) {
            let cap = FrequencyCap::default();
            let mut sends: Vec<DateTime<Utc>> = Vec::new();
            let mut now = at("2026-01-01T00:00:00Z");
            for gap in gaps {
                now += Duration::minutes(gap);
                let when = cap.next_allowed(&sends, now);
                sends.push(when);
                now = when;
                let in_window = sends.iter().filter(|send| **send > when - cap.window).count();
                prop_assert!(in_window <= cap.max_sends as usize);
            }
            for pair in sends.windows(2) {
                prop_assert!(pair[1] - pair[0] >= cap.min_gap);
            }
        }
    }
}
