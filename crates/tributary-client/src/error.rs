//! The client's errors: Kafka's error codes from brokers, and what goes wrong on the client.

use tributary_proto::common::v1::ErrorCode;

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A broker (or the controller) refused the request with Kafka's code.
    #[error("{}: {message}", code.as_str_name())]
    Broker {
        /// Kafka's error code.
        code: ErrorCode,
        /// What the broker said.
        message: String,
    },
    /// No bootstrap server or broker could be reached.
    #[error("cannot reach {address}: {message}")]
    Unreachable {
        /// The address tried last.
        address: String,
        /// Why.
        message: String,
    },
    /// The call did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A configuration property is unknown or has a bad value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
    /// A response could not be understood.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// A broker error from a wire error.
    pub fn broker(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Broker {
            code,
            message: message.into(),
        }
    }

    /// Kafka's error code, if a broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Broker { code, .. } => code.is_retriable(),
            Self::Unreachable { .. } | Self::Timeout(_) => true,
            _ => false,
        }
    }

    pub(crate) fn from_status(address: &str, status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                Self::Unreachable {
                    address: address.to_owned(),
                    message: status.message().to_owned(),
                }
            }
            // The connection broke under the request (the peer died or reset it): as
            // unreachable as a refused connection, and as safe to retry.
            tonic::Code::Internal
                if status.message().starts_with("h2 protocol error")
                    || status.message().contains("connection reset")
                    || status.message().contains("broken pipe") =>
            {
                Self::Unreachable {
                    address: address.to_owned(),
                    message: status.message().to_owned(),
                }
            }
            tonic::Code::DeadlineExceeded => Self::Timeout(format!(
                "{address} did not answer in time: {}",
                status.message()
            )),
            _ => Self::Protocol(format!("{address}: {}", status.message())),
        }
    }

    pub(crate) fn from_wire(error: &Option<tributary_proto::common::v1::Error>) -> Option<Self> {
        let e = error.as_ref()?;
        let code = e.error_code();
        (code != ErrorCode::None).then(|| Self::broker(code, e.message.clone()))
    }
}
