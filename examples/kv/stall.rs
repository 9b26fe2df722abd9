//! Peer connections that stop moving: a stream wrapper that fails a read or a write once it has
//! made no progress for a set time.
//!
//! A connection can go silent without closing (a partition, a host that vanished, a firewall
//! that forgot the flow: no FIN, no RST). TCP keeps writing into it until its retransmissions
//! give up, about 15 minutes on Linux's defaults, and a read waits for ever. The wrapper turns
//! that into an error after [`PEER_STALL`], so the link is dropped and made anew. It owns
//! nothing but its timer; it never looks at the bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a peer connection may accept no byte (a write) or deliver none in the middle of a
/// message (a read) before it is taken for dead. Raft's heartbeats (every 100 ms by default) keep a
/// live link moving far more often; a paused peer (SIGSTOP) is dropped as a dead one is and
/// reached again on a new connection once it runs.
pub const PEER_STALL: Duration = Duration::from_secs(5);

/// `S` with a stall limit. Writes are always watched; reads only while [`Stall::watch_reads`]
/// is on (a peer may say nothing between messages for as long as it likes).
pub struct Stall<S> {
    inner: S,
    limit: Duration,
    reads: bool,
    /// Started at the first `Pending` since the last progress; reset by progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Stall<S> {
    pub fn new(inner: S, limit: Duration) -> Stall<S> {
        Stall {
            inner,
            limit,
            reads: false,
            timer: None,
        }
    }

    /// Watches reads for stalls from now on (`true`), or stops (`false`).
    pub fn watch_reads(&mut self, on: bool) {
        self.reads = on;
        self.timer = None;
    }

    /// `Ready(error)` once the stream has been pending for the whole limit; else `Pending`
    /// (with the timer set to wake the task when the limit is reached).
    fn pending(&mut self, cx: &mut Context<'_>, what: &str) -> Poll<io::Result<()>> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the connection {what} nothing for {limit:?}"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Stall<S> {
    /// What a poll of the inner stream (`polled`) means under the limit: progress resets the
    /// timer; `Pending`, when watched, runs it and fails once it fires.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        watched: bool,
        what: &str,
        none: T,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending if watched => self.pending(cx, what).map(|r| r.map(|()| none)),
            Poll::Pending => Poll::Pending,
            ready => {
                self.timer = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let watched = this.reads;
        this.watch(cx, polled, watched, "delivered", ())
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled, true, "accepted", 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled, true, "accepted", 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled, true, "accepted", ())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    // Imported in each test: tests/kv.rs compiles this module without its tests.

    /// A write into a stream nobody reads fails after the limit.
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_fails_after_the_limit() {
        use super::*;
        use tokio::io::AsyncWriteExt;
        let (a, _b) = tokio::io::duplex(64);
        let mut w = Stall::new(a, Duration::from_secs(5));
        w.write_all(&[1u8; 64]).await.expect("fits the buffer");
        let start = tokio::time::Instant::now();
        let e = w.write_all(&[2u8; 64]).await.expect_err("nobody reads");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// Progress resets the timer: a reader that takes 64 bytes every 4 s keeps a writer of
    /// 192 bytes going for 12 s.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_a_stall() {
        use super::*;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = Stall::new(a, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 256];
            for part in got.chunks_mut(64) {
                tokio::time::sleep(Duration::from_secs(4)).await;
                b.read_exact(part).await.expect("read");
            }
            got
        });
        w.write_all(&[3u8; 256]).await.expect("read in time");
        assert_eq!(reader.await.expect("reader"), vec![3u8; 256]);
    }

    /// A read waits for ever while reads are not watched, and fails after the limit while
    /// they are.
    #[tokio::test(start_paused = true)]
    async fn a_read_fails_only_while_watched() {
        use super::*;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Stall::new(a, Duration::from_secs(5));
        let mut one = [0u8; 1];
        let idle = tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut one)).await;
        assert!(idle.is_err(), "an unwatched read waits: {idle:?}");
        b.write_all(&[9]).await.expect("write");
        r.read_exact(&mut one).await.expect("a byte");
        r.watch_reads(true);
        let start = tokio::time::Instant::now();
        let e = r.read_exact(&mut one).await.expect_err("nothing comes");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
