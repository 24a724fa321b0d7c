"""glibc's allocator setting: applied once per process and recorded for meta.json."""

from jacbench.measure import allocator


def test_keep_freed_memory_is_recorded():
    assert allocator.keep_freed_memory() in (True, False)
    settings = allocator.allocator_settings()
    if settings["kept_freed_memory"]:
        assert settings["mmap_threshold"] == allocator.MMAP_THRESHOLD
        assert settings["trim_threshold"] == allocator.TRIM_THRESHOLD
        assert allocator.keep_freed_memory()  # once set, it stays set
