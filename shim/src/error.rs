//! The shim's one error type, and the gRPC status code each case travels as.
//!
//! containerd turns a ttrpc status back into its own error kinds (`errdefs.FromGRPC`):
//! `NotFound` becomes `ErrNotFound`, `FailedPrecondition` becomes `ErrFailedPrecondition`, and
//! so on. Clients such as `ctr` branch on those kinds, so the code matters as much as the
//! message. The mapping lives in [`Error::code`] and is unit-tested below.

use containerd_shim_protos::ttrpc::{self, Code};

/// Result alias used throughout the shim.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while serving containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong: a bad signal, a malformed `config.json`, a stdio path
    /// that is not a FIFO.
    #[error("{0}")]
    InvalidArgument(String),
    /// The task or exec id is unknown, or the process is already gone.
    #[error("{0}")]
    NotFound(String),
    /// A task with this id already exists in this shim.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but not in the task's current state (delete while running).
    #[error("{0}")]
    FailedPrecondition(String),
    /// An RPC this shim does not implement, said plainly.
    #[error("{0}")]
    Unimplemented(String),
    /// The shim is shutting down: its last container was deleted.
    #[error("{0}")]
    Unavailable(String),
    /// Something the shim waited for (a process setting up, a model's blocking call) did
    /// not finish within its deadline; what it was is in the message.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A system call failed; `context` says what the shim was doing.
    #[error("{context}: {source}")]
    Io {
        /// What the shim was doing, e.g. "open stdout FIFO /run/...".
        context: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The gRPC status code containerd receives for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Unavailable(_) => Code::UNAVAILABLE,
            Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            Error::Io { .. } => Code::INTERNAL,
        }
    }

    /// Builds a `map_err` adapter that wraps an I/O error with what the shim was doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// Like [`Error::io`], for the `Errno` that `nix` returns.
    pub fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let context = context.into();
        move |errno| Error::Io {
            context,
            source: errno.into(),
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(err: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(err: Error) -> (Code, String) {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message().to_string()),
            other => panic!("expected an RPC status, got {other:?}"),
        }
    }

    #[test]
    fn each_kind_travels_with_its_grpc_code_and_message() {
        let cases = [
            (Error::InvalidArgument("bad".into()), Code::INVALID_ARGUMENT),
            (Error::NotFound("gone".into()), Code::NOT_FOUND),
            (Error::AlreadyExists("twice".into()), Code::ALREADY_EXISTS),
            (
                Error::FailedPrecondition("running".into()),
                Code::FAILED_PRECONDITION,
            ),
            (Error::Unimplemented("later".into()), Code::UNIMPLEMENTED),
            (Error::Unavailable("closing".into()), Code::UNAVAILABLE),
            (
                Error::DeadlineExceeded("slow".into()),
                Code::DEADLINE_EXCEEDED,
            ),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            assert_eq!(status_of(err), (code, message));
        }
    }

    #[test]
    fn io_errors_keep_their_context() {
        let err = Error::io("open stdout FIFO /x")(std::io::Error::from_raw_os_error(libc::ENOENT));
        let (code, message) = status_of(err);
        assert_eq!(code, Code::INTERNAL);
        assert!(message.starts_with("open stdout FIFO /x: "), "{message}");
    }
}
