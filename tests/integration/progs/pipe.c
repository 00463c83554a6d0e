/* pipe: the waker writes a byte every PERIOD_MS; the target blocks in read(). */
#include "common.h"

static int fds[2];

NOINLINE static void wait_byte(void) { char c; if (SYS(SYS_read, fds[0], &c, 1) != 1) abort(); }
NOINLINE static void send_byte(void) { if (SYS(SYS_write, fds[1], "x", 1) != 1) abort(); }
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_byte(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); send_byte(); }
}
static void *target(void *x) { THREAD_START(target, "t-pipe"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-pipe"); waker_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); if (pipe(fds)) abort(); return run_pair(target, waker); }
