"""Reactions to a stored message as small named rules (after GNU Mailman 3's ``rules/``).

``actions`` is what a rule may ask for, ``facts`` what it may look at, ``base`` the
shape of a rule; ``builtin`` holds today's reactions, ``routing`` the admin's
``[[routing]]`` tables; ``engine`` runs the ordered list (built by the composition
root, ``mailticket.app``) and carries the actions out in one place.
"""
