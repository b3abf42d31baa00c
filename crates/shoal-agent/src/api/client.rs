//! The API's client, for the CLI and tests: HTTP/1.1 over the agent's Unix socket with the
//! token read from the data directory.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_api::agent::ErrorBody;

use super::Token;

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent to talk to, and what to do about it.
    #[error("{0}")]
    NoAgent(String),
    /// The agent answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("talking to the agent: {0}")]
    Transport(String),
}

/// A client of the agent whose data directory is `data_dir`.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    token: Token,
}

impl AgentClient {
    /// Finds the agent of `data_dir` (its token and socket).
    pub fn open(data_dir: &Path) -> Result<AgentClient, ClientError> {
        let token_path = data_dir.join("agent.token");
        if !token_path.exists() {
            return Err(ClientError::NoAgent(format!(
                "no agent has used {} (no agent.token there); start one with `shoal agent \
                 --data-dir {}` or pass the --data-dir it uses",
                data_dir.display(),
                data_dir.display()
            )));
        }
        let token = Token::load(&token_path).map_err(|e| ClientError::NoAgent(e.to_string()))?;
        Ok(AgentClient {
            socket: data_dir.join("agent.sock"),
            token,
        })
    }

    /// GET `path`, answered as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let exchange = self.send(Method::GET, path, None, Bytes::new()).await?;
        exchange.json().await
    }

    /// POST `path` with a JSON body, answered as JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Transport(e.to_string()))?;
        let exchange = self
            .send(Method::POST, path, Some("application/json"), body.into())
            .await?;
        exchange.json().await
    }

    /// POST `path` with raw bytes (an archive) and extra `headers`, answered as JSON.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<T, ClientError> {
        let exchange = self
            .send_with(
                Method::POST,
                path,
                Some("application/octet-stream"),
                headers,
                body,
            )
            .await?;
        exchange.json().await
    }

    /// GET `path` and hand each chunk of the answer to `chunk` as it arrives (a followed log).
    pub async fn stream(
        &self,
        path: &str,
        mut chunk: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let exchange = self.send(Method::GET, path, None, Bytes::new()).await?;
        let mut body = exchange.response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Transport(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                chunk(data);
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Exchange, ClientError> {
        self.send_with(method, path, content_type, &[], body).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Exchange, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                ClientError::NoAgent(format!(
                    "no agent answers on {}: {e}; is `shoal agent` running with this data directory?",
                    self.socket.display()
                ))
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let connection = Connection(tokio::spawn(connection));
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "agent")
            .header(hyper::header::AUTHORIZATION, self.token.header());
        if let Some(content_type) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if response.status().is_success() {
            return Ok(Exchange {
                response,
                connection,
            });
        }
        let status = response.status();
        let body = read_body(response).await?;
        drop(connection);
        Err(api_error(status, &body))
    }
}

/// An answer, and the task that drives its connection until the answer has been read.
struct Exchange {
    response: hyper::Response<Incoming>,
    connection: Connection,
}

impl Exchange {
    /// The answer's body as JSON.
    async fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let body = read_body(self.response).await?;
        drop(self.connection);
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Transport(format!("the agent's answer is not what was expected: {e}"))
        })
    }
}

/// The task driving one request's connection, as long as its answer is being read: ended
/// when dropped, so that no connection task outlives its request.
struct Connection(tokio::task::JoinHandle<hyper::Result<()>>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(body)));
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

async fn read_body(response: hyper::Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?
        .to_bytes())
}
