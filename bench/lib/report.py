"""docs/benchmarks.md from the results of bench/run: tables, PNG plots and
where each target of issues 2-6 stands.

Also re-renders a saved run:  python3 bench/lib/report.py RESULTS.json OUT.md
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LANG_NAMES = {"c": "C", "go": "Go", "python": "Python", "java": "Java"}
SIZE_NAMES = {512: "512 B", 4096: "4 KB", 10240: "10 KB", 102400: "100 KB"}
MD5_NAMES = {"md5-inline": "ngx.md5 inline (blocks the loop)",
             "md5-thread": "ngx.run_worker_thread",
             "md5-c": "nbffi C", "md5-go": "nbffi Go",
             "md5-python": "nbffi Python", "md5-java": "nbffi Java"}


def via_name(via):
    if via == "plain":
        return "plain Lua (ceiling)"
    if via in MD5_NAMES:
        return "md5: " + MD5_NAMES[via]
    lang, _, side = via.partition("-")
    return f"{LANG_NAMES[lang]} {'sidecar' if side else 'nbffi'}"


def size_name(size):
    return SIZE_NAMES.get(int(size), f"{size} B")


def mib(kb):
    return f"{kb / 1024:.1f}" if kb is not None else "–"


def table(head, rows, align=None):
    align = align or ["---"] + ["---:"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


# ---- targets --------------------------------------------------------------

def targets(r):
    """[(issue, target, measured text, met?)]; met is None when the run
    did not measure it."""
    seq, wrk, core = r.get("seq", {}), r.get("wrk", {}), r.get("core", {})
    out = []

    def add(issue, target, value, fmt, ok):
        if value is None:
            out.append((issue, target, "not measured in this run", None))
        else:
            out.append((issue, target, fmt.format(value), ok(value)))

    def get(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    c = get(core, "seq 512 1", "ns_per_call")
    add(2, "core sequential round trip <= 2 us at 512 B",
        c and c / 1e3, "{:.2f} us", lambda v: v <= 2)
    c = get(core, "pipe 64 256", "calls_per_s")
    add(2, "core pipelined >= 2,000,000 calls/s at 64 B, 256 in flight", c,
        "{:,.0f} calls/s", lambda v: v >= 2e6)
    c = get(seq, "c", "512")
    add(3, "<= 5 us per sequential 512 B call (C runtime, in nginx)",
        c and c[0], "{:.2f} us", lambda v: v <= 5)
    c = get(seq, "c", "102400")
    add(3, "<= 15 us per sequential 100 KB call", c and c[0], "{:.2f} us",
        lambda v: v <= 15)
    w, p = get(wrk, "1 50", "c"), get(wrk, "1 50", "plain")
    if w and p and (w["errors"] or p["errors"]):
        w = p = None
    add(3, ">= 90% of the plain location's requests/s, 1 worker, c=50",
        w and p and 100 * w["rps"] / p["rps"], "{:.0f}%",
        lambda v: v >= 90)
    add(3, "bridge adds <= 2 us of CPU per call (wrk, 1 worker, c=50)",
        w and p and w["cpu_us"] - p["cpu_us"], "{:.2f} us",
        lambda v: v <= 2)
    for issue, lang, size, goal in [(4, "go", "512", 4),
                                    (4, "go", "102400", 5),
                                    (5, "python", "512", 3),
                                    (6, "java", "512", 3)]:
        n, s = get(seq, lang, size), get(seq, f"{lang}-sidecar", size)
        add(issue, f"{LANG_NAMES[lang]}: >= {goal}x the sidecar, sequential "
            f"{size_name(size)}", n and s and s[0] / n[0], "{:.1f}x",
            lambda v, g=goal: v >= g)
        if lang == "python":
            b = r.get("batching")
            add(5, "Python micro-batching >= 2x unbatched predictions/s "
                "(c=50)", b and b[0][1] / b[1][1], "{:.1f}x",
                lambda v: v >= 2)
    return out


# ---- plots ----------------------------------------------------------------

def plot_seq(r, path):
    langs = r["langs"]
    sizes = [s for s, _ in r["sizes"]]
    fig, axes = plt.subplots(1, len(langs), figsize=(3.2 * len(langs), 3.4),
                             squeeze=False, sharey=True)
    for ax, lang in zip(axes[0], langs):
        x = range(len(sizes))
        for i, (via, label) in enumerate([(lang, "nbffi"),
                                          (f"{lang}-sidecar", "sidecar")]):
            ys = [r["seq"][via][str(s)][0] for s in sizes]
            ax.bar([k + (i - 0.5) * 0.4 for k in x], ys, 0.4, label=label)
        ax.set_xticks(list(x), [size_name(s) for s in sizes], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(LANG_NAMES[lang])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("us per call (log)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Sequential calls from one request")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_md5(r, path):
    sizes = [s for s, _ in r["sizes"]]
    vias = list(r["md5"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(vias)
    for i, via in enumerate(vias):
        ys = [r["md5"][via][str(s)][0] for s in sizes]
        ax.bar([k + (i - len(vias) / 2 + 0.5) * width
                for k in range(len(sizes))], ys, width,
               label=MD5_NAMES[via])
    ax.set_xticks(range(len(sizes)), [size_name(s) for s in sizes])
    ax.set_yscale("log")
    ax.set_ylabel("us per call (log)")
    ax.set_title("Hex MD5 of the payload, sequential calls")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_wrk(r, path):
    keys = list(r["wrk"])
    rows = (len(keys) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(10, 2.2 + 2.6 * rows),
                             squeeze=False, sharey=True)
    for ax, key in zip(axes.flat, keys):
        res = r["wrk"][key]
        vias = list(res)
        ax.barh(range(len(vias)), [0 if res[v]["errors"] else
                                   res[v]["rps"] / 1e3 for v in vias],
                color=["tab:gray" if v == "plain" else
                       "tab:orange" if "sidecar" in v else
                       "tab:green" if v.startswith("md5") else "tab:blue"
                       for v in vias])
        ax.set_yticks(range(len(vias)), [via_name(v) for v in vias],
                      fontsize=7)
        workers, conns = key.split()
        ax.set_title(f"{workers} worker(s), c={conns}", fontsize=9)
        ax.set_xlabel("thousand requests/s", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()           # shared: once for all
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    fig.suptitle("wrk, one call per request")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(r, path):
    mem = r["memory"]
    names = list(mem)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = range(len(names))
    ax.bar([k - 0.2 for k in x], [mem[n][0] / 1024 for n in names], 0.4,
           label="loaded")
    ax.bar([k + 0.2 for k in x], [(mem[n][1] or 0) / 1024 for n in names],
           0.4, label=f"after {r['mem_calls']:,} calls")
    ax.set_xticks(list(x), ["none" if n == "none" else LANG_NAMES[n]
                            for n in names])
    ax.set_ylabel("worker RSS, MiB")
    ax.set_title("Resident memory of one nginx worker")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the document ---------------------------------------------------------

def sections(r, img):
    sizes = [s for s, _ in r["sizes"]]
    counts = ", ".join(f"{n:,} at {size_name(s)}" for s, n in r["sizes"])
    out = []

    rows = []
    for issue, target, measured, ok in targets(r):
        mark = {True: "met", False: "**not met**", None: "–"}[ok]
        rows.append((f"#{issue}", target, measured, mark))
    out.append("## Where the targets stand\n\n"
               "The benchmark targets of issues 2-6, from this run"
               + (" (**quick mode**: small counts, noisy)" if r["quick"]
                  else "") + ".\n\n"
               + table(["issue", "target", "measured", ""], rows,
                       ["---", "---", "---:", "---"]))

    env = dict(r["environment"])
    ngx_v = env.pop("nginx -V")
    out.append("## Machine\n\n"
               + table(["", ""], list(env.items()), ["---", "---"])
               + "\n\n```\n" + ngx_v + "\n```")

    out.append(f"""## Method

- One nginx (Debian's, with lua-nginx-module) per configuration, started by
  `bench/run` in a temporary prefix; every runtime and every sidecar runs
  the same handler: echo (the reply is the payload), or, for section 2,
  the lowercase hex MD5 of the payload. The Lua side is
  [bench/lib/lua/nbbench.lua](../bench/lib/lua/nbbench.lua).
- **nbffi**: the runtime library loaded in the worker by
  `nbffi.load` in `init_worker_by_lua`, called with `rt:call` (module
  defaults: adaptive spin up to 20 us). C: `shims/c` echo (1 thread) and
  `bench/c/md5.c`; Go: `bench/go/lib`; Python: `bench/python/handlers.py`
  in the embedded interpreter; Java: `bench/java` handlers on the default
  executor (2 poller threads). All four are loaded in the same worker.
- **sidecar**: the same handler in a separate process of the same language
  on a unix stream socket, 4-byte big-endian length-prefixed frames, driven
  from a cosocket kept open (`setkeepalive`): `bench/c/sidecar.c` (thread
  per connection), `bench/go/sidecar` (goroutine per connection),
  `bench/python/sidecar.py` (asyncio), `bench/java/Sidecar.java` (thread
  per connection).
- **ngx.run_worker_thread**: `thread_pool nbbench threads=2`, the job in
  [bench/lib/lua/nbbench_thread.lua](../bench/lib/lua/nbbench_thread.lua)
  (`ngx.md5`).
- Sequential: one request runs the calls back to back ({counts}); each
  reply is checked; median of {r['runs']} run(s) after a warm-up. "CPU" is
  the CPU time of every thread of the nginx worker (runtime threads
  included) plus, for a sidecar, of the sidecar process, per call, from
  `/proc/<pid>/task/*/schedstat`.
- HTTP: `wrk -t1 -cN -d{r['wrk_seconds']}s --latency`, one call per
  request (512 B payload), each location warmed up first; p50/p99 are
  wrk's; CPU per request as above (wrk's own CPU excluded). `plain` says
  the same 512 bytes without any call: the ceiling.
- Memory: VmRSS of the single worker of an nginx with only that runtime
  loaded, after 100 calls, then after {r['mem_calls']:,} more calls of
  512 B (8 light threads); "none" has the nbffi dispatcher only.
- Cross-thread and cross-process wake-ups cost far more on idle CPUs than
  on busy ones, so every number here depends on what else the machine ran
  (the load average at the start is in the Machine table): compare within
  a table, and across runs only at a similar load.""")

    rows = []
    for lang in r["langs"]:
        for s in sizes:
            n, sc = r["seq"][lang][str(s)], r["seq"][f"{lang}-sidecar"][str(s)]
            rows.append((LANG_NAMES[lang], size_name(s), f"{n[0]:.2f}",
                         f"{sc[0]:.2f}", f"{sc[0] / n[0]:.1f}x",
                         f"{n[1]:.2f}", f"{sc[1]:.2f}"))
    out.append("## 1. Sequential calls from one request\n\n"
               "Microseconds per call, one request calling back to back.\n\n"
               + table(["runtime", "payload", "nbffi us", "sidecar us",
                        "nbffi speedup", "nbffi CPU us", "sidecar CPU us"],
                       rows, ["---", "---:", "---:", "---:", "---:", "---:",
                              "---:"])
               + f"\n\n![sequential calls]({img}/seq.png)")

    vias = list(r["md5"])
    rows = [[MD5_NAMES[v]] + [f"{r['md5'][v][str(s)][0]:.2f} "
                              f"({r['md5'][v][str(s)][1]:.2f})"
                              for s in sizes] for v in vias]
    out.append("## 2. A job Lua can do: nbffi vs ngx.run_worker_thread\n\n"
               "Hex MD5 of the payload, sequential calls from one request: "
               "us per call (CPU us per call). Inline `ngx.md5` is the "
               "fastest per call but blocks the event loop for its whole "
               "duration; the other rows run the hash on another thread.\n\n"
               + table(["via"] + [size_name(s) for s in sizes], rows)
               + f"\n\n![hashing]({img}/hash.png)")

    parts = ["## 3. HTTP load, one call per request\n\n"
             "`wrk` against a location making one call (512 B) per request; "
             "`plain` returns the same bytes with no call."]
    for key, res in r["wrk"].items():
        workers, conns = key.split()
        base = res["plain"]["rps"]
        rows = [(via_name(v), f"{x['rps']:,.0f}",
                 f"{100 * x['rps'] / base:.0f}%", f"{x['p50_us']:,.0f}",
                 f"{x['p99_us']:,.0f}", f"{x['cpu_us']:.1f}")
                if not x["errors"] else
                (via_name(v), f"**{x['errors']:,} errors** in "
                 f"{x['requests']:,} requests", "–", "–", "–", "–")
                for v, x in res.items()]
        parts.append(f"### {workers} worker(s), c={conns}\n\n"
                     + table(["via", "req/s", "of plain", "p50 us",
                              "p99 us", "CPU us/req"], rows))
    parts.append(f"![wrk]({img}/wrk.png)")
    out.append("\n\n".join(parts))

    mem = r["memory"]
    none = mem["none"][0]
    rows = [("none (dispatcher only)", mib(none), "–", "–", "–")]
    for lang in r["langs"]:
        loaded, after = mem[lang]
        rows.append((LANG_NAMES[lang], mib(loaded), mib(loaded - none),
                     mib(after), mib(after - loaded)))
    side = r.get("sidecar_rss_kb", {})
    out.append("## 4. Memory per worker\n\n"
               "RSS of one worker, MiB.\n\n"
               + table(["runtime", "loaded", "runtime's share",
                        f"after {r['mem_calls']:,} calls", "growth"], rows)
               + "\n\nFor comparison, each sidecar process after the whole "
               "run (MiB): "
               + ", ".join(f"{LANG_NAMES[k]} {mib(v)}"
                           for k, v in side.items())
               + ". A JVM's heap grows towards its default maximum (a "
               "quarter of the RAM) before it collects much: bound it with "
               "`jvm_option=-Xmx...` in the cfg (`-Xmx` for a Java "
               f"sidecar).\n\n![memory]({img}/memory.png)")

    core = r.get("core", {})
    if core:
        rows = []
        for key, v in core.items():
            mode, size, depth = key.split()
            rows.append((mode, size_name(size), depth,
                         f"{v['ns_per_call'] / 1e3:.2f}",
                         f"{v['calls_per_s']:,.0f}",
                         f"{v['cpu_ns'] / 1e3:.2f}"))
        out.append("## 5. The core alone\n\n"
                   "`build/bench/bench-core`: one host thread posting to the "
                   "C echo runtime, no nginx (`seq`: one call at a time; "
                   "`pipe`: N in flight; `wake`: spinning off on both "
                   "sides, the pure sleep/wake path).\n\n"
                   + table(["mode", "payload", "in flight", "us/call",
                            "calls/s", "CPU us/call"], rows))

    b = r.get("batching")
    if b:
        rows = [("on" if on else "off", f"{rps:,.0f}", f"{per:.1f}",
                 f"{cpu:.1f}") for on, rps, per, cpu in b]
        out.append("## 6. Python micro-batching\n\n"
                   "`examples/python-ml` under `wrk -c50`, one prediction "
                   "per request (bench/python's inference run).\n\n"
                   + table(["batching", "predictions/s", "calls per model "
                            "run", "CPU us/req"], rows))

    out.append("## Reproduce\n\n```sh\nbench/run            # 10-15 minutes; "
               "--quick for a try\n```\n\nThe per-language benchmarks "
               "(`bench/go/run`, `bench/python/run`, `bench/java/run`, "
               "`bench/nginx/run`) go deeper into one runtime each. Every "
               f"number above is in [{img}/results.json]({img}/results.json).")
    return out


def write(out, results, command):
    """Writes out (markdown), its plots and results.json next to it."""
    r = json.loads(json.dumps({**results, "command": command}))
    out = Path(out)
    img = out.with_suffix("")
    img.mkdir(parents=True, exist_ok=True)
    (img / "results.json").write_text(json.dumps(r, indent=1) + "\n")
    plot_seq(r, img / "seq.png")
    plot_md5(r, img / "hash.png")
    plot_wrk(r, img / "wrk.png")
    plot_memory(r, img / "memory.png")

    head = (f"# Benchmarks\n\nGenerated by `{command}` in "
            f"{r.get('minutes', 0):.1f} minutes on the machine below: nbffi "
            "with the C, Go, Python and Java runtimes against the same "
            "handler in a unix-socket sidecar of the same language, against "
            "`ngx.run_worker_thread`, and against a plain location.")
    if r["quick"]:
        head += ("\n\n> **Quick mode** (`--quick`): counts divided by 20 "
                 "and short wrk runs. For trying the command; run "
                 "`bench/run` for the real numbers.")
    doc = "\n\n".join([head, *sections(r, img.name)]) + "\n"
    # measurements made by hand (CPU per call, the anchor comparison) are
    # kept in <out>/cpu-per-call.md and carried over to each new report
    notes = img / "cpu-per-call.md"
    if notes.exists():
        doc += "\n" + notes.read_text()
    out.write_text(doc)


if __name__ == "__main__":
    res = json.loads(Path(sys.argv[1]).read_text())
    write(sys.argv[2], res, res.get("command", "bench/run"))
