"""Quote-header patterns, one TOML file per language (read by mailticket.ingest.replies).

Keys (all optional, lists of strings):
  on_words          words that open a "On <date>, <name> wrote:" line ("On", "Am", "Le", "W dniu")
  wrote_verbs       the verb of such a line ("wrote", "schrieb", "a écrit", "пишет"), plain text
  original_message  divider titles ("Original Message", "Ursprüngliche Nachricht"), plain text
  device_lines      regular expressions a whole line must match to be a client's device line
  [header_fields]   from / sent / date / to / cc / subject: the field names of a quoted header block
Adding a language is adding a file.
"""
