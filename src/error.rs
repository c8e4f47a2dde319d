//! AMQP errors: one variant per reply code, so a handler's `Err` is exactly what the
//! client is told.
//!
//! Channel-level codes (403–406) close only the channel; the others close the
//! connection. The `Display` text is the reply text, in RabbitMQ's `CODE_NAME - detail`
//! form, which clients show to users and some match on.

use thiserror::Error;

/// An error that ends a channel or a connection, carrying its reply text.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AmqpError {
    // Channel errors.
    #[error("ACCESS_REFUSED - {0}")]
    AccessRefused(String),
    #[error("NOT_FOUND - {0}")]
    NotFound(String),
    #[error("RESOURCE_LOCKED - {0}")]
    ResourceLocked(String),
    #[error("PRECONDITION_FAILED - {0}")]
    PreconditionFailed(String),

    // Connection errors.
    #[error("CONNECTION_FORCED - {0}")]
    ConnectionForced(String),
    #[error("FRAME_ERROR - {0}")]
    FrameError(String),
    #[error("COMMAND_INVALID - {0}")]
    CommandInvalid(String),
    #[error("CHANNEL_ERROR - {0}")]
    ChannelError(String),
    #[error("UNEXPECTED_FRAME - {0}")]
    UnexpectedFrame(String),
    #[error("NOT_ALLOWED - {0}")]
    NotAllowed(String),
    #[error("NOT_IMPLEMENTED - {0}")]
    NotImplemented(String),
    #[error("INTERNAL_ERROR - {0}")]
    InternalError(String),
}

impl AmqpError {
    /// The AMQP reply code.
    pub fn reply_code(&self) -> u16 {
        match self {
            Self::AccessRefused(_) => 403,
            Self::NotFound(_) => 404,
            Self::ResourceLocked(_) => 405,
            Self::PreconditionFailed(_) => 406,
            Self::ConnectionForced(_) => 320,
            Self::FrameError(_) => 501,
            Self::CommandInvalid(_) => 503,
            Self::ChannelError(_) => 504,
            Self::UnexpectedFrame(_) => 505,
            Self::NotAllowed(_) => 530,
            Self::NotImplemented(_) => 540,
            Self::InternalError(_) => 541,
        }
    }

    /// True if this error closes the whole connection rather than one channel.
    pub fn is_connection_error(&self) -> bool {
        !matches!(
            self,
            Self::AccessRefused(_) | Self::NotFound(_) | Self::ResourceLocked(_) | Self::PreconditionFailed(_)
        )
    }

    /// The reply text, cut to fit a short string (255 bytes) on a char boundary.
    pub fn reply_text(&self) -> String {
        let mut text = self.to_string();
        if text.len() > 255 {
            let mut end = 255;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }
}

/// Result of a handler: `Err` closes the channel or the connection.
pub type AmqpResult<T> = Result<T, AmqpError>;
