"""The task collection: ``inv --list`` in a project, ``crossnix --help`` anywhere."""

from __future__ import annotations

from invoke.collection import Collection

from crossnix_tasks.commands import board, build, demo, deploy, inventory

ns = Collection()
for module in (inventory, demo, board, deploy, build):
    for task_object in Collection.from_module(module).tasks.values():
        ns.add_task(task_object)
