"""Recorded runs: every frame a finished run showed (points, spectrum, weight histograms,
diagnostics and contours), kept per server and played at once by any session that asks for the
same settings.

A recording is made from a live lane when it ends (:func:`record_lane`), or offline for a shipped
preset (:func:`record` → :meth:`Recording.save`; ``python -m app.recordings`` rebuilds the shipped
ones).  It is keyed by the run's config and projection (:func:`recording_key`): the engine is
deterministic for a given config and seed, so the recording *is* that run — a session plays it
instead of recomputing it (a class of 30 opening the same preset starts no evolution), and the
page says that it is a recording (``▶ Run`` computes it live).

Nothing here computes physics: frames are the engine's Snapshots and the contours of
:mod:`app.fields`.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import threading
import time
from pathlib import Path

import numpy as np
from mne_core.evolution import Snapshot

from app.fields import Field

__all__ = ["Recording", "recording_key", "lookup", "store", "record_lane", "record", "weight_histograms",
           "SHIPPED_DIR", "MAX_RECORDINGS", "MAX_FIELDS"]

#: Recordings kept in memory per server process (least recently used dropped first).
MAX_RECORDINGS = 16
#: Contour frames kept per recording (thinned evenly beyond it).
MAX_FIELDS = 24
#: Frames (accepted steps) kept per recording (thinned evenly beyond it, first and last kept).
MAX_FRAMES = 400
#: Shipped recordings (``<preset>.npz``), loaded on first lookup.
SHIPPED_DIR = Path(__file__).parent / "recorded"
#: Bins of the per-layer weight histograms (as the live Weights plot draws them).
WEIGHT_BINS = 40
#: Snapshot fields stored per frame as numbers.
_SCALARS = ("t", "dt", "step", "num_accepted", "num_rejected", "accepted", "residual", "reg", "sketch_rank",
            "energy_error", "wall_time")


def recording_key(config, proj=(0, 1)) -> str:
    """Equal for two runs exactly when their configs (as the page builds them) and displayed
    coordinates agree."""
    text = config.to_json() + f"|proj={tuple(int(p) for p in proj)}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def weight_histograms(layer_weights: dict | None, bins: int = WEIGHT_BINS) -> dict:
    """``{layer: (edges, density)}``: the histogram of each layer's finite weights."""
    data = {}
    for name, w in (layer_weights or {}).items():
        w = np.asarray(w, dtype=float).ravel()
        w = w[np.isfinite(w)]
        if w.size == 0:
            continue
        lo, hi = float(w.min()), float(w.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        density, edges = np.histogram(w, bins=bins, range=(lo, hi), density=True)
        data[str(name)] = (edges, density)
    return data


@dataclasses.dataclass
class Recording:
    """The frames of one finished run.  ``snapshots`` are engine Snapshots (with
    ``layer_histograms`` instead of raw weights), ``fields`` the contour frames in time order;
    ``state`` / ``message`` the lane's verdict (done | warning | failed and the reason)."""

    key: str
    label: str
    T: float
    dim: int
    proj: tuple
    snapshots: list
    fields: list
    state: str
    message: str = ""
    spectra: list = dataclasses.field(default_factory=list)  # (t, full N×N NTK eigenvalues), in time order
    source: str = "this server"    # "this server" | "shipped"
    created: float = dataclasses.field(default_factory=time.time)

    @property
    def wall_time(self) -> float:
        return float(self.snapshots[-1].wall_time) if self.snapshots else 0.0

    def field_at(self, t: float) -> Field:
        """The recorded contour frame nearest to (and not after) time t."""
        best = self.fields[0]
        for f in self.fields:
            if f.t <= t + 1e-12:
                best = f
        return best

    def spectrum_at(self, t: float):
        """The recorded full-NTK spectrum ``(t_k, eig)`` nearest to (and not after) t, or None."""
        best = self.spectra[0] if self.spectra else None
        for spec in self.spectra:
            if spec[0] <= t + 1e-12:
                best = spec
        return best

    # --- files ------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """One compressed ``.npz`` (points and contours in float16: a display needs no more)."""
        path = Path(path)
        snaps = self.snapshots
        n_eig = max(len(np.ravel(s.gram_eigenvalues)) for s in snaps)
        eig = np.full((len(snaps), n_eig), np.nan, dtype=np.float32)
        for i, s in enumerate(snaps):
            e = np.ravel(np.asarray(s.gram_eigenvalues, dtype=np.float32))
            eig[i, :e.size] = e
        layers = sorted({name for s in snaps for name in (s.layer_histograms or {})})
        hist_edges = np.full((len(snaps), len(layers), WEIGHT_BINS + 1), np.nan, dtype=np.float32)
        hist_dens = np.full((len(snaps), len(layers), WEIGHT_BINS), np.nan, dtype=np.float32)
        for i, s in enumerate(snaps):
            for j, name in enumerate(layers):
                if name in (s.layer_histograms or {}):
                    edges, dens = s.layer_histograms[name]
                    hist_edges[i, j], hist_dens[i, j] = edges, dens
        f0 = self.fields[0]
        nan_grid = np.full((len(f0.ys), len(f0.xs)), np.nan)
        arrays = {
            **{f"s_{k}": np.array([np.nan if getattr(s, k) is None else float(getattr(s, k)) for s in snaps])
               for k in _SCALARS},
            "points": np.stack([np.asarray(s.points, dtype=np.float16) for s in snaps]),
            "eig": eig, "hist_edges": hist_edges, "hist_density": hist_dens, "layers": np.array(layers),
            "status": np.array([str(getattr(s.status, "value", s.status)) for s in snaps]),
            "f_t": np.array([f.t for f in self.fields]), "f_xs": f0.xs, "f_ys": f0.ys,
            "f_extent": np.array(f0.extent, dtype=float),
            "f_model": np.stack([(nan_grid if f.model is None else f.model).astype(np.float16) for f in self.fields]),
            "f_exact": np.stack([(nan_grid if f.exact is None else f.exact).astype(np.float16) for f in self.fields]),
            "full_t": np.array([t for t, _ in self.spectra], dtype=float),
            "full_eig": (np.stack([np.asarray(e, dtype=np.float32) for _, e in self.spectra]) if self.spectra
                         else np.zeros((0, 0), np.float32)),
            "meta": np.array([self.key, self.label, self.state, self.message, repr(tuple(self.proj))]),
            "meta_num": np.array([self.T, self.dim, self.created]),
        }
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path, source: str = "shipped") -> "Recording":
        from mne_core import Status

        with np.load(Path(path), allow_pickle=False) as npz:
            z = {k: npz[k] for k in npz.files}  # each npz[k] decompresses the whole array
            key, label, state, message, proj = (str(v) for v in z["meta"])
            T, dim, created = (float(v) for v in z["meta_num"])
            layers = [str(v) for v in z["layers"]]
            snaps = []
            for i in range(len(z["s_t"])):
                num = {k: z[f"s_{k}"][i] for k in _SCALARS}
                eig = z["eig"][i]
                hist = {name: (z["hist_edges"][i, j].astype(float), z["hist_density"][i, j].astype(float))
                        for j, name in enumerate(layers) if np.isfinite(z["hist_edges"][i, j]).all()}
                snap = _frame(Snapshot(t=float(num["t"]), dt=float(num["dt"]), step=int(num["step"]),
                                num_accepted=int(num["num_accepted"]), num_rejected=int(num["num_rejected"]),
                                accepted=bool(num["accepted"]), residual=float(num["residual"]),
                                points=z["points"][i].astype(float), gram_eigenvalues=eig[np.isfinite(eig)].astype(float),
                                reg=float(num["reg"]), sketch_rank=int(num["sketch_rank"]), layer_weights={},
                                energy_error=None if np.isnan(num["energy_error"]) else float(num["energy_error"]),
                                status=Status(str(z["status"][i])), wall_time=float(num["wall_time"])), hist)
                snaps.append(snap)
            xs, ys, extent = z["f_xs"], z["f_ys"], tuple(float(v) for v in z["f_extent"])
            fields = [Field(float(t), xs, ys, _grid(z["f_model"][k]), _grid(z["f_exact"][k]), extent)
                      for k, t in enumerate(z["f_t"])]
            spectra = ([(float(t), z["full_eig"][k].astype(float)) for k, t in enumerate(z["full_t"])]
                       if "full_t" in z else [])
        return cls(key=key, label=label, T=T, dim=int(dim), proj=tuple(int(p) for p in proj.strip("()").split(",") if p.strip()),
                   snapshots=snaps, fields=fields, state=state, message=message, spectra=spectra, source=source,
                   created=created)


@dataclasses.dataclass(frozen=True)
class RecordedSnapshot(Snapshot):
    """A recorded frame: a Snapshot whose ``layer_histograms`` replace ``layer_weights``."""

    layer_histograms: dict = dataclasses.field(default_factory=dict)


def _frame(snap, hist: dict) -> RecordedSnapshot:
    """A Snapshot that carries per-layer weight histograms instead of the weights."""
    values = {f.name: getattr(snap, f.name) for f in dataclasses.fields(Snapshot)}
    values["layer_weights"] = {}
    values["points"] = np.asarray(values["points"], dtype=np.float32)  # a display needs no more
    return RecordedSnapshot(**values, layer_histograms=hist)


def _grid(values):
    values = np.asarray(values, dtype=float)
    return values if np.isfinite(values).any() else None


# --- the server's store ----------------------------------------------------------------------
_STORE: "collections.OrderedDict[str, Recording]" = collections.OrderedDict()
_LOCK = threading.Lock()
_SHIPPED = {"loaded": False}


def _load_shipped():
    if _SHIPPED["loaded"]:
        return
    _SHIPPED["loaded"] = True
    for path in sorted(SHIPPED_DIR.glob("*.npz")):
        try:
            rec = Recording.load(path, source="shipped")
        except Exception as err:  # a damaged file costs its recording, never the page
            print(f"MNE Explorer: ignoring the recording {path.name}: {err}")
            continue
        _STORE.setdefault(rec.key, rec)


def lookup(key: str) -> Recording | None:
    """The recording of ``key`` (this server's, or a shipped one), or None."""
    with _LOCK:
        _load_shipped()
        rec = _STORE.get(key)
        if rec is not None:
            _STORE.move_to_end(key)
        return rec


def store(rec: Recording) -> None:
    """Keep ``rec`` for every session of this server (bounded: the least recently used goes)."""
    with _LOCK:
        _load_shipped()
        _STORE[rec.key] = rec
        _STORE.move_to_end(rec.key)
        while len(_STORE) > MAX_RECORDINGS:
            _STORE.popitem(last=False)


def clear() -> None:
    """Forget every recording (tests)."""
    with _LOCK:
        _STORE.clear()
        _SHIPPED["loaded"] = False


def _thin(items: list, most: int) -> list:
    if len(items) <= most:
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, most).round().astype(int))
    return [items[i] for i in idx]


def _strip(snap):
    """A Snapshot with its raw layer weights replaced by their histograms (a recording keeps
    what the plots draw, not the network)."""
    hist = getattr(snap, "layer_histograms", None)
    if hist is None:
        hist = weight_histograms(snap.layer_weights)
    return _frame(snap, hist)


def _compact(f: Field) -> Field:
    """A contour frame in float32 (half the memory of a kept recording; a display needs no more)."""
    as32 = lambda a: None if a is None else np.asarray(a, dtype=np.float32)  # noqa: E731
    return Field(f.t, f.xs, f.ys, as32(f.model), as32(f.exact), f.extent)


def make_recording(key: str, label: str, T: float, dim: int, proj, snapshots, fields, state: str,
                   message: str = "", spectra=(), source: str = "this server") -> Recording:
    """A Recording of accepted ``snapshots`` (the t = 0 one first), contour ``fields`` and full
    NTK ``spectra`` ((t, eig) pairs)."""
    fields = [_compact(f) for f in _thin(sorted(fields, key=lambda f: f.t), MAX_FIELDS)]
    spectra = sorted(spectra, key=lambda s: s[0])
    return Recording(key=key, label=label, T=float(T), dim=int(dim), proj=tuple(proj),
                     snapshots=[_strip(s) for s in snapshots], fields=fields, state=state,
                     message=message, spectra=_thin(spectra, MAX_FIELDS), source=source)


def record_lane(lane) -> Recording | None:
    """The recording of a live lane that has ended (None when it has nothing to play)."""
    config = getattr(lane.factory, "config", None)
    if (config is None or lane.recorded or not lane.history or not lane.fields
            or lane.state not in ("done", "warning", "failed")):
        return None
    with lane.lock:
        snaps = _thin(list(lane.history), MAX_FRAMES)
    proj = tuple(lane.requested_proj)  # the key a session asking for these settings computes
    return make_recording(recording_key(config, proj), lane.label, lane.T, lane.dim, lane.proj, snaps,
                          list(lane.fields), lane.state, lane.message, spectra=list(lane.spectra))


def record(config, proj=(0, 1), label: str = "", fields_every: int = 3) -> Recording:
    """Run ``config`` to the end here (no worker, no page) and record it as a lane would."""
    import mne_core

    from app.fields import field_at, has_exact_evolution, initial_field

    evo = mne_core.Evolution(config)
    first, grid = initial_field(evo.target, proj)
    has_exact = has_exact_evolution(evo.target)
    snaps = [evo.prepare()]
    fields = [field_at(evo.run, evo.target, grid, first, 0.0, has_exact)]
    spectra = [evo.run.ntk_spectrum(0.0)]
    for snap in evo.steps():
        if snap.accepted:
            snaps.append(snap)
            if len(snaps) % fields_every == 0:
                fields.append(field_at(evo.run, evo.target, grid, first, snap.t, has_exact))
                spectra.append(evo.run.ntk_spectrum(snap.t))
    fields.append(field_at(evo.run, evo.target, grid, first, snaps[-1].t, has_exact))
    spectra.append(evo.run.ntk_spectrum(snaps[-1].t))
    status = evo.status
    state = {"ok": "done"}.get(str(status.value), str(status.value))
    return make_recording(recording_key(config, proj), label, config.T, evo.target.dim, proj, snaps, fields,
                          state, evo.message or "", spectra=spectra, source="shipped")


def main(argv=None) -> int:
    """``python -m app.recordings [PRESET ...]``: rebuild the shipped recordings (default preset)."""
    import argparse

    from mne_core.runtime import configure

    from app.settings import PRESETS, Settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("presets", nargs="*", default=[PRESETS["default"]])
    args = parser.parse_args(argv)
    configure()
    SHIPPED_DIR.mkdir(exist_ok=True)
    for name in args.presets:
        s = Settings(preset=name)
        t0 = time.perf_counter()
        rec = record(s.to_config(), (s.proj_x, s.proj_y), label=name)
        path = rec.save(SHIPPED_DIR / f"{name}.npz")
        print(f"{name}: {len(rec.snapshots)} frames, {len(rec.fields)} contour frames, {rec.state}, "
              f"{time.perf_counter() - t0:.1f} s → {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
