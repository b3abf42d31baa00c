//! client.rs: the center API's client, for the CLI and tests: HTTP/1.1 to `--center URL`
//! (`SHOAL_CENTER`) with a bearer token (`--token`, `SHOAL_TOKEN`). One connection per request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_api::agent::{ErrorBody, SHA256_HEADER};
use shoal_api::center::{
    ConfigContent, ConfigDiff, ConfigPush, ConfigPushed, ConfigRelease, ConfigRollback,
    ConfigStatus, ConfigVersionInfo, PackageInfo,
};

pub use crate::discover::CenterDiscover;

/// Why a request to the center failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not usable, or nothing answers there, and what to do.
    #[error("{0}")]
    NoCenter(String),
    /// The center answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("talking to the center at {addr}: {message}")]
    Transport { addr: String, message: String },
    /// A name or namespace that cannot be put in a request; says which.
    #[error("{0}")]
    Invalid(String),
}

/// A client of one center.
#[derive(Clone)]
pub struct CenterClient {
    /// `host:port`.
    addr: String,
    token: String,
}

/// Shows the address only: the token never reaches a log.
impl std::fmt::Debug for CenterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CenterClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl CenterClient {
    /// A client of the center at `url` (`http://HOST:PORT` or `HOST:PORT`) using `token`.
    pub fn new(url: &str, token: &str) -> Result<CenterClient, ClientError> {
        let addr = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') || addr.starts_with("https:") {
            return Err(ClientError::NoCenter(format!(
                "the center's address {url:?} is not http://HOST:PORT"
            )));
        }
        Ok(CenterClient {
            addr: addr.to_owned(),
            token: token.trim().to_owned(),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// GET `path`, answered as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    /// POST `path` with a JSON body, answered as JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("a request body serializes");
        self.send(Method::POST, path, Some("application/json"), body.into())
            .await
    }

    /// POST `path` with raw bytes (an archive), answered as JSON.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some("application/octet-stream"), body)
            .await
    }

    /// Pushes a package archive with its sha256 (64 hex digits), which the center checks
    /// before it keeps anything.
    pub async fn push_package(
        &self,
        archive: Bytes,
        sha256: &str,
    ) -> Result<PackageInfo, ClientError> {
        let request = Outgoing {
            method: Method::POST,
            path: "/api/v1/packages",
            content_type: Some("application/octet-stream"),
            headers: &[(SHA256_HEADER, sha256)],
            body: archive,
        };
        self.send_request(request).await
    }

    /// POST `path` with a JSON body and hand each line of the answer to `line` as it arrives;
    /// `line` answers `false` to stop reading (the connection is closed then).
    pub async fn stream_lines<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        mut line: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(body).expect("a request body serializes");
        let request = Outgoing {
            method: Method::POST,
            path,
            content_type: Some("application/json"),
            headers: &[],
            body: body.into(),
        };
        let (response, _connection) = self.exchange(request).await?;
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.transport(e))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let rest = pending.split_off(end + 1);
                if !line(&pending[..end]) {
                    return Ok(());
                }
                pending = rest;
            }
        }
        Ok(())
    }

    /// Pushes a new version of configuration `name` (in `namespace`, else the token's own or
    /// `default`) and releases it.
    pub async fn config_push(
        &self,
        namespace: Option<&str>,
        name: &str,
        push: &ConfigPush,
    ) -> Result<ConfigPushed, ClientError> {
        self.post(&config_path(namespace, name, "/versions")?, push)
            .await
    }

    /// Every version of configuration `name`, newest first.
    pub async fn config_versions(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Vec<ConfigVersionInfo>, ClientError> {
        self.get(&config_path(namespace, name, "/versions")?).await
    }

    /// The release pointer of configuration `name`.
    pub async fn config_release(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ConfigRelease, ClientError> {
        self.get(&config_path(namespace, name, "")?).await
    }

    /// Version `version` of configuration `name` with its content; the stable version (the
    /// newest while nothing was released to all) when `None`.
    pub async fn config_show(
        &self,
        namespace: Option<&str>,
        name: &str,
        version: Option<u64>,
    ) -> Result<ConfigContent, ClientError> {
        let version = match version {
            Some(v) => v,
            None => {
                let release = self.config_release(namespace, name).await?;
                release.stable.unwrap_or(release.latest)
            }
        };
        self.get(&config_path(
            namespace,
            name,
            &format!("/versions/{version}"),
        )?)
        .await
    }

    /// The unified diff of configuration `name` from version `from` to version `to`.
    pub async fn config_diff(
        &self,
        namespace: Option<&str>,
        name: &str,
        from: u64,
        to: u64,
    ) -> Result<ConfigDiff, ClientError> {
        let path = config_path(namespace, name, "/diff")?;
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{sep}from={from}&to={to}")).await
    }

    /// Releases the gray version of configuration `name` to every instance.
    pub async fn config_promote(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ConfigRelease, ClientError> {
        self.post(&config_path(namespace, name, "/promote")?, &())
            .await
    }

    /// Publishes version `to`'s content (the stable version before the current one when
    /// `None`) as a new version, released to every instance.
    pub async fn config_rollback(
        &self,
        namespace: Option<&str>,
        name: &str,
        to: Option<u64>,
    ) -> Result<ConfigPushed, ClientError> {
        let body = ConfigRollback { to };
        self.post(&config_path(namespace, name, "/rollback")?, &body)
            .await
    }

    /// Every instance of configuration `name`: desired and applied version, state.
    pub async fn config_status(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ConfigStatus, ClientError> {
        self.get(&config_path(namespace, name, "/status")?).await
    }

    /// Sends one request and reads its whole answer as JSON.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let request = Outgoing {
            method,
            path,
            content_type,
            headers: &[],
            body,
        };
        self.send_request(request).await
    }

    /// Sends `request` and reads its whole answer as JSON.
    async fn send_request<T: DeserializeOwned>(
        &self,
        request: Outgoing<'_>,
    ) -> Result<T, ClientError> {
        let (response, connection) = self.exchange(request).await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(e))?
            .to_bytes();
        drop(connection);
        serde_json::from_slice(&body).map_err(|e| {
            self.transport(format!("the center's answer is not what was expected: {e}"))
        })
    }

    /// Sends one request on a new connection; an error status is turned into `Api`.
    async fn exchange(
        &self,
        outgoing: Outgoing<'_>,
    ) -> Result<(hyper::Response<Incoming>, Connection), ClientError> {
        let Outgoing {
            method,
            path,
            content_type,
            headers,
            body,
        } = outgoing;
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| {
                ClientError::NoCenter(format!(
                    "no center answers at {}: {e}; is `shoal center` running there (--center, SHOAL_CENTER)?",
                    self.addr
                ))
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(e))?;
        let connection = Connection(tokio::spawn(connection));
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.addr)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if let Some(content_type) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| self.transport(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok((response, connection));
        }
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(e))?
            .to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&body)));
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    fn transport(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }
}

/// One request, as [`CenterClient::exchange`] sends it.
struct Outgoing<'a> {
    method: Method,
    path: &'a str,
    content_type: Option<&'a str>,
    /// Headers beyond the host, the token and the content type.
    headers: &'a [(&'a str, &'a str)],
    body: Bytes,
}

/// The task driving one request's connection; ended when dropped, so that no connection task
/// outlives its request.
struct Connection(tokio::task::JoinHandle<hyper::Result<()>>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `/api/v1/configs/NAME{rest}[?namespace=NS]`, once both are names a URL carries as they are.
fn config_path(namespace: Option<&str>, name: &str, rest: &str) -> Result<String, ClientError> {
    let plain = |what: &str, text: &str| {
        let fine = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if fine {
            Ok(())
        } else {
            Err(ClientError::Invalid(format!(
                "{what} {text:?} is not a name: letters, digits, '-', '_' and '.' only"
            )))
        }
    };
    plain("configuration", name)?;
    let mut path = format!("/api/v1/configs/{name}{rest}");
    if let Some(namespace) = namespace {
        plain("namespace", namespace)?;
        path.push_str("?namespace=");
        path.push_str(namespace);
    }
    Ok(path)
}
