//! Everything the dynamo-conformance cases stand on.
//!
//! The suite replays the guide "NVIDIA Dynamo on Kubernetes" and proves each of its promises
//! with a named case. This crate holds the pieces: configuration, what each Dynamo release
//! promises ([`profile`]) and which releases it runs ([`release`]), the OpenAI API validators ([`openai`]), real Dynamo started
//! locally from PyPI ([`dynamo`]), and the ordered cases themselves ([`suite`]).

pub mod bridge;
pub mod cleanup;
pub mod cluster;
pub mod command;
pub mod config;
pub mod debian;
pub mod diagnosis;
pub mod disk;
pub mod docker;
pub mod dynamo;
pub mod evidence;
#[cfg(feature = "fault-server")]
pub mod fault_server;
pub mod findings;
pub mod gobuild;
pub mod helm;
pub mod images;
pub mod k8s;
pub mod ledger;
pub mod matrix;
pub mod metrics;
pub mod openai;
pub mod operator;
pub mod preflight;
pub mod profile;
pub mod release;
pub mod report;
pub mod stages;
pub mod suite;
