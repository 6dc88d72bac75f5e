//! Thin, checked wrappers over the Linux calls the transports need: eventfd,
//! memfd, mmap, ppoll, and file descriptors passed over a Unix socket
//! (SCM_RIGHTS). Each `unsafe` block is one libc call on memory we own.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::time::Duration;

use super::ring::Memory;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An eventfd: one side rings it (adds 1), the other waits on it.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new non-blocking eventfd; `cloexec: false` lets a child process inherit it.
    pub fn new(cloexec: bool) -> io::Result<EventFd> {
        let mut flags = libc::EFD_NONBLOCK;
        if cloexec {
            flags |= libc::EFD_CLOEXEC;
        }
        // SAFETY: plain syscall, no pointers.
        let fd = check(unsafe { libc::eventfd(0, flags) })?;
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adopts a descriptor received from the peer or inherited from a parent.
    pub fn from_fd(fd: OwnedFd) -> EventFd {
        EventFd(fd)
    }

    /// Wakes the waiter (adds 1 to the counter).
    pub fn signal(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local array to our descriptor.
        let rc = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // A full counter already wakes the waiter.
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Resets the counter (non-blocking).
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local array. An error (empty
        // counter) means there was nothing to drain.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }

    /// The descriptor, for poll/epoll.
    pub fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The owned descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }
}

/// A new memfd of `len` bytes.
pub fn memfd(len: usize, cloexec: bool) -> io::Result<OwnedFd> {
    let name = c"kascade-native";
    let flags = if cloexec { libc::MFD_CLOEXEC } else { 0 };
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on our descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// The size of the file behind `fd`.
pub fn fd_size(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the call.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    u64::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Maps `len` bytes of `fd` shared, read-write.
pub fn mmap_shared(fd: &OwnedFd, len: usize) -> io::Result<Memory> {
    // SAFETY: a fresh mapping chosen by the kernel; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let Some(p) = NonNull::new(p.cast::<u8>()) else {
        return Err(io::Error::other("mmap returned null"));
    };
    // SAFETY: `p` is a live mapping of `len` bytes that only this Memory unmaps.
    Ok(unsafe { Memory::from_mmap(p, len) })
}

/// Clears `FD_CLOEXEC` so a child started with exec inherits `fd`.
pub fn inheritable(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor number.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) })?;
    Ok(())
}

/// Most descriptors one message carries.
const MAX_FDS: usize = 4;

fn cmsg_space() -> usize {
    // SAFETY: pure arithmetic on a constant.
    unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `bytes` on a Unix stream socket, with `fds` attached to the first byte.
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut sent = 0;
    let mut control = vec![0u8; cmsg_space()];
    while sent < bytes.len() {
        let mut iov = libc::iovec {
            iov_base: bytes[sent..].as_ptr() as *mut libc::c_void,
            iov_len: bytes.len() - sent,
        };
        // SAFETY: an all-zero msghdr is valid; we fill the fields we use.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if sent == 0 && !fds.is_empty() {
            let data_len = mem::size_of_val(fds);
            msg.msg_control = control.as_mut_ptr().cast();
            // SAFETY: arithmetic only.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len as u32) } as _;
            // SAFETY: `control` has room for one cmsg of `data_len` bytes (it
            // is sized for MAX_FDS), so CMSG_FIRSTHDR is non-null and the
            // header and data writes stay inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
                ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), data_len);
            }
        }
        // SAFETY: `msg` points at live locals (iov, control) for the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes from a Unix stream socket; any descriptors
/// that came with them are appended to `fds` (close-on-exec). 0 means EOF.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut control = vec![0u8; cmsg_space()];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; we fill the fields we use.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    let n = loop {
        // SAFETY: `msg` points at live locals (iov over `buf`, control).
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the kernel filled `msg.msg_control` with well-formed cmsgs up
    // to `msg_controllen`; the CMSG_* macros walk only inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    let fd = ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n)
}

/// What `poll2` saw on each descriptor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Revents {
    /// The first descriptor's events.
    pub first: i16,
    /// The second descriptor's events.
    pub second: i16,
}

/// Waits for `ev_a` on `a` or `ev_b` on `b`, up to `timeout` (`None` = forever).
pub fn poll2(
    a: RawFd,
    ev_a: i16,
    b: RawFd,
    ev_b: i16,
    timeout: Option<Duration>,
) -> io::Result<Revents> {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: ev_a,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: ev_b,
            revents: 0,
        },
    ];
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` and `ts` are live locals for the call.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tsp, ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Revents::default());
        }
        return Err(e);
    }
    Ok(Revents {
        first: fds[0].revents,
        second: fds[1].revents,
    })
}

/// Whether a socket's peer has closed: `Ok(true)` on EOF, `Ok(false)` when
/// open (bytes waiting or none), an error when the socket failed.
pub fn peer_closed(sock: RawFd) -> io::Result<bool> {
    let mut b = [0u8; 1];
    // SAFETY: reads at most one byte into a local, without consuming it.
    let n = unsafe {
        libc::recv(
            sock,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 {
        return Ok(true);
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        };
    }
    Ok(false)
}

/// Whether `sock` has hung up, without blocking (POLLRDHUP/POLLHUP/POLLERR, or EOF).
pub fn hung_up(sock: RawFd) -> io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd: sock,
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    // SAFETY: `fds` is a live local array of one entry.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let bad = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    Ok(fds[0].revents & bad != 0)
}
