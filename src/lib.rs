//! edgellm: a local-first LLM gateway for edge devices.
//!
//! The binary (`src/main.rs`) is thin glue over these modules; see `ARCHITECTURE.md` for the code
//! map and the invariants that hold the design together.

pub mod actions;
pub mod api;
pub mod bench;
pub mod calibrate;
pub mod cli;
pub mod config;
pub mod constraint;
pub mod delivery;
pub mod egress;
pub mod embeddings;
pub mod engine;
pub mod gateway;
pub mod guard;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod netstate;
pub mod pack;
pub mod paths;
pub mod plan;
pub mod redact_cli;
pub mod route;
pub mod router;
pub mod run;
pub mod serve;
pub mod service;
pub mod status;
pub mod task_cli;
pub mod tasks;
pub mod telemetry;
pub mod thermal;
pub mod tools;
pub mod upstream;
pub mod usage;
pub mod vault;
pub mod wire;
