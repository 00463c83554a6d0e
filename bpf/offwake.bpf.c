// kubectl-offwake: why were the target's threads off the CPU, and who woke them?
//
// BCC C, scheduler tracepoints only (DESIGN.md section 4). The program reads nothing but
// tracepoint fields and helpers, never a kernel struct, so any reasonably recent set of
// kernel headers compiles it (that is what makes nodes without matching headers work).
//
// Life of one off-CPU interval of a target thread T:
//   sched_switch (T out)  -> start[T] = {time, state, T's kernel+user stacks, preemptor}
//   sched_waking (of T)   -> waker tid/tgid/comm, the waker's stacks, wake time into start[T]
//   sched_switch (T in)   -> blocked = wake - out, runq = in - wake; add to agg[key]; drop start[T]
// The target filter (tgid bit in `tgidbits`) runs before any stack is walked, and stacks are walked
// only where they say something: T's at its switch-out, the waker's only for a wake that
// actually ends a blocked interval (not for no-op wakes of a runnable or already woken thread,
// not for sleeps shorter than MIN_BLOCK_NS).
//
// At the switch-in, sched_switch's prev_* fields also name the task that ran on that CPU
// last, before T got it back: while T waited in the run queue, that task held the CPU
// (`queued`, below). And each switch-out adds T's run to its busy period, the CPU time it has
// used since it last blocked (preemptions do not end it), kept in start[T].
//
// Compile-time knobs (cflags): MIN_BLOCK_NS, STACK_STORAGE_SIZE, AGG_SIZE, START_SIZE,
// TARGETS_SIZE, ONCPU_SIZE, QUEUED_SIZE, KSTACK_DEPTH, USTACK_DEPTH, MMAP_MIN_ADDR, NO_KCACHE,
// NO_UCACHE.

#ifndef MIN_BLOCK_NS
#define MIN_BLOCK_NS 1000ULL
#endif
#ifndef STACK_STORAGE_SIZE
#define STACK_STORAGE_SIZE 16384
#endif
#ifndef STACK_OVERFLOW_SIZE
#define STACK_OVERFLOW_SIZE (STACK_STORAGE_SIZE / 4)
#endif
#ifndef AGG_SIZE
#define AGG_SIZE 16384
#endif
#ifndef START_SIZE
#define START_SIZE 16384
#endif
#ifndef TARGETS_SIZE
#define TARGETS_SIZE 256
#endif
#ifndef ONCPU_SIZE
#define ONCPU_SIZE 4096
#endif
#ifndef QUEUED_SIZE
#define QUEUED_SIZE 4096
#endif
#ifndef KCACHE_SIZE
#define KCACHE_SIZE 8192
#endif
#ifndef KCACHE_VERIFY_MASK
#define KCACHE_VERIFY_MASK 15  // re-walk one use in 16 to catch a changed kernel path
#endif
#ifndef PSTACK_DEPTH
#define PSTACK_DEPTH 8  // kernel frames kept for a preemption
#endif
#ifndef USTACK_DEPTH
#define USTACK_DEPTH 64
#endif
#ifndef KSTACK_DEPTH
#define KSTACK_DEPTH 127
#endif

#ifdef FAST_STACK_CMP
#define STACK_FLAGS BPF_F_FAST_STACK_CMP
#else
#define STACK_FLAGS 0
#endif

#define COMM_LEN 16
#define HIST_SLOTS 32

// prev_state as the tracepoint reports it: the low byte holds S/D/T/t/X/Z/P/I bits; zero means
// the task was runnable when it left the CPU (preempted or yielded). X (0x10) and Z (0x20) mark
// a task's last switch-out on its way out of the system.
#define STATE_MASK 0xffUL
#define STATE_EXITING 0x30UL

#define ST_BLOCKED 0
#define ST_PREEMPTED 1

// Counter slots (a per-CPU array; user space sums the CPUs). Keep in sync with
// kubectl_offwake/collector/bpfprog.py COUNTERS.
#define C_SWITCH_OUT 0      // target switch-outs seen
#define C_WAKEUP 1          // wakes that ended a blocked interval (waker stacks walked)
#define C_NOOP_WAKE 2       // wakes of a target thread that was not blocked (no stacks walked)
#define C_SHORT 3           // intervals shorter than MIN_BLOCK_NS (not aggregated)
#define C_STACK_EEXIST 4    // stack id lost to a hash collision in the stack map
#define C_STACK_ENOMEM 5    // stack id lost because the stack map is full
#define C_AGG_FULL 6        // aggregation entry lost: agg map full
#define C_START_FULL 7      // switch-out not recorded: start map full
#define C_ONCPU_FULL 8      // on-CPU entry lost: oncpu map full
#define C_SWITCH_IN 9       // completed intervals (target switch-ins matched)
#define C_KCACHE_HIT 10     // kernel stack taken from the cache, no walk
#define C_KCACHE_MISMATCH 11  // a verifying walk found another kernel stack than cached
#define C_KWALK 12          // kernel stacks walked
#define C_STACK_OVERFLOW 13  // stack stored in the overflow map after a collision
#define C_WSTACK_EEXIST 14  // waker user stack lost to a collision (counted apart: mostly
                            // bystanders of interrupts)
#define C_WSTACK_ENOMEM 15  // waker user stack lost: map full
#define C_UCACHE_HIT 16     // user stack taken from the cache, no walk
#define C_UCACHE_MISMATCH 17  // -DUCACHE_VERIFY only: a hit the kernel's walk disagreed with
#define C_QUEUED_FULL 18    // run-queue wait not attributed: queued map full
#define N_COUNTERS 19

// A stack map drops a stack whose hash bucket holds another stack (-EEXIST); with a few
// hundred distinct stacks in 16384 buckets that already happens now and then. Such a stack
// goes to a small overflow map instead (its id marked with OVERFLOW_BIT), so a stack is lost
// only when it collides twice.
#define OVERFLOW_BIT 0x40000000
#define PREEMPT_BIT 0x20000000  // id of a shallow preemption kernel stack (pstacks map)

struct start_t {
    u64 off_ts;
    u64 wake_ts;
    u32 tgid;
    u32 state;
    s32 kstack;
    s32 ustack;
    u32 waker_tid;
    u32 waker_tgid;
    s32 waker_kstack;
    s32 waker_ustack;
    u32 preempt_pid;
    u32 short_wake;  // woken sooner than MIN_BLOCK_NS: not described, not aggregated
    u64 busy_ns;     // CPU time since the thread last blocked (its current busy period)
    char comm[COMM_LEN];
    char waker_comm[COMM_LEN];
    char preempt_comm[COMM_LEN];
};

struct key_t {
    u32 tid;
    u32 tgid;
    u32 state;
    u32 waker_tid;
    u32 waker_tgid;
    u32 preempt_pid;
    s32 kstack;
    s32 ustack;
    s32 waker_kstack;
    s32 waker_ustack;
    char comm[COMM_LEN];
    char waker_comm[COMM_LEN];
    char preempt_comm[COMM_LEN];
};

struct val_t {
    u64 count;
    u64 total_ns;
    u64 max_ns;
    u64 blocked_ns;
    u64 runq_ns;
};

struct running_t {
    u64 ts;
    u32 tid;
    u32 tgid;
};

struct oncpu_t {
    u32 tgid;
    u32 pad;
    u64 count;
    u64 total_ns;
    u64 max_ns;
    char comm[COMM_LEN];
    u64 hist[HIST_SLOTS];
    u64 max_busy_ns;  // the longest busy period that ended (or went on) in this snapshot
};

// A target thread's wait in the run queue (the run-queue part of a wake, or a whole
// preemption), keyed by who held the CPU: the task sched_switch names as prev when the
// target got the CPU back, i.e. the one that ran last before it (0/"" when the CPU was idle).
struct qkey_t {
    u32 tid;
    u32 tgid;
    u32 holder_tid;
    u32 holder_tgid;
    char comm[COMM_LEN];
    char holder_comm[COMM_LEN];
};

struct qval_t {
    u64 count;
    u64 wait_ns;
    u64 max_ns;
};

// Kernel stack cache. A kernel stack walk is the dominant cost per event (DESIGN.md section 4);
// user stacks are cheaper. The kernel path that led to a blocking switch-out, or to a wake
// made from a system call, is almost always the same for the same user stack, so the
// kernel stack id is cached by the user stack id (kind 0: a target blocking; kind 1: a waker,
// per target thread) and re-walked once every KCACHE_VERIFY_MASK+1 uses; a verifying walk
// that disagrees replaces the entry and is counted. Preempted switch-outs and wakers without
// a user stack (kernel threads, idle: interrupt context) are always walked. -DNO_KCACHE
// (collector flag --exact-stacks) walks every time.
struct kc_key_t {
    u32 tgid;
    u32 tid;
    s32 ustack;
    u32 kind;
};

struct kc_val_t {
    s32 kstack;
    u32 uses;
};

struct kstack_t {
    u64 ip[KSTACK_DEPTH];
};

struct pstack_t {
    u64 ip[PSTACK_DEPTH];
};

struct ustack_t {
    u64 ip[USTACK_DEPTH];
};

// The target tgids as user space records them (and the --max-targets cap); the probes test
// the tgidbits bitmap below instead.
BPF_HASH(targets, u32, u8, TARGETS_SIZE);
BPF_HASH(start, u32, struct start_t, START_SIZE);
BPF_HASH(agg, struct key_t, struct val_t, AGG_SIZE);
BPF_HASH(oncpu, u32, struct oncpu_t, ONCPU_SIZE);
BPF_HASH(queued, struct qkey_t, struct qval_t, QUEUED_SIZE);
BPF_PERCPU_ARRAY(running, struct running_t, 1);
BPF_ARRAY(oncpu_zero, struct oncpu_t, 1);
BPF_PERCPU_ARRAY(counters, u64, N_COUNTERS);
// LRU: wakes in interrupt context key the cache by whatever user stack the interrupted task
// had, which rarely repeats; such entries must age out instead of filling the cache.
BPF_TABLE("lru_hash", struct kc_key_t, struct kc_val_t, kcache, KCACHE_SIZE);
BPF_TABLE("stacktrace", int, struct kstack_t, kstacks, STACK_STORAGE_SIZE);
// Target and waker user stacks live in separate maps: a waker caught by an interrupt brings
// the user stack of whatever it was running, rarely seen twice, and those must not collide
// with (and so drop) the target's stacks.
BPF_TABLE("stacktrace", int, struct ustack_t, ustacks, STACK_STORAGE_SIZE);
BPF_TABLE("stacktrace", int, struct ustack_t, wustacks, STACK_STORAGE_SIZE);
BPF_TABLE("stacktrace", int, struct kstack_t, kstacks2, STACK_OVERFLOW_SIZE);
BPF_TABLE("stacktrace", int, struct pstack_t, pstacks, STACK_STORAGE_SIZE);
BPF_TABLE("stacktrace", int, struct ustack_t, ustacks2, STACK_OVERFLOW_SIZE);
BPF_TABLE("stacktrace", int, struct ustack_t, wustacks2, STACK_OVERFLOW_SIZE);
// The filters every sched_switch and sched_waking runs: one bit per pid, in arrays (whose
// lookups the verifier inlines) rather than hash maps, so that untraced processes pay as
// little as the tracepoints allow. tgidbits: target tgids (written by user space, which keeps
// the `targets` hash as its record and for the --max-targets cap). pendbits: threads with an
// open off-CPU interval in `start` (switched out, not yet back), set and cleared here.
// Bits are flipped with atomic adds of +/-bit, each by the one path that owns that thread's
// state, so threads sharing a word never lose each other's bits.
#define PID_WORDS 65536  // PID_MAX_LIMIT (4M) / 64
BPF_ARRAY(tgidbits, u64, PID_WORDS);
BPF_ARRAY(pendbits, u64, PID_WORDS);

static __always_inline int bit_of(u64 *p, u32 id)
{
    return p && ((*p >> (id & 63)) & 1);
}

static __always_inline int is_target(u32 tgid)
{
    u32 w = tgid >> 6;
    return bit_of(tgidbits.lookup(&w), tgid);
}

static __always_inline int is_pending(u32 tid)
{
    u32 w = tid >> 6;
    return bit_of(pendbits.lookup(&w), tid);
}

static __always_inline void set_pending(u32 tid, int on)
{
    u32 w = tid >> 6;
    u64 *p = pendbits.lookup(&w);
    if (!p)
        return;
    u64 bit = 1ULL << (tid & 63);
    int cur = (*p & bit) != 0;
    if (on && !cur)
        __sync_fetch_and_add(p, bit);
    else if (!on && cur)
        __sync_fetch_and_add(p, -bit);
}

static __always_inline void count(int slot)
{
    u64 *c = counters.lookup(&slot);
    if (c)
        (*c)++;
}

static __always_inline s32 note_stack(s32 id)
{
    if (id == -17)  // -EEXIST
        count(C_STACK_EEXIST);
    else if (id == -12)  // -ENOMEM
        count(C_STACK_ENOMEM);
    return id;
}

static __always_inline s32 walk_kstack(void *ctx)
{
    count(C_KWALK);
    s32 id = kstacks.get_stackid(ctx, STACK_FLAGS);
    if (id == -17) {
        count(C_STACK_OVERFLOW);
        id = kstacks2.get_stackid(ctx, STACK_FLAGS);
        if (id >= 0)
            id |= OVERFLOW_BIT;
    }
    return note_stack(id);
}

static __always_inline s32 walk_pstack(void *ctx)
{
    count(C_KWALK);
    s32 id = pstacks.get_stackid(ctx, STACK_FLAGS);
    if (id >= 0)
        id |= PREEMPT_BIT;
    return note_stack(id);
}

// User stack cache. A user stack walk by the kernel costs ~0.6 us here, nearly all of it in
// the page fault it takes reading past the last frame (the frame-pointer chain ends in 0).
// So the program reads the frame-pointer chain itself (user regs of the current task, then
// one 16-byte read per frame, stopping without a read at a frame pointer below
// vm.mmap_min_addr, which the kernel's read would fault on), and uses the resulting
// addresses as the key of a cache of stack ids. That key is everything the kernel's walk
// (arch/x86 perf_callchain_user: regs->ip, then return addresses along regs->bp) depends on,
// so equal keys mean the kernel would record the same stack: a hit is exact, not sampled.
// Stack ids are never reused (user space never deletes stacks). Not keyed (walked as
// before): stacks deeper than UCACHE_DEPTH, tasks not in 64-bit user mode (kernel threads,
// compat tasks). Off with -DNO_KCACHE (--exact-stacks); -DUCACHE_VERIFY walks on every hit
// too and counts disagreements (ustack_cache_mismatches in the end record). x86-64 only, and
// it needs bpf_task_pt_regs (Linux 5.15) and kernel BTF: the collector builds with -DNO_UCACHE
// elsewhere, and retries with it when the load fails.
#if !defined(NO_KCACHE) && !defined(NO_UCACHE)
#ifndef UCACHE_DEPTH
#define UCACHE_DEPTH 16
#endif
#ifndef UCACHE_SIZE
#define UCACHE_SIZE 8192
#endif
#ifndef MMAP_MIN_ADDR
#define MMAP_MIN_ADDR 4096
#endif
struct ukey_t {
    u32 kind;
    u32 n;
    u64 ip[UCACHE_DEPTH];
};
BPF_TABLE("lru_hash", struct ukey_t, s32, ucache, UCACHE_SIZE);
BPF_PERCPU_ARRAY(ukey_scratch, struct ukey_t, 1);  // too big for the BPF stack

// 0: key built; -1: this stack cannot be keyed (walk it).
static __always_inline int user_key(struct ukey_t *k, u32 kind)
{
    struct task_struct *task = bpf_get_current_task_btf();
    u64 regs = (u64)bpf_task_pt_regs(task);
    u64 bp = 0, ipcsfl[3] = {};
    if (!regs)
        return -1;
    // x86-64 struct pt_regs (a fixed layout): bp at 32; ip, cs, flags at 128.
    if (bpf_probe_read_kernel(&bp, 8, (void *)(regs + 32)) ||
        bpf_probe_read_kernel(&ipcsfl, 24, (void *)(regs + 128)))
        return -1;
    if (ipcsfl[1] != 0x33 || (ipcsfl[2] & (1UL << 17)))
        return -1;  // not __USER_CS, or vm86: kernel thread (zeroed regs), compat task
    k->kind = kind;
    k->ip[0] = ipcsfl[0];
    u32 n = 1;
    int done = 0;
#pragma unroll
    for (int i = 1; i < UCACHE_DEPTH; i++) {
        if (!done) {
            u64 fr[2];
            if (bp < MMAP_MIN_ADDR || bpf_probe_read_user(&fr, 16, (void *)bp)) {
                done = 1;
            } else {
                k->ip[i] = fr[1];
                bp = fr[0];
                n++;
                continue;
            }
        }
        k->ip[i] = 0;
    }
    if (!done)
        return -1;  // deeper than the key: walk it
    k->n = n;
    return 0;
}
#endif

static __always_inline s32 walk_ustack(void *ctx)
{
    s32 id = ustacks.get_stackid(ctx, BPF_F_USER_STACK | STACK_FLAGS);
    if (id == -17) {
        count(C_STACK_OVERFLOW);
        id = ustacks2.get_stackid(ctx, BPF_F_USER_STACK | STACK_FLAGS);
        if (id >= 0)
            id |= OVERFLOW_BIT;
    }
    return note_stack(id);
}

static __always_inline s32 walk_waker_ustack(void *ctx)
{
    s32 id = wustacks.get_stackid(ctx, BPF_F_USER_STACK | STACK_FLAGS);
    if (id == -17) {
        count(C_STACK_OVERFLOW);
        id = wustacks2.get_stackid(ctx, BPF_F_USER_STACK | STACK_FLAGS);
        if (id >= 0)
            id |= OVERFLOW_BIT;
    }
    if (id == -17)
        count(C_WSTACK_EEXIST);
    else if (id == -12)
        count(C_WSTACK_ENOMEM);
    return id;
}

// kind 0: a target's own stack (ustacks maps); kind 1: a waker's (wustacks maps).
static __always_inline s32 ustack_cached(void *ctx, u32 kind)
{
#if !defined(NO_KCACHE) && !defined(NO_UCACHE)
    u32 zero = 0;
    struct ukey_t *k = ukey_scratch.lookup(&zero);
    if (k && user_key(k, kind) == 0) {
        s32 *hit = ucache.lookup(k);
        if (hit) {
            count(C_UCACHE_HIT);
#ifdef UCACHE_VERIFY
            // A check of the claim above (tests, experiments): walk anyway and compare.
            s32 real = kind ? walk_waker_ustack(ctx) : walk_ustack(ctx);
            if (real != *hit)
                count(C_UCACHE_MISMATCH);
            return real;
#endif
            return *hit;
        }
        s32 id = kind ? walk_waker_ustack(ctx) : walk_ustack(ctx);
        if (id >= 0)
            ucache.update(k, &id);
        return id;
    }
#endif
    return kind ? walk_waker_ustack(ctx) : walk_ustack(ctx);
}

static __always_inline s32 kstack_cached(void *ctx, u32 kind, u32 tgid, u32 tid, s32 ustack)
{
#ifndef NO_KCACHE
    if (ustack >= 0) {
        struct kc_key_t k = {};
        k.tgid = tgid;
        k.tid = tid;
        k.ustack = ustack;
        k.kind = kind;
        struct kc_val_t *v = kcache.lookup(&k);
        if (v) {
            u32 n = ++v->uses;
            if (n & KCACHE_VERIFY_MASK) {
                count(C_KCACHE_HIT);
                return v->kstack;
            }
            s32 id = walk_kstack(ctx);
            if (id >= 0 && id != v->kstack) {
                count(C_KCACHE_MISMATCH);
                v->kstack = id;
            }
            return id;
        }
        s32 id = walk_kstack(ctx);
        if (id >= 0) {
            struct kc_val_t nv = {};
            nv.kstack = id;
            nv.uses = 1;
            kcache.update(&k, &nv);
        }
        return id;
    }
#endif
    return walk_kstack(ctx);
}

static __always_inline u32 log2_slot(u64 us)
{
    u32 slot = 0;
#pragma unroll
    for (int i = 0; i < HIST_SLOTS - 1; i++) {
        if (us > 1) {
            us >>= 1;
            slot++;
        }
    }
    return slot;
}

// A target thread leaves the CPU: close its on-CPU run, remember why and where it left.
// (BCC declares the tracepoint's args struct inside the probe, so fields come as arguments.)
static __always_inline void switch_out(void *ctx, u64 now, u32 tid, u32 tgid, long state,
                                       const char *prev_comm, u32 next_pid,
                                       const char *next_comm)
{
    u32 zero = 0;
    u64 ran = 0;
    struct oncpu_t *oc = 0;
    struct running_t *run = running.lookup(&zero);
    if (run && run->tid == tid && run->ts) {
        ran = now - run->ts;
        run->tid = 0;
        oc = oncpu.lookup(&tid);
        if (!oc) {
            // A zeroed template from a map: the struct is too big for the BPF stack.
            struct oncpu_t *init = oncpu_zero.lookup(&zero);
            if (init) {
                if (oncpu.insert(&tid, init) != 0)
                    count(C_ONCPU_FULL);
                oc = oncpu.lookup(&tid);
                if (oc) {
                    oc->tgid = tgid;
                    bpf_probe_read_kernel(&oc->comm, sizeof(oc->comm), prev_comm);
                }
            }
        }
        if (oc) {
            u32 slot = log2_slot(ran / 1000);
            oc->count++;
            oc->total_ns += ran;
            if (ran > oc->max_ns)
                oc->max_ns = ran;
            if (slot < HIST_SLOTS)
                oc->hist[slot]++;
        }
    }

    if (state & STATE_EXITING) {
        set_pending(tid, 0);
        start.delete(&tid);
        return;
    }
    // Reuse the thread's entry in place: an insert and a delete per off-CPU interval cost
    // more than the rest of the bookkeeping. An entry with off_ts == 0 means "on the CPU".
    struct start_t *e = start.lookup(&tid);
    if (!e) {
        struct start_t fresh = {};
        if (start.insert(&tid, &fresh) != 0) {
            count(C_START_FULL);
            return;
        }
        e = start.lookup(&tid);
        if (!e)
            return;
    }
    e->off_ts = now;
    e->wake_ts = 0;
    e->short_wake = 0;
    e->tgid = tgid;
    e->state = (state & STATE_MASK) ? ST_BLOCKED : ST_PREEMPTED;
    // The busy period goes on through preemptions and ends when the thread blocks: a loop
    // spinning 250 ms among other runnable threads shows as one 250 ms busy period even
    // though no single run lasts longer than a scheduler slice.
    u64 busy = e->busy_ns + ran;
    if (oc && busy > oc->max_busy_ns)
        oc->max_busy_ns = busy;
    e->busy_ns = e->state == ST_BLOCKED ? 0 : busy;
    if (e->state == ST_BLOCKED) {
        e->ustack = ustack_cached(ctx, 0);
        e->kstack = kstack_cached(ctx, 0, tgid, 0, e->ustack);
        e->preempt_pid = 0;
    } else {
        // Preempted: the thread was interrupted at a random point, so its user stack is a
        // profiler sample that rarely repeats (a busy thread would flood the maps and the
        // stream with them), and what classifies the preemption is the top of the kernel
        // stack. So: a shallow kernel stack only, unless PREEMPT_USER_STACKS.
#ifdef PREEMPT_USER_STACKS
        e->ustack = walk_ustack(ctx);
        e->kstack = walk_kstack(ctx);
#else
        e->ustack = -1;
        e->kstack = walk_pstack(ctx);
#endif
        e->preempt_pid = next_pid;
        __builtin_memcpy(&e->preempt_comm, next_comm, COMM_LEN);
    }
    e->waker_kstack = -1;
    e->waker_ustack = -1;
    __builtin_memcpy(&e->comm, prev_comm, COMM_LEN);
    set_pending(tid, 1);
    count(C_SWITCH_OUT);
}

// Who held the CPU while a target thread waited in the run queue (see struct qkey_t).
static __always_inline void note_queued(struct start_t *s, u32 tid, u64 wait, u32 holder_tid,
                                        u32 holder_tgid, const char *holder_comm)
{
    struct qkey_t qk = {};
    qk.tid = tid;
    qk.tgid = s->tgid;
    __builtin_memcpy(&qk.comm, s->comm, COMM_LEN);
    if (holder_tid) {  // the idle task (pid 0) is one key, whatever its per-CPU comm
        qk.holder_tid = holder_tid;
        qk.holder_tgid = holder_tgid;
        __builtin_memcpy(&qk.holder_comm, holder_comm, COMM_LEN);
    }
    struct qval_t zq = {};
    struct qval_t *q = queued.lookup_or_try_init(&qk, &zq);
    if (!q) {
        count(C_QUEUED_FULL);
        return;
    }
    __sync_fetch_and_add(&q->count, 1);
    __sync_fetch_and_add(&q->wait_ns, wait);
    if (wait > q->max_ns)
        q->max_ns = wait;
}

// A target thread gets the CPU back: the interval it was off is complete. The caller has
// checked that it is pending; holder_* is the task that ran before it (sched_switch's prev).
static __always_inline void switch_in(u64 now, u32 tid, u32 holder_tid, u32 holder_tgid,
                                      const char *holder_comm)
{
    set_pending(tid, 0);
    struct start_t *s = start.lookup(&tid);
    if (!s || s->off_ts == 0)
        return;
    if (!now)
        now = bpf_ktime_get_ns();
    u32 zero = 0;
    struct running_t *run = running.lookup(&zero);
    if (run) {
        run->ts = now;
        run->tid = tid;
        run->tgid = s->tgid;
    }
    count(C_SWITCH_IN);

    u64 blocked = 0, runq = 0;
    if (s->state == ST_BLOCKED) {
        if (s->wake_ts == 0 || s->short_wake) {
            // No wake seen (it came before we attached) or a wake too short to describe.
            if (s->short_wake)
                count(C_SHORT);
            s->off_ts = 0;
            return;
        }
        blocked = s->wake_ts - s->off_ts;
        runq = now - s->wake_ts;
    } else {
        runq = now - s->off_ts;
        if (runq < MIN_BLOCK_NS) {
            count(C_SHORT);
            s->off_ts = 0;
            return;
        }
    }

    struct key_t key = {};
    key.tid = tid;
    key.tgid = s->tgid;
    key.state = s->state;
    key.kstack = s->kstack;
    key.ustack = s->ustack;
    __builtin_memcpy(&key.comm, s->comm, COMM_LEN);
    if (s->state == ST_BLOCKED) {
        key.waker_tid = s->waker_tid;
        key.waker_tgid = s->waker_tgid;
        key.waker_kstack = s->waker_kstack;
        key.waker_ustack = s->waker_ustack;
        key.preempt_pid = 0;
        __builtin_memcpy(&key.waker_comm, s->waker_comm, COMM_LEN);
    } else {
        key.waker_kstack = -1;
        key.waker_ustack = -1;
        key.preempt_pid = s->preempt_pid;
        __builtin_memcpy(&key.preempt_comm, s->preempt_comm, COMM_LEN);
    }
    s->off_ts = 0;

    if (runq >= MIN_BLOCK_NS)
        note_queued(s, tid, runq, holder_tid, holder_tgid, holder_comm);

    u64 total = blocked + runq;
    struct val_t zv = {};
    struct val_t *v = agg.lookup_or_try_init(&key, &zv);
    if (!v) {
        count(C_AGG_FULL);
        return;
    }
    __sync_fetch_and_add(&v->count, 1);
    __sync_fetch_and_add(&v->total_ns, total);
    __sync_fetch_and_add(&v->blocked_ns, blocked);
    __sync_fetch_and_add(&v->runq_ns, runq);
    if (total > v->max_ns)
        v->max_ns = total;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    // Untraced switches cost two bitmap tests (inlined array lookups) and nothing else.
    u64 now = 0;
    u32 prev = args->prev_pid;
    if (prev != 0) {
        // The tracepoint runs in prev's context, so the current tgid is prev's.
        u32 tgid = bpf_get_current_pid_tgid() >> 32;
        if (is_target(tgid)) {
            now = bpf_ktime_get_ns();
            // Tracepoint fields are read straight from the context (aligned 8-byte loads)
            // rather than through a helper; a ctx pointer may not be passed on modified.
            u64 comms[4];
            comms[0] = *(volatile u64 *)&args->prev_comm[0];
            comms[1] = *(volatile u64 *)&args->prev_comm[8];
            comms[2] = *(volatile u64 *)&args->next_comm[0];
            comms[3] = *(volatile u64 *)&args->next_comm[8];
            switch_out(args, now, prev, tgid, args->prev_state, (const char *)&comms[0],
                       args->next_pid, (const char *)&comms[2]);
        }
    }
    u32 next = args->next_pid;
    if (next != 0 && is_pending(next)) {
        // prev held this CPU until now: the one a queued target waited behind last.
        u64 held[2];
        held[0] = *(volatile u64 *)&args->prev_comm[0];
        held[1] = *(volatile u64 *)&args->prev_comm[8];
        u32 holder_tgid = prev ? (u32)(bpf_get_current_pid_tgid() >> 32) : 0;
        switch_in(now, next, prev, holder_tgid, (const char *)&held[0]);
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_waking)
{
    u32 tid = args->pid;
    if (!is_pending(tid))
        return 0;  // not a target thread, or one that is on the CPU: no hash lookup
    struct start_t *s = start.lookup(&tid);
    if (!s || s->off_ts == 0)
        return 0;  // not a target thread, or one that is on the CPU
    if (s->state != ST_BLOCKED || s->wake_ts != 0) {
        // The thread is runnable already: this wake changes nothing, walk no stacks.
        count(C_NOOP_WAKE);
        return 0;
    }
    u64 now = bpf_ktime_get_ns();
    s->wake_ts = now;
    if (now - s->off_ts < MIN_BLOCK_NS) {
        s->short_wake = 1;  // too short to describe: skip the waker's stacks
        return 0;
    }
    u64 pid_tgid = bpf_get_current_pid_tgid();
    s->waker_tid = (u32)pid_tgid;
    s->waker_tgid = pid_tgid >> 32;
    bpf_get_current_comm(&s->waker_comm, sizeof(s->waker_comm));
    s32 ustack = ustack_cached(args, 1);
    s->waker_ustack = ustack;
    s->waker_kstack = kstack_cached(args, 1, s->waker_tgid, tid, ustack);
    count(C_WAKEUP);
    return 0;
}
