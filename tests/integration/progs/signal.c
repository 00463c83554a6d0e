/* signal: the waker sends a real-time signal (they queue) to the target thread, which waits
 * in rt_sigtimedwait(). */
#include "common.h"
#include <signal.h>

static sigset_t set;
static pthread_t target_thread;

NOINLINE static void wait_signal(void) { if (SYS(SYS_rt_sigtimedwait, &set, 0, 0, 8) != SIGRTMIN) abort(); }
NOINLINE static void send_signal_to_target(void) { SYS(SYS_tgkill, getpid(), target_tid, SIGRTMIN); }
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_signal(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); send_signal_to_target(); }
}
static void *target(void *x) {
    target_thread = pthread_self();
    THREAD_START(target, "t-signal");
    target_loop();
    return x;
}
static void *waker(void *x) { THREAD_START(waker, "w-signal"); waker_loop(); return x; }
int main(int argc, char **argv) {
    setup(argc, argv);
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by both threads */
    return run_pair(target, waker);
}
