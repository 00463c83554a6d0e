/* Shared by the collector's integration test programs.
 *
 * Every program: names its threads, prints one JSON line with its tids, waits for "go" on
 * stdin (so the tracer is attached first), runs its wake pattern ITERS times with a PERIOD_MS
 * gap, prints {"done":...}, then waits for stdin to close and exits.
 * System calls go through sys6() below, not libc: glibc is built without frame pointers,
 * and a frame-pointer unwinder that starts inside a libc wrapper loses the wrapper's callers.
 * From sys6() the whole chain is ours, so the tests can look for our function names.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

/* A raw x86-64 system call in a function with a frame. */
NOINLINE __attribute__((unused)) static long sys6(long n, long a1, long a2, long a3, long a4,
                                                  long a5, long a6) {
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    if (ret < 0 && ret > -4096) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}
#define SYS(n, ...) sys6_args(n, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define sys6_args(n, a, b, c, d, e, f, ...) \
    sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

static int ITERS = 20;
static int PERIOD_MS = 20;

static int tid(void) { return (int)syscall(SYS_gettid); }

static void name_thread(const char *name) { pthread_setname_np(pthread_self(), name); }

NOINLINE static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (SYS(SYS_nanosleep, &ts, &ts) != 0 && errno == EINTR) {
    }
}

__attribute__((unused)) static void pin_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static void setup(int argc, char **argv) {
    if (argc > 1) ITERS = atoi(argv[1]);
    if (argc > 2) PERIOD_MS = atoi(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

static void wait_go(void) {
    char line[64];
    if (!fgets(line, sizeof line, stdin)) exit(1);
}

static void wait_eof(void) {
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
    }
}

/* a barrier the two threads of a program use to start together after "go" */
static pthread_barrier_t start_barrier;
static volatile int target_tid, waker_tid;

static void report_and_go(void) {
    pthread_barrier_wait(&start_barrier); /* both tids known */
    printf("{\"pid\": %d, \"target_tid\": %d, \"waker_tid\": %d, \"iters\": %d, "
           "\"period_ms\": %d}\n", getpid(), target_tid, waker_tid, ITERS, PERIOD_MS);
    wait_go();
    pthread_barrier_wait(&start_barrier);
}

static void finish(void) {
    printf("{\"done\": true}\n");
    wait_eof();
}

/* Runs target() and waker() as two named threads; the main thread talks to the test. */
__attribute__((unused)) static int run_pair(void *(*target)(void *), void *(*waker)(void *)) {
    pthread_t t, w;
    pthread_barrier_init(&start_barrier, NULL, 3);
    pthread_create(&t, NULL, target, NULL);
    pthread_create(&w, NULL, waker, NULL);
    report_and_go();
    pthread_join(t, NULL);
    pthread_join(w, NULL);
    finish();
    return 0;
}

#define THREAD_START(role, name)       \
    do {                               \
        name_thread(name);             \
        role##_tid = tid();            \
        pthread_barrier_wait(&start_barrier); \
        pthread_barrier_wait(&start_barrier); \
    } while (0)
