//! The RDMA transport (feature `rdma`): the same ring layout in registered
//! memory, written by the peer with RDMA WRITE over an RC queue pair.
//!
//! Setup runs over TCP (the `rdma://host:port` address): Hello / Welcome as
//! for `tcp://`, then each side sends its [`EndpointInfo`] (queue pair number,
//! LID, GID, and the address and key of its registered region). Each side
//! registers one region holding two rings:
//! - `inbound`: the peer RDMA-WRITEs records and then the tail into it; we read
//!   it with the ordinary [`Consumer`](super::ring::Consumer) (untrusted, checked).
//! - `outbound`: a local staging copy of the peer's inbound ring. Our
//!   [`Producer`](super::ring::Producer) writes records into it; after each
//!   publish the new bytes, then the tail word, are RDMA-written to the peer's
//!   inbound ring at the same offsets. The peer writes its consumer head into
//!   our staging header, so credits are read locally.
//!
//! An RDMA peer cannot ring a doorbell without another round trip, so RDMA
//! connections always busy-poll; the TCP setup socket stays open and its
//! hang-up tells either side that the other is gone.
//!
//! Without an RDMA device this fails at connect/accept time with
//! [`NativeError::NoRdmaDevice`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ptr;
use std::sync::{Arc, Mutex};

use ibverbs_sys as ffi;

use super::client::ClientOptions;
use super::handshake::{self, Parts, MAX_HANDSHAKE};
use super::link::{PublishHook, ReleaseHook, Rx, Signal, Socket, Tx};
use super::ring::{self, Memory, Ring, OFF_HEAD, OFF_TAIL};
use super::server::ServerOptions;
use super::sys::EventFd;
use super::{tcp, NativeError, Transport};

/// The error when no device exists, word for word what a user sees.
pub const NO_DEVICE: &str =
    "no RDMA device found (ibv_get_device_list returned none); use shm:// on this host or tcp://";

const PORT: u8 = 1;
const INFO_BYTES: usize = 48;

/// What each side tells the other before the queue pairs connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Queue pair number.
    pub qpn: u32,
    /// Initial packet sequence number.
    pub psn: u32,
    /// Local identifier of the port (InfiniBand).
    pub lid: u16,
    /// GID (RoCE and routed InfiniBand); all zero when unused.
    pub gid: [u8; 16],
    /// Address of the registered region (two rings).
    pub addr: u64,
    /// Remote key of the region.
    pub rkey: u32,
}

impl EndpointInfo {
    fn to_bytes(self) -> [u8; INFO_BYTES] {
        let mut b = [0u8; INFO_BYTES];
        b[0..4].copy_from_slice(&self.qpn.to_le_bytes());
        b[4..8].copy_from_slice(&self.psn.to_le_bytes());
        b[8..10].copy_from_slice(&self.lid.to_le_bytes());
        b[16..32].copy_from_slice(&self.gid);
        b[32..40].copy_from_slice(&self.addr.to_le_bytes());
        b[40..44].copy_from_slice(&self.rkey.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8; INFO_BYTES]) -> EndpointInfo {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[16..32]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[32..40]);
        EndpointInfo {
            qpn: u32_at(0),
            psn: u32_at(4),
            lid: u16::from_le_bytes([b[8], b[9]]),
            gid,
            addr: u64::from_le_bytes(addr),
            rkey: u32_at(40),
        }
    }
}

fn verb_err(what: &str) -> NativeError {
    NativeError::Rdma(format!(
        "{what} failed: {}",
        std::io::Error::last_os_error()
    ))
}

fn errno_err(what: &str, errno: i32) -> NativeError {
    NativeError::Rdma(format!(
        "{what} failed: {}",
        std::io::Error::from_raw_os_error(errno)
    ))
}

/// The verbs objects of one connection, destroyed in reverse order on drop.
struct Verbs {
    ctx: *mut ffi::ibv_context,
    pd: *mut ffi::ibv_pd,
    cq: *mut ffi::ibv_cq,
    qp: *mut ffi::ibv_qp,
    mr: *mut ffi::ibv_mr,
    /// The registered region (must outlive `mr`).
    mem: Arc<Memory>,
    remote: EndpointInfo,
}

// SAFETY: the verbs objects are used by one thread at a time (behind a Mutex);
// libibverbs objects may be used from any thread.
unsafe impl Send for Verbs {}

impl Drop for Verbs {
    fn drop(&mut self) {
        // SAFETY: each pointer is either null or a live object created by
        // `open`, destroyed once here, children before parents.
        unsafe {
            if !self.qp.is_null() {
                ffi::ibv_destroy_qp(self.qp);
            }
            if !self.mr.is_null() {
                ffi::ibv_dereg_mr(self.mr);
            }
            if !self.cq.is_null() {
                ffi::ibv_destroy_cq(self.cq);
            }
            if !self.pd.is_null() {
                ffi::ibv_dealloc_pd(self.pd);
            }
            if !self.ctx.is_null() {
                ffi::ibv_close_device(self.ctx);
            }
        }
    }
}

/// Opens the first RDMA device, or says there is none.
fn open_device() -> Result<*mut ffi::ibv_context, NativeError> {
    let mut n = 0i32;
    // SAFETY: `n` is a valid out-pointer.
    let list = unsafe { ffi::ibv_get_device_list(&mut n) };
    if list.is_null() || n <= 0 {
        if !list.is_null() {
            // SAFETY: a list returned by ibv_get_device_list, freed once.
            unsafe { ffi::ibv_free_device_list(list) };
        }
        return Err(NativeError::NoRdmaDevice(NO_DEVICE.into()));
    }
    // SAFETY: the list holds `n > 0` device pointers; the context keeps its
    // device alive after the list is freed.
    let ctx = unsafe {
        let ctx = ffi::ibv_open_device(*list);
        ffi::ibv_free_device_list(list);
        ctx
    };
    if ctx.is_null() {
        return Err(verb_err("ibv_open_device"));
    }
    Ok(ctx)
}

impl Verbs {
    /// Device, protection domain, completion queue, RC queue pair, and the
    /// registered region of `2 * ring_bytes(capacity)`.
    fn open(capacity: u32) -> Result<(Verbs, EndpointInfo), NativeError> {
        let mem = Arc::new(Memory::heap(2 * ring::ring_bytes(capacity)));
        let mut v = Verbs {
            ctx: open_device()?,
            pd: ptr::null_mut(),
            cq: ptr::null_mut(),
            qp: ptr::null_mut(),
            mr: ptr::null_mut(),
            mem,
            remote: EndpointInfo {
                qpn: 0,
                psn: 0,
                lid: 0,
                gid: [0; 16],
                addr: 0,
                rkey: 0,
            },
        };
        // SAFETY: `v.ctx` is a live context; each call creates a child object
        // stored in `v` (destroyed by Drop even if a later call fails).
        unsafe {
            v.pd = ffi::ibv_alloc_pd(v.ctx);
            if v.pd.is_null() {
                return Err(verb_err("ibv_alloc_pd"));
            }
            v.cq = ffi::ibv_create_cq(v.ctx, 64, ptr::null_mut(), ptr::null_mut(), 0);
            if v.cq.is_null() {
                return Err(verb_err("ibv_create_cq"));
            }
            let mut init = ffi::ibv_qp_init_attr {
                qp_context: ptr::null_mut(),
                send_cq: v.cq,
                recv_cq: v.cq,
                srq: ptr::null_mut(),
                cap: ffi::ibv_qp_cap {
                    max_send_wr: 16,
                    max_recv_wr: 1,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: 0,
                },
                qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
                sq_sig_all: 0,
            };
            v.qp = ffi::ibv_create_qp(v.pd, &mut init);
            if v.qp.is_null() {
                return Err(verb_err("ibv_create_qp"));
            }
            let access = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
                | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
            v.mr = ffi::ibv_reg_mr(v.pd, v.mem.as_ptr().cast(), v.mem.len(), access as i32);
            if v.mr.is_null() {
                return Err(verb_err("ibv_reg_mr"));
            }
            let mut port = ffi::ibv_port_attr::default();
            let rc =
                ffi::ibv_query_port(v.ctx, PORT, (&mut port as *mut ffi::ibv_port_attr).cast());
            if rc != 0 {
                return Err(errno_err("ibv_query_port", rc));
            }
            let mut gid = ffi::ibv_gid { raw: [0; 16] };
            // A port without GIDs (plain InfiniBand) routes by LID alone.
            let gid = if ffi::ibv_query_gid(v.ctx, PORT, 0, &mut gid) == 0 {
                gid.raw
            } else {
                [0; 16]
            };
            let info = EndpointInfo {
                qpn: (*v.qp).qp_num,
                psn: 0,
                lid: port.lid,
                gid,
                addr: v.mem.as_ptr() as u64,
                rkey: (*v.mr).rkey,
            };
            Ok((v, info))
        }
    }

    /// INIT -> RTR -> RTS against the peer's endpoint.
    fn connect(&mut self, remote: EndpointInfo) -> Result<(), NativeError> {
        self.remote = remote;
        let modify = |attr: &mut ffi::ibv_qp_attr, mask: ffi::ibv_qp_attr_mask, what: &str| {
            // SAFETY: `self.qp` is live; `attr` is a valid attribute block.
            let rc = unsafe { ffi::ibv_modify_qp(self.qp, attr, mask.0 as i32) };
            if rc != 0 {
                return Err(errno_err(what, rc));
            }
            Ok(())
        };
        use ffi::ibv_qp_attr_mask as m;
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_INIT,
            pkey_index: 0,
            port_num: PORT,
            qp_access_flags: ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
                | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0,
            ..Default::default()
        };
        modify(
            &mut attr,
            m::IBV_QP_STATE | m::IBV_QP_PKEY_INDEX | m::IBV_QP_PORT | m::IBV_QP_ACCESS_FLAGS,
            "ibv_modify_qp(INIT)",
        )?;
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTR,
            path_mtu: ffi::IBV_MTU_1024,
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
            ah_attr: ffi::ibv_ah_attr {
                dlid: remote.lid,
                port_num: PORT,
                ..Default::default()
            },
            ..Default::default()
        };
        if remote.gid != [0; 16] {
            attr.ah_attr.is_global = 1;
            attr.ah_attr.grh.dgid = ffi::ibv_gid { raw: remote.gid };
            attr.ah_attr.grh.hop_limit = 0xff;
            attr.ah_attr.grh.sgid_index = 0;
        }
        modify(
            &mut attr,
            m::IBV_QP_STATE
                | m::IBV_QP_AV
                | m::IBV_QP_PATH_MTU
                | m::IBV_QP_DEST_QPN
                | m::IBV_QP_RQ_PSN
                | m::IBV_QP_MAX_DEST_RD_ATOMIC
                | m::IBV_QP_MIN_RNR_TIMER,
            "ibv_modify_qp(RTR)",
        )?;
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTS,
            sq_psn: 0,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            max_rd_atomic: 1,
            ..Default::default()
        };
        modify(
            &mut attr,
            m::IBV_QP_STATE
                | m::IBV_QP_SQ_PSN
                | m::IBV_QP_TIMEOUT
                | m::IBV_QP_RETRY_CNT
                | m::IBV_QP_RNR_RETRY
                | m::IBV_QP_MAX_QP_RD_ATOMIC,
            "ibv_modify_qp(RTS)",
        )
    }

    /// RDMA-WRITEs `len` bytes at `local_off` of our region to `remote_off`
    /// of the peer's, and waits for the completion.
    fn write(
        &mut self,
        local_off: usize,
        remote_off: usize,
        len: usize,
    ) -> Result<(), NativeError> {
        if len == 0 {
            return Ok(());
        }
        if local_off + len > self.mem.len() {
            return Err(NativeError::Rdma(
                "a write past the registered region".into(),
            ));
        }
        let mut sge = ffi::ibv_sge {
            addr: self.mem.as_ptr() as u64 + local_off as u64,
            length: len as u32,
            // SAFETY: `self.mr` is live.
            lkey: unsafe { (*self.mr).lkey },
        };
        let mut wr = ffi::ibv_send_wr {
            wr_id: 1,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
            opcode: ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            send_flags: ffi::ibv_send_flags::IBV_SEND_SIGNALED.0,
            __bindgen_anon_1: Default::default(),
            wr: ffi::ibv_send_wr__bindgen_ty_2 {
                rdma: ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
                    remote_addr: self.remote.addr + remote_off as u64,
                    rkey: self.remote.rkey,
                },
            },
            qp_type: Default::default(),
            __bindgen_anon_2: Default::default(),
        };
        let mut bad: *mut ffi::ibv_send_wr = ptr::null_mut();
        // SAFETY: `self.qp` is live; `wr` and `sge` point at registered memory
        // and live until the completion is reaped below. `post_send` is the
        // provider's entry point (ibv_post_send is an inline wrapper in C).
        let rc = unsafe {
            let ctx = (*self.qp).context;
            match (*ctx).ops.post_send {
                Some(post) => post(self.qp, &mut wr, &mut bad),
                None => return Err(NativeError::Rdma("the provider has no post_send".into())),
            }
        };
        if rc != 0 {
            return Err(errno_err("ibv_post_send", rc));
        }
        let mut wc = [ffi::ibv_wc::default(); 1];
        loop {
            // SAFETY: `self.cq` is live; `wc` has room for one completion.
            let n = unsafe {
                let ctx = (*self.cq).context;
                match (*ctx).ops.poll_cq {
                    Some(poll) => poll(self.cq, 1, wc.as_mut_ptr()),
                    None => return Err(NativeError::Rdma("the provider has no poll_cq".into())),
                }
            };
            if n < 0 {
                return Err(NativeError::Rdma("ibv_poll_cq failed".into()));
            }
            if n == 1 {
                if let Some((status, vendor)) = wc[0].error() {
                    return Err(NativeError::Rdma(format!(
                        "RDMA write completed with status {status} (vendor error {vendor}); the peer is gone"
                    )));
                }
                return Ok(());
            }
            std::hint::spin_loop();
        }
    }
}

/// Writes published records and then the tail to the peer's inbound ring.
struct Publisher {
    verbs: Arc<Mutex<Verbs>>,
    /// Offset of our staging ring (== the peer's inbound ring offset in its region).
    staging: usize,
    capacity: u64,
}

impl PublishHook for Publisher {
    fn published(&mut self, _ring: &Ring, from: u64, to: u64) -> Result<(), NativeError> {
        let mut v = self.verbs.lock().unwrap_or_else(|p| p.into_inner());
        let data = self.staging + ring::HEADER_BYTES;
        let mut pos = from;
        while pos < to {
            let off = pos % self.capacity;
            let n = (to - pos).min(self.capacity - off);
            // The peer's inbound ring sits at offset 0 of its region.
            v.write(
                data + off as usize,
                ring::HEADER_BYTES + off as usize,
                n as usize,
            )?;
            pos += n;
        }
        v.write(self.staging + OFF_TAIL, OFF_TAIL, 8)
    }
}

/// Mirrors our inbound consumer head into the peer's staging header.
struct HeadMirror {
    verbs: Arc<Mutex<Verbs>>,
    /// Where the peer's staging ring sits in its region.
    peer_staging: usize,
}

impl ReleaseHook for HeadMirror {
    fn released(&mut self, _head: u64) -> Result<(), NativeError> {
        let mut v = self.verbs.lock().unwrap_or_else(|p| p.into_inner());
        // Our inbound ring is at offset 0; its head word was just stored.
        v.write(OFF_HEAD, self.peer_staging + OFF_HEAD, 8)
    }
}

/// Registers, exchanges endpoints over `stream`, connects the queue pair,
/// and builds the connection's parts.
fn establish(stream: TcpStream, capacity: u32, peer_name: String) -> Result<Parts, NativeError> {
    let (mut verbs, info) = Verbs::open(capacity)?;
    (&stream).write_all(&info.to_bytes())?;
    let mut theirs = [0u8; INFO_BYTES];
    (&stream).read_exact(&mut theirs)?;
    verbs.connect(EndpointInfo::from_bytes(&theirs))?;
    let staging = ring::ring_bytes(capacity);
    let inbound = Ring::create(verbs.mem.clone(), 0, capacity)?;
    let outbound = Ring::create(verbs.mem.clone(), staging, capacity)?;
    let verbs = Arc::new(Mutex::new(verbs));
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    stream.set_nodelay(true)?;
    Ok(Parts {
        rx: Rx::Ring(
            inbound.consumer(),
            Some(Box::new(HeadMirror {
                verbs: verbs.clone(),
                peer_staging: staging,
            })),
        ),
        tx: Tx::Ring(
            outbound.producer(),
            Some(Box::new(Publisher {
                verbs,
                staging,
                capacity: u64::from(capacity),
            })),
        ),
        signal: Signal::new(
            Transport::Rdma,
            EventFd::new(true)?,
            None,
            Socket::Tcp(stream),
        ),
        capacity,
        peer_name,
    })
}

/// The broker side: Hello / Welcome over TCP, then the RDMA setup.
pub(crate) fn accept(stream: TcpStream, opts: &ServerOptions) -> Result<Parts, NativeError> {
    stream.set_read_timeout(Some(opts.handshake_timeout))?;
    stream.set_write_timeout(Some(opts.handshake_timeout))?;
    let hello = tcp::read_record(&mut &stream, MAX_HANDSHAKE)?;
    let (capacity, client_name) = match handshake::accept_hello(&hello, opts) {
        Ok(ok) => ok,
        Err(refusal) => {
            let _ = (&stream).write_all(&tcp::record(&refusal.frame())?);
            return Err(refusal.into_error());
        }
    };
    // Fail before the Welcome when this host has no device, telling the client why.
    if let Err(e) = open_device().map(|ctx| {
        // SAFETY: a context just opened, closed once.
        unsafe { ffi::ibv_close_device(ctx) };
    }) {
        let refusal = handshake::Refusal {
            code: super::frame::error_code::UNSUPPORTED,
            message: e.to_string(),
        };
        let _ = (&stream).write_all(&tcp::record(&refusal.frame())?);
        return Err(e);
    }
    (&stream).write_all(&tcp::record(&handshake::welcome(
        capacity,
        &opts.server_name,
    ))?)?;
    establish(stream, capacity, client_name)
}

/// The client side.
pub(crate) fn connect(addr: &str, opts: &ClientOptions) -> Result<Parts, NativeError> {
    handshake::check_host()?;
    // No device here: say so before touching the network.
    let ctx = open_device()?;
    // SAFETY: a context just opened, closed once.
    unsafe { ffi::ibv_close_device(ctx) };
    let stream = tcp::connect_any(addr, opts.connect_timeout)?;
    stream.set_read_timeout(Some(opts.connect_timeout))?;
    stream.set_write_timeout(Some(opts.connect_timeout))?;
    (&stream).write_all(&tcp::record(&handshake::hello(
        opts.ring_capacity,
        &opts.client_name,
    ))?)?;
    let welcome = tcp::read_record(&mut &stream, MAX_HANDSHAKE)?;
    let (capacity, server_name) = handshake::check_welcome(&welcome)?;
    establish(stream, capacity, server_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_info_round_trips() {
        let info = EndpointInfo {
            qpn: 0x0102_0304,
            psn: 7,
            lid: 9,
            gid: [3; 16],
            addr: 0xdead_beef_0000,
            rkey: 42,
        };
        assert_eq!(EndpointInfo::from_bytes(&info.to_bytes()), info);
    }

    #[test]
    fn without_a_device_connecting_says_so() {
        // On a host without devices (these CI machines) the error is the
        // documented one; on one with a device, a refused TCP connection.
        let has_device =
            std::fs::read_dir("/sys/class/infiniband").is_ok_and(|mut d| d.next().is_some());
        match connect("127.0.0.1:1", &ClientOptions::default()) {
            Err(NativeError::NoRdmaDevice(msg)) if !has_device => assert_eq!(msg, NO_DEVICE),
            Err(NativeError::Connect(_)) if has_device => {}
            Err(other) => panic!("unexpected error (device present: {has_device}): {other}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
