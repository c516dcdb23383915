"""Merging regions (issue 14): ``rl-merge --from <sid> --into <sid>``.

- :mod:`rltwist.merge.core`: the merge itself, on storage (``region<from>`` into
  ``region<into>``, player names in ``roledb``), resumable from a journal.
- :mod:`rltwist.merge.aliases`: the region alias table (``{merged sid: target sid}``):
  persisted in globaldb by master, broadcast to every node and caught up through the
  heartbeats like the name table; every node routes through it
  (``cluster.routing.set_aliases``).
- :mod:`rltwist.merge.cli`: the command (checks with master that both regions are stopped
  and closed, progress bar, report).
"""
