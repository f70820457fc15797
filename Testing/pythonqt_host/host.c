/*
 * A stand-in for 3D Slicer's main thread: CPython embedded the way Slicer
 * embeds it through PythonQt, with an event loop and timers in C.
 *
 * What it reproduces (checked against Slicer 5.10's source):
 *  - qSlicerCorePythonManager's constructor calls Py_InitializeFromConfig on
 *    the main thread, which then holds the GIL;
 *  - nothing releases it afterwards: neither Slicer nor CTK's
 *    ctkAbstractPythonManager::initPythonQt calls
 *    PythonQt::setEnableThreadSupport or PyEval_SaveThread, so PythonQt's GIL
 *    scopes stay disabled and Qt's event loop waits for events holding the GIL;
 *  - a Python slot connected to a QTimer is called directly from that loop,
 *    on the main thread, with the GIL it already holds. Here each call is
 *    wrapped in PyGILState_Ensure/Release as PythonQt's enabled GIL scope would
 *    do; on a thread that holds the GIL that pair is a nested no-op, so the
 *    GIL state is exactly that of Slicer's disabled scope.
 *
 * A QTimer with interval 0 fires on every pass of the loop; one with an
 * interval fires when due (next due = previous due + interval, or now +
 * interval when it fell behind). Between passes the loop sleeps until the next
 * due time, holding the GIL, as Qt blocks in poll() holding it.
 *
 * To measure responsiveness the loop also generates an "input event" every
 * INPUT_PERIOD_NS (a mouse move, handled in C, no Python); its latency is the
 * time from when it was due to when the loop got to it.
 *
 * Usage: host SCRIPT [ARGS...]. SCRIPT runs as __main__ with the builtin
 * module ``pqhost`` (timers, quit, stats), like a module's setup(); then the
 * loop runs until pqhost.quit(code) or PQHOST_TIMEOUT_S (default 600) seconds.
 * Exit status: the quit code, 3 on timeout, 2 when the script failed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TIMERS 64
#define INPUT_PERIOD_NS 5000000LL /* 5 ms */
#define BIN_NS 100000LL           /* latency histogram: 0.1 ms bins */
#define BINS 20000                /* up to 2 s; later ones land in the last bin */

typedef struct {
  PyObject *slot;
  long long interval_ns;
  long long due_ns;
  int active;
  long long last_call_ns; /* start of the previous call, for the gap between calls */
} Timer;

typedef struct {
  long long since_ns;
  long long passes;
  long long slot_calls;
  long long slot_ns_max;
  long long timer_late_ns_max; /* how late a timer with an interval fired */
  long long zero_gap_ns_max;   /* longest time between two calls of a 0 ms timer */
  long long input_events;
  long long input_ns_max;
  long long input_ns_sum;
  long long input_bins[BINS];
} Stats;

static Timer timers[MAX_TIMERS];
static int n_timers = 0;
static int quit_requested = 0;
static int quit_code = 0;
static long long next_input_ns = 0;
static int reset_pending = 0; /* stats(True) was called: start afresh after the current slot */
static Stats stats;

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void sleep_until(long long deadline_ns) {
  struct timespec t;
  t.tv_sec = (time_t)(deadline_ns / 1000000000LL);
  t.tv_nsec = (long)(deadline_ns % 1000000000LL);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {
  }
}

static void reset_stats(void) {
  memset(&stats, 0, sizeof stats);
  stats.since_ns = now_ns();
  next_input_ns = stats.since_ns + INPUT_PERIOD_NS; /* no input was due while nobody measured */
  for (int i = 0; i < n_timers; i++) timers[i].last_call_ns = 0;
}

static Timer *timer_arg(PyObject *args, long long *extra, int want_extra) {
  int id;
  if (want_extra) {
    if (!PyArg_ParseTuple(args, "iL", &id, extra)) return NULL;
  } else if (!PyArg_ParseTuple(args, "i", &id)) {
    return NULL;
  }
  if (id < 0 || id >= n_timers) {
    PyErr_Format(PyExc_ValueError, "pqhost: no timer %d", id);
    return NULL;
  }
  return &timers[id];
}

/* ---------------------------------------------------------------- pqhost module */

static PyObject *py_add_timer(PyObject *self, PyObject *args) {
  PyObject *slot;
  if (!PyArg_ParseTuple(args, "O", &slot)) return NULL;
  if (!PyCallable_Check(slot)) {
    PyErr_SetString(PyExc_TypeError, "pqhost.add_timer needs a callable");
    return NULL;
  }
  if (n_timers == MAX_TIMERS) {
    PyErr_SetString(PyExc_RuntimeError, "pqhost: too many timers");
    return NULL;
  }
  Py_INCREF(slot);
  timers[n_timers] = (Timer){slot, 0, 0, 0, 0};
  return PyLong_FromLong(n_timers++);
}

static PyObject *py_set_interval(PyObject *self, PyObject *args) {
  long long ms;
  Timer *t = timer_arg(args, &ms, 1);
  if (!t) return NULL;
  if (ms < 0) {
    PyErr_SetString(PyExc_ValueError, "pqhost: a negative interval");
    return NULL;
  }
  t->interval_ns = ms * 1000000LL;
  Py_RETURN_NONE;
}

static PyObject *py_start(PyObject *self, PyObject *args) {
  Timer *t = timer_arg(args, NULL, 0);
  if (!t) return NULL;
  t->active = 1;
  t->due_ns = now_ns() + t->interval_ns;
  t->last_call_ns = 0;
  Py_RETURN_NONE;
}

static PyObject *py_stop(PyObject *self, PyObject *args) {
  Timer *t = timer_arg(args, NULL, 0);
  if (!t) return NULL;
  t->active = 0;
  Py_RETURN_NONE;
}

static PyObject *py_is_active(PyObject *self, PyObject *args) {
  Timer *t = timer_arg(args, NULL, 0);
  if (!t) return NULL;
  return PyBool_FromLong(t->active);
}

static PyObject *py_quit(PyObject *self, PyObject *args) {
  int code = 0;
  if (!PyArg_ParseTuple(args, "|i", &code)) return NULL;
  quit_requested = 1;
  quit_code = code;
  Py_RETURN_NONE;
}

static double ms(long long ns) { return (double)ns / 1e6; }

static double input_quantile(double q) {
  long long want = (long long)(q * (double)stats.input_events + 0.999999), seen = 0;
  for (int b = 0; b < BINS; b++) {
    seen += stats.input_bins[b];
    if (seen >= want && want > 0) return ms((b + 1) * BIN_NS);
  }
  return 0.0;
}

/* stats(reset=False) -> dict of what the loop saw since the last reset (times in ms); reset=True starts
 * afresh once the slot that calls it has returned, so the stats never include that call. */
static PyObject *py_stats(PyObject *self, PyObject *args) {
  int reset = 0;
  if (!PyArg_ParseTuple(args, "|p", &reset)) return NULL;
  PyObject *d = Py_BuildValue(
      "{s:d,s:L,s:L,s:d,s:d,s:d,s:L,s:d,s:d,s:d,s:d}",
      "seconds", (double)(now_ns() - stats.since_ns) / 1e9,
      "passes", stats.passes,
      "slot_calls", stats.slot_calls,
      "slot_ms_max", ms(stats.slot_ns_max),
      "timer_late_ms_max", ms(stats.timer_late_ns_max),
      "zero_timer_gap_ms_max", ms(stats.zero_gap_ns_max),
      "input_events", stats.input_events,
      "input_latency_ms_max", ms(stats.input_ns_max),
      "input_latency_ms_mean", stats.input_events ? ms(stats.input_ns_sum / stats.input_events) : 0.0,
      "input_latency_ms_p99", input_quantile(0.99),
      "input_latency_ms_p999", input_quantile(0.999));
  if (reset) reset_pending = 1; /* not now: the slot that asked is still running */
  return d;
}

static PyMethodDef methods[] = {
    {"add_timer", py_add_timer, METH_VARARGS, "add_timer(slot) -> id: a stopped timer that calls slot()"},
    {"set_interval", py_set_interval, METH_VARARGS, "set_interval(id, ms)"},
    {"start", py_start, METH_VARARGS, "start(id)"},
    {"stop", py_stop, METH_VARARGS, "stop(id)"},
    {"is_active", py_is_active, METH_VARARGS, "is_active(id) -> bool"},
    {"quit", py_quit, METH_VARARGS, "quit(code=0): leave the loop after this pass"},
    {"stats", py_stats, METH_VARARGS, "stats(reset=False) -> dict"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pqhost",
                                    "The C event loop of the PythonQt-like host (see host.c).", -1, methods};

static PyObject *init_pqhost(void) { return PyModule_Create(&module); }

/* ---------------------------------------------------------------- the loop */

static void call_slot(Timer *t) {
  long long start = now_ns();
  if (t->interval_ns == 0 && t->last_call_ns && start - t->last_call_ns > stats.zero_gap_ns_max)
    stats.zero_gap_ns_max = start - t->last_call_ns;
  t->last_call_ns = start;
  PyGILState_STATE gil = PyGILState_Ensure(); /* nested: this thread already holds the GIL */
  PyObject *result = PyObject_CallNoArgs(t->slot);
  if (result == NULL) PyErr_Print(); /* PythonQt prints a slot's exception and carries on */
  Py_XDECREF(result);
  PyGILState_Release(gil);
  if (reset_pending) {
    reset_pending = 0;
    reset_stats();
    return;
  }
  long long took = now_ns() - start;
  stats.slot_calls++;
  if (took > stats.slot_ns_max) stats.slot_ns_max = took;
}

static void record_input(long long latency_ns) {
  stats.input_events++;
  stats.input_ns_sum += latency_ns;
  if (latency_ns > stats.input_ns_max) stats.input_ns_max = latency_ns;
  long long bin = latency_ns / BIN_NS;
  stats.input_bins[bin < BINS ? bin : BINS - 1]++;
}

static int run_loop(double timeout_s) {
  long long began = now_ns();
  reset_stats();
  while (!quit_requested) {
    long long now = now_ns();
    if ((double)(now - began) / 1e9 > timeout_s) {
      fprintf(stderr, "pqhost: no quit() after %.0f s\n", timeout_s);
      return 3;
    }
    stats.passes++;
    if (now >= next_input_ns) { /* coalesced like mouse moves: one event per pass at most */
      record_input(now - next_input_ns);
      next_input_ns = now + INPUT_PERIOD_NS;
    }
    for (int i = 0; i < n_timers && !quit_requested; i++) {
      Timer *t = &timers[i];
      if (!t->active) continue;
      now = now_ns();
      if (t->interval_ns > 0) {
        if (now < t->due_ns) continue;
        if (now - t->due_ns > stats.timer_late_ns_max) stats.timer_late_ns_max = now - t->due_ns;
        t->due_ns += t->interval_ns;
        if (t->due_ns <= now) t->due_ns = now + t->interval_ns;
      }
      call_slot(t);
    }
    /* Wait for the next event, holding the GIL, unless a 0 ms timer is active. */
    long long deadline = next_input_ns;
    int busy = 0;
    for (int i = 0; i < n_timers; i++) {
      if (!timers[i].active) continue;
      if (timers[i].interval_ns == 0) busy = 1;
      else if (timers[i].due_ns < deadline) deadline = timers[i].due_ns;
    }
    if (!busy && !quit_requested && deadline > now_ns()) sleep_until(deadline);
  }
  return quit_code;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
    return 2;
  }
  const char *timeout_env = getenv("PQHOST_TIMEOUT_S");
  double timeout_s = timeout_env ? atof(timeout_env) : 600.0;

  if (PyImport_AppendInittab("pqhost", init_pqhost) < 0) return 2;
  /* As qSlicerCorePythonManager: a Python config, no argv parsing, then Py_InitializeFromConfig. */
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.parse_argv = 0;
  PyStatus status = PyConfig_SetBytesArgv(&config, argc - 1, argv + 1);
  if (!PyStatus_Exception(status)) status = PyConfig_SetString(&config, &config.program_name, L"pqhost");
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) Py_ExitStatusException(status);
  /* From here on this thread holds the GIL and never gives it up. */

  int code;
  if (PyRun_SimpleString("import runpy, sys\nrunpy.run_path(sys.argv[0], run_name='__main__')\n") != 0) {
    code = 2;
  } else {
    code = run_loop(timeout_s);
  }
  for (int i = 0; i < n_timers; i++) Py_CLEAR(timers[i].slot);
  fflush(stdout);
  if (Py_FinalizeEx() < 0 && code == 0) code = 120;
  return code;
}
