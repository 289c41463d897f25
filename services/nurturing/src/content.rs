//! The content library: items written for buyer roles at a buying stage, about a product,
//! in a language. They fill the role x stage grid nurture tracks draw from.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use leadflow_platform::{FieldViolations, time::to_timestamp, validate};
use leadflow_proto::{common::v1 as common, nurturing::v1 as pb};
use uuid::Uuid;

/// The most buyer roles one item may be written for.
const MAX_BUYER_ROLES: usize = 50;

/// The fields of an item an update may change, as update_mask paths.
const UPDATABLE_FIELDS: [&str; 9] = [
    "title",
    "kind",
    "url",
    "summary",
    "buyer_roles",
    "stage",
    "product",
    "language",
    "priority",
];

/// The fields of an item only the server sets, as update_mask paths.
const SERVER_ASSIGNED_FIELDS: [&str; 5] = [
    "content_item_id",
    "state",
    "create_time",
    "update_time",
    "retire_time",
];

/// The grid's columns, from B1 to A.
const GRID_STAGES: [common::BuyingStage; 4] = [
    common::BuyingStage::ProblemAwareness,
    common::BuyingStage::SolutionSearch,
    common::BuyingStage::RequestingOffers,
    common::BuyingStage::ChoosingOffer,
];

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

/// How many active items of one kind one (buyer role, stage) cell holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCount {
    /// The grid row.
    pub buyer_role: String,
    /// The grid column.
    pub stage: common::BuyingStage,
    /// The kind counted.
    pub kind: pb::ContentKind,
    /// How many active items of that kind the cell holds.
    pub count: u32,
}

/// Checks the paths of an update mask (with or without the `item.` prefix) and returns
/// them without the prefix; an empty mask means every updatable field.
pub fn update_mask_paths(
    violations: &mut FieldViolations,
    mask: Option<&prost_types::FieldMask>,
) -> Vec<String> {
    let paths: Vec<String> = mask
        .map(|mask| {
            mask.paths
                .iter()
                .map(|path| path.strip_prefix("item.").unwrap_or(path).to_owned())
                .collect()
        })
        .unwrap_or_default();
    for (index, path) in paths.iter().enumerate() {
        if SERVER_ASSIGNED_FIELDS.contains(&path.as_str()) {
            violations.add(
                format!("update_mask.paths[{index}]"),
                format!("{path:?} is assigned by the server"),
            );
        } else if !UPDATABLE_FIELDS.contains(&path.as_str()) {
            violations.add(
                format!("update_mask.paths[{index}]"),
                format!("{path:?} is not a field of a content item"),
            );
        }
    }
    paths
}

/// The stored item with the fields in `paths` taken from `given`, all of them when `paths`
/// is empty; to be parsed like a new item, so that an update obeys the rules of a create.
pub fn merge_update(
    stored: &pb::ContentItem,
    given: &pb::ContentItem,
    paths: &[String],
) -> pb::ContentItem {
    if paths.is_empty() {
        // Server-assigned fields are ignored by the parse, whatever the caller sent.
        return given.clone();
    }
    let mut merged = stored.clone();
    for path in paths {
        match path.as_str() {
            "title" => merged.title = given.title.clone(),
            "kind" => merged.kind = given.kind,
            "url" => merged.url = given.url.clone(),
            "summary" => merged.summary = given.summary.clone(),
            "buyer_roles" => merged.buyer_roles = given.buyer_roles.clone(),
            "stage" => merged.stage = given.stage,
            "product" => merged.product = given.product.clone(),
            "language" => merged.language = given.language.clone(),
            "priority" => merged.priority = given.priority,
            _ => {}
        }
    }
    merged
}

/// The role x stage grid: a row for every role of `counts` and of `extra_roles`, sorted,
/// each with one cell per stage from B1 to A, and the gap report of the cells holding
/// fewer than `min_items_per_cell` items (0 counts as 1: only the empty cells).
pub fn content_grid(
    counts: &[CellCount],
    flagged: &[(String, common::BuyingStage, u32)],
    extra_roles: &[String],
    min_items_per_cell: u32,
) -> pb::GetContentGridResponse {
    // A role whose enrollments wait for content is a row even without a single item.
    let roles: BTreeSet<&str> = counts
        .iter()
        .map(|count| count.buyer_role.as_str())
        .chain(flagged.iter().map(|(role, _, _)| role.as_str()))
        .chain(extra_roles.iter().map(String::as_str))
        .collect();
    let mut kinds: BTreeMap<(&str, common::BuyingStage), BTreeMap<pb::ContentKind, u32>> =
        BTreeMap::new();
    for count in counts {
        *kinds
            .entry((count.buyer_role.as_str(), count.stage))
            .or_default()
            .entry(count.kind)
            .or_default() += count.count;
    }
    let cells: Vec<pb::ContentGridCell> = roles
        .iter()
        .flat_map(|role| GRID_STAGES.iter().map(move |stage| (*role, *stage)))
        .map(|(role, stage)| {
            let kind_counts: Vec<pb::ContentKindCount> = kinds
                .get(&(role, stage))
                .into_iter()
                .flatten()
                .map(|(kind, count)| pb::ContentKindCount {
                    kind: (*kind).into(),
                    count: *count,
                })
                .collect();
            pb::ContentGridCell {
                buyer_role: role.to_owned(),
                stage: stage.into(),
                item_count: kind_counts.iter().map(|kind| kind.count).sum(),
                kind_counts,
                flagged_enrollment_count: flagged
                    .iter()
                    .filter(|(flagged_role, flagged_stage, _)| {
                        flagged_role == role && *flagged_stage == stage
                    })
                    .map(|(_, _, count)| count)
                    .sum(),
            }
        })
        .collect();
    let min_items_per_cell = min_items_per_cell.max(1);
    let gaps = cells
        .iter()
        .filter(|cell| cell.item_count < min_items_per_cell)
        .cloned()
        .collect();
    pb::GetContentGridResponse { cells, gaps }
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
