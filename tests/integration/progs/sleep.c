/* Timers: the target sleeps in nanosleep() PERIOD_MS at a time (thread "t-sleep"), and the
 * "waker" thread waits in epoll_wait() with a PERIOD_MS timeout on an empty set ("t-epoll").
 * Both are woken by the kernel's timer, not by a task. */
#include "common.h"
#include <sys/epoll.h>

static int ep;

NOINLINE static void do_sleep(void) { sleep_ms(PERIOD_MS); }
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) do_sleep(); }
NOINLINE static void wait_epoll(void) { struct epoll_event ev; if (SYS(SYS_epoll_wait, ep, &ev, 1, PERIOD_MS) != 0) abort(); }
NOINLINE static void epoll_loop(void) { for (int i = 0; i < ITERS; i++) wait_epoll(); }
static void *target(void *x) { THREAD_START(target, "t-sleep"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "t-epoll"); epoll_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); ep = epoll_create1(0); return run_pair(target, waker); }
