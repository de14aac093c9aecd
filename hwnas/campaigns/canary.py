"""The reference canary: one fixed model measured through a campaign to see the machine drift.

Interference that no process list shows (a busy hypervisor host, a throttled
phone, a neighbour's memory traffic) still slows *every* model alike. A small
zoo model measured at the start and then every K architectures or S seconds
gives a series; when a canary's median moves more than ``drift`` (5%) from
the campaign's first one, the rows measured since the last good canary are
flagged, and once a canary is back within the threshold they are measured
again (in place: see :mod:`hwnas.store.quality`).

Resumption: a canary row is written whole in one commit and the flags of a
drift in one more, and a re-measurement replaces its row and clears its flag
in one transaction. A campaign killed anywhere in between re-runs, finds its
baseline and its pending flags in the store, and finishes them; nothing is
lost and no row is doubled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwnas.errors import ConfigError, HwnasError
from hwnas.store import quality

DEFAULT_CANARY = "cifar_resnet20"


@dataclass(frozen=True)
class CanarySettings:
    """``--canary NAME|none``, ``--canary-every K[,S s]``, ``--canary-drift``."""

    model: str | None = DEFAULT_CANARY
    every_archs: int = 25
    every_s: float = 300.0
    drift: float = 0.05
    max_rechecks: int = 3
    #: a reference median from an earlier quiet run; default: this campaign's first canary
    baseline_ms: float | None = None

    def __post_init__(self) -> None:
        if self.every_archs <= 0:
            raise ConfigError(f"--canary-every must be > 0 architectures, got {self.every_archs}")
        if self.every_s <= 0:
            raise ConfigError(f"--canary-every seconds must be > 0, got {self.every_s}")
        if not 0 < self.drift < 1:
            raise ConfigError(f"--canary-drift must be in (0, 1), e.g. 0.05; got {self.drift}")


def parse_every(text: str) -> tuple[int, float]:
    """``K`` or ``K,Ss`` (e.g. ``25`` or ``25,300s``) -> (architectures, seconds)."""
    k, _, s = str(text).partition(",")
    try:
        archs = int(k)
        secs = float(s.strip().removesuffix("s")) if s.strip() else 300.0
    except ValueError:
        raise ConfigError(
            f"--canary-every takes K or K,Ss (e.g. 25 or 25,300s), got '{text}'"
        ) from None
    if archs <= 0 or secs <= 0:
        raise ConfigError(f"--canary-every needs K > 0 and S > 0, got '{text}'")
    return archs, secs


def check_canary_model(name: str | None) -> str | None:
    """``none`` -> None; an unknown zoo name -> ConfigError listing the zoo."""
    if name is None or name.lower() == "none":
        return None
    from hwnas.models import is_model, list_models

    if not is_model(name):
        raise ConfigError(
            f"unknown --canary model '{name}'; use one of {', '.join(list_models())} or none"
        )
    return name


def canary_artifact(name: str, cache_dir: Any = None, exporter: str = "dynamo") -> Any:
    """The canary's ONNX file (cached; devices needing .tflite convert it themselves)."""
    import torch

    from hwnas.export import to_onnx
    from hwnas.models import create_model, model_input_shape

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name)
    return to_onnx(
        model,
        model_input_shape(name),
        label=f"canary:{name}",
        cache_dir=cache_dir,
        source={"kind": "zoo", "name": name},
        exporter=exporter,
    )


class CanaryMonitor:
    """Runs the canary for one (campaign, device) and re-measures what it flags.

    Args:
        store: the campaign's :class:`~hwnas.store.Store`.
        device: measures the canary and the re-measurements (the campaign's device).
        settings: :class:`CanarySettings` (``model=None``: no canary, only
            interference flags are re-measured).
        device_name / campaign: where the rows are.
        measure_settings: timing settings.
        remeasure: ``arch_id -> Measurement | None``: builds/exports (cache hit)
            and measures one architecture again.
        artifact: the canary artifact (default: exported from the zoo).
        log: live messages (``hwnas sample`` shows the drift).
        measure_canary: measures the canary where the device is and returns the
            :class:`Measurement` (default: ``device.measure(artifact)`` here); a Ray
            campaign passes a call to the device's actor.
        series: the canary series' name in the store (default ``device_name``);
            members of a Ray farm stored under one name each keep their own.
        own_rows: the measurement row ids this monitor vouches for (default: every
            row of ``device_name`` in the campaign); a drift flags only these.
    """

    def __init__(
        self,
        store: Any,
        device: Any,
        settings: CanarySettings,
        *,
        device_name: str,
        campaign: str,
        measure_settings: Any = None,
        remeasure: Callable[[str], Any] | None = None,
        artifact: Any = None,
        log: Callable[[str], None] | None = None,
        export_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        measure_canary: Callable[[], Any] | None = None,
        series: str | None = None,
        own_rows: Callable[[], set[int]] | None = None,
    ):
        self.store = store
        self.conn = store.conn
        self.device = device
        self.settings = settings
        self.device_name = device_name
        self.campaign = campaign
        self.measure_settings = measure_settings
        self.remeasure_fn = remeasure
        self.log = log or (lambda _m: None)
        self.clock = clock
        self._artifact = artifact
        self._export = export_options or {}
        self._canary_fn = measure_canary
        self.series = series or device_name
        self._own_rows = own_rows
        self.baseline: float | None = None
        self.last_drift: float | None = None
        self.since = 0
        self.t_last = clock()
        self.remeasured = 0
        self.flagged = 0
        self.broken = False
        self.rebased_from: float | None = None
        quality.ensure(self.conn)
        if settings.model is not None:
            series = quality.canary_series(self.conn, self.series, campaign)
            if series:  # a resumed campaign keeps its (latest) baseline
                self.baseline = float(series[-1]["baseline_ms"])
            elif settings.baseline_ms is not None:
                self.baseline = float(settings.baseline_ms)

    @property
    def enabled(self) -> bool:
        return self.settings.model is not None and not self.broken

    def status(self) -> str:
        """Short text for the progress bar: the last canary drift."""
        if self.last_drift is None:
            return ""
        return f"canary {self.last_drift:+.1%}"

    def _run_canary(self) -> Any:
        if self._canary_fn is not None:
            return self._canary_fn()
        if self._artifact is None:
            self._artifact = canary_artifact(self.settings.model, **self._export)
        return self.device.measure(self._artifact, self.measure_settings)

    def _where(self) -> dict[str, Any]:
        """Which canary series and which rows a flag concerns (see ``series``/``own_rows``)."""
        return {
            "device": self.series,
            "rows_device": self.device_name,
            "only": self._own_rows() if self._own_rows is not None else None,
        }

    def _measure_canary(self) -> tuple[int, bool]:
        m = self._run_canary()
        med = m.median
        if self.baseline is None:
            self.baseline = med
        drift = med / self.baseline - 1.0
        ok = abs(drift) <= self.settings.drift
        if drift < -self.settings.drift:
            # Faster than the baseline: either noise, or the baseline itself was taken
            # on a busy machine. A second canary decides; confirmed, the slower of the
            # two fast ones becomes the baseline and everything measured so far is
            # suspect (it was judged against the slow reference).
            again = self._run_canary().median
            if again / self.baseline - 1.0 < -self.settings.drift:
                self.rebased_from, self.baseline = self.baseline, max(med, again)
                ok = True
        self.last_drift = drift
        cid = quality.add_canary(
            self.conn,
            campaign=self.campaign,
            device=self.series,
            rows_device=self.device_name,
            model=self.settings.model or "",
            m=m,
            baseline_ms=self.baseline,
            drift=drift,
            ok=ok,
        )
        self.since, self.t_last = 0, self.clock()
        return cid, ok

    def check(self) -> bool:
        """Measure the canary now; on drift flag, re-check until good, then re-measure."""
        if not self.enabled:
            return self._remeasure_pending()
        try:
            cid, ok = self._measure_canary()
        except HwnasError as exc:  # a canary the device cannot run must not stop the campaign
            self.broken = True
            self.log(
                f"canary {self.settings.model} failed on {self.series} ({exc}); "
                "continuing without a canary (choose another with --canary)"
            )
            return self._remeasure_pending()
        if ok and self.rebased_from is not None:
            ids = quality.flag_upto(
                self.conn,
                **self._where(),
                campaign=self.campaign,
                canary_id=cid,
                reason=f"baseline canary {self.rebased_from:.3f} ms was slow (busy machine); "
                f"new baseline {self.baseline:.3f} ms",
            )
            self.flagged += len(ids)
            self.log(
                f"canary {self.last_drift:+.1%}: the baseline {self.rebased_from:.3f} ms was taken "
                f"on a busy machine; new baseline {self.baseline:.3f} ms, {len(ids)} earlier rows flagged"
            )
            self.rebased_from = None
        if ok:
            return self._remeasure_pending()
        ids = quality.flag_since_good_canary(
            self.conn,
            **self._where(),
            campaign=self.campaign,
            canary_id=cid,
            reason=f"canary drifted {self.last_drift:+.1%} (limit {self.settings.drift:.0%})",
        )
        self.flagged += len(ids)
        self.log(
            f"canary drifted {self.last_drift:+.1%} from the baseline {self.baseline:.3f} ms: "
            f"{len(ids)} rows since the last good canary flagged"
        )
        for _ in range(self.settings.max_rechecks):
            _cid, ok = self._measure_canary()
            if ok:
                self.log(f"canary back at {self.last_drift:+.1%}; re-measuring flagged rows")
                return self._remeasure_pending()
        self.log("canary still drifting; flagged rows stay flagged and are re-measured later")
        return False

    def start(self) -> None:
        """At the start (and on resume): a canary, then whatever was left flagged."""
        self.check()

    def note(self) -> str:
        """One line for the campaign summary: canary drift, flags, re-measurements."""
        left = len(quality.pending(self.conn, self.device_name, self.campaign))
        canary = (
            f"canary {self.settings.model}: last drift {self.last_drift:+.1%}"
            if self.enabled and self.last_drift is not None
            else "no canary"
        )
        return (
            f"{canary}; {self.flagged} rows flagged (interference or drift), {self.remeasured} "
            f"re-measured, {left} still flagged (hwnas export --flagged drop leaves them out)"
        )

    def has_pending(self) -> bool:
        return bool(quality.pending(self.conn, self.device_name, self.campaign))

    def after_arch(self, measurement: Any = None) -> None:
        """Called after each architecture is stored: flag it if the guard saw a busy
        machine, and run the canary when due."""
        env = getattr(measurement, "environment", None) or {}
        if (env.get("interference") or {}).get("busy"):
            mid = quality.last_measurement_id(self.conn, self.device_name, self.campaign)
            reasons = "; ".join(env["interference"].get("reasons") or []) or "busy machine"
            quality.flag(self.conn, [mid], "interference", reasons)
            self.flagged += 1
        self.since += 1
        if (
            self.since >= self.settings.every_archs
            or self.clock() - self.t_last >= self.settings.every_s
        ):
            self.check()

    def finish(self) -> None:
        """At the end: a closing canary, so the last stretch is covered too."""
        if self.since > 0 or quality.pending(self.conn, self.device_name, self.campaign):
            self.check()

    def _remeasure_pending(self) -> bool:
        todo = quality.pending(self.conn, self.device_name, self.campaign)
        if not todo or self.remeasure_fn is None:
            return True
        for row in todo:
            m = self.remeasure_fn(row["arch_id"])
            if m is None:
                continue
            busy = bool((m.environment or {}).get("interference", {}).get("busy"))
            if busy:  # conditions are not back: leave this and the rest for a later check
                break
            quality.replace_measurement(self.conn, int(row["measurement_id"]), m)
            self.remeasured += 1
        return True


def make_monitor(
    store: Any,
    device: Any,
    settings: CanarySettings,
    space: Any,
    options: dict[str, Any],
    measure_settings: Any,
    device_name: str,
    campaign: str,
    log: Callable[[str], None] | None = None,
) -> CanaryMonitor:
    """The monitor of a campaign, re-measuring flagged rows by re-preparing them (an
    export-cache hit) and measuring them again on the campaign's device."""
    from hwnas.campaigns.step import prepare_arch

    def remeasure(arch_id: str) -> Any:
        prepared = prepare_arch(space, store.arch(arch_id), **{**options, "check": False})
        if prepared.artifact is None:
            return None
        return device.measure(prepared.artifact, measure_settings)

    return CanaryMonitor(
        store,
        device,
        settings,
        device_name=device_name,
        campaign=campaign,
        measure_settings=measure_settings,
        remeasure=remeasure,
        artifact=None,
        log=log,
        export_options={
            "cache_dir": options.get("cache_dir"),
            "exporter": options.get("exporter", "dynamo"),
        },
    )
