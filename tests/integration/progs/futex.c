/* condvar/futex: the waker signals a condition variable every PERIOD_MS. */
#include "common.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int posted, taken;

NOINLINE static void wait_cond(void) {
    pthread_mutex_lock(&mu);
    while (posted == taken) pthread_cond_wait(&cv, &mu);
    taken++;
    pthread_mutex_unlock(&mu);
}
NOINLINE static void signal_cond(void) {
    pthread_mutex_lock(&mu);
    posted++;
    pthread_mutex_unlock(&mu);
    pthread_cond_signal(&cv);
}
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_cond(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); signal_cond(); }
}
static void *target(void *x) { THREAD_START(target, "t-futex"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-futex"); waker_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); return run_pair(target, waker); }
