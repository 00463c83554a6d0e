/* eventfd: the waker writes an eventfd every PERIOD_MS; the target blocks in read(). */
#include "common.h"
#include <stdint.h>
#include <sys/eventfd.h>

static int efd;

NOINLINE static void wait_event(void) { uint64_t v; if (SYS(SYS_read, efd, &v, 8) != 8) abort(); }
NOINLINE static void post_event(void) { uint64_t v = 1; if (SYS(SYS_write, efd, &v, 8) != 8) abort(); }
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_event(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); post_event(); }
}
static void *target(void *x) { THREAD_START(target, "t-eventfd"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-eventfd"); waker_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); efd = eventfd(0, 0); return run_pair(target, waker); }
