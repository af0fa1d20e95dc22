"""The verdict on a replay: does this configuration meet the robot's requirements?

Checks, each with the measured value, the limit and whether it holds:
- latency: the p95 of the frame's processing time (the node worker's whole job: decode,
  engine, output messages) within `latency_budget_ms` (0 turns the check off);
- image age: in realtime mode, the p99 of header stamp to publish (what the robot's
  planner sees: waiting in the slot plus processing) within the same budget;
- drops: in realtime mode, at most `max_drop_percent` of the camera's frames dropped;
- mIoU: at least `min_miou` (0-1) when given;
- the run itself: complete (not damaged, not interrupted) and no frame failed.
A configuration PASSES when every check holds; a FAIL names each check that did not.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_VERDICT_FAILED = 1


@dataclass(frozen=True)
class Thresholds:
    latency_budget_ms: float
    min_miou: float | None = None  # 0-1
    max_drop_percent: float = 0.0

    def as_dict(self) -> dict:
        return {"latency_budget_ms": self.latency_budget_ms, "min_miou": self.min_miou,
                "max_drop_percent": self.max_drop_percent}


def judge(report: dict, thresholds: Thresholds) -> dict:
    """The report's verdict block: {"passed", "verdict": PASS|FAIL, "reasons", "checks"}."""
    checks = [_run_check(report)]
    budget = thresholds.latency_budget_ms
    if budget > 0:
        p95 = (report["latency_ms"].get("processing") or {}).get("p95")
        checks.append({
            "name": "latency", "value": p95, "limit": budget,
            "passed": p95 is not None and p95 <= budget,
            "text": "no processed frame" if p95 is None else
            f"p95 latency {p95:.1f} ms {'within' if p95 <= budget else 'over'} the "
            f"{budget:g} ms budget"})
    age = (report["timing"].get("image_age_ms") or {}).get("p99")
    if budget > 0 and report["mode"] == "realtime" and age is not None:
        checks.append({
            "name": "image_age", "value": age, "limit": budget, "passed": age <= budget,
            "text": f"image age p99 {age:.1f} ms {'within' if age <= budget else 'over'} the "
                    f"{budget:g} ms budget ({abs(budget - age):.1f} ms "
                    f"{'to spare' if age <= budget else 'over'})"})
    if report["mode"] == "realtime":
        frames = report["frames"]
        share = 100.0 * frames["dropped"] / frames["read"] if frames["read"] else 0.0
        checks.append({
            "name": "drops", "value": share, "limit": thresholds.max_drop_percent,
            "passed": share <= thresholds.max_drop_percent,
            "text": f"{frames['dropped']} of {frames['read']} frames dropped ({share:.1f} %, "
                    f"at most {thresholds.max_drop_percent:g} % allowed)"})
    if thresholds.min_miou is not None:
        miou = (report["accuracy"] or {}).get("miou")
        checks.append({
            "name": "miou", "value": miou, "limit": thresholds.min_miou,
            "passed": miou is not None and miou >= thresholds.min_miou,
            "text": "no mIoU (no ground truth was scored)" if miou is None else
            f"mIoU {100 * miou:.1f} % {'at or above' if miou >= thresholds.min_miou else 'below'}"
            f" the minimum {100 * thresholds.min_miou:.1f} %"})
    passed = all(check["passed"] for check in checks)
    return {
        "passed": passed,
        "verdict": "PASS" if passed else "FAIL",
        "reasons": [check["text"] for check in checks if not check["passed"]],
        "checks": checks,
        "thresholds": thresholds.as_dict(),
    }


def _run_check(report: dict) -> dict:
    frames = report["frames"]
    problems = []
    if report.get("interrupted"):
        problems.append(f"interrupted after {frames['read']} of {frames['expected']} frames")
    elif not report["complete"]:
        problems.append(f"bag damaged ({report['bag']['damage']})")
    if frames["failed"]:
        problems.append(f"{frames['failed']} frames failed in the engine")
    return {"name": "run", "value": None, "limit": None, "passed": not problems,
            "text": "; ".join(problems) or "complete run, no failed frame"}


def verdict_line(label: str, verdict: dict) -> str:
    """`label: PASS (...)` or `label: FAIL (reason; reason)` for the terminal and report.md."""
    if verdict["passed"]:
        shown = [c["text"] for c in verdict["checks"] if c["name"] != "run"]
        return f"{label}: PASS" + (f" ({'; '.join(shown)})" if shown else "")
    return f"{label}: FAIL ({'; '.join(verdict['reasons'])})"
