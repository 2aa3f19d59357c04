"""One doctor check's outcome, and the table of all of them."""

from __future__ import annotations

import dataclasses
from typing import List, Optional


@dataclasses.dataclass
class CheckResult:
    """One check's verdict, with the number behind it.

    Attributes:
      name: the check, a key of ``tfcustom.doctor.CHECKS``.
      passed: the verdict.
      measured: what was measured, for a person (the number behind the verdict).
      fix: what to do when it fails.
      seconds: how long the check ran (set by ``tfcustom.doctor.check``; a Trainer shared by
        several checks is trained by the first that needs it, which is charged for it).

    Examples:
        >>> print(CheckResult("retracing", False, "traced 3 times", "pass tensors, not Python numbers").line())
        retracing            FAIL  traced 3 times  -> fix: pass tensors, not Python numbers
    """

    name: str
    passed: bool
    measured: str
    fix: str = ""
    seconds: Optional[float] = None

    def line(self, width: int = 20) -> str:
        verdict = "pass" if self.passed else "FAIL"
        text = f"{self.name:<{width}} {verdict}  {self.measured}"
        return text if self.passed or not self.fix else f"{text}  -> fix: {self.fix}"


@dataclasses.dataclass
class Report:
    """Every check's [`CheckResult`][tfcustom.doctor.CheckResult]; ``passed`` when all passed.

    Attributes:
      results: the results, in the order the checks ran; ``report[name]`` finds one.

    Examples:
        >>> report = Report([CheckResult("xla", True, "compiles"),
        ...                  CheckResult("retracing", False, "traced 3 times", "pass tensors")])
        >>> report.passed, report.failed(), report["xla"].measured
        (False, ['retracing'], 'compiles')
        >>> print(report.table())
        check     result measured
        xla       pass  compiles
        retracing FAIL  traced 3 times  -> fix: pass tensors
        1 check(s) failed: retracing
    """

    results: List[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failed(self) -> List[str]:
        return [r.name for r in self.results if not r.passed]

    def table(self) -> str:
        width = max([len(r.name) for r in self.results] + [5])
        lines = [f"{'check':<{width}} {'result':<5} measured", *[r.line(width) for r in self.results]]
        summary = "all checks passed" if self.passed else f"{len(self.failed())} check(s) failed: {', '.join(self.failed())}"
        return "\n".join(lines + [summary])

    def timing(self) -> str:
        """One line: the checks' total time and each one's, slowest first.

        Examples:
            >>> Report([CheckResult("xla", True, "compiles", seconds=2.0),
            ...         CheckResult("retracing", True, "0 traces", seconds=3.5)]).timing()
            'time: 5.5 s (retracing 3.5 s, xla 2.0 s)'
        """
        timed = sorted((r for r in self.results if r.seconds is not None), key=lambda r: -r.seconds)
        parts = ", ".join(f"{r.name} {r.seconds:.1f} s" for r in timed)
        return f"time: {sum(r.seconds for r in timed):.1f} s ({parts})"

    def as_dict(self) -> dict:
        """``passed``, the total ``seconds`` and every check's fields (``checks``), for JSON.

        Examples:
            >>> Report([CheckResult("xla", True, "compiles", seconds=2.0)]).as_dict()
            {'passed': True, 'seconds': 2.0, 'checks': [{'name': 'xla', 'passed': True, 'measured': 'compiles', 'fix': '', 'seconds': 2.0}]}
        """
        checks = [dataclasses.asdict(r) for r in self.results]
        return {"passed": self.passed, "seconds": sum(r.seconds or 0.0 for r in self.results), "checks": checks}

    def __getitem__(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)
