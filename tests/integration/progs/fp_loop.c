/* fp_loop: broken frame-pointer chains, as code that uses rbp for data leaves them. The
 * target blocks in read() (a raw syscall) with rbp pointing at a frame record that points at
 * itself; the waker write()s with rbp pointing at a chain that moves up the stack but
 * repeats a return address. A walker that follows such chains blindly records the same
 * address dozens of times; the collector must stop and mark the stack instead. */
#include "common.h"

static int fds[2];

NOINLINE void loop_marker(void) { __asm__ volatile("nop; nop; nop; nop"); }
NOINLINE void chain_marker(void) { __asm__ volatile("nop; nop; nop; nop"); }
NOINLINE void other_marker(void) { __asm__ volatile("nop; nop; nop; nop"); }
NOINLINE static void keep(volatile unsigned long *p) { __asm__ volatile("" ::"r"(p) : "memory"); }

/* A raw system call with rbp set to `fp` (saved in r12: nothing touches the stack). */
#define SYSCALL_WITH_RBP(ret, nr, a1, a2, a3, fp)                                          \
    __asm__ volatile("mov %%rbp, %%r12\n\tmov %[f], %%rbp\n\tsyscall\n\tmov %%r12, %%rbp" \
                     : "=a"(ret)                                                           \
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), [f] "r"(fp)                     \
                     : "rcx", "r11", "r12", "memory")

NOINLINE static void read_in_loop(void) {
    volatile unsigned long rec[2];
    keep(rec); /* not a leaf: rec lies above the stack pointer, as real frames do */
    rec[0] = (unsigned long)&rec[0]; /* the next frame is this one again */
    rec[1] = (unsigned long)loop_marker + 1;
    char c;
    long ret;
    SYSCALL_WITH_RBP(ret, SYS_read, fds[0], &c, 1, &rec[0]);
    if (ret != 1) abort();
}
NOINLINE static void write_in_chain(void) {
    volatile unsigned long rec[6];
    keep(rec);
    rec[0] = (unsigned long)&rec[2]; /* moves up the stack... */
    rec[1] = (unsigned long)chain_marker + 1;
    rec[2] = (unsigned long)&rec[4];
    rec[3] = (unsigned long)chain_marker + 1; /* ...but returns to the same place again */
    rec[4] = 0;
    rec[5] = (unsigned long)other_marker + 1;
    long ret;
    SYSCALL_WITH_RBP(ret, SYS_write, fds[1], "x", 1, &rec[0]);
    if (ret != 1) abort();
}
NOINLINE static void target_loop(void) { for (int i = 0; i < ITERS; i++) read_in_loop(); }
NOINLINE static void waker_loop(void) {
    for (int i = 0; i < ITERS; i++) { sleep_ms(PERIOD_MS); write_in_chain(); }
}
static void *target(void *x) { THREAD_START(target, "t-fp-loop"); target_loop(); return x; }
static void *waker(void *x) { THREAD_START(waker, "w-fp-loop"); waker_loop(); return x; }
int main(int argc, char **argv) { setup(argc, argv); if (pipe(fds)) abort(); return run_pair(target, waker); }
