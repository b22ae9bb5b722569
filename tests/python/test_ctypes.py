"""libmapi32 from Python through ctypes, as README.md's "Python" shows.

usage: python3 tests/python/test_ctypes.py PATH/TO/libmapi32.so

Loads the library by the path given (make passes the one it just built),
declares the C signatures exactly (SCODE is a 32-bit signed int, ULONG a
32-bit unsigned one, pointers c_void_p), and checks the calls, the status
codes as 32-bit values, and calls from many threads at once (ctypes lets go
of the GIL around each call, so they really run in parallel). Also runs the
README's snippet as written. Ends with one line "python-ctypes: N passed,
N failed"; the exit status is non-zero on any failure.
"""

import ctypes
import os
import queue
import re
import subprocess
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "..", "README.md")

SCODE = ctypes.c_int32
ULONG = ctypes.c_uint32
LPVOID = ctypes.c_void_p

S_OK = 0
# SCODEs are signed: 0x80070057 reads back as -2147024809.
MAPI_E_NOT_ENOUGH_MEMORY = 0x8007000E - (1 << 32)
MAPI_E_INVALID_PARAMETER = 0x80070057 - (1 << 32)

ALIGNMENT = 16 if ctypes.sizeof(LPVOID) == 8 else 8

LIBRARY_PATH = None  # set from the command line


class MAPI32_STATS(ctypes.Structure):
    """mapix.h's MAPI32_STATS: set cbSize to its size before the call."""

    _fields_ = [("cbSize", ULONG), ("ulReserved", ULONG)] + [
        (name, ctypes.c_uint64)
        for name in ("live_roots", "live_children", "live_bytes", "peak_bytes", "total_allocations", "misuse_count")
    ]


def load(path):
    mapi = ctypes.CDLL(path)
    mapi.MAPIAllocateBuffer.argtypes = [ULONG, ctypes.POINTER(LPVOID)]
    mapi.MAPIAllocateBuffer.restype = SCODE
    mapi.MAPIAllocateMore.argtypes = [ULONG, LPVOID, ctypes.POINTER(LPVOID)]
    mapi.MAPIAllocateMore.restype = SCODE
    mapi.MAPIFreeBuffer.argtypes = [LPVOID]
    mapi.MAPIFreeBuffer.restype = ULONG
    mapi.mapi32_stats.argtypes = [ctypes.POINTER(MAPI32_STATS)]
    mapi.mapi32_stats.restype = SCODE
    return mapi


class Mapi:
    """Thin helpers over the library: each returns (code, pointer value)."""

    def __init__(self, mapi):
        self.lib = mapi

    def allocate(self, size):
        out = LPVOID()
        code = self.lib.MAPIAllocateBuffer(size, ctypes.byref(out))
        return code, out.value

    def more(self, size, parent):
        out = LPVOID()
        code = self.lib.MAPIAllocateMore(size, parent, ctypes.byref(out))
        return code, out.value

    def free(self, block):
        return self.lib.MAPIFreeBuffer(block)

    def stats(self, size=ctypes.sizeof(MAPI32_STATS)):
        stats = MAPI32_STATS(cbSize=size)
        return self.lib.mapi32_stats(ctypes.byref(stats)), stats


class CallsTest(unittest.TestCase):
    def setUp(self):
        self.mapi = Mapi(load(LIBRARY_PATH))

    def test_signatures_are_32_bit(self):
        lib = self.mapi.lib
        self.assertEqual(ctypes.sizeof(lib.MAPIAllocateBuffer.restype), 4)
        self.assertEqual(ctypes.sizeof(lib.MAPIFreeBuffer.restype), 4)
        self.assertEqual(ctypes.sizeof(lib.MAPIAllocateBuffer.argtypes[0]), 4)

    def test_null_out_pointer_is_invalid_parameter(self):
        lib = self.mapi.lib
        code = lib.MAPIAllocateBuffer(16, None)
        self.assertEqual(code, MAPI_E_INVALID_PARAMETER)
        self.assertEqual(code & 0xFFFFFFFF, 0x80070057)
        self.assertLess(code, 0, "an SCODE failure is negative")
        code, root = self.mapi.allocate(16)
        self.assertEqual(code, S_OK)
        self.assertEqual(lib.MAPIAllocateMore(16, root, None), MAPI_E_INVALID_PARAMETER)
        self.assertEqual(self.mapi.free(root), 0)

    def test_root_and_children_hold_their_bytes(self):
        code, root = self.mapi.allocate(100)
        self.assertEqual(code, S_OK)
        self.assertEqual(root % ALIGNMENT, 0)
        code, child = self.mapi.more(50, root)
        self.assertEqual(code, S_OK)
        code, grandchild = self.mapi.more(6, child)  # a child as a parent
        self.assertEqual(code, S_OK)
        self.assertEqual(grandchild % ALIGNMENT, 0)
        ctypes.memset(root, 0x11, 100)
        ctypes.memset(child, 0x22, 50)
        ctypes.memmove(grandchild, b"hello\0", 6)
        self.assertEqual(ctypes.string_at(root, 100), b"\x11" * 100)
        self.assertEqual(ctypes.string_at(child, 50), b"\x22" * 50)
        self.assertEqual(ctypes.string_at(grandchild), b"hello")
        self.assertEqual(self.mapi.free(root), 0)

    def test_zero_size_gives_a_unique_block(self):
        code_a, a = self.mapi.allocate(0)
        code_b, b = self.mapi.allocate(0)
        self.assertEqual((code_a, code_b), (S_OK, S_OK))
        self.assertIsNotNone(a)
        self.assertNotEqual(a, b)
        self.assertEqual(self.mapi.more(8, a)[0], S_OK)
        self.assertEqual(self.mapi.free(a), 0)
        self.assertEqual(self.mapi.free(b), 0)

    def test_foreign_parent_is_refused_and_out_set_to_null(self):
        foreign = ctypes.create_string_buffer(64)
        out = LPVOID(0x1234)
        code = self.mapi.lib.MAPIAllocateMore(8, ctypes.addressof(foreign), ctypes.byref(out))
        self.assertEqual(code, MAPI_E_INVALID_PARAMETER)
        self.assertIsNone(out.value)

    def test_null_parent_makes_a_root(self):
        # Kopano's MAPIAllocateMore(cb, NULL, &p): a new root, as MAPIAllocateBuffer.
        code, root = self.mapi.more(24, None)
        self.assertEqual(code, S_OK)
        self.assertIsNotNone(root)
        self.assertEqual(root % 16, 0)
        code, child = self.mapi.more(8, root)
        self.assertEqual(code, S_OK)
        self.assertEqual(self.mapi.free(root), 0)
        self.assertEqual(self.mapi.more(8, child), (MAPI_E_INVALID_PARAMETER, None))

    def test_free_accepts_anything_and_returns_zero(self):
        code, root = self.mapi.allocate(32)
        code, child = self.mapi.more(16, root)
        ctypes.memset(child, 0x5A, 16)
        foreign = ctypes.create_string_buffer(64)
        self.assertEqual(self.mapi.free(None), 0)
        self.assertEqual(self.mapi.free(child), 0)  # a child lives as long as its root
        self.assertEqual(ctypes.string_at(child, 16), b"\x5A" * 16)
        self.assertEqual(self.mapi.free(ctypes.addressof(foreign)), 0)
        self.assertEqual(self.mapi.free(root), 0)
        self.assertEqual(self.mapi.free(root), 0)  # a double free is refused

    def test_freed_root_is_no_longer_a_parent(self):
        code, root = self.mapi.allocate(32)
        self.assertEqual(self.mapi.free(root), 0)
        self.assertEqual(self.mapi.more(8, root), (MAPI_E_INVALID_PARAMETER, None))

    def test_stats_struct_with_cbsize(self):
        self.assertEqual(ctypes.sizeof(MAPI32_STATS), 56)
        self.assertEqual(MAPI32_STATS.live_roots.offset, 8)
        code, before = self.mapi.stats()
        self.assertEqual((code, before.cbSize), (S_OK, 56))
        _, root = self.mapi.allocate(10)
        code, during = self.mapi.stats()
        self.assertEqual(during.live_roots, before.live_roots + 1)
        self.mapi.free(root)
        self.assertEqual(self.mapi.stats(size=0)[0], MAPI_E_INVALID_PARAMETER)

    def test_huge_size_is_refused_not_fatal(self):
        # 4 GiB - 1, the largest ULONG: the C allocator may grant or refuse
        # it; either way the answer is a proper SCODE.
        code, block = self.mapi.allocate(0xFFFFFFFF)
        self.assertIn(code, (S_OK, MAPI_E_NOT_ENOUGH_MEMORY))
        self.assertEqual(block is None, code != S_OK)
        self.assertEqual(self.mapi.free(block), 0)


class ThreadsTest(unittest.TestCase):
    THREADS = 8

    def setUp(self):
        self.mapi = Mapi(load(LIBRARY_PATH))

    def run_threads(self, target, count):
        errors = []

        def guarded(index):
            try:
                target(index)
            except Exception as error:  # reported below, on the main thread
                errors.append("thread %d: %r" % (index, error))

        threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])

    def test_each_thread_builds_and_frees_its_own_trees(self):
        mapi = self.mapi

        def work(index):
            fill = 0x40 + index
            for _ in range(200):
                code, root = mapi.allocate(64)
                assert code == S_OK, code
                blocks = [(root, 64)]
                for i in range(20):
                    parent = blocks[-1][0] if i % 2 else root
                    code, child = mapi.more(24 + i, parent)
                    assert code == S_OK, code
                    blocks.append((child, 24 + i))
                for block, size in blocks:
                    ctypes.memset(block, fill, size)
                for block, size in blocks:
                    assert ctypes.string_at(block, size) == bytes([fill]) * size, "a block was overwritten"
                assert mapi.free(root) == 0

        self.run_threads(work, self.THREADS)

    def test_threads_add_children_to_one_root(self):
        mapi = self.mapi
        code, root = mapi.allocate(16)
        self.assertEqual(code, S_OK)
        children = [[] for _ in range(self.THREADS)]

        def work(index):
            for _ in range(500):
                code, child = mapi.more(8, root)
                assert code == S_OK, code
                children[index].append(child)

        self.run_threads(work, self.THREADS)
        everything = [child for mine in children for child in mine]
        self.assertEqual(len(everything), self.THREADS * 500)
        self.assertEqual(len(set(everything)), len(everything), "two threads got the same block")
        self.assertEqual(mapi.free(root), 0)

    def test_roots_freed_on_another_thread(self):
        mapi = self.mapi
        handoff = queue.Queue(maxsize=64)
        freed = []

        def producer(_):
            for _ in range(1000):
                code, root = mapi.allocate(48)
                assert code == S_OK, code
                assert mapi.more(16, root)[0] == S_OK
                handoff.put(root)
            handoff.put(None)

        def consumer(_):
            while True:
                root = handoff.get()
                if root is None:
                    return
                assert mapi.free(root) == 0
                freed.append(root)

        threads = [threading.Thread(target=producer, args=(0,)), threading.Thread(target=consumer, args=(1,))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(freed), 1000)


class ReadmeTest(unittest.TestCase):
    def test_readme_snippet_runs_as_written(self):
        with open(README, encoding="utf-8") as readme:
            text = readme.read()
        section = text.split("\n## Python\n", 1)
        self.assertEqual(len(section), 2, "README.md has no '## Python' section")
        match = re.search(r"```python\n(.*?)```", section[1], re.S)
        self.assertIsNotNone(match, "README.md's Python section has no python block")
        # The snippet loads libmapi32.so.1 by its SONAME, as after an install;
        # make links that name beside the library it built.
        env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(os.path.abspath(LIBRARY_PATH)))
        result = subprocess.run([sys.executable, "-c", match.group(1)], env=env, capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "b'hello'\n")


def main():
    global LIBRARY_PATH
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    LIBRARY_PATH = sys.argv[1]
    print("python-ctypes: testing %s" % os.path.abspath(LIBRARY_PATH))
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors)
    print("python-ctypes: %d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed or result.testsRun == 0 else 0)


if __name__ == "__main__":
    main()
