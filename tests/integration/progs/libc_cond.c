/* libc_cond: a condition variable. The target waits in pthread_cond_wait() from
 * wait_for_signal(); the waker sets the flag and calls pthread_cond_signal() from
 * send_signal() every PERIOD_MS (after unlocking, so the wake is the signal's, not the
 * mutex's). Both libc paths reach the futex system call through functions without frame
 * pointers: the collector must show wait_for_signal and send_signal right above them. */
#include "common.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int posted;

NOINLINE static void wait_for_signal(void) {
    pthread_mutex_lock(&lock);
    while (!posted) pthread_cond_wait(&cond, &lock);
    posted = 0;
    pthread_mutex_unlock(&lock);
}
NOINLINE static void send_signal(void) {
    pthread_mutex_lock(&lock);
    posted = 1;
    pthread_mutex_unlock(&lock);
    pthread_cond_signal(&cond);
    __asm__ volatile("" ::: "memory"); /* no tail call */
}
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) wait_for_signal(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); send_signal(); }
}
static void *target(void *x) { THREAD_START(target, "t-libc-cond"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-libc-cond"); waker_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); return run_pair(target, waker); }
