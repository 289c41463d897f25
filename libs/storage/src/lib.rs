//! The storage adapters' common ground: PostgreSQL pools bound to one service schema, the
//! embedded SQLite store,
//! per-service migrations, Redis connections with an isolated key space, idempotency
//! keys, and the translation of database errors by SQLSTATE.

pub mod begin;
pub mod error;
pub mod idempotency;
pub mod page;
pub mod postgres;
pub mod redis_store;
pub mod sqlite;
pub mod store;

pub use begin::BeginSafely;
pub use error::StorageError;
pub use idempotency::{Begun, IdempotencyKey, Stored};
pub use page::Page;
pub use postgres::{PostgresSettings, ServiceDatabase};
pub use redis_store::{RedisKeySpace, RedisStore};
pub use sqlite::EmbeddedDatabase;
pub use store::ServiceStore;
