"""Command line: ``mne-explorer evolve | sample | serve``.

The only module that wires the engine, the app and progress bars together.  Every option of
``evolve`` is generated from the fields of :class:`mne_core.EvolveConfig` (choices, bounds and
help from ``mne_core/config.py``), so the command line cannot drift from the engine.

Exit codes: 0 ok, 1 warning (the result is there, with the reasons in ``summary.json``),
2 bad input (nothing computed), 3 failed (what was computed is saved, the estimate withheld),
130 interrupted (Ctrl-C / SIGTERM: the accepted steps are saved as a loadable run).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path


def _cli_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_evolve_options(p: argparse.ArgumentParser, *, skip: tuple = ()) -> None:
    """Target options plus one option per EvolveConfig field (from its metadata)."""
    from mne_core.config import FIELDS
    g = p.add_argument_group("target (one of)")
    g.add_argument("--target", help="named target (e.g. two-modes, ring, funnel, many-well) or a JSON spec file")
    g.add_argument("--energy", help="energy expression U_0 in x0 … x{d-1}, e.g. '(x0**2-1)**2 + x1**2/2' "
                                    "(one starting with '-' is passed as --energy=\"-…\")")
    g.add_argument("--dim", type=int, help="dimension (required with --energy; optional for named targets)")
    e = p.add_argument_group("evolution (defaults: mne_core.EvolveConfig)")
    for name, f in FIELDS.items():
        meta = f.metadata
        if not meta["cli"] or name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "auto from d" if meta["auto"] else ("all" if default is None else default)
        kw = {"default": None, "help": f"{meta['help']} (default: {shown})", "dest": name}
        if name == "diffuse":
            kw["metavar"] = "I,J,…"
        elif meta["choices"] is not None:
            kw["choices"] = list(meta["choices"])
        elif meta["bounds"] is not None:
            lo, hi = meta["bounds"]
            kw["type"] = int if isinstance(lo, int) and isinstance(hi, int) else float
        e.add_argument(_cli_name(name), **kw)


def target_warnings(target) -> list[str]:
    """Notes about how the target was read that change nothing but should not be silent:
    a Gaussian mixture whose weights do not sum to 1 is renormalized by the engine."""
    spec = target.spec if isinstance(target.spec, dict) else {}
    if spec.get("kind") != "gaussian_mixture":
        return []
    import numpy as np
    w = np.asarray(spec.get("weights", []), dtype=float)
    total = float(w.sum()) if w.size else 1.0
    if abs(total - 1.0) > 1e-9:
        return [f"the mixture weights summed to {total:.6g}; they were renormalized to "
                f"{', '.join(f'{v:.4g}' for v in w / total)}"]
    return []


def config_from_args(args):
    """(EvolveConfig, Target) from parsed options; options not given keep the config defaults.
    Warnings about the target (see :func:`target_warnings`) are printed and kept in
    ``args.warnings`` for the summary."""
    from mne_core.config import FIELDS, EvolveConfig, parse_coordinates
    from mne_core.targets import resolve_target
    target = resolve_target(target=args.target, energy=args.energy, dim=args.dim)
    notes = target_warnings(target)
    for w in notes:
        print(f"warning: {w}", file=sys.stderr)
    args.warnings = list(getattr(args, "warnings", []) or []) + notes
    values = {}
    for name, f in FIELDS.items():
        if not f.metadata["cli"]:
            continue
        v = getattr(args, name, None)
        if v is None:
            continue
        values[name] = parse_coordinates(v, "--diffuse") if name == "diffuse" else v
    return EvolveConfig(target=target.spec, **values), target


class _Progress:
    """A tqdm bar for the start and the evolution (nothing when quiet)."""

    def __init__(self, quiet: bool, T: float):
        self.bar, self.T = None, T
        if not quiet:
            from tqdm import tqdm
            self.bar = tqdm(total=100, desc="start", unit="%", file=sys.stderr, mininterval=0.5,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")

    def __call__(self, stage, frac, snap=None):
        if self.bar is None:
            return
        self.bar.set_description(stage)
        self.bar.n = int(100 * min(max(frac, 0.0), 1.0))
        if snap is not None:
            self.bar.set_postfix_str(refresh=False, s=f"t = {snap.t:.3f} · steps {snap.num_accepted} · "
                                     f"rejected {snap.num_rejected} · dt {snap.dt:.3g}"
                                     + (f" · err {snap.energy_error:.4f}" if snap.energy_error else ""))
        self.bar.update(0)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _Terminate:
    """SIGTERM raises KeyboardInterrupt, so it ends a command exactly like Ctrl-C (the evolution
    turns it into an ``interrupted`` run)."""

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    @staticmethod
    def _handle(*_):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


class _Shielded:
    """Ctrl-C and SIGTERM are ignored while a result is written (a second Ctrl-C must not lose
    a finished run); the write is short and the command ends right after it."""

    def __enter__(self):
        self.caught, self._old = False, {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._hold)
            except ValueError:  # not the main thread
                pass
        return self

    def _hold(self, *_):
        self.caught = True

    def __exit__(self, exc_type, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class Interrupted(KeyboardInterrupt):
    """Interrupted before any step was accepted: nothing to save."""


def _evolve(cfg, target, quiet: bool):
    """Run :func:`mne_core.evolve` with a progress bar; on Ctrl-C/SIGTERM return what was accepted
    as an ``interrupted`` run (the Evolution keeps it)."""
    import mne_core
    bar = _Progress(quiet, cfg.T)
    holder = {}
    try:
        run = mne_core.evolve(cfg, target, progress=bar, on_evolution=lambda evo: holder.update(evolution=evo))
    except KeyboardInterrupt:
        bar.close()
        evo = holder.get("evolution")
        if evo is None or evo.run is None:
            raise Interrupted("interrupted during the start (before the first step); nothing to save") from None
        run = evo.run
        if run.status != mne_core.Status.INTERRUPTED:
            evo.request_stop()
            run.set_verdict(mne_core.Verdict(mne_core.Status.INTERRUPTED,
                                             ((mne_core.Reason.INTERRUPTED, f"at t = {run.T:.4g}"),)))
        return run
    bar.close()
    return run


def _print_status(kind: str, status, message: str):
    if status.value != "ok":
        print(f"{kind} status: {status.value}" + (f" — {message}" if message else ""), file=sys.stderr)


def _prepare_evolution(cfg, target):
    """Everything that can refuse an evolution before any work: sizes and resources (Evolution's
    constructor) and the energy itself (not normalizable, not finite, exploding)."""
    from mne_core import Evolution
    from mne_core.energy_checks import check_energy
    Evolution(cfg, target)
    check_energy(target)


def _interrupted_line(run, where) -> str:
    return (f"interrupted at t = {run.T:.4g} of {run.config.T:g}: the {max(len(run.times) - 1, 0)} accepted "
            f"steps are saved as a loadable run in {where}")


def cmd_evolve(args) -> int:
    from mne_core import Status
    from mne_core.run import check_output_dir
    cfg, target = config_from_args(args)
    check_output_dir(args.out, overwrite=args.force)
    _prepare_evolution(cfg, target)
    t0 = time.perf_counter()
    run = _evolve(cfg, target, args.quiet)
    if run.wall_seconds is None:
        run.wall_seconds = time.perf_counter() - t0
    run.warnings = list(run.warnings) + list(args.warnings)
    with _Shielded():
        out = run.save(args.out, overwrite=args.force)
    s = run.summary()
    print(json.dumps({k: s[k] for k in ("status", "status_message", "T_reached", "num_accepted_steps",
                                        "num_rejected_steps", "max_energy_error", "wall_seconds")}, default=str))
    if run.status == Status.INTERRUPTED:
        print(_interrupted_line(run, out), file=sys.stderr)
        return run.status.exit_code
    _print_status("run", run.status, run.message)
    print(f"saved run to {out}")
    return run.status.exit_code


def cmd_serve(args) -> int:
    from app.main import serve
    serve(port=args.port, show=args.show, address=args.address)
    return 0


# --------------------------------------------------------------------------- sample


def add_sample_parser(subparsers):
    p = subparsers.add_parser(
        "sample", help="sample a run (or evolve one first) and remove its bias",
        description="Draw weighted samples from an MNE run: reverse probability flow from N(0, I) with the exact "
                    "model density, then bias removal by SMC along the learned path (--method smc, default) or "
                    "one-shot importance weights (--method is); log Z with its standard error, ESS, Pareto k̂, "
                    "a status (ok / warning / failed). Give --run DIR (a saved run, or the output of a previous "
                    "`sample`), or target/evolve options to evolve first (saved in OUT/run).")
    p.add_argument("--run", help="saved run directory (evolve output, or a sample output holding run/)")
    add_evolve_options(p)
    from mne_core.sampling import METHODS
    from mne_core.smc import MIN_PARTICLES, MIN_PARTICLES_DIM
    p.add_argument("--method", choices=list(METHODS), default="smc",
                   help="bias removal: smc (SMC along the MNE path, robust; default) or is (one-shot "
                        "importance weights of the reverse flow)")
    p.add_argument("--n-samples", type=int, default=10000,
                   help=f"number of samples M (default 10000); above d = {MIN_PARTICLES_DIM}, SMC runs M particles "
                        f"and, when that was cheap, more up to {MIN_PARTICLES}, and returns M of them, resampled "
                        "(raw_samples.npy holds the weighted system)")
    p.add_argument("--condition", help="sample z | y = y*: comma-separated index=value pairs, e.g. '0=1.5,2=-1'")
    p.add_argument("--resample", action="store_true",
                   help="write systematically resampled (unweighted) samples to samples.npy")
    p.add_argument("--sample-rtol", type=float, default=1e-6, help="rtol of the reverse-flow solve (default 1e-6)")
    p.add_argument("--sample-atol", type=float, default=1e-8, help="atol of the reverse-flow solve (default 1e-8)")
    p.add_argument("--no-imh", action="store_true", help="skip the independent Metropolis–Hastings chain")
    p.add_argument("--out", required=True, help="output directory (must not exist, or be empty; see --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output of the same kind")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)
    return p


def _resolve_run_dir(path) -> Path:
    d = Path(path)
    if not d.exists():
        raise FileNotFoundError(f"run directory not found: {d}")
    if not (d / "trajectory.npz").is_file() and (d / "run" / "trajectory.npz").is_file():
        return d / "run"
    return d


def _spec_key(spec) -> str:
    return json.dumps(spec, sort_keys=True)


def _json_default(o):
    import numpy as np
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serializable: {type(o)}")


#: Sampling keeps about this many float64 copies of the (M, d + 4) sample arrays alive at once
#: (base normals, flow states and their stages, log q, weights, resampled and IMH copies).
SAMPLE_WORKING_COPIES = 16


def sample_memory_estimate(n_samples: int, dim: int) -> float:
    """Rough peak memory (bytes) of sampling M points in d dimensions: M·(d + 4)·8 bytes times
    :data:`SAMPLE_WORKING_COPIES`."""
    return float(n_samples) * (dim + 4) * 8 * SAMPLE_WORKING_COPIES


#: Bytes per streamed sample kept in memory (its log weight and the verdict's working copies).
STREAM_BYTES_PER_SAMPLE = 8 * 6


def stream_batch(n_samples: int, method: str, resample: bool) -> int | None:
    """The batch size when ``sample`` streams to disk (importance sampling of more than one batch,
    no resampling), else None.  ``MNE_STREAM_BATCH`` overrides the batch size."""
    from mne_core.sampling import STREAM_BATCH
    batch = int(os.environ.get("MNE_STREAM_BATCH", STREAM_BATCH))
    return batch if method == "is" and not resample and n_samples > batch else None


def check_sample_memory(n_samples: int, dim: int, batch: int | None = None, out: Path | None = None) -> None:
    """Refuse (ConfigError, with the estimate) a sample size that would exhaust memory — or, when
    streamed in batches, the disk under ``out`` (``M·(d + 2)·8`` bytes of ``.npy`` files)."""
    import shutil

    from mne_core.config import MEMORY_BUDGET_BYTES, ConfigError
    if batch is None:
        need = sample_memory_estimate(n_samples, dim)
        if need > MEMORY_BUDGET_BYTES:
            most = int(MEMORY_BUDGET_BYTES // sample_memory_estimate(1, dim))
            raise ConfigError(f"--n-samples {n_samples} in {dim}-D would need about {need / 1e9:.1f} GB, over the "
                              f"budget of {MEMORY_BUDGET_BYTES / 1e9:.0f} GB; use at most {most} samples per call "
                              "(--method is streams larger requests to disk in batches)")
        return
    need = sample_memory_estimate(batch, dim) + n_samples * STREAM_BYTES_PER_SAMPLE
    if need > MEMORY_BUDGET_BYTES:
        most = int((MEMORY_BUDGET_BYTES - sample_memory_estimate(batch, dim)) // STREAM_BYTES_PER_SAMPLE)
        raise ConfigError(f"--n-samples {n_samples} would need about {need / 1e9:.1f} GB of memory even streamed "
                          f"in batches of {batch} (the log weights stay in memory), over the budget of "
                          f"{MEMORY_BUDGET_BYTES / 1e9:.0f} GB; use at most {most} samples per call")
    if out is not None:
        disk = float(n_samples) * (dim + 2) * 8
        where = next((p for p in [Path(out).absolute(), *Path(out).absolute().parents] if p.exists()), Path("."))
        free = shutil.disk_usage(where).free
        if disk > 0.9 * free:
            raise ConfigError(f"--n-samples {n_samples} in {dim}-D writes about {disk / 1e9:.1f} GB to {where}, "
                              f"which has {free / 1e9:.1f} GB free")


def _write_samples(where: Path, res, summ: dict, sample_cfg: dict, run, streamed: bool = False) -> None:
    import numpy as np
    if not streamed:  # a streamed sample wrote its arrays there already
        np.save(where / "samples.npy", res.samples)
        np.save(where / "log_weights.npy", res.log_weights)
        if res.log_q is not None:
            np.save(where / "log_q.npy", res.log_q)
    if res.resampled:
        np.save(where / "raw_samples.npy", res.raw_samples)
        np.save(where / "raw_log_weights.npy", res.raw_log_weights)
    if res.imh_samples is not None:
        np.save(where / "imh_samples.npy", res.imh_samples)
    (where / "summary.json").write_text(json.dumps(summ, indent=2, default=_json_default))
    (where / "sample_config.json").write_text(json.dumps(sample_cfg, indent=2))
    (where / "config.json").write_text(run.config.to_json())


def _inside(a: Path, b: Path) -> bool:
    """True when path ``a`` is ``b`` or lies inside it."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def cmd_sample(args) -> int:
    import shutil
    from mne_core import Status
    from mne_core.conditionals import normalize_condition, parse_condition
    from mne_core.flow import SamplingError
    from mne_core.run import check_output_dir, load_run, replace_directory, staging_directory
    from mne_core.sampling import sample, sample_to_disk
    from mne_core.targets import original_target, resolve_target

    t0 = time.perf_counter()
    args.warnings = []
    cond = parse_condition(args.condition)
    if args.n_samples is None or args.n_samples < 2:
        raise SamplingError(f"--n-samples must be at least 2, got {args.n_samples}")
    out = Path(args.out)
    evolve_seconds = None
    batch = stream_batch(args.n_samples, args.method, args.resample)
    if args.run:
        run_dir = _resolve_run_dir(args.run)
        if _inside(out, run_dir):
            raise SamplingError(f"--out {out} is inside the run it reads ({run_dir}); choose another directory")
        if _inside(run_dir, out):
            raise SamplingError(f"--out {out} holds the run it reads ({run_dir}); replacing it would delete "
                                "that run; choose another directory")
        check_output_dir(out, overwrite=args.force, kind="sample")
        run = load_run(run_dir)
        check_sample_memory(args.n_samples, run.target.dim, batch, out)
        if args.target is not None or args.energy is not None:
            given = resolve_target(target=args.target, energy=args.energy, dim=args.dim)
            if given.dim != run.target.dim:
                raise SamplingError(f"mismatched dimensions: the target given is {given.dim}-D but the run "
                                    f"in {run_dir} is {run.target.dim}-D")
            run_spec = original_target(run.target).spec     # a standardized run: its target in x
            if _spec_key(given.spec) != _spec_key(run_spec):
                raise SamplingError(f"the run in {run_dir} is for target {_spec_key(run_spec)}, not the "
                                    f"target given ({_spec_key(given.spec)}); drop --target/--energy or use "
                                    f"a run of that target")
        elif args.dim is not None and int(args.dim) != run.target.dim:
            raise SamplingError(f"mismatched dimensions: --dim {args.dim} but the run in {run_dir} is "
                                f"{run.target.dim}-D")
        if cond is not None:
            normalize_condition(cond, run.target.dim)
        args.warnings += list(run.warnings)
        if run.status != Status.OK:
            note = (f"the run in {run_dir} ended {run.status.value}" + (f" ({run.message})" if run.message else "")
                    + "; sampling what was recorded")
            print(f"warning: {note}", file=sys.stderr)
            args.warnings.append(note)
        run_dir_final = Path(run_dir)
        stage = staging_directory(out)
    else:
        check_output_dir(out, overwrite=args.force, kind="sample")
        cfg, target = config_from_args(args)
        check_sample_memory(args.n_samples, target.dim, batch, out)
        if cond is not None:
            cond = normalize_condition(cond, target.dim)
            want = tuple(i for i in range(target.dim) if i not in cond)
            if cfg.diffuse is not None and tuple(sorted(cfg.diffuse)) != want:
                raise SamplingError(f"--diffuse {','.join(map(str, cfg.diffuse))} contradicts --condition: the "
                                    f"conditioned run must diffuse exactly coordinates {list(want)}")
            cfg = cfg.replace(diffuse=want)
        _prepare_evolution(cfg, target)
        te = time.perf_counter()
        run = _evolve(cfg, target, args.quiet)
        evolve_seconds = time.perf_counter() - te
        if run.wall_seconds is None:
            run.wall_seconds = evolve_seconds
        run.warnings = list(run.warnings) + list(args.warnings)
        # The whole output is built beside OUT and moved into place at the end; the run is
        # moved there on its own if sampling does not finish, so it is never lost.
        stage = staging_directory(out)
        run_dir_final = out / "run"
        try:
            with _Shielded():
                run.save(stage / "run")
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if run.status == Status.INTERRUPTED:
            with _Shielded():
                replace_directory(stage, out)
            print(_interrupted_line(run, run_dir_final) + "; nothing was sampled", file=sys.stderr)
            return run.status.exit_code
        if run.status != Status.OK:
            note = f"the evolution ended {run.status.value} ({run.message}); sampling from what was recorded"
            print(f"warning: {note}", file=sys.stderr)
            args.warnings.append(note)
    if not args.quiet:
        from mne_core.smc import smc_particles
        system = smc_particles(args.n_samples, run.target.dim) if args.method == "smc" else args.n_samples
        print(f"sampling {args.n_samples} points ({args.method}"
              + (f", drawn from a system of up to {system} particles" if system > args.n_samples else "") + ") …",
              file=sys.stderr, flush=True)
    bar = _Progress(args.quiet, 1.0)
    try:
        try:
            if batch is not None:  # bounded memory: batches written to the staging directory as they finish
                res = sample_to_disk(run, args.n_samples, stage, seed=args.seed or 0, batch=batch, condition=cond,
                                     rtol=args.sample_rtol, atol=args.sample_atol, progress=bar)
            else:
                res = sample(run, args.n_samples, seed=args.seed or 0, condition=cond, resample=args.resample,
                             rtol=args.sample_rtol, atol=args.sample_atol, imh=not args.no_imh, method=args.method,
                             progress=bar)
            bar.close()
        except KeyboardInterrupt:
            bar.close()
            if not args.run:
                with _Shielded():
                    replace_directory(stage, out)
                print(f"interrupted while sampling; the run is saved in {run_dir_final}", file=sys.stderr)
            else:
                print("interrupted while sampling; nothing written", file=sys.stderr)
            return Status.INTERRUPTED.exit_code
        except Exception:
            if not args.run:  # keep the evolution that was computed
                with _Shielded():
                    replace_directory(stage, out)
                print(f"sampling failed; the run is saved in {run_dir_final}", file=sys.stderr)
            raise
        summ = res.summary()
        summ["target"] = run.target.name
        summ["sample_seconds"] = res.wall_seconds
        summ["evolve_seconds"] = evolve_seconds
        summ["wall_seconds"] = time.perf_counter() - t0
        summ["warnings"] = list(summ.get("warnings", []) or []) + list(args.warnings)
        if batch is not None:
            summ["streamed"] = {"batch": batch, "batches": -(-int(args.n_samples) // batch),
                                "seeds": "mne_core.sampling.batch_seed(seed, k)", "imh": "not run (needs every sample in memory)"}
        run_path = str(run_dir_final.resolve())
        sample_cfg = {"run": run_path, "run_is_output": not args.run,
                      "method": args.method, "n_samples": int(args.n_samples), "seed": int(args.seed or 0),
                      "condition": None if cond is None else {str(k): v for k, v in dict(cond).items()},
                      "resample": bool(args.resample), "rtol": args.sample_rtol, "atol": args.sample_atol,
                      "imh": not args.no_imh,
                      "command": ["mne-explorer", "sample", "--run", run_path, "--method",
                                  args.method, "--n-samples", str(args.n_samples), "--seed", str(args.seed or 0)]
                      + (["--condition", args.condition] if args.condition else [])
                      + (["--resample"] if args.resample else []) + ["--out", "OUT"]}
        with _Shielded():
            _write_samples(stage, res, summ, sample_cfg, run, streamed=batch is not None)
            replace_directory(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    keys = ["status", "status_message", "method", "log_z", "log_z_stderr", "log_z_exact", "ess", "ess_fraction",
            "pareto_k", "mode_masses", "mode_masses_stderr", "mode_masses_exact", "wall_seconds"]
    line = {k: summ[k] for k in keys if k in summ}
    if summ.get("smc"):    # the system the estimates come from (it may have grown beyond the samples)
        line["smc_particles"] = summ["smc"]["particles"]
    print(json.dumps(line, default=_json_default))
    _print_status("sample", res.status, res.verdict.message)
    print(f"saved samples to {out}")
    return res.status.exit_code


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mne-explorer", description="Minimal Neural Evolution explorer",
                                epilog="exit codes: 0 ok, 1 warning, 2 bad input, 3 failed, 130 interrupted")
    sub = p.add_subparsers(dest="command", required=True)
    pe = sub.add_parser("evolve", help="run MNE headless and save the run")
    add_evolve_options(pe)
    pe.add_argument("--out", required=True, help="output directory for the run (must not exist, or be empty)")
    pe.add_argument("--force", action="store_true", help="replace an existing run directory")
    pe.add_argument("--quiet", action="store_true", help="no progress bar")
    pe.set_defaults(func=cmd_evolve)
    ps = sub.add_parser("serve", help="serve the dashboard")
    ps.add_argument("--port", type=int, default=5006)
    ps.add_argument("--address", default="localhost")
    ps.add_argument("--show", action="store_true", help="open a browser")
    ps.set_defaults(func=cmd_serve)
    add_sample_parser(sub)
    return p


def main(argv=None) -> int:
    import os
    # Before NumPy is first imported (importing mne_core imports it): OpenBLAS reads this once.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mne_core.runtime import configure
    configure()  # float64, compilation cache: once, at process start
    parser = build_parser()
    args = parser.parse_args(argv)
    from mne_core import ConfigError, EvolutionError, ExpressionError, TargetSpecError
    from mne_core.run import RunFileError
    try:
        if args.command == "serve":  # the server keeps its own signal handling
            return args.func(args)
        with _Terminate():
            return args.func(args)
    except (ConfigError, EvolutionError, ExpressionError, TargetSpecError, RunFileError, FileNotFoundError,
            FileExistsError, NotADirectoryError, PermissionError, ValueError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        msg = "stopped" if args.command == "serve" else "interrupted; nothing to save"
        print(str(e) if isinstance(e, Interrupted) else msg, file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
