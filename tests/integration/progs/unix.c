/* unix socket: the waker sends on a stream socketpair; the target blocks in recv(). */
#include "common.h"
#include <sys/socket.h>

static int sv[2];

NOINLINE static void wait_msg(void) { char c; if (SYS(SYS_recvfrom, sv[0], &c, 1, 0, 0, 0) != 1) abort(); }
NOINLINE static void send_msg(void) { if (SYS(SYS_sendto, sv[1], "x", 1, 0, 0, 0) != 1) abort(); }
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_msg(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); send_msg(); }
}
static void *target(void *x) { THREAD_START(target, "t-unix"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-unix"); waker_loop(); return x; }
int main(int argc, char **argv) {
    setup(argc, argv);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) abort();
    return run_pair(target, waker);
}
