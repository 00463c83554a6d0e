/* UDP: the waker sends a datagram every PERIOD_MS; the target blocks in recvfrom(). */
#include "common.h"
#include <netinet/in.h>
#include <sys/socket.h>

static int rs, ss;
static struct sockaddr_in addr;

NOINLINE static void wait_datagram(void) { char b[8]; if (SYS(SYS_recvfrom, rs, b, sizeof b, 0, 0, 0) != 1) abort(); }
NOINLINE static void send_datagram(void) { if (SYS(SYS_sendto, ss, "x", 1, 0, &addr, sizeof addr) != 1) abort(); }
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_datagram(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); send_datagram(); }
}
static void *target(void *x) { THREAD_START(target, "t-udp"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-udp"); waker_loop(); return x; }
int main(int argc, char **argv) {
    setup(argc, argv);
    rs = socket(AF_INET, SOCK_DGRAM, 0);
    ss = socket(AF_INET, SOCK_DGRAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(rs, (void *)&addr, sizeof addr) || getsockname(rs, (void *)&addr, &len)) abort();
    return run_pair(target, waker);
}
