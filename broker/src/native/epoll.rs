//! A small safe face on Linux `epoll`, for the native core thread: it parks on
//! every connection's doorbell and socket, the listeners and its own wake-up
//! eventfd at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readable.
pub(super) const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub(super) const OUT: u32 = libc::EPOLLOUT as u32;
/// The peer shut its writing half (or closed).
pub(super) const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Hang-up or error (always reported).
pub(super) const HUP_OR_ERR: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// An epoll instance.
pub(super) struct Epoll(OwnedFd);

impl Epoll {
    /// A new instance (close-on-exec).
    pub(super) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live local; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `events` (level-triggered), reporting `token`.
    pub(super) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes what `fd` is watched for.
    pub(super) fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Stops watching `fd` (before it is closed).
    pub(super) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` (-1: forever, 0: just look) and fills `out`
    /// with `(token, events)`; an interrupted wait reports nothing.
    pub(super) fn wait(
        &self,
        buf: &mut [libc::epoll_event],
        out: &mut Vec<(u64, u32)>,
        timeout_ms: i32,
    ) -> io::Result<()> {
        out.clear();
        let max = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: `buf` is writable for `max` entries for the whole call.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), buf.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
        out.extend(buf[..n].iter().map(|e| {
            // Copies out of the (packed) struct.
            let token = e.u64;
            let events = e.events;
            (token, events)
        }));
        Ok(())
    }
}
