/* zsup.core._spawn: start one child with vfork, setting what Python cannot set without a
 * preexec_fn (its parent-death signal) between vfork and exec.
 *
 * Why C: zsupd is threaded, so a Python preexec_fn is unsafe (the child of a fork may block
 * on a lock another thread held), and a fork of a big Python process costs page copies. A
 * vfork child shares the parent's memory and runs until its exec, so it must only make
 * system calls: no malloc, no lock, no Python. Everything it needs is prepared before.
 * This is what CPython's _posixsubprocess does; the difference is prctl(PR_SET_PDEATHSIG),
 * followed by a check that the parent is still the one we expect (if it died between the
 * vfork and the prctl, the signal would never come: the child exits instead).
 *
 * The child shares our fd table (CLONE_FILES) until its first step on fds, which gives it a
 * table of its own copied from the few lowest fds only (close_range's CLOSE_RANGE_UNSHARE):
 * the stdio it needs was put there first, in three fds reserved for it. A vfork child would
 * copy zsupd's whole table (a pipe pair and a pidfd per child) and close it again fd by fd
 * at the exec, each close a flush: that made a spawn cost O(open fds), about half a
 * millisecond more per child with 200 running.
 *
 * The death signal follows the thread that called spawn(): call it from a thread that
 * lives as long as the children should (zsupd's supervisor loop).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <limits.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define STDIN_NULL (-1)
#define INHERIT (-2)
#define SAME_AS_STDOUT (-3)
#define MAX_LIMITS 16
#define MAX_PASS 64
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#define CHILD_STACK 32768

/* A NULL-terminated array of the bytes in a list (borrowed pointers: keep `seq` alive). */
static char **
to_array(PyObject *seq, const char *what)
{
    Py_ssize_t n, i;
    char **out;
    if (!PyList_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a list of bytes", what);
        return NULL;
    }
    n = PyList_GET_SIZE(seq);
    out = PyMem_Calloc(n + 1, sizeof(char *));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(seq, i);
        if (!PyBytes_Check(item)) {
            PyMem_Free(out);
            PyErr_Format(PyExc_TypeError, "%s: expected a list of bytes", what);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    return out;
}

struct child_args {
    const char *exe;
    char **argv;
    char **envp;
    const char *cwd;
    int stdio[3];
    int setsid_, setpgid_, pdeathsig;
    long uid, gid;
    int umask_;   /* -1: keep */
    int nice_;    /* INT_MIN: keep */
    int nlimits;
    int limit_res[MAX_LIMITS];
    struct rlimit limits[MAX_LIMITS];
    char oom[16]; /* "" : keep */
    int npass;
    int pass_src[MAX_PASS], pass_dst[MAX_PASS];
    unsigned int keep_below; /* the child's own fd table: a copy of fds 0 .. keep_below-1 */
    pid_t parent;
    sigset_t *mask;
    /* written by the child, read by the parent once the child has exec'd or exited */
    volatile int err;
    const char *volatile step;
};

/* In the vfork child: system calls only. Never returns. It starts on zsupd's own fd table
 * (CLONE_FILES), so its first step on fds makes its private copy, of the few it needs. */
static int
child(void *arg)
{
    struct child_args *a = arg;
    int i, fd;
    struct sigaction sa;

    /* Handlers installed by Python would run Python in a child sharing our memory: back to
     * the default for every caught signal, and for those Python ignores (SIGPIPE, SIGXFSZ),
     * as subprocess's restore_signals does. Signals are blocked until just before exec. */
    a->step = "signals";
    for (i = 1; i < NSIG; i++) {
        if (sigaction(i, NULL, &sa) != 0)
            continue;
        if (sa.sa_handler != SIG_DFL && (sa.sa_handler != SIG_IGN || i == SIGPIPE || i == SIGXFSZ)) {
            sa.sa_handler = SIG_DFL;
            sa.sa_flags = 0;
            sigemptyset(&sa.sa_mask);
            sigaction(i, &sa, NULL);
        }
    }
    if (a->pdeathsig) {
        a->step = "prctl";
        if (prctl(PR_SET_PDEATHSIG, a->pdeathsig, 0, 0, 0) != 0)
            goto fail;
        if (getppid() != a->parent)
            _exit(1); /* the parent died before the signal was armed: no orphan */
    }
    a->step = "setsid";
    if (a->setsid_ && setsid() < 0)
        goto fail;
    if (!a->setsid_ && a->setpgid_ && setpgid(0, 0) != 0)
        goto fail;
    a->step = "fds";
    /* A table of our own, copied from fds 0 .. keep_below-1 only: zsupd's hundreds of pipes
     * and pidfds are neither copied nor closed one by one at the exec (their flush made a
     * spawn cost O(open fds): half a millisecond with 200 children). */
    if (syscall(SYS_close_range, a->keep_below, ~0U, CLOSE_RANGE_UNSHARE) != 0 && unshare(CLONE_FILES) != 0)
        goto fail; /* (before Linux 5.9: a copy of the whole table, as vfork made) */
    a->step = "stdio";
    /* nothing but 0, 1, 2 and what dup2 puts there below is inherited */
    syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    /* every source out of the way of every target first (targets: 0, 1, 2, pass_dst) */
    {
        int low = 3;
        for (i = 0; i < a->npass; i++)
            if (a->pass_dst[i] + 1 > low)
                low = a->pass_dst[i] + 1;
        for (i = 0; i < 3; i++) {
            if (a->stdio[i] >= 0 && a->stdio[i] < low) {
                fd = fcntl(a->stdio[i], F_DUPFD_CLOEXEC, low);
                if (fd < 0)
                    goto fail;
                a->stdio[i] = fd;
            }
        }
        for (i = 0; i < a->npass; i++) {
            if (a->pass_src[i] < low) {
                fd = fcntl(a->pass_src[i], F_DUPFD_CLOEXEC, low);
                if (fd < 0)
                    goto fail;
                a->pass_src[i] = fd;
            }
        }
    }
    for (i = 0; i < 3; i++) {
        fd = a->stdio[i];
        if (fd >= 0) {
            if (dup2(fd, i) < 0)
                goto fail;
        } else if (fd == STDIN_NULL) {
            fd = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (fd < 0)
                goto fail;
            if (fd == i ? fcntl(fd, F_SETFD, 0) < 0 : dup2(fd, i) < 0) /* i was closed in zsupd */
                goto fail;
        } else if (fd == SAME_AS_STDOUT) {
            if (dup2(1, i) < 0)
                goto fail;
        }
    }
    a->step = "fds";
    for (i = 0; i < a->npass; i++)
        if (dup2(a->pass_src[i], a->pass_dst[i]) < 0)
            goto fail;
    a->step = "limits";
    for (i = 0; i < a->nlimits; i++)
        if (setrlimit(a->limit_res[i], &a->limits[i]) != 0)
            goto fail;
    if (a->umask_ >= 0)
        umask((mode_t)a->umask_);
    if (a->nice_ != INT_MIN) {
        a->step = "nice";
        errno = 0;
        if (setpriority(PRIO_PROCESS, 0, a->nice_) != 0)
            goto fail;
    }
    if (a->oom[0]) {
        a->step = "oom_score_adj";
        fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, a->oom, strlen(a->oom)) < 0)
            goto fail;
        close(fd);
    }
    if (a->cwd) {
        a->step = "chdir";
        if (chdir(a->cwd) != 0)
            goto fail;
    }
    if (a->gid >= 0) {
        a->step = "setgid";
        if (setregid((gid_t)a->gid, (gid_t)a->gid) != 0)
            goto fail;
    }
    if (a->uid >= 0) {
        a->step = "setuid";
        if (setreuid((uid_t)a->uid, (uid_t)a->uid) != 0)
            goto fail;
    }
    a->step = "exec";
    sigprocmask(SIG_SETMASK, a->mask, NULL);
    execve(a->exe, a->argv, a->envp);
fail:
    a->err = errno ? errno : EIO;
    _exit(127);
    return 0;
}

/* Low fd numbers, reserved once (on /dev/null), where the parent puts the child's stdio
 * sources before a spawn, so that the child's table can stop just above them. Used under
 * `slots_lock` (spawn may be called from several threads); -1: not made (yet). A slot is
 * checked to still be our /dev/null before each use: were it closed and its number reused
 * by someone else, it is dropped rather than overwritten. */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static int slots[3] = {-1, -1, -1};
static int null_fd = -1; /* our /dev/null, that the slots are reset to */
static dev_t null_rdev;

static int
slot_ok(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == null_rdev;
}

/* Point each used slot at its source and the child's stdio at the slots; 0 (and nothing
 * changed) if the slots are unusable. */
static int
stage(struct child_args *a)
{
    int i;
    struct stat st;
    if (null_rdev == 0) {
        if (stat("/dev/null", &st) != 0 || !S_ISCHR(st.st_mode))
            return 0;
        null_rdev = st.st_rdev;
    }
    if (!slot_ok(null_fd)) {
        null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0)
            return 0;
    }
    for (i = 0; i < 3; i++) {
        if (!slot_ok(slots[i])) {
            slots[i] = fcntl(null_fd, F_DUPFD_CLOEXEC, 3);
            if (slots[i] < 0)
                return 0;
        }
    }
    for (i = 0; i < 3; i++) {
        if (a->stdio[i] >= 0 && dup3(a->stdio[i], slots[i], O_CLOEXEC) < 0) {
            while (--i >= 0) /* the slots pointed so far let go of their pipe ends again */
                if (a->stdio[i] >= 0)
                    dup3(null_fd, slots[i], O_CLOEXEC);
            return 0;
        }
    }
    for (i = 0; i < 3; i++)
        if (a->stdio[i] >= 0)
            a->stdio[i] = slots[i];
    return 1;
}

PyDoc_STRVAR(spawn_doc,
"spawn(exe, argv, envp, cwd, stdio, setsid, setpgid, pdeathsig, uid, gid,\n"
"      umask, nice, limits, oom_score_adj, fds) -> pid\n\n"
"Start `exe` (bytes) with `argv` and `envp` (lists of bytes) and return its pid, once it\n"
"has exec'd. `cwd`: bytes or None. `stdio`: three fds for 0, 1, 2, or -1 (/dev/null),\n"
"-2 (inherit), -3 (same as stdout). `pdeathsig`: 0 for none. `uid`, `gid`: -1 to keep.\n"
"`umask`: -1 to keep. `nice`: None to keep. `limits`: [(resource, soft, hard)], -1 for\n"
"unlimited. `oom_score_adj`: None to keep. `fds`: [(fd, target fd)] passed on (sockets).\n"
"OSError (errno, 'step: reason') if a step before the exec failed; the child is reaped.");

static PyObject *
spawn(PyObject *self, PyObject *args)
{
    PyObject *exe, *argv, *envp, *cwd, *nice, *limits, *oom, *pass;
    Py_ssize_t i, n;
    struct child_args a;
    sigset_t all, old;
    pid_t pid;
    int err;
    const char *step;
    char child_stack[CHILD_STACK] __attribute__((aligned(16)));

    memset(&a, 0, sizeof(a));
    if (!PyArg_ParseTuple(args, "SOOO(iii)ppilliOOOO", &exe, &argv, &envp, &cwd, &a.stdio[0], &a.stdio[1],
                          &a.stdio[2], &a.setsid_, &a.setpgid_, &a.pdeathsig, &a.uid, &a.gid, &a.umask_, &nice,
                          &limits, &oom, &pass))
        return NULL;
    a.nice_ = INT_MIN;
    if (nice != Py_None) {
        a.nice_ = (int)PyLong_AsLong(nice);
        if (PyErr_Occurred())
            return NULL;
    }
    if (oom != Py_None) {
        long v = PyLong_AsLong(oom);
        if (PyErr_Occurred())
            return NULL;
        snprintf(a.oom, sizeof(a.oom), "%ld", v);
    }
    if (!PyList_Check(limits) || (n = PyList_GET_SIZE(limits)) > MAX_LIMITS) {
        PyErr_SetString(PyExc_TypeError, "limits: expected a list of at most 16 (resource, soft, hard)");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        long long soft, hard;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(limits, i), "iLL", &a.limit_res[i], &soft, &hard))
            return NULL;
        a.limits[i].rlim_cur = soft < 0 ? RLIM_INFINITY : (rlim_t)soft;
        a.limits[i].rlim_max = hard < 0 ? RLIM_INFINITY : (rlim_t)hard;
    }
    a.nlimits = (int)n;
    if (!PyList_Check(pass) || (n = PyList_GET_SIZE(pass)) > MAX_PASS) {
        PyErr_SetString(PyExc_TypeError, "fds: expected a list of at most 64 (fd, target)");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PyList_GET_ITEM(pass, i), "ii", &a.pass_src[i], &a.pass_dst[i]))
            return NULL;
        if (a.pass_dst[i] < 3) {
            PyErr_SetString(PyExc_ValueError, "fds: a target must be 3 or more (0, 1, 2 are stdio)");
            return NULL;
        }
    }
    a.npass = (int)n;
    if (cwd != Py_None && !PyBytes_Check(cwd)) {
        PyErr_SetString(PyExc_TypeError, "cwd: expected bytes or None");
        return NULL;
    }
    a.exe = PyBytes_AS_STRING(exe);
    a.cwd = cwd == Py_None ? NULL : PyBytes_AS_STRING(cwd);
    a.argv = to_array(argv, "argv");
    if (a.argv == NULL)
        return NULL;
    a.envp = to_array(envp, "envp");
    if (a.envp == NULL) {
        PyMem_Free(a.argv);
        return NULL;
    }
    a.parent = getpid();
    a.mask = &old;
    a.step = "vfork";

    Py_BEGIN_ALLOW_THREADS
    int src[3] = {a.stdio[0], a.stdio[1], a.stdio[2]};
    pthread_mutex_lock(&slots_lock);
    stage(&a); /* else the sources stay as they are, and the child copies up to them */
    a.keep_below = 3;
    for (i = 0; i < 3; i++)
        if (a.stdio[i] >= (int)a.keep_below)
            a.keep_below = a.stdio[i] + 1;
    for (i = 0; i < a.npass; i++)
        if (a.pass_src[i] >= (int)a.keep_below)
            a.keep_below = a.pass_src[i] + 1;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* vfork's semantics (the parent waits until the child has exec'd or exited) with the fd
     * table shared instead of copied, and the child on a stack of its own in our frame */
    pid = clone(child, child_stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &a);
    err = pid < 0 ? errno : a.err;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    for (i = 0; i < 3; i++) /* the slots let go of the child's pipe ends: /dev/null again */
        if (a.stdio[i] != src[i])
            dup3(null_fd, a.stdio[i], O_CLOEXEC);
    pthread_mutex_unlock(&slots_lock);
    if (pid > 0 && err) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    Py_END_ALLOW_THREADS

    PyMem_Free(a.argv);
    PyMem_Free(a.envp);
    if (err) {
        step = (const char *)a.step;
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "is", err, step);
        if (exc != NULL) {
            /* an exec that fails reads as before (`No such file or directory`); any other step
             * says which it was */
            PyObject *text = strcmp(step, "exec") == 0 ? PyUnicode_FromString(strerror(err))
                                                       : PyUnicode_FromFormat("%s: %s", step, strerror(err));
            if (text != NULL) {
                PyObject_SetAttrString(exc, "strerror", text);
                Py_DECREF(text);
            }
            PyErr_SetObject(PyExc_OSError, exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    return PyLong_FromLong((long)pid);
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_spawn", "vfork + prctl(PR_SET_PDEATHSIG) + exec, for zsup.core.spawner", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__spawn(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STDIN_NULL", STDIN_NULL) || PyModule_AddIntConstant(m, "INHERIT", INHERIT) ||
        PyModule_AddIntConstant(m, "SAME_AS_STDOUT", SAME_AS_STDOUT)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
