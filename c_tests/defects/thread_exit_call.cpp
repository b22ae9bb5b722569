/*
 * thread_exit_call.cpp: for exit_path_leak.c, a C++ thread_local whose
 * destructor makes a call while its thread exits, the way a C++ object with
 * thread storage (a per-thread cache, a logger) might free a MAPI buffer.
 */
#include "thread_exit_call.h"

namespace {

class CallAtThreadExit {
  public:
    void arm(void (*call)(void)) { call_ = call; }
    ~CallAtThreadExit()
    {
        if (call_ != nullptr)
            call_();
    }

  private:
    void (*call_)(void) = nullptr;
};

thread_local CallAtThreadExit at_thread_exit;

} // namespace

extern "C" void call_at_cxx_thread_exit(void (*call)(void))
{
    at_thread_exit.arm(call);
}
