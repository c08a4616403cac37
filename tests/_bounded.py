"""A limit on time (and memory) for tests of reads that used to hang or fill the machine."""

import re
import resource
import signal
from contextlib import contextmanager


@contextmanager
def bounded(seconds: float = 10.0, memory: int | None = None):
    """The body may take ``seconds``, and allocate ``memory`` bytes more than this process
    holds now (None: no memory limit): a read that waits on a pipe is interrupted, and one
    that reads /dev/zero or a 3 GB file whole ends in MemoryError, so a test of such a
    fault fails instead of hanging the suite or filling the machine."""
    def expired(signum, frame):
        raise TimeoutError(f"still reading after {seconds} s: a read waits on a pipe")
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    previous = signal.signal(signal.SIGALRM, expired)
    if memory is not None:
        status = open("/proc/self/status").read()
        data_now = int(re.search(r"VmData:\s+(\d+) kB", status).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (data_now + memory, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
        signal.signal(signal.SIGALRM, previous)
