//! A TCP proxy in front of one node whose connections can be black-holed: what a connection
//! looks like after a partition, a host that vanished, or a firewall that forgot the flow. The
//! bytes stop in both directions, and no FIN or RST ever comes.
//!
//! It owns its listener and every connection it proxied; it never closes a black-holed one
//! (they stay open, silent, until the proxy is dropped). Connections made after
//! [`Proxy::black_hole`] are forwarded again, as a new flow through a healed network is.
//! [`Proxy::partition`] models a partition that lasts: every connection, the ones made later
//! included, is black-holed until [`Proxy::heal`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    /// Connections forward while their generation is this one.
    generation: Arc<AtomicU64>,
    /// Set when the proxy is dropped: every connection closes.
    closed: Arc<AtomicBool>,
    /// Black-holed connections the node behind the proxy has closed since (its end of the
    /// connection ended: it gave the connection up).
    closed_by_node: Arc<AtomicU64>,
    /// While set, new connections are black-holed from their first byte.
    partitioned: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `addr` and forwards each connection to `to`.
    pub async fn start(addr: SocketAddr, to: SocketAddr) -> Result<Proxy, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("proxy: listen on {addr}: {e}"))?;
        let generation = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let closed_by_node = Arc::new(AtomicU64::new(0));
        let partitioned = Arc::new(AtomicBool::new(false));
        let (g, end, by_node) = (generation.clone(), closed.clone(), closed_by_node.clone());
        let cut = partitioned.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // A generation that is never current: black-holed from birth.
                let born = if cut.load(Ordering::SeqCst) {
                    u64::MAX
                } else {
                    g.load(Ordering::SeqCst)
                };
                let (g, end, by_node) = (g.clone(), end.clone(), by_node.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pipe(cr, sw, born, g.clone(), end.clone(), None));
                    let down = tokio::spawn(pipe(sr, cw, born, g, end, Some(by_node)));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(Proxy {
            addr,
            generation,
            closed,
            closed_by_node,
            partitioned,
            task,
        })
    }

    /// How many black-holed connections the node has closed its end of.
    pub fn closed_by_node(&self) -> u64 {
        self.closed_by_node.load(Ordering::SeqCst)
    }

    /// Every connection open now stops forwarding for good, and stays open.
    pub fn black_hole(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Black-holes every connection open now, and every new one until [`Proxy::heal`]: a
    /// partition that lasts (connections still open, their bytes lost, as behind a firewall
    /// that drops them).
    pub fn partition(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
        self.black_hole();
    }

    /// New connections are forwarded again; those black-holed stay silent.
    pub fn heal(&self) {
        self.partitioned.store(false, Ordering::SeqCst);
    }

    pub fn is_partitioned(&self) -> bool {
        self.partitioned.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Copies `r` to `w` while the connection's generation is current; then holds both halves
/// open, writing nothing, until the proxy is dropped. `node_end`: `r` is the node's end (the
/// direction from the node): once black-holed it is still read, what comes lost in the hole,
/// to count the node closing it (nothing of that reaches the other end either).
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    born: u64,
    generation: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    node_end: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if closed.load(Ordering::SeqCst) {
            return;
        }
        if generation.load(Ordering::SeqCst) != born {
            if let Some(count) = &node_end {
                loop {
                    if closed.load(Ordering::SeqCst) {
                        return;
                    }
                    let n = tokio::select! {
                        n = r.read(&mut buf) => n,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => continue,
                    };
                    if matches!(n, Ok(0) | Err(_)) {
                        count.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
            while !closed.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            return;
        }
        let n = tokio::select! {
            n = r.read(&mut buf) => n,
            // Looks again at the generation now and then, so a connection waiting to read
            // goes silent too.
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => continue,
        };
        match n {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => {
                if generation.load(Ordering::SeqCst) != born {
                    // The bytes read are lost in the hole, as on the wire.
                    continue;
                }
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
