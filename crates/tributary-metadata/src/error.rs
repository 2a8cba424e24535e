//! Errors answered to clients and brokers: a Kafka error code and a message naming the problem.

use tributary_proto::common::v1::ErrorCode;

/// A refused request: Kafka's error code plus a precise message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{}: {message}", self.code().as_str_name())]
pub struct ApiError {
    /// Kafka's error code number (see [`ErrorCode`]).
    pub code: i32,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
        }
    }

    /// The error code as the enum.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::try_from(self.code).unwrap_or(ErrorCode::UnknownServerError)
    }

    /// INVALID_CONFIG.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, message)
    }
}
