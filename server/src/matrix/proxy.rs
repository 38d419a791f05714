//! A fault proxy on one link between two members (from node A to node B):
//! A's `--peer B=…` names the proxy, which forwards to B's broker port.
//! One proxy per direction and pair, so a member can be cut off from the
//! others without touching the links between the rest.
//!
//! While cut, the link is a black hole, as in a real partition: bytes on
//! open connections stop moving (both sockets stay open, so peers wait for
//! timeouts rather than seeing a reset) and new connections are accepted
//! and left silent. Healing closes what was held, so both ends reconnect.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::MatrixError;

/// How long a forwarded connection gets to reach its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Proxy {
    pub addr: String,
    // watch: every connection task sees the latest state, and one that
    // starts after a change reads it at once.
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: String) -> Result<Proxy, MatrixError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(MatrixError::io("cannot bind a fault proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(MatrixError::io("cannot read the fault proxy's address"))?
            .to_string();
        let (cut, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(forward(conn, target.clone(), rx.clone()));
            }
        });
        Ok(Proxy { addr, cut, task })
    }

    /// Cuts (`true`) or heals (`false`) the link.
    pub fn set_cut(&self, on: bool) {
        self.cut.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_for(rx: &mut watch::Receiver<bool>, state: bool) {
    while *rx.borrow_and_update() != state {
        if rx.changed().await.is_err() {
            // The proxy is gone: nothing will ever change again.
            std::future::pending::<()>().await;
        }
    }
}

/// One connection: forwarded while the link is up, held silent while it
/// is cut, closed when it heals.
async fn forward(mut client: TcpStream, target: String, mut rx: watch::Receiver<bool>) {
    if *rx.borrow_and_update() {
        wait_for(&mut rx, false).await;
        return;
    }
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    let mut server = server;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let copy = async {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    };
    let mut cut_rx = rx.clone();
    tokio::select! {
        _ = copy => {}
        _ = wait_for(&mut cut_rx, true) => {
            wait_for(&mut rx, false).await;
        }
    }
    let _ = client.shutdown().await;
    let _ = server.shutdown().await;
}
