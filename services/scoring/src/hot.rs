//! The hot score state: one snapshot per lead and product from which the score of any later
//! moment follows, kept in Redis in production and in memory in the embedded mode. It is a
//! cache of the ledger: losing it loses nothing, a rebuild recomputes it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadflow_domain::{DecayingSum, HeatMapCell, LevelBands, LifecycleStage, ProfileGrade};
use leadflow_platform::time::to_timestamp;
use leadflow_proto::{common::v1 as common, scoring::v1 as pb};
use leadflow_storage::{RedisStore, StorageError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rules::{proto_class, proto_grade};

/// What the score of a lead for a product is made of, independent of the moment asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSnapshot {
    /// The lead.
    pub lead_id: Uuid,
    /// The product.
    pub product: String,
    /// The model version that scored.
    pub model_id: Uuid,
    /// Its version number.
    pub model_version: u32,
    /// The fit score.
    pub fit_points: i32,
    /// The grade letter.
    pub grade: char,
    /// The engagement sum: (half-life ms, value as f64 bits, reference ms) per half-life;
    /// the bits keep the value exact through the text encoding.
    pub engagement: Vec<(u64, u64, i64)>,
    /// The minimums of engagement levels 2, 3 and 4.
    pub level_minimums: [u32; 3],
    /// The `LeadClass` value.
    pub lead_class: i32,
    /// Since when, in milliseconds since the epoch.
    pub class_since_ms: Option<i64>,
    /// How long the model expects a lead to stay in the class, in milliseconds.
    pub expected_class_ms: Option<u64>,
    /// The `LifecycleStage` value.
    pub stage: i32,
    /// Handed over to sales and not accepted, recycled or disqualified since.
    pub sales_ready: bool,
    /// All four BANT criteria met.
    pub bant_complete: bool,
}

impl ScoreSnapshot {
    /// The engagement sum.
    pub fn engagement_sum(&self) -> DecayingSum {
        DecayingSum::from_groups(
            self.engagement.iter().map(|(half_life, bits, reference)| {
                (*half_life, f64::from_bits(*bits), *reference)
            }),
        )
    }

    /// Keeps `sum` as the engagement.
    pub fn set_engagement(&mut self, sum: &DecayingSum) {
        self.engagement = sum
            .groups()
            .map(|(half_life, value, reference)| (half_life, value.to_bits(), reference))
            .collect();
    }

    /// The profile grade.
    pub fn profile_grade(&self) -> ProfileGrade {
        match self.grade {
            'A' => ProfileGrade::A,
            'B' => ProfileGrade::B,
            'C' => ProfileGrade::C,
            _ => ProfileGrade::D,
        }
    }

    /// The score at `now`.
    pub fn score_at(&self, now: DateTime<Utc>) -> pb::LeadScore {
        let engagement = self.engagement_sum().value_at(now);
        let level = LevelBands {
            minimums: self.level_minimums,
        }
        .level(engagement);
        let grade = self.profile_grade();
        let class_since = self
            .class_since_ms
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        let stalled = match (class_since, self.expected_class_ms) {
            (Some(since), Some(expected)) => {
                (now - since).num_milliseconds() > i64::try_from(expected).unwrap_or(i64::MAX)
            }
            _ => false,
        };
        pb::LeadScore {
            lead_id: self.lead_id.to_string(),
            product: self.product.clone(),
            model_id: self.model_id.to_string(),
            model_version: self.model_version,
            fit_points: self.fit_points,
            engagement_points: engagement,
            total_points: f64::from(self.fit_points) + engagement,
            grade: proto_grade(grade).into(),
            engagement_level: u32::from(level),
            cell: Some(cell(HeatMapCell { grade, level })),
            lead_class: self.lead_class,
            stage: self.stage,
            sales_ready: self.sales_ready,
            as_of_time: Some(to_timestamp(now)),
            stalled,
            class_since_time: class_since.map(to_timestamp),
            bant_complete: self.bant_complete,
        }
    }
}

/// The API's heat-map cell.
pub fn cell(cell: HeatMapCell) -> common::HeatMapCell {
    common::HeatMapCell {
        grade: proto_grade(cell.grade).into(),
        engagement_level: u32::from(cell.level),
    }
}

/// The API's class of a stored class name.
pub fn class_value(name: &str) -> i32 {
    common::LeadClass::from_str_name(name).unwrap_or_default() as i32
}

/// The API's stage of a stored stage name.
pub fn stage_value(name: &str) -> i32 {
    common::LifecycleStage::from_str_name(name).unwrap_or_default() as i32
}

/// The domain's stage of a stored stage name.
pub fn stage_of(name: &str) -> LifecycleStage {
    use common::LifecycleStage as P;
    match P::from_str_name(name).unwrap_or_default() {
        P::Mql => LifecycleStage::Mql,
        P::Sal => LifecycleStage::Sal,
        P::Sql => LifecycleStage::Sql,
        P::Opportunity => LifecycleStage::Opportunity,
        P::Customer => LifecycleStage::Customer,
        P::Recycled => LifecycleStage::Recycled,
        P::Disqualified => LifecycleStage::Disqualified,
        P::New | P::Unspecified => LifecycleStage::New,
    }
}

/// The stored name of a domain stage.
pub fn stage_name(stage: LifecycleStage) -> &'static str {
    use common::LifecycleStage as P;
    match stage {
        LifecycleStage::New => P::New,
        LifecycleStage::Mql => P::Mql,
        LifecycleStage::Sal => P::Sal,
        LifecycleStage::Sql => P::Sql,
        LifecycleStage::Opportunity => P::Opportunity,
        LifecycleStage::Customer => P::Customer,
        LifecycleStage::Recycled => P::Recycled,
        LifecycleStage::Disqualified => P::Disqualified,
    }
    .as_str_name()
}

/// The stored name of a domain class.
pub fn class_name(class: Option<leadflow_domain::LeadClass>) -> &'static str {
    proto_class(class).as_str_name()
}

/// Where the hot score state lives.
#[async_trait]
pub trait HotScores: Send + Sync + std::fmt::Debug {
    /// Stores the snapshots, replacing earlier ones of the same lead and product.
    async fn put(&self, snapshots: &[ScoreSnapshot]) -> Result<(), StorageError>;
    /// The snapshot of the lead for the product.
    async fn get(
        &self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Option<ScoreSnapshot>, StorageError>;
    /// Every snapshot of the product.
    async fn product(&self, product: &str) -> Result<Vec<ScoreSnapshot>, StorageError>;
    /// Whether the state was built since it was last lost.
    async fn is_built(&self) -> Result<bool, StorageError>;
    /// Marks the state as built.
    async fn mark_built(&self) -> Result<(), StorageError>;
}

/// The hot state in Redis: one hash per product, the lead id as the field.
#[derive(Debug, Clone)]
pub struct RedisHotScores {
    redis: RedisStore,
}

impl RedisHotScores {
    /// Hot state on `redis`, under its key space.
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }

    fn product_key(&self, product: &str) -> String {
        self.redis
            .key_space()
            .key(&format!("scoring:scores:{product}"))
    }

    fn built_key(&self) -> String {
        self.redis.key_space().key("scoring:built")
    }
}

fn decode(bytes: &[u8]) -> Result<ScoreSnapshot, StorageError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StorageError::Corrupt(format!("score snapshot: {error}")))
}

fn encode(snapshot: &ScoreSnapshot) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(snapshot)
        .map_err(|error| StorageError::Corrupt(format!("score snapshot: {error}")))
}

#[async_trait]
impl HotScores for RedisHotScores {
    async fn put(&self, snapshots: &[ScoreSnapshot]) -> Result<(), StorageError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for snapshot in snapshots {
            pipeline
                .cmd("HSET")
                .arg(self.product_key(&snapshot.product))
                .arg(snapshot.lead_id.to_string())
                .arg(encode(snapshot)?)
                .ignore();
        }
        let mut connection = self.redis.connection();
        let () = pipeline.query_async(&mut connection).await?;
        Ok(())
    }

    async fn get(
        &self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Option<ScoreSnapshot>, StorageError> {
        let mut connection = self.redis.connection();
        let bytes: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.product_key(product))
            .arg(lead_id.to_string())
            .query_async(&mut connection)
            .await?;
        bytes.as_deref().map(decode).transpose()
    }

    async fn product(&self, product: &str) -> Result<Vec<ScoreSnapshot>, StorageError> {
        let mut connection = self.redis.connection();
        let values: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(self.product_key(product))
            .query_async(&mut connection)
            .await?;
        values.iter().map(|bytes| decode(bytes)).collect()
    }

    async fn is_built(&self) -> Result<bool, StorageError> {
        let mut connection = self.redis.connection();
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.built_key())
            .query_async(&mut connection)
            .await?;
        Ok(exists)
    }

    async fn mark_built(&self) -> Result<(), StorageError> {
        let mut connection = self.redis.connection();
        let () = redis::cmd("SET")
            .arg(self.built_key())
            .arg(Utc::now().to_rfc3339())
            .query_async(&mut connection)
            .await?;
        Ok(())
    }
}

/// The hot state in this process's memory (the embedded mode).
#[derive(Debug, Clone, Default)]
pub struct MemoryHotScores {
    state: Arc<Mutex<MemoryState>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    products: HashMap<String, BTreeMap<Uuid, ScoreSnapshot>>,
    built: bool,
}

impl MemoryHotScores {
    /// An empty, unbuilt state.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl HotScores for MemoryHotScores {
    async fn put(&self, snapshots: &[ScoreSnapshot]) -> Result<(), StorageError> {
        let mut state = self.state();
        for snapshot in snapshots {
            state
                .products
                .entry(snapshot.product.clone())
                .or_default()
                .insert(snapshot.lead_id, snapshot.clone());
        }
        Ok(())
    }

    async fn get(
        &self,
        lead_id: Uuid,
        product: &str,
    ) -> Result<Option<ScoreSnapshot>, StorageError> {
        Ok(self
            .state()
            .products
            .get(product)
            .and_then(|leads| leads.get(&lead_id))
            .cloned())
    }

    async fn product(&self, product: &str) -> Result<Vec<ScoreSnapshot>, StorageError> {
        Ok(self
            .state()
            .products
            .get(product)
            .map(|leads| leads.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn is_built(&self) -> Result<bool, StorageError> {
        Ok(self.state().built)
    }

    async fn mark_built(&self) -> Result<(), StorageError> {
        self.state().built = true;
        Ok(())
    }
}
