//! The WebSocket's write buffer, below tungstenite: frames are gathered into
//! few writes, and the memory is given back as soon as a flush empties it,
//! so an idle session keeps no write buffer however busy it was before.
//!
//! (tungstenite's own write buffer never shrinks: a session that once wrote
//! a burst would keep `write_buffer_size` bytes and more for good. tidings
//! sets tungstenite's to zero, so tungstenite hands every frame on at once
//! and keeps only the largest frame's capacity.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O stream whose writes are gathered up to `limit` bytes, sent when
/// the next write would pass it, and at every flush; the buffer is freed by
/// the flush that empties it.
pub(crate) struct Batched<T> {
    io: T,
    /// Bytes taken but not yet written; unallocated when empty after a flush.
    buf: Vec<u8>,
    /// How much of `buf` is already written.
    sent: usize,
    limit: usize,
}

impl<T> Batched<T> {
    /// Gathers writes of less than `limit` bytes (none if zero).
    pub(crate) fn new(io: T, limit: usize) -> Self {
        Batched { io, buf: Vec::new(), sent: 0, limit }
    }

    /// The capacity of the write buffer (for tests).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<T: AsyncWrite + Unpin> Batched<T> {
    /// Writes what the buffer holds; `release`: then frees it.
    fn poll_send(&mut self, cx: &mut Context<'_>, release: bool) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.sent = 0;
        if release {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Batched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.buf.is_empty() && this.buf.len() + data.len() > this.limit {
            ready!(this.poll_send(cx, false))?;
        }
        // The buffer is empty here unless `data` fits in it.
        if data.len() >= this.limit {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx, true))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx, true))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write it receives.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn gathers_writes_and_frees_the_buffer_at_flush() {
        let mut io = Batched::new(Writes::default(), 10);
        io.write_all(b"abcd").await.unwrap();
        io.write_all(b"efgh").await.unwrap();
        assert!(io.io.0.is_empty(), "under the limit, nothing is written yet");
        io.write_all(b"ijkl").await.unwrap();
        assert_eq!(io.io.0, [b"abcdefgh".to_vec()], "a write that would pass the limit sends the rest first");
        assert!(io.capacity() > 0);
        io.flush().await.unwrap();
        assert_eq!(io.io.0, [b"abcdefgh".to_vec(), b"ijkl".to_vec()]);
        assert_eq!(io.capacity(), 0, "a flush gives the buffer back");
        io.write_all(&[b'x'; 10]).await.unwrap();
        assert_eq!(io.io.0.len(), 3, "a write as large as the limit goes straight through");
        assert_eq!(io.capacity(), 0);
    }

    #[tokio::test]
    async fn without_a_limit_every_write_goes_through() {
        let mut io = Batched::new(Writes::default(), 0);
        io.write_all(b"a").await.unwrap();
        io.write_all(b"b").await.unwrap();
        assert_eq!(io.io.0, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(io.capacity(), 0);
    }
}
