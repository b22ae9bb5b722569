# What the library's own pages change, tested as steps of make test:
#
#   tools-test        valgrind (memcheck) and ASan, against the shipped
#                     library, each catch a write past a root and past a
#                     child (of the thread's own tree, of another thread's,
#                     a guest child) and a read of a freed root and child
#                     (freed by the owner, or by another thread), and find
#                     nothing in a clean run (c_tests/tools/run.sh; SPEC §3,
#                     src/region/track.rs)
#   thread-life-test  a heap's life: thread exit, adoption, fork, the leaks
#                     report (c_tests/thread_life.c), and dlclose under
#                     MAPI32_DEBUG=leaks (the report walks only heaps still
#                     mapped after the unloading)

TEST_STEPS += tools-test thread-life-test

.PHONY: tools-test thread-life-test

# misuse.c, plainly for valgrind and with ASan, against $(BUILD)'s library.
$(BUILD)/tools-misuse: c_tests/tools/misuse.c include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

$(BUILD)/tools-misuse-asan: c_tests/tools/misuse.c include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) -O1 -g -fno-omit-frame-pointer -fsanitize=address -pthread $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

tools-test: $(BUILD)/tools-misuse $(BUILD)/tools-misuse-asan
	VALGRIND='$(VALGRIND)' sh c_tests/tools/run.sh $(BUILD)/tools-misuse $(BUILD)/tools-misuse-asan

$(BUILD)/thread_life: c_tests/thread_life.c c_tests/harness.h include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) -Ic_tests $< -o $@ $(MAPI_LIBS)

thread-life-test: $(BUILD)/thread_life $(DEFECTS)/dlclose_cycles
	./$(BUILD)/thread_life
	MAPI32_DEBUG=leaks ./$(DEFECTS)/dlclose_cycles
