# Regression tests for the issue "Nothing a real process does may abort, leak
# or deadlock libmapi32" (SPEC §3): one program per defect, and a sweep that
# fails any C-allocator request of the process. Included by the main
# Makefile. Each program failed on the library that had its defect (the
# per-thread registry of 2026-11) and passes since the fixes of 2026-12.
#
#   make defect-tests         the six defect programs; all run, then the step
#                             fails if any did
#   make fault-sweep-process  out of memory at every request of every caller,
#                             at thread start and exit, fork, the registry's
#                             growth and the client's blocks; with registry
#                             v3, which maps pages of its own, its page
#                             requests (the program tells which it has)
#
# Each test that could abort or hang runs in a forked child with a deadline.

TEST_STEPS += defect-tests fault-sweep-process

DEFECTS := $(BUILD)/defects
DEFECT_CFLAGS := -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) -Ic_tests
# The programs that load the library with dlopen() are not linked against
# it; they take its path from here.
DEFECT_DLOPEN := -DMAPI32_LIBRARY='"$(abspath $(BUILD_LIBDIR))/libmapi32.so"' -ldl
DEFECT_COMMON := c_tests/harness.h c_tests/defects/child.h include/mapix.h

# In the order of the issue's list: 1 to 6.
DEFECT_PROGRAMS := first_call_oom exit_path_leak fork_malloc_lock membarrier_refused fork_handler_calls dlclose_cycles

.PHONY: defect-tests fault-sweep-process

$(DEFECTS):
	mkdir -p $(DEFECTS)

# 1. Out of memory in the set-up of a thread's first call.
$(DEFECTS)/first_call_oom: c_tests/defects/first_call_oom.c c_tests/defects/failing_malloc.h $(DEFECT_COMMON) lib | $(DEFECTS)
	$(CC) $(DEFECT_CFLAGS) $< -o $@ $(MAPI_LIBS)

# 2. A thread whose first call comes from a thread-exit path.
$(DEFECTS)/thread_exit_call.o: c_tests/defects/thread_exit_call.cpp c_tests/defects/thread_exit_call.h | $(DEFECTS)
	$(CXX) -std=c++11 $(STRICT) $(CFLAGS) -c $< -o $@

$(DEFECTS)/exit_path_leak: c_tests/defects/exit_path_leak.c $(DEFECTS)/thread_exit_call.o $(DEFECT_COMMON) lib | $(DEFECTS)
	$(CC) $(DEFECT_CFLAGS) $< $(DEFECTS)/thread_exit_call.o -o $@ $(MAPI_LIBS) -lstdc++

# 3. fork() under a malloc whose fork handlers come after the library's.
$(DEFECTS)/fork_malloc_lock: c_tests/defects/fork_malloc_lock.c c_tests/defects/locking_malloc.h $(DEFECT_COMMON) lib | $(DEFECTS)
	$(CC) $(DEFECT_CFLAGS) $< -o $@ $(MAPI_LIBS)

# 4. membarrier refused by seccomp after the library loaded.
$(DEFECTS)/membarrier_refused: c_tests/defects/membarrier_refused.c $(DEFECT_COMMON) lib | $(DEFECTS)
	$(CC) $(DEFECT_CFLAGS) $< -o $@ $(MAPI_LIBS)

# 5. MAPI calls from fork handlers registered before the library's.
$(DEFECTS)/fork_handler_calls: c_tests/defects/fork_handler_calls.c c_tests/defects/load_mapi.h $(DEFECT_COMMON) lib | $(DEFECTS)
	$(CC) $(DEFECT_CFLAGS) $< -o $@ $(DEFECT_DLOPEN)

# 6. dlopen, use from threads, dlclose, again and again.
$(DEFECTS)/dlclose_cycles: c_tests/defects/dlclose_cycles.c c_tests/defects/load_mapi.h $(DEFECT_COMMON) lib | $(DEFECTS)
	$(CC) $(DEFECT_CFLAGS) $< -o $@ $(DEFECT_DLOPEN)

defect-tests: $(DEFECT_PROGRAMS:%=$(DEFECTS)/%)
	@failed=""; for program in $(DEFECT_PROGRAMS); do \
		echo "== $$program"; ./$(DEFECTS)/$$program || failed="$$failed $$program"; \
	done; \
	if [ -n "$$failed" ]; then echo "defect-tests: failed:$$failed" >&2; exit 1; fi; \
	echo "defect-tests: no abort, leak or deadlock in the six cases"

$(DEFECTS)/fault_sweep_process: c_tests/defects/fault_sweep_process.c c_tests/defects/failing_malloc.h $(DEFECT_COMMON) lib | $(DEFECTS)
	$(CC) $(DEFECT_CFLAGS) $< -o $@ $(MAPI_LIBS) -ldl

fault-sweep-process: $(DEFECTS)/fault_sweep_process
	./$(DEFECTS)/fault_sweep_process
