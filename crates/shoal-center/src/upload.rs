//! upload.rs: a request body streamed into `incoming/` under a size limit (413 past it),
//! removed when dropped.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::api::ApiError;

/// An upload in `incoming/`, removed when dropped.
#[derive(Debug)]
pub struct Upload(PathBuf);

impl Upload {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `body` to a new file of `incoming`, refusing more than `limit` bytes.
pub async fn receive(incoming: &Path, limit: u64, body: Body) -> Result<Upload, ApiError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let failed = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing the upload to {}: {e}", incoming.display()),
        )
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than the {limit} bytes the center takes"),
        )
    };
    tokio::fs::create_dir_all(incoming).await.map_err(failed)?;
    let upload = Upload(incoming.join(format!(
        "push-{}-{}.tar.gz",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )));
    let mut file = tokio::fs::File::create(upload.path())
        .await
        .map_err(failed)?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, format!("reading the upload: {e}"))
            }
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(failed)?;
    }
    file.sync_all().await.map_err(failed)?;
    Ok(upload)
}
