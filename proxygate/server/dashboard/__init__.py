"""The dashboard at ``/``: login and cookie sessions (sessions.py), the pages (pages.py), the
admin API calls only the pages need (api.py), the live traffic stream (traffic.py) and the
OpenAPI document of every ``/admin/api`` route (openapi.py).

Nothing is imported here: server/admin.py imports ``sessions`` for its guard, and the page
modules import server/admin.py.
"""
