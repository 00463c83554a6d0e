// kubectl-offwake: why were the target's threads off the CPU, and who woke them?
//
// BCC C, scheduler tracepoints only (docs/design.md section 4). The program reads nothing but
// tracepoint fields and helpers, never a kernel struct, so any reasonably recent set of
// kernel headers compiles it (that is what makes nodes without matching headers work).
//
// Life of one off-CPU interval of a target thread T:
//   sched_switch (T out)  -> start[T] = {time, state, T's kernel+user stacks, preemptor}
//   sched_waking (of T)   -> waker tid/tgid/comm/cgroup, the waker's stacks, wake time into start[T]
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
// The waker's cgroup is taken at the wake too (bpf_get_current_cgroup_id(), a helper: the
// waker is the current task there): a waker that lives a few milliseconds (an exec probe,
// a curl in a shell loop) has exited by the time user space could read its /proc/PID/cgroup,
// and the cgroup is what names it by pod and container.
//
// Compile-time knobs (cflags): MIN_BLOCK_NS, STACK_STORAGE_SIZE, AGG_SIZE, START_SIZE,
// TARGETS_SIZE, ONCPU_SIZE, QUEUED_SIZE, KSTACK_DEPTH, USTACK_DEPTH, MMAP_MIN_ADDR,
// SITES_SIZE, CFI_DEPTH, NO_KCACHE, KERNEL_USTACKS, PREEMPT_USER_STACKS, NO_CGROUP_ID.

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
#define C_UTRUNC 16         // user stack walks cut at a frame-pointer loop
#define C_QUEUED_FULL 17    // run-queue wait not attributed: queued map full
#define N_COUNTERS 18

// A stack map drops a stack whose hash bucket holds another stack (-EEXIST); with a few
// hundred distinct stacks in 16384 buckets that already happens now and then. Such a stack
// goes to a small overflow map instead (its id marked with OVERFLOW_BIT), so a stack is lost
// only when it collides twice.
#define OVERFLOW_BIT 0x40000000
#define PREEMPT_BIT 0x20000000  // id of a shallow preemption kernel stack (pstacks map)

// User stacks are referred to by an s64: the stack's hash in ustore/wustore (> 0), or the
// stack id in the kernel's stack maps (-DKERNEL_USTACKS); < 0: an error code as stack maps
// give them (-EFAULT: no user stack, -EEXIST, -ENOMEM: lost).
struct start_t {
    u64 off_ts;
    u64 wake_ts;
    s64 ustack;
    s64 waker_ustack;
    u32 tgid;
    u32 state;
    s32 kstack;
    u32 waker_tid;
    u32 waker_tgid;
    s32 waker_kstack;
    u32 preempt_pid;
    u32 short_wake;  // woken sooner than MIN_BLOCK_NS: not described, not aggregated
    u64 busy_ns;     // CPU time since the thread last blocked (its current busy period)
    u64 waker_cgid;  // the waker's cgroup v2 id (its directory's inode number), 0: unknown
    char comm[COMM_LEN];
    char waker_comm[COMM_LEN];
    char preempt_comm[COMM_LEN];
};

struct key_t {  // no padding: hashed as bytes
    s64 ustack;
    s64 waker_ustack;
    u32 tid;
    u32 tgid;
    u32 state;
    u32 waker_tid;
    u32 waker_tgid;
    u32 preempt_pid;
    s32 kstack;
    s32 waker_kstack;
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
    // The waker's cgroup v2 id at its latest wake of this key (the key names one waker
    // thread, so one cgroup but for a move between cgroups); not a part of the key: a
    // wake path stays one entry.
    u64 waker_cgid;
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

// Kernel stack cache. A kernel stack walk is the dominant cost per event (docs/design.md section 4);
// user stacks are cheaper. The kernel path that led to a blocking switch-out, or to a wake
// made from a system call, is almost always the same for the same user stack, so the
// kernel stack id is cached by the user stack (kind 0: a target blocking; kind 1: a waker,
// per target thread) and re-walked once every KCACHE_VERIFY_MASK+1 uses; a verifying walk
// that disagrees replaces the entry and is counted. Preempted switch-outs and wakers without
// a user stack (kernel threads, idle: interrupt context) are always walked. -DNO_KCACHE
// (collector flag --exact-stacks) walks every time.
struct kc_key_t {
    s64 ustack;
    u32 tgid;
    u32 tid;
    u32 kind;
    u32 pad;
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
BPF_ARRAY(start_zero, struct start_t, 1);
BPF_PERCPU_ARRAY(counters, u64, N_COUNTERS);
// LRU: wakes in interrupt context key the cache by whatever user stack the interrupted task
// had, which rarely repeats; such entries must age out instead of filling the cache.
BPF_TABLE("lru_hash", struct kc_key_t, struct kc_val_t, kcache, KCACHE_SIZE);
BPF_TABLE("stacktrace", int, struct kstack_t, kstacks, STACK_STORAGE_SIZE);
BPF_TABLE("stacktrace", int, struct kstack_t, kstacks2, STACK_OVERFLOW_SIZE);
BPF_TABLE("stacktrace", int, struct pstack_t, pstacks, STACK_STORAGE_SIZE);
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

// User stacks: our own walk, frame pointers plus CFI for frameless code.
//
// The kernel's user stack walk (bpf_get_stackid) follows the frame-pointer chain from the
// task's rbp. A thread in a system call is stopped right after a `syscall` instruction, often
// in a libc wrapper built without frame pointers: its rbp is the caller's (or any value, if
// the wrapper uses rbp as a register), so the kernel's walk skips the wrapper's caller, and
// every frameless function between it and the next frame-pointer function. It also follows a
// frame pointer that points at itself 60 times over. So the program walks user stacks itself:
//
//  1. CFI phase: while the address is a known site — a syscall or call return site of a
//     frameless module, with its CFA rule from .eh_frame, written by user space into `sites`,
//     keyed by the address's page offset and the 16 code bytes around it (user space:
//     collector/sites.py) — unwind one frame by that rule: CFA = rsp or rbp + offset, the
//     return address at CFA-8, the caller's rbp saved at CFA+bp_off or still in rbp.
//  2. Frame-pointer phase: one 16-byte read per frame ([rbp] = caller's rbp, [rbp+8] =
//     return address), stopping without a read at an rbp below vm.mmap_min_addr (the chain's
//     end). A frame pointer that does not move up the stack (below the current frame's end)
//     or a return address equal to the one before ends the walk as truncated (a frame-pointer
//     loop: flag in the stored stack, a marker frame in the report).
//
// Stacks are stored by the program too (stack maps can only be filled by the kernel's walk):
// a 64-bit hash of the addresses (and the flags) is the key of `ustore` (targets) or `wustore`
// (wakers: a waker caught by an interrupt brings the user stack of whatever it interrupted,
// and those must not crowd out the targets'), and the stack's reference everywhere else. A
// hit is compared with the stored addresses, so equal references are equal stacks; a
// collision loses the stack (counted). Needs bpf_task_pt_regs (Linux 5.15)
// and kernel BTF, x86-64: elsewhere the collector builds with -DKERNEL_USTACKS, which keeps
// the kernel's walk (frame pointers only, as before).
#ifndef KERNEL_USTACKS
#ifndef SITES_SIZE
#define SITES_SIZE 262144
#endif
#ifndef CFI_DEPTH
#define CFI_DEPTH 24  // frames unwound by CFI before the frame-pointer phase takes over
#endif
#ifndef MMAP_MIN_ADDR
#define MMAP_MIN_ADDR 4096
#endif
#if USTACK_DEPTH != 64
#error "USTACK_DEPTH must be 64 (the walk masks its index with 63)"
#endif
#define UST_TRUNCATED 1      // flags: the walk stopped at a frame-pointer loop
#define UST_CFI_SHIFT 8      // flags >> 8: frames unwound by CFI

struct site_key_t {
    u32 page_off;
    u32 pad;
    u64 before;  // the 8 code bytes before the address
    u64 after;   // and the 8 from it on
};
struct site_t {
    s32 cfa_off;
    s16 bp_off;  // caller's rbp saved at CFA + bp_off; 0: rbp still holds it
    u8 cfa_reg;  // 0: CFA = rsp + cfa_off, 1: CFA = rbp + cfa_off
    u8 pad;
};
struct ustack_rec_t {
    u32 n;
    u32 flags;
    u64 ip[USTACK_DEPTH];
};
// A per-CPU direct-mapped cache of site lookups by (process, address), positive and
// negative, so that the addresses every event brings back cost neither a code read nor a
// hash lookup. `gen` is bumped by user space whenever it changes the sites table.
#ifndef SCACHE_SLOTS
#define SCACHE_SLOTS 256
#endif
struct scache_ent {
    u64 ip;
    u32 tgid;
    u32 gen;
    struct site_t site;
    u32 is_site;
    u32 pad;
};
struct uwalk_t {  // the walk's scratch space (too big for the BPF stack)
    struct ustack_rec_t rec;
    struct site_key_t key;
    struct scache_ent cache[SCACHE_SLOTS];
};

static __always_inline u32 scache_slot(u64 ip, u32 tgid)
{
    u64 x = (ip ^ ((u64)tgid << 32)) * 0x9E3779B97F4A7C15ULL;
    return (x >> 40) & (SCACHE_SLOTS - 1);
}
BPF_F_TABLE("hash", struct site_key_t, struct site_t, sites, SITES_SIZE, BPF_F_NO_PREALLOC);
BPF_HASH(ustore, u64, struct ustack_rec_t, STACK_STORAGE_SIZE);   // targets' stacks
BPF_HASH(wustore, u64, struct ustack_rec_t, STACK_STORAGE_SIZE);  // wakers' stacks
BPF_HASH(newwakers, u32, u64, 1024);  // waker tgid -> a new stack of it (user space drains)
BPF_PERCPU_ARRAY(uscratch, struct uwalk_t, 1);
BPF_ARRAY(sitegen, u32, 1);  // bumped by user space when `sites` changes

static __always_inline u64 mix(u64 h, u64 v)
{
    h ^= v * 0x9E3779B97F4A7C15ULL;
    h = (h << 31) | (h >> 33);
    return h * 0xC2B2AE3D27D4EB4FULL;
}

// Fills *s; returns its hash, or 0 when the task has no 64-bit user context (kernel threads:
// zeroed regs; compat tasks).
static __always_inline u64 user_walk(struct uwalk_t *w)
{
    struct ustack_rec_t *s = &w->rec;
    struct task_struct *task = bpf_get_current_task_btf();
    u64 regs = (u64)bpf_task_pt_regs(task);
    u64 bp = 0, r[4] = {};
    if (!regs)
        return 0;
    // x86-64 struct pt_regs (a fixed layout): bp at 32; ip, cs, flags, sp at 128.
    if (bpf_probe_read_kernel(&bp, 8, (void *)(regs + 32)) ||
        bpf_probe_read_kernel(&r, 32, (void *)(regs + 128)))
        return 0;
    if (r[1] != 0x33 || (r[2] & (1UL << 17)))
        return 0;  // not __USER_CS, or vm86
    u64 ip = r[0], sp = r[3];
    u32 n = 1, cfi = 0, flags = 0;
    u64 h = mix(0, ip);
    s->ip[0] = ip;

    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u32 zero = 0;
    u32 *genp = sitegen.lookup(&zero);
    u32 gen = genp ? *genp : 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < CFI_DEPTH; i++) {
        // The per-CPU cache first: the same few addresses come back on every event.
        struct scache_ent *e = &w->cache[scache_slot(ip, tgid)];
        struct site_t site;
        if (e->ip == ip && e->tgid == tgid && e->gen == gen) {
            if (!e->is_site)
                break;
            site = e->site;
        } else {
            struct site_key_t *k = &w->key;
            if (bpf_probe_read_user(&k->before, 16, (void *)(ip - 8)))
                break;
            k->page_off = ip & 0xfff;
            k->pad = 0;
            struct site_t *found = sites.lookup(k);
            e->ip = ip;
            e->tgid = tgid;
            e->gen = gen;
            e->is_site = found != 0;
            if (!found)
                break;
            site = *found;
            e->site = site;
        }
        u64 cfa = (site.cfa_reg ? bp : sp) + (s64)site.cfa_off;
        u64 ra = 0, nbp = bp;
        if (bpf_probe_read_user(&ra, 8, (void *)(cfa - 8)) || ra < MMAP_MIN_ADDR)
            break;
        if (site.bp_off && bpf_probe_read_user(&nbp, 8, (void *)(cfa + site.bp_off)))
            break;
        s->ip[n & (USTACK_DEPTH - 1)] = ra;
        h = mix(h, ra);
        n++;
        cfi++;
        ip = ra;
        sp = cfa;
        bp = nbp;
    }

    u64 low = sp, prev = ip;
#pragma clang loop unroll(disable)
    for (int i = 0; i < USTACK_DEPTH; i++) {
        if (n >= USTACK_DEPTH || bp < MMAP_MIN_ADDR)
            break;
        if (bp < low) {
            flags |= UST_TRUNCATED;  // the frame pointer went down the stack
            break;
        }
        u64 fr[2];
        if (bpf_probe_read_user(&fr, 16, (void *)bp) || fr[1] == 0)
            break;
        if (fr[1] == prev) {
            flags |= UST_TRUNCATED;  // the same return address again
            break;
        }
        s->ip[n & (USTACK_DEPTH - 1)] = fr[1];
        h = mix(h, fr[1]);
        n++;
        prev = fr[1];
        low = bp + 16;
        bp = fr[0];
    }
    flags |= cfi << UST_CFI_SHIFT;
    s->n = n;
    s->flags = flags;
    if (flags & UST_TRUNCATED)
        count(C_UTRUNC);
    return (mix(h, flags) >> 1) | 1;  // > 0 as an s64: apart from error codes
}

// kind 0: a target's own stack (ustore); kind 1: a waker's (wustore). Returns the stack's
// reference (its hash, > 0) or a negative error as the kernel's stack maps give them.
static __always_inline s64 walk_user(void *ctx, u32 kind)
{
    u32 zero = 0;
    struct uwalk_t *w = uscratch.lookup(&zero);
    if (!w)
        return -12;
    struct ustack_rec_t *s = &w->rec;
    u64 h = user_walk(w);
    if (!h)
        return -14;  // no user stack (as the kernel's walk says for kernel threads)
    struct ustack_rec_t *have = kind ? wustore.lookup(&h) : ustore.lookup(&h);
    if (!have) {
        int err = kind ? wustore.update(&h, s) : ustore.update(&h, s);
        if (err == 0) {
            if (kind) {
                // A waker stack never seen: tell user space, which gives the waker's own
                // modules unwind tables within a poll (a new stack is rare: cheap here).
                u32 tgid = bpf_get_current_pid_tgid() >> 32;
                newwakers.insert(&tgid, &h);
            }
            return h;
        }
        if (kind)
            count(C_WSTACK_ENOMEM);
        else
            count(C_STACK_ENOMEM);
        return -12;
    }
    // A hash match: the same addresses, or (1 in 2^63 per pair) a collision, which loses
    // this stack rather than pass it off as another.
    if (have->n != s->n || have->flags != s->flags)
        goto collision;
    for (int i = 0; i < USTACK_DEPTH; i++) {
        if (i >= s->n)
            break;
        if (have->ip[i] != s->ip[i])
            goto collision;
    }
    return h;
collision:
    if (kind)
        count(C_WSTACK_EEXIST);
    else
        count(C_STACK_EEXIST);
    return -17;
}

static __always_inline s64 walk_ustack(void *ctx)
{
    return walk_user(ctx, 0);
}

static __always_inline s64 walk_waker_ustack(void *ctx)
{
    return walk_user(ctx, 1);
}
#else
// -DKERNEL_USTACKS: the kernel walks user stacks (frame pointers only), into stack maps.
BPF_TABLE("stacktrace", int, struct ustack_t, ustacks, STACK_STORAGE_SIZE);
BPF_TABLE("stacktrace", int, struct ustack_t, wustacks, STACK_STORAGE_SIZE);
BPF_TABLE("stacktrace", int, struct ustack_t, ustacks2, STACK_OVERFLOW_SIZE);
BPF_TABLE("stacktrace", int, struct ustack_t, wustacks2, STACK_OVERFLOW_SIZE);

static __always_inline s64 walk_ustack(void *ctx)
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

static __always_inline s64 walk_waker_ustack(void *ctx)
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
#endif

static __always_inline s32 kstack_cached(void *ctx, u32 kind, u32 tgid, u32 tid, s64 ustack)
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
        // A zeroed template from a map: beside the rest of sched_switch (its handlers are
        // inlined into one function) the struct took it over the 512-byte BPF stack.
        struct start_t *fresh = start_zero.lookup(&zero);
        if (!fresh || start.insert(&tid, fresh) != 0) {
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
        e->ustack = walk_ustack(ctx);
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
    if (s->state == ST_BLOCKED)
        v->waker_cgid = s->waker_cgid;
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
#ifdef NO_CGROUP_ID
    s->waker_cgid = 0;  // kernels without the helper (before 4.18, or no CONFIG_CGROUPS)
#else
    s->waker_cgid = bpf_get_current_cgroup_id();
#endif
    s64 ustack = walk_waker_ustack(args);
    s->waker_ustack = ustack;
    s->waker_kstack = kstack_cached(args, 1, s->waker_tgid, tid, ustack);
    count(C_WAKEUP);
    return 0;
}
