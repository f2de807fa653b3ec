"""axe-core in the browser tests: the accessibility rules run inside a console page.

axe-core comes from npm (tests/node/package.json, installed by `make test` into
tests/node/node_modules, which git ignores). The pages' Content-Security-Policy refuses
inline scripts, so the library is evaluated through Playwright's protocol channel, which
the policy does not govern, instead of being added as a <script> element.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
# What fails a page: axe's two highest impacts ("minor" and "moderate" are reported only).
FAILING = ("serious", "critical")

RUN = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: " + n.failureSummary),
  }));
}"""


@lru_cache(maxsize=1)
def _source() -> str:
    if not AXE.exists():
        pytest.fail(
            f"axe-core is not installed at {AXE}: run `make test` (it runs npm ci in tests/node)"
        )
    return AXE.read_text()


def violations(page) -> list[dict]:
    """Every axe violation of the page as it is now (open popovers and all).

    The page is checked at rest: no live-region swap in flight, and no colour halfway
    through the badge fade that follows a swap (reduced motion turns the fade off).
    """
    page.emulate_media(reduced_motion="reduce")
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(_source())
    return page.evaluate(RUN)


def serious(page) -> list[str]:
    """The serious and critical violations of the page, one readable line each."""
    return [
        f"{page.url} [{v['impact']}] {v['id']}: {v['help']} :: {'; '.join(v['nodes'])}"
        for v in violations(page)
        if v["impact"] in FAILING
    ]
