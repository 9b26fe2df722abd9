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

use parking_lot::Mutex;
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
    /// Every connection proxied: the connecting end's address, the generation it forwards
    /// in, and the first bytes it sent (up to 8: the kind of connection, by its magic).
    conns: Arc<Mutex<Vec<Accepted>>>,
    task: JoinHandle<()>,
}

struct Accepted {
    from: SocketAddr,
    born: u64,
    first: Arc<Mutex<Vec<u8>>>,
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
        let conns: Arc<Mutex<Vec<Accepted>>> = Arc::default();
        let seen = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, from)) = listener.accept().await {
                // A generation that is never current: black-holed from birth.
                let born = if cut.load(Ordering::SeqCst) {
                    u64::MAX
                } else {
                    g.load(Ordering::SeqCst)
                };
                let first: Arc<Mutex<Vec<u8>>> = Arc::default();
                seen.lock().push(Accepted {
                    from,
                    born,
                    first: first.clone(),
                });
                let (g, end, by_node) = (g.clone(), end.clone(), by_node.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pipe(cr, sw, born, g.clone(), end.clone(), Up(first)));
                    let down = tokio::spawn(pipe(sr, cw, born, g, end, Down(by_node)));
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
            conns,
            task,
        })
    }

    /// The connecting ends of the black-holed connections whose first bytes were `magic`.
    pub fn black_holed_from(&self, magic: &[u8]) -> Vec<SocketAddr> {
        let now = self.generation.load(Ordering::SeqCst);
        self.conns
            .lock()
            .iter()
            .filter(|c| c.born != now && c.first.lock().starts_with(magic))
            .map(|c| c.from)
            .collect()
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

/// Which way a [`pipe`] copies.
enum Direction {
    /// From the connecting end: its first bytes are kept here.
    Up(Arc<Mutex<Vec<u8>>>),
    /// From the node: once black-holed its end is still read, what comes lost in the hole,
    /// to count the node closing it here (nothing of that reaches the other end either).
    Down(Arc<AtomicU64>),
}
use Direction::{Down, Up};

/// Copies `r` to `w` while the connection's generation is current; then holds both halves
/// open, writing nothing, until the proxy is dropped.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    born: u64,
    generation: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    direction: Direction,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if closed.load(Ordering::SeqCst) {
            return;
        }
        if generation.load(Ordering::SeqCst) != born {
            if let Down(count) = &direction {
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
                if let Up(first) = &direction {
                    let mut first = first.lock();
                    let more = 8usize.saturating_sub(first.len()).min(n);
                    first.extend_from_slice(&buf[..more]);
                }
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
