"""The Ray campaign measures under the interference guard and a canary per device, as the
local campaign does: flags, re-measurements in place, one canary series per device, and
the noise ceiling at the end."""

from __future__ import annotations

import json

import pytest

from hwnas.campaigns.canary import CanarySettings
from hwnas.distributed import DeviceSpec, RayCampaign
from hwnas.profilers.interference import Policy
from hwnas.profilers.latency import MeasureSettings
from hwnas.store import Store, quality

FAST = MeasureSettings(warmup=1, runs=3)


def _rows(store, device):
    return [
        (int(r[0]), json.loads(r[1] or "{}"))
        for r in store.conn.execute(
            "SELECT id, environment FROM measurements WHERE device=? AND status='ok' ORDER BY id",
            (device,),
        )
    ]


def _flags(store):
    return {
        int(r[0]): (r[1], r[2])
        for r in store.conn.execute("SELECT measurement_id, kind, state FROM measurement_flags")
    }


@pytest.mark.ray
def test_ray_campaign_guards_canaries_flags_and_remeasures_per_device(ray_cluster, tmp_path):
    from trust_helpers import TrustTinySpace

    specs = [
        # alone under its name: canary 10, 10, then 13 (+30%, drift), back to 10; the
        # guard's probe after its 2nd architecture reports a run queue
        DeviceSpec(
            "drift-stub:10_10_13_10",
            kwargs={"busy": "2"},
            store_as="solo",
            resource="bench:a",
            isolate=False,
        ),
        # a farm of two under one name, at different speeds: each its own series
        DeviceSpec("drift-stub:10", store_as="farm", resource="bench:b", isolate=False),
        DeviceSpec("drift-stub:11", store_as="farm", resource="device:cpu-ort", isolate=False),
    ]
    logs: list[str] = []
    canary = CanarySettings("cifar_resnet20", every_archs=2, drift=0.05)
    with Store(tmp_path / "ray.db") as store:
        rc = RayCampaign(
            TrustTinySpace(),
            4,
            specs,
            store,
            seed=1,
            settings=FAST,
            exporter="torchscript",
            interference=Policy("warn", probe_s=0.05),
            canary=canary,
            log=logs.append,
            repeat_n=3,
        )
        try:
            rc.start()
            s = rc.run()
        finally:
            rc.close()
        assert not s.interrupted and s.measured == 8 and s.failed == 0

        # every row carries what the machine was doing, read through the device's transport
        solo, farm = _rows(store, "solo"), _rows(store, "farm")
        assert len(solo) == 4 and len(farm) == 4  # re-measured in place, never doubled
        for _, env in solo + farm:
            rec = env["interference"]
            assert rec["policy"] == "warn" and rec["during"]["where"] == "stub"
            assert not rec["busy"]  # the busy row was replaced by its quiet re-measurement

        # solo: the busy 2nd row flagged (interference), the drift flagged the 3rd and 4th;
        # the next good canary re-measured all three on the same device
        ids = [i for i, _ in solo]
        flags = _flags(store)
        assert {i: flags[i] for i in ids if i in flags} == {
            ids[1]: ("interference", "remeasured"),
            ids[2]: ("canary", "remeasured"),
            ids[3]: ("canary", "remeasured"),
        }
        series = quality.canary_series(store.conn, "solo", rc.campaign)
        assert [c["ok"] for c in series] == [1, 1, 0, 1]
        assert series[2]["drift"] == pytest.approx(0.3)
        assert any("drift-stub:10_10_13_10: canary drifted +30.0%" in m for m in logs)
        assert any(
            "3 rows flagged" in n and "0 still flagged" in n for n in s.devices["solo"].notes
        )

        # the farm: one series per member, each against its own baseline (11 is not a
        # +10% drift of 10), and nothing of the farm flagged
        b = quality.canary_series(store.conn, "farm@bench:b", rc.campaign)
        c = quality.canary_series(store.conn, "farm@device:cpu-ort", rc.campaign)
        assert b and c and {x["baseline_ms"] for x in b} == {10.0}
        assert {x["baseline_ms"] for x in c} == {11.0} and all(x["ok"] for x in b + c)
        assert not quality.canary_series(store.conn, "farm", rc.campaign)
        assert not set(flags) & {i for i, _ in farm}

        # the noise ceiling, per stored name, re-measured on a device of that name
        for name in ("solo", "farm"):
            rep = s.devices[name].repeatability
            assert rep is not None and rep["n"] == 3 and rep["within5"] == 1.0
        stored = store.conn.execute("SELECT device, n FROM repeatability ORDER BY device")
        assert [tuple(r) for r in stored] == [("farm", 3), ("solo", 3)]
