//! The control channel: one JSON request line, one JSON answer line (the daemon's status).
//! Only the user who started the connection (root, or the user behind sudo) may open it.
//!
//! Clients are served by tasks of their own, so a client that connects and says nothing never
//! holds up the daemon's loop (and with it SIGTERM); the loop only answers [`Ask`]s.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::Status;
use crate::platform::{self, ipc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Status,
    Down,
}

/// A client's command, passed to the daemon's loop with the way back for its status.
pub struct Ask {
    pub command: Command,
    pub reply: oneshot::Sender<Status>,
}

const TIMEOUT: Duration = Duration::from_secs(3);

/// The listening side; stops listening when dropped.
pub struct Server {
    asks: mpsc::Receiver<Ask>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The next command of a client.
    pub async fn next(&mut self) -> Option<Ask> {
        self.asks.recv().await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens at `path` and passes every well-formed command on through [`Server::next`].
pub fn serve(path: &Path) -> Result<Server> {
    let invoker = platform::invoker();
    let listener = ipc::bind(path, invoker.as_ref())?;
    let (sender, asks) = mpsc::channel(8);
    let task = tokio::spawn(async move {
        loop {
            let stream = platform::accept_patiently(|| listener.accept()).await;
            tokio::spawn(answer(stream, sender.clone()));
        }
    });
    Ok(Server { asks, task })
}

/// Reads one command, asks the loop, writes its status. A client that sends nothing sensible
/// within the timeout gets nothing and changes nothing.
async fn answer(stream: ipc::Stream, asks: mpsc::Sender<Ask>) {
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    let Ok(Ok(_)) = tokio::time::timeout(TIMEOUT, BufReader::new(read).read_line(&mut line)).await else {
        return;
    };
    let Ok(command) = serde_json::from_str::<Command>(line.trim()) else {
        return;
    };
    let (reply, status) = oneshot::channel();
    if asks.send(Ask { command, reply }).await.is_err() {
        return;
    }
    let Ok(status) = status.await else { return };
    let Ok(mut answer) = serde_json::to_vec(&status) else {
        return;
    };
    answer.push(b'\n');
    let _ = tokio::time::timeout(TIMEOUT, write.write_all(&answer)).await;
}

/// Sends `command` to the daemon behind `path` and returns its status.
pub async fn request(path: &Path, command: Command) -> Result<Status> {
    let exchange = async {
        let stream = ipc::connect(path).await?;
        let (read, mut write) = tokio::io::split(stream);
        let mut line = serde_json::to_vec(&command)?;
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await?;
        Ok::<_, anyhow::Error>(serde_json::from_str(&answer)?)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .context("the daemon did not answer in time")?
        .with_context(|| format!("talking to the daemon at {}", path.display()))
}
