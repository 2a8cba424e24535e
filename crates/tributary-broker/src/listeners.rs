//! Kafka's listeners: a broker binds one or more named listeners (`listeners =
//! "INTERNAL://0.0.0.0:19092,EXTERNAL://0.0.0.0:9092"`), registers an advertised address for
//! each (`advertised_listeners`), and serves the same services on all of them.
//!
//! Kafka's rule: a client sees every broker at that broker's address *on the listener its
//! request arrived on*, so clients inside a private network and clients outside it each get
//! addresses they can reach. Brokers replicate over `inter_broker_listener_name`.
//!
//! `listen` and `advertised_address` remain the single-listener shorthand: they define the
//! listener named [`DEFAULT_LISTENER`] (`PLAINTEXT`).

use tributary_metadata::{Broker, BrokerId, MetadataImage};

pub use crate::config::listeners::{DEFAULT_LISTENER, Listener};

/// The address `broker` advertises on `listener`, if it has that listener.
pub fn broker_address(broker: &Broker, listener: &str) -> Option<String> {
    broker.listeners.get(listener).cloned()
}

/// The address broker `id` advertises on `listener`, from `image` (None: unknown broker, or it
/// has no such listener). Every answer that names a broker's address (Metadata, leader hints,
/// FindCoordinator) uses the listener the request arrived on.
pub fn advertised_address(image: &MetadataImage, id: BrokerId, listener: &str) -> Option<String> {
    image
        .brokers
        .get(&id)
        .and_then(|b| broker_address(b, listener))
}
