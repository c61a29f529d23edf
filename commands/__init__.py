"""The commands on top of the floor and the services: ``actorq train``, ``serve``,
``attach``, ``health``, ``bench`` and ``report`` (``commands.cli``).

Imports point down only: commands import ``actorq`` (the floor) and ``services``;
nothing below imports a command.
"""
