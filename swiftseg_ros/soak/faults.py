"""What goes wrong, and when: the soak's fault schedule.

Faults come one at a time, every `every_s` seconds after the first `quiet_s`, cycling
through `FAULTS` in order so that each kind recurs evenly over a long soak (and a 30-second
soak sees each one). A fault is a kind, a start and how long the camera misbehaves; the
runner turns it into camera behaviour or a command to the node, and checks that frames are
published again after it (else the node did not survive it).
"""

from __future__ import annotations

from dataclasses import dataclass

# kind -> (how long it lasts in seconds, what it does)
FAULTS: dict[str, tuple[float, str]] = {
    "pause": (2.0, "the camera publishes nothing"),
    "restart": (1.0, "the camera's publisher destroyed, recreated after the pause"),
    # before the kinds that make the engine prepare (a new size or pixel format takes
    # seconds, and frames meanwhile are dropped unseen): broken frames must be judged
    "corrupt": (1.0, "broken frames (raw: wrong step, truncated data, 0x0; compressed: "
                     "garbage bytes, a JPEG cut to a third, no data)"),
    "stamp_back": (0.5, "stamps 30 s in the past"),
    "stamp_ahead": (0.5, "stamps an hour ahead"),
    "size": (3.0, "frames at another size (sizes rotate: more than the plan cache holds)"),
    "encoding": (2.0, "another encoding (raw: bgr8, mono8; compressed: png, mono)"),
    "burst": (2.0, "three times the frame rate"),
    "outputs": (2.0, "publish_color and publish_overlay switched, then back"),
    "lifecycle": (1.0, "deactivate, then activate again"),
}
# Frames sent this long after a fault ends still count as disturbed by it (a new size's
# preparation, the first frames after activate), so the steady latency leaves them out.
SETTLE_S = 3.0


@dataclass(frozen=True)
class Fault:
    kind: str
    start_s: float
    duration_s: float
    number: int  # 0, 1, 2... among faults of this kind (which size, encoding, corruption)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def disturbs(self, t: float) -> bool:
        """True while the fault is on and for SETTLE_S after it."""
        return self.start_s <= t < self.end_s + SETTLE_S


def schedule(total_s: float, every_s: float, quiet_s: float = 5.0,
             kinds: tuple[str, ...] = tuple(FAULTS), tour_sizes: int = 0,
             warmup_s: float = 0.0) -> list[Fault]:
    """The faults of a soak of `total_s` seconds: one every `every_s` from `quiet_s` on, each
    ending at least a settle time before the soak does.

    With `tour_sizes`, the first faults are that many size faults back to back, if they
    fit in `warmup_s`: every size the soak will use has been prepared once (the plan cache
    is full and evicting) before the verdict's measurements begin, so that memory after
    the warm-up shows what repeats, not a cache filling up."""
    faults: list[Fault] = []
    counts = dict.fromkeys(kinds, 0)
    start = quiet_s
    size_s = FAULTS["size"][0]
    if tour_sizes and "size" in kinds \
            and quiet_s + tour_sizes * (size_s + 1.0) + SETTLE_S <= min(warmup_s, total_s):
        for number in range(tour_sizes):
            faults.append(Fault("size", start, size_s, number))
            start += size_s + 1.0
        counts["size"] = tour_sizes
        start += SETTLE_S
    rotation = 0
    while kinds:
        kind = kinds[rotation % len(kinds)]
        rotation += 1
        duration = FAULTS[kind][0]
        if start + duration + SETTLE_S > total_s:
            break
        faults.append(Fault(kind, start, duration, counts[kind]))
        counts[kind] += 1
        start += max(every_s, duration + 0.5)
    return faults


def disturbed(faults: list[Fault], t: float) -> bool:
    return any(fault.disturbs(t) for fault in faults)
