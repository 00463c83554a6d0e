/* TCP loopback data: the waker sends on a connected socket; the target blocks in recv(). */
#include "common.h"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int conn_t, conn_w;

NOINLINE static void wait_data(void) { char c; if (SYS(SYS_recvfrom, conn_t, &c, 1, 0, 0, 0) != 1) abort(); }
NOINLINE static void send_data(void) { if (SYS(SYS_sendto, conn_w, "x", 1, 0, 0, 0) != 1) abort(); }
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_data(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); send_data(); }
}
static void *target(void *x) { THREAD_START(target, "t-tcp"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-tcp"); waker_loop(); return x; }
int main(int argc, char **argv) {
    setup(argc, argv);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4) || getsockname(ls, (void *)&a, &len)) abort();
    conn_w = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(conn_w, (void *)&a, sizeof a)) abort();
    int one = 1;
    setsockopt(conn_w, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t = accept(ls, NULL, NULL);
    return run_pair(target, waker);
}
