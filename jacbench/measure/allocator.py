"""glibc's allocator setting the timing entry points share: freed memory kept for reuse.

Not a tuning (nothing is measured or chosen): one process-wide setting, the same for every
method, that jacbench's timing entry points make before they time anything, and that
meta.json records (``allocator_settings``).
"""

from __future__ import annotations

from typing import Any

# NOTE: [Freed memory kept for reuse]
#     PyTorch's CPU tensors come from malloc, and glibc serves a block above its mmap
#     threshold with fresh pages from the kernel, returned on free. The threshold moves as
#     such blocks are freed, so whether a process keeps paying for fresh pages is chance: on
#     the PINN shape (D=2, K=64, L=6, B=4096, 1 MB activations) five fresh processes timed
#     1.75, 1.76, 1.78, 4.25 and 4.28 ms per Jacobian, the slow two with 2272 page faults a
#     call. With the thresholds fixed (mmap 64 MiB, trim 128 MiB) six of six took
#     1.72–1.74 ms with none. Every method in the process gains alike (torch.func and
#     autograd allocate the same way), so comparisons stay fair; jacbench's own timing
#     entry points set it, and a library user may call it once at start.
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_allocator: dict[str, Any] = {"kept_freed_memory": False}


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks up to 64 MiB for reuse (NOTE: [Freed memory kept for
    reuse]). Process-wide; True where it applied (glibc), False elsewhere."""
    if _allocator["kept_freed_memory"]:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        applied = False
    if applied:
        _allocator.update(
            kept_freed_memory=True, mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD
        )
    return applied


def allocator_settings() -> dict[str, Any]:
    """What ``keep_freed_memory`` set in this process, for meta.json."""
    return dict(_allocator)
