"""Finish steps as tree reductions: a stage's global step split into one task per block of tiles plus a merge.

A stage that mixes in :class:`BlockFinish` names blocks of its tiles (:meth:`BlockFinish.finish_blocks`); the
planner (:class:`cim.pipeline.execute._Plan`) then adds one task per block, which runs
:meth:`BlockFinish.finish_block` in parallel with the other blocks, and the stage's finish task runs
:meth:`BlockFinish.finish_merge` on their records (the root only combines block roots). A block's record is
JSON (it is kept in the run's manifest); larger data go through the stage's scratch folder, which the job clears
after the finish. Without blocks (one block, or a stage run outside the planner) :meth:`BlockFinish.finish`
does the same work in one call.
"""

from __future__ import annotations

from typing import Any

from cim.pipeline.stage import JobContext, Product


class BlockFinish:
    """Mixin of a :class:`~cim.pipeline.stage.Stage` whose finish is a reduction over blocks of tiles."""

    def finish_blocks(self, tile_keys: list[str]) -> dict[str, list[str]]:
        """The blocks of the job's tiles: block name -> keys of its tiles ({}: the finish runs as one task)."""
        raise NotImplementedError

    def finish_block(self, block: str, results: list[dict[str, Any]], ctx: JobContext) -> dict[str, Any] | None:
        """The finish's part of ``block`` (``results``: every tile's result, as for ``finish``); a JSON record."""
        raise NotImplementedError

    def finish_merge(self, results: list[dict[str, Any]], blocks: dict[str, Any],
                     ctx: JobContext) -> list[Product]:
        """The finish from the records of every block (``blocks``: by name; empty: everything at once)."""
        raise NotImplementedError

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        """The whole finish in one call: every block, then the merge."""
        keys = [r["tile"] for r in results if "tile" in r]
        blocks = {name: self.finish_block(name, results, ctx) for name in self.finish_blocks(keys)}
        return self.finish_merge(results, blocks, ctx)
