"""Default Jinja2 templates of mailticket (shipped in the wheel as mailticket.templates).

Override any of them by putting a file of the same name in the directory named
by `[templates] directory`.
"""
