//! What the server's integration tests share: the real server in-process on a free
//! loopback port, spoken to with testkit's HTTP client.
//!
//! Each test file is its own crate and uses only part of this.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use gitmodel_server::{serve, AllowAll, AppState, Authorizer, ServerConfig};
use gitmodel_testkit::http::Client;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The server on `127.0.0.1:<free port>`, running in this test's runtime until
/// [`TestServer::stop`]. Derefs to a [`Client`] for it.
pub struct TestServer {
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// A server with the default configuration on local storage in `data_dir`, letting
    /// everyone do everything.
    pub async fn start(data_dir: &Path) -> TestServer {
        TestServer::start_with(data_dir, Arc::new(AllowAll)).await
    }

    /// Like [`TestServer::start`], with requests checked by `authorizer`.
    pub async fn start_with(data_dir: &Path, authorizer: Arc<dyn Authorizer>) -> TestServer {
        let config = ServerConfig::new(([127, 0, 0, 1], 0).into(), data_dir);
        TestServer::start_config(config, authorizer).await
    }

    /// A server with `config` (its listen address is not used: the server binds a free
    /// port) on local storage in `config.data_dir`.
    pub async fn start_config(config: ServerConfig, authorizer: Arc<dyn Authorizer>) -> TestServer {
        let dir = config.data_dir.clone();
        let state = AppState::open_local_with(config, authorizer)
            .await
            .unwrap_or_else(|e| panic!("opening state in {}: {e}", dir.display()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        TestServer {
            client: Client::new(addr),
            stop: Some(stop),
            task,
        }
    }

    /// Shuts the server down and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("server task");
    }
}

impl Deref for TestServer {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
