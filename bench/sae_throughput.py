"""SAE training throughput, final FVU and peak memory: ours vs SAELens and EleutherAI sparsify.

For each size (d_in, d_sae, k, batch) one float32 activation file is written once under
``bench/results/data/`` and every trainer trains on it with the same d_sae, k, batch and learning
rate (2e-4 / sqrt(d_sae / 2^14), constant: no warm-up, no decay), each in its own subprocess:

- ours: ``sae_core.training.loop.train_sae`` with arch ``batchtopk``, ``topk`` and ``sampled``
  (l=4, L2 and entropy scoring), in our venv (``bench/peers/run_ours.py``);
- SAELens (``sae-lens`` 6.54.x): ``BatchTopKTrainingSAE`` stepped by its ``SAETrainer``
  (``bench/peers/run_saelens.py``), in ``bench/.venvs/saelens`` (SAELens pins transformer-lens < 4,
  so it cannot share our environment);
- sparsify (``eai-sparsify`` 1.3.x): ``SparseCoder`` TopK with its fused encoder and sparse
  decoder, stepped as its ``Trainer`` does, with Adam at the shared lr (comparable row) and with
  its default optimizer, schedule-free Signum at its own lr (``bench/peers/run_sparsify.py``),
  in ``bench/.venvs/sparsify``.

The peer venvs are created on first use (``torch==2.13.0`` first, the CPU wheel on this machine, so
the peer cannot pull a CUDA build; then the peer; the torch version is checked afterwards) and
reused when present. Each runner does W untimed warm-up steps, times N full steps (forward, loss,
backward, optimizer, the trainer's per-step bookkeeping) and computes FVU on held-out rows.

Data: the small size (d_in 128) uses real ``zoo:tiny-a`` ``blocks.1.hook_resid_post`` activations
(harvested with ``harvest_to_workspace`` into a temporary workspace; the last rows, from documents
the SAE never sees, are held out; training rows are shuffled once). No zoo model is 512 wide, so
the large size (d_in 512) uses synthetic data with planted sparse structure: 8*d_in unit-norm
ground-truth directions, 24 active per token drawn with Zipf-like frequencies, exponential
magnitudes, a constant offset and 5% Gaussian noise. Both files are pre-scaled so that
E||x|| = sqrt(d_in) (the scale our trainer would pick itself), so every trainer sees the same
numbers at the same lr.

Each trainer runs ``--rounds`` times (default 2), interleaved with the others, and keeps its
fastest round, so a burst of load from another process penalises one round rather than one trainer
(FVU is deterministic: every round trains the same steps from the same seed).

Reported per trainer: tok/s = batch / median timed step (robust to the other processes of a shared
machine; "tok/s mean" = tokens / total timed seconds, and the 1-minute load average before each
run, are shown beside it); FVU = sum||x - x_hat||^2 / sum||x - mean(x)||^2
on the held-out rows with the trainer's inference encoder (BatchTopK family: the learned threshold,
i.e. JumpReLU; "FVU batch" uses the training rule over held-out batches of the training batch
size); L0 on the same rows; "step / ours BTK" = this trainer's median step time over our BatchTopK's
(issue #3's target for Sampled-SAE: <= 1.15; separate processes drift, so
``sae_run_step_ratio.py`` measures it interleaved); peak RSS of the runner process (``VmHWM``: Linux carries
``ru_maxrss`` over fork + exec from the parent; includes the same data file held by every runner,
see "RSS load", the RSS after loading it); and the fraction of this machine's fp32 matmul rate:

    fraction = tok/s * 6 * d_in * d_sae / R,  R = measured FLOP/s of torch.mm([batch, d_in] x [d_in, d_sae])

6 * d_in * d_sae is the usual "6 x parameters" training cost (forward 2, backward 4 FLOP per weight
per token) applied to the encoder matrix only, since TopK decoders may be sparse. A trainer whose
step cost 3 encoder-shaped matmuls at the measured rate would score 1.0; a fully dense
encoder + decoder (12 d_in d_sae FLOP per token) at the measured rate scores 0.5.

FVU after a few dozen steps mostly reflects initialisation and early learning, not converged
quality; compare FVU only between rows with the same number of steps.

    .venv/bin/python bench/sae_throughput.py [--sizes small,large] [--steps N] [--warmup W]
        [--only ours|peers|all] [--skip-install] [--max-seconds T] [--rounds R] [--plain-too]

Prints one table per size and writes ``bench/results/sae_throughput.json`` (sizes not run this
time are kept from the previous file).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / "peers"
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results" / "sae_throughput.json"
DATA = BENCH / "results" / "data"
OUR_PYTHON = REPO / ".venv" / "bin" / "python"
TORCH_PIN = "torch==2.13.0"

SIZES = {
    "small": dict(d_in=128, d_sae=2048, k=32, batch=4096, steps=20, warmup=3,
                  data="zoo:tiny-a blocks.1.hook_resid_post (real activations)"),
    "large": dict(d_in=512, d_sae=16384, k=32, batch=4096, steps=5, warmup=2,
                  data="synthetic, planted sparse structure (no zoo model is 512 wide)"),
    # issue #15: a real width. random:pythia-160m is Pythia-160M's architecture with seeded random
    # weights (sae_core.models.random_arch): its activations have the width and the norm profile
    # of a real residual stream, not its learned structure
    "full": dict(d_in=768, d_sae=24576, k=32, batch=4096, steps=6, warmup=2,
                 data="random:pythia-160m blocks.6.hook_resid_post (random weights, real width)"),
    # issue #31: the Llama 3.2 1B width (d_in 2048). d_sae 16384 is an 8x expansion (Llama Scope's
    # are 8x and 32x); the harvest stops at layer 3 of 16, so a CPU run stays within minutes
    "llama": dict(d_in=2048, d_sae=16384, k=32, batch=4096, steps=4, warmup=1,
                  data="random:llama-3.2-1b blocks.3.hook_resid_post (random weights, real width)"),
}
HARVESTED = {"full": ("random:pythia-160m", "blocks.6.hook_resid_post"),
             "llama": ("random:llama-3.2-1b", "blocks.3.hook_resid_post")}
EVAL_ROWS = 16384

PEER_SPECS = {
    "saelens": dict(spec="sae-lens>=6.54,<6.55", module="sae_lens", dist="sae-lens"),
    "sparsify": dict(spec="eai-sparsify>=1.3,<1.4", module="sparsify", dist="eai-sparsify"),
}


# --- peer environments ---------------------------------------------------------------------------
def _venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def _check_venv(name: str) -> str | None:
    """None when the venv imports the peer with the pinned CPU torch, else why not."""
    py = _venv_python(name)
    if not py.exists():
        return f"{py} does not exist"
    spec = PEER_SPECS[name]
    code = (f"import torch, importlib.metadata as m; import {spec['module']}; "
            f"print(torch.__version__, m.version({spec['dist']!r}))")
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "SPARSIFY_DISABLE_TRITON": "1"})
    if r.returncode != 0:
        return f"import failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    torch_v = r.stdout.split()[-2]
    if not torch_v.startswith("2.13.0") or "+cpu" not in torch_v:
        return f"torch in the venv is {torch_v}, expected 2.13.0+cpu"
    return None


def ensure_venv(name: str, skip_install: bool) -> str | None:
    """Create ``bench/.venvs/NAME`` with the peer installed (idempotent). Returns an error or None."""
    if _check_venv(name) is None:
        return None
    if skip_install:
        return f"venv {name} missing or broken and --skip-install given"
    venv = VENVS / name
    print(f"[setup] creating {venv} (torch first, then {PEER_SPECS[name]['spec']}) ...", flush=True)
    steps = []
    if not _venv_python(name).exists():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    pip = [str(_venv_python(name)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    steps += [pip + [TORCH_PIN], pip + [PEER_SPECS[name]["spec"], TORCH_PIN]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = [ln for ln in r.stderr.splitlines() if not ln.startswith("WARNING: Location")]
            return f"{' '.join(cmd[-2:])} failed: {' | '.join(tail[-3:])}"
    return _check_venv(name)


# --- data ----------------------------------------------------------------------------------------
def _prescale(train: np.ndarray, held_out: np.ndarray) -> tuple[np.ndarray, float]:
    s = math.sqrt(train.shape[1]) / float(np.linalg.norm(train, axis=1).mean())
    return np.concatenate([train, held_out]).astype(np.float32) * np.float32(s), s


def _harvest_small(n_rows: int, model: str = "zoo:tiny-a", hook: str = "blocks.1.hook_resid_post"
                   ) -> tuple[np.ndarray, dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sae_core.activations import ActivationStore
    from sae_core.activations.job import harvest_to_workspace
    from sae_core.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="sae-bench-ws-") as d:
        t0 = time.perf_counter()
        art = harvest_to_workspace(Workspace(d), model, hook, n_tokens=int(n_rows * 1.1))
        acts = ActivationStore.open(art.path).read_all().numpy()
        dt = time.perf_counter() - t0
    if acts.shape[0] < n_rows:
        raise SystemExit(f"harvest gave {acts.shape[0]} rows, fewer than the {n_rows} needed")
    acts = acts[:n_rows]
    train, held_out = acts[:-EVAL_ROWS], acts[-EVAL_ROWS:]  # held-out: the last documents
    train = train[np.random.default_rng(0).permutation(train.shape[0])]
    out, s = _prescale(train, held_out)
    return out, {"source": f"{model} {hook}", "kind": "real", "harvest_seconds": dt, "prescale": s}


def _synthetic(n_rows: int, d_in: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    g = torch.Generator().manual_seed(seed)
    n_true, k_true = 8 * d_in, 24
    dirs = torch.randn(n_true, d_in, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    freq = 1.0 / (torch.arange(n_true, dtype=torch.float64) + 10.0) ** 0.8
    offset = torch.randn(d_in, generator=g)
    out = np.empty((n_rows, d_in), dtype=np.float32)
    for s in range(0, n_rows, 8192):
        n = min(8192, n_rows - s)
        idx = torch.multinomial(freq, n * k_true, replacement=True, generator=g).view(n, k_true)
        mag = torch.empty(n, k_true).exponential_(1.0, generator=g) + 0.1
        x = torch.nn.functional.embedding_bag(idx, dirs, per_sample_weights=mag, mode="sum")
        x += 0.5 * offset + 0.05 * x.norm(dim=1, keepdim=True) / math.sqrt(d_in) * torch.randn(n, d_in, generator=g)
        out[s:s + n] = x.numpy()
    arr, sc = _prescale(out[:-EVAL_ROWS], out[-EVAL_ROWS:])
    return arr, {"source": f"synthetic: {n_true} unit directions, {k_true} active per token "
                           "(Zipf-like frequencies, exponential magnitudes), constant offset, 5% noise",
                 "kind": "synthetic", "prescale": sc}


def ensure_data(size: str, cfg: dict, steps_needed: int) -> tuple[Path, dict]:
    """The size's activation file, rebuilt only when missing or too short for the run."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{size}_d{cfg['d_in']}.npy"
    meta_path = path.with_suffix(".json")
    n_batches = max(steps_needed, 8 if size in HARVESTED else 32)  # a 160M / 1B-parameter model harvests it
    n_rows = n_batches * cfg["batch"] + EVAL_ROWS
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["rows"] >= n_rows:
            return path, meta
    print(f"[setup] writing {path} ({n_rows} rows x {cfg['d_in']}) ...", flush=True)
    arr, meta = (_harvest_small(n_rows) if size == "small" else _harvest_small(n_rows, *HARVESTED[size])
                 if size in HARVESTED else _synthetic(n_rows, cfg["d_in"]))
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    meta.update(rows=int(arr.shape[0]), d_in=int(arr.shape[1]), eval_rows=EVAL_ROWS,
                train_batches=(arr.shape[0] - EVAL_ROWS) // cfg["batch"])
    meta_path.write_text(json.dumps(meta, indent=1))
    return path, meta


# --- matmul reference ----------------------------------------------------------------------------
def matmul_flops(batch: int, d_in: int, d_sae: int, threads: int) -> float:
    """Best-of-rounds fp32 FLOP/s of torch.mm([batch, d_in] x [d_in, d_sae]) in this process."""
    torch.set_num_threads(threads)
    a, b = torch.randn(batch, d_in), torch.randn(d_in, d_sae)
    out = torch.empty(batch, d_sae)
    for _ in range(3):
        torch.mm(a, b, out=out)
    t0 = time.perf_counter()
    torch.mm(a, b, out=out)
    reps = max(1, int(0.3 / max(time.perf_counter() - t0, 1e-6)))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2.0 * batch * d_in * d_sae / best


# --- trainers ------------------------------------------------------------------------------------
def trainers(only: str, plain_too: bool = False) -> list[dict]:
    """Runner specs. Ours run with the kernels ``sae_core.sae.kernels`` picks by default (fast);
    ``plain_too`` adds each of ours again with ``SAE_STUDIO_KERNELS=plain``."""
    ours = [dict(name=f"ours {a}", python=OUR_PYTHON, script="run_ours.py", venv=None,
                 extra=["--arch", a]) for a in ("batchtopk", "topk")]
    ours += [dict(name=f"ours sampled l=4 {s}", python=OUR_PYTHON, script="run_ours.py", venv=None,
                  extra=["--arch", "sampled", "--l", "4", "--scoring", s]) for s in ("l2", "entropy")]
    peers = [dict(name="SAELens batchtopk", python=_venv_python("saelens"), script="run_saelens.py",
                  venv="saelens", extra=[]),
             dict(name="sparsify topk (adam)", python=_venv_python("sparsify"),
                  script="run_sparsify.py", venv="sparsify", extra=["--optimizer", "adam"]),
             dict(name="sparsify topk (signum, its default)", python=_venv_python("sparsify"),
                  script="run_sparsify.py", venv="sparsify", extra=["--optimizer", "signum"])]
    if plain_too:
        ours += [dict(t, name=t["name"] + " (plain kernels)", env={"SAE_STUDIO_KERNELS": "plain"})
                 for t in ours]
    return {"ours": ours, "peers": peers, "all": peers + ours}[only]


def run_trainer(t: dict, data: Path, cfg: dict, args, lr: float) -> dict:
    cmd = [str(t["python"]), str(PEERS / t["script"]), "--data", str(data), "--d-sae", str(cfg["d_sae"]),
           "--k", str(cfg["k"]), "--batch", str(cfg["batch"]), "--lr", repr(lr),
           "--warmup", str(cfg["warmup"]), "--steps", str(cfg["steps"]),
           "--max-seconds", str(args.max_seconds), "--eval-rows", str(EVAL_ROWS),
           "--threads", str(args.threads), "--device", args.device] + t["extra"] \
        + (["--dead-tokens", str(args.dead_tokens)] if t["script"] in ("run_ours.py", "run_sparsify.py") else []) \
        + (["--autocast", args.autocast] if args.autocast and t["script"] == "run_ours.py" else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "SPARSIFY_DISABLE_TRITON": "1",
           "TOKENIZERS_PARALLELISM": "false", **t.get("env", {})}
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"trainer": t["name"], "error": f"timed out after {args.timeout}s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        err = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()
        return {"trainer": t["name"], "error": f"exit {r.returncode}: {err[-1][:300] if err else ''}"}
    res = json.loads(lines[-1][len("RESULT "):])
    res.update(trainer=t["name"], runner=res.get("trainer"), wall_seconds=wall,
               env=t.get("env", {}), loadavg_1m_before=load_before, loadavg_1m_after=os.getloadavg()[0])
    return res


def _source_digest() -> dict:
    """Which version of our SAE code ran: git HEAD, and a digest of ``sae_core/sae/*.py`` as they
    are in the working tree (uncommitted edits included)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((REPO / "sae_core" / "sae").glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return {"git_head": r.stdout.strip() or None, "sae_core_sae_sha256": h.hexdigest()[:16]}


# --- output --------------------------------------------------------------------------------------
def _fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def print_table(size: str, block: dict) -> None:
    cfg = block["config"]
    print(f"\n== {size} on {block.get('device', 'cpu')}: d_in {cfg['d_in']}, d_sae {cfg['d_sae']}, k {cfg['k']}, batch {cfg['batch']}, "
          f"lr {block['lr']:.3g}, {cfg['warmup']} warm-up + up to {cfg['steps']} timed steps, "
          f"{block['threads']} threads, best of {block['rounds']} rounds, "
          f"AuxK dead window {block.get('dead_tokens', '-')} tokens ==")
    print(f"data: {block['data']['source']} ({block['data']['kind']}; {block['data']['rows']} rows, "
          f"{EVAL_ROWS} held out; pre-scaled x{block['data']['prescale']:.4g})")
    print(f"fp32 matmul [{cfg['batch']}x{cfg['d_in']}]x[{cfg['d_in']}x{cfg['d_sae']}]: "
          f"{block['matmul_gflops']:.1f} GFLOP/s; fraction = tok/s * 6*d_in*d_sae / that rate")
    head = (f"{'trainer':<36} {'tok/s':>9} {'tok/s mean':>10} {'x sparsify':>10} {'x SAELens':>9} {'step/BTK':>8} {'FVU':>7} {'L0':>7} {'FVU batch':>9} "
            f"{'steps':>5} {'peak RSS MB':>11} {'RSS load':>8} {'frac mm':>7} {'load1m':>6}")
    print(head)
    print("-" * len(head))
    for row in block["rows"]:
        if "error" in row:
            print(f"{row['trainer']:<36} ERROR: {row['error']}")
            continue
        print(f"{row['trainer']:<36} {row['tokens_per_s']:>9.0f} {row['tokens_per_s_mean']:>10.0f} {_fmt(row.get('x_vs_sparsify'), '>10.2f')} "
              f"{_fmt(row.get('x_vs_saelens'), '>9.2f')} "
              f"{_fmt(row.get('step_vs_ours_batchtopk'), '>8.2f')} "
              f"{row['fvu']:>7.3f} {row['l0']:>7.1f} {_fmt(row.get('fvu_train_rule'), '>9.3f')} "
              f"{row['steps']:>5d} {row['peak_rss_mb']:>11.0f} {row['rss_after_load_mb']:>8.0f} "
              f"{row['fraction_of_matmul']:>7.3f} {row['loadavg_1m_before']:>6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="small,large")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: per size, 20 / 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 3 / 2)")
    p.add_argument("--only", choices=["ours", "peers", "all"], default="all")
    p.add_argument("--skip-install", action="store_true", help="never create or repair peer venvs")
    p.add_argument("--max-seconds", type=float, default=40.0,
                   help="stop a trainer's timed loop once it has run this long (>= 2 steps)")
    p.add_argument("--plain-too", action="store_true",
                   help="also run ours with SAE_STUDIO_KERNELS=plain (the pre-fast-kernel path)")
    p.add_argument("--rounds", type=int, default=2,
                   help="timed runs per trainer, interleaved across trainers; the best is kept")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (every trainer, data on the device)")
    p.add_argument("--autocast", default=None, help="bf16: ours with TrainerConfig(autocast='bf16')")
    p.add_argument("--exclude", default="", help="comma-separated parts of trainer names to skip, "
                   "e.g. 'SAELens,signum' for long quality runs at the large size")
    p.add_argument("--dead-tokens", type=int, default=1_000_000,
                   help="AuxK's dead window for ours and sparsify (a latent silent this many tokens is "
                   "dead); 4096 (one batch) makes both run AuxK from the second step")
    p.add_argument("--timeout", type=float, default=900.0, help="per-trainer subprocess timeout")
    args = p.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            p.error(f"unknown size {s!r}; choose from {sorted(SIZES)}")

    todo = [t for t in trainers(args.only, args.plain_too)
            if not any(x and x.lower() in t["name"].lower() for x in args.exclude.split(","))]
    venv_errors = {}
    for name in sorted({t["venv"] for t in todo if t["venv"]}):
        venv_errors[name] = ensure_venv(name, args.skip_install)
        if venv_errors[name]:
            print(f"[setup] {name}: {venv_errors[name]}", flush=True)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("sizes", {})
    results["ours_source"] = _source_digest()
    results["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch": torch.__version__, "threads": args.threads}
    for size in sizes:
        cfg = dict(SIZES[size])
        if args.steps is not None:
            cfg["steps"] = args.steps
        if args.warmup is not None:
            cfg["warmup"] = args.warmup
        data, meta = ensure_data(size, cfg, cfg["warmup"] + cfg["steps"])
        lr = 2e-4 / math.sqrt(cfg["d_sae"] / 2**14)
        mm = matmul_flops(cfg["batch"], cfg["d_in"], cfg["d_sae"], args.threads)
        runs: dict[str, list[dict]] = {t["name"]: [] for t in todo}
        for rnd in range(args.rounds):  # rounds interleave the trainers; each keeps its best
            for t in todo:
                if t["venv"] and venv_errors.get(t["venv"]):
                    runs[t["name"]].append({"trainer": t["name"], "error": f"venv: {venv_errors[t['venv']]}"})
                    continue
                if rnd and all("error" in r for r in runs[t["name"]]):
                    continue  # failed in round 1: do not retry
                print(f"[{size}] round {rnd + 1}/{args.rounds}: {t['name']} ...", flush=True)
                row = run_trainer(t, data, cfg, args, lr)
                if "error" in row:
                    print(f"[{size}] {t['name']}: {row['error']}", flush=True)
                runs[t["name"]].append(row)
        rows = []
        for name, tries in runs.items():
            ok = [r for r in tries if "error" not in r]
            if not ok:
                rows.append(tries[0])
                continue
            row = max(ok, key=lambda r: r["tokens_per_s"])
            row["rounds_tokens_per_s"] = [r["tokens_per_s"] for r in ok]
            row["fraction_of_matmul"] = row["tokens_per_s"] * 6 * cfg["d_in"] * cfg["d_sae"] / mm
            rows.append(row)
        ref = next((r for r in rows if r["trainer"] == "sparsify topk (adam)" and "error" not in r), None)
        lens = next((r for r in rows if r["trainer"] == "SAELens batchtopk" and "error" not in r), None)
        btk = next((r for r in rows if r["trainer"] == "ours batchtopk" and "error" not in r), None)
        for r in rows:
            if ref and "error" not in r:
                r["x_vs_sparsify"] = r["tokens_per_s"] / ref["tokens_per_s"]
            if lens and "error" not in r:
                r["x_vs_saelens"] = r["tokens_per_s"] / lens["tokens_per_s"]
            if btk and "error" not in r:  # tok/s come from median steps: the ratio of step times
                r["step_vs_ours_batchtopk"] = btk["tokens_per_s"] / r["tokens_per_s"]
        block = {"config": {k: cfg[k] for k in ("d_in", "d_sae", "k", "batch", "steps", "warmup")},
                 "lr": lr, "threads": args.threads, "dead_tokens": args.dead_tokens, "rounds": args.rounds, "matmul_gflops": mm / 1e9,
                 "fraction_definition": "tokens_per_s * 6 * d_in * d_sae / matmul FLOP/s",
                 "data": {**meta, "file": str(data.relative_to(REPO))}, "rows": rows,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        block["device"] = args.device
        results["sizes"][size if args.device == "cpu" else f"{size}@{args.device}"] = block
        print_table(size, block)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
