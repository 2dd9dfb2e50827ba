"""Export a :class:`~astro_neuron.neuro.network.Network` to NEST 3.10 and run it there.

* :func:`build_in_nest` creates the same network in the current NEST kernel
  (``nest.ResetKernel()`` first): neuron groups as ``iaf_psc_exp`` /
  ``aeif_cond_alpha_astro``, Li-Rinzel astrocytes as ``astrocyte_lr_1994``, every
  synapse of every projection one by one (same sources, targets, weights, delays) as
  ``static_synapse`` or ``tsodyks2_synapse`` (``u = 0``, ``x = 1``), the astrocytes'
  sensing as static synapses onto the astrocytes and their SIC as ``sic_connection``.
  Poisson groups become ``poisson_generator`` -> ``parrot_neuron`` (one fibre per
  parrot), or, given a project run, ``spike_generator`` s replaying its spikes, so
  both simulators see the same input.
* :func:`run_in_nest` builds, simulates and returns a
  :class:`~astro_neuron.neuro.network.NetworkRun` on the same time grid.
* :func:`write_nest_script` writes ``net.npz`` and ``net.py``: a script that rebuilds
  the network in NEST and runs it, also under MPI (``mpirun -np 4 python net.py``):
  NEST distributes neurons over the processes and creates each connection on the
  process that owns its target; every process writes its own spikes.

Not exported (NEST has no counterpart; the export raises ``ValueError``): the linear
astrocyte, gliotransmitter modulation of release probability, and SIC onto LIF
neurons (NEST's ``sic_connection`` only targets ``aeif_cond_alpha_astro``).

NEST prints a banner on import; the import here sets ``PYNEST_QUIET`` first.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from astro_neuron.neuro.network import (
    AdExParams, LIFParams, LiRinzelAstrocyte, Network, NetworkRun, NeuronGroup, SourceGroup,
)

__all__ = ["import_nest", "check_exportable", "network_spec", "build_in_nest", "run_in_nest",
           "write_nest_script"]

_LIF_KEYS = ("C_m", "tau_m", "E_L", "V_th", "V_reset", "t_ref", "tau_syn_ex", "tau_syn_in", "I_e")
_ADEX_KEYS = ("C_m", "g_L", "E_L", "V_th", "Delta_T", "V_peak", "V_reset", "t_ref", "a", "b",
              "tau_w", "E_ex", "E_in", "tau_syn_ex", "tau_syn_in", "I_e")
_LR_KEYS = ("Ca_tot", "IP3_0", "Kd_IP3_1", "Kd_IP3_2", "Kd_act", "Kd_inh", "Km_SERCA",
            "delta_IP3", "k_IP3R", "rate_IP3R", "rate_L", "rate_SERCA", "ratio_ER_cyt", "tau_IP3")


def import_nest():
    """``import nest`` without its banner and with errors only; a clear error if NEST is
    missing (it is installed by scripts/install.sh: ``pip install --no-deps
    nest-simulator==3.10.0``)."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest  # deferred: NEST is optional, ~1 s to import and prints a banner
    except ImportError as exc:
        raise ImportError("NEST is not installed: scripts/install.sh installs it "
                          "(pip install --no-deps nest-simulator==3.10.0)") from exc
    try:
        nest.verbosity = nest.VerbosityLevel.ERROR
    except AttributeError:      # older NEST
        nest.set_verbosity("M_ERROR")
    return nest


def check_exportable(net: Network) -> None:
    """Raise ``ValueError`` naming what NEST cannot run."""
    for a in net.astro.values():
        if not isinstance(a.model, LiRinzelAstrocyte):
            raise ValueError(f"astrocytes {a.name!r}: NEST has no linear astrocyte; use "
                             "LiRinzelAstrocyte (astrocyte_lr_1994) to export")
        if a.glio is not None:
            raise ValueError(f"astrocytes {a.name!r}: NEST has no gliotransmitter modulation of "
                             "release probability; export without glio=")
        tgt = net.groups[a.target]
        if a.sic_weight != 0.0 and not isinstance(tgt.params, AdExParams):
            raise ValueError(f"astrocytes {a.name!r}: NEST's sic_connection only targets "
                             f"aeif_cond_alpha_astro; group {a.target!r} is LIF (use AdExParams "
                             "or sic_weight=0)")
        if a.model.start != "nest":
            raise ValueError("export needs LiRinzelAstrocyte(start='nest') (NEST's initial state)")


def network_spec(net: Network, run: Optional[NetworkRun] = None) -> dict:
    """Everything NEST needs, as plain arrays: the content of ``net.npz``."""
    check_exportable(net)
    spec: dict = {"dt": net.dt, "groups": [], "projections": [], "astro": []}

    def replay(name, trains):
        for j, tr in enumerate(trains):
            if len(tr) and tr[0] < 2 * net.dt - 1e-9:
                raise ValueError(f"source {name!r} fibre {j} spikes at {tr[0]} ms: NEST replays "
                                 f"spikes through parrot neurons one step late, so spikes before "
                                 f"2 dt = {2 * net.dt} ms cannot be exported")
            arrays[f"spikes/{name}/{j}"] = tr

    arrays: dict = {}
    for g in net.groups.values():
        if isinstance(g, NeuronGroup):
            keys = _LIF_KEYS if isinstance(g.params, LIFParams) else _ADEX_KEYS
            spec["groups"].append({"name": g.name, "n": g.n, "type": "neurons",
                                   "model": g.params.nest_model,
                                   "params": {k: getattr(g.params, k) for k in keys}})
            arrays[f"V_init/{g.name}"] = g.V_init
        else:
            entry = {"name": g.name, "n": g.n, "type": "source"}
            if run is not None and g.name in run.spikes:
                entry["replay"] = True
                replay(g.name, run.spike_times(g.name))
            elif g.spike_times is not None:
                entry["replay"] = True
                replay(g.name, g.spike_times)
            else:
                entry.update(replay=False, rate=g.rate_hz.tolist(), start=g.window[0],
                             stop=g.window[1])
            spec["groups"].append(entry)
    for i, p in enumerate(net.projections):
        post, pre = np.nonzero(p.mask)
        arrays[f"proj/{i}/pre"] = pre
        arrays[f"proj/{i}/post"] = post
        arrays[f"proj/{i}/weight"] = p.weight[post, pre]
        e = {"pre": p.pre, "post": p.post, "delay": net._delay_steps(p.delay) * net.dt}
        if p.synapse is not None:
            e["tsodyks"] = {"U": p.synapse.U, "tau_rec": p.synapse.tau_rec,
                            "tau_fac": p.synapse.tau_fac}
        spec["projections"].append(e)
    for a in net.astro.values():
        cell = a.model.cell
        params = {k: getattr(cell, k) for k in _LR_KEYS}
        params.update(SIC_th=a.model.SIC_th, SIC_scale=a.model.SIC_scale)
        e = {"name": a.name, "n": a.n, "target": a.target, "params": params,
             "delay": net._delay_steps(a.delay) * net.dt, "sic_weight": a.sic_weight,
             "sense": sorted(net.sensing(a))}
        for pre, S in net.sensing(a).items():
            arrays[f"sense/{a.name}/{pre}"] = S
        arrays[f"terr/{a.name}"] = a.territories.neurons.numpy()
        spec["astro"].append(e)
    return {"spec": spec, "arrays": arrays}


def _build(nest, spec: dict, arrays: dict, record_V: bool):
    """Create the network in the current kernel; return node collections and recorders.
    The same function is written into the MPI script (see :func:`write_nest_script`)."""
    nest.resolution = spec["dt"]
    nodes, rec = {}, {}
    for g in spec["groups"]:
        if g["type"] == "neurons":
            nodes[g["name"]] = nest.Create(g["model"], g["n"], params=g["params"])
            nodes[g["name"]].V_m = list(np.asarray(arrays[f"V_init/{g['name']}"], dtype=float))
        elif g["replay"]:
            # spike_generator -> parrot_neuron (one step of delay, so the generator fires
            # one step early): the parrots emit at the original times and, unlike
            # devices, can drive any synapse model
            gen = nest.Create("spike_generator", g["n"], params=[
                {"spike_times": np.round(np.asarray(arrays[f"spikes/{g['name']}/{j}"], dtype=float)
                                         - spec["dt"], 10).tolist()}
                for j in range(g["n"])])
            parrots = nest.Create("parrot_neuron", g["n"])
            nest.Connect(gen, parrots, "one_to_one", {"delay": spec["dt"]})
            nodes[g["name"]] = parrots
        else:
            gen = nest.Create("poisson_generator", g["n"], params=[
                {"rate": r, "start": g["start"]} | ({"stop": g["stop"]} if g["stop"] else {})
                for r in g["rate"]])
            parrots = nest.Create("parrot_neuron", g["n"])
            nest.Connect(gen, parrots, "one_to_one", {"delay": spec["dt"]})
            nodes[g["name"]] = parrots
    for a in spec["astro"]:
        nodes[a["name"]] = nest.Create("astrocyte_lr_1994", a["n"], params=a["params"])
    for i, p in enumerate(spec["projections"]):
        pre = np.asarray(arrays[f"proj/{i}/pre"], dtype=np.int64)
        post = np.asarray(arrays[f"proj/{i}/post"], dtype=np.int64)
        if pre.size == 0:
            continue
        w = np.asarray(arrays[f"proj/{i}/weight"], dtype=float)
        src = np.asarray(nodes[p["pre"]].tolist())[pre]
        tgt = np.asarray(nodes[p["post"]].tolist())[post]
        syn = {"weight": w, "delay": np.full(w.size, p["delay"])}
        if "tsodyks" in p:
            syn.update(synapse_model="tsodyks2_synapse", u=p["tsodyks"]["U"], x=1.0, **p["tsodyks"])
        nest.Connect(src, tgt, "one_to_one", syn)
    for a in spec["astro"]:
        astro_ids = np.asarray(nodes[a["name"]].tolist())
        for pre in a["sense"]:
            S = np.asarray(arrays[f"sense/{a['name']}/{pre}"], dtype=float)      # [A, n_pre]
            ai, pi = np.nonzero(S)
            if ai.size:
                src = np.asarray(nodes[pre].tolist())[pi]
                nest.Connect(src, astro_ids[ai], "one_to_one",
                             {"weight": S[ai, pi], "delay": np.full(ai.size, a["delay"])})
        if a["sic_weight"] != 0.0:
            terr = np.asarray(arrays[f"terr/{a['name']}"], dtype=bool)            # [A, N]
            ai, ni = np.nonzero(terr)
            tgt = np.asarray(nodes[a["target"]].tolist())[ni]
            nest.Connect(astro_ids[ai], tgt, "one_to_one",
                         {"synapse_model": "sic_connection",
                          "weight": np.full(ai.size, a["sic_weight"]),
                          "delay": np.full(ai.size, a["delay"])})
    for g in spec["groups"]:
        sr = nest.Create("spike_recorder")
        nest.Connect(nodes[g["name"]], sr)
        rec[("spikes", g["name"])] = sr
        if g["type"] == "neurons" and record_V:
            fields = ["V_m"] + (["I_SIC"] if g["model"] == "aeif_cond_alpha_astro" else [])
            mm = nest.Create("multimeter", params={"record_from": fields,
                                                   "interval": spec["dt"]})
            nest.Connect(mm, nodes[g["name"]])
            rec[("mm", g["name"])] = mm
    for a in spec["astro"]:
        mm = nest.Create("multimeter", params={"record_from": ["IP3", "Ca_astro"],
                                               "interval": spec["dt"]})
        nest.Connect(mm, nodes[a["name"]])
        rec[("mm", a["name"])] = mm
    return nodes, rec


def build_in_nest(net: Network, run: Optional[NetworkRun] = None, record_V: bool = True):
    """Reset the NEST kernel and create ``net`` in it; returns ``(nest, nodes, recorders)``.
    With ``run`` (a project run of ``net``), sources replay its spikes."""
    nest = import_nest()
    nest.ResetKernel()
    out = network_spec(net, run)
    nodes, rec = _build(nest, out["spec"], out["arrays"], record_V)
    return nest, nodes, rec


def run_in_nest(net: Network, duration_ms: float, run: Optional[NetworkRun] = None,
                record_V: bool = True) -> NetworkRun:
    """Build ``net`` in NEST, simulate ``duration_ms`` and return the recordings as a
    :class:`NetworkRun` on the project's grid (step ``n`` = time ``(n+1) dt``).
    Astrocytes are recorded as ``Ca`` and ``IP3``; ``sic`` and ``gamma`` are absent."""
    nest, nodes, rec = build_in_nest(net, run, record_V)
    nest.Simulate(float(duration_ms))
    dt = net.dt
    T = int(round(duration_ms / dt))
    spikes, V, I_sic, astro = {}, {}, {}, {}
    for g in net.groups.values():
        first = nodes[g.name].tolist()[0]
        ev = rec[("spikes", g.name)].get("events")
        s = np.zeros((T, g.n), dtype=bool)
        idx = np.rint(np.asarray(ev["times"]) / dt).astype(np.int64) - 1
        ok = (idx >= 0) & (idx < T)
        s[idx[ok], np.asarray(ev["senders"], dtype=np.int64)[ok] - first] = True
        spikes[g.name] = s
        if ("mm", g.name) in rec:
            ev = rec[("mm", g.name)].get("events")
            V[g.name] = _grid(ev, "V_m", first, g.n, T, dt)
            if "I_SIC" in ev:
                I_sic[g.name] = _grid(ev, "I_SIC", first, g.n, T, dt)
    for a in net.astro.values():
        ev = rec[("mm", a.name)].get("events")
        first = nodes[a.name].tolist()[0]
        astro[a.name] = {"Ca": _grid(ev, "Ca_astro", first, a.n, T, dt),
                         "IP3": _grid(ev, "IP3", first, a.n, T, dt)}
    return NetworkRun(dt, T, spikes, V, I_sic, astro, {k: g.kind for k, g in net.groups.items()})


def _grid(ev, key, first, n, T, dt):
    out = np.full((T, n), np.nan)
    idx = np.rint(np.asarray(ev["times"]) / dt).astype(np.int64) - 1
    ok = (idx >= 0) & (idx < T)
    out[idx[ok], np.asarray(ev["senders"], dtype=np.int64)[ok] - first] = np.asarray(ev[key])[ok]
    return out


_SCRIPT = '''"""Run the exported astro-neuron network in NEST {version}.

    python {name}.py [--duration MS] [--threads N]
    mpirun -np 4 python {name}.py          # NEST distributes the neurons over 4 processes

Written by astro_neuron.neuro.nest_export.write_nest_script; reads {name}.npz next to it.
Each process writes {name}_spikes_rank<R>.npz with the spikes of the neurons it owns
(NEST creates each connection on the process that owns the target).
"""
import argparse, json, os
from pathlib import Path
os.environ.setdefault("PYNEST_QUIET", "1")
import numpy as np
import nest

HERE = Path(__file__).resolve().parent
{build_source}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default={duration})
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    nest.ResetKernel()
    try:
        nest.verbosity = nest.VerbosityLevel.ERROR
    except AttributeError:
        pass
    nest.local_num_threads = args.threads
    with np.load(HERE / "{name}.npz", allow_pickle=False) as z:
        arrays = {{k: z[k] for k in z.files}}
    spec = json.loads(bytes(arrays.pop("__spec__")).decode("utf-8"))
    nodes, rec = _build(nest, spec, arrays, record_V=False)
    nest.Simulate(args.duration)
    out = {{}}
    for (what, name), dev in rec.items():
        if what == "spikes":
            ev = dev.get("events")
            out[name + "/times"] = np.asarray(ev["times"])
            out[name + "/senders"] = np.asarray(ev["senders"]) - nodes[name].tolist()[0]
    path = HERE / f"{name}_spikes_rank{{nest.Rank()}}.npz"
    np.savez(path, **out)
    print(f"rank {{nest.Rank()}} of {{nest.NumProcesses()}}: wrote {{path}}")


if __name__ == "__main__":
    main()
'''


def write_nest_script(net: Network, folder, duration_ms: float, name: str = "net",
                      run: Optional[NetworkRun] = None) -> Path:
    """Write ``folder/name.npz`` (the network) and ``folder/name.py`` (a NEST script that
    runs it, with MPI too: ``mpirun -np 4 python name.py``); return the script's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = network_spec(net, run)
    arrays = dict(out["arrays"])
    arrays["__spec__"] = np.frombuffer(json.dumps(out["spec"]).encode("utf-8"), dtype=np.uint8)
    np.savez_compressed(folder / f"{name}.npz", **arrays)
    nest_version = "3.10"
    src = inspect.getsource(_build)
    script = _SCRIPT.format(version=nest_version, name=name, duration=float(duration_ms),
                            build_source=src)
    path = folder / f"{name}.py"
    path.write_text(script, encoding="utf-8")
    return path
