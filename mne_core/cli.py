"""Command line: ``mne-explorer evolve | sample | serve``.

``evolve`` runs MNE headless with a progress bar and writes a reproducible run directory
(config.json, trajectory.npz, diagnostics.json, summary.json) that
:func:`mne_core.load_run` reads back.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def add_evolve_options(p: argparse.ArgumentParser):
    from .config import EvolveConfig
    d = EvolveConfig()
    g = p.add_argument_group("target (one of)")
    g.add_argument("--target", help="named target (e.g. two-modes, ring, funnel) or a JSON spec file")
    g.add_argument("--energy", help="energy expression U_0 in x0 … x{d-1}, e.g. '(x0**2-1)**2 + x1**2/2'")
    g.add_argument("--dim", type=int, help="dimension (required with --energy; optional for named targets)")
    p.add_argument("--T", type=float, default=d.T, help=f"final time (default {d.T})")
    p.add_argument("--solver", choices=["sketch", "full", "galerkin", "subspace"], default=d.solver)
    p.add_argument("--sketch-rank", type=int, default=d.sketch_rank, help=f"sketch rank n (default {d.sketch_rank})")
    p.add_argument("--sketch-kind", choices=["sparse", "gaussian"], default=d.sketch_kind)
    p.add_argument("--reg", type=float, default=d.reg, help=f"relative regularization λ_rel (default {d.reg})")
    p.add_argument("--integrator", choices=["tsit5", "dopri5", "dopri8"], default=d.integrator)
    p.add_argument("--rtol", type=float, default=d.rtol)
    p.add_argument("--atol", type=float, default=d.atol)
    p.add_argument("--n-points", type=int, default=d.n_points, help="collocation points N")
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--activation", default=d.activation)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--precision", choices=["float64", "float32"], default=d.precision)
    p.add_argument("--init", choices=["mala", "exact"], default=d.init,
                   help="start points: data-free tempered MALA (default) or exact samples (diagnostic only)")
    p.add_argument("--fit-steps", type=int, default=d.fit_steps)
    p.add_argument("--gn-steps", type=int, default=d.gn_steps)
    p.add_argument("--fit-points", type=int, default=d.fit_points)
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--diffuse", help="comma-separated coordinates that diffuse (partial diffusion); default all")


def config_from_args(args):
    """EvolveConfig from parsed CLI options (resolving the target with clear errors)."""
    from .config import ConfigError, EvolveConfig
    from .targets import resolve_target
    target = resolve_target(target=args.target, energy=args.energy, dim=args.dim)
    diffuse = None
    if getattr(args, "diffuse", None):
        try:
            diffuse = tuple(int(s) for s in args.diffuse.split(","))
        except ValueError:
            raise ConfigError(f"--diffuse must be comma-separated integers, got {args.diffuse!r}") from None
    cfg = EvolveConfig(target=target.spec, T=args.T, solver=args.solver, sketch_rank=args.sketch_rank,
                       sketch_kind=args.sketch_kind, reg=args.reg, integrator=args.integrator,
                       rtol=args.rtol, atol=args.atol, n_points=args.n_points, width=args.width,
                       depth=args.depth, activation=args.activation, seed=args.seed,
                       precision=args.precision, init=args.init, fit_steps=args.fit_steps,
                       gn_steps=args.gn_steps, fit_points=args.fit_points, max_steps=args.max_steps,
                       diffuse=diffuse)
    return cfg, target


def run_evolution(cfg, target=None, quiet=False, reg_retries: int = 2):
    """Prepare and integrate with a tqdm progress bar; returns (Run, status), also on failure.

    If the evolution becomes singular (step-size collapse or a non-finite state), the run is
    repeated with a 10× larger relative regularization, at most ``reg_retries`` times: a
    larger λ damps the poorly resolved directions of the NTK that drive the blow-up, at a
    small cost in accuracy.  The saved config holds the λ that was finally used, and the
    summary lists the escalations.
    """
    from tqdm import tqdm
    from .evolution import Evolution
    t0 = time.perf_counter()
    escalations = []
    while True:
        evo = Evolution(cfg, target)
        bar = None if quiet else tqdm(total=100, desc="start", unit="%", file=sys.stderr, mininterval=0.5,
                                      bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")

        def progress(stage, frac):
            if bar is not None:
                bar.set_description(stage)
                bar.n = int(100 * frac)
                bar.update(0)
        evo.prepare(progress)
        if bar is not None:
            bar.set_description("evolve")
        for snap in evo.steps(spectrum_every=10):
            if bar is not None:
                bar.n = int(100 * snap.t / cfg.T)
                bar.set_postfix_str(refresh=False, s=f"t = {snap.t:.3f} · steps {snap.num_accepted} · "
                                    f"rejected {snap.num_rejected} · dt {snap.dt:.3g}"
                                    + (f" · err {snap.energy_error:.4f}" if snap.energy_error else ""))
                bar.update(0)
        if bar is not None:
            bar.close()
        singular = evo.status.startswith("failed") and ("collapsed" in evo.status or "non-finite" in evo.status)
        if not singular or len(escalations) >= reg_retries or cfg.reg * 10 >= 1:
            break
        escalations.append({"reg": cfg.reg, "status": evo.status})
        print(f"note: {evo.status}; retrying with reg = {cfg.reg * 10:g}", file=sys.stderr)
        cfg = cfg.replace(reg=cfg.reg * 10)
    evo.run.wall_seconds = time.perf_counter() - t0
    evo.run.reg_escalations = escalations
    return evo.run, evo.status


def cmd_evolve(args) -> int:
    cfg, target = config_from_args(args)
    run, status = run_evolution(cfg, target, args.quiet)
    out = run.save(args.out)
    s = run.summary()
    print(json.dumps({k: s[k] for k in ("status", "T_reached", "num_accepted_steps", "num_rejected_steps",
                                        "max_energy_error", "wall_seconds")}, default=str))
    print(f"saved run to {out}")
    return 0 if status == "done" else 3


def cmd_serve(args) -> int:
    from app.main import serve
    serve(port=args.port, show=args.show, address=args.address)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mne-explorer", description="Minimal Neural Evolution explorer")
    sub = p.add_subparsers(dest="command", required=True)
    pe = sub.add_parser("evolve", help="run MNE headless and save the run")
    add_evolve_options(pe)
    pe.add_argument("--out", required=True, help="output directory for the run")
    pe.add_argument("--quiet", action="store_true", help="no progress bar")
    pe.set_defaults(func=cmd_evolve)
    ps = sub.add_parser("serve", help="serve the dashboard")
    ps.add_argument("--port", type=int, default=5006)
    ps.add_argument("--address", default="localhost")
    ps.add_argument("--show", action="store_true", help="open a browser")
    ps.set_defaults(func=cmd_serve)
    try:
        from .sampling import add_sample_parser
        add_sample_parser(sub)
    except ImportError:
        pass
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .config import enable_compilation_cache
    enable_compilation_cache()
    from .config import ConfigError
    from .evolution import EvolutionError
    from .expressions import ExpressionError
    from .targets import TargetSpecError
    try:
        return args.func(args)
    except (ConfigError, EvolutionError, ExpressionError, TargetSpecError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
