//! Integration tests against a real PostgreSQL and real HTTP receivers.
//! Each test makes its own database (see support::db).

mod api;
mod bad_input;
mod bench;
mod cli;
mod deliverer;
mod dev;
mod dispatcher;
mod endpoint_health;
mod examples;
mod faults;
mod hostile;
mod logs;
mod managed;
mod network_policy;
mod operations;
mod ordering;
mod ordering_races;
mod packaging;
mod postgres_restart;
mod postgres_tls;
mod rate_limit;
mod rate_limit_abuse;
mod relay;
mod retention;
mod roles;
mod schema;
mod sql_functions;
mod support;
mod tenants;
mod triggers;
mod trust;
mod wakeup;
mod web;
mod writer_rows;
