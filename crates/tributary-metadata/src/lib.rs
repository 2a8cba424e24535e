//! The cluster metadata, as Tributary's coordinator and brokers share it.
//!
//! - [`MetadataImage`]: brokers, topics, partitions (replicas, leader, leader epoch, ISR,
//!   partition epoch), the controller and the producer-id counter, at one metadata offset.
//! - [`MetadataRecord`]: one change; the coordinator's Raft log is a sequence of them, and brokers
//!   follow the same sequence, so every view is a consistent prefix of one history.
//! - [`config`]: the table of topic configs with types, ranges and Kafka's defaults.
//! - [`controller`]: the controller's decisions as pure functions of the image.
//!
//! Architecture invariant: no I/O, no clock, no randomness of its own (ids and seeds are passed
//! in): everything here is deterministic, so a decision can be tested, replayed and re-checked.

pub mod config;
pub mod controller;
mod error;
mod image;
pub mod wire;

pub use error::ApiError;
pub use image::{
    Broker, BrokerId, BrokerState, Controller, IMAGE_FORMAT_VERSION, MetadataImage, MetadataRecord,
    PartitionChange, PartitionState, RecordResult, Topic, validate_topic_name,
};
