//! File content moved between a file and a socket by `splice(2)` through a pipe, for the daemon's fast
//! path ([`sandpit_types::files::SPLICE_PATH`]): the kernel hands page references from the file to the
//! socket (reads) and from the socket into the file (writes), so the agent neither copies content
//! through its memory nor frames it.
//!
//! The socket is blocking with send and receive time-outs ([`IDLE_LIMIT`]): a peer that stops reading or
//! sending ends the transfer with an error instead of holding a thread for ever.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::{SpliceFFlags, splice};

use super::content::{BodyError, Fill};

/// Longest a transfer waits on its socket for one step.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Bytes asked of the kernel per step (the pipe's size, when the kernel grants it).
const STEP: usize = 1 << 20;

/// Gives `sock` send and receive time-outs of [`IDLE_LIMIT`], and as large a send buffer as the host
/// allows (`net.core.wmem_max`): fewer, larger steps for the reader on the other side.
pub fn bound_waits(sock: &OwnedFd) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(IDLE_LIMIT.as_secs() as i64, 0);
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::SendTimeout, &tv)?;
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
    // Capped by the kernel; a smaller buffer only means more steps.
    let _ = nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::SndBuf, &(4 << 20));
    Ok(())
}

/// A pipe as large as the kernel lets this process make one (1 MiB by default), to move big steps.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // Refused above the user's pipe allowance: the default size only makes more steps.
        let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(STEP as i32));
        Ok(Self { r, w })
    }
}

/// One `splice`, retried on EINTR.
fn step(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize, more: bool) -> io::Result<usize> {
    let flags = if more {
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE
    } else {
        SpliceFFlags::SPLICE_F_MOVE
    };
    loop {
        match splice(from, None, to, None, len, flags) {
            Err(nix::errno::Errno::EINTR) => {}
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Moves all of `n` bytes waiting in `pipe` to `to`.
fn drain(pipe: &Pipe, to: BorrowedFd<'_>, mut n: usize, more: bool) -> io::Result<()> {
    while n > 0 {
        match step(pipe.r.as_fd(), to, n, more)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            k => n -= k,
        }
    }
    Ok(())
}

/// Sends `len` bytes of `file`, from its current offset, to `sock`. A file that ends first (it shrank
/// while it was read) is an error: the peer then sees fewer bytes than announced.
pub fn file_to_socket(file: &File, sock: &OwnedFd, len: u64) -> io::Result<()> {
    let pipe = Pipe::new()?;
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(STEP);
        let n = step(file.as_fd(), pipe.w.as_fd(), want, true)?;
        if n == 0 {
            return Err(io::Error::other("the file shrank while it was read"));
        }
        left -= n as u64;
        drain(&pipe, sock.as_fd(), n, left > 0)?;
    }
    Ok(())
}

/// Content for a write that arrives on a socket: exactly `len` bytes, spliced into the file. Fewer
/// (the connection ended) is a [`BodyError`], so that nothing is left written.
#[derive(Debug)]
pub struct FromSocket<'a> {
    pub sock: &'a OwnedFd,
    pub len: u64,
}

impl Fill for FromSocket<'_> {
    fn fill(&mut self, dst: &mut File) -> io::Result<u64> {
        let pipe = Pipe::new()?;
        let mut got = 0u64;
        while got < self.len {
            let want = usize::try_from(self.len - got)
                .unwrap_or(usize::MAX)
                .min(STEP);
            let n = step(self.sock.as_fd(), pipe.w.as_fd(), want, false).map_err(|e| {
                io::Error::other(BodyError(format!(
                    "receiving the content failed after {got} of {} bytes: {e}",
                    self.len
                )))
            })?;
            if n == 0 {
                return Err(io::Error::other(BodyError(format!(
                    "the content ended after {got} of {} bytes",
                    self.len
                ))));
            }
            drain(&pipe, dst.as_fd(), n, false)?;
            got += n as u64;
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_file_range_goes_to_the_socket_byte_exact() {
        let data = pattern((3 << 20) + 12345);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        f.seek(io::SeekFrom::Start(100)).unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = OwnedFd::from(a);
        let len = data.len() as u64 - 200;
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        file_to_socket(&f, &a, len).unwrap();
        drop(a);
        assert!(reader.join().unwrap() == data[100..data.len() - 100]);
    }

    #[test]
    fn a_file_that_shrank_is_an_error_not_a_short_success() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&pattern(1000)).unwrap();
        f.rewind().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = OwnedFd::from(a);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = b.read_to_end(&mut got);
            got.len()
        });
        assert!(file_to_socket(&f, &a, 5000).is_err());
        drop(a);
        assert_eq!(reader.join().unwrap(), 1000);
    }

    #[test]
    fn socket_content_fills_a_file_and_a_short_one_is_a_body_error() {
        let data = pattern((2 << 20) + 777);
        let (a, mut b) = UnixStream::pair().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || b.write_all(&sent).unwrap());
        let a = OwnedFd::from(a);
        let mut f = tempfile::tempfile().unwrap();
        let n = FromSocket {
            sock: &a,
            len: data.len() as u64,
        }
        .fill(&mut f)
        .unwrap();
        writer.join().unwrap();
        assert_eq!(n, data.len() as u64);
        f.rewind().unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert!(back == data);

        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"only this").unwrap();
        drop(b);
        let a = OwnedFd::from(a);
        let e = FromSocket { sock: &a, len: 100 }
            .fill(&mut tempfile::tempfile().unwrap())
            .unwrap_err();
        assert!(
            e.get_ref()
                .is_some_and(|i| i.downcast_ref::<BodyError>().is_some()),
            "{e}"
        );
    }
}
