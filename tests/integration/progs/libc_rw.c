/* libc_rw: read() and write() through libc, whose wrappers set up no frame pointer. The
 * waker write()s a byte into a pipe every PERIOD_MS from send_message(); the target blocks in
 * read() from read_message(). A frame-pointer walk that starts inside the wrappers skips
 * read_message and send_message: the collector must recover them (tests/integration/
 * test_collector_stacks.py). Also built without frame pointers at all, as a distribution
 * binary is, to check that such a program is unwound whole. */
#include "common.h"

static int fds[2];
static volatile long got;

NOINLINE static void read_message(void) {
    char c;
    if (read(fds[0], &c, 1) != 1) abort();
    got += c; /* work after the call: no tail call */
}
NOINLINE static void send_message(void) {
    if (write(fds[1], "x", 1) != 1) abort();
    got -= 1;
}
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) read_message(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); send_message(); }
}
static void *target(void *x) { THREAD_START(target, "t-libc-rw"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-libc-rw"); waker_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); if (pipe(fds)) abort(); return run_pair(target, waker); }
