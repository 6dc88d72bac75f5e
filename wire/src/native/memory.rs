//! The memory rings live in: a shared mapping (shm) or a heap block (RDMA
//! registration, tests, local rings).

use std::ptr::NonNull;

/// Memory that holds rings: a shared mapping or a heap block. Unmapped or
/// freed when the last [`Producer`]/[`Consumer`] over it is dropped.
///
/// [`Producer`]: super::ring::Producer
/// [`Consumer`]: super::ring::Consumer
pub struct Memory {
    ptr: NonNull<u8>,
    len: usize,
    kind: MemoryKind,
}

enum MemoryKind {
    Heap(std::alloc::Layout),
    Mmap,
}

// SAFETY: `Memory` is a plain block of bytes; every access to it goes through
// atomics or raw copies made by the one producer or consumer of each ring.
unsafe impl Send for Memory {}
// SAFETY: as above; `&Memory` hands out only the raw pointer.
unsafe impl Sync for Memory {}

impl Memory {
    /// A zeroed, page-aligned heap block of `len` bytes (at least one byte).
    pub fn heap(len: usize) -> Memory {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096)
            .unwrap_or_else(|_| std::alloc::Layout::new::<u64>());
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Memory {
            ptr,
            len: layout.size(),
            kind: MemoryKind::Heap(layout),
        }
    }

    /// Takes ownership of a `MAP_SHARED` mapping (unmapped on drop).
    ///
    /// # Safety
    /// `ptr` must be the start of a live mapping of `len` bytes that nothing else unmaps.
    pub unsafe fn from_mmap(ptr: NonNull<u8>, len: usize) -> Memory {
        Memory {
            ptr,
            len,
            kind: MemoryKind::Mmap,
        }
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it has no bytes (never, in practice).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        match self.kind {
            // SAFETY: allocated in `heap` with this layout, freed once.
            MemoryKind::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            MemoryKind::Mmap => {
                // SAFETY: `from_mmap`'s caller gave us this live mapping to own.
                let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
                if rc != 0 {
                    tracing::warn!(error = %std::io::Error::last_os_error(), "munmap of a ring failed");
                }
            }
        }
    }
}
