"""Game systems (logic only; data lives in entities).

Reach a system with ``rltwist.ecs.import_system("rltwist.game.rolesystem", service=...)``,
never with a plain import, so hotfixes reach every caller.
"""
