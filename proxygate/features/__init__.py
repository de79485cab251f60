"""Pipeline stages: small classes with hooks named for the moment (``on_request``, ``on_done``)."""
