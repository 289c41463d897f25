//! The content library: items written for buyer roles at a buying stage, about a product,
//! in a language. They fill the role x stage grid nurture tracks draw from.

use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::{common::v1 as common, nurturing::v1 as pb};
use uuid::Uuid;

/// The most buyer roles one item may be written for.
const MAX_BUYER_ROLES: usize = 50;

/// A content item that passed validation and is ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContentItem {
    /// The title mails and reports show.
    pub title: String,
    /// Whitepaper, case study, webinar...
    pub kind: pb::ContentKind,
    /// Where the content is.
    pub url: String,
    /// A short summary for the mail body.
    pub summary: String,
    /// The buyer roles it is written for (at least one).
    pub buyer_roles: Vec<String>,
    /// The buying stage it is written for.
    pub stage: common::BuyingStage,
    /// The product it is about.
    pub product: String,
    /// Its language (BCP 47).
    pub language: String,
    /// Its order within its cells: lower first.
    pub priority: u32,
}

/// A stored content item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentItem {
    /// The item's id.
    pub content_item_id: Uuid,
    /// What it is.
    pub item: NewContentItem,
    /// Whether it may no longer be offered.
    pub retired: bool,
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// When it last changed.
    pub update_time: DateTime<Utc>,
    /// When it was retired.
    pub retire_time: Option<DateTime<Utc>>,
}

impl NewContentItem {
    /// Parses the `item` of a create request; every problem is reported under its field path.
    pub fn parse(item: Option<&pb::ContentItem>) -> Result<Self, FieldViolations> {
        let Some(item) = item else {
            return Err(FieldViolations::single("item", "is required"));
        };
        let mut violations = FieldViolations::new();
        let title = validate::required_text(&mut violations, "item.title", &item.title, 300);
        let kind = match pb::ContentKind::try_from(item.kind) {
            Ok(pb::ContentKind::Unspecified) | Err(_) => {
                violations.add("item.kind", "must be a known content kind");
                pb::ContentKind::Unspecified
            }
            Ok(kind) => kind,
        };
        let url = validate::http_url(&mut violations, "item.url", &item.url);
        let summary =
            validate::optional_text(&mut violations, "item.summary", &item.summary, 2_000);
        if item.buyer_roles.is_empty() {
            violations.add("item.buyer_roles", "must name at least one buyer role");
        } else if item.buyer_roles.len() > MAX_BUYER_ROLES {
            violations.add(
                "item.buyer_roles",
                format!("must name at most {MAX_BUYER_ROLES} roles"),
            );
        }
        let mut buyer_roles: Vec<String> = Vec::with_capacity(item.buyer_roles.len());
        for (index, role) in item.buyer_roles.iter().enumerate() {
            let role =
                validate::identifier(&mut violations, &format!("item.buyer_roles[{index}]"), role);
            if !buyer_roles.contains(&role) {
                buyer_roles.push(role);
            }
        }
        let stage = match common::BuyingStage::try_from(item.stage) {
            Ok(common::BuyingStage::Unspecified) | Err(_) => {
                violations.add("item.stage", "must be a known buying stage");
                common::BuyingStage::Unspecified
            }
            Ok(stage) => stage,
        };
        let product = validate::identifier(&mut violations, "item.product", &item.product);
        let language = validate::language_tag(&mut violations, "item.language", &item.language);
        if i32::try_from(item.priority).is_err() {
            violations.add("item.priority", "is too large");
        }
        violations.into_result()?;
        Ok(Self {
            title,
            kind,
            url,
            summary,
            buyer_roles,
            stage,
            product,
            language,
            priority: item.priority,
        })
    }
}

impl From<&ContentItem> for pb::ContentItem {
    fn from(stored: &ContentItem) -> Self {
        let item = &stored.item;
        Self {
            content_item_id: stored.content_item_id.to_string(),
            title: item.title.clone(),
            kind: item.kind.into(),
            url: item.url.clone(),
            summary: item.summary.clone(),
            buyer_roles: item.buyer_roles.clone(),
            stage: item.stage.into(),
            product: item.product.clone(),
            language: item.language.clone(),
            priority: item.priority,
            state: if stored.retired {
                pb::ContentItemState::Retired
            } else {
                pb::ContentItemState::Active
            }
            .into(),
            create_time: Some(to_timestamp(stored.create_time)),
            update_time: Some(to_timestamp(stored.update_time)),
            retire_time: stored.retire_time.map(to_timestamp),
        }
    }
}
