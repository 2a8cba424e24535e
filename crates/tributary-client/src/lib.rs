//! Tributary's client library: how applications use Tributary.
//!
//! An async API over the brokers' gRPC API ([`Producer`], [`Consumer`], [`Admin`]),
//! configured by Kafka's property names ([`Properties`]). It is the only API boundary
//! applications see: the command-line tools and the performance tools are built on it.
//!
//! Architecture invariants: record batches are built once on the producer and decoded once on
//! the consumer (brokers and followers never re-encode them); per-partition order is kept (one
//! request in flight per partition, retried in place); memory is bounded by `buffer.memory`
//! (`send` waits for room).

pub mod admin;
pub mod assignor;
pub mod cluster;
pub mod config;
pub mod consumer;
pub mod consumer_protocol;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod records;

pub use admin::Admin;
pub use config::{ConsumerConfig, OffsetReset, ProducerConfig, Properties};
pub use consumer::{Consumer, ConsumerRecord, Offset};
pub use error::{ClientError, Result};
pub use group::RebalanceListener;
pub use partitioner::{DefaultPartitioner, Partitioner};
pub use producer::{DeliveryFuture, Producer, ProducerRecord, RecordMetadata};
pub use tributary_proto::common::v1::ErrorCode;

/// A topic and partition (shared with the broker through `tributary-kafka`).
pub use tributary_kafka::TopicPartition;
