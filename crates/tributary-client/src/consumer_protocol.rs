//! Kafka's ConsumerProtocol: the bytes a consumer puts in JoinGroup's protocol metadata
//! ([`Subscription`]) and the group leader puts in SyncGroup's member assignments
//! ([`Assignment`]). The codec lives in `tributary_kafka::consumer_protocol`, shared with the
//! broker; this module keeps the client's paths.

pub use tributary_kafka::consumer_protocol::*;

use crate::error::ClientError;

impl From<ConsumerProtocolError> for ClientError {
    fn from(e: ConsumerProtocolError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_errors_are_protocol_errors() {
        let client: ClientError = ConsumerProtocolError::InvalidUtf8 {
            field: "RackId",
            offset: 3,
        }
        .into();
        assert!(matches!(client, ClientError::Protocol(_)));
    }
}
