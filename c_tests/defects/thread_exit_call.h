/* thread_exit_call.h: see thread_exit_call.cpp. */
#ifndef MAPI32_THREAD_EXIT_CALL_H
#define MAPI32_THREAD_EXIT_CALL_H

#ifdef __cplusplus
extern "C" {
#endif

/* Makes `call` run on this thread's exit, from a C++ thread_local destructor
 * (registered through __cxa_thread_atexit_impl, as the library's own are). */
void call_at_cxx_thread_exit(void (*call)(void));

#ifdef __cplusplus
}
#endif

#endif
