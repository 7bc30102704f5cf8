"""Finish steps as tree reductions: a stage's global step split into one task per block of tiles plus a merge.

A stage that mixes in :class:`BlockFinish` names blocks of its tiles (:meth:`BlockFinish.finish_blocks`). The
planner (:class:`cim.pipeline.execute._Plan`) then adds a summary task, which reads every tile's result and
returns the little that every block needs to know of all tiles (:meth:`BlockFinish.finish_summary`), and one task
per block, which reads only its own tiles' results and the summary (:meth:`BlockFinish.finish_block`); blocks
run in parallel, and the stage's finish task runs :meth:`BlockFinish.finish_merge` on their records (the root
only combines block roots). So a block task depends on its own tiles and one summary, not on every tile.

Summaries and block records are JSON (they are kept in the run's manifest); larger data go through the stage's
scratch folder, which the job clears after the finish. Without blocks (one block, or a stage run outside the
planner) :meth:`BlockFinish.finish` does the same work in one call.
"""

from __future__ import annotations

from typing import Any

from cim.pipeline.stage import JobContext, Product


class BlockFinish:
    """Mixin of a :class:`~cim.pipeline.stage.Stage` whose finish is a reduction over blocks of tiles."""

    def finish_blocks(self, tile_keys: list[str]) -> dict[str, list[str]]:
        """The blocks of the job's tiles: block name -> keys of its tiles ({}: the finish runs as one task)."""
        raise NotImplementedError

    def finish_summary(self, results: list[dict[str, Any]], ctx: JobContext) -> dict[str, Any] | None:
        """What every block needs to know of all tiles (``results``: every tile's result, as for ``finish``)."""
        raise NotImplementedError

    def finish_block(self, block: str, results: list[dict[str, Any]], summary: dict[str, Any] | None,
                     ctx: JobContext) -> dict[str, Any] | None:
        """The finish's part of ``block`` from its own tiles' ``results`` and the ``summary``; a JSON record."""
        raise NotImplementedError

    def finish_merge(self, results: list[dict[str, Any]], blocks: dict[str, Any],
                     ctx: JobContext) -> list[Product]:
        """The finish from every tile's result and the records of every block (``blocks``: by name; empty:
        everything at once)."""
        raise NotImplementedError

    def finish(self, results: list[dict[str, Any]], ctx: JobContext) -> list[Product]:
        """The whole finish in one call: the summary, every block, then the merge."""
        by_tile = {r["tile"]: r for r in results if "tile" in r}
        blocks = self.finish_blocks(list(by_tile))
        summary = self.finish_summary(results, ctx) if blocks else None
        records = {name: self.finish_block(name, [by_tile[k] for k in keys], summary, ctx)
                   for name, keys in blocks.items()}
        return self.finish_merge(results, records, ctx)
