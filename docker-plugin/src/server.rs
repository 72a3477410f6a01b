//! The plugin's HTTP server: `POST /<Kind>.<Method>` on a Unix socket, as Docker's plugin
//! client speaks it. Answers are JSON with Docker's plugin content type; every failure is
//! HTTP 500 with `{"Err": message}` (libnetwork shows `Err` from any answer that is not 200),
//! and a method this plugin does not have is 404 (which libnetwork tolerates where a method
//! is optional).

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::driver::Driver;
use crate::protocol::{self, ErrorResponse};

/// Where Docker looks for a plugin named `zerotier`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/zerotier.sock";
/// Largest request body accepted.
pub const MAX_REQUEST_BODY: usize = 1 << 20;

type HttpResponse = Response<Full<Bytes>>;

/// A listening plugin: the socket file and the task serving it. Dropping it stops the task;
/// [`PluginServer::shutdown`] also removes the socket file.
pub struct PluginServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl PluginServer {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket file.
    pub fn shutdown(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `path` (see [`zt_agent::plugin_api::bind_socket`]) and serves `driver` there on a
/// task of its own.
pub fn spawn(path: &Path, driver: Arc<Driver>) -> io::Result<PluginServer> {
    // 0755 for a missing parent: Docker's own `/run/docker/plugins` is.
    let (listener, owner_uid) = zt_agent::plugin_api::bind_socket(path, 0o755)?;
    let task = tokio::spawn(serve(listener, owner_uid, driver));
    Ok(PluginServer {
        path: path.to_path_buf(),
        task,
    })
}

/// Accepts connections until the task is dropped; peers other than root and `owner_uid`
/// are turned away.
pub async fn serve(listener: UnixListener, owner_uid: u32, driver: Arc<Driver>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("plugin socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == 0 || cred.uid() == owner_uid => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "refused a connection");
                continue;
            }
            Err(e) => {
                tracing::warn!("no peer credentials: {e}");
                continue;
            }
        }
        let driver = driver.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let driver = driver.clone();
                async move { Ok::<_, Infallible>(handle(&driver, request).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("plugin connection ended: {e}");
            }
        });
    }
}

async fn handle(driver: &Driver, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let method = parts.uri.path().trim_start_matches('/').to_string();
    if parts.method != Method::POST {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} takes POST, not {}", parts.method),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("request body over {MAX_REQUEST_BODY} bytes, or cut short"),
            )
        }
    };
    match driver.handle(&method, &body).await {
        Ok(Some(answer)) => {
            tracing::debug!(%method, "answered");
            json_response(StatusCode::OK, &answer)
        }
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            format!("zt-docker-plugin has no method {method}"),
        ),
        Err(error) => {
            tracing::warn!(%method, "failed: {error}");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
        }
    }
}

fn error_response(status: StatusCode, message: String) -> HttpResponse {
    json_response(status, &ErrorResponse { err: message })
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    // Our answer types serialize infallibly.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(protocol::CONTENT_TYPE),
    );
    response
}
