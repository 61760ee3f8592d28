//! AI Flow SDK: build AI graphs in Rust, talk to the server, publish events from jobs.
#![warn(clippy::must_use_candidate)]

pub mod client;
pub mod graph;
pub mod listener;
pub mod publisher;
pub mod tls;

pub use aiflow_api as api;
pub use aiflow_translator as translator;
pub use client::{Client, Error};
pub use listener::Listener;
pub use publisher::{PublishError, Publisher, PublisherConfig};
