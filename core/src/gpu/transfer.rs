//! Copies between host and device on one stream, through pinned host memory.
//!
//! Each thread that copies (the staging thread, each upcall worker running a
//! GPU lambda) owns a [`Transfer`]: a CUDA stream and two pinned buffers, one
//! write-combined for uploads (the CPU only writes it) and one cached for
//! downloads (the CPU reads it). A buffer grows to the largest copy up to
//! [`CHUNK`] and is reused; longer copies go through it chunk by chunk. Every
//! copy is finished (its stream synchronised) when the call returns, so the
//! bytes are usable from any stream afterwards.

use std::sync::Arc;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{result, CudaContext, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};

use super::Gpu;
use crate::error::{Error, Result};

/// The largest piece one pinned buffer carries; longer copies go in pieces.
pub const CHUNK: usize = 16 << 20;

/// A CUDA driver error as an engine error.
pub(crate) fn gpu_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Gpu(format!("{what}: {e}"))
}

/// One thread's copier: a stream and its pinned buffers.
pub struct Transfer {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    up: Option<PinnedHostSlice<u8>>,
    down: Option<PinnedHostSlice<u8>>,
}

impl Transfer {
    /// A copier with a stream of its own on `gpu`.
    pub fn new(gpu: &Arc<Gpu>) -> Result<Transfer> {
        let stream = gpu
            .context()
            .new_stream()
            .map_err(|e| gpu_error("creating a CUDA stream", e))?;
        Ok(Transfer {
            context: gpu.context().clone(),
            stream,
            up: None,
            down: None,
        })
    }

    /// The stream every copy and launch of this copier runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Makes the GPU's context current on this thread (the raw copies need it).
    pub fn bind(&self) -> Result<()> {
        self.context
            .bind_to_thread()
            .map_err(|e| gpu_error("binding the CUDA context", e))
    }

    /// `len` bytes of device memory, uninitialised, allocated on this stream.
    pub fn alloc(&self, len: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: the bytes are uninitialised; every user writes before it reads
        // (a copy fills a cache entry; a kernel's output length word says how much it wrote).
        unsafe { self.stream.alloc::<u8>(len.max(1)) }
            .map_err(|e| gpu_error(&format!("allocating {len} bytes of device memory"), e))
    }

    /// The device address of `slice` (event tracking is off: the address is all we need).
    pub fn address(&self, slice: &CudaSlice<u8>) -> CUdeviceptr {
        let (ptr, _sync) = slice.device_ptr(&self.stream);
        ptr
    }

    /// Copies `src` to device address `dst` (room for `src.len()` bytes) and waits until done.
    pub fn upload(&mut self, src: &[u8], dst: CUdeviceptr) -> Result<()> {
        self.bind()?;
        let mut done = 0usize;
        while done < src.len() {
            let piece = &src[done..(done + CHUNK).min(src.len())];
            let pinned = pinned(&self.context, &mut self.up, piece.len(), true)?;
            pinned[..piece.len()].copy_from_slice(piece);
            // SAFETY: `dst + done` has room for the piece (the caller's promise for the
            // whole `src`); the pinned bytes stay untouched until the stream is synchronised.
            unsafe {
                result::memcpy_htod_async(
                    dst + done as u64,
                    &pinned[..piece.len()],
                    self.stream.cu_stream(),
                )
            }
            .map_err(|e| gpu_error("copying to the GPU", e))?;
            self.synchronize()?;
            done += piece.len();
        }
        Ok(())
    }

    /// Copies `len` bytes from device address `src` into a new host vector and waits.
    pub fn download(&mut self, src: CUdeviceptr, len: usize) -> Result<Vec<u8>> {
        self.bind()?;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = (len - out.len()).min(CHUNK);
            let pinned = pinned(&self.context, &mut self.down, n, false)?;
            // SAFETY: `src + out.len()` holds at least `n` more readable bytes (the caller's
            // promise for `len`); the pinned buffer is not read before the stream is synchronised.
            unsafe {
                result::memcpy_dtoh_async(
                    &mut pinned[..n],
                    src + out.len() as u64,
                    self.stream.cu_stream(),
                )
            }
            .map_err(|e| gpu_error("copying from the GPU", e))?;
            self.synchronize()?;
            let pinned = pinned_slice(&mut self.down)?;
            out.extend_from_slice(&pinned[..n]);
        }
        Ok(out)
    }

    /// Copies one little-endian `u64` from device address `src`.
    pub fn download_u64(&mut self, src: CUdeviceptr) -> Result<u64> {
        let bytes = self.download(src, 8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[..8]);
        Ok(u64::from_le_bytes(word))
    }

    /// Zeroes `len` bytes at device address `dst` (ordered on this stream).
    pub fn zero(&self, dst: CUdeviceptr, len: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: `dst` holds `len` writable bytes (the caller's promise).
        unsafe { result::memset_d8_async(dst, 0, len, self.stream.cu_stream()) }
            .map_err(|e| gpu_error("zeroing device memory", e))
    }

    /// Waits for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| gpu_error("waiting for the GPU", e))
    }
}

/// The pinned buffer in `slot`, grown to at least `len` bytes (up to [`CHUNK`]).
fn pinned<'a>(
    context: &Arc<CudaContext>,
    slot: &'a mut Option<PinnedHostSlice<u8>>,
    len: usize,
    write_combined: bool,
) -> Result<&'a mut [u8]> {
    if slot.as_ref().is_none_or(|p| p.len() < len) {
        let size = len.next_power_of_two().clamp(64 << 10, CHUNK).max(len);
        // Drop the old buffer first: pinned memory is scarce.
        *slot = None;
        let flags = if write_combined {
            cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED
        } else {
            0
        };
        // SAFETY: the bytes are uninitialised; every user writes them (a copy in, or
        // a download) before it reads them.
        let buffer = unsafe { context.alloc_pinned_with_flags::<u8>(size, flags) }
            .map_err(|e| gpu_error(&format!("allocating {size} bytes of pinned memory"), e))?;
        *slot = Some(buffer);
    }
    pinned_slice(slot)
}

fn pinned_slice(slot: &mut Option<PinnedHostSlice<u8>>) -> Result<&mut [u8]> {
    slot.as_mut()
        .ok_or_else(|| Error::Gpu("no pinned buffer".into()))?
        .as_mut_slice()
        .map_err(|e| gpu_error("reading pinned memory", e))
}
