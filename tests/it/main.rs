//! Integration tests: the real services on free ports, a fresh database each, driven
//! through the generated gRPC clients. One binary, one module per area.

mod auth;
mod capture;
mod capture_api;
mod closed_loop;
mod console;
mod contracts;
mod data_protection;
mod embedded;
mod events;
mod faults;
mod foundation;
mod gdpr_services;
mod idempotency;
mod intake;
mod nurture_api;
mod nurture_engine;
mod nurture_mail;
mod nurturing;
mod reports;
mod routing;
mod routing_api;
mod routing_assign;
mod routing_flow;
mod scoring;
mod scoring_api;
mod scoring_ledger;
mod tls;
