use std::{future::poll_fn, io::IoSliceMut, pin::Pin, task::Poll};

use tokio::io::AsyncRead;

pub trait AsyncReadVectored: AsyncRead + Unpin {
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        vec: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>>;

    /// swarmfs patch: wake the reader only once this many bytes are in (SO_RCVLOWAT), where
    /// the transport can; a read still returns what is there. Best effort.
    fn set_read_low_watermark(&self, _bytes: usize) {}
}

impl<T: ?Sized + AsyncReadVectored> AsyncReadVectored for &mut T {
    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        vec: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut **self).poll_read_vectored(cx, vec)
    }

    fn set_read_low_watermark(&self, bytes: usize) {
        (**self).set_read_low_watermark(bytes)
    }
}

impl<T: ?Sized + AsyncReadVectored> AsyncReadVectored for Box<T> {
    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        vec: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut **self).poll_read_vectored(cx, vec)
    }

    fn set_read_low_watermark(&self, bytes: usize) {
        (**self).set_read_low_watermark(bytes)
    }
}

pub trait AsyncReadVectoredExt {
    async fn read_vectored(&mut self, vec: &mut [IoSliceMut<'_>]) -> std::io::Result<usize>;
}

impl<T: AsyncReadVectored> AsyncReadVectoredExt for T {
    async fn read_vectored(&mut self, vec: &mut [IoSliceMut<'_>]) -> std::io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self).poll_read_vectored(cx, vec)).await
    }
}

impl AsyncReadVectored for tokio::net::tcp::OwnedReadHalf {
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        vec: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.try_read_vectored(vec) {
                Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::task::ready!(this.as_ref().poll_read_ready(cx)?);
                    continue;
                }
                res => return Poll::Ready(res),
            }
        }
    }

    fn set_read_low_watermark(&self, bytes: usize) {
        use std::os::fd::AsRawFd;
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX).max(1);
        // SAFETY: the fd is this stream's, open for as long as `self`; the option value
        // is a c_int that outlives the call.
        unsafe {
            libc::setsockopt(
                self.as_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw const v).cast(),
                std::mem::size_of_val(&v) as libc::socklen_t,
            );
        }
    }
}

impl AsyncReadVectored for librqbit_utp::UtpStreamReadHalf {
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        vec: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        librqbit_utp::UtpStreamReadHalf::poll_read_vectored(self, cx, vec)
    }
}

pub struct AsyncReadToVectoredCompat<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for AsyncReadToVectoredCompat<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + Unpin> AsyncReadVectored for AsyncReadToVectoredCompat<T> {
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        vec: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first_non_empty = match vec.iter_mut().find(|s| !s.is_empty()) {
            Some(s) => &mut **s,
            None => return Poll::Ready(Ok(0)),
        };
        let mut rbuf = tokio::io::ReadBuf::new(first_non_empty);
        std::task::ready!(self.poll_read(cx, &mut rbuf)?);
        Poll::Ready(Ok(rbuf.filled().len()))
    }
}

pub trait AsyncReadVectoredIntoCompat: Sized {
    fn into_vectored_compat(self) -> AsyncReadToVectoredCompat<Self>;
}

impl<T: AsyncRead + Unpin + Sized> AsyncReadVectoredIntoCompat for T {
    fn into_vectored_compat(self) -> AsyncReadToVectoredCompat<Self> {
        AsyncReadToVectoredCompat(self)
    }
}

/// swarmfs patch: the bytes a peer socket keeps queued but not yet sent, at most
/// (`TCP_NOTSENT_LOWAT`): a write waits until the queue is below it. The upload
/// scheduler then decides what goes out next (chunks readers wait on first); with the
/// kernel's default a socket queued megabytes, first come first served.
pub const NOTSENT_LOWAT: libc::c_int = 32 * 1024;

/// swarmfs patch: sets [`NOTSENT_LOWAT`] on a TCP peer socket. Best effort.
pub fn set_notsent_lowat(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = NOTSENT_LOWAT;
    // SAFETY: the fd is this stream's, open for the call; the value is a c_int that
    // outlives the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const v).cast(),
            std::mem::size_of_val(&v) as libc::socklen_t,
        );
    }
}
