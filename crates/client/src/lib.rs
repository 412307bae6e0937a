//! git-model's client side of the network: [`Remote`] speaks the server's HTTP API,
//! [`upload`] sends the files a push publishes (only chunks the server lacks), and
//! [`download`] brings files into the local store (only chunks the store lacks), with
//! several requests in flight. Which files to move is the caller's choice (git scans).
//! [`credentials`]: where credentials come from when the server asks for them.
#![forbid(unsafe_code)]

pub mod credentials;
mod remote;
mod transfer;

pub use credentials::{Credential, CredentialHelper, GitCredentialHelper};
pub use remote::{Auth, Remote, RemoteOptions, TlsOptions};
pub use transfer::{
    download, download_with_progress, fetch_chunks, plan_download, run_download, upload,
    upload_with_progress, ChunkSink, ChunksFetched, DownloadPlan, DownloadReport, Downloaded,
    FileFailure, FileRef, Progress, UploadReport,
};

use gitmodel_format::Oid;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad model.url {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("{url}: server answered {status}{}: {message}", if code.is_empty() { String::new() } else { format!(" ({code})") })]
    Http {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach {url}: {message}")]
    Transport { url: String, message: String },
    /// The call's overall deadline passed (a server too slow, or dripping its answer).
    #[error("{url}: no complete answer within the transfer timeout of {secs:.0} s (set model.transferTimeout or GIT_MODEL_TRANSFER_TIMEOUT, in seconds, to allow more)")]
    Timeout { url: String, secs: f64 },
    #[error("authentication required for {url}: {why}")]
    AuthRequired { url: String, why: String },
    #[error("{url}: TLS setup failed: {what}")]
    Tls { url: String, what: String },
    #[error("{url}: malformed answer: {what}")]
    Protocol { url: String, what: String },
    /// A chunk the server sent does not hash to its id (or does not decode): the bytes are
    /// wrong, on the server's disk or on the way. Nothing of it was kept.
    #[error("{url}: malformed answer: {what}")]
    CorruptChunk { url: String, what: String },
    #[error("{path} ({oid}): content is neither in the local store nor on the server")]
    MissingLocal { oid: Oid, path: String },
    #[error("{path} ({oid}): not on the server")]
    NotOnServer { oid: Oid, path: String },
    #[error("{path} ({oid}): server refused the file: {message}")]
    Rejected {
        oid: Oid,
        path: String,
        message: String,
    },
    #[error("{path} ({oid}): {what}")]
    Corrupt {
        oid: Oid,
        path: String,
        what: String,
    },
    /// Some files of a download failed (each named with its reason); the others were kept.
    #[error("{} file(s) could not be downloaded:\n  {}", failed.len(), failed.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n  "))]
    Incomplete { failed: Vec<transfer::FileFailure> },
    #[error(transparent)]
    Store(#[from] gitmodel_store::StoreError),
}
