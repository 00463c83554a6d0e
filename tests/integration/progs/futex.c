/* futex: the waker bumps a word and FUTEX_WAKEs it every PERIOD_MS (what a condition variable
 * or a contended mutex does underneath); the target FUTEX_WAITs for the word to change. */
#include "common.h"
#include <linux/futex.h>

static volatile int word;

NOINLINE static void wait_futex(int seen) {
    while (word == seen) SYS(SYS_futex, &word, FUTEX_WAIT_PRIVATE, seen, 0, 0, 0);
}
NOINLINE static void wake_futex(void) {
    __sync_fetch_and_add(&word, 1);
    SYS(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
}
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_futex(i); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); wake_futex(); }
}
static void *target(void *x) { THREAD_START(target, "t-futex"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-futex"); waker_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); return run_pair(target, waker); }
