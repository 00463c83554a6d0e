/* TCP accept and close: each iteration the waker connects (the target, blocked in accept(),
 * wakes), waits PERIOD_MS and closes (the target, blocked in recv(), wakes to EOF). */
#include "common.h"
#include <netinet/in.h>
#include <sys/socket.h>

static int ls;
static struct sockaddr_in addr;
static pthread_barrier_t step;

NOINLINE static int wait_accept(void) { int c = (int)SYS(SYS_accept, ls, 0, 0); if (c < 0) abort(); return c; }
NOINLINE static void wait_close(int c) { char b; if (SYS(SYS_recvfrom, c, &b, 1, 0, 0, 0) != 0) abort(); close(c); }
NOINLINE static void target_loop(void) {
    for (int i = 0; i < ITERS; i++) {
        int c = wait_accept();
        pthread_barrier_wait(&step);
        wait_close(c);
    }
}
NOINLINE static int do_connect(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (SYS(SYS_connect, s, &addr, sizeof addr)) abort();
    return s;
}
NOINLINE static void do_close(int s) { SYS(SYS_close, s); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) {
        sleep_ms(PERIOD_MS);
        int s = do_connect();
        pthread_barrier_wait(&step);
        sleep_ms(PERIOD_MS);
        do_close(s);
    }
}
static void *target(void *x) { THREAD_START(target, "t-accept"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-accept"); waker_loop(); return x; }
int main(int argc, char **argv) {
    setup(argc, argv);
    pthread_barrier_init(&step, NULL, 2);
    ls = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(ls, (void *)&addr, sizeof addr) || listen(ls, 16) || getsockname(ls, (void *)&addr, &len)) abort();
    return run_pair(target, waker);
}
