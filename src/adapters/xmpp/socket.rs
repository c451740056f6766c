//! The TCP socket under an XMPP stream, set up for chat's small request–answer exchanges.
//!
//! Prosody (like most XMPP servers) leaves Nagle's algorithm on, so when it has two stanzas
//! for jarvis in a row (a stream-management `<a/>` and a room's reflection, or a message and
//! a ping's result) the second waits until jarvis's kernel acknowledges the first — which
//! Linux delays by 40 ms on a connection that looks interactive. Every round trip took 44 ms
//! (88 ms for a direct chat, whose confirmation is a second exchange). [`ChatSocket`]
//! acknowledges at once: quick-ACK mode is set again after every read that brought data (it
//! is not sticky), which also sends an ACK still pending. Our own writes go out at once too
//! (`TCP_NODELAY`); tokio-xmpp gathers a burst of stanzas into one buffer and writes it on
//! flush, so that costs no extra packets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct ChatSocket {
    tcp: TcpStream,
}

impl ChatSocket {
    pub fn new(tcp: TcpStream) -> ChatSocket {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let socket = ChatSocket { tcp };
        socket.quick_ack();
        socket
    }

    /// Acknowledges what was received without delay (and leaves delayed-ACK mode for now).
    fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        {
            let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
        }
    }
}

impl AsyncRead for ChatSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.quick_ack();
        }
        polled
    }
}

impl AsyncWrite for ChatSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_bytes_both_ways_with_the_options_set() -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut socket = ChatSocket::new(client?);
        let (mut server, _) = accepted?;
        assert!(socket.tcp.nodelay()?);
        socket.write_all(b"<r/>").await?;
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await?;
        assert_eq!(&got, b"<r/>");
        server.write_all(b"<a h='1'/>").await?;
        let mut back = [0u8; 10];
        socket.read_exact(&mut back).await?;
        assert_eq!(&back, b"<a h='1'/>");
        Ok(())
    }
}
