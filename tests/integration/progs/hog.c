/* Preemption: the target spins on CPU 0 in slices, and a CPU hog thread pinned to the same
 * CPU takes it away; the target is switched out while runnable, with the hog as preemptor.
 * Runs for ITERS * PERIOD_MS milliseconds. */
#include "common.h"

static volatile int stop;
static volatile unsigned long sink;

NOINLINE static void burn(void) { for (int i = 0; i < 100000; i++) sink += i; }
NOINLINE static void target_loop(void) { while (!stop) burn(); }
NOINLINE static void hog_loop(void) { while (!stop) burn(); }
static void *target(void *x) { pin_cpu(0); THREAD_START(target, "t-spin"); target_loop(); return x; }
static void *waker(void *x) { pin_cpu(0); THREAD_START(waker, "hog"); hog_loop(); return x; }
static void *timer(void *x) { sleep_ms(ITERS * PERIOD_MS); stop = 1; return x; }
int main(int argc, char **argv) {
    setup(argc, argv);
    pthread_t t, w, k;
    pthread_barrier_init(&start_barrier, NULL, 3);
    pthread_create(&t, NULL, target, NULL);
    pthread_create(&w, NULL, waker, NULL);
    report_and_go();
    pthread_create(&k, NULL, timer, NULL);
    pthread_join(t, NULL);
    pthread_join(w, NULL);
    pthread_join(k, NULL);
    finish();
    return 0;
}
