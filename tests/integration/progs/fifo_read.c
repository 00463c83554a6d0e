/* fifo_read: the target blocks in read() (through libc) on the FIFO named by argv[3]; the
 * test writes into it from another program (a shell built without frame pointers), so the
 * waker is a separate process the collector learns about only while tracing. The second
 * thread only idles. */
#include "common.h"
#include <fcntl.h>

static int fd;
static volatile long got;

NOINLINE static void read_message(void) {
    char c;
    if (read(fd, &c, 1) != 1) abort();
    got += c;
}
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) read_message(); }
static void *target(void *x) { THREAD_START(target, "t-fifo"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "idle-fifo"); return x; }
int main(int argc, char **argv) {
    setup(argc, argv);
    if (argc < 4 || (fd = open(argv[3], O_RDWR)) < 0) abort(); /* O_RDWR: no wait for a writer */
    return run_pair(target, waker);
}
