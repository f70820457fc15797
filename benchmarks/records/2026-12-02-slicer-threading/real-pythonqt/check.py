# Runs inside pqreal (real PythonQt): a worker on a BackgroundTask, the modules' yielder on the 0 ms QTimer.
import json, os, sys, threading, time
sys.path.insert(0, os.environ["RICENET_PATHS"].split(":")[0])
for p in os.environ["RICENET_PATHS"].split(":")[1:]:
    sys.path.append(p)
from RICENetLib.background import BackgroundTask
from RICENetLib.gil_yield import MainThreadYielder

mode = os.environ["PQ_MODE"]
workload = os.environ.get("PQ_WORK", "spin")
WINDOW = float(os.environ.get("PQ_WINDOW", "2"))
count = [0]

if workload == "torch":
    import torch
    torch.set_num_threads(1)
    from RICENetLib.model import build_network, default_architecture
    net = build_network(default_architecture(3)).eval()
    x = torch.randn(1, 3, 8, 8, 8)
    def step():
        with torch.inference_mode():
            net(x)
else:
    def step():
        sum(range(1000))

def work(progress, cancel):
    while True:
        step()
        count[0] += 1
        progress(0.5)

yieldTimer.interval = 0
yielder = MainThreadYielder(yieldTimer)
yieldTimer.connect("timeout()", yielder.tick)
began = time.perf_counter()
task = BackgroundTask(work).start()
measured = []

def poll():
    if mode == "free":
        while time.perf_counter() - began < WINDOW:
            time.sleep(0.05)
    status = task.status()
    if not measured and time.perf_counter() - began >= WINDOW:
        measured.append(count[0] / (time.perf_counter() - began))
        task.cancel()
        if not yielder.active:
            yielder.watch(task)
    if measured and status.finished and not task.thread_alive:
        print(json.dumps({"mode": mode, "work": workload, "per_s": measured[0], "ticks": yielder.stats.ticks,
                          "longest_tick_ms": 1e3 * yielder.stats.longest_tick_s}))
        pollTimer.stop()
        app.quit()

pollTimer.interval = 200
pollTimer.connect("timeout()", poll)
pollTimer.start()
if mode == "yield":
    yielder.watch(task)
