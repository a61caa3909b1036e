"""Points split across two (host) devices: the sharded sketch right-hand side and a short evolution
match the single-device ones in float64.  Runs in a subprocess because the test process is pinned
to one device (tests/conftest.py); there XLA_FLAGS gives the CPU two devices."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import mne_core as mc
from mne_core import sharding
from mne_core.evolution import mne_rhs, mne_vector_field
from mne_core.integrate import Stepper, make_controller
from mne_core.operators import OUEnergy
assert jax.device_count() == 2, jax.devices()
out = {}
net, th = mc.init_energy_network(2, 16, 2, "silu", seed=3)
th = th + 0.2 * jax.random.normal(jax.random.PRNGKey(9), th.shape)
N = 64
x = 1.4 * jax.random.normal(jax.random.PRNGKey(1), (N, 2))
op = OUEnergy()
mesh = sharding.point_mesh()
reg = jnp.asarray(1e-6)
for kind in ("sparse", "gaussian"):
    sk = mc.make_sketch(jax.random.PRNGKey(2), N, 24, kind)
    a_td, a_xd, a_info = mne_rhs(net, op, "sketch", 0.2, th, x, sk, reg, gram="jacobian")
    rhs = jax.jit(sharding.sharded_sketch_rhs(net, op, mesh, sharding.is_sparse(sk)))
    xs = sharding.shard_points(mesh, x)
    b_td, b_xd, b_info = rhs(0.2, th, xs, sharding.shard_points(mesh, sk.dense), reg)
    out[kind] = dict(td=float(jnp.max(jnp.abs(b_td - a_td)) / jnp.max(jnp.abs(a_td))),
                     xd=float(jnp.max(jnp.abs(b_xd - a_xd)) / jnp.max(jnp.abs(a_xd))),
                     res=abs(float(b_info.residual) - float(a_info.residual)),
                     x_devices=len(xs.sharding.device_set), xd_devices=len(b_xd.sharding.device_set))
# a short evolution: 5 accepted-or-rejected Tsit5 steps, sharded vs single device
sk = mc.make_sketch(jax.random.PRNGKey(2), N, 24)
def evolve(vf, x0):
    st = Stepper(vf, "tsit5")
    ctrl = make_controller(1e-5, 1e-7)
    args = (sk, jnp.asarray(1e-4))   # well conditioned: roundoff not amplified past 1e-10
    s = st.init(jnp.asarray(0.0), jnp.asarray(1.0), (th, x0), args, ctrl)
    for _ in range(5):
        s = st.step(s, args, ctrl, 1.0).state
    return s
s1 = evolve(mne_vector_field(net, op, "sketch", "jacobian"), x)
s2 = evolve(sharding.sharded_vector_field(net, op, mesh), sharding.shard_points(mesh, x))
out["evolution"] = dict(t=float(s1.tprev), t2=float(s2.tprev),
                        theta=float(jnp.max(jnp.abs(s2.y[0] - s1.y[0])) / jnp.max(jnp.abs(s1.y[0]))),
                        x=float(jnp.max(jnp.abs(s2.y[1] - s1.y[1])) / jnp.max(jnp.abs(s1.y[1]))))
import diffrax
def fixed(vf, x0):
    sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), diffrax.Tsit5(), 0.0, 0.5, 0.05, (th, x0), (sk, reg),
                              stepsize_controller=diffrax.ConstantStepSize(), saveat=diffrax.SaveAt(t1=True))
    return sol.ys
f1 = fixed(mne_vector_field(net, op, "sketch", "jacobian"), x)
f2 = fixed(sharding.sharded_vector_field(net, op, mesh), sharding.shard_points(mesh, x))
out["fixed_steps"] = dict(theta=float(jnp.max(jnp.abs(f2[0] - f1[0])) / jnp.max(jnp.abs(f1[0]))),
                          x=float(jnp.max(jnp.abs(f2[1] - f1[1])) / jnp.max(jnp.abs(f1[1]))))
print("RESULT" + json.dumps(out))
'''


def _on_two_devices(script: str) -> dict:
    """Run ``script`` with two forced CPU devices in float64; the JSON it prints after RESULT."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_ENABLE_X64": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_sharded_sketch_matches_single_device():
    r = _on_two_devices(SCRIPT)
    for kind in ("sparse", "gaussian"):
        assert r[kind]["x_devices"] == 2 and r[kind]["xd_devices"] == 2   # really split across both devices
        assert r[kind]["td"] < 1e-10 and r[kind]["xd"] < 1e-10 and r[kind]["res"] < 1e-10, r
    # 10 fixed Tsit5 steps: the same trajectory to 1e-10
    assert r["fixed_steps"]["theta"] < 1e-10 and r["fixed_steps"]["x"] < 1e-10, r
    # 5 adaptive steps: the PID controller turns 1e-13 roundoff in the error estimate into
    # ~1e-9 relative differences of the step sizes, hence the state (measured 3e-10)
    ev = r["evolution"]
    assert abs(ev["t"] - ev["t2"]) < 1e-8 and ev["theta"] < 1e-8 and ev["x"] < 1e-8, r


FLOW_SCRIPT = r'''
import json
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import mne_core as mc
from mne_core import sharding
assert jax.device_count() == 2, jax.devices()
tgt = mc.target_from_spec({"kind": "named", "name": "two-modes"})
energy_at = lambda params, t: (lambda x: tgt.evolved_energy(t, x, None))
M, T = 64, 3.0
x_T = jax.random.normal(jax.random.PRNGKey(4), (M, 2))
lq_T = -0.5 * jnp.sum(x_T ** 2, -1) - jnp.log(2 * jnp.pi)
a = mc.reverse_flow(energy_at, x_T, lq_T, T, rtol=1e-8, atol=1e-10)
xs, ls = sharding.shard_samples(sharding.point_mesh(), x_T, lq_T)
b = mc.reverse_flow(energy_at, xs, ls, T, rtol=1e-8, atol=1e-10)
out = dict(in_devices=len(xs.sharding.device_set),
           x=float(np.max(np.abs(np.asarray(b.x) - np.asarray(a.x))) / np.max(np.abs(np.asarray(a.x)))),
           lq=float(np.max(np.abs(np.asarray(b.log_q) - np.asarray(a.log_q)))),
           steps=[int(a.num_steps), int(b.num_steps)])
print("RESULT" + json.dumps(out))
'''


def test_sharded_samples_flow_matches_single_device():
    """The reverse flow with its samples split across two devices equals the one-device flow."""
    r = _on_two_devices(FLOW_SCRIPT)
    assert r["in_devices"] == 2, r
    assert r["steps"][0] == r["steps"][1], r
    assert r["x"] < 1e-10 and r["lq"] < 1e-10, r
